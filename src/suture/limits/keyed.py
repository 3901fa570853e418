"""One rate limit per key (per client, per tenant) in bounded memory: :class:`KeyedRateLimiter`.

The same GCRA as :class:`suture.limits.RateLimiter` (see :mod:`suture.limits.rate`),
one theoretical arrival time per key in one insertion-ordered table. A key whose
``tat`` is in the past is exactly a fresh key, so idle keys are forgotten as the
table is used (oldest first) without changing any answer.
"""

from __future__ import annotations

import math
from typing import Final

from suture._config import Seconds, check_clock, check_int, check_name, check_seconds
from suture.clock import SYSTEM_CLOCK, Clock, waits_skipped
from suture.errors import Overloaded
from suture.events import RequestShed, emit, listening
from suture.limits._baton import Baton
from suture.limits._gcra import DEFAULT_MAX_WAIT, SLACK, check_cost, check_rate, check_wait

__all__ = ["KeyedRateLimiter"]


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(
            f"key={key!r}: expected a string (a client id, a tenant), got {type(key).__name__}"
        )
    return key


class KeyedRateLimiter:
    """One rate limit per key (per client, per tenant), in bounded memory.

    Every key gets its own ``rate`` per ``period`` with bursts of ``burst``;
    the keys share one table of at most ``max_keys`` entries. A key whose
    limiter is full again (its ``tat`` in the past) holds no information, so
    such keys are dropped as the table is used, oldest first; if ``max_keys``
    keys are all busy at once, the least recently admitted one is forgotten
    (it starts again with a full burst: size ``max_keys`` for the number of
    clients active within one ``burst * period / rate``).

    >>> per_client = KeyedRateLimiter(5, period=1.0, burst=5)
    >>> per_client.try_acquire("client-42")
    True
    """

    __slots__ = (
        "_baton",
        "_clock",
        "_interval",
        "_now",
        "_tats",
        "_tau",
        "burst",
        "max_keys",
        "max_wait",
        "name",
        "period",
        "rate",
    )

    #: Idle keys examined (and dropped when idle) per admission: keeps the table
    #: proportional to the keys in use without a sweep thread.
    _SWEEP: Final = 2

    def __init__(
        self,
        rate: float,
        period: Seconds = 1.0,
        *,
        burst: int | None = None,
        max_keys: int = 100_000,
        max_wait: Seconds = DEFAULT_MAX_WAIT,
        name: str = "rate",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        interval, period_f, burst_i = check_rate(rate, period, burst)
        check_name("name", name)
        self.rate = float(rate)
        self.period = period_f
        self.burst = burst_i
        self.max_keys = check_int("max_keys", max_keys, minimum=1)
        self.max_wait = check_seconds("max_wait", max_wait, allow_inf=True)
        self.name = name
        self._clock = check_clock(clock)
        self._now = self._clock.now
        self._interval = interval
        self._tau = burst_i * interval + interval * SLACK
        # Insertion order is last-admission order: a key is moved to the end when used.
        self._tats: dict[str, float] = {}
        self._baton: Baton[None] = Baton(None)

    def __repr__(self) -> str:
        return (
            f"KeyedRateLimiter({self.rate:g}, period={self.period:g}, burst={self.burst}, "
            f"keys={len(self._tats)}/{self.max_keys})"
        )

    def __len__(self) -> int:
        """Keys currently remembered (never more than ``max_keys``)."""
        return len(self._tats)

    def _sweep(self, now: float) -> None:
        """Drop a few idle keys from the old end; make room when the table is full."""
        tats = self._tats
        for _ in range(self._SWEEP):
            if not tats:
                return
            oldest = next(iter(tats))
            if tats[oldest] > now:
                break
            del tats[oldest]
        while len(tats) >= self.max_keys:
            del tats[next(iter(tats))]

    def _reserve(self, key: str, cost: int, budget: float) -> tuple[float, float]:
        step = self._interval * cost
        self._baton.hold()
        try:
            now = self._now()
            tats = self._tats
            tat = tats.pop(key, -math.inf)
            new = (tat if tat > now else now) + step
            wait = new - now - self._tau
            if wait > budget:
                if tat > now:
                    tats[key] = tat
                refused = True
            else:
                refused = False
                self._sweep(now)
                tats[key] = new
        finally:
            self._baton.release(None)
        if refused:
            retry_after = max(wait, 0.0)
            if listening(RequestShed):
                emit(
                    RequestShed(
                        name=self.name,
                        source="rate_limiter",
                        priority=None,
                        level=f"rate limit for {key!r}",
                        retry_after=retry_after,
                    )
                )
            raise Overloaded("rate limit", retry_after, source="rate_limiter")
        return wait, new

    def try_acquire(self, key: str, cost: int = 1) -> bool:
        """Take ``cost`` tokens from ``key``'s limiter if it has them now; never waits."""
        _check_key(key)
        if cost != 1:
            check_cost(cost, self.burst)
        step = self._interval * cost
        self._baton.hold()
        try:
            now = self._now()
            tats = self._tats
            tat = tats.pop(key, -math.inf)
            new = (tat if tat > now else now) + step
            if new - now > self._tau:
                tats[key] = tat  # refused: the key stays, at the young end (it is in use)
                return False
            self._sweep(now)
            tats[key] = new
            return True
        finally:
            self._baton.release(None)

    def _give_back(self, key: str, ticket: float, cost: int) -> None:
        self._baton.hold()
        if self._tats.get(key) == ticket:
            self._tats[key] = ticket - self._interval * cost
        self._baton.release(None)

    def acquire(self, key: str, cost: int = 1, *, max_wait: Seconds | None = None) -> None:
        """Take ``cost`` tokens from ``key``'s limiter, waiting up to ``max_wait``.

        Waiters on one key are served in arrival order; :class:`suture.Overloaded`
        at once when the wait would be longer than ``max_wait``.
        """
        _check_key(key)
        if cost != 1:
            check_cost(cost, self.burst)
        wait, ticket = self._reserve(key, cost, check_wait(max_wait, self.max_wait))
        if wait <= 0 or waits_skipped():
            return
        try:
            self._clock.sleep(wait)
        except BaseException:
            self._give_back(key, ticket, cost)
            raise

    async def aacquire(self, key: str, cost: int = 1, *, max_wait: Seconds | None = None) -> None:
        """:meth:`acquire` for ``async`` code; cancelling the wait gives the slot back."""
        _check_key(key)
        if cost != 1:
            check_cost(cost, self.burst)
        wait, ticket = self._reserve(key, cost, check_wait(max_wait, self.max_wait))
        if wait <= 0 or waits_skipped():
            return
        try:
            await self._clock.asleep(wait)
        except BaseException:
            self._give_back(key, ticket, cost)
            raise

    def available(self, key: str) -> float:
        """Tokens ``key`` could take right now."""
        _check_key(key)
        now = self._now()
        tat = self._tats.get(key, -math.inf)
        free = self.burst - (max(tat, now) - now) / self._interval
        return max(0.0, min(float(self.burst), free))
