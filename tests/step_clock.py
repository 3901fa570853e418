"""A clock whose async sleeps really wait, until the test moves time past them.

``suture.testing.FakeClock`` returns from every sleep at once (and moves time),
which is right for one caller but cannot show who wakes first when several
tasks wait. Here ``asleep(d)`` parks the task until :meth:`StepClock.advance`
moves time to or past its wake-up time; wake-ups happen in time order (ties
in the order the sleeps began). Sync ``sleep`` moves time, as FakeClock's.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class StepClock:
    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return 1_700_000_000.0 + self._now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._now += max(0.0, seconds)

    async def asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), fut))
        await fut

    @property
    def sleeping(self) -> int:
        return sum(1 for _, _, fut in self._sleepers if not fut.done())

    async def advance(self, by: float) -> None:
        """Move time by ``by``, waking each due sleeper in turn (and letting it run)."""
        target = self._now + by
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, fut = heapq.heappop(self._sleepers)
            if fut.done():
                continue
            self._now = max(self._now, when)
            fut.set_result(None)
            for _ in range(5):  # let the woken task run to its next await
                await asyncio.sleep(0)
        self._now = target
        for _ in range(5):
            await asyncio.sleep(0)
