"""Tiny timing harness shared by the benchmarks: best-of-N per-call nanoseconds.

Each case is timed in one process with the same loop; the figure is the
minimum over several repeats (the least disturbed run), minus nothing: ratios
and "added ns" are computed against a bare call measured the same way.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any


def per_call_ns(fn: Callable[[], Any], *, number: int = 200_000, repeat: int = 7) -> float:
    """Best per-call time of ``fn()`` in nanoseconds."""
    best = float("inf")
    loop = range(number)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            t0 = time.perf_counter_ns()
            for _ in loop:
                fn()
            best = min(best, (time.perf_counter_ns() - t0) / number)
    finally:
        if gc_was:
            gc.enable()
    return best


def per_call_ns_async(
    fn: Callable[[], Awaitable[Any]], *, number: int = 50_000, repeat: int = 7
) -> float:
    """Best per-call time of ``await fn()`` in nanoseconds, inside one running loop."""

    async def run() -> float:
        best = float("inf")
        loop = range(number)
        for _ in range(repeat):
            t0 = time.perf_counter_ns()
            for _ in loop:
                await fn()
            best = min(best, (time.perf_counter_ns() - t0) / number)
        return best

    gc.disable()
    try:
        return asyncio.run(run())
    finally:
        gc.enable()


def table(title: str, baseline: float, rows: dict[str, float], ours: str = "suture") -> None:
    """Print ns per call, ns added over ``baseline``, and each added cost as a multiple of ours."""
    print(f"\n{title}")
    print(f"  {'case':<28}{'ns/call':>10}{'added ns':>11}{'x suture':>10}")
    print(f"  {'bare call':<28}{baseline:>10.0f}{'':>11}{'':>10}")
    ours_added = max(rows[ours] - baseline, 1.0)
    for name, value in rows.items():
        added = value - baseline
        ratio = max(added, 1.0) / ours_added
        print(f"  {name:<28}{value:>10.0f}{added:>11.0f}{ratio:>9.1f}x")
