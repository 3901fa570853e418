"""Retry overhead: suture against tenacity, stamina and backoff, in one process.

    .venv/bin/python bench/retry.py

Cases: the success path (sync and async; sync also with a local and a Redis
retry budget, whose deposits stay local), and a fail-once-then-succeed path
with every wait skipped. Prints ns per call, ns added over a bare call, and
each peer's added cost as a multiple of suture's; and suture's success path
as a multiple of a bare pass-through wrapper (a ``functools.wraps`` decorator
that only calls the function), measured in the same run (target: <= 1.5x);
and what a request deadline (``suture.deadline``) around the call adds to the
success path (target: <= 50 ns), timed in turn with and without one.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import backoff
import stamina
import tenacity
from _harness import per_call_ns, per_call_ns_async, table

import suture
from suture.testing import no_wait

logging.getLogger("suture").setLevel(logging.CRITICAL)
logging.getLogger("backoff").setLevel(logging.CRITICAL)
stamina.set_testing(False)
stamina.instrumentation.set_on_retry_hooks([])  # no logging: we measure the retry logic


class _NoSleepTime:
    """backoff calls ``time.sleep(0)`` even for a zero wait (a syscall); give it a no-op
    so that every library is measured without sleeping, as suture is under no_wait()."""

    sleep = staticmethod(lambda _seconds: None)
    monotonic = staticmethod(__import__("time").monotonic)


def bare() -> int:
    return 1


async def abare() -> int:
    return 1


def passthrough(fn: Callable[[], int]) -> Callable[[], int]:
    """The least a decorator can be: the floor suture's wrapper is compared with."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> int:
        return fn(*args, **kwargs)

    return wrapper


def apassthrough(
    fn: Callable[[], Coroutine[object, object, int]],
) -> Callable[[], Coroutine[object, object, int]]:
    @functools.wraps(fn)
    async def wrapper(*args: object, **kwargs: object) -> int:
        return await fn(*args, **kwargs)

    return wrapper


def _budget_rows() -> dict[str, float]:
    """The success path with a budget: a deposit is one local counter step, no lock;
    with the Redis budget, no command either (redis-py connects lazily, on a command)."""
    rows = {
        "suture + RetryBudget": per_call_ns(
            suture.retry(attempts=3, budget=suture.RetryBudget())(bare)
        )
    }
    try:
        from suture.contrib.redis import RedisRetryBudget
    except ImportError:  # the redis extra is not installed
        return rows
    shared = RedisRetryBudget("redis://127.0.0.1:6379/0", key="bench", background=False)
    rows["suture + RedisRetryBudget"] = per_call_ns(suture.retry(attempts=3, budget=shared)(bare))
    return rows


def success_sync() -> dict[str, float]:
    s = suture.retry(attempts=3)(bare)
    t = tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none())(bare)
    st = stamina.retry(on=ConnectionError, attempts=3)(bare)
    b = backoff.on_exception(backoff.expo, ConnectionError, max_tries=3)(bare)
    return {
        "suture": per_call_ns(s),
        "suture, deadline=30": per_call_ns(suture.retry(attempts=3, deadline=30)(bare)),
        "bare wrapper": per_call_ns(passthrough(bare)),
        **_budget_rows(),
        "tenacity": per_call_ns(t, number=20_000),
        "stamina": per_call_ns(st, number=20_000),
        "backoff": per_call_ns(b, number=50_000),
    }


def success_async() -> dict[str, float]:
    s = suture.retry(attempts=3)(abare)
    t = tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none())(abare)
    st = stamina.retry(on=ConnectionError, attempts=3)(abare)
    b = backoff.on_exception(backoff.expo, ConnectionError, max_tries=3)(abare)
    return {
        "suture": per_call_ns_async(s),
        "bare wrapper": per_call_ns_async(apassthrough(abare)),
        "tenacity": per_call_ns_async(t, number=10_000),
        "stamina": per_call_ns_async(st, number=10_000),
        "backoff": per_call_ns_async(b, number=20_000),
    }


def flaky_factory() -> object:
    state = {"n": 0}

    def flaky() -> int:
        state["n"] += 1
        if state["n"] % 2:
            raise ConnectionError("first try fails")
        return 1

    return flaky


def fail_once() -> dict[str, float]:
    s = suture.retry(attempts=3, initial_delay=0, max_delay=0)(flaky_factory())
    t = tenacity.retry(
        stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none(), sleep=lambda _s: None
    )(flaky_factory())
    st = stamina.retry(on=ConnectionError, attempts=3, wait_initial=0, wait_max=0, wait_jitter=0)(
        flaky_factory()
    )
    b = backoff.on_exception(
        backoff.constant, ConnectionError, max_tries=3, interval=0, jitter=None
    )(flaky_factory())
    import backoff._sync as backoff_sync

    real_time = backoff_sync.time
    backoff_sync.time = _NoSleepTime  # type: ignore[assignment]
    stamina.set_testing(True, attempts=3)
    try:
        with no_wait():
            return {
                "suture": per_call_ns(s, number=20_000),
                "tenacity": per_call_ns(t, number=5_000),
                "stamina": per_call_ns(st, number=5_000),
                "backoff": per_call_ns(b, number=10_000),
            }
    finally:
        backoff_sync.time = real_time
        stamina.set_testing(False)


def deadline_overhead() -> None:
    """The success path inside ``suture.deadline(...)`` and outside, timed in turn.

    A retry reads the deadline only when an attempt fails (to decide the next
    wait), so the success path costs the same; ``suture.timeout`` reads it on
    every call (one ``ContextVar.get`` and one clock read).
    """
    ours = suture.retry(attempts=3)(bare)
    timed = suture.timeout(30)(bare)
    best = {"retry": float("inf"), "retry in deadline": float("inf")}
    best |= {"timeout": float("inf"), "timeout in deadline": float("inf")}
    for _ in range(21):
        best["retry"] = min(best["retry"], per_call_ns(ours, repeat=1))
        best["timeout"] = min(best["timeout"], per_call_ns(timed, repeat=1))
        with suture.deadline(3600):
            best["retry in deadline"] = min(best["retry in deadline"], per_call_ns(ours, repeat=1))
            best["timeout in deadline"] = min(
                best["timeout in deadline"], per_call_ns(timed, repeat=1)
            )
    print("\nthe request deadline on the success path (target <= 50 ns), best of 21 rounds")
    for name in ("retry", "timeout"):
        added = best[f"{name} in deadline"] - best[name]
        print(
            f"  {name:<8}{best[name]:>8.0f} ns without, {best[f'{name} in deadline']:.0f} ns "
            f"within a deadline: {added:+.0f} ns"
        )


def main() -> None:
    from importlib.metadata import version

    peers = ", ".join(f"{p} {version(p)}" for p in ("tenacity", "stamina", "backoff"))
    print(f"Python {sys.version.split()[0]}; {peers}; best of 7 runs, ns per call")
    base = per_call_ns(bare)
    sync_rows = success_sync()
    table("success path, sync", base, sync_rows)
    abase = per_call_ns_async(abare)
    async_rows = success_async()
    table("success path, async", abase, async_rows)
    print("\nsuture's success path / a bare pass-through wrapper (target <= 1.5x),")
    print("the two timed in turn, best of 21 rounds each")
    ours, floor = suture.retry(attempts=3)(bare), passthrough(bare)
    aours, afloor = suture.retry(attempts=3)(abare), apassthrough(abare)
    for _ in range(21):
        sync_rows["bare wrapper"] = min(sync_rows["bare wrapper"], per_call_ns(floor, repeat=1))
        sync_rows["suture"] = min(sync_rows["suture"], per_call_ns(ours, repeat=1))
        async_rows["bare wrapper"] = min(
            async_rows["bare wrapper"], per_call_ns_async(afloor, repeat=1)
        )
        async_rows["suture"] = min(async_rows["suture"], per_call_ns_async(aours, repeat=1))
    for title, rows in (("sync", sync_rows), ("async", async_rows)):
        ratio = rows["suture"] / rows["bare wrapper"]
        print(f"  {title:<6}{rows['suture']:>8.0f} / {rows['bare wrapper']:.0f} ns = {ratio:.2f}x")
    table("fail once, then succeed (no waits), sync", base, fail_once())
    deadline_overhead()


def _retry_pair() -> tuple[Any, Callable[[], Any]]:
    policy = suture.Retry(attempts=3)
    return policy, policy(bare)


def metrics_main() -> None:
    """``python bench/retry.py metrics``: the success path with collectors; a scrape."""
    from _observability import report, scrape_ms, with_collectors

    report("retry, success path, sync", with_collectors(_retry_pair))
    print(f"  a Prometheus scrape of 100 breakers: {scrape_ms(100):.2f} ms (goal < 5 ms)")


if __name__ == "__main__":
    if sys.argv[1:] == ["metrics"]:
        metrics_main()
        raise SystemExit(0)
    main()
    metrics_main()
