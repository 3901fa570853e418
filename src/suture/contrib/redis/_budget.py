"""The retry budget shared through Redis: :class:`RedisRetryBudget`."""

from __future__ import annotations

import itertools
import math
import threading
from typing import Any

import redis

from suture._config import Seconds, check_seconds
from suture.budget import BudgetStats, RetryBudget, check_budget
from suture.clock import SYSTEM_CLOCK, Clock
from suture.contrib.redis._store import _ERRORS
from suture.events import logger
from suture.windows import count_value

__all__ = ["RedisRetryBudget"]

# --- the shared retry budget ----------------------------------------------------------

# Background mode: try_spend decides on a local mirror of the shared bucket and
# never waits; the I/O thread sends the successes, the retries taken and the
# refusals, and sets the mirror to Redis's answer.

# One atomic step on the budget's hash: fold ARGV[1] deposits (x ratio, capped at
# capacity), refill the floor by Redis TIME (the one clock every worker shares),
# and take a token when ARGV[5] is "1". Returns {taken, tokens, reserve, deposits,
# spent, refused}; the two fractions as strings (Lua numbers become integers).
_BUDGET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local h = redis.call('HMGET', KEYS[1], 'tokens', 'reserve', 'at', 'deposits', 'spent', 'refused')
local fresh = tonumber(ARGV[1])
local ratio = tonumber(ARGV[2])
local capacity = tonumber(ARGV[3])
local floor = tonumber(ARGV[4])
local tokens = tonumber(h[1]) or 0
local reserve = tonumber(h[2])
if reserve == nil then
  if floor > 0 then reserve = 1 else reserve = 0 end
end
local at = tonumber(h[3]) or now
local deposits = (tonumber(h[4]) or 0) + fresh
local spent = tonumber(h[5]) or 0
local refused = tonumber(h[6]) or 0
tokens = math.min(capacity, tokens + fresh * ratio)
if now > at then
  if floor > 0 then
    reserve = math.min(math.max(1, floor), reserve + (now - at) * floor)
  end
  at = now
end
local taken = 0
if ARGV[5] == '1' then
  if tokens >= 1 - 1e-9 then
    tokens = math.max(0, tokens - 1)
    taken = 1
  elseif reserve >= 1 - 1e-9 then
    reserve = math.max(0, reserve - 1)
    taken = 1
  end
  if taken == 1 then spent = spent + 1 else refused = refused + 1 end
end
-- Retries a worker already decided locally (the background mode): they are
-- spent whatever is left, and its local refusals are counted.
local decided = tonumber(ARGV[7] or '0')
for _ = 1, decided do
  if tokens >= 1 - 1e-9 then tokens = math.max(0, tokens - 1)
  else reserve = math.max(0, reserve - 1) end
end
spent = spent + decided
refused = refused + tonumber(ARGV[8] or '0')
local ft = string.format('%.17g', tokens)
local fr = string.format('%.17g', reserve)
redis.call('HSET', KEYS[1], 'tokens', ft, 'reserve', fr, 'at', string.format('%.17g', at),
  'deposits', deposits, 'spent', spent, 'refused', refused)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
return {taken, ft, fr, deposits, spent, refused}
"""

# A budget must never break the call it guards: any Redis failure (unreachable,
# timeout, READONLY during a failover, a key of the wrong type) means "use local".
_BUDGET_ERRORS = _ERRORS


class RedisRetryBudget:
    """A retry budget shared by every worker that uses the same Redis ``key``.

    Usable wherever a :class:`suture.RetryBudget` is (``Retry(budget=...)``): it
    implements :class:`suture.Budget`.

    >>> budget = RedisRetryBudget("redis://localhost:6379/0", key="payments")  # doctest: +SKIP
    >>> policy = suture.Retry(attempts=3, budget=budget)  # doctest: +SKIP

    :param client: a ``redis.Redis`` client (give it short socket timeouts), or a
        URL: the budget then makes its own client with 0.2 s timeouts and closes
        it in :meth:`close`.
    :param key: the Redis key of the shared bucket (a hash). Workers that name the
        same key share the bucket; give them the same numbers.
    :param ratio: tokens deposited per success, in (0, 1].
    :param capacity: the most earned tokens the bucket holds (>= 1).
    :param min_per_second: the floor: tokens per second that refill by themselves
        (by Redis ``TIME``), shared by all the workers.
    :param name: the name in events; default: ``key``.
    :param flush_interval: seconds between two background folds of the local
        success count into Redis (> 0); nothing is sent when there is nothing new.
    :param reconnect_after: after a failed Redis call, seconds of local budget
        before Redis is tried again.
    :param ttl: seconds an untouched bucket lives in Redis.
    :param background: the default: ``try_spend`` decides on a local mirror of
        the shared bucket and never waits on Redis; an I/O thread sends the
        successes, retries and refusals (at once, and every ``flush_interval``)
        and sets the mirror to Redis's answer (refreshed at least every second).
        Between two answers the workers may together spend a few tokens more
        than the bucket holds. ``False``: every ``try_spend`` and ``stats`` is
        one Redis script on the caller (tests, scripts); call :meth:`flush` yourself.
    :param clock: times ``reconnect_after`` and the local fallback.
    """

    __slots__ = (
        "_background",
        "_client",
        "_clock",
        "_decided",
        "_degraded",
        "_down_until",
        "_key",
        "_kick",
        "_last",
        "_local",
        "_lock",
        "_mirrored",
        "_own_client",
        "_reconnect_after",
        "_refresh",
        "_refusals",
        "_script",
        "_sent",
        "_stop",
        "_successes",
        "_thread",
        "_ttl",
        "capacity",
        "flush_interval",
        "min_per_second",
        "name",
        "ratio",
    )

    def __init__(  # noqa: PLR0913 - keyword-only options of a shared budget
        self,
        client: redis.Redis | str,
        *,
        key: str,
        ratio: float = 0.1,
        capacity: float = 100.0,
        min_per_second: float = 1.0,
        name: str | None = None,
        flush_interval: Seconds = 1.0,
        reconnect_after: Seconds = 1.0,
        ttl: Seconds = 86_400,
        background: bool = True,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError(f"key={key!r}: must be a non-empty string")
        self.ratio, self.capacity, self.min_per_second = check_budget(
            ratio, capacity, min_per_second
        )
        self.flush_interval = check_seconds("flush_interval", flush_interval, positive=True)
        self._reconnect_after = check_seconds("reconnect_after", reconnect_after)
        self._ttl = math.ceil(check_seconds("ttl", ttl, positive=True))
        if isinstance(client, str):
            client = redis.Redis.from_url(client, socket_timeout=0.2, socket_connect_timeout=0.2)
            self._own_client = True
        elif isinstance(client, redis.Redis):
            self._own_client = False
        else:
            raise TypeError(f"client={client!r}: expected a redis.Redis client or a URL string")
        self.name = key if name is None else name
        self._client = client
        self._key = key
        self._clock = clock
        self._script: Any = client.register_script(_BUDGET)
        self._local = RetryBudget(
            ratio=self.ratio,
            capacity=self.capacity,
            min_per_second=self.min_per_second,
            name=self.name,
            clock=clock,
        )
        self._lock = threading.Lock()
        self._successes = itertools.count()
        self._sent = 0  # successes already folded into Redis (or into the local budget)
        self._degraded = False
        self._down_until = -math.inf
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._thread: threading.Thread | None = None
        self._background = background
        self._mirrored = 0  # successes credited to the local mirror (background mode)
        self._decided = 0  # retries taken locally, not yet sent (background mode)
        self._refusals = 0  # refusals decided locally, not yet sent (background mode)
        self._last: list[Any] | None = None  # Redis's last answer
        self._refresh = max(1.0, self.flush_interval)  # mirror refresh with nothing to send
        if background:
            self._thread = threading.Thread(
                target=self._run, name=f"suture-redis-budget-{key}", daemon=True
            )
            self._thread.start()

    @property
    def degraded(self) -> bool:
        """True while Redis is unreachable and retries are decided by the local budget."""
        return self._degraded

    # --- the Budget protocol ---------------------------------------------------------

    def deposit(self) -> None:
        """Record a success. Lock-free and local: no Redis command."""
        next(self._successes)

    def try_spend(self) -> bool:
        """Take one token for a retry.

        Background mode (the default): decided on the local mirror of the shared
        bucket, never a Redis command; the I/O thread reports it. Otherwise one
        Redis script; the local budget while Redis is down.
        """
        if self._background:
            with self._lock:
                total = count_value(self._successes)
                fresh, self._mirrored = total - self._mirrored, total
            self._local._credit(fresh)
            taken = self._local.try_spend()
            with self._lock:
                if taken:
                    self._decided += 1
                else:
                    self._refusals += 1
            self._kick.set()
            return taken
        reply = self._call(take=True)
        if reply is None:
            self._local._credit(self._take_pending())
            return self._local.try_spend()
        return bool(reply[0])

    def stats(self) -> BudgetStats:
        """The shared bucket (pending deposits folded in); the local one while Redis is down.

        Background mode: the mirror and Redis's last counts, without a command.
        """
        if self._background:
            mirror = self._local.stats()
            last = self._last
            if last is None:
                return mirror
            with self._lock:
                unsent = count_value(self._successes) - self._sent
                decided, refusals = self._decided, self._refusals
            return BudgetStats(
                name=self.name,
                tokens=mirror.tokens,
                reserve=mirror.reserve,
                deposits=int(last[3]) + unsent,
                spent=int(last[4]) + decided,
                refused=int(last[5]) + refusals,
            )
        reply = self._call(take=False)
        if reply is None:
            self._local._credit(self._take_pending())
            return self._local.stats()
        return BudgetStats(
            name=self.name,
            tokens=float(reply[1]),
            reserve=float(reply[2]),
            deposits=int(reply[3]),
            spent=int(reply[4]),
            refused=int(reply[5]),
        )

    def flush(self) -> None:
        """Fold the successes counted since the last fold into Redis (no command if none)."""
        if self._background:
            self._sync(refresh=False)
            return
        with self._lock:
            if count_value(self._successes) == self._sent:
                return
        reply = self._call(take=False)
        if reply is None:
            self._local._credit(self._take_pending())

    # --- Redis, and the fallback -----------------------------------------------------

    def _take_pending(self) -> int:
        with self._lock:
            total = count_value(self._successes)
            pending = total - self._sent
            self._sent = total
        return pending

    def _call(self, *, take: bool) -> list[Any] | None:
        """One script call; ``None`` when Redis is (or was just found) unreachable."""
        if self._degraded and self._clock.now() < self._down_until:
            return None
        pending = self._take_pending()
        try:
            reply: list[Any] = self._script(
                keys=[self._key],
                args=[
                    pending,
                    self.ratio,
                    self.capacity,
                    self.min_per_second,
                    int(take),
                    self._ttl,
                ],
            )
        except _BUDGET_ERRORS as exc:
            self._local._credit(pending)
            self._down(exc)
            return None
        self._up()
        return reply

    def _down(self, exc: BaseException) -> None:
        """Redis failed: decide locally for a while; warn once, whichever thread saw it."""
        with self._lock:
            if not self._degraded:
                logger.warning(
                    "redis retry budget %r unreachable (%s: %s); using a local budget",
                    self.name,
                    type(exc).__name__,
                    exc,
                )
            self._degraded = True
            self._down_until = self._clock.now() + self._reconnect_after

    def _up(self) -> None:
        if not self._degraded:  # the common case: no lock on a healthy call
            return
        with self._lock:
            if self._degraded:
                logger.warning("redis retry budget %r reachable again; shared again", self.name)
            self._degraded = False

    def _sync(self, *, refresh: bool) -> None:
        """Background mode: send what was decided locally; the mirror takes Redis's answer."""
        with self._lock:
            total = count_value(self._successes)
            pending, decided, refusals = total - self._sent, self._decided, self._refusals
            if not (pending or decided or refusals or refresh):
                return
            self._sent = total
            self._decided = self._refusals = 0
        if self._degraded and self._clock.now() < self._down_until:
            reply = None
        else:
            args = [pending, self.ratio, self.capacity, self.min_per_second, 0, self._ttl]
            try:
                reply = self._script(keys=[self._key], args=[*args, decided, refusals])
            except Exception as exc:  # any failure: the mirror decides alone; logged once
                reply = None
                self._down(exc)
        if reply is None:
            return  # what was decided locally stays decided: the mirror has it
        self._up()
        self._last = reply
        local = self._local
        with self._lock:
            self._mirrored = max(self._mirrored, total)
        with local._lock:
            local._fold()
            local._tokens = float(reply[1])
            local._reserve = float(reply[2])

    def _run(self) -> None:
        next_refresh = 0.0
        while not self._stop.is_set():
            self._kick.wait(self.flush_interval)
            self._kick.clear()
            try:
                if not self._background:
                    self.flush()
                    continue
                now = self._clock.now()
                # Refreshed once shared (a budget never used sends nothing).
                self._sync(refresh=now >= next_refresh and self._last is not None)
                if now >= next_refresh:
                    next_refresh = now + self._refresh
            except Exception:  # the I/O thread must survive anything; it is logged
                logger.exception("redis retry budget flush failed")

    def close(self) -> None:
        """Stop the flush thread, fold what is pending, and close the client if it is ours."""
        self._stop.set()
        self._kick.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.flush_interval + 1.0)
        self.flush()
        if self._own_client:
            self._client.close()

    def __repr__(self) -> str:
        mode = "degraded" if self._degraded else "shared"
        return (
            f"RedisRetryBudget(key={self._key!r}, ratio={self.ratio}, capacity={self.capacity}, "
            f"min_per_second={self.min_per_second}, {mode})"
        )
