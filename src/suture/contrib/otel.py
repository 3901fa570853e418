"""OpenTelemetry metrics and span events for suture (extra ``otel``).

:class:`OtelInstruments` creates, on the meter you pass, the same instruments
as :mod:`suture.contrib.prometheus` (names in OpenTelemetry's dotted form,
units in UCUM: ``s``, ``{call}``, ``1``):

* observable instruments read the policies' own counters when the SDK's
  reader collects (breaker calls by outcome, one-hot state, opens; pool
  usage; limiter limit and in flight; retry budget tokens), so a successful
  call pays nothing;
* counters fed by suture's events: retries (``error.type``), give-ups,
  shed requests, state changes, budget refusals, deadline give-ups;
* histograms: ``suture.call.duration`` (:meth:`OtelInstruments.timed`) and
  ``suture.retry.attempts``.

When a span is recording, retries, breaker rejections, state changes and
shed requests also become span events on it (``suture.retry``,
``suture.breaker.rejected``, ``suture.breaker.state_change``,
``suture.request.shed``), with ``error.type`` and ``exception.message`` as the
semantic conventions name them.

    from opentelemetry import metrics
    otel = OtelInstruments(meter=metrics.get_meter("suture"), breakers=[db_breaker])
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ParamSpec, TypeVar

from suture.contrib import missing_extra

try:
    from opentelemetry import trace
    from opentelemetry.metrics import CallbackOptions, Meter, Observation
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra(__name__, "otel", _exc) from _exc

from suture.clock import SYSTEM_CLOCK, Clock
from suture.events import (
    BreakerRejected,
    BreakerStateChanged,
    Event,
    RequestShed,
    RetryBudgetExhausted,
    RetryGaveUp,
    RetryScheduled,
    subscribe,
)

__all__ = ["ATTEMPT_BOUNDARIES", "DURATION_BOUNDARIES", "OtelInstruments"]

P = ParamSpec("P")
T = TypeVar("T")

DURATION_BOUNDARIES = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds, the same buckets as the Prometheus histograms (advisory to the SDK)."""
ATTEMPT_BOUNDARIES = (1, 2, 3, 4, 5, 6, 8, 10)

_STATES = ("closed", "open", "half_open")


def _name(value: object) -> str:
    inner = getattr(value, "value", value)
    return str(getattr(value, "name", inner))


def _check_meter(meter: object) -> Meter:
    if meter is None:
        raise TypeError(
            "meter=None: pass an OpenTelemetry Meter, e.g. "
            "opentelemetry.metrics.get_meter('suture') or provider.get_meter('suture')"
        )
    if not isinstance(meter, Meter):
        raise TypeError(f"meter={meter!r}: expected an opentelemetry.metrics.Meter")
    return meter


class OtelInstruments:
    """suture's metrics through the OpenTelemetry metrics API, and span events.

    :param meter: the ``Meter`` the instruments are created on (required: a
        missing meter is a ``TypeError`` at setup, not silent no-op metrics).
    :param breakers: breakers read when the reader collects.
    :param monitors: pool monitors (usage ratio, pressure level).
    :param limiters: adaptive limiters (limit, in flight).
    :param budgets: retry budgets (tokens).
    :param span_events: add span events to the current recording span.
    :param clock: for :meth:`timed`.
    :param subscribe_now: subscribe to the event bus at once (:meth:`close` unsubscribes).
    """

    def __init__(
        self,
        *,
        meter: Meter,
        breakers: Iterable[Any] = (),
        monitors: Iterable[Any] = (),
        limiters: Iterable[Any] = (),
        budgets: Iterable[Any] = (),
        span_events: bool = True,
        clock: Clock = SYSTEM_CLOCK,
        subscribe_now: bool = True,
    ) -> None:
        m = _check_meter(meter)
        self.meter = m
        self.breakers = tuple(breakers)
        self.monitors = tuple(monitors)
        self.limiters = tuple(limiters)
        self.budgets = tuple(budgets)
        self.span_events = span_events
        self.clock = clock
        self.retries = m.create_counter(
            "suture.retries", unit="{retry}", description="Retries scheduled"
        )
        self.gave_up = m.create_counter(
            "suture.retry.gave_up", unit="{call}", description="Retry policies that gave up"
        )
        self.deadline_exceeded = m.create_counter(
            "suture.retry.deadline_exceeded",
            unit="{call}",
            description="Calls that gave up at their deadline",
        )
        self.budget_exhausted = m.create_counter(
            "suture.retry.budget_exhausted",
            unit="{retry}",
            description="Retries refused by an empty retry budget",
        )
        self.attempts = m.create_histogram(
            "suture.retry.attempts",
            unit="{attempt}",
            description="Attempts per call, among calls that gave up",
            explicit_bucket_boundaries_advisory=list(ATTEMPT_BOUNDARIES),
        )
        self.transitions = m.create_counter(
            "suture.breaker.transitions", unit="{transition}", description="Breaker state changes"
        )
        self.shed = m.create_counter(
            "suture.requests.shed", unit="{request}", description="Requests shed by admission"
        )
        self.duration = m.create_histogram(
            "suture.call.duration",
            unit="s",
            description="Call duration as the caller waited for it",
            explicit_bucket_boundaries_advisory=list(DURATION_BOUNDARIES),
        )
        m.create_observable_counter(
            "suture.breaker.calls",
            [self._breaker_calls],
            unit="{call}",
            description="Calls through a breaker, each once, by outcome",
        )
        m.create_observable_counter(
            "suture.breaker.slow_calls",
            [self._breaker_slow_calls],
            unit="{call}",
            description="Calls slower than the breaker's slow_call_duration, by result",
        )
        m.create_observable_gauge(
            "suture.breaker.state",
            [self._breaker_state],
            unit="1",
            description="Breaker state, one-hot: 1 for the current state",
        )
        m.create_observable_counter(
            "suture.breaker.opens",
            [self._breaker_opens],
            unit="{open}",
            description="Moves to OPEN",
        )
        m.create_observable_gauge(
            "suture.pool.usage",
            [self._pool_usage],
            unit="1",
            description="Fraction of the pool in use (last sample)",
        )
        m.create_observable_gauge(
            "suture.limiter.limit", [self._limiter_limit], unit="{request}", description="Limit"
        )
        m.create_observable_up_down_counter(
            "suture.limiter.inflight",
            [self._limiter_inflight],
            unit="{request}",
            description="Requests admitted and not yet released",
        )
        m.create_observable_gauge(
            "suture.retry.budget.tokens",
            [self._budget_tokens],
            unit="{token}",
            description="Retry tokens available now",
        )
        self._unsubscribe: Callable[[], None] | None = None
        if subscribe_now:
            self.subscribe()

    def subscribe(self) -> None:
        """Start receiving events (idempotent)."""
        if self._unsubscribe is None:
            self._unsubscribe = subscribe(self)

    def close(self) -> None:
        """Stop receiving events (the observable instruments keep reading the policies)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # --- events ------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        if isinstance(event, RetryScheduled):
            error_type = type(event.error).__name__
            self.retries.add(1, {"suture.name": event.name, "error.type": error_type})
            self._span_event(
                "suture.retry",
                {
                    "suture.name": event.name,
                    "suture.retry.attempt": event.attempt,
                    "suture.retry.delay": event.delay,
                    "error.type": error_type,
                    "exception.message": str(event.error),
                },
            )
        elif isinstance(event, RetryGaveUp):
            attrs = {"suture.name": event.name, "suture.reason": event.reason}
            self.gave_up.add(1, attrs)
            self.attempts.record(event.attempts, {"suture.name": event.name})
            if event.reason == "deadline":
                self.deadline_exceeded.add(1, {"suture.name": event.name})
        elif isinstance(event, RetryBudgetExhausted):
            self.budget_exhausted.add(1, {"suture.name": event.name, "suture.budget": event.budget})
        elif isinstance(event, BreakerStateChanged):
            attrs = {
                "suture.name": event.name,
                "suture.breaker.source": _name(event.source),
                "suture.breaker.target": _name(event.target),
            }
            self.transitions.add(1, attrs)
            self._span_event(
                "suture.breaker.state_change", {**attrs, "suture.reason": event.reason}
            )
        elif isinstance(event, BreakerRejected):
            self._span_event(
                "suture.breaker.rejected",
                {"suture.name": event.name, "suture.retry_after": event.retry_after},
            )
        elif isinstance(event, RequestShed):
            attrs = {
                "suture.name": event.name,
                "suture.source": event.source,
                "suture.priority": _name(event.priority),
            }
            self.shed.add(1, attrs)
            self._span_event("suture.request.shed", attrs)

    def _span_event(self, name: str, attributes: dict[str, Any]) -> None:
        if not self.span_events:
            return
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(name, attributes)

    # --- durations ---------------------------------------------------------------------

    def timed(self, name: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """A decorator recording each call's duration in ``suture.call.duration``."""
        now = self.clock.now
        record = self.duration.record
        attrs = {"suture.name": name}

        def decorate(fn: Callable[P, T]) -> Callable[P, T]:
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def arun(*args: P.args, **kwargs: P.kwargs) -> Any:
                    start = now()
                    try:
                        return await fn(*args, **kwargs)
                    finally:
                        record(now() - start, attrs)

                return arun  # type: ignore[return-value]

            @functools.wraps(fn)
            def run(*args: P.args, **kwargs: P.kwargs) -> T:
                start = now()
                try:
                    return fn(*args, **kwargs)
                finally:
                    record(now() - start, attrs)

            return run

        return decorate

    # --- observable callbacks ------------------------------------------------------------

    def _breaker_calls(self, options: CallbackOptions) -> Iterator[Observation]:
        for breaker in self.breakers:
            s = breaker.stats()
            for outcome, value in s.outcomes():
                yield Observation(value, {"suture.name": s.name, "suture.outcome": outcome})

    def _breaker_slow_calls(self, options: CallbackOptions) -> Iterator[Observation]:
        for breaker in self.breakers:
            s = breaker.stats()
            for outcome, value in (
                ("successful", s.total_slow_successes),
                ("failed", s.total_slow_failures),
            ):
                yield Observation(value, {"suture.name": s.name, "suture.outcome": outcome})

    def _breaker_state(self, options: CallbackOptions) -> Iterator[Observation]:
        for breaker in self.breakers:
            current = str(breaker.state.value).lower()
            for state in _STATES:
                attrs = {"suture.name": breaker.name, "suture.breaker.state": state}
                yield Observation(1 if state == current else 0, attrs)

    def _breaker_opens(self, options: CallbackOptions) -> Iterator[Observation]:
        for breaker in self.breakers:
            yield Observation(breaker.stats().total_opens, {"suture.name": breaker.name})

    def _pool_usage(self, options: CallbackOptions) -> Iterator[Observation]:
        for monitor in self.monitors:
            usage = monitor.usage
            if usage is not None:
                name = str(getattr(monitor, "name", "pool"))
                yield Observation(float(usage.fraction), {"suture.name": name})

    def _limiter_limit(self, options: CallbackOptions) -> Iterator[Observation]:
        for limiter in self.limiters:
            yield Observation(limiter.limit, {"suture.name": limiter.name})

    def _limiter_inflight(self, options: CallbackOptions) -> Iterator[Observation]:
        for limiter in self.limiters:
            yield Observation(limiter.inflight, {"suture.name": limiter.name})

    def _budget_tokens(self, options: CallbackOptions) -> Iterator[Observation]:
        for budget in self.budgets:
            s = budget.stats()
            yield Observation(s.tokens + s.reserve, {"suture.name": s.name})
