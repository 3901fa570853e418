"""What the dashboard shows: an events listener plus per-second counters.

:class:`Telemetry` subscribes to suture's events and keeps, for the last few
minutes, one bucket per second: HTTP requests by outcome (2xx, 4xx, 503,
other 5xx) and their latencies, retries, shed requests, rejected transitions,
breaker rejections, injected faults, database attempts and failures, the
breaker's state and the pool usage sampled that second. :meth:`series` and
:meth:`event_groups` are what the dashboard polls each second; everything is
in memory, so the dashboard renders while the database is down.

:class:`RequestTelemetry` is the ASGI middleware that feeds the requests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from suture.classify import is_overload, is_transient
from suture.clock import Clock
from suture.events import (
    BreakerRejected,
    BreakerStateChanged,
    Event,
    FaultInjected,
    PressureChanged,
    RequestShed,
    RetryGaveUp,
    RetryScheduled,
    TransitionApplied,
    TransitionRejected,
    subscribe,
)

__all__ = ["RequestTelemetry", "Telemetry"]

_COUNTERS = (
    "req_2xx",
    "req_4xx",
    "req_503",
    "req_5xx",
    "retries",
    "gave_up",
    "shed",
    "rejected_transitions",
    "applied_transitions",
    "breaker_rejections",
    "faults",
    "db_calls",
    "db_failures",
)
_RECENT = (
    BreakerStateChanged,
    PressureChanged,
    RequestShed,
    RetryGaveUp,
    TransitionRejected,
    TransitionApplied,
)


#: A bucket keeps at most this many request latencies (enough for a p99).
_LATENCY_SAMPLES = 400
#: The worse of two states seen in one second wins the band.
_STATE_RANK = {"closed": 0, "half_open": 1, "open": 2}
#: Events that change a state: pinned above the grouped list.
_PINNED = (BreakerStateChanged, PressureChanged)


@dataclass(slots=True)
class _Bucket:
    second: int
    counts: dict[str, int]
    pool: float | None = None
    state: str | None = None
    latencies: list[float] = field(default_factory=list)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _status_counter(status: int) -> str:
    if status == 503:
        return "req_503"
    if status >= 500:
        return "req_5xx"
    if status >= 400:
        return "req_4xx"
    return "req_2xx"


class Telemetry:
    """Per-second counters over the last ``horizon`` seconds, fed by events.

    Bucketing uses ``clock.now()``; event times shown to people use ``clock.wall()``.
    """

    def __init__(self, clock: Clock, *, horizon: int = 300, recent: int = 50) -> None:
        self.clock = clock
        self.horizon = horizon
        self._buckets: deque[_Bucket] = deque(maxlen=horizon)
        self.recent: deque[dict[str, Any]] = deque(maxlen=recent)
        self.totals: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self.log: deque[dict[str, Any]] = deque(maxlen=500)
        self.pinned: deque[dict[str, Any]] = deque(maxlen=10)
        self.breaker_state: str | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # --- feeding -------------------------------------------------------------------

    def start(self) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = subscribe(self.on_event)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _bucket(self) -> _Bucket:
        second = int(self.clock.now())
        buckets = self._buckets
        if not buckets or buckets[-1].second != second:
            buckets.append(_Bucket(second, dict.fromkeys(_COUNTERS, 0)))
        return buckets[-1]

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to this second's counter ``name`` (and to the totals)."""
        self._bucket().counts[name] += n
        self.totals[name] += n

    def db_call(self, error: BaseException | None) -> None:
        """One database attempt, started and ended at once (:meth:`db_started` and
        :meth:`db_ended`)."""
        self.db_started()
        self.db_ended(error)

    def db_started(self) -> None:
        """A database attempt starts: counted in the second it is made (an attempt on a
        hanging database ends a timeout later)."""
        self.count("db_calls")

    def db_ended(self, error: BaseException | None) -> None:
        """A database attempt ended; ``error`` when it failed (only transient errors
        count; overload, a shed or a pool checkout timeout, is our queue, not the
        database)."""
        if error is not None and is_transient(error) and not is_overload(error):
            self.count("db_failures")

    def pool_sample(self, fraction: float) -> None:
        self._bucket().pool = fraction

    def breaker_sample(self, state: str) -> None:
        """The breaker's state this second (the worse of what was seen in it stays)."""
        self.breaker_state = state
        bucket = self._bucket()
        if bucket.state is None or _STATE_RANK.get(state, 0) > _STATE_RANK.get(bucket.state, 0):
            bucket.state = state

    def request(self, status: int, seconds: float) -> None:
        """One HTTP request answered with ``status`` after ``seconds``."""
        name = _status_counter(status)
        bucket = self._bucket()
        bucket.counts[name] += 1
        self.totals[name] += 1
        if len(bucket.latencies) < _LATENCY_SAMPLES:
            bucket.latencies.append(seconds)

    def on_event(self, event: Event) -> None:
        if isinstance(event, RetryScheduled):
            self.count("retries")
        elif isinstance(event, RetryGaveUp):
            self.count("gave_up")
        elif isinstance(event, RequestShed):
            self.count("shed")
        elif isinstance(event, TransitionRejected):
            self.count("rejected_transitions")
        elif isinstance(event, TransitionApplied):
            self.count("applied_transitions", max(0, event.count))
        elif isinstance(event, BreakerRejected):
            self.count("breaker_rejections")
        elif isinstance(event, FaultInjected):
            self.count("faults")
        if isinstance(event, BreakerStateChanged):
            self.breaker_sample(str(getattr(event.target, "value", event.target)).lower())
        if isinstance(event, _RECENT):
            item = event.as_dict()
            item["at"] = self.clock.wall()
            item["message"] = event.message()
            self.recent.appendleft(item)
            self.log.appendleft(item)
            if isinstance(event, _PINNED):
                self.pinned.appendleft(item)

    def event_groups(self, limit: int = 30) -> list[dict[str, Any]]:
        """The recent events with the same message folded into one line, newest first.

        Each group: ``event`` (the kind), ``message``, ``count``, ``first`` and
        ``last`` (wall time): "shed a NORMAL request at CRITICAL x 37 in 10 s".
        """
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for item in self.log:  # newest first
            key = (item["event"], item["message"])
            group = groups.get(key)
            if group is None:
                if len(groups) >= limit:
                    continue
                groups[key] = {
                    "event": item["event"],
                    "message": item["message"],
                    "count": 1,
                    "first": item["at"],
                    "last": item["at"],
                }
            else:
                group["count"] += 1
                group["first"] = item["at"]
        return list(groups.values())

    # --- reading -------------------------------------------------------------------

    def series(self, seconds: int = 300) -> dict[str, list[Any]]:
        """Aligned per-second series for the last ``seconds`` (missing seconds are zeros)."""
        now = int(self.clock.now())
        start = now - seconds + 1
        by_second = {b.second: b for b in self._buckets if b.second >= start}
        out: dict[str, list[Any]] = {
            "t": [],
            "pool": [],
            "errorRate": [],
            "p50": [],
            "p99": [],
            "state": [],
        }
        for name in _COUNTERS:
            out[name] = []
        last_pool: float | None = None
        last_state: str | None = None
        for second in range(start, now + 1):
            bucket = by_second.get(second)
            counts = bucket.counts if bucket is not None else None
            out["t"].append(second - now)
            if bucket is not None and bucket.pool is not None:
                last_pool = bucket.pool
            out["pool"].append(last_pool)
            if bucket is not None and bucket.state is not None:
                last_state = bucket.state
            out["state"].append(last_state)
            latencies = bucket.latencies if bucket is not None else []
            for key, q in (("p50", 0.5), ("p99", 0.99)):
                value = _percentile(latencies, q)
                out[key].append(None if value is None else round(value * 1000, 1))
            for name in _COUNTERS:
                out[name].append(counts[name] if counts is not None else 0)
            out["errorRate"].append(_error_rate([counts] if counts is not None else []))
        return out

    def rates(self, window: int = 5) -> dict[str, float]:
        """Per-second rates over the last ``window`` complete seconds."""
        now = int(self.clock.now())
        recent = [b for b in self._buckets if now - window <= b.second < now]
        rates = {
            name: sum(b.counts[name] for b in recent) / window
            for name in ("retries", "shed", "rejected_transitions", "faults", "db_calls")
        }
        rates["errorRate"] = _error_rate([b.counts for b in recent])
        return rates


def _error_rate(counts: list[dict[str, int]]) -> float:
    """Failed attempts and breaker rejections over attempts and rejections.

    A rejected call is a call the database did not serve: counting it keeps an
    open breaker (no attempts, all rejected) from reading as 0% errors.
    """
    rejected = sum(c["breaker_rejections"] for c in counts)
    calls = sum(c["db_calls"] for c in counts) + rejected
    fails = sum(c["db_failures"] for c in counts) + rejected
    return fails / calls if calls else 0.0


class RequestTelemetry:
    """ASGI middleware: each HTTP request's status and duration into :class:`Telemetry`.

    The dashboard's own polling, static files and ``/metrics`` are left out, so
    the chart shows the service's traffic. Durations come from the telemetry's clock.
    """

    SKIP = ("/api/dashboard", "/static/", "/metrics", "/health", "/suture.js")

    def __init__(self, app: ASGIApp, *, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or path.startswith(self.SKIP):
            await self.app(scope, receive, send)
            return
        status = 500
        now = self.telemetry.clock.now
        start = now()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.telemetry.request(status, now() - start)
