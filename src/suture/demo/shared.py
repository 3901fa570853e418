"""Where the ``database`` breaker and retry budget keep their state: memory or Redis.

With ``Settings.redis_url`` every worker naming the same Redis and prefix
shares one breaker (``<prefix>breaker:{database}:*``) and one retry budget
(``<prefix>budget:database``); without it, each process keeps its own. An
unreachable Redis degrades to local state, never an error. The ``redis``
extra is imported only when a URL is given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from suture.clock import Clock
from suture.demo.db import BUDGET_CAPACITY, DB

if TYPE_CHECKING:
    import redis

    from suture.contrib.redis import RedisBreakerStore, RedisRetryBudget

__all__ = ["REDIS_TIMEOUT", "SharedState"]

#: Socket timeouts of the demo's Redis client, in seconds: while Redis does not
#: answer, a breaker state change or a retry waits at most this long for it.
REDIS_TIMEOUT = 0.2


class SharedState:
    """The Redis client, the breaker's store and the shared budget; all None in memory."""

    def __init__(self) -> None:
        self.redis: redis.Redis | None = None
        self.breaker_store: RedisBreakerStore | None = None
        self.budget: RedisRetryBudget | None = None
        self.prefix: str | None = None

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        prefix: str,
        ratio: float,
        floor: float,
        clock: Clock,
        follow: str = "majority",
    ) -> SharedState:
        """Share through the Redis at ``url``; the budget takes ``ratio`` and ``floor``.

        ``follow``: ``"majority"``, ``"any"`` or a number of workers (see Settings).
        """
        import redis

        from suture.contrib.redis import MAJORITY, Quorum, RedisBreakerStore, RedisRetryBudget

        policy: Any = MAJORITY
        if follow == "any":
            policy = "any"
        elif follow != "majority":
            policy = Quorum(int(follow))

        shared = cls()
        shared.prefix = prefix
        shared.redis = client = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        # Polled by the store's own thread (started when the breaker subscribes).
        shared.breaker_store = RedisBreakerStore(
            client, prefix=f"{prefix}breaker:", follow=policy, heartbeat_interval=0.5
        )
        shared.budget = RedisRetryBudget(
            client,
            key=f"{prefix}budget:{DB}",
            ratio=ratio,
            capacity=BUDGET_CAPACITY,
            min_per_second=floor,
            name=DB,
            clock=clock,
        )
        return shared

    def describe(self) -> dict[str, Any]:
        """The backend, and whether it is shared; ``degraded`` while Redis does not answer."""
        if self.breaker_store is None or self.budget is None:
            return {"backend": "memory", "degraded": False}
        return {
            "backend": "redis",
            "degraded": self.breaker_store.degraded or self.budget.degraded,
            "prefix": self.prefix,
        }

    def cluster(self) -> dict[str, Any] | None:
        """This worker, the live workers and each one's view of the breaker (Redis only)."""
        if self.breaker_store is None:
            return None
        return self.breaker_store.cluster(DB)

    def close(self) -> None:
        """Stop the store's and budget's threads and close the client (idempotent)."""
        if self.breaker_store is not None:
            self.breaker_store.close()
        if self.budget is not None:
            self.budget.close()
        if self.redis is not None:
            self.redis.close()
