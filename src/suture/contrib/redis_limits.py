# About 650 lines: the Lua script, the lease bookkeeping (_Book, no I/O) and its two thin
# edges, sync and async, side by side as the sync/async rule asks.
"""A rate limit shared by every worker through Redis, without a round trip per call.

:class:`RedisRateLimiter` (sync client) and :class:`AsyncRedisRateLimiter`
(``redis.asyncio``) run the same GCRA as :class:`suture.limits.RateLimiter`,
with the state in Redis: one Lua script on a hash-tagged key
(``suture:rate:{name}``), timed by Redis ``TIME`` so that the workers' clocks
do not matter.

**Leases.** A worker does not ask Redis for one token per call. It asks for a
*lease* of up to ``lease`` tokens at once (the script grants what the shared
limiter has, up to that), then spends them locally: a call with headroom takes
a token from a local counter and sends no command. The lease adapts: it
doubles (up to ``lease``) each time a worker spends it all before it expires,
and halves when it expires half unused. A lease lives ``lease_ttl`` seconds;
what is left then is dropped (the cluster may admit a little less than it
could, never more).

Bound: a leased token was taken from the shared limiter when leased, so over
any window of ``e`` seconds the cluster admits at most
``rate * e / period + burst`` tokens **plus the tokens leased but unspent when
the window began**: at most ``workers * lease`` (default ``lease`` =
``burst // 10``, at least 1). Set ``lease=1`` for exact sharing at one round
trip per call.

**Pauses** (an upstream's 429 or 503 with ``Retry-After``):
:meth:`RedisRateLimiter.pause` applies at once in this worker and, in the
same script call, in Redis; the other workers learn of it at their next lease
(within ``lease_ttl`` at most, sooner when busy) and drop theirs.

**When Redis is unreachable** (refused, timed out, an error reply), the
worker degrades to a local :class:`~suture.limits.RateLimiter` at
``rate / workers`` (and ``burst / workers``), ``workers`` being the live
workers Redis last reported (each script call registers its worker for
``worker_ttl`` seconds). It tries Redis again every ``reconnect_after``
seconds, on a call: give the client short socket timeouts
(``socket_timeout=0.2``), as that call waits for it. One warning is logged
each way.

Resolution: one microsecond, so at most 10⁶ tokens per second per limiter.
"""

from __future__ import annotations

import asyncio
import math
import threading
import uuid
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Final, Generic, TypeVar, cast

from suture.contrib import missing_extra

try:
    import redis
    import redis.asyncio
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra(__name__, "redis", _exc) from _exc

from suture._config import (
    Seconds,
    check_clock,
    check_int,
    check_name,
    check_number,
    check_seconds,
)
from suture.clock import SYSTEM_CLOCK, Clock, waits_skipped
from suture.errors import Overloaded
from suture.events import LimitPaused, RequestShed, emit, listening, logger
from suture.limits._baton import Baton
from suture.limits.rate import DEFAULT_MAX_WAIT, RateLimiter

__all__ = ["AsyncRedisRateLimiter", "LeaseStats", "RedisRateLimiter"]

# KEYS[1]: the limiter's hash (tat, pause), KEYS[2]: its live workers (a sorted set).
# ARGV: interval_us, tau_us, want, worker id, worker_ttl_us, pause_us (0: none).
# Returns {granted, wait_us, workers, pause_left_us}.
_GCRA_LEASE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat') or '0')
local pause = tonumber(redis.call('HGET', KEYS[1], 'pause') or '0')
local pause_for = tonumber(ARGV[6])
if pause_for > 0 and now + pause_for > pause then
  pause = now + pause_for
  redis.call('HSET', KEYS[1], 'pause', string.format('%d', pause))
end
if pause > now then
  local floor = pause + tau - interval
  if tat < floor then tat = floor end
end
if tat < now then tat = now end
local granted = math.floor((now + tau - tat) / interval)
if granted > want then granted = want end
if granted < 0 then granted = 0 end
tat = tat + granted * interval
redis.call('HSET', KEYS[1], 'tat', string.format('%d', tat))
redis.call('PEXPIRE', KEYS[1], math.ceil((tat - now + tau) / 1000) + 60000)
local wait = 0
if granted == 0 then wait = tat + interval - tau - now end
local worker_ttl = tonumber(ARGV[5])
redis.call('ZADD', KEYS[2], now, ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - worker_ttl)
redis.call('PEXPIRE', KEYS[2], math.ceil(worker_ttl / 1000) + 1000)
local workers = redis.call('ZCARD', KEYS[2])
local pause_left = pause - now
if pause_left < 0 then pause_left = 0 end
return {granted, math.ceil(wait), workers, math.ceil(pause_left)}
"""

_ERRORS = (redis.RedisError, OSError)


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseStats:
    """What a worker's :class:`RedisRateLimiter` did: calls served locally vs commands sent."""

    local: int  #: calls admitted from a lease, without a command
    commands: int  #: script calls sent to Redis
    refused: int  #: calls refused
    lease: int  #: the lease size now
    workers: int  #: live workers, as Redis last reported
    degraded: bool  #: True while Redis is unreachable

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Book:
    """Everything but the I/O: the lease, its expiry, the known wait, the pause, the fallback.

    ``take`` is the hot path (under the baton). ``want``/``apply``/``failed`` plan
    and digest one script call; the sync and async limiters only send it.
    """

    __slots__ = (
        "baton",
        "burst",
        "clock",
        "commands",
        "degraded",
        "down_until",
        "expires",
        "fallback",
        "interval_us",
        "lease",
        "local",
        "max_lease",
        "name",
        "next_ask",
        "pause_end",
        "pause_request",
        "period",
        "rate",
        "reconnect_after",
        "refused",
        "tau_us",
        "tokens",
        "ttl",
        "worker_ttl",
        "workers",
    )

    def __init__(  # noqa: PLR0913 - keyword-only numbers of one shared limiter
        self,
        *,
        name: str,
        rate: float,
        period: float,
        burst: int,
        max_lease: int,
        ttl: float,
        worker_ttl: float,
        reconnect_after: float,
        clock: Clock,
    ) -> None:
        self.name = name
        self.rate = rate
        self.period = period
        self.burst = burst
        interval = period / rate
        self.interval_us = max(1, round(interval * 1e6))
        self.tau_us = self.interval_us * burst
        self.max_lease = max_lease
        self.ttl = ttl
        self.worker_ttl = worker_ttl
        self.reconnect_after = reconnect_after
        self.clock = clock
        self.baton: Baton[None] = Baton(None)
        self.tokens = 0
        self.expires = -math.inf
        self.lease = 1
        self.next_ask = -math.inf
        self.pause_end = -math.inf
        self.pause_request = 0.0
        self.workers = 1
        self.degraded = False
        self.down_until = -math.inf
        self.fallback: RateLimiter | None = None
        self.local = 0
        self.commands = 0
        self.refused = 0

    def take(self) -> bool:
        """One token from the lease, if it has one and is still valid; no I/O."""
        baton = self.baton
        baton.hold()
        try:
            if self.tokens > 0:
                now = self.clock.now()
                if now < self.expires and now >= self.pause_end:
                    self.tokens -= 1
                    self.local += 1
                    return True
            return False
        finally:
            baton.release(None)

    def plan(self) -> tuple[str, float]:
        """What to do after ``take`` failed: ``("ask", 0)``, ``("wait", s)`` or ``("local", 0)``."""
        now = self.clock.now()
        if self.pause_request > 0:
            return "ask", 0.0
        if now < self.pause_end:
            return "wait", self.pause_end - now
        if self.degraded and now < self.down_until:
            return "local", 0.0
        if now < self.next_ask:
            return "wait", self.next_ask - now
        return "ask", 0.0

    def args(self, worker: str) -> list[Any]:
        baton = self.baton
        baton.hold()
        try:
            now = self.clock.now()
            if self.tokens > 0 and now >= self.expires:
                # Expired half unused (or more): ask for less next time.
                if self.tokens * 2 >= self.lease:
                    self.lease = max(1, self.lease // 2)
            elif self.tokens == 0 and now < self.expires:
                # Spent before it expired: ask for more.
                self.lease = min(self.max_lease, self.lease * 2)
            self.tokens = 0  # whatever was left is dropped with the old lease
            pause_us = math.ceil(self.pause_request * 1e6)
            self.pause_request = 0.0
        finally:
            baton.release(None)
        self.commands += 1
        return [
            self.interval_us,
            self.tau_us,
            self.lease,
            worker,
            math.ceil(self.worker_ttl * 1e6),
            pause_us,
        ]

    def apply(self, reply: list[Any]) -> bool:
        """Digest a script reply; True when it admitted this call (one token kept for it)."""
        granted, wait_us, workers, pause_left_us = (int(x) for x in reply)
        now = self.clock.now()
        if self.degraded:
            logger.warning("redis rate limiter %r reachable again; shared again", self.name)
            self.degraded = False
            self.fallback = None
        baton = self.baton
        baton.hold()
        try:
            self.workers = max(1, workers)
            if pause_left_us > 0:
                self.pause_end = max(self.pause_end, now + pause_left_us / 1e6)
            if granted > 0:
                self.tokens = granted - 1
                self.expires = now + self.ttl
                self.next_ask = -math.inf
                return True
            self.tokens = 0
            self.next_ask = now + wait_us / 1e6
            self.refused += 1
            return False
        finally:
            baton.release(None)

    def failed(self, exc: BaseException) -> RateLimiter:
        """Redis did not answer: the local limiter at ``rate / workers`` until it does."""
        if not self.degraded:
            logger.warning(
                "redis rate limiter %r unreachable (%s: %s); limiting locally at 1/%d of the rate",
                self.name,
                type(exc).__name__,
                exc,
                self.workers,
            )
        self.degraded = True
        self.down_until = self.clock.now() + self.reconnect_after
        return self.local_limiter()

    def local_limiter(self) -> RateLimiter:
        fallback = self.fallback
        if fallback is None:
            share = max(1, self.workers)
            fallback = RateLimiter(
                self.rate / share,
                self.period,
                burst=max(1, self.burst // share),
                name=self.name,
                clock=self.clock,
            )
            if self.pause_end > self.clock.now():
                fallback.pause_until(self.pause_end)
            self.fallback = fallback
        return fallback

    def pause(self, seconds: float) -> None:
        """Pause here at once; the next script call carries it to Redis."""
        if listening(LimitPaused):
            emit(LimitPaused(name=self.name, seconds=seconds))
        baton = self.baton
        baton.hold()
        try:
            self.pause_end = max(self.pause_end, self.clock.now() + seconds)
            self.pause_request = max(self.pause_request, seconds)
            self.tokens = 0
        finally:
            baton.release(None)
        if self.fallback is not None:
            self.fallback.pause_until(self.pause_end)

    def shed(self, retry_after: float) -> Overloaded:
        if listening(RequestShed):
            emit(
                RequestShed(
                    name=self.name,
                    source="rate_limiter",
                    priority=None,
                    level="shared rate limit",
                    retry_after=retry_after,
                )
            )
        return Overloaded("rate limit", retry_after, source="rate_limiter")

    def stats(self) -> LeaseStats:
        return LeaseStats(
            local=self.local,
            commands=self.commands,
            refused=self.refused,
            lease=self.lease,
            workers=self.workers,
            degraded=self.degraded,
        )


def _options(  # noqa: PLR0913 - the shared limiters' options, checked once for both edges
    name: str,
    rate: float,
    period: Seconds,
    burst: int | None,
    lease: int | None,
    lease_ttl: Seconds,
    worker_ttl: Seconds,
    reconnect_after: Seconds,
    max_wait: Seconds,
    clock: Clock,
) -> tuple[_Book, float]:
    check_name("name", name)
    if not name:
        raise ValueError("name='': must be a non-empty string (it names the Redis key)")
    rate_f = check_number("rate", rate, positive=True)
    period_f = check_seconds("period", period, positive=True)
    if rate_f / period_f > 1e6:
        raise ValueError(
            f"rate={rate!r}, period={period!r}: at most 10**6 tokens per second "
            "(the shared limiter counts microseconds)"
        )
    burst_i = max(1, math.ceil(rate_f)) if burst is None else check_int("burst", burst)
    lease_i = max(1, burst_i // 10) if lease is None else check_int("lease", lease)
    if lease_i > burst_i:
        raise ValueError(f"lease={lease!r}: must be at most burst={burst_i}")
    book = _Book(
        name=name,
        rate=rate_f,
        period=period_f,
        burst=burst_i,
        max_lease=lease_i,
        ttl=check_seconds("lease_ttl", lease_ttl, positive=True),
        worker_ttl=check_seconds("worker_ttl", worker_ttl, positive=True),
        reconnect_after=check_seconds("reconnect_after", reconnect_after),
        clock=check_clock(clock),
    )
    return book, check_seconds("max_wait", max_wait, allow_inf=True)


def _keys(prefix: str, name: str) -> list[str]:
    # One hash tag: both keys live in the same cluster slot, as a script requires.
    return [f"{prefix}{{{name}}}", f"{prefix}{{{name}}}:workers"]


ClientT = TypeVar("ClientT")


class _SharedLimiter(Generic[ClientT]):
    """What the sync and async edges share: the options, checked once, and the lease book."""

    __slots__ = ("_book", "_client", "_keys", "_own", "_refill", "_script", "_worker", "max_wait")
    _client_class: ClassVar[type[Any]]
    _client_name: ClassVar[str]

    def __init__(  # noqa: PLR0913 - the limiter's keyword-only options
        self,
        client: ClientT | str,
        name: str,
        rate: float,
        period: Seconds = 1.0,
        *,
        burst: int | None = None,
        lease: int | None = None,
        lease_ttl: Seconds = 0.5,
        worker_ttl: Seconds = 10.0,
        reconnect_after: Seconds = 1.0,
        max_wait: Seconds = DEFAULT_MAX_WAIT,
        prefix: str = "suture:rate:",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._book, self.max_wait = _options(
            name, rate, period, burst, lease, lease_ttl, worker_ttl, reconnect_after,
            max_wait, clock,
        )  # fmt: skip
        if isinstance(client, str):
            client = self._client_class.from_url(
                client, socket_timeout=0.2, socket_connect_timeout=0.2
            )
            self._own = True
        elif isinstance(client, self._client_class):
            self._own = False
        else:
            raise TypeError(
                f"client={client!r}: expected a {self._client_name} client or a URL string"
            )
        self._client = cast(ClientT, client)
        self._script: Any = cast(Any, client).register_script(_GCRA_LEASE)
        self._keys = _keys(prefix, name)
        self._worker = uuid.uuid4().hex
        self._refill: Any = self._new_lock()

    def _new_lock(self) -> Any:
        return None

    def __repr__(self) -> str:
        b = self._book
        mode = "degraded" if b.degraded else "shared"
        return f"{type(self).__name__}({b.name!r}, {b.rate:g}, period={b.period:g}, {mode})"

    @property
    def degraded(self) -> bool:
        return self._book.degraded

    def stats(self) -> LeaseStats:
        return self._book.stats()


class RedisRateLimiter(_SharedLimiter["redis.Redis"]):
    """A :class:`~suture.limits.RateLimiter` shared by every worker naming the same limiter.

    >>> client = redis.Redis(socket_timeout=0.2)                   # doctest: +SKIP
    >>> shared = RedisRateLimiter(client, "geo-api", 1000)         # doctest: +SKIP
    >>> if shared.try_acquire(): ...                               # doctest: +SKIP

    :param client: a ``redis.Redis`` client (short socket timeouts), or a URL.
    :param name: the limiter's name: workers that use the same name share it.
    :param rate: tokens per ``period``, for the whole cluster (at most 10⁶ per second).
    :param burst: as for ``RateLimiter`` (default: ``rate`` rounded up).
    :param lease: the most tokens a worker leases at once (default ``burst // 10``,
        at least 1): the cluster never exceeds the limit by more than
        ``workers * lease`` tokens.
    :param lease_ttl: seconds a lease may be spent; also how soon other workers
        learn of a pause at the latest.
    :param worker_ttl: seconds a worker counts as live after its last script call.
    :param reconnect_after: seconds of local limiting before Redis is tried again.
    :param max_wait: default wait of :meth:`acquire`.
    """

    __slots__ = ()
    _client_class = redis.Redis
    _client_name = "redis.Redis"

    def _new_lock(self) -> threading.Lock:
        return threading.Lock()

    def _ask(self) -> bool | None:
        """One script call: admitted or not; ``None`` when Redis failed (use the fallback)."""
        book = self._book
        try:
            reply = self._script(keys=self._keys, args=book.args(self._worker))
        except _ERRORS as exc:
            book.failed(exc)
            return None
        return book.apply(reply)

    def _try(self) -> tuple[bool, float]:
        """``(admitted, wait)``: the wait is how long until asking again makes sense."""
        book = self._book
        if book.take():
            return True, 0.0
        with self._refill:
            if book.take():  # another thread refilled the lease meanwhile
                return True, 0.0
            action, wait = book.plan()
            if action == "wait":
                book.refused += 1
                return False, wait
            if action == "ask":
                admitted = self._ask()
                if admitted is not None:
                    return admitted, 0.0 if admitted else max(0.0, book.next_ask - book.clock.now())
            fallback = book.local_limiter()
        if fallback.try_acquire():
            return True, 0.0
        return False, fallback.period / fallback.rate

    def try_acquire(self) -> bool:
        """Take a token if the cluster has one now; never waits. Usually no Redis command."""
        return self._try()[0]

    def acquire(self, *, max_wait: Seconds | None = None) -> None:
        """Take a token, waiting up to ``max_wait`` (default: the limiter's).

        Waiting here is polite polling (sleep until Redis said a token is due),
        not a queue: first come, first served holds within a worker's threads
        only as far as the sleeps are fair.
        """
        book = self._book
        budget = (
            self.max_wait
            if max_wait is None
            else check_seconds("max_wait", max_wait, allow_inf=True)
        )
        deadline = book.clock.now() + budget
        while True:
            admitted, wait = self._try()
            if admitted:
                return
            now = book.clock.now()
            if now + wait > deadline or waits_skipped():
                raise book.shed(wait)
            book.clock.sleep(max(wait, 1e-4))

    def pause(self, seconds: Seconds) -> None:
        """No worker admits anything for ``seconds``: here at once, elsewhere at their
        next lease (one script call now carries it to Redis)."""
        book = self._book
        book.pause(check_seconds("seconds", seconds))
        with self._refill:
            self._ask()

    def close(self) -> None:
        if self._own:
            self._client.close()


class AsyncRedisRateLimiter(_SharedLimiter["redis.asyncio.Redis"]):
    """:class:`RedisRateLimiter` for ``redis.asyncio`` clients: the same leases,
    ``await``-ed script calls."""

    __slots__ = ()
    _client_class = redis.asyncio.Redis
    _client_name = "redis.asyncio.Redis"
    # The asyncio.Lock is made on first use, inside the loop.

    async def _ask(self) -> bool | None:
        book = self._book
        try:
            pending: Awaitable[Any] = self._script(keys=self._keys, args=book.args(self._worker))
            reply = await pending
        except _ERRORS as exc:
            book.failed(exc)
            return None
        return book.apply(reply)

    async def _try(self) -> tuple[bool, float]:
        book = self._book
        if book.take():
            return True, 0.0
        if self._refill is None:
            self._refill = asyncio.Lock()
        async with self._refill:
            if book.take():
                return True, 0.0
            action, wait = book.plan()
            if action == "wait":
                book.refused += 1
                return False, wait
            if action == "ask":
                admitted = await self._ask()
                if admitted is not None:
                    return admitted, 0.0 if admitted else max(0.0, book.next_ask - book.clock.now())
            fallback = book.local_limiter()
        if fallback.try_acquire():
            return True, 0.0
        return False, fallback.period / fallback.rate

    async def try_acquire(self) -> bool:
        """Take a token if the cluster has one now; never waits for one."""
        return (await self._try())[0]

    async def acquire(self, *, max_wait: Seconds | None = None) -> None:
        """Take a token, waiting up to ``max_wait`` (default: the limiter's)."""
        book = self._book
        budget = (
            self.max_wait
            if max_wait is None
            else check_seconds("max_wait", max_wait, allow_inf=True)
        )
        deadline = book.clock.now() + budget
        while True:
            admitted, wait = await self._try()
            if admitted:
                return
            if book.clock.now() + wait > deadline or waits_skipped():
                raise book.shed(wait)
            await book.clock.asleep(max(wait, 1e-4))

    async def pause(self, seconds: Seconds) -> None:
        """As :meth:`RedisRateLimiter.pause`."""
        self._book.pause(check_seconds("seconds", seconds))
        if self._refill is None:
            self._refill = asyncio.Lock()
        async with self._refill:
            await self._ask()

    async def aclose(self) -> None:
        if self._own:
            await self._client.aclose()
