"""The demo in headless Chromium (Playwright): the manager page and the dashboard.

Needs Debian's ``chromium``; skipped with a reason when it is missing, except
in CI (``CI=true``) where a missing browser fails the test. Screenshots of both
pages go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from suture.demo.app import Settings, create_app

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import uvicorn

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
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # listening before the thread starts: no startup polling needed
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert errors == [], errors


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
    page.wait_for_function(
        "document.getElementById('assistance-status').textContent"
        ".includes('Loading... (retry 1/3)')"
    )
    page.wait_for_function(
        "document.getElementById('assistance-status').textContent"
        ".includes('Loading... (retry 2/3)')"
    )
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


def test_dashboard_shows_the_breaker_opening_under_faults(server: str, page: Any) -> None:
    page.goto(f"{server}/dashboard")
    page.wait_for_selector("#breaker-state-database[data-state='closed']")
    page.wait_for_selector("#chart-pool svg path[data-series='pool usage']", state="attached")
    with httpx.Client(base_url=server, timeout=30) as client:
        r = client.post("/api/admin/chaos", json={"errorRate": 1.0})
        assert r.status_code == 200
        try:
            codes = [client.get("/api/manager/assistance").status_code for _ in range(4)]
            assert codes[-1] == 503
            page.wait_for_selector("#breaker-state-database[data-state='open']", timeout=15_000)
            assert page.text_content("#breaker-state-database") == "OPEN"
            page.wait_for_selector("#events li[data-event='BreakerStateChanged']")
            screenshot(page, "dashboard.png")
        finally:
            client.post("/api/admin/chaos", json={"clear": True})


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
    page.wait_for_function("document.getElementById('live').dataset.failures === '1'")
    assert "next try in 5 s" in page.text_content("#live")
    page.clock.run_for(4_500)  # a healthy dashboard would have polled 4 more times
    assert len(seen) == 1
    with page.expect_request("**/api/dashboard"):
        page.clock.run_for(1_000)
    page.wait_for_function("document.getElementById('live').dataset.failures === '2'")
    assert len(seen) == 2
    # the API heals: polling goes back to once a second
    page.unroute("**/api/dashboard")
    with page.expect_request("**/api/dashboard"):
        page.clock.run_for(5_100)
    page.wait_for_function("document.getElementById('live').dataset.failures === '0'")
    assert page.text_content("#live").startswith("live")
