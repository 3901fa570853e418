"""Pool admission and sampling costs.

    .venv/bin/python bench/pool.py

* The request path: ``PoolMonitor.admit()`` (admitted at NORMAL, and a
  CRITICAL request at CRITICAL pressure), ``can_accept()``, an
  ``AdaptiveLimiter`` acquire + release, against a bare call and against the
  obvious lock-guarded check (what a monitor that locks on the request path
  pays). No peer library ships priority admission from pool pressure, so the
  lock-guarded check is the reference. Target: admit() at most 200 ns.
* The sampler: one ``PostgresServerSource`` read (one query over its dedicated
  connection), one ``SQLAlchemyPoolSource`` read (counters only) and one whole
  ``PoolMonitor.sample()`` of both, median and p99 over 200 samples each.
  Target: one PostgreSQL sample at most 5 ms. Skipped if PostgreSQL is down.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import per_call_ns, table

from suture import AdaptiveLimiter, PoolMonitor, Priority

logging.getLogger("suture").setLevel(logging.CRITICAL)

PG_URL = os.environ.get("SUTURE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def bare(_priority: Priority = Priority.NORMAL) -> None:
    return None


class LockedMonitor:
    """The naive form: the last fraction read under a lock on every request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fraction = 0.1

    def admit(self, priority: Priority = Priority.NORMAL) -> None:
        with self._lock:
            if self._fraction >= 0.9 and priority < Priority.CRITICAL:
                raise RuntimeError("overloaded")


def request_path() -> None:
    calm = PoolMonitor(lambda: (10, 100), name="calm")
    calm.sample()
    hot = PoolMonitor(lambda: (99, 100), name="hot")
    hot.sample()
    locked = LockedMonitor()
    limiter = AdaptiveLimiter(initial=100)
    normal, critical = Priority.NORMAL, Priority.CRITICAL

    def limited() -> None:
        limiter.acquire(normal).success()

    baseline = per_call_ns(lambda: bare(normal))
    rows = {
        "suture": per_call_ns(lambda: calm.admit(normal)),
        "admit(CRITICAL) at CRITICAL": per_call_ns(lambda: hot.admit(critical)),
        "can_accept()": per_call_ns(calm.can_accept),
        "lock-guarded check": per_call_ns(lambda: locked.admit(normal)),
        "limiter acquire+release": per_call_ns(limited, number=100_000),
    }
    table("admission (admitted request; 'suture' is admit(NORMAL) at NORMAL)", baseline, rows)
    direct = per_call_ns(calm.admit)
    print(f"  admit() called directly (no lambda): {direct:.0f} ns per call (target <= 200 ns)")


def _stats(label: str, fn: object, n: int = 200) -> None:
    assert callable(fn)
    for _ in range(10):  # warm up: connection, plans, caches
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    times.sort()
    p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
    print(f"  {label:<34} median {statistics.median(times):7.3f} ms   p99 {p99:7.3f} ms   (n={n})")


def sampling() -> None:
    print("\nsampling (one read each; target: one PostgreSQL sample <= 5 ms)")
    try:
        import sqlalchemy as sa

        from suture.contrib.sqlalchemy_pool import PostgresServerSource, SQLAlchemyPoolSource
    except ImportError as exc:  # pragma: no cover - the sql extra is missing
        print(f"  skipped: {exc}")
        return
    engine = sa.create_engine(PG_URL, pool_size=5, max_overflow=5)
    server = PostgresServerSource(PG_URL)
    try:
        server.read()
    except Exception as exc:
        print(f"  skipped: PostgreSQL not reachable ({type(exc).__name__}: {exc})")
        return
    app = SQLAlchemyPoolSource(engine)
    held = [engine.connect() for _ in range(3)]
    monitor = PoolMonitor([app, server], name="bench")
    try:
        _stats("PostgresServerSource.read()", server.read)
        _stats("SQLAlchemyPoolSource.read()", app.read)
        _stats("PoolMonitor.sample() (both)", monitor.sample)
    finally:
        for conn in held:
            conn.close()
        app.close()
        server.close()
        engine.dispose()


if __name__ == "__main__":
    print(f"python {sys.version.split()[0]}")
    request_path()
    sampling()
