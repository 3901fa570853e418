"""Only managers get in: credentials, the login link, CSRF and Host checks, headers, the actor.

On SQLite and on the real PostgreSQL (the audit's ``actor`` column).
"""

from __future__ import annotations

import hashlib
import random
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from starlette.testclient import TestClient

from demo_support import BASE_URL
from suture.demo.app import Service, Settings, create_app
from suture.demo.auth import Managers, load_managers, token_hash
from suture.testing import FakeClock

SMALL = {"tasks": 40, "messages": 300, "rules": 60}
TOKEN = "console-token-for-tests"
ALICE = "alice-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if request.param == "sqlite":
        yield {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"}
        return
    url = request.getfixturevalue("pg_url")
    schema = request.getfixturevalue("unique_name")
    yield {"database_url": url, "schema": schema}
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def make_app(database: dict[str, Any], **overrides: Any) -> Any:
    options: dict[str, Any] = {
        **SMALL,
        "background": False,
        "clock": FakeClock(),
        "rand": random.Random(3),
        "token": TOKEN,
        "managers": (("alice", token_hash(ALICE)),),
        **database,
        **overrides,
    }
    return create_app(Settings(**options))


@pytest.fixture
def client(database: dict[str, Any]) -> Iterator[TestClient]:
    """No credential by default; a loopback Host; a peer that is not this machine."""
    with TestClient(make_app(database), base_url=BASE_URL, raise_server_exceptions=False) as c:
        yield c


def service(client: TestClient) -> Service:
    svc = client.app.state.service  # type: ignore[attr-defined]
    assert isinstance(svc, Service)
    return svc


def run(client: TestClient, stmt: Any) -> list[Any]:
    async def go() -> list[Any]:
        async with service(client).engine.connect() as conn:
            return list((await conn.execute(stmt)).all())

    assert client.portal is not None
    return client.portal.call(go)


def audit_rows(client: TestClient) -> list[Any]:
    return run(client, sa.text("SELECT * FROM demo_transition_audit ORDER BY id"))


def snapshot(client: TestClient) -> tuple[Any, ...]:
    """Everything the manager routes could change."""
    return (
        audit_rows(client),
        run(client, sa.text("SELECT id, status, manager_response FROM demo_task ORDER BY id")),
        run(client, sa.text("SELECT id, status FROM demo_raw_message ORDER BY id")),
    )


def manager_requests(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    """One request per manager route, with real ids."""
    task = run(
        client, sa.text("SELECT id FROM demo_task WHERE status = 'ASSISTANCE_REQUIRED' LIMIT 1")
    )[0][0]
    message = run(client, sa.text("SELECT id FROM demo_raw_message LIMIT 1"))[0][0]
    return [
        ("GET", "/", {}),
        ("GET", "/api/manager/me", {}),
        ("GET", "/api/manager/assistance", {}),
        ("POST", f"/api/manager/assistance/{task}/respond", {"json": {"response": "Yes."}}),
        ("POST", "/api/manager/spam/capture", {}),
        ("GET", "/api/manager/spam", {}),
        ("POST", f"/api/manager/spam/{message}/release", {}),
        ("POST", f"/api/manager/spam/{message}/archive", {}),
        ("GET", "/api/messages", {}),
        ("POST", f"/api/messages/{message}/promote", {}),
    ]


def test_every_manager_route_needs_a_credential_and_a_wrong_one_is_a_missing_one(
    client: TestClient,
) -> None:
    before = snapshot(client)
    routes = manager_requests(client)
    covered = {
        r.path  # type: ignore[attr-defined]
        for r in client.app.routes  # type: ignore[attr-defined]
        if r.path.startswith(("/api/manager", "/api/messages"))  # type: ignore[attr-defined]
    }
    asked = {re.sub(r"/\d+/", "/{}/", path) for _, path, _ in routes}
    assert {re.sub(r"\{[a-z_]+\}", "{}", p) for p in covered} <= asked
    for method, path, kwargs in routes:
        missing = client.request(method, path, **kwargs)
        wrong = client.request(method, path, headers={"Authorization": "Bearer nope"}, **kwargs)
        not_bearer = client.request(
            method, path, headers={"Authorization": f"Basic {TOKEN}"}, **kwargs
        )
        assert missing.status_code == wrong.status_code == not_bearer.status_code == 401, path
        assert missing.content == wrong.content == not_bearer.content, path
        if path != "/":
            assert missing.json()["code"] == "unauthorized"
            assert missing.headers["www-authenticate"].startswith("Bearer")
    assert snapshot(client) == before  # nothing changed without a credential
    for method, path, kwargs in routes:
        right = client.request(method, path, headers=BEARER, **kwargs)
        assert right.status_code in (200, 409), (path, right.text)


def test_an_html_page_without_a_session_is_the_login_form(client: TestClient) -> None:
    r = client.get("/", headers={"Accept": "text/html"})
    assert r.status_code == 401
    assert 'action="/login"' in r.text and "<script" not in r.text


def test_a_token_in_the_query_string_is_refused_even_when_right(client: TestClient) -> None:
    before = snapshot(client)
    for path in ("/api/manager/assistance", "/api/manager/spam/capture"):
        for name in ("token", "access_token"):
            r = client.post(path, params={name: TOKEN}, headers=BEARER)
            assert r.status_code == 401
            assert r.json()["code"] == "credentials_in_query"
            assert TOKEN not in r.text
    assert snapshot(client) == before


@pytest.mark.parametrize("host", ["evil.example", "attacker.test:8000", "127.0.0.2.nip.io"])
def test_a_forged_host_is_misdirected_and_never_reaches_the_app(
    client: TestClient, host: str
) -> None:
    before = snapshot(client)
    for method, path in (("GET", "/health"), ("POST", "/api/manager/spam/capture")):
        r = client.request(method, path, headers={**BEARER, "Host": host})
        assert r.status_code == 421
        assert r.json()["code"] == "misdirected"
    assert snapshot(client) == before


def test_a_malformed_host_is_a_400(client: TestClient) -> None:
    r = client.get("/health", headers={"Host": "bad host"})
    assert r.status_code == 400 and r.json()["code"] == "bad_host"


def test_allowed_host_adds_a_name(database: dict[str, Any]) -> None:
    app = make_app(database, allowed_hosts=("demo.internal",))
    with TestClient(app, base_url="http://demo.internal:8000", headers=BEARER) as c:
        assert c.get("/api/manager/me").json()["manager"] == "manager"
        assert c.get("/health", headers={"Host": "other.internal"}).status_code == 421


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:9999"},
        {"Origin": "http://localhost:9999"},  # another port: another origin
    ],
)
def test_a_cross_origin_write_is_refused_with_any_credential(
    client: TestClient, headers: dict[str, str]
) -> None:
    session = login(client)
    before = snapshot(client)
    for credential in (BEARER, {"Cookie": f"suture_session={session}"}):
        r = client.post("/api/manager/spam/capture", headers={**credential, **headers})
        assert r.status_code == 403
        assert r.json()["code"] == "cross_origin"
    assert snapshot(client) == before


def test_a_same_origin_write_passes(client: TestClient) -> None:
    session = login(client)
    for headers in (
        {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"},
        {"Origin": "null", "Sec-Fetch-Site": "same-origin"},  # a form under no-referrer
        {"Origin": "http://localhost"},
    ):
        r = client.post(
            "/api/manager/spam/capture",
            headers={**headers, "Cookie": f"suture_session={session}"},
        )
        assert r.status_code == 200, r.text


def login(client: TestClient, name: str = "manager") -> str:
    """Sign in through a one-time link; the session cookie's value."""
    code = service(client).managers.login_link(name)
    r = client.get(f"/login?code={code}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    match = re.match(r"suture_session=([^;]+)", cookie)
    assert match is not None
    client.cookies.clear()
    return match.group(1)


def test_the_login_link_works_once_and_expires(client: TestClient) -> None:
    managers = service(client).managers
    code = managers.login_link()
    first = client.get(f"/login?code={code}", follow_redirects=False)
    assert first.status_code == 303
    session = first.cookies["suture_session"]
    client.cookies.clear()
    replay = client.get(f"/login?code={code}", follow_redirects=False)
    assert replay.status_code == 401 and "set-cookie" not in replay.headers
    r = client.get("/api/manager/me", headers={"Cookie": f"suture_session={session}"})
    assert r.json() == {"success": True, "manager": "manager"}
    late = managers.login_link("alice")
    clock = service(client).clock
    assert isinstance(clock, FakeClock)
    clock.advance(managers.link_ttl + 1)
    assert client.get(f"/login?code={late}", follow_redirects=False).status_code == 401
    assert client.get("/login?code=made-up", follow_redirects=False).status_code == 401
    # the session itself ends after session_ttl
    clock.advance(managers.session_ttl)
    r = client.get("/api/manager/me", headers={"Cookie": f"suture_session={session}"})
    assert r.status_code == 401


def test_a_cookie_from_another_session_or_server_is_refused(
    client: TestClient, database: dict[str, Any]
) -> None:
    with TestClient(make_app(database), base_url=BASE_URL) as other:
        foreign = login(other)
    r = client.get("/api/manager/me", headers={"Cookie": f"suture_session={foreign}"})
    assert r.status_code == 401
    mine = login(client)
    assert (
        client.post(
            "/logout", headers={"Cookie": f"suture_session={mine}"}, follow_redirects=False
        ).status_code
        == 303
    )
    r = client.get("/api/manager/me", headers={"Cookie": f"suture_session={mine}"})
    assert r.status_code == 401


def test_the_login_form_takes_a_managers_token(client: TestClient) -> None:
    wrong = client.post("/login", data={"token": "nope"}, follow_redirects=False)
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    right = client.post("/login", data={"token": ALICE}, follow_redirects=False)
    assert right.status_code == 303
    session = right.cookies["suture_session"]
    client.cookies.clear()
    me = client.get("/api/manager/me", headers={"Cookie": f"suture_session={session}"})
    assert me.json()["manager"] == "alice"


def test_the_session_cookie_is_secure_over_tls(database: dict[str, Any]) -> None:
    with TestClient(make_app(database), base_url="https://localhost") as c:
        code = c.app.state.service.managers.login_link()  # type: ignore[attr-defined]
        r = c.get(f"/login?code={code}", follow_redirects=False)
        assert "Secure" in r.headers["set-cookie"]


def test_health_and_metrics_are_open_on_loopback_only(database: dict[str, Any]) -> None:
    app = make_app(database)
    with TestClient(app, base_url=BASE_URL, client=("127.0.0.1", 5000)) as local:
        for path in ("/health", "/metrics", "/api/dashboard", "/dashboard"):
            assert local.get(path).status_code == 200, path
        relayed = local.get("/health", headers={"X-Forwarded-For": "203.0.113.9"})
        assert relayed.status_code == 401  # a proxy's client is somewhere else
        assert local.get("/api/manager/assistance").status_code == 401
    with TestClient(app, base_url=BASE_URL, client=("192.0.2.7", 5000)) as remote:
        for path in ("/health", "/metrics", "/api/dashboard"):
            assert remote.get(path).status_code == 401, path
            assert remote.get(path, headers=BEARER).status_code == 200, path


def test_every_answer_carries_the_security_headers(client: TestClient) -> None:
    session = login(client)
    cookie = {"Cookie": f"suture_session={session}"}
    for path in ("/", "/dashboard", "/login", "/static/app.css", "/api/manager/assistance"):
        r = client.get(path, headers=cookie)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
    data = client.get("/api/manager/assistance", headers=cookie)
    assert data.headers["cache-control"] == "no-store"
    refused = client.get("/api/manager/assistance")
    assert refused.headers["cache-control"] == "no-store"
    assert refused.headers["x-content-type-options"] == "nosniff"
    for page in ("index.html", "dashboard.html", "login.html"):
        text = (Path(__file__).parent.parent / "src/suture/demo/static" / page).read_text()
        assert "<style" not in text and " style=" not in text, page
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), page
        assert not re.search(r"\son[a-z]+=", text), page


# --- who decided ----------------------------------------------------------------------


def test_the_audit_says_who_decided(client: TestClient) -> None:
    alice = {"Authorization": f"Bearer {ALICE}"}
    task = client.get("/api/manager/assistance", headers=alice).json()["requests"][0]["id"]
    r = client.post(
        f"/api/manager/assistance/{task}/respond", json={"response": "Go."}, headers=alice
    )
    assert r.status_code == 200 and r.json()["task"]["respondedBy"] == "alice"
    captured = client.post("/api/manager/spam/capture", headers=BEARER).json()
    assert captured["updatedCount"] > 0
    spam = client.get("/api/manager/spam", headers=BEARER).json()["messages"][0]["id"]
    assert client.post(f"/api/manager/spam/{spam}/release", headers=BEARER).status_code == 200
    rows = run(
        client,
        sa.text("SELECT context, actor, record_key FROM demo_transition_audit ORDER BY id"),
    )
    assert rows[0] == ("manager-response", "alice", str(task))
    assert {actor for context, actor, _ in rows if context == "spam-capture"} == {"capture"}
    assert rows[-1] == ("spam-release", "manager", str(spam))


def test_no_route_updates_or_deletes_an_audit_row(client: TestClient) -> None:
    statements: list[str] = []
    engine = service(client).engine.sync_engine

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        for method, path, kwargs in manager_requests(client):
            client.request(method, path, headers=BEARER, **kwargs)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    text = "\n".join(statements).upper()
    assert "INSERT INTO DEMO_TRANSITION_AUDIT" in text  # the routes did write audit rows
    assert not re.search(r"(UPDATE|DELETE\s+FROM)\s+\S*DEMO_TRANSITION_AUDIT", text)


def test_an_old_sqlite_database_gets_the_actor_column(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:  # the audit table as it was before the column
        conn.execute(
            "CREATE TABLE demo_transition_audit (id INTEGER PRIMARY KEY, entity VARCHAR(100) "
            "NOT NULL, record_key VARCHAR(200) NOT NULL, source VARCHAR(100), target "
            "VARCHAR(100) NOT NULL, context TEXT, at DATETIME NOT NULL)"
        )
    app = make_app({"database_url": f"sqlite+aiosqlite:///{db}"})
    with TestClient(app, base_url=BASE_URL, headers=BEARER) as c:
        assert c.post("/api/manager/spam/capture").status_code == 200
    with sqlite3.connect(db) as conn:
        actors = {row[0] for row in conn.execute("SELECT actor FROM demo_transition_audit")}
    assert actors == {"capture"}


@pytest.mark.postgres
def test_an_old_postgres_schema_gets_the_actor_column(pg_url: str, unique_name: str) -> None:
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{unique_name}"'))
        conn.execute(
            sa.text(
                f'CREATE TABLE "{unique_name}".demo_transition_audit (id SERIAL PRIMARY KEY, '
                "entity VARCHAR(100) NOT NULL, record_key VARCHAR(200) NOT NULL, "
                "source VARCHAR(100), target VARCHAR(100) NOT NULL, context TEXT, "
                "at TIMESTAMPTZ NOT NULL)"
            )
        )
    try:
        app = make_app({"database_url": pg_url, "schema": unique_name})
        with TestClient(app, base_url=BASE_URL, headers=BEARER) as c:
            assert c.post("/api/manager/spam/capture").status_code == 200
        with engine.connect() as conn:
            actors = set(
                conn.scalars(sa.text(f'SELECT actor FROM "{unique_name}".demo_transition_audit'))
            )
        assert actors == {"capture"}
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE'))
        engine.dispose()


# --- managers -------------------------------------------------------------------------


def test_managers_compare_every_hash_and_name_the_match() -> None:
    managers = Managers(
        [("alice", token_hash("a" * 20)), ("bob", token_hash("b" * 20))],
        token="c" * 20,
        clock=FakeClock(),
    )
    assert managers.check("a" * 20) == "alice"
    assert managers.check("b" * 20) == "bob"
    assert managers.check("c" * 20) == "manager"
    assert managers.check("") is None and managers.check(None) is None
    assert managers.check("a" * 19) is None
    with pytest.raises(ValueError, match="not a manager"):
        managers.login_link("mallory")


def test_the_managers_file(tmp_path: Path) -> None:
    good = tmp_path / "managers"
    digest = hashlib.sha256(b"tok").hexdigest()
    good.write_text(f"# who may act\n\nalice {digest}\nbob sha256:{digest.upper()}\n")
    assert load_managers(good) == (("alice", digest), ("bob", digest))
    for text, problem in (
        ("alice\n", ":1: expected"),
        (f"alice {digest[:-1]}\n", ":1: expected"),
        (f"al ice {digest}\n", ":1: expected"),
        (f"alice {digest}\nalice {digest}\n", ":2: manager 'alice' is listed twice"),
        ("# nobody\n", "no manager"),
    ):
        bad = tmp_path / "bad"
        bad.write_text(text)
        with pytest.raises(ValueError, match=re.escape(problem)):
            load_managers(bad)
