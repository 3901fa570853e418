"""Rate limiter and bulkhead overhead: suture against limits, pyrate-limiter, throttled-py
and token-bucket, side by side in one process.

    .venv/bin/python bench/limits.py

* ``try_acquire()`` with headroom (a rate no benchmark loop can reach, the same
  for every library), against a bare call and a pass-through decorator;
  each peer in its fastest in-memory configuration (several tried, the best kept);
* bulkhead acquire + release on the success path (sync, and ``async with``).

Prints ns per call, ns added over a bare call, each peer's added cost as a
multiple of suture's, and the two ratios the issue asks for.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import per_call_ns, per_call_ns_async, table

import suture
from suture.limits import Bulkhead, RateLimiter

logging.getLogger("suture").setLevel(logging.CRITICAL)

RATE = 1_000_000_000  # per second: headroom for every loop below
NUMBER = 100_000


def bare() -> int:
    return 1


def passthrough(fn: Callable[[], int]) -> Callable[[], int]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        return fn(*args, **kwargs)

    return wrapper


def _peers() -> dict[str, dict[str, Callable[[], Any]]]:
    """Each peer's in-memory configurations at the same rate: name -> {config: call}."""
    out: dict[str, dict[str, Callable[[], Any]]] = {}

    # This file is named like the ``limits`` package it measures: take the benchmark
    # folder off the path so that ``import limits`` finds the library.
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p not in {here, ""}]
    sys.modules.pop("limits", None)
    import limits
    from limits import storage, strategies

    item = limits.RateLimitItemPerSecond(RATE)
    mem = storage.MemoryStorage()
    out["limits"] = {
        kind: functools.partial(cls(mem).hit, item, "bench")
        for kind, cls in (
            ("fixed-window", strategies.FixedWindowRateLimiter),
            ("moving-window", strategies.MovingWindowRateLimiter),
            ("sliding-window-counter", strategies.SlidingWindowCounterRateLimiter),
        )
    }

    import pyrate_limiter as pr

    rate = pr.Rate(RATE, pr.Duration.SECOND)
    gcra = pr.Limiter(pr.StateBucket([rate], algorithm=pr.GCRA()))
    tb = pr.Limiter(pr.StateBucket([rate], algorithm=pr.TokenBucket()))
    log = pr.Limiter(pr.InMemoryBucket([pr.Rate(10**7, pr.Duration.SECOND)]))
    out["pyrate-limiter"] = {
        "gcra": functools.partial(gcra.try_acquire, "bench", blocking=False),
        "token-bucket": functools.partial(tb.try_acquire, "bench", blocking=False),
        "in-memory-log": functools.partial(log.try_acquire, "bench", blocking=False),
    }

    from throttled import RateLimiterType, Throttled, rate_limiter

    quota = rate_limiter.per_sec(RATE, burst=RATE)
    out["throttled-py"] = {
        kind: functools.partial(Throttled(key="bench", using=kind, quota=quota).limit, "bench")
        for kind in (
            RateLimiterType.GCRA.value,
            RateLimiterType.TOKEN_BUCKET.value,
            RateLimiterType.FIXED_WINDOW.value,
        )
    }

    import token_bucket

    tbl = token_bucket.Limiter(RATE, RATE, token_bucket.MemoryStorage())
    out["token-bucket"] = {"memory": functools.partial(tbl.consume, "bench")}
    return out


def rate_limiter_rows() -> tuple[float, float, float, dict[str, float]]:
    limiter = RateLimiter(RATE, burst=RATE)
    base = per_call_ns(bare, number=NUMBER)
    through = per_call_ns(passthrough(bare), number=NUMBER)
    ours = per_call_ns(limiter.try_acquire, number=NUMBER)
    rows: dict[str, float] = {"suture": ours}
    for peer, configs in _peers().items():
        timed = {
            kind: per_call_ns(call, number=NUMBER // 5, repeat=5) for kind, call in configs.items()
        }
        best = min(timed, key=timed.__getitem__)
        rows[f"{peer} ({best})"] = timed[best]
    return base, through, ours, rows


def bulkhead_rows() -> tuple[float, float]:
    bulkhead = Bulkhead(max_concurrent=10, max_queue=10)
    acquire, release = bulkhead.acquire, bulkhead.release

    def pair() -> None:
        acquire()
        release()

    sync = per_call_ns(pair, number=NUMBER)

    async def apair() -> None:
        async with bulkhead:
            pass

    async_ns = per_call_ns_async(apair, number=NUMBER // 2)
    return sync, async_ns


def main() -> None:
    print(f"suture {suture.__version__}, Python {sys.version.split()[0]}")
    base, through, ours, rows = rate_limiter_rows()
    table(f"try_acquire() with headroom ({RATE:,}/s)", base, rows)
    peers = [v for k, v in rows.items() if k != "suture"]
    fastest = min(peers)
    print(f"\n  pass-through decorated call: {through:.0f} ns")
    print(f"  suture try_acquire / pass-through call: {ours / through:.2f}x   (goal <= 2x)")
    print(f"  fastest peer / suture try_acquire:      {fastest / ours:.1f}x   (goal >= 3x)")
    sync, async_ns = bulkhead_rows()
    print("\nbulkhead acquire + release, success path")
    print(f"  sync  acquire(); release():   {sync:.0f} ns   (goal <= 300 ns)")
    print(f"  async with bulkhead:          {async_ns:.0f} ns")


if __name__ == "__main__":
    main()
