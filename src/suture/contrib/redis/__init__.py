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

from suture.contrib import missing_extra

try:
    import redis  # noqa: F401 - checks the extra before the rooms import it
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra(__name__, "redis", _exc) from _exc

from suture.contrib.redis._budget import RedisRetryBudget
from suture.contrib.redis._store import MAJORITY, Quorum, RedisBreakerStore

# Rate limits and last-known-good answers live in their own module (issue 16);
# re-exported here so that everything Redis is in one place.
from suture.contrib.redis_lastgood import RedisLastGoodStore
from suture.contrib.redis_limits import AsyncRedisRateLimiter, RedisRateLimiter

__all__ = [
    "MAJORITY",
    "AsyncRedisRateLimiter",
    "Quorum",
    "RedisBreakerStore",
    "RedisLastGoodStore",
    "RedisRateLimiter",
    "RedisRetryBudget",
]
