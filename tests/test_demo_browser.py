"""The demo in headless Chromium (Playwright): the manager page and the dashboard.

Needs Debian's ``chromium``; skipped with a reason when it is missing, except
in CI (``CI=true``) where a missing browser fails the test. Screenshots of both
pages go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from demo_support import serve
from suture.demo.app import Settings, create_app

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, Path]]:
    """The demo served on a free loopback port: (its URL, the app, the SQLite file)."""

    db = tmp_path_factory.mktemp("browser") / "demo.db"
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{db}",
        tasks=40,
        messages=400,
        rules=60,
        chaos=True,
        reset_timeout=60.0,
        failure_threshold=10,
        retry_initial_delay=0.005,
        retry_max_delay=0.02,
    )
    app = create_app(settings)
    with serve(app) as url:
        yield url, app, db


@pytest.fixture(scope="module")
def server(demo: tuple[str, Any, Path]) -> str:
    return demo[0]


def login_link(demo: tuple[str, Any, Path]) -> str:
    """A fresh one-time login link, as ``suture demo`` prints at start."""
    url, app, _ = demo
    return f"{url}/login?code={app.state.service.managers.login_link()}"


@pytest.fixture
def anonymous(browser: Any) -> Iterator[Any]:
    """A page in a fresh browser context, signed in as nobody; no script error, no CSP report."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on(
        "console",
        lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    yield pg
    context.close()
    assert errors == [], errors


@pytest.fixture
def page(anonymous: Any, demo: tuple[str, Any, Path]) -> Any:
    """A page signed in through the one-time login link (the session cookie)."""
    answer = anonymous.goto(login_link(demo))
    assert answer.status == 200 and answer.url == f"{demo[0]}/"
    return anonymous


@pytest.fixture
def api(demo: tuple[str, Any, Path]) -> Iterator[httpx.Client]:
    """An API client with the manager's bearer token."""
    token = demo[1].state.service.console_token
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=demo[0], timeout=30, headers=headers) as client:
        yield client


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_manager_page_shows_its_data(server: str, page: Any) -> None:
    page.goto(f"{server}/")
    page.wait_for_selector("#assistance-list li")
    page.wait_for_selector("#inbox-list li")
    assert page.locator("#assistance-list li").count() > 0
    assert "need a manager" in page.text_content("#assistance-status")
    # capture spam from the page: the review queue fills
    page.click("#capture")
    page.wait_for_selector("#spam-list li")
    assert "Captured" in page.text_content("#capture-status")
    screenshot(page, "manager.png")


def test_manager_page_retries_after_503s_and_then_shows_the_data(server: str, page: Any) -> None:
    seen: list[int] = []

    def flaky(route: Any) -> None:
        seen.append(1)
        if len(seen) <= 2:
            route.fulfill(
                status=503,
                headers={"Retry-After": "1", "Content-Type": "application/json"},
                body=json.dumps(
                    {"success": False, "error": "busy", "retryAfter": 1, "code": "overloaded"}
                ),
            )
        else:
            route.continue_()

    page.route("**/api/manager/assistance", flaky)
    page.goto(f"{server}/")
    # Selectors, not wait_for_function: the page's CSP forbids the eval that it uses.
    page.wait_for_selector("#assistance-status:has-text('Loading... (retry 1/3)')")
    page.wait_for_selector("#assistance-status:has-text('Loading... (retry 2/3)')")
    page.wait_for_selector("#assistance-list li")
    assert len(seen) == 3
    assert "need a manager" in page.text_content("#assistance-status")


def test_manager_page_shows_a_friendly_error_when_the_api_stays_down(
    server: str, page: Any
) -> None:
    page.route(
        "**/api/manager/assistance",
        lambda route: route.fulfill(
            status=500,
            headers={"Content-Type": "text/html"},
            body="<html><title>Oops</title><script>alert(1)</script><p>Boom</p></html>",
        ),
    )
    page.goto(f"{server}/")
    page.wait_for_selector("#assistance-status.error")
    text = page.text_content("#assistance-status")
    assert "<script>" not in text
    assert page.locator("#assistance-status script").count() == 0


def test_dashboard_shows_the_breaker_opening_under_faults(
    server: str, page: Any, api: httpx.Client
) -> None:
    page.goto(f"{server}/dashboard")
    page.wait_for_selector("#breaker-state-database[data-state='closed']")
    page.wait_for_selector("#chart-pool svg path[data-series='pool usage']", state="attached")
    r = api.post("/api/admin/chaos", json={"errorRate": 1.0})
    assert r.status_code == 200
    try:
        codes = [api.get("/api/manager/assistance").status_code for _ in range(4)]
        assert codes[-1] == 503
        page.wait_for_selector("#breaker-state-database[data-state='open']", timeout=15_000)
        assert page.text_content("#breaker-state-database") == "OPEN"
        page.wait_for_selector("#events li[data-event='BreakerStateChanged']")
        screenshot(page, "dashboard.png")
    finally:
        api.post("/api/admin/chaos", json={"clear": True})


def test_dashboard_polling_backs_off_and_honours_retry_after(server: str, page: Any) -> None:
    """A failing dashboard API is not polled each second forever: Retry-After sets the pace.

    The page's timers run on Playwright's fake clock, so the waits are exact, not timed.
    """
    seen: list[str] = []

    def busy(route: Any) -> None:
        seen.append(route.request.url)
        route.fulfill(
            status=503,
            headers={"Retry-After": "5", "Content-Type": "application/json"},
            body=json.dumps(
                {"success": False, "error": "busy", "retryAfter": 5, "code": "overloaded"}
            ),
        )

    page.clock.install()
    page.route("**/api/dashboard", busy)
    page.goto(f"{server}/dashboard")
    page.wait_for_selector("#live[data-failures='1']")
    assert "next try in 5 s" in page.text_content("#live")
    page.clock.run_for(4_500)  # a healthy dashboard would have polled 4 more times
    assert len(seen) == 1
    with page.expect_request("**/api/dashboard"):
        page.clock.run_for(1_000)
    page.wait_for_selector("#live[data-failures='2']")
    assert len(seen) == 2
    # the API heals: polling goes back to once a second
    page.unroute("**/api/dashboard")
    with page.expect_request("**/api/dashboard"):
        page.clock.run_for(5_100)
    page.wait_for_selector("#live[data-failures='0']")
    assert page.text_content("#live").startswith("live")


# --- signing in, and what another origin cannot do ---------------------------------


@pytest.fixture
def healthy(demo: tuple[str, Any, Path]) -> None:
    """The database breaker closed again (the dashboard test above leaves it open for 60 s)."""
    demo[1].state.service.breaker.reset()


def test_the_login_link_sets_a_strict_http_only_cookie_and_works_once(
    demo: tuple[str, Any, Path], browser: Any, healthy: None
) -> None:
    link = login_link(demo)
    first = browser.new_context()
    try:
        pg = first.new_page()
        answer = pg.goto(link)
        assert answer.status == 200 and answer.url == f"{demo[0]}/"
        pg.wait_for_selector("#assistance-list li")
        pg.wait_for_selector("#whoami:has-text('signed in as manager')")
        (cookie,) = first.cookies()
        assert cookie["name"] == "suture_session"
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
        assert cookie["secure"] is False  # plain HTTP here; Secure over TLS
        assert "suture_session" not in pg.evaluate("document.cookie")
    finally:
        first.close()
    second = browser.new_context()
    try:
        pg = second.new_page()
        replayed = pg.goto(link)  # the same link again: a login form, no session
        assert replayed.status == 401
        assert pg.locator("form[action='/login'] input[name='token']").count() == 1
        assert second.cookies() == []
        assert pg.goto(f"{demo[0]}/").status == 401  # still nobody
    finally:
        second.close()


def test_the_manager_page_needs_a_login_and_the_token_form_gives_one(
    demo: tuple[str, Any, Path], anonymous: Any, healthy: None
) -> None:
    answer = anonymous.goto(f"{demo[0]}/")
    assert answer.status == 401
    anonymous.fill("input[name='token']", "not-the-token")
    with anonymous.expect_navigation():
        anonymous.click("button[type='submit']")
    assert anonymous.locator("input[name='token']").count() == 1  # refused: the form again
    anonymous.fill("input[name='token']", demo[1].state.service.console_token)
    with anonymous.expect_navigation():
        anonymous.click("button[type='submit']")
    anonymous.wait_for_selector("#assistance-list li")
    assert anonymous.url == f"{demo[0]}/"


def rows(db: Path, message_id: int) -> tuple[Any, ...]:
    """The message's status and its audit rows, read from the SQLite file."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        status = conn.execute(
            "SELECT status FROM demo_raw_message WHERE id = ?", (message_id,)
        ).fetchone()
        audits = conn.execute(
            "SELECT * FROM demo_transition_audit WHERE entity = 'demo_raw_message' "
            "AND record_key = ?",
            (str(message_id),),
        ).fetchall()
    return status, audits


def test_a_form_posted_from_another_local_origin_is_refused(
    demo: tuple[str, Any, Path], page: Any, api: httpx.Client, healthy: None
) -> None:
    """A signed-in manager visits a page on another port of this machine that posts to the demo.

    Same site (SameSite does not tell ports apart), so the cookie goes along: the
    server's Origin / Sec-Fetch-Site check is what refuses it, and nothing changes.
    """
    import http.server

    url, _, db = demo
    (message,) = api.get("/api/messages", params={"status": "READY", "limit": 1}).json()["messages"]
    target = f"{url}/api/messages/{message['id']}/promote"
    evil = (
        f'<form id="f" method="post" action="{target}"><input name="x" value="1"></form>'
        '<script>document.getElementById("f").submit()</script>'
    ).encode()

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(evil)

        def log_message(self, *args: Any) -> None:
            pass

    before = rows(db, message["id"])
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        with page.expect_response(target) as refused:
            page.goto(f"http://127.0.0.1:{other.server_address[1]}/")
        assert refused.value.status == 403
        assert refused.value.json()["code"] == "cross_origin"
    finally:
        other.shutdown()
        other.server_close()
    assert rows(db, message["id"]) == before  # neither the message nor its audit changed


def test_every_page_carries_the_security_headers(demo: tuple[str, Any, Path], page: Any) -> None:
    for path in ("/", "/dashboard", "/login"):
        answer = page.goto(f"{demo[0]}{path}")
        headers = answer.headers
        assert "default-src 'self'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "unsafe-inline" not in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
