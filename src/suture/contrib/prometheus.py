"""Prometheus metrics from suture's events (extra ``metrics``).

:class:`PrometheusListener` subscribes to the event bus and keeps counters and
gauges in a ``CollectorRegistry`` you pass (or its own):

=========================================  ========================================
``suture_retries_total{name}``             retries scheduled
``suture_retry_gave_up_total{name,reason}`` retry policies that gave up
``suture_breaker_state{name}``             0 closed, 1 half-open, 2 open
``suture_breaker_transitions_total``       ``{name,source,target}`` state changes
``suture_breaker_rejections_total{name}``  calls refused by an open breaker
``suture_requests_shed_total``             ``{name,source,priority}`` shed requests
``suture_pool_pressure_level{name}``       0 normal, 1 warning, 2 critical
``suture_pool_usage_ratio{name}``          the monitor's last sampled fraction
``suture_pool_connections{name,kind}``     ``current`` and ``limit`` of the sample
``suture_transitions_applied_total``       ``{entity,target}`` records moved
``suture_transitions_rejected_total``      ``{entity,target}`` transitions refused
``suture_faults_injected_total``           ``{target,kind}`` chaos faults
``suture_responses_rejected_total``        ``{transient}`` failed HTTP responses
=========================================  ========================================

Pool usage and breaker states are read at scrape time from the monitors and
breakers you hand over (``monitor=``, ``breakers=``), so the gauges are never
stale. :func:`metrics_response` renders a registry for a ``/metrics`` route,
:func:`metrics_app` is a mountable ASGI app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from suture.contrib import missing_extra

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, make_asgi_app
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
    from prometheus_client.registry import Collector
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra(__name__, "metrics", _exc) from _exc

from suture.events import (
    BreakerRejected,
    BreakerStateChanged,
    Event,
    FaultInjected,
    PressureChanged,
    RequestShed,
    ResponseRejected,
    RetryGaveUp,
    RetryScheduled,
    TransitionApplied,
    TransitionRejected,
    subscribe,
)

__all__ = ["BREAKER_STATE_VALUES", "PrometheusListener", "metrics_app", "metrics_response"]

BREAKER_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}
"""``suture_breaker_state`` values, by ``BreakerState`` value."""


def _name(value: object) -> str:
    """An enum's name (``PressureLevel.WARNING`` -> ``"WARNING"``), or the value as text."""
    inner = getattr(value, "value", value)
    return str(getattr(value, "name", inner))


def _state_value(state: object) -> int | None:
    raw = getattr(state, "value", state)
    if isinstance(raw, str):
        return BREAKER_STATE_VALUES.get(raw.lower())
    return None


class _LiveCollector(Collector):
    """Reads pool monitors and breakers at scrape time."""

    def __init__(self, listener: PrometheusListener) -> None:
        self._listener = listener

    def collect(self) -> Iterator[Metric]:
        ns = self._listener.namespace
        ratio = GaugeMetricFamily(
            f"{ns}_pool_usage_ratio", "Fraction of the pool in use (last sample)", labels=["name"]
        )
        conns = GaugeMetricFamily(
            f"{ns}_pool_connections",
            "Connections in use and the limit (last sample)",
            labels=["name", "kind"],
        )
        level = GaugeMetricFamily(
            f"{ns}_pool_pressure_level",
            "Pool pressure: 0 normal, 1 warning, 2 critical",
            labels=["name"],
        )
        for monitor in self._listener.monitors:
            name = str(getattr(monitor, "name", "pool"))
            level.add_metric([name], float(int(monitor.level)))
            usage = monitor.usage
            if usage is not None:
                ratio.add_metric([name], float(usage.fraction))
                conns.add_metric([name, "current"], float(usage.current))
                conns.add_metric([name, "limit"], float(usage.limit))
        yield ratio
        yield conns
        yield level
        state = GaugeMetricFamily(
            f"{ns}_breaker_state", "Breaker state: 0 closed, 1 half-open, 2 open", labels=["name"]
        )
        seen: set[str] = set()
        for breaker in self._listener.breakers:
            value = _state_value(breaker.state)
            if value is not None:
                state.add_metric([breaker.name], float(value))
                seen.add(breaker.name)
        for name, value in self._listener._breaker_states.items():
            if name not in seen:
                state.add_metric([name], float(value))
        yield state


class PrometheusListener:
    """Turns suture events into Prometheus metrics.

    :param registry: where the metrics live (default: a new ``CollectorRegistry``,
        so tests and several apps never collide in the global one).
    :param monitor: pool monitors (one or several) whose level and usage are
        read at scrape time.
    :param breakers: breakers whose state is read at scrape time; breakers
        not listed still get a state gauge from their state-change events.
    :param subscribe_now: subscribe to the event bus at once (call
        :meth:`close` to unsubscribe).
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        namespace: str = "suture",
        monitor: Any = None,
        breakers: Iterable[Any] = (),
        subscribe_now: bool = True,
    ) -> None:
        if not namespace.isidentifier():
            raise ValueError(f"namespace={namespace!r}: must be a Prometheus metric name prefix")
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.namespace = ns = namespace
        if monitor is None:
            self.monitors: tuple[Any, ...] = ()
        elif isinstance(monitor, (list, tuple)):
            self.monitors = tuple(monitor)
        else:
            self.monitors = (monitor,)
        self.breakers: tuple[Any, ...] = tuple(breakers)
        self._breaker_states: dict[str, int] = {}
        r = self.registry
        self.retries = Counter(f"{ns}_retries", "Retries scheduled", ["name"], registry=r)
        self.gave_up = Counter(
            f"{ns}_retry_gave_up", "Retry policies that gave up", ["name", "reason"], registry=r
        )
        self.breaker_transitions = Counter(
            f"{ns}_breaker_transitions",
            "Breaker state changes",
            ["name", "source", "target"],
            registry=r,
        )
        self.breaker_rejections = Counter(
            f"{ns}_breaker_rejections", "Calls refused by an open breaker", ["name"], registry=r
        )
        self.shed = Counter(
            f"{ns}_requests_shed",
            "Requests shed by admission control",
            ["name", "source", "priority"],
            registry=r,
        )
        self.pressure_changes = Counter(
            f"{ns}_pool_pressure_changes",
            "Pool pressure level changes",
            ["name", "target"],
            registry=r,
        )
        self.applied = Counter(
            f"{ns}_transitions_applied",
            "Records moved by guarded transitions",
            ["entity", "target"],
            registry=r,
        )
        self.rejected = Counter(
            f"{ns}_transitions_rejected",
            "Transitions refused",
            ["entity", "target"],
            registry=r,
        )
        self.faults = Counter(
            f"{ns}_faults_injected",
            "Faults injected by suture.chaos",
            ["target", "kind"],
            registry=r,
        )
        self.responses_rejected = Counter(
            f"{ns}_responses_rejected",
            "HTTP responses validated as failures",
            ["transient"],
            registry=r,
        )
        self.events = Gauge(
            f"{ns}_listener_up", "1 while the suture events listener is subscribed", registry=r
        )
        r.register(_LiveCollector(self))
        self._unsubscribe: Callable[[], None] | None = None
        if subscribe_now:
            self.subscribe()

    def subscribe(self) -> None:
        """Start receiving events (idempotent)."""
        if self._unsubscribe is None:
            self._unsubscribe = subscribe(self)
            self.events.set(1)

    def close(self) -> None:
        """Stop receiving events; the metrics keep their values."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
            self.events.set(0)

    def __call__(self, event: Event) -> None:  # noqa: C901 - one branch per event kind: the mapping from events to metrics
        if isinstance(event, RetryScheduled):
            self.retries.labels(event.name).inc()
        elif isinstance(event, RetryGaveUp):
            self.gave_up.labels(event.name, event.reason).inc()
        elif isinstance(event, BreakerStateChanged):
            self.breaker_transitions.labels(
                event.name, _name(event.source), _name(event.target)
            ).inc()
            value = _state_value(event.target)
            if value is not None:
                self._breaker_states[event.name] = value
        elif isinstance(event, BreakerRejected):
            self.breaker_rejections.labels(event.name).inc()
        elif isinstance(event, RequestShed):
            self.shed.labels(event.name, event.source, _name(event.priority)).inc()
        elif isinstance(event, PressureChanged):
            self.pressure_changes.labels(event.name, _name(event.target)).inc()
        elif isinstance(event, TransitionApplied):
            if event.count > 0:
                self.applied.labels(event.entity, _name(event.target)).inc(event.count)
        elif isinstance(event, TransitionRejected):
            self.rejected.labels(event.entity, _name(event.target)).inc()
        elif isinstance(event, FaultInjected):
            self.faults.labels(event.target, event.kind).inc()
        elif isinstance(event, ResponseRejected):
            self.responses_rejected.labels(str(event.transient).lower()).inc()

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


def metrics_response(registry: CollectorRegistry) -> Any:
    """A Starlette ``Response`` with the registry's metrics (for a ``/metrics`` route)."""
    from starlette.responses import Response

    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def metrics_app(registry: CollectorRegistry) -> Callable[..., Any]:
    """A mountable ASGI app serving the registry (``app.mount("/metrics", metrics_app(r))``)."""
    return make_asgi_app(registry=registry)
