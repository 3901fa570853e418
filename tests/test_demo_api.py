"""The reference service's API, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from demo_support import manager_client
from suture.demo.app import Service, Settings, create_app
from suture.demo.models import MessageStatus, RawMessage, SpamRule, TaskStatus, TransitionAudit
from suture.demo.spam import Rule, reference_matches
from suture.testing import FakeClock

SMALL = {"tasks": 40, "messages": 300, "rules": 60}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[dict[str, Any]]:
    """Settings for a fresh database: a SQLite file, or a new schema in PostgreSQL."""
    if request.param == "sqlite":
        yield {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"}
        return
    url = request.getfixturevalue("pg_url")
    schema = request.getfixturevalue("unique_name")
    yield {"database_url": url, "schema": schema}
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def make_client(database: dict[str, Any], **overrides: Any) -> TestClient:
    options: dict[str, Any] = {
        **SMALL,
        "background": False,
        "chaos": True,
        "admin_hosts": ("testclient",),
        "clock": FakeClock(),
        "rand": random.Random(3),
        **database,
        **overrides,
    }
    return manager_client(create_app(Settings(**options)), raise_server_exceptions=False)


@pytest.fixture
def client(database: dict[str, Any]) -> Iterator[TestClient]:
    with make_client(database) as c:
        yield c


def service(client: TestClient) -> Service:
    svc = client.app.state.service  # type: ignore[attr-defined]
    assert isinstance(svc, Service)
    return svc


def run(client: TestClient, stmt: Any) -> list[Any]:
    """Run a read-only statement on the app's engine, from the test thread."""

    async def go() -> list[Any]:
        async with service(client).engine.connect() as conn:
            return list((await conn.execute(stmt)).all())

    assert client.portal is not None
    return client.portal.call(go)


def assert_error(r: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in r.text
    assert "sqlalchemy" not in r.text.lower()
    if code is not None:
        assert body["code"] == code
    return body


# --- assistance -----------------------------------------------------------------------


def test_assistance_lists_the_tasks_that_need_a_manager(client: TestClient) -> None:
    r = client.get("/api/manager/assistance")
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True
    expected = run(
        client,
        sa.text("SELECT count(*) FROM demo_task WHERE status = 'ASSISTANCE_REQUIRED'"),
    )[0][0]
    assert body["count"] == len(body["requests"]) == expected > 0
    first = body["requests"][0]
    assert first["status"] == "ASSISTANCE_REQUIRED"
    assert first["assistanceNotes"]
    assert set(first) >= {"id", "title", "type", "assignee", "requestedAt"}
    times = [req["requestedAt"] for req in body["requests"]]
    assert times == sorted(times)


def test_respond_is_a_validated_transition(client: TestClient) -> None:
    task_id = client.get("/api/manager/assistance").json()["requests"][0]["id"]
    r = client.post(f"/api/manager/assistance/{task_id}/respond", json={"response": "Approved."})
    assert r.status_code == 200, r.text
    task = r.json()["task"]
    assert task["status"] == TaskStatus.IN_PROGRESS.value
    assert task["managerResponse"] == "Approved."
    assert task["respondedAt"]
    ids = [t["id"] for t in client.get("/api/manager/assistance").json()["requests"]]
    assert task_id not in ids
    # answering twice is refused, and the first answer stays
    again = client.post(f"/api/manager/assistance/{task_id}/respond", json={"response": "No!"})
    body = assert_error(again, 409, "invalid_transition")
    assert "already IN_PROGRESS" in body["error"]
    audit = run(
        client,
        sa.select(TransitionAudit.source, TransitionAudit.target, TransitionAudit.context).where(
            TransitionAudit.entity == "demo_task", TransitionAudit.record_key == str(task_id)
        ),
    )
    assert [tuple(a) for a in audit] == [("ASSISTANCE_REQUIRED", "IN_PROGRESS", "manager-response")]


def test_respond_errors(client: TestClient) -> None:
    assert_error(
        client.post("/api/manager/assistance/999999/respond", json={"response": "hi"}),
        404,
        "not_found",
    )
    done = run(client, sa.text("SELECT id FROM demo_task WHERE status = 'DONE' LIMIT 1"))[0][0]
    body = assert_error(
        client.post(f"/api/manager/assistance/{done}/respond", json={"response": "hi"}),
        409,
        "invalid_transition",
    )
    assert body["status"] == "DONE"
    assert body["target"] == "IN_PROGRESS"
    assert (
        client.post("/api/manager/assistance/1/respond", json={"response": ""}).status_code == 422
    )
    assert client.post("/api/manager/assistance/1/respond", json={}).status_code == 422
    # a blank answer is no answer
    r = client.post(f"/api/manager/assistance/{done}/respond", json={"response": "  \n "})
    assert assert_error(r, 422, "invalid_request")["fields"][0]["field"] == "response"


def test_only_a_task_that_asked_for_help_can_be_answered(client: TestClient) -> None:
    # OPEN -> IN_PROGRESS is in the task table (the agent starts work), but it is not
    # the manager's move: a task that never asked for help cannot be "answered".
    task = run(client, sa.text("SELECT id FROM demo_task WHERE status = 'OPEN' LIMIT 1"))[0][0]
    r = client.post(f"/api/manager/assistance/{task}/respond", json={"response": "hi"})
    body = assert_error(r, 409, "invalid_transition")
    assert body["error"] == "This record is OPEN and cannot be moved to IN_PROGRESS."
    status = run(
        client, sa.text(f"SELECT status, manager_response FROM demo_task WHERE id = {task}")
    )
    assert tuple(status[0]) == ("OPEN", None)


# --- spam -----------------------------------------------------------------------------


def expected_spam(client: TestClient) -> set[int]:
    rules = [
        Rule(r.id, r.pattern, r.mode, r.brand)
        for r in run(
            client,
            sa.select(SpamRule.id, SpamRule.pattern, SpamRule.mode, SpamRule.brand).where(
                SpamRule.enabled.is_(True)
            ),
        )
    ]
    messages = run(
        client,
        sa.select(RawMessage.id, RawMessage.brand, RawMessage.text).where(
            RawMessage.status == MessageStatus.READY
        ),
    )
    return {m.id for m in messages if reference_matches(rules, m.brand, m.text)}


def test_capture_moves_exactly_the_matching_messages(client: TestClient) -> None:
    expected = expected_spam(client)
    assert expected
    r = client.post("/api/manager/spam/capture", params={"batchSize": 37})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body == {
        "success": True,
        "updatedCount": len(expected),
        "totalInQueue": SMALL["messages"],
        "remainingInQueue": SMALL["messages"] - len(expected),
        "processed": SMALL["messages"],
    }
    in_review = {
        row.id
        for row in run(
            client,
            sa.select(RawMessage.id).where(RawMessage.status == MessageStatus.SPAM_REVIEW),
        )
    }
    assert in_review == expected
    # a second capture finds nothing new and counts nothing twice
    again = client.post("/api/manager/spam/capture").json()
    assert again["updatedCount"] == 0
    assert again["processed"] == again["totalInQueue"] == body["remainingInQueue"]
    queue = client.get("/api/manager/spam", params={"limit": 5}).json()
    assert queue["total"] == len(expected)
    assert len(queue["messages"]) == 5
    assert all(m["matchedPatterns"] for m in queue["messages"])
    assert all(
        len(set(m["matchedPatterns"])) == len(m["matchedPatterns"]) for m in queue["messages"]
    )


@pytest.mark.parametrize("size", [0, 10_001, "x"])
def test_capture_batch_size_is_validated(client: TestClient, size: object) -> None:
    r = client.post("/api/manager/spam/capture", params={"batchSize": size})
    assert r.status_code == 422
    assert "Traceback" not in r.text


def test_release_archive_promote(client: TestClient) -> None:
    client.post("/api/manager/spam/capture", params={"batchSize": 1000})
    spam = client.get("/api/manager/spam", params={"limit": 3}).json()["messages"]
    a, b, c = (m["id"] for m in spam)
    # release: back to READY, the matched patterns cleared
    r = client.post(f"/api/manager/spam/{a}/release")
    assert r.status_code == 200
    assert r.json()["message"]["status"] == "READY"
    assert r.json()["message"]["matchedPatterns"] == []
    # archive a READY message: not allowed
    body = assert_error(client.post(f"/api/manager/spam/{a}/archive"), 409, "invalid_transition")
    assert (body["status"], body["target"]) == ("READY", "SPAM_ARCHIVED")
    # promote from review: not allowed; archive it instead
    assert_error(client.post(f"/api/messages/{b}/promote"), 409, "invalid_transition")
    assert client.post(f"/api/manager/spam/{b}/archive").json()["message"]["status"] == (
        "SPAM_ARCHIVED"
    )
    # archived is terminal
    assert_error(client.post(f"/api/manager/spam/{b}/release"), 409, "invalid_transition")
    # the same move twice is a harmless no-op (a retried request must not fail)
    assert client.post(f"/api/manager/spam/{b}/archive").status_code == 200
    # promote a READY message; promoted is terminal
    assert client.post(f"/api/messages/{a}/promote").json()["message"]["status"] == "PROMOTED"
    assert_error(client.post(f"/api/manager/spam/{a}/release"), 409, "invalid_transition")
    assert_error(client.post("/api/messages/99999999/promote"), 404, "not_found")
    assert client.post(f"/api/manager/spam/{c}/release").status_code == 200
    ready = client.get("/api/messages", params={"status": "READY", "limit": 500}).json()
    assert c in {m["id"] for m in ready["messages"]}
    assert client.get("/api/messages", params={"status": "NOPE"}).status_code == 422


# --- health, metrics, pages -----------------------------------------------------------


def test_health(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["breakers"]["database"]["state"] == "closed"
    assert body["pool"]["level"] == "NORMAL"
    assert body["pool"]["usage"]["limit"] == 10


def test_metrics(client: TestClient) -> None:
    client.post("/api/manager/spam/capture")
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert 'suture_transitions_applied_total{entity="demo_raw_message",target="SPAM_REVIEW"}' in (
        r.text
    )
    assert 'suture_breaker_state{name="database",state="closed"} 1.0' in r.text
    assert 'suture_pool_usage_ratio{name="db-pool"}' in r.text


def test_pages_and_assets(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert 'src="/static/manager.js"' in page.text
    dash = client.get("/dashboard")
    assert dash.status_code == 200
    assert 'src="/static/dashboard.js"' in dash.text
    for asset in ("manager.js", "dashboard.js", "minichart.js", "app.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    js = client.get("/suture.js")
    assert js.status_code == 200
    assert "sutureFetch" in js.text
    data = client.get("/api/dashboard").json()
    assert data["breakers"][0]["name"] == "database"
    assert set(data["series"]) >= {"t", "pool", "errorRate", "retries", "shed"}
    assert len(data["series"]["t"]) == 300


def test_an_unexpected_error_is_a_generic_500(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("connection string postgres://admin:s3cret@db/prod")

    monkeypatch.setattr(service(client), "assistance_queue", broken)
    r = client.get("/api/manager/assistance")
    body = assert_error(r, 500, "internal_error")
    assert "s3cret" not in r.text
    assert body["requestId"] == r.headers["X-Request-ID"]


def test_no_error_response_carries_internals(client: TestClient) -> None:
    """Every way a request can fail answers {"success": false, "error", "code"}, nothing more."""
    big = "x" * 100_000
    failures = [
        (client.get("/no/such/page"), 404, "not_found"),
        (client.get("/api/nope"), 404, "not_found"),
        (client.get("/static/../app.py"), 404, "not_found"),
        (client.put("/api/manager/assistance"), 405, "method_not_allowed"),
        (client.post("/api/manager/spam/abc/release"), 422, "invalid_request"),
        (client.post("/api/manager/spam/0/archive"), 422, "invalid_request"),
        # past 64 bits: the database would overflow (a 500 with a traceback in the log)
        (client.post(f"/api/messages/{2**63}/promote"), 422, "invalid_request"),
        (client.post(f"/api/manager/spam/{10**30}/release"), 422, "invalid_request"),
        (
            client.post(
                "/api/manager/assistance/1/respond",
                content=b'{"response": "secret',
                headers={"content-type": "application/json"},
            ),
            422,
            "invalid_json",  # issue 15: unparseable bodies answer 422 invalid_json
        ),
        (
            client.post("/api/manager/assistance/1/respond", json={"response": {"a": "secret"}}),
            422,
            "invalid_request",
        ),
        (
            client.post("/api/manager/assistance/1/respond", json={"response": "secret" * 1000}),
            422,
            "invalid_request",
        ),
        # a body past the limit is refused before it is read: declared, and streamed
        (
            client.post(
                "/api/manager/assistance/1/respond",
                json={"response": big + "secret"},
            ),
            413,
            "too_large",
        ),
        (
            client.post(
                "/api/manager/assistance/1/respond",
                content=iter([b'{"response": "', big.encode(), b'secret"}']),
                headers={"content-type": "application/json"},
            ),
            413,
            "too_large",
        ),
        (client.get("/api/messages", params={"status": "<b>secret</b>"}), 422, "invalid_request"),
        (client.post("/api/admin/chaos", json={"errorRate": "secret"}), 422, "invalid_request"),
    ]
    for r, status, code in failures:
        body = assert_error(r, status, code)
        assert "secret" not in r.text, r.text
        assert "detail" not in body and "input" not in r.text, r.text
        assert len(r.content) < 2000


# --- the chaos admin endpoint ---------------------------------------------------------


def test_chaos_admin_endpoint(client: TestClient) -> None:
    r = client.post("/api/admin/chaos", json={"errorRate": 0.5, "latency": 0.01})
    assert r.status_code == 200
    assert r.json()["chaos"]["database"]["error_rate"] == 0.5
    assert client.get("/api/admin/chaos").json()["chaos"]["database"]["latency"] == 0.01
    bad = client.post("/api/admin/chaos", json={"errorRate": 2})
    assert_error(bad, 400, "bad_chaos_config")
    r = client.post("/api/admin/chaos", json={"clear": True})
    assert r.json()["chaos"]["database"]["error_rate"] == 0.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # an unknown target would be stored forever and injected nowhere
        ({"target": "x" * 10_000, "errorRate": 0.1}, "target: unknown"),
        # more connections than the pool has: tasks waiting on a pool that never frees
        ({"hold": 11}, "hold=11: at most 10 here"),
        ({"hold": 10**9}, "at most 10 here"),
        ({"latency": 1e9}, "latency=1000000000.0: at most 60 here"),
        ({"hold": -1}, "hold=-1"),
        ({"traffic": 1e9}, "rate="),
    ],
)
def test_chaos_admin_refuses_bad_input(client: TestClient, body: Any, message: str) -> None:
    r = client.post("/api/admin/chaos", json=body)
    assert message in assert_error(r, 400, "bad_chaos_config")["error"]
    assert not service(client).chaos.active
    assert len(r.content) < 500


def test_chaos_admin_refuses_a_relayed_request(database: dict[str, Any]) -> None:
    with make_client(database, admin_hosts=("testclient",)) as c:
        assert c.get("/api/admin/chaos").status_code == 200
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            r = c.post("/api/admin/chaos", json={"errorRate": 1.0}, headers={header: "127.0.0.1"})
            assert_error(r, 403)
        assert not service(c).chaos.active


@pytest.mark.parametrize("chaos", [False, True])
def test_chaos_admin_is_absent_without_chaos_and_local_only(
    database: dict[str, Any], chaos: bool
) -> None:
    with make_client(database, chaos=chaos, admin_hosts=("127.0.0.1", "::1")) as c:
        r = c.post("/api/admin/chaos", json={"errorRate": 1.0})
        # TestClient's peer is "testclient", not a loopback address
        assert r.status_code == (403 if chaos else 404)
        assert not service(c).chaos.active


def test_seeding_happens_once(database: dict[str, Any]) -> None:
    with make_client(database) as c:
        first = c.get("/api/messages", params={"limit": 1}).json()["total"]
    with make_client(database, messages=50) as c:
        assert c.get("/api/messages", params={"limit": 1}).json()["total"] == first
    assert first == SMALL["messages"]


def test_the_pages_never_put_server_text_into_the_dom_as_html() -> None:
    from importlib import resources

    static = resources.files("suture.demo").joinpath("static")
    scripts = [p for p in static.iterdir() if p.name.endswith((".js", ".html"))]
    assert {p.name for p in scripts} >= {"manager.js", "dashboard.js", "minichart.js"}
    for script in scripts:
        text = script.read_text("utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, f"{script.name} uses {sink}"


def test_building_the_app_starts_nothing(tmp_path: Any) -> None:
    """No thread, timer, connection or file before the app starts (the spec's monitor did)."""
    import json
    import subprocess
    import sys

    db = tmp_path / "sub" / "never.db"
    code = f"""
import json, threading
before = threading.active_count()
from suture.demo.app import Settings, create_app
app = create_app(Settings(database_url="sqlite+aiosqlite:///{db}", chaos=True))
svc = app.state.service
print(json.dumps({{
    "threads": threading.active_count() - before,
    "monitor": svc.monitor.running,
    "checked_out": svc.engine.pool.checkedout(),
    "file": {str(db)!r} and __import__("os").path.exists({str(db)!r}),
}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data == {"threads": 0, "monitor": False, "checked_out": 0, "file": False}


@pytest.mark.parametrize("url", ["sqlite+aiosqlite://", "sqlite:///:memory:"])
def test_an_in_memory_sqlite_database_is_refused_by_name(url: str) -> None:
    # each pooled connection would get its own empty database ("no such table")
    with pytest.raises(ValueError, match="in-memory SQLite database lives in one connection"):
        create_app(Settings(database_url=url))


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # IPv4 loopback through a dual-stack socket
        ("::ffff:10.0.0.7", False),
        ("10.0.0.7", False),
        ("localhost.evil.example", False),
    ],
)
def test_chaos_admin_answers_loopback_peers_only(tmp_path: Any, peer: str, allowed: bool) -> None:
    app = create_app(
        Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'peer.db'}",
            **{**SMALL, "background": False, "chaos": True, "clock": FakeClock()},
        )
    )
    with manager_client(app, raise_server_exceptions=False, client=(peer, 5555)) as c:
        r = c.get("/api/admin/chaos")
        assert r.status_code == (200 if allowed else 403), r.text
