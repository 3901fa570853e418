"""The scrape: every metric family, from the listener's counts and the policies' own counters.

Nothing here runs on a request path: :class:`SutureCollector.collect` is
called by ``generate_latest`` when Prometheus scrapes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from suture.contrib.prometheus import PrometheusListener

__all__ = ["Collected", "SutureCollector"]

_STATES = ("closed", "open", "half_open")

# (key in Counts, metric name without namespace, help, label names)
_EVENT_COUNTERS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("retries", "retries", "Retries scheduled, by the error's type", ("name", "reason")),
    ("retry_gave_up", "retry_gave_up", "Retry policies that gave up", ("name", "reason")),
    (
        "deadline_exceeded",
        "retry_deadline_exceeded",
        "Calls that gave up because the next wait would pass the deadline",
        ("name",),
    ),
    (
        "budget_exhausted",
        "retry_budget_exhausted",
        "Retries refused by an empty retry budget",
        ("name", "budget"),
    ),
    (
        "breaker_transitions",
        "breaker_transitions",
        "Breaker state changes",
        ("name", "source", "target"),
    ),
    (
        "breaker_rejections",
        "breaker_rejections",
        "Calls refused by an open breaker (from events)",
        ("name",),
    ),
    (
        "shed",
        "requests_shed",
        "Requests shed by admission control",
        ("name", "source", "priority"),
    ),
    (
        "pressure_changes",
        "pool_pressure_changes",
        "Pool pressure level changes",
        ("name", "target"),
    ),
    (
        "applied",
        "transitions_applied",
        "Records moved by guarded transitions",
        ("entity", "target"),
    ),
    ("rejected", "transitions_rejected", "Transitions refused", ("entity", "target")),
    ("faults", "faults_injected", "Faults injected by suture.chaos", ("target", "kind")),
    (
        "responses_rejected",
        "responses_rejected",
        "HTTP responses validated as failures",
        ("transient",),
    ),
    (
        "rate_limit_paused",
        "rate_limit_paused",
        "Times a rate limiter was told to pause (an upstream's 429/503)",
        ("name",),
    ),
    (
        "stale_served",
        "stale_served",
        "Last-known-good answers served instead of a failed call",
        ("name",),
    ),
    (
        "http_requests",
        "http_requests",
        "HTTP requests by route template, method and status class",
        ("route", "method", "status_class"),
    ),
)


class Collected:
    """What the listener remembers between scrapes: state-change times, pool waits seen."""

    def __init__(self, listener: PrometheusListener) -> None:
        self._listener = listener
        self._lock = threading.Lock()
        self.changed_at: dict[str, tuple[str, float]] = {}
        self.wait_marks: dict[int, float] = {}

    def state_changed(self, name: str, state: str, now: float) -> None:
        with self._lock:
            self.changed_at[name] = (state, now)

    def since(self, name: str, state: str, now: float) -> float:
        with self._lock:
            seen = self.changed_at.get(name)
        if seen is None or seen[0] != state:
            return now - self._listener.started
        return now - seen[1]


def _histogram(name: str, doc: str, labels: tuple[str, ...], table: Any) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    for values, buckets, total in table.items():
        family.add_metric(list(values), buckets, total)
    return family


class SutureCollector(Collector):
    """Renders the listener's metrics; policies are read here, at scrape time."""

    def __init__(self, listener: PrometheusListener) -> None:
        self._listener = listener

    def collect(self) -> Iterator[Metric]:
        lst = self._listener
        ns = lst.namespace
        for key, name, doc, labels in _EVENT_COUNTERS:
            family = CounterMetricFamily(f"{ns}_{name}", doc, labels=list(labels))
            for values, amount in lst.counts.get(key):
                family.add_metric(list(values), amount)
            yield family
        yield self._retry_attempts()
        up = GaugeMetricFamily(
            f"{ns}_listener_up", "1 while the suture events listener is subscribed"
        )
        up.add_metric([], 1.0 if lst.subscribed else 0.0)
        yield up
        yield _histogram(
            f"{ns}_call_duration_seconds",
            "Call duration as the caller waited for it (retries included)",
            ("name",),
            lst.call_durations,
        )
        yield _histogram(
            f"{ns}_http_request_duration_seconds",
            "HTTP request duration by route template and method",
            ("route", "method"),
            lst.http_durations,
        )
        yield from self._breakers()
        yield from self._pools()
        yield from self._limiters()
        yield from self._budgets()

    def _retry_attempts(self) -> HistogramMetricFamily:
        """Attempts per call among calls that retried, exact from the scheduled retries.

        A ``RetryScheduled`` with ``attempt=k`` says one call reached attempt
        ``k + 1``, so the calls that made more than ``b`` attempts are the
        retries scheduled after attempt ``b``: no per-call state is kept.
        """
        lst = self._listener
        reached: dict[str, dict[int, float]] = {}
        for (name, attempt), amount in lst.counts.get("retry_reached"):
            reached.setdefault(name, {})[int(attempt)] = amount
        family = HistogramMetricFamily(
            f"{lst.namespace}_retry_attempts",
            "Attempts per call, among calls that retried at least once",
            labels=["name"],
        )
        for name, by_attempt in sorted(reached.items()):
            calls = by_attempt.get(1, 0.0)
            buckets = [
                (repr(float(b)), calls - by_attempt.get(b, 0.0)) for b in lst.attempt_buckets
            ]
            buckets.append(("+Inf", calls))
            total = calls + sum(by_attempt.values())
            family.add_metric([name], buckets, total)
        return family

    def _tracked_breakers(self) -> list[Any]:
        lst = self._listener
        seen: dict[str, Any] = {b.name: b for b in lst.breakers}
        if lst.registry_breakers:
            from suture.breaker import breakers

            for breaker in list(breakers):
                seen.setdefault(breaker.name, breaker)
        return list(seen.values())

    def _breakers(self) -> Iterator[Metric]:
        lst = self._listener
        ns = lst.namespace
        now = lst.clock.now()
        calls = CounterMetricFamily(
            f"{ns}_breaker_calls",
            "Calls through a breaker, each once, by outcome (a slow failure is failed)",
            labels=["name", "outcome"],
        )
        slow_calls = CounterMetricFamily(
            f"{ns}_breaker_slow_calls",
            "Calls slower than the breaker's slow_call_duration, by result",
            labels=["name", "outcome"],
        )
        state = GaugeMetricFamily(
            f"{ns}_breaker_state",
            "Breaker state, one-hot: 1 for the current state",
            labels=["name", "state"],
        )
        opens = CounterMetricFamily(
            f"{ns}_breaker_opens", "Moves to OPEN since the breaker was created", labels=["name"]
        )
        in_state = GaugeMetricFamily(
            f"{ns}_breaker_state_seconds", "Seconds in the current state", labels=["name"]
        )
        rate = GaugeMetricFamily(
            f"{ns}_breaker_failure_ratio",
            "Failure rate over the breaker's window (0..1)",
            labels=["name"],
        )
        slow = GaugeMetricFamily(
            f"{ns}_breaker_slow_call_ratio",
            "Slow-call rate over the breaker's window (0..1)",
            labels=["name"],
        )
        done: set[str] = set()
        for breaker in self._tracked_breakers():
            s = breaker.stats()
            current = str(s.state.value).lower()
            done.add(s.name)
            for outcome, value in s.outcomes():
                calls.add_metric([s.name, outcome], float(value))
            slow_calls.add_metric([s.name, "successful"], float(s.total_slow_successes))
            slow_calls.add_metric([s.name, "failed"], float(s.total_slow_failures))
            for label in _STATES:
                state.add_metric([s.name, label], 1.0 if label == current else 0.0)
            opens.add_metric([s.name], float(s.total_opens))
            in_state.add_metric([s.name], max(0.0, lst.collected.since(s.name, current, now)))
            rate.add_metric([s.name], float(s.failure_rate))
            slow.add_metric([s.name], float(s.slow_call_rate))
        # Breakers known only from their events (another process's, or not handed over).
        with lst.collected._lock:
            heard = dict(lst.collected.changed_at)
        for name, (current, at) in sorted(heard.items()):
            if name in done:
                continue
            for label in _STATES:
                state.add_metric([name, label], 1.0 if label == current else 0.0)
            in_state.add_metric([name], max(0.0, now - at))
        yield from (calls, slow_calls, state, opens, in_state, rate, slow)

    def _pools(self) -> Iterator[Metric]:
        lst = self._listener
        ns = lst.namespace
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
        for monitor in lst.monitors:
            name = str(getattr(monitor, "name", "pool"))
            level.add_metric([name], float(int(monitor.level)))
            usage = monitor.usage
            if usage is not None:
                ratio.add_metric([name], float(usage.fraction))
                conns.add_metric([name, "current"], float(usage.current))
                conns.add_metric([name, "limit"], float(usage.limit))
        waiters = GaugeMetricFamily(
            f"{ns}_pool_waiters", "Callers waiting for a connection now", labels=["name"]
        )
        timeouts = CounterMetricFamily(
            f"{ns}_pool_checkout_timeouts", "Checkouts that timed out", labels=["name"]
        )
        for source in lst.pool_sources:
            name = str(getattr(source, "name", "pool"))
            self._read_waits(source)
            with source._lock:
                waiters.add_metric([name], float(source._waiting))
                timeouts.add_metric([name], float(source._counts.get("timeouts", 0)))
        yield from (ratio, conns, level, waiters, timeouts)
        yield _histogram(
            f"{ns}_pool_checkout_wait_seconds",
            "Time a caller waited for a pool connection",
            ("name",),
            lst.pool_waits,
        )

    def _read_waits(self, source: Any) -> None:
        """Fold the source's checkout waits not seen by the last scrape into the histogram.

        The source keeps ``(ended, waited)`` pairs for its own percentiles; the
        ones ended after the last mark are new. Waits that aged out of the
        source's window between two scrapes are not counted.
        """
        lst = self._listener
        key = id(source)
        mark = lst.collected.wait_marks.get(key, float("-inf"))
        with source._lock:
            fresh = [(ended, waited) for ended, waited in source._waits if ended > mark]
        name = (str(getattr(source, "name", "pool")),)
        for ended, waited in fresh:
            lst.pool_waits.observe(name, waited)
            mark = max(mark, ended)
        lst.collected.wait_marks[key] = mark

    def _limiters(self) -> Iterator[Metric]:
        lst = self._listener
        ns = lst.namespace
        limit = GaugeMetricFamily(f"{ns}_limiter_limit", "Concurrency limit now", labels=["name"])
        inflight = GaugeMetricFamily(
            f"{ns}_limiter_inflight", "Requests admitted and not yet released", labels=["name"]
        )
        drops = CounterMetricFamily(
            f"{ns}_limiter_drops", "Completions the limiter counted as drops", labels=["name"]
        )
        for limiter in lst.limiters:
            limit.add_metric([limiter.name], float(limiter.limit))
            inflight.add_metric([limiter.name], float(limiter.inflight))
            drops.add_metric([limiter.name], float(limiter.drops))
        yield from (limit, inflight, drops)

    def _budgets(self) -> Iterator[Metric]:
        lst = self._listener
        ns = lst.namespace
        tokens = GaugeMetricFamily(
            f"{ns}_retry_budget_tokens", "Retry tokens available now", labels=["name"]
        )
        spent = CounterMetricFamily(
            f"{ns}_retry_budget_spent", "Retries the budget allowed", labels=["name"]
        )
        refused = CounterMetricFamily(
            f"{ns}_retry_budget_refused", "Retries the budget refused", labels=["name"]
        )
        for budget in lst.budgets:
            s = budget.stats()
            tokens.add_metric([s.name], float(s.tokens + s.reserve))
            spent.add_metric([s.name], float(s.spent))
            refused.add_metric([s.name], float(s.refused))
        yield from (tokens, spent, refused)
