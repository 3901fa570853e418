"""Breaker state and retry budgets shared through Redis: :class:`RedisBreakerStore`
(with its follow policy :class:`Quorum` / :data:`MAJORITY`) and :class:`RedisRetryBudget`
(and, re-exported from :mod:`suture.contrib.redis_limits` and
:mod:`suture.contrib.redis_lastgood`, :class:`RedisRateLimiter`,
:class:`AsyncRedisRateLimiter` and :class:`RedisLastGoodStore`).

Several workers (processes, hosts) that call the same dependency share one
breaker state and one retry budget. Local first: no call ever runs a Redis
command; state changes apply at once and an I/O thread publishes them
(pub/sub per namespace, with a periodic read as the safety net). A worker
follows others' OPEN per its ``follow`` policy; half-open probes are counted
for the whole cluster; any Redis failure degrades to local state and heals.
The model, the guarantees during a partition and the keys: docs/shared-state.md.

>>> import redis                                            # doctest: +SKIP
>>> from suture.contrib.redis import RedisBreakerStore      # doctest: +SKIP
>>> store = RedisBreakerStore("redis://localhost:6379/0", prefix="payments:")  # doctest: +SKIP
>>> breaker = suture.CircuitBreaker("payments", store=store)  # doctest: +SKIP

The package's rooms: ``_store`` (the breaker store) and ``_budget`` (the retry
budget); other Redis-backed strategies go in their own module here.
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
