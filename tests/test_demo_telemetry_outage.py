"""The dashboard's data during an outage: requests by outcome, latency, the state band."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from suture import BreakerState
from suture.demo.telemetry import RequestTelemetry, Telemetry
from suture.events import BreakerRejected, BreakerStateChanged, RequestShed, emit
from suture.testing import FakeClock


def test_requests_by_outcome_and_latency_percentiles_per_second() -> None:
    clock = FakeClock(start=50.0)
    t = Telemetry(clock, horizon=60)
    for ms in range(1, 101):  # 100 requests, 1..100 ms
        t.request(200, ms / 1000)
    t.request(503, 0.001)
    t.request(500, 0.002)
    t.request(404, 0.001)
    clock.advance(1)
    s = t.series(2)
    assert s["req_2xx"] == [100, 0]
    assert s["req_503"] == [1, 0]
    assert s["req_5xx"] == [1, 0]
    assert s["req_4xx"] == [1, 0]
    assert s["p50"][0] is not None and 45 <= s["p50"][0] <= 55
    assert s["p99"][0] is not None and s["p99"][0] >= 98
    assert s["p50"][1] is None  # no request: a gap, not a zero latency


def test_an_open_breaker_reads_as_100_percent_errors_not_0() -> None:
    clock = FakeClock(start=10.0)
    t = Telemetry(clock, horizon=60)
    t.start()
    try:
        t.db_call(ConnectionError("down"))
        emit(
            BreakerStateChanged(
                name="database", source=BreakerState.CLOSED, target=BreakerState.OPEN, reason="x"
            )
        )
        clock.advance(1)
        for _ in range(5):  # no attempt at all: only rejections
            emit(BreakerRejected(name="database", retry_after=30.0))
        clock.advance(1)
    finally:
        t.stop()
    s = t.series(3)
    assert s["errorRate"] == [1.0, 1.0, 0.0]
    assert s["state"] == ["open", "open", "open"]  # carried forward until it changes
    assert t.rates(window=2)["errorRate"] == 1.0


def test_the_band_keeps_the_worse_state_seen_in_a_second() -> None:
    clock = FakeClock(start=0.0)
    t = Telemetry(clock)
    t.breaker_sample("closed")
    t.breaker_sample("open")
    t.breaker_sample("half_open")
    clock.advance(1)
    t.breaker_sample("closed")
    assert t.series(2)["state"] == ["open", "closed"]


def test_events_grouped_newest_first_with_state_changes_pinned() -> None:
    clock = FakeClock(start=0.0, wall_start=1000.0)
    t = Telemetry(clock)
    t.start()
    try:
        for _ in range(37):
            emit(RequestShed(name="db-pool", source="pool", priority=1, level=2, retry_after=1.0))
            clock.advance(0.25)
        emit(
            BreakerStateChanged(
                name="database", source=BreakerState.CLOSED, target=BreakerState.OPEN, reason="x"
            )
        )
    finally:
        t.stop()
    groups = t.event_groups()
    assert [g["event"] for g in groups] == ["BreakerStateChanged", "RequestShed"]
    shed = groups[1]
    assert shed["count"] == 37
    assert shed["last"] - shed["first"] == 9.0
    assert [p["event"] for p in t.pinned] == ["BreakerStateChanged"]


def test_the_middleware_counts_the_service_traffic_but_not_the_dashboard() -> None:
    clock = FakeClock()
    t = Telemetry(clock)

    async def ok(request: Request) -> PlainTextResponse:
        clock.advance(0.02)
        return PlainTextResponse("ok")

    async def busy(request: Request) -> PlainTextResponse:
        return PlainTextResponse("busy", status_code=503)

    app = Starlette(
        routes=[Route("/api/x", ok), Route("/api/busy", busy), Route("/api/dashboard", ok)]
    )
    app.add_middleware(RequestTelemetry, telemetry=t)
    client = TestClient(app)
    client.get("/api/x")
    client.get("/api/busy")
    client.get("/api/dashboard")
    assert t.totals["req_2xx"] == 1
    assert t.totals["req_503"] == 1
    assert t.series(1)["p99"] == [20.0]
