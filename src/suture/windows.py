"""Failure windows: what a circuit breaker remembers of recent calls.

Three ways to decide that a dependency is failing:

* **consecutive** (no window, the default of :class:`suture.CircuitBreaker`):
  ``failure_threshold`` failures in a row trip the breaker; any success resets
  the run. Nothing to configure here.
* :class:`CountWindow` ``(size)``: the outcomes of the last ``size`` calls.
* :class:`TimeWindow` ``(seconds, buckets=10)``: the calls of the last
  ``seconds``, kept in ``buckets`` slices of ``seconds / buckets`` each; a whole
  slice is forgotten at once when it ages out.

The window classes are frozen configurations (comparable, hashable, safe to
share); :meth:`CountWindow.counter` and :meth:`TimeWindow.counter` make the
mutable counter one breaker owns. Every record is O(1) (a time window clears
at most ``buckets`` slices when time jumps) and memory is bounded by ``size``
or ``buckets``.

Concurrency: recording a plain success takes no lock. It only advances an
``itertools.count`` (atomic in CPython) and, in a count window, looks at one
ring slot; only a success that overwrites a remembered failure, a failure, a
slow call or a bucket rotation takes the counter's lock. Every change to the
remembered outcomes happens under that lock, so the failure and slow counts
always equal what the window holds.
"""

from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass
from typing import Final, Protocol

from suture._config import Seconds, check_int, check_seconds

__all__ = ["FAILURE", "SLOW", "CountWindow", "TimeWindow", "Window", "WindowCounter"]

FAILURE: Final = 1
"""Outcome bit: the call failed."""
SLOW: Final = 2
"""Outcome bit: the call took longer than the slow-call duration."""


def count_value(counter: itertools.count[int]) -> int:
    """The next value an ``itertools.count`` will return, without advancing it.

    ``itertools.count`` is the one counter CPython increments atomically; its
    ``repr`` (``count(41)``) is the only public way to read it.
    """
    return int(repr(counter)[6:-1])


class WindowCounter(Protocol):
    """The mutable state of one window, owned by one breaker."""

    def success(self, now: float) -> bool:
        """Record a plain success (fast, lock-free).

        Returns True when the rates may have risen since the last
        ``counts(now, evaluate=True)``: the window forgot old calls. The
        breaker then evaluates its thresholds; otherwise a success can only
        lower the rates.
        """

    def record(self, outcome: int, now: float) -> None:
        """Record an outcome made of :data:`FAILURE` and :data:`SLOW` bits (0 is a success)."""

    def counts(self, now: float, *, evaluate: bool = False) -> tuple[int, int, int]:
        """``(calls, failures, slow_calls)`` currently in the window.

        ``evaluate=True``: the breaker is deciding on these counts (clears the
        "forgot old calls" flag that :meth:`success` reports).
        """

    def clear(self) -> None:
        """Forget everything."""


class Window(Protocol):
    """A window configuration: frozen, comparable, makes counters."""

    def counter(self) -> WindowCounter: ...


@dataclass(frozen=True, slots=True)
class CountWindow:
    """The last ``size`` calls (``size`` >= 1).

    >>> CountWindow(100)
    CountWindow(size=100)
    """

    size: int

    def __post_init__(self) -> None:
        check_int("size", self.size, minimum=1)

    def counter(self) -> WindowCounter:
        return _CountCounter(self.size)


@dataclass(frozen=True, slots=True, init=False)
class TimeWindow:
    """The calls of the last ``seconds``, in ``buckets`` slices (both >= 1 / > 0).

    The window covers the current slice and the ``buckets - 1`` before it, so
    between ``seconds * (buckets - 1) / buckets`` and ``seconds`` of history.

    >>> TimeWindow(60, buckets=12)
    TimeWindow(seconds=60.0, buckets=12)
    """

    seconds: float
    buckets: int

    def __init__(self, seconds: Seconds, *, buckets: int = 10) -> None:
        object.__setattr__(self, "seconds", check_seconds("seconds", seconds, positive=True))
        object.__setattr__(self, "buckets", check_int("buckets", buckets, minimum=1))

    def counter(self) -> WindowCounter:
        return _TimeCounter(self.seconds, self.buckets)


class _CountCounter:
    """A ring of the last ``size`` outcomes, with running failure and slow counts."""

    __slots__ = ("_failures", "_lock", "_ring", "_seq", "_size", "_slow")

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._ring = bytearray(size)  # 0 = success: a fresh ring is all successes...
        self._seq = itertools.count()  # ...but only the first ``seq`` slots count as calls
        self._failures = 0
        self._slow = 0

    def success(self, now: float) -> bool:
        slot = next(self._seq) % self._size
        if self._ring[slot]:  # overwriting a remembered failure or slow call
            self._put(slot, 0)
        return False  # overwriting anything with a success never raises a rate

    def record(self, outcome: int, now: float) -> None:
        slot = next(self._seq) % self._size
        if outcome or self._ring[slot]:
            self._put(slot, outcome)

    def _put(self, slot: int, outcome: int) -> None:
        with self._lock:
            old = self._ring[slot]
            self._ring[slot] = outcome
            self._failures += (outcome & FAILURE) - (old & FAILURE)
            self._slow += ((outcome & SLOW) - (old & SLOW)) >> 1

    def counts(self, now: float, *, evaluate: bool = False) -> tuple[int, int, int]:
        with self._lock:
            return min(count_value(self._seq), self._size), self._failures, self._slow

    def clear(self) -> None:
        with self._lock:
            self._ring = bytearray(self._size)
            self._seq = itertools.count()
            self._failures = 0
            self._slow = 0


class _TimeCounter:
    """Per-slice failure and slow counts; calls counted by one atomic counter.

    Each slice remembers the total number of calls when it started, so the
    calls in the window are ``total - started_at[oldest slice]``: a success
    only advances the total.
    """

    __slots__ = (
        "_aged",
        "_boundary",
        "_calls",
        "_epoch",
        "_fail",
        "_failures",
        "_lock",
        "_n",
        "_slow",
        "_slow_calls",
        "_started",
        "_width",
    )

    def __init__(self, seconds: float, buckets: int) -> None:
        self._n = buckets
        self._width = seconds / buckets
        self._lock = threading.Lock()
        self._calls = itertools.count()
        self._fail = [0] * buckets
        self._slow = [0] * buckets
        self._started = [0] * buckets
        self._failures = 0
        self._slow_calls = 0
        self._epoch = -math.inf  # the absolute index of the current slice
        self._boundary = -math.inf  # when the current slice ends
        self._aged = False  # old calls were forgotten since the last evaluation

    def success(self, now: float) -> bool:
        if now >= self._boundary:
            with self._lock:
                self._rotate(now)
        next(self._calls)
        return self._aged

    def record(self, outcome: int, now: float) -> None:
        with self._lock:
            self._rotate(now)
            next(self._calls)
            if outcome:
                i = int(self._epoch) % self._n
                failed = outcome & FAILURE
                slow = (outcome & SLOW) >> 1
                self._fail[i] += failed
                self._slow[i] += slow
                self._failures += failed
                self._slow_calls += slow

    def _rotate(self, now: float) -> None:
        """Move to the slice holding ``now``, forgetting the slices that aged out. Locked."""
        if now < self._boundary:
            return
        epoch = math.floor(now / self._width)
        n = self._n
        total = count_value(self._calls)
        if self._epoch == -math.inf:
            before = 0
            steps = range(n)
            first = epoch - n + 1
        else:
            before = total - self._started[(int(self._epoch) + 1) % n]
            if epoch - self._epoch >= n:
                steps = range(n)  # everything aged out
                first = epoch - n + 1
            else:
                first = int(self._epoch) + 1
                steps = range(epoch - first + 1)
        for k in steps:
            i = (first + k) % n
            self._failures -= self._fail[i]
            self._slow_calls -= self._slow[i]
            self._fail[i] = 0
            self._slow[i] = 0
            self._started[i] = total
        self._epoch = epoch
        self._boundary = (epoch + 1) * self._width
        if total - self._started[(epoch + 1) % n] < before:
            self._aged = True  # calls were forgotten: a rate may have risen

    def counts(self, now: float, *, evaluate: bool = False) -> tuple[int, int, int]:
        with self._lock:
            self._rotate(now)
            if evaluate:
                self._aged = False
            oldest = (int(self._epoch) + 1) % self._n
            calls = count_value(self._calls) - self._started[oldest]
            return calls, self._failures, self._slow_calls

    def clear(self) -> None:
        with self._lock:
            self._calls = itertools.count()
            n = self._n
            self._fail = [0] * n
            self._slow = [0] * n
            self._started = [0] * n
            self._failures = 0
            self._slow_calls = 0
            self._epoch = -math.inf
            self._boundary = -math.inf
            self._aged = False
