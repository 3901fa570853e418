"""suture.contrib.prometheus: events become metrics in the registry you pass."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from suture import BreakerState, CircuitBreaker, PressureLevel, Priority
from suture.contrib.prometheus import PrometheusListener, metrics_app, metrics_response
from suture.events import (
    BreakerRejected,
    BreakerStateChanged,
    FaultInjected,
    PressureChanged,
    RequestShed,
    ResponseRejected,
    RetryGaveUp,
    RetryScheduled,
    TransitionApplied,
    TransitionRejected,
    emit,
)
from suture.testing import FakeClock


@dataclass
class FakeUsage:
    current: int
    limit: int
    fraction: float


class FakeMonitor:
    name = "db-pool"

    def __init__(self) -> None:
        self.level = PressureLevel.NORMAL
        self.usage: FakeUsage | None = None


@pytest.fixture
def listener() -> Iterator[PrometheusListener]:
    lst = PrometheusListener(registry=CollectorRegistry())
    yield lst
    lst.close()


def value(lst: PrometheusListener, metric: str, /, **labels: str) -> float | None:
    return lst.registry.get_sample_value(metric, labels)


def test_retry_events(listener: PrometheusListener) -> None:
    err = ConnectionError("x")
    for attempt in (1, 2):
        emit(
            RetryScheduled(
                name="db", attempt=attempt, attempts=3, delay=0.1, error=err, elapsed=0.0
            )
        )
    emit(RetryGaveUp(name="db", attempts=3, elapsed=1.0, reason="attempts", error=err))
    assert value(listener, "suture_retries_total", name="db", reason="ConnectionError") == 2
    assert value(listener, "suture_retry_gave_up_total", name="db", reason="attempts") == 1


def test_breaker_events_and_state_gauge(listener: PrometheusListener) -> None:
    emit(
        BreakerStateChanged(
            name="pay", source=BreakerState.CLOSED, target=BreakerState.OPEN, reason="failures"
        )
    )
    emit(BreakerRejected(name="pay", retry_after=3.0))
    emit(BreakerRejected(name="pay", retry_after=2.0))
    labels = {"name": "pay", "source": "CLOSED", "target": "OPEN"}
    assert value(listener, "suture_breaker_transitions_total", **labels) == 1
    assert value(listener, "suture_breaker_rejections_total", name="pay") == 2
    assert value(listener, "suture_breaker_state", name="pay", state="open") == 1
    assert value(listener, "suture_breaker_state", name="pay", state="closed") == 0
    emit(
        BreakerStateChanged(
            name="pay", source=BreakerState.OPEN, target=BreakerState.HALF_OPEN, reason="timeout"
        )
    )
    assert value(listener, "suture_breaker_state", name="pay", state="half_open") == 1
    assert value(listener, "suture_breaker_state", name="pay", state="open") == 0


def test_breakers_passed_in_are_read_at_scrape_time() -> None:
    breaker = CircuitBreaker("inventory", failure_threshold=1, clock=FakeClock())
    lst = PrometheusListener(registry=CollectorRegistry(), breakers=[breaker])
    try:
        assert value(lst, "suture_breaker_state", name="inventory", state="closed") == 1
        breaker.force_open()
        assert value(lst, "suture_breaker_state", name="inventory", state="open") == 1
        assert value(lst, "suture_breaker_state", name="inventory", state="closed") == 0
    finally:
        lst.close()


def test_pool_monitor_is_read_at_scrape_time() -> None:
    monitor = FakeMonitor()
    lst = PrometheusListener(registry=CollectorRegistry(), monitor=monitor)
    try:
        assert value(lst, "suture_pool_pressure_level", name="db-pool") == 0
        assert value(lst, "suture_pool_usage_ratio", name="db-pool") is None
        monitor.usage = FakeUsage(9, 10, 0.9)
        monitor.level = PressureLevel.CRITICAL
        assert value(lst, "suture_pool_usage_ratio", name="db-pool") == 0.9
        assert value(lst, "suture_pool_connections", name="db-pool", kind="current") == 9
        assert value(lst, "suture_pool_connections", name="db-pool", kind="limit") == 10
        assert value(lst, "suture_pool_pressure_level", name="db-pool") == 2
    finally:
        lst.close()


def test_shed_pressure_transition_fault_and_response_events(listener: PrometheusListener) -> None:
    emit(
        RequestShed(
            name="db-pool",
            source="pool",
            priority=Priority.LOW,
            level=PressureLevel.WARNING,
            retry_after=2.0,
        )
    )
    emit(
        PressureChanged(
            name="db-pool",
            source=PressureLevel.NORMAL,
            target=PressureLevel.WARNING,
            fraction=0.8,
            current=8,
            limit=10,
        )
    )
    emit(TransitionApplied(entity="raw_message", target="SPAM_REVIEW", count=17))
    emit(TransitionApplied(entity="raw_message", target="SPAM_REVIEW", count=0))
    emit(TransitionRejected(entity="task", source="DONE", target="OPEN", reason="terminal"))
    emit(FaultInjected(target="database", kind="error"))
    emit(ResponseRejected(url="/x", status=503, error="busy", transient=True))
    shed = {"name": "db-pool", "source": "pool", "priority": "LOW"}
    assert value(listener, "suture_requests_shed_total", **shed) == 1
    assert value(listener, "suture_pool_pressure_changes_total", name="db-pool", target="WARNING")
    applied = {"entity": "raw_message", "target": "SPAM_REVIEW"}
    assert value(listener, "suture_transitions_applied_total", **applied) == 17
    rejected = {"entity": "task", "target": "OPEN"}
    assert value(listener, "suture_transitions_rejected_total", **rejected) == 1
    fault = {"target": "database", "kind": "error"}
    assert value(listener, "suture_faults_injected_total", **fault) == 1
    assert value(listener, "suture_responses_rejected_total", transient="true") == 1


def test_close_unsubscribes() -> None:
    lst = PrometheusListener(registry=CollectorRegistry())
    assert value(lst, "suture_listener_up") == 1
    lst.close()
    emit(FaultInjected(target="database", kind="error"))
    assert value(lst, "suture_faults_injected_total", target="database", kind="error") is None
    assert value(lst, "suture_listener_up") == 0


def test_two_listeners_do_not_collide() -> None:
    a = PrometheusListener(registry=CollectorRegistry())
    b = PrometheusListener(registry=CollectorRegistry())
    try:
        emit(FaultInjected(target="svc", kind="latency"))
        for lst in (a, b):
            assert value(lst, "suture_faults_injected_total", target="svc", kind="latency") == 1
    finally:
        a.close()
        b.close()


def test_bad_namespace() -> None:
    with pytest.raises(ValueError, match="namespace='my-app'"):
        PrometheusListener(namespace="my-app", subscribe_now=False)


def test_metrics_endpoints(listener: PrometheusListener) -> None:
    emit(FaultInjected(target="database", kind="error"))

    async def route(request: object) -> object:
        return metrics_response(listener.registry)

    from starlette.routing import Route

    app = Starlette(
        routes=[Route("/metrics", route), Mount("/m", app=metrics_app(listener.registry))]
    )
    client = TestClient(app)
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert 'suture_faults_injected_total{kind="error",target="database"} 1.0' in r.text
    r2 = client.get("/m/")
    assert r2.status_code == 200
    assert "suture_faults_injected_total" in r2.text
    assert "suture_faults_injected_total" in listener.render().decode()
