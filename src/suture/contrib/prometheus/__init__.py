"""Prometheus metrics for a service using suture (extra ``metrics``).

:class:`PrometheusListener` does two things:

* it subscribes to suture's event bus and counts what only an event tells
  (retries by reason, give-ups, shed requests, state changes, ...);
* at scrape time it reads the policies' own counters (breakers, pool
  monitors and sources, limiters, retry budgets), so a successful call pays
  nothing for metrics: the breaker already counts it, and nothing here runs
  until Prometheus asks.

Every series is listed, with its type, unit and labels, in
``docs/observability.md``. Names are in base units (``_seconds``, ``_ratio``,
``_total``), the breaker state is one-hot (``suture_breaker_state{state="open"} 1``),
and no ``_created`` series is written: the counters are rendered as metric
families without one. Labels never carry user input: names of policies,
outcomes, reasons (exception class names), route templates.

:class:`suture.contrib.starlette_metrics.RequestMetricsMiddleware` adds the
HTTP edge (requests by route template, method and status class; request
duration). :func:`metrics_response` renders a registry for a ``/metrics``
route, :func:`metrics_app` is a mountable ASGI app.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar

from suture.contrib import missing_extra

try:
    from prometheus_client import CollectorRegistry, make_asgi_app
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra(__name__, "metrics", _exc) from _exc

from suture.clock import SYSTEM_CLOCK, Clock
from suture.contrib.prometheus._collect import Collected, SutureCollector
from suture.contrib.prometheus._histogram import (
    ATTEMPT_BUCKETS,
    DURATION_BUCKETS,
    Counts,
    HistogramTable,
)
from suture.contrib.prometheus._text import render_text
from suture.events import (
    BreakerRejected,
    BreakerStateChanged,
    Event,
    FaultInjected,
    LimitPaused,
    PressureChanged,
    RequestShed,
    ResponseRejected,
    RetryBudgetExhausted,
    RetryGaveUp,
    RetryScheduled,
    StaleServed,
    TransitionApplied,
    TransitionRejected,
    subscribe,
)

__all__ = [
    "BREAKER_STATES",
    "DURATION_BUCKETS",
    "PrometheusListener",
    "check_namespace",
    "metrics_app",
    "metrics_response",
    "render_text",
]

P = ParamSpec("P")
T = TypeVar("T")

BREAKER_STATES = ("closed", "open", "half_open")
"""The ``state`` label values of ``suture_breaker_state`` (one series each, one of them 1)."""

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def check_namespace(namespace: object) -> str:
    """``namespace`` if it is a valid Prometheus metric name prefix, else ``ValueError``."""
    if not isinstance(namespace, str) or not _METRIC_NAME.fullmatch(namespace):
        raise ValueError(
            f"namespace={namespace!r}: must be a Prometheus metric name prefix "
            "(letters, digits, '_' and ':', not starting with a digit)"
        )
    return namespace


def _name(value: object) -> str:
    """An enum's name (``PressureLevel.WARNING`` -> ``"WARNING"``), or the value as text."""
    inner = getattr(value, "value", value)
    return str(getattr(value, "name", inner))


def _state_label(state: object) -> str | None:
    raw = getattr(state, "value", state)
    if isinstance(raw, str) and raw.lower() in BREAKER_STATES:
        return raw.lower()
    return None


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return (value,)


class PrometheusListener:
    """Turns suture's events and policies into Prometheus metrics.

    :param registry: where the metrics live (default: a new ``CollectorRegistry``,
        so tests and several apps never collide in the global one).
    :param namespace: the metric name prefix (default ``suture``).
    :param monitor: pool monitors (one or several) read at scrape time.
    :param breakers: breakers read at scrape time (calls by outcome, one-hot
        state, opens, time in state).
    :param registry_breakers: also read every breaker in :data:`suture.breakers`.
    :param pool_sources: ``SQLAlchemyPoolSource`` objects whose waiters,
        checkout waits and timeouts are read at scrape time.
    :param limiters: :class:`suture.AdaptiveLimiter` objects (limit, in flight, drops).
    :param budgets: retry budgets (tokens, spent, refused).
    :param clock: for time in state and :meth:`timed` (default: the system clock).
    :param subscribe_now: subscribe to the event bus at once (call
        :meth:`close` to unsubscribe).
    """

    def __init__(  # noqa: PLR0913 - keyword-only options, one per kind of policy read
        self,
        *,
        registry: CollectorRegistry | None = None,
        namespace: str = "suture",
        monitor: Any = None,
        breakers: Iterable[Any] = (),
        registry_breakers: bool = True,
        pool_sources: Iterable[Any] = (),
        limiters: Iterable[Any] = (),
        budgets: Iterable[Any] = (),
        clock: Clock = SYSTEM_CLOCK,
        subscribe_now: bool = True,
    ) -> None:
        self.namespace = check_namespace(namespace)
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.clock = clock
        self.monitors: tuple[Any, ...] = _as_tuple(monitor)
        self.breakers: tuple[Any, ...] = tuple(breakers)
        self.registry_breakers = registry_breakers
        self.pool_sources: tuple[Any, ...] = tuple(pool_sources)
        self.limiters: tuple[Any, ...] = tuple(limiters)
        self.budgets: tuple[Any, ...] = tuple(budgets)
        self.counts = Counts()
        self.call_durations = HistogramTable(DURATION_BUCKETS)
        self.http_durations = HistogramTable(DURATION_BUCKETS)
        self.pool_waits = HistogramTable(DURATION_BUCKETS)
        self.attempt_buckets = ATTEMPT_BUCKETS
        self.started = clock.now()
        self.collected = Collected(self)
        self._unsubscribe: Callable[[], None] | None = None
        self.registry.register(SutureCollector(self))
        if subscribe_now:
            self.subscribe()

    @property
    def subscribed(self) -> bool:
        """True while the listener receives events."""
        return self._unsubscribe is not None

    def subscribe(self) -> None:
        """Start receiving events (idempotent)."""
        if self._unsubscribe is None:
            self._unsubscribe = subscribe(self)

    def close(self) -> None:
        """Stop receiving events; the metrics keep their values."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def track(self, *, breakers: Iterable[Any] = (), limiters: Iterable[Any] = ()) -> None:
        """Read more breakers or limiters at scrape time (added after construction)."""
        self.breakers += tuple(b for b in breakers if b not in self.breakers)
        self.limiters += tuple(x for x in limiters if x not in self.limiters)

    # --- events ------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:  # noqa: C901, PLR0912 - one branch per event kind: the mapping from events to metrics
        inc = self.counts.inc
        if isinstance(event, RetryScheduled):
            inc("retries", (event.name, type(event.error).__name__))
            inc("retry_reached", (event.name, str(event.attempt)))
        elif isinstance(event, RetryGaveUp):
            inc("retry_gave_up", (event.name, event.reason))
            if event.reason == "deadline":
                inc("deadline_exceeded", (event.name,))
        elif isinstance(event, RetryBudgetExhausted):
            inc("budget_exhausted", (event.name, event.budget))
        elif isinstance(event, BreakerStateChanged):
            inc("breaker_transitions", (event.name, _name(event.source), _name(event.target)))
            target = _state_label(event.target)
            if target is not None:
                self.collected.state_changed(event.name, target, self.clock.now())
        elif isinstance(event, BreakerRejected):
            inc("breaker_rejections", (event.name,))
        elif isinstance(event, RequestShed):
            inc("shed", (event.name, event.source, _name(event.priority)))
        elif isinstance(event, PressureChanged):
            inc("pressure_changes", (event.name, _name(event.target)))
        elif isinstance(event, TransitionApplied):
            if event.count > 0:
                inc("applied", (event.entity, _name(event.target)), event.count)
        elif isinstance(event, TransitionRejected):
            inc("rejected", (event.entity, _name(event.target)))
        elif isinstance(event, FaultInjected):
            inc("faults", (event.target, event.kind))
        elif isinstance(event, ResponseRejected):
            inc("responses_rejected", (str(event.transient).lower(),))
        elif isinstance(event, LimitPaused):
            inc("rate_limit_paused", (event.name,))
        elif isinstance(event, StaleServed):
            inc("stale_served", (event.name,))  # not the key: it may come from user input

    # --- durations ---------------------------------------------------------------------

    def observe_call(self, name: str, seconds: float) -> None:
        """Record one call's duration in ``suture_call_duration_seconds{name}``."""
        self.call_durations.observe((name,), seconds)

    def timed(self, name: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """A decorator recording each call's duration (sync or async) under ``name``.

        Put it outside the breaker or retry policy to time what the caller waits
        for (retries and rejections included). Two clock reads per call.
        """
        now = self.clock.now
        observe = self.call_durations.observe
        key = (name,)

        def decorate(fn: Callable[P, T]) -> Callable[P, T]:
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def arun(*args: P.args, **kwargs: P.kwargs) -> Any:
                    start = now()
                    try:
                        return await fn(*args, **kwargs)
                    finally:
                        observe(key, now() - start)

                return arun  # type: ignore[return-value]

            @functools.wraps(fn)
            def run(*args: P.args, **kwargs: P.kwargs) -> T:
                start = now()
                try:
                    return fn(*args, **kwargs)
                finally:
                    observe(key, now() - start)

            return run

        return decorate

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Record one HTTP request (called by the Starlette middleware)."""
        self.counts.inc("http_requests", (route, method, f"{status // 100}xx"))
        self.http_durations.observe((route, method), seconds)

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return render_text(self.registry)


def metrics_response(registry: CollectorRegistry) -> Any:
    """A Starlette ``Response`` with the registry's metrics (for a ``/metrics`` route)."""
    from starlette.responses import Response

    return Response(render_text(registry), media_type=CONTENT_TYPE_LATEST)


def metrics_app(registry: CollectorRegistry) -> Callable[..., Any]:
    """A mountable ASGI app serving the registry (``app.mount("/metrics", metrics_app(r))``)."""
    return make_asgi_app(registry=registry)
