"""suture.contrib.otel: the instruments through the SDK's in-memory reader and span exporter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from suture import AdaptiveLimiter, BreakerOpen, CircuitBreaker, Priority, Retry, RetryBudget
from suture.contrib.otel import OtelInstruments
from suture.events import RequestShed, emit
from suture.testing import FakeClock


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


def value(pts: list[Any], **attrs: object) -> Any:
    found = [p for p in pts if dict(p.attributes) == attrs]
    assert len(found) == 1, (attrs, [dict(p.attributes) for p in pts])
    return found[0]


def boom() -> None:
    raise ConnectionError("down")


def test_a_missing_meter_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="meter=None: pass an OpenTelemetry Meter"):
        OtelInstruments(meter=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"expected an opentelemetry\.metrics\.Meter"):
        OtelInstruments(meter="suture")  # type: ignore[arg-type]


def test_breaker_calls_state_and_opens_read_at_collection(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("pay", failure_threshold=1, reset_timeout=5, clock=clock)
    otel = OtelInstruments(meter=provider.get_meter("suture"), breakers=[breaker], clock=clock)
    try:
        breaker.call(lambda: 1)
        breaker.call(lambda: 2)
        with pytest.raises(ConnectionError):
            breaker.call(boom)
        with pytest.raises(BreakerOpen):
            breaker.call(lambda: 3)
        pts = points(reader)
        calls = pts["suture.breaker.calls"]
        assert value(calls, **{"suture.name": "pay", "suture.outcome": "successful"}).value == 2
        assert value(calls, **{"suture.name": "pay", "suture.outcome": "failed"}).value == 1
        assert value(calls, **{"suture.name": "pay", "suture.outcome": "rejected"}).value == 1
        assert value(calls, **{"suture.name": "pay", "suture.outcome": "slow"}).value == 0
        slow = pts["suture.breaker.slow_calls"]
        assert value(slow, **{"suture.name": "pay", "suture.outcome": "failed"}).value == 0
        state = pts["suture.breaker.state"]
        for name, want in (("open", 1), ("closed", 0), ("half_open", 0)):
            got = value(state, **{"suture.name": "pay", "suture.breaker.state": name}).value
            assert got == want
        assert value(pts["suture.breaker.opens"], **{"suture.name": "pay"}).value == 1
        transitions = pts["suture.breaker.transitions"]
        attrs = {
            "suture.name": "pay",
            "suture.breaker.source": "CLOSED",
            "suture.breaker.target": "OPEN",
        }
        assert value(transitions, **attrs).value == 1
    finally:
        otel.close()


def test_retries_give_ups_and_attempts(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    clock = FakeClock()
    otel = OtelInstruments(meter=provider.get_meter("suture"), clock=clock)
    try:
        policy = Retry(attempts=3, initial_delay=0.1, jitter="none", clock=clock, name="db")
        with pytest.raises(ConnectionError):
            policy(boom)()
        pts = points(reader)
        retries = pts["suture.retries"]
        assert value(retries, **{"suture.name": "db", "error.type": "ConnectionError"}).value == 2
        gave_up = pts["suture.retry.gave_up"]
        assert value(gave_up, **{"suture.name": "db", "suture.reason": "attempts"}).value == 1
        attempts = value(pts["suture.retry.attempts"], **{"suture.name": "db"})
        assert (attempts.count, attempts.sum) == (1, 3)
    finally:
        otel.close()


def test_duration_histogram_uses_the_buckets_in_seconds(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    clock = FakeClock()
    otel = OtelInstruments(meter=provider.get_meter("suture"), clock=clock, subscribe_now=False)

    @otel.timed("search")
    def slow() -> int:
        clock.advance(0.3)
        return 1

    @otel.timed("search")
    async def fast() -> int:
        clock.advance(0.004)
        return 2

    assert slow() == 1
    assert asyncio.run(fast()) == 2
    point = value(points(reader)["suture.call.duration"], **{"suture.name": "search"})
    assert point.count == 2
    assert point.sum == pytest.approx(0.304)
    assert list(point.explicit_bounds)[:2] == [0.005, 0.01]
    assert point.bucket_counts[0] == 1  # <= 5 ms
    assert sum(point.bucket_counts[:7]) == 2  # <= 500 ms


def test_pool_limiter_budget_gauges(provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    clock = FakeClock()

    class Usage:
        fraction = 0.75

    class Monitor:
        name = "db-pool"
        usage = Usage()

    limiter = AdaptiveLimiter(initial=4, name="edge", clock=clock)
    budget = RetryBudget(ratio=0.5, capacity=10, min_per_second=0, name="shared", clock=clock)
    budget.deposit()
    budget.deposit()
    otel = OtelInstruments(
        meter=provider.get_meter("suture"),
        monitors=[Monitor()],
        limiters=[limiter],
        budgets=[budget],
        subscribe_now=False,
    )
    permit = limiter.acquire(Priority.NORMAL)
    pts = points(reader)
    permit.success()
    assert value(pts["suture.pool.usage"], **{"suture.name": "db-pool"}).value == 0.75
    assert value(pts["suture.limiter.limit"], **{"suture.name": "edge"}).value == 4
    assert value(pts["suture.limiter.inflight"], **{"suture.name": "edge"}).value == 1
    tokens = value(pts["suture.retry.budget.tokens"], **{"suture.name": "shared"}).value
    assert tokens == pytest.approx(1.0)
    assert otel.meter is not None


def test_span_events_for_retries_rejections_state_changes_and_shedding(
    provider: MeterProvider,
) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = tracer_provider.get_tracer("test")
    clock = FakeClock()
    breaker = CircuitBreaker("pay", failure_threshold=1, clock=clock)
    otel = OtelInstruments(meter=provider.get_meter("suture"), clock=clock)
    try:
        policy = Retry(attempts=2, initial_delay=0.1, jitter="none", clock=clock, name="db")
        with tracer.start_as_current_span("request"):
            with pytest.raises(ConnectionError):
                policy(boom)()
            with pytest.raises(ConnectionError):
                breaker.call(boom)
            with pytest.raises(BreakerOpen):
                breaker.call(boom)
            emit(
                RequestShed(
                    name="db-pool",
                    source="pool",
                    priority=Priority.LOW,
                    level="CRITICAL",
                    retry_after=2.0,
                )
            )
        # Outside any span: nothing is added, nothing fails.
        with pytest.raises(ConnectionError):
            policy(boom)()
        (span,) = exporter.get_finished_spans()
        names = [e.name for e in span.events]
        assert names == [
            "suture.retry",
            "suture.breaker.state_change",
            "suture.breaker.rejected",
            "suture.request.shed",
        ]
        retry = span.events[0].attributes
        assert retry is not None
        assert retry["error.type"] == "ConnectionError"
        assert retry["exception.message"] == "down"
        assert retry["suture.retry.attempt"] == 1
        change = span.events[1].attributes
        assert change is not None
        assert change["suture.breaker.target"] == "OPEN"
    finally:
        otel.close()
        tracer_provider.shutdown()
