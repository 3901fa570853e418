"""The manager page during a database outage, in headless Chromium: the assistance list
stays on the page, served from last-known-good, and the page says how old it is."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from demo_support import serve
from suture.demo.app import Settings, create_app

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """The demo on a free loopback port: its URL and the app (for a login link)."""

    db = tmp_path_factory.mktemp("stale") / "demo.db"
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{db}",
        tasks=20,
        messages=40,
        rules=20,
        chaos=True,
        reset_timeout=60.0,
        failure_threshold=10,
        retry_initial_delay=0.005,
        retry_max_delay=0.02,
    )
    app = create_app(settings)
    with serve(app) as url:
        yield url, app


def test_the_list_stays_and_the_page_says_it_is_stale(
    server: tuple[str, Any], browser: Any
) -> None:
    url, app = server
    service = app.state.service
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{url}/login?code={service.managers.login_link()}")  # signs in
        page.wait_for_selector("#assistance-list li")
        before = page.locator("#assistance-list li").count()
        assert "need a manager" in page.text_content("#assistance-status")
        bearer = {"Authorization": f"Bearer {service.console_token}"}
        with httpx.Client(base_url=url, timeout=30, headers=bearer) as client:
            assert client.post("/api/admin/chaos", json={"errorRate": 1.0}).status_code == 200
            try:
                page.click("#assistance-reload")
                page.wait_for_selector("#assistance-status.stale", timeout=15_000)
                text = page.text_content("#assistance-status")
                assert text.startswith("Shown from ")
                assert text.endswith(" s ago, the database is unavailable.")
                assert page.locator("#assistance-list li").count() == before
            finally:
                client.post("/api/admin/chaos", json={"clear": True})
    finally:
        context.close()
    assert errors == []
