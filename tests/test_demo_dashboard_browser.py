"""The dashboard tells an outage at a glance (headless Chromium through Playwright).

Its own server (the breaker it opens would disturb the other browser tests).
Screenshots go to a ``screenshots`` folder under pytest's temporary directory
(printed with ``-s``; kept by pytest for the last three runs).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from demo_support import serve
from suture.demo.app import Settings, create_app

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("screenshots")
    print(f"screenshots in {where}")
    return where


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:

    db = tmp_path_factory.mktemp("dash") / "demo.db"
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{db}",
        tasks=20,
        messages=100,
        rules=20,
        chaos=True,
        reset_timeout=60.0,
        failure_threshold=5,
        retry_initial_delay=0.005,
        retry_max_delay=0.02,
    )
    app = create_app(settings)
    with serve(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def server(demo: tuple[str, Any]) -> str:
    return demo[0]


def open_page(browser: Any, width: int = 1400) -> tuple[Any, Any, list[str]]:
    """A page signed in through a one-time login link; script errors and CSP reports collected."""
    url, app = _DEMO[0]
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    answer = page.goto(f"{url}/login?code={app.state.service.managers.login_link()}")
    assert answer is not None and answer.status == 200
    return context, page, errors


_DEMO: list[tuple[str, Any]] = []


@pytest.fixture(autouse=True)
def _current_demo(demo: tuple[str, Any]) -> Iterator[None]:
    _DEMO.insert(0, demo)
    yield
    _DEMO.remove(demo)


def api() -> httpx.Client:
    """An API client with the manager's bearer token."""
    url, app = _DEMO[0]
    headers = {"Authorization": f"Bearer {app.state.service.console_token}"}
    return httpx.Client(base_url=url, timeout=30, headers=headers)


def overflow(page: Any) -> int:
    """Pixels the page is wider than the viewport (0: no horizontal scroll)."""
    return int(
        page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    )


def test_a_reload_during_a_fault_shows_it_and_the_button_is_pressed(
    server: str, browser: Any, shots: Path
) -> None:
    with api() as client:
        assert client.post("/api/admin/chaos", json={"latency": 0.3}).status_code == 200
        try:
            context, page, errors = open_page(browser)
            page.goto(f"{server}/dashboard")  # opened while the fault is on
            page.wait_for_selector("#active-faults[data-active='true']")
            assert "+300 ms" in page.text_content("#active-faults")
            assert page.get_attribute("[data-fault='latency']", "aria-pressed") == "true"
            assert page.get_attribute("[data-fault='errors100']", "aria-pressed") == "false"
            page.reload()
            page.wait_for_selector("#active-faults[data-active='true']")
            assert page.get_attribute("[data-fault='latency']", "aria-pressed") == "true"
            page.screenshot(path=str(shots / "dashboard-fault-after-reload.png"), full_page=True)
            context.close()
            assert errors == []
        finally:
            client.post("/api/admin/chaos", json={"clear": True})


def test_events_are_grouped_and_filterable(server: str, browser: Any) -> None:
    from suture import PressureLevel, Priority
    from suture.events import PressureChanged, RequestShed, emit

    # The server runs in this process: its telemetry hears these.
    for _ in range(37):
        emit(
            RequestShed(
                name="db-pool",
                source="pool",
                priority=Priority.NORMAL,
                level=PressureLevel.CRITICAL,
                retry_after=1.0,
            )
        )
    emit(
        PressureChanged(
            name="db-pool",
            source=PressureLevel.NORMAL,
            target=PressureLevel.CRITICAL,
            fraction=0.95,
            current=19,
            limit=20,
        )
    )
    context, page, errors = open_page(browser)
    page.goto(f"{server}/dashboard")
    page.wait_for_selector("#events li[data-event='RequestShed']")
    messages = page.locator("#events li").all_text_contents()
    assert len(messages) == len(set(messages))  # one line per kind of message
    shed = page.locator("#events li[data-event='RequestShed']")
    assert shed.count() == 1
    assert shed.get_attribute("data-count") == "37"
    assert "× 37 in" in (shed.text_content() or "")
    page.wait_for_selector("#pinned li[data-event='PressureChanged']")
    assert page.locator("#pinned li[data-event='RequestShed']").count() == 0
    page.select_option("#event-filter", "PressureChanged")
    kinds = page.locator("#events li").evaluate_all("els => els.map(e => e.dataset.event)")
    assert kinds and set(kinds) == {"PressureChanged"}
    context.close()
    assert errors == []


@pytest.mark.parametrize("path", ["/", "/dashboard"])
def test_no_horizontal_scroll_at_390_px(server: str, browser: Any, shots: Path, path: str) -> None:
    context, page, errors = open_page(browser, width=390)
    page.goto(f"{server}{path}")
    page.wait_for_selector("main section")
    page.wait_for_timeout(1500)  # a poll or two rendered
    assert overflow(page) <= 0
    name = "manager" if path == "/" else "dashboard"
    page.screenshot(path=str(shots / f"{name}-390px.png"), full_page=True)
    context.close()
    assert errors == []


def test_headings_are_unique_and_every_chart_has_a_table(server: str, browser: Any) -> None:
    context, page, errors = open_page(browser)
    page.goto(f"{server}/dashboard")
    page.wait_for_selector("#table-requests table", state="attached")
    headings = page.locator("h1, h2, h3").all_text_contents()
    assert len(headings) == len(set(headings)), headings
    for key in ("requests", "latency", "pool", "rates"):
        assert page.locator(f"#table-{key} table caption").count() == 1
        assert page.locator(f"#chart-{key} svg").count() == 1
    context.close()
    assert errors == []


def busy_503(retry_after: int) -> dict[str, Any]:
    import json

    return {
        "status": 503,
        "headers": {"Retry-After": str(retry_after), "Content-Type": "application/json"},
        "body": json.dumps(
            {"success": False, "error": "busy", "retryAfter": retry_after, "code": "overloaded"}
        ),
    }


def test_manager_retry_countdown_from_retry_after_on_the_fake_clock(
    server: str, browser: Any
) -> None:
    context, page, errors = open_page(browser)
    seen: list[int] = []

    def flaky(route: Any) -> None:
        seen.append(1)
        if len(seen) == 1:
            route.fulfill(**busy_503(5))
        else:
            route.continue_()

    page.clock.install()
    page.route("**/api/manager/assistance", flaky)
    page.goto(f"{server}/")
    # Selectors, not wait_for_function: the page's CSP forbids the eval that it uses.
    page.wait_for_selector("#assistance-status:has-text('trying again in 5 s')")
    text = page.text_content("#assistance-status")
    assert "The service is busy" in text
    page.clock.run_for(1_000)
    page.wait_for_selector("#assistance-status:has-text('trying again in 4 s')")
    page.clock.run_for(2_000)
    page.wait_for_selector("#assistance-status:has-text('trying again in 2 s')")
    assert len(seen) == 1  # no attempt before Retry-After
    page.clock.run_for(2_100)
    page.wait_for_selector("#assistance-list li")
    assert len(seen) == 2
    final = page.text_content("#assistance-status")
    assert "need a manager" in final and "trying again" not in final
    context.close()
    assert errors == []


def test_manager_409_in_the_users_words_and_one_final_message(server: str, browser: Any) -> None:
    import json

    context, page, errors = open_page(browser)
    page.goto(f"{server}/")
    page.wait_for_selector("#assistance-list li")

    def conflict(route: Any) -> None:
        route.fulfill(
            status=409,
            headers={"Content-Type": "application/json"},
            body=json.dumps(
                {
                    "success": False,
                    "error": "demo_task 1: ASSISTANCE_REQUESTED -> IN_PROGRESS refused",
                    "code": "invalid_transition",
                }
            ),
        )

    page.route("**/api/manager/assistance/*/respond", conflict)
    item = page.locator("#assistance-list li").first
    item.locator("textarea").fill("Done, thanks")
    item.locator("button").click()
    note = item.locator(".status")
    page.wait_for_selector("#assistance-list li .status:has-text('Someone already')")
    assert note.text_content() == "Someone already answered this request."
    assert "ASSISTANCE_REQUESTED" not in (page.text_content("main") or "")
    context.close()
    assert errors == []


# Last in the module: it leaves the breaker open for its reset timeout (60 s).
def test_a_total_outage_shows_503s_an_open_band_and_a_100_percent_error_rate(
    server: str, browser: Any, shots: Path
) -> None:
    context, page, errors = open_page(browser)
    page.goto(f"{server}/dashboard")
    page.wait_for_selector("#breaker-state-database[data-state='closed']")
    with api() as client:
        assert client.post("/api/admin/chaos", json={"errorRate": 1.0}).status_code == 200
        try:
            codes = [client.get("/api/manager/assistance").status_code for _ in range(12)]
            assert codes[-1] == 503
            page.wait_for_selector("#breaker-state-database[data-state='open']", timeout=15_000)
            # The requests chart: a 503 line with points above zero, and the OPEN band.
            page.wait_for_selector("#chart-requests svg rect[data-state='open']", timeout=15_000)
            page.wait_for_selector("#chart-latency svg rect[data-state='open']")
            table = page.locator("#table-requests table")
            header = table.locator("thead th").all_text_contents()
            col = header.index("503 shed or rejected")
            cells = table.locator(f"tbody tr td:nth-child({col + 1})").all_text_contents()
            assert sum(float(c or 0) for c in cells) > 0, cells
            # Rejections count as errors: an open breaker never reads as healthy.
            for _ in range(3):
                client.get("/api/manager/assistance")
            page.wait_for_selector("#rate-errors:text-is('100%')", timeout=15_000)
            # State changes pinned; the one live region said so.
            page.wait_for_selector("#pinned li[data-event='BreakerStateChanged']")
            page.wait_for_selector("#announce:has-text('OPEN')", state="attached")
            assert page.locator("[aria-live]").count() == 1
            # Time of day on the axis.
            axis = page.locator("#chart-requests svg text").all_text_contents()
            assert any(t.count(":") == 2 for t in axis), axis
            page.screenshot(path=str(shots / "dashboard-outage.png"), full_page=True)
        finally:
            client.post("/api/admin/chaos", json={"clear": True})
    context.close()
    assert errors == []
