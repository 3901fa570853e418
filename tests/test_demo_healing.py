"""The demo heals: flaky database, dead database, exhausted pool (FakeClock, no sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from demo_support import manager_client, outage_settings
from suture.demo.app import Service, create_app
from suture.demo.models import MessageStatus, RawMessage
from suture.testing import FakeClock

RESET = 10.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


@pytest.fixture
def client(tmp_path: Any, clock: FakeClock) -> Iterator[TestClient]:
    settings = outage_settings(tmp_path / "heal.db", clock, reset_timeout=RESET)
    with manager_client(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def service(client: TestClient) -> Service:
    svc = client.app.state.service  # type: ignore[attr-defined]
    assert isinstance(svc, Service)
    return svc


def inject(client: TestClient, **faults: Any) -> None:
    r = client.post("/api/admin/chaos", json=faults)
    assert r.status_code == 200, r.text


def test_thirty_percent_database_errors_still_serve_99_percent(client: TestClient) -> None:
    inject(client, errorRate=0.3)
    statuses = [client.get("/api/manager/assistance").status_code for _ in range(300)]
    ok = statuses.count(200)
    assert ok / len(statuses) >= 0.99, statuses
    svc = service(client)
    injected = svc.chaos.snapshot()["database"]["injected"]["error"]
    assert injected > 60  # the faults really happened: retries absorbed them
    assert svc.telemetry.totals["retries"] >= injected - (300 - ok) * 5
    assert svc.breaker.stats().state.value == "closed"


def test_a_dead_database_opens_the_breaker_then_heals(client: TestClient, clock: FakeClock) -> None:
    svc = service(client)
    inject(client, errorRate=1.0)
    codes = []
    for _ in range(12):
        r = client.get("/api/manager/assistance")
        codes.append((r.status_code, r.json().get("code")))
        if r.status_code == 503:  # every 503, a spent retry's too, says when to come back
            assert r.json()["retryAfter"] == int(r.headers["Retry-After"]) >= 1
        if r.json().get("code") == "breaker_open":
            break
    # 10 consecutive failures open it. The retry budget (its floor holds one token at
    # the start, and nothing succeeds to earn more) lets the first request retry once
    # and no other: retries do not multiply the outage, so it takes ~9 requests.
    assert codes[-1] == (503, "breaker_open"), codes
    assert len(codes) <= 10
    opened_at = clock.now()
    faults = svc.chaos.snapshot()["database"]["injected"]["error"]
    assert faults == 10  # the database saw exactly the failures that opened the breaker
    assert svc.retry_budget.stats().refused >= len(codes) - 2
    sleeps = len(clock.sleeps)

    # while open: fast 503s with Retry-After, no attempt reaches the database, no waiting
    for _ in range(20):
        r = client.get("/api/manager/assistance")
        assert r.status_code == 503
        assert r.json()["code"] == "breaker_open"
        assert 1 <= int(r.headers["Retry-After"]) <= RESET
        assert r.json()["retryAfter"] == int(r.headers["Retry-After"])
    assert svc.chaos.snapshot()["database"]["injected"]["error"] == faults
    assert len(clock.sleeps) == sleeps
    assert clock.now() == opened_at
    health = client.get("/health").json()
    assert health["status"] == "degraded"
    assert health["breakers"]["database"]["state"] == "open"

    # the faults stop: it serves again within the reset timeout plus one second
    inject(client, clear=True)
    waited = 0.0
    while True:
        r = client.get("/api/manager/assistance")
        if r.status_code == 200:
            break
        assert r.json()["code"] == "breaker_open"
        clock.advance(0.5)
        waited += 0.5
        assert waited <= RESET + 1.0
    assert clock.now() - opened_at <= RESET + 1.0
    assert svc.breaker.stats().state.value == "closed"
    dashboard = client.get("/api/dashboard").json()
    events = [e["event"] for e in dashboard["recent"]]
    assert "BreakerStateChanged" in events
    assert dashboard["breakers"][0]["total_opens"] == 1  # kept after it closed again


def test_an_exhausted_pool_sheds_then_recovers(client: TestClient) -> None:
    svc = service(client)
    assert client.portal is not None

    async def held() -> None:
        async with asyncio.timeout(30):
            await svc.hog.wait()

    inject(client, hold=4)
    client.portal.call(held)
    assert svc.hog.held == 4
    svc.monitor.sample()
    assert svc.monitor.level.name == "CRITICAL"
    r = client.get("/api/manager/assistance")
    assert r.status_code == 503
    assert r.json()["code"] == "overloaded"
    assert int(r.headers["Retry-After"]) >= 1
    # low-priority batch work is shed too; health and the dashboard are exempt
    assert client.post("/api/manager/spam/capture").status_code == 503
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json()["pool"]["level"] == "CRITICAL"
    assert client.get("/api/dashboard").status_code == 200

    inject(client, clear=True)
    client.portal.call(held)
    assert svc.hog.held == 0
    for _ in range(svc.monitor.recover_after + 2):
        svc.monitor.sample()
    assert svc.monitor.level.name == "NORMAL"
    assert client.get("/api/manager/assistance").status_code == 200
    assert svc.telemetry.totals["shed"] >= 2


def test_latency_is_injected_through_the_clock(client: TestClient, clock: FakeClock) -> None:
    inject(client, latency=0.2)
    before = clock.now()
    assert client.get("/api/manager/assistance").status_code == 200
    assert clock.now() - before == pytest.approx(0.2)


def test_spam_capture_under_injected_errors_counts_each_message_once(client: TestClient) -> None:
    clean = client.post("/api/manager/spam/capture", params={"batchSize": 7}).json()
    assert clean["updatedCount"] > 0

    # put everything back to READY as before the capture, then capture again with faults
    # on (not through release: since issue 15 a release is a decision capture respects)
    async def reset() -> None:
        async with service(client).engine.begin() as conn:
            await conn.execute(
                sa.update(RawMessage)
                .where(RawMessage.status == MessageStatus.SPAM_REVIEW)
                .values(status=MessageStatus.READY, matched_patterns=None)
            )

    assert client.portal is not None
    client.portal.call(reset)
    assert client.get("/api/manager/spam").json()["total"] == 0
    inject(client, errorRate=0.3)
    # one statement per match (a batch counts matches, not rows read): many attempts to hit
    flaky = client.post("/api/manager/spam/capture", params={"batchSize": 1})
    inject(client, clear=True)
    assert service(client).chaos.snapshot()["database"]["injected"]["error"] > 0
    if flaky.status_code == 200:
        moved = flaky.json()["updatedCount"]
    else:  # a read or write ran out of retries (rare): what it moved stays moved
        assert flaky.status_code == 503, flaky.text
        moved = client.get("/api/manager/spam", params={"limit": 1}).json()["total"]
    rest = client.post("/api/manager/spam/capture").json()["updatedCount"]
    assert moved + rest == clean["updatedCount"]


def test_spam_capture_when_the_breaker_is_open_is_a_fast_503(client: TestClient) -> None:
    service(client).breaker.force_open()
    r = client.post("/api/manager/spam/capture")
    assert r.status_code == 503
    assert r.json()["code"] == "breaker_open"
    service(client).breaker.reset()
    assert client.post("/api/manager/spam/capture").status_code == 200
