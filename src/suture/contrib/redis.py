"""Breaker state and retry budgets shared through Redis: :class:`RedisBreakerStore`
and :class:`RedisRetryBudget` (and, re-exported from :mod:`suture.contrib.redis_limits` and
:mod:`suture.contrib.redis_lastgood`, :class:`RedisRateLimiter`,
:class:`AsyncRedisRateLimiter` and :class:`RedisLastGoodStore`).

Several workers (processes, hosts) that call the same dependency share one
breaker state: when one of them opens the breaker, the others stop calling
too, within ``poll_interval`` seconds.

>>> import redis                                            # doctest: +SKIP
>>> from suture.contrib.redis import RedisBreakerStore      # doctest: +SKIP
>>> store = RedisBreakerStore(redis.Redis.from_url("redis://localhost:6379/0"))  # doctest: +SKIP
>>> breaker = suture.CircuitBreaker("payments", store=store)  # doctest: +SKIP

How it keeps the hot path local:

* A breaker reads its own memory on every call; it writes the store only when
  its state changes (one ``EVALSHA``: a compare-and-set on the record's
  version, which also bumps nothing else).
* A background thread (started on the first ``subscribe``, never at import)
  reads the subscribed records every ``poll_interval`` seconds with one
  ``MGET`` and hands newer ones to the breakers, which apply them on their
  next call. A closed breaker that succeeds never waits on Redis.

When Redis is unreachable the store **degrades to local state**: writes land
in memory (the breaker keeps working exactly as with the default store),
reads answer from memory, one warning is logged. When Redis answers again,
the poller **heals**: a local record newer than Redis's is written back, an
older one is replaced by Redis's (on a tie, each side keeps its record until
the next state change). Use short socket timeouts on the client
(``socket_timeout=0.2``): a state change waits at most that long during an
outage.

:class:`RedisRetryBudget` is a :class:`suture.RetryBudget` whose bucket lives in
one Redis hash shared by every worker that names the same ``key``. Successes
are counted locally (lock-free, no command) and folded into Redis in batches:
by the next ``try_spend``/``stats`` call and by a background flush every
``flush_interval`` seconds. ``try_spend`` is one atomic script (fold the
pending deposits, refill the floor by Redis ``TIME``, cap, take a token).
While Redis is unreachable the budget degrades to a local
:class:`suture.RetryBudget` (same numbers) and tries Redis again every
``reconnect_after`` seconds.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
from collections.abc import Callable
from typing import Any

from suture.contrib import missing_extra

try:
    import redis
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra(__name__, "redis", _exc) from _exc

from suture._config import Seconds, check_seconds
from suture.breaker import BreakerRecord, BreakerState, MemoryBreakerStore, RecordListener
from suture.budget import BudgetStats, RetryBudget, check_budget
from suture.clock import SYSTEM_CLOCK, Clock

# Rate limits and last-known-good answers live in their own module (issue 16);
# re-exported here so that everything Redis is in one place.
from suture.contrib.redis_lastgood import RedisLastGoodStore
from suture.contrib.redis_limits import AsyncRedisRateLimiter, RedisRateLimiter
from suture.events import logger
from suture.windows import count_value

__all__ = [
    "AsyncRedisRateLimiter",
    "RedisBreakerStore",
    "RedisLastGoodStore",
    "RedisRateLimiter",
    "RedisRetryBudget",
]

# Compare-and-set on the record's version: store ARGV[2] only when the stored
# version is ARGV[1] (0 when absent); return whatever is stored afterwards.
_SWAP = """
local current = redis.call('GET', KEYS[1])
local version = 0
if current then version = tonumber(cjson.decode(current)['version']) end
if version ~= tonumber(ARGV[1]) then return current end
redis.call('SET', KEYS[1], ARGV[2])
return ARGV[2]
"""

# Any Redis failure degrades to local state: unreachable, a timeout, and also an
# error reply (READONLY from a replica during a failover, OOM): a state change
# must never replace the caller's own error with Redis's.
_ERRORS = (redis.RedisError, OSError)


def _encode(record: BreakerRecord) -> str:
    return json.dumps(
        {
            "state": record.state.value,
            "version": record.version,
            "opened_at": record.opened_at,
            "retry_at": record.retry_at,
            "open_count": record.open_count,
            "forced": record.forced,
            "reason": record.reason,
            "origin": record.origin,
        },
        separators=(",", ":"),
    )


def _decode(raw: bytes | str | None) -> BreakerRecord | None:
    if raw is None:
        return None
    data: dict[str, Any] = json.loads(raw)
    return BreakerRecord(
        state=BreakerState(data["state"]),
        version=int(data["version"]),
        opened_at=data.get("opened_at"),
        retry_at=data.get("retry_at"),
        open_count=int(data.get("open_count", 0)),
        forced=bool(data.get("forced", False)),
        reason=str(data.get("reason", "")),
        origin=str(data.get("origin", "")),
    )


class RedisBreakerStore:
    """A :class:`suture.BreakerStore` in Redis, with local fallback and healing.

    :param client: a ``redis.Redis`` client (sync). Give it short socket timeouts.
    :param prefix: key prefix; a breaker's record lives at ``prefix + name``.
    :param poll_interval: seconds between two reads of the subscribed records (> 0).
    :param background: start the polling thread on the first ``subscribe``
        (``False``: call :meth:`poll` yourself, as tests do).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "suture:breaker:",
        poll_interval: float = 0.5,
        background: bool = True,
    ) -> None:
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)):
            raise TypeError(f"poll_interval={poll_interval!r}: expected seconds as a number")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval={poll_interval!r}: must be greater than 0 seconds")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix={prefix!r}: must be a non-empty string")
        self._client = client
        self._prefix = prefix
        self._poll_interval = float(poll_interval)
        self._background = background
        self._local = MemoryBreakerStore()  # the degraded mode, and the local listeners
        self._lock = threading.Lock()
        self._names: dict[str, int] = {}  # subscribed name -> subscriber count
        self._seen: dict[str, int] = {}  # name -> the newest version handed to listeners
        self._dirty: set[str] = set()  # written locally while Redis was down
        self._degraded = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._script: Any = client.register_script(_SWAP)

    @property
    def degraded(self) -> bool:
        """True while Redis is unreachable and the state is local."""
        return self._degraded

    def _key(self, name: str) -> str:
        return self._prefix + name

    def _down(self, what: str, exc: BaseException) -> None:
        if not self._degraded:
            logger.warning("redis breaker store unreachable (%s: %s); using local state", what, exc)
        self._degraded = True

    def _up(self) -> None:
        if self._degraded:
            logger.warning("redis breaker store reachable again; state shared again")
        self._degraded = False

    # --- the BreakerStore protocol ----------------------------------------------------

    def load(self, name: str) -> BreakerRecord | None:
        try:
            raw = self._client.get(self._key(name))
        except _ERRORS as exc:
            self._down("load", exc)
            return self._local.load(name)
        self._up()
        record = _decode(raw)
        if record is not None:
            self._store_locally(name, record)
        return self._local.load(name)

    def swap(self, name: str, expected_version: int, record: BreakerRecord) -> BreakerRecord:
        try:
            raw = self._script(keys=[self._key(name)], args=[expected_version, _encode(record)])
        except _ERRORS as exc:
            self._down("swap", exc)
            with self._lock:
                self._dirty.add(name)
            return self._local.swap(name, expected_version, record)
        self._up()
        stored = _decode(raw)
        if stored is None:  # cannot happen: the script stores or returns what is stored
            return self._store_locally(name, record)
        return self._store_locally(name, stored)

    def _store_locally(self, name: str, record: BreakerRecord) -> BreakerRecord:
        """Keep the newest record in memory and notify this process's listeners."""
        current = self._local.load(name)
        expected = current.version if current is not None else 0
        if current is not None and current.version >= record.version:
            return current if current.version > record.version else record
        with self._lock:
            self._seen[name] = max(self._seen.get(name, 0), record.version)
        return self._local.swap(name, expected, record)

    def subscribe(self, name: str, listener: RecordListener) -> Callable[[], None]:
        unsubscribe_local = self._local.subscribe(name, listener)
        with self._lock:
            self._names[name] = self._names.get(name, 0) + 1
            start = self._background and self._thread is None
            if start:
                self._thread = threading.Thread(
                    target=self._run, name="suture-redis-breaker-store", daemon=True
                )
        if start:
            assert self._thread is not None
            self._thread.start()

        def unsubscribe() -> None:
            unsubscribe_local()
            with self._lock:
                left = self._names.get(name, 0) - 1
                if left > 0:
                    self._names[name] = left
                else:
                    self._names.pop(name, None)

        return unsubscribe

    def delete(self, name: str) -> None:
        self._local.delete(name)
        with self._lock:
            self._seen.pop(name, None)
            self._dirty.discard(name)
        try:
            self._client.delete(self._key(name))
        except _ERRORS as exc:
            self._down("delete", exc)

    # --- polling and healing --------------------------------------------------------------

    def poll(self) -> None:
        """Read every subscribed record once; hand newer ones to the breakers; heal."""
        with self._lock:
            names = list(self._names)
            dirty = set(self._dirty)
        if not names and not dirty:
            return
        try:
            raws = self._client.mget([self._key(n) for n in names]) if names else []
            for name in dirty:
                local = self._local.load(name)
                if local is None:
                    continue
                remote = _decode(self._client.get(self._key(name)))
                if remote is None or local.version > remote.version:
                    self._script(
                        keys=[self._key(name)],
                        args=[remote.version if remote else 0, _encode(local)],
                    )
        except _ERRORS as exc:
            self._down("poll", exc)
            return
        self._up()
        with self._lock:
            self._dirty -= dirty
        for name, raw in zip(names, raws, strict=True):
            remote = _decode(raw)
            if remote is not None and remote.version > self._seen.get(name, 0):
                self._store_locally(name, remote)

    def _run(self) -> None:
        while not self._stop.wait(self._poll_interval):
            try:
                self.poll()
            except Exception:  # the poller must survive anything; it is logged
                logger.exception("redis breaker store poll failed")

    def close(self) -> None:
        """Stop the polling thread (the client stays open: it is yours)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._poll_interval + 1.0)

    def __repr__(self) -> str:
        mode = "degraded" if self._degraded else "shared"
        return f"RedisBreakerStore(prefix={self._prefix!r}, {mode})"


# --- the shared retry budget ----------------------------------------------------------

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
    :param background: start the flush thread now (``False``: call :meth:`flush`
        yourself, as tests do).
    :param clock: times ``reconnect_after`` and the local fallback.
    """

    __slots__ = (
        "_client",
        "_clock",
        "_degraded",
        "_down_until",
        "_key",
        "_local",
        "_lock",
        "_own_client",
        "_reconnect_after",
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
        self._thread: threading.Thread | None = None
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
        """Take one shared token for a retry (one Redis script); the local budget while down."""
        reply = self._call(take=True)
        if reply is None:
            self._local._credit(self._take_pending())
            return self._local.try_spend()
        return bool(reply[0])

    def stats(self) -> BudgetStats:
        """The shared bucket (pending deposits folded in); the local one while Redis is down."""
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
            if not self._degraded:
                logger.warning(
                    "redis retry budget %r unreachable (%s: %s); using a local budget",
                    self.name,
                    type(exc).__name__,
                    exc,
                )
            self._degraded = True
            self._down_until = self._clock.now() + self._reconnect_after
            return None
        if self._degraded:
            logger.warning("redis retry budget %r reachable again; shared again", self.name)
            self._degraded = False
        return reply

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except Exception:  # the flusher must survive anything; it is logged
                logger.exception("redis retry budget flush failed")

    def close(self) -> None:
        """Stop the flush thread, fold what is pending, and close the client if it is ours."""
        self._stop.set()
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
