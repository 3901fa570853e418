"""What the dashboard shows: an events listener plus per-second counters.

:class:`Telemetry` subscribes to suture's events and keeps, for the last few
minutes, one bucket per second: retries, shed requests, rejected transitions,
breaker rejections, injected faults, database attempts and failures, and the
pool usage sampled that second. :meth:`Telemetry.snapshot` turns it into the
JSON the dashboard polls each second.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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

__all__ = ["Telemetry"]

_COUNTERS = (
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


@dataclass(slots=True)
class _Bucket:
    second: int
    counts: dict[str, int]
    pool: float | None = None


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
        """One database attempt; ``error`` when it failed (only transient errors count;
        overload, a shed or a pool checkout timeout, is our queue, not the database)."""
        self.count("db_calls")
        if error is not None and is_transient(error) and not is_overload(error):
            self.count("db_failures")

    def pool_sample(self, fraction: float) -> None:
        self._bucket().pool = fraction

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
        if isinstance(event, _RECENT):
            item = event.as_dict()
            item["at"] = self.clock.wall()
            item["message"] = event.message()
            self.recent.appendleft(item)

    # --- reading -------------------------------------------------------------------

    def series(self, seconds: int = 300) -> dict[str, list[Any]]:
        """Aligned per-second series for the last ``seconds`` (missing seconds are zeros)."""
        now = int(self.clock.now())
        start = now - seconds + 1
        by_second = {b.second: b for b in self._buckets if b.second >= start}
        out: dict[str, list[Any]] = {"t": [], "pool": [], "errorRate": []}
        for name in _COUNTERS:
            out[name] = []
        last_pool: float | None = None
        for second in range(start, now + 1):
            bucket = by_second.get(second)
            counts = bucket.counts if bucket is not None else None
            out["t"].append(second - now)
            if bucket is not None and bucket.pool is not None:
                last_pool = bucket.pool
            out["pool"].append(last_pool)
            for name in _COUNTERS:
                out[name].append(counts[name] if counts is not None else 0)
            calls = counts["db_calls"] if counts is not None else 0
            fails = counts["db_failures"] if counts is not None else 0
            out["errorRate"].append(fails / calls if calls else 0.0)
        return out

    def rates(self, window: int = 5) -> dict[str, float]:
        """Per-second rates over the last ``window`` complete seconds."""
        now = int(self.clock.now())
        recent = [b for b in self._buckets if now - window <= b.second < now]
        rates = {
            name: sum(b.counts[name] for b in recent) / window
            for name in ("retries", "shed", "rejected_transitions", "faults", "db_calls")
        }
        calls = sum(b.counts["db_calls"] for b in recent)
        fails = sum(b.counts["db_failures"] for b in recent)
        rates["errorRate"] = fails / calls if calls else 0.0
        return rates
