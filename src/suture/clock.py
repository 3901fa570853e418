"""The one place suture reads time.

Every component takes a :class:`Clock`. The default is :data:`SYSTEM_CLOCK`;
tests pass :class:`suture.testing.FakeClock` and never sleep.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock", "waits_skipped"]


@runtime_checkable
class Clock(Protocol):
    """Where time comes from.

    ``now`` is monotonic seconds (for durations and deadlines), ``wall`` is
    seconds since the epoch (only for HTTP dates), ``sleep`` and ``asleep``
    wait.
    """

    def now(self) -> float: ...

    def wall(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    async def asleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time``, ``time.sleep``, ``asyncio.sleep``."""

    __slots__ = ()

    # Builtins stored on the class do not bind, so ``clock.now()`` costs one
    # C call: this is on the hot path of every policy.
    now = staticmethod(time.monotonic)
    wall = staticmethod(time.time)
    sleep = staticmethod(time.sleep)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK: Clock = SystemClock()
"""The process-wide real clock."""


class _WaitSwitch:
    """Set by :func:`suture.testing.no_wait`: policies skip their waits but count attempts."""

    __slots__ = ("skip",)

    def __init__(self) -> None:
        self.skip = False


_WAITS = _WaitSwitch()


def waits_skipped() -> bool:
    """True inside :func:`suture.testing.no_wait`."""
    return _WAITS.skip
