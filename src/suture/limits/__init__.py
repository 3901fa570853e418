"""Limits on how much work runs: a room per strategy.

* :mod:`suture.limits.rate`: :class:`RateLimiter` (GCRA): at most ``rate``
  calls per ``period``, with bursts, waits in arrival order, pauses when an
  upstream says 429;
* :mod:`suture.limits.keyed`: :class:`KeyedRateLimiter`: one such limit per
  key (client, tenant) in bounded memory;
* :mod:`suture.limits.bulkhead`: :class:`Bulkhead`: at most ``max_concurrent``
  calls in flight and ``max_queue`` waiting;
* :class:`suture.AdaptiveLimiter` (``suture.limiter``) learns a concurrency
  limit from latency.
"""

from suture.limits.bulkhead import Bulkhead, BulkheadStats
from suture.limits.keyed import KeyedRateLimiter
from suture.limits.rate import DEFAULT_MAX_WAIT, RateLimiter, RateLimiterStats

__all__ = [
    "DEFAULT_MAX_WAIT",
    "Bulkhead",
    "BulkheadStats",
    "KeyedRateLimiter",
    "RateLimiter",
    "RateLimiterStats",
]
