"""Rate limits: at most ``rate`` calls per ``period``, with bursts of up to ``burst``.

The algorithm is GCRA (the generic cell rate algorithm of ATM networks, also
what redis-cell and Stripe's limiter run). Its whole state is one number, the
*theoretical arrival time* ``tat``: the time at which the limiter would be
empty again if nothing else came. With ``interval = period / rate`` and
``tau = burst * interval``, a call of ``cost`` tokens at time ``now`` is
admitted when::

    new_tat = max(tat, now) + cost * interval
    new_tat - now <= tau

and then ``tat = new_tat``. It is the token bucket's arithmetic without a
refill step: over any window of ``e`` seconds the limiter admits at most
``rate * e / period + burst`` tokens, and a quiet limiter costs nothing to
remember (a key whose ``tat`` is in the past is exactly a fresh key, which is
why the keyed limiter can forget idle keys without changing an answer).

Waiting is a reservation. A caller that cannot be admitted now learns at once
when it can (``new_tat - tau``); if that is within its ``max_wait`` it takes the
slot (``tat = new_tat``) and sleeps until then. Slots are handed out in the
order callers arrive, so waiters are served first come, first served and
:meth:`RateLimiter.try_acquire` never jumps ahead of them. A caller whose wait
is longer than its ``max_wait`` is refused at once, without sleeping, with
:class:`suture.Overloaded` carrying the wait as ``retry_after``. A waiter that
is cancelled gives its slot back when nobody reserved after it (otherwise the
slot stays used: the limiter may admit less than it could, never more).

:meth:`RateLimiter.pause_until` is the upstream's "slow down" (an HTTP 429 or
503 with ``Retry-After``): nobody is admitted before that time, waiters that
wake inside the pause wait again, and afterwards the limiter resumes at its
rate, one call at a time, without the burst a full bucket would allow (every
caller that was told to wait would otherwise come back at the same instant).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Protocol

from suture._config import Seconds, check_clock, check_name, check_seconds
from suture._decorator import Decorator
from suture.clock import SYSTEM_CLOCK, Clock, waits_skipped
from suture.errors import Overloaded
from suture.events import LimitPaused, RequestShed, emit, listening
from suture.limits._baton import Baton
from suture.limits._gcra import DEFAULT_MAX_WAIT, SLACK, check_cost, check_rate, check_wait

__all__ = [
    "DEFAULT_MAX_WAIT",
    "RateLimiter",
    "RateLimiterStats",
    "TryAcquire",
]


def _make_try_acquire(
    refused: list[int],
    interval: float,
    tau: float,
    now: Callable[[], float],
    baton: Baton[float],
    burst: int,
) -> TryAcquire:
    """One limiter's ``try_acquire``, specialised once at construction.

    A closure over its constants runs in about two thirds of the time of a
    method reading them from ``self``: this is the call every rate-limited
    request makes, and its budget is two pass-through calls.
    """
    take, give, wait = baton.take, baton.give, baton.wait

    def try_acquire(cost: int = 1) -> bool:
        """Take ``cost`` tokens if the limiter has them now; never waits.

        ``False`` when it would have to wait (also while waiters hold the next
        slots, or during a pause).
        """
        if cost == 1:
            step = interval
        else:
            check_cost(cost, burst)
            step = interval * cost
        try:
            tat = take()  # the baton carries the state: holding it is reading it
        except IndexError:
            tat = wait()
        t = now()
        new = (tat if tat > t else t) + step
        if new - t > tau:
            give(tat)
            refused[0] += 1
            return False
        give(new)
        return True

    return try_acquire


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimiterStats:
    """A snapshot of a limiter: what it refused and made wait, what it has now.

    (Admissions are not counted: a counter would cost the hot path a fifth of
    its budget; count them in your own code, or from the calls you make.)
    """

    refused: int  #: calls refused (try_acquire False, or Overloaded)
    waited: int  #: calls admitted after a wait
    available: float  #: tokens a call could take right now
    paused_for: float  #: seconds left of a pause (0 when not paused)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class TryAcquire(Protocol):
    """The type of :attr:`RateLimiter.try_acquire` (a closure built per limiter)."""

    def __call__(self, cost: int = 1) -> bool: ...


class RateLimiter(Decorator):
    """At most ``rate`` calls per ``period`` seconds, in bursts of at most ``burst``.

    >>> limiter = RateLimiter(100, period=1.0, burst=10)   # 100/s, 10 at once
    >>> limiter.try_acquire()                              # never waits
    True
    >>> @limiter                                           # waits for a slot (def or async def)
    ... def call_api() -> None: ...

    :param rate: tokens per ``period`` (a positive, finite number).
    :param period: seconds (or a ``timedelta``) over which ``rate`` applies.
    :param burst: tokens a quiet limiter holds: how many calls may go at once.
        Default: ``rate`` rounded up (``RateLimiter(10)`` admits 10 at once,
        then one every 0.1 s).
    :param max_wait: how long :meth:`acquire`, the decorator and the context
        manager wait for a slot by default (``math.inf``: as long as it takes).
    :param name: names the limiter in events and errors.
    :param clock: where time comes from (tests pass ``suture.testing.FakeClock``).
    """

    _tag = "rate_limiter"
    __slots__ = (
        "_baton",
        "_clock",
        "_interval",
        "_now",
        "_pause_end",
        "_refused",
        "_tau",
        "_waited",
        "burst",
        "max_wait",
        "name",
        "period",
        "rate",
        "try_acquire",
    )

    #: ``try_acquire(cost=1) -> bool``: take ``cost`` tokens if the limiter has them now,
    #: never wait. A closure built per limiter (see :func:`_make_try_acquire`).
    try_acquire: TryAcquire

    def __init__(
        self,
        rate: float,
        period: Seconds = 1.0,
        *,
        burst: int | None = None,
        max_wait: Seconds = DEFAULT_MAX_WAIT,
        name: str = "rate",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        interval, period_f, burst_i = check_rate(rate, period, burst)
        check_name("name", name)
        self.rate = float(rate)
        self.period = period_f
        self.burst = burst_i
        self.max_wait = check_seconds("max_wait", max_wait, allow_inf=True)
        self.name = name
        self._clock = check_clock(clock)
        self._now = self._clock.now
        self._interval = interval
        # The slack is folded into tau once, so the hot path compares two floats.
        self._tau = burst_i * interval + interval * SLACK
        # The whole GCRA state, the theoretical arrival time, travels with the baton.
        self._baton: Baton[float] = Baton(-math.inf)
        self._pause_end = -math.inf
        self._refused = [0]  # a list: the specialised try_acquire counts into it
        self._waited = 0
        self.try_acquire = _make_try_acquire(
            self._refused, interval, self._tau, self._now, self._baton, burst_i
        )

    def __repr__(self) -> str:
        return (
            f"RateLimiter({self.rate:g}, period={self.period:g}, burst={self.burst}, "
            f"name={self.name!r})"
        )

    # --- admission without waiting ---------------------------------------------------

    def available(self) -> float:
        """Tokens a call could take right now (0 while waiters or a pause hold the slots)."""
        now = self._now()
        tat = self._baton.peek()
        free = self.burst - (max(tat, now) - now) / self._interval
        return max(0.0, min(float(self.burst), free))

    @property
    def paused_until(self) -> float:
        """The end of the current pause on the limiter's clock (``-inf`` when none was set)."""
        return self._pause_end

    def stats(self) -> RateLimiterStats:
        return RateLimiterStats(
            refused=self._refused[0],
            waited=self._waited,
            available=self.available(),
            paused_for=max(0.0, self._pause_end - self._now()),
        )

    # --- being told to slow down -----------------------------------------------------

    def pause_until(self, until: float) -> None:
        """Admit nobody before ``until`` (the limiter's clock, ``clock.now()`` seconds).

        Then resume at the limiter's rate, one call at a time. A pause only
        ever extends: an earlier ``until`` than the current pause is ignored.
        """
        if isinstance(until, bool) or not isinstance(until, (int, float)):
            raise TypeError(f"until={until!r}: expected a time on the limiter's clock (seconds)")
        if not math.isfinite(until):
            raise ValueError(f"until={until!r}: must be a finite time on the limiter's clock")
        until = float(until)
        tat = self._baton.hold()
        extended = until > self._pause_end
        if extended:
            self._pause_end = until
            # The first call after the pause lands at ``until``: tat is one slot
            # short of the full tolerance, so exactly one token is free at ``until``.
            tat = max(tat, until + self._tau - self._interval)
        self._baton.release(tat)
        if extended and listening(LimitPaused):
            emit(LimitPaused(name=self.name, seconds=max(0.0, until - self._now())))

    def pause(self, seconds: Seconds) -> None:
        """Admit nobody for ``seconds`` from now (an upstream's ``Retry-After``)."""
        self.pause_until(self._now() + check_seconds("seconds", seconds))

    # --- admission with a wait ---------------------------------------------------------

    def _reserve(self, cost: int, budget: float) -> tuple[float, float]:
        """Admit or reserve a slot: ``(wait, ticket)``; ``wait <= 0`` means admitted now.

        Raises :class:`suture.Overloaded` when the slot is further away than ``budget``.
        """
        step = self._interval * cost
        tat = self._baton.hold()
        now = self._now()
        new = (tat if tat > now else now) + step
        wait = new - now - self._tau
        if wait > budget:
            self._baton.release(tat)
            self._refused[0] += 1
            refused = True
        else:
            self._baton.release(new)
            refused = False
            if wait > 0:
                self._waited += 1
        if refused:
            # A wait of a hair past the slack is still a slot one interval away at most.
            retry_after = max(wait, 0.0)
            if listening(RequestShed):
                emit(
                    RequestShed(
                        name=self.name,
                        source="rate_limiter",
                        priority=None,
                        level="rate limit",
                        retry_after=retry_after,
                    )
                )
            raise Overloaded("rate limit", retry_after, source="rate_limiter")
        return wait, new

    def _give_back(self, ticket: float, cost: int) -> None:
        """A reserved slot that will not be used: returned if nobody reserved after it."""
        tat = self._baton.hold()
        if tat == ticket:
            tat = ticket - self._interval * cost
            self._waited -= 1
        self._baton.release(tat)

    def _woke_in_pause(self) -> bool:
        return self._now() < self._pause_end

    def acquire(self, cost: int = 1, *, max_wait: Seconds | None = None) -> None:
        """Take ``cost`` tokens, waiting for them up to ``max_wait`` (default: the limiter's).

        Raises :class:`suture.Overloaded` (``source="rate_limiter"``) at once,
        without waiting, when the tokens are further away than ``max_wait``;
        its ``retry_after`` says when they will be there.
        """
        if cost != 1:
            check_cost(cost, self.burst)
        budget = check_wait(max_wait, self.max_wait)
        start = self._now()
        while True:
            wait, ticket = self._reserve(cost, budget)
            if wait <= 0 or waits_skipped():
                return
            try:
                self._clock.sleep(wait)
            except BaseException:
                self._give_back(ticket, cost)
                raise
            if not self._woke_in_pause():
                return
            # Paused while asleep: the slot we held is inside the pause. Queue again.
            self._give_back(ticket, cost)
            budget = max(0.0, budget - (self._now() - start))

    async def aacquire(self, cost: int = 1, *, max_wait: Seconds | None = None) -> None:
        """:meth:`acquire` for ``async`` code: the wait is an ``await``; cancelling it
        gives the slot back."""
        if cost != 1:
            check_cost(cost, self.burst)
        budget = check_wait(max_wait, self.max_wait)
        start = self._now()
        while True:
            wait, ticket = self._reserve(cost, budget)
            if wait <= 0 or waits_skipped():
                return
            try:
                await self._clock.asleep(wait)
            except BaseException:  # cancelled: CancelledError is a BaseException
                self._give_back(ticket, cost)
                raise
            if not self._woke_in_pause():
                return
            self._give_back(ticket, cost)
            budget = max(0.0, budget - (self._now() - start))

    # --- context manager and decorator ---------------------------------------------------

    def __enter__(self) -> RateLimiter:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def __aenter__(self) -> RateLimiter:
        await self.aacquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def _decorate_sync(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        acquire = self.acquire

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            acquire()
            return fn(*args, **kwargs)

        return wrapper

    def _decorate_async(
        self, fn: Callable[..., Coroutine[Any, Any, Any]]
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        aacquire = self.aacquire

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            await aacquire()
            return await fn(*args, **kwargs)

        return wrapper
