"""The reference service keeps answering the assistance list from last-known-good during
a database outage, visibly marked stale, and says so again when it is over (FakeClock)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from demo_support import manager_client, outage_settings
from suture.demo.app import Service, create_app
from suture.demo.queue import STALE_FOR
from suture.demo.routes import accepts_stale
from suture.testing import FakeClock

RESET = 10.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


@pytest.fixture
def client(tmp_path: Any, clock: FakeClock) -> Iterator[TestClient]:
    settings = outage_settings(tmp_path / "stale.db", clock, reset_timeout=RESET)
    with manager_client(create_app(settings), raise_server_exceptions=False) as c:
        yield c


STALE_OK = {"Cache-Control": "stale-if-error=600"}  # what the manager page sends


def inject(client: TestClient, **faults: Any) -> None:
    r = client.post("/api/admin/chaos", json=faults)
    assert r.status_code == 200, r.text


def test_the_list_is_served_stale_during_a_database_outage(
    client: TestClient, clock: FakeClock
) -> None:
    fresh = client.get("/api/manager/assistance").json()
    assert fresh["success"] and "stale" not in fresh
    assert fresh["count"] > 0
    clock.advance(42)

    inject(client, errorRate=1.0)  # the database is down
    seen_breaker_open = False
    for _ in range(15):
        r = client.get("/api/manager/assistance", headers=STALE_OK)
        assert r.status_code == 200
        body = r.json()
        assert body["requests"] == fresh["requests"]
        assert body["stale"]["reason"] == "the database is unavailable"
        assert body["stale"]["age"] >= 42
        seen_breaker_open |= body["stale"]["error"] == "BreakerOpen"
    # the breaker opened meanwhile, and the list kept being served from memory
    assert seen_breaker_open
    svc = client.app.state.service  # type: ignore[attr-defined]
    assert isinstance(svc, Service)
    assert svc.breaker.stats().state.value == "open"

    # the outage ends: fresh again once the breaker lets a probe through
    inject(client, clear=True)
    clock.advance(RESET + 1)
    again = client.get("/api/manager/assistance", headers=STALE_OK).json()
    assert "stale" not in again
    assert again["requests"] == fresh["requests"]


def test_an_outage_longer_than_stale_for_shows_as_an_outage(
    client: TestClient, clock: FakeClock
) -> None:
    assert client.get("/api/manager/assistance").status_code == 200
    inject(client, errorRate=1.0)
    clock.advance(STALE_FOR + 1)
    r = client.get("/api/manager/assistance", headers={"Cache-Control": "stale-if-error"})
    assert r.status_code == 503
    assert r.json()["success"] is False


def test_a_client_that_does_not_ask_for_stale_answers_is_told_the_outage(
    client: TestClient, clock: FakeClock
) -> None:
    """Without ``Cache-Control: stale-if-error`` (RFC 5861) the API answers as it always
    did: a 503 with Retry-After; with ``stale-if-error=N``, nothing older than N s."""
    assert client.get("/api/manager/assistance").status_code == 200
    inject(client, errorRate=1.0)
    clock.advance(30)
    r = client.get("/api/manager/assistance")
    assert r.status_code == 503
    assert "Retry-After" in r.headers
    too_old = client.get("/api/manager/assistance", headers={"Cache-Control": "stale-if-error=10"})
    assert too_old.status_code == 503
    ok = client.get(
        "/api/manager/assistance", headers={"Cache-Control": "max-age=0, stale-if-error=60"}
    )
    assert ok.status_code == 200 and ok.json()["stale"]["age"] == 30


@pytest.mark.parametrize(
    ("header", "age", "accepted"),
    [
        (None, 1, False),
        ("", 1, False),
        ("no-cache", 1, False),
        ("stale-if-error", 10**6, True),
        ("stale-if-error=60", 60, True),
        ("stale-if-error=60", 61, False),
        ('max-age=0, Stale-If-Error="30"', 5, True),
        ("stale-if-error=soon", 1, False),
    ],
)
def test_accepts_stale(header: str | None, age: float, accepted: bool) -> None:
    assert accepts_stale(header, age) is accepted


def test_the_manager_page_says_how_old_the_list_is() -> None:
    from importlib import resources

    script = resources.files("suture.demo").joinpath("static/manager.js").read_text()
    assert "data.stale" in script
    assert '"Cache-Control": "stale-if-error=600"' in script
    assert "Shown from ${age} s ago, ${reason}." in script
