"""Helpers for tests: yours and ours.

* :class:`FakeClock`: time that moves only when told to; its sleeps return at
  once, advance the clock and are recorded.
* :func:`no_wait`: every policy skips its waits but still counts attempts.
* :func:`capture_events`: collect the events emitted inside a ``with`` block.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from suture._config import Seconds, seconds
from suture.clock import _WAITS
from suture.events import Event, subscribe

__all__ = ["CapturedEvents", "FakeClock", "capture_events", "no_wait"]

E = TypeVar("E", bound=Event)


class FakeClock:
    """A clock for tests. ``now()`` starts at ``start`` and moves with :meth:`advance`
    and with every ``sleep``; ``wall()`` moves with it from ``wall_start``.

    >>> clock = FakeClock()
    >>> clock.sleep(1.5); clock.now()
    1.5
    >>> clock.sleeps
    [1.5]
    """

    def __init__(self, start: float = 0.0, *, wall_start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._wall_offset = float(wall_start) - float(start)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def advance(self, by: Seconds) -> None:
        """Move time forward by ``by`` seconds (or a ``timedelta``)."""
        step = seconds("by", by)
        if step < 0:
            raise ValueError(f"by={by!r}: time only moves forward (must be >= 0)")
        with self._lock:
            self._now += step

    def set(self, now: float) -> None:
        """Jump to ``now`` (monotonic seconds); never backwards."""
        with self._lock:
            if now < self._now:
                raise ValueError(f"now={now!r}: time only moves forward (clock is at {self._now})")
            self._now = float(now)

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(0.0, seconds)

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)  # still a scheduling point, as a real sleep is

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"


@contextmanager
def no_wait() -> Iterator[None]:
    """Inside this block every suture policy skips its waits (attempts still count).

    Restores the previous setting on exit, so it nests.
    """
    previous = _WAITS.skip
    _WAITS.skip = True
    try:
        yield
    finally:
        _WAITS.skip = previous


class CapturedEvents(list[Event]):
    """The events emitted inside :func:`capture_events`, in order."""

    def of(self, kind: type[E]) -> list[E]:
        """Only the events of one type."""
        return [e for e in self if isinstance(e, kind)]


@contextmanager
def capture_events() -> Iterator[CapturedEvents]:
    """Collect every event emitted inside the block.

    >>> with capture_events() as events:   # doctest: +SKIP
    ...     flaky()
    >>> events.of(RetryScheduled)
    """
    captured = CapturedEvents()
    unsubscribe = subscribe(captured.append)
    try:
        yield captured
    finally:
        unsubscribe()
