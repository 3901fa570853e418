"""Checked by mypy --strict from tests/test_breaker.py; not a pytest module.

Breaker, timeout and policy decorators keep the wrapped signature and return type.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, assert_type

import suture
from suture import BreakerState, BreakerStats, CircuitBreaker, Policy, Retry

breaker = CircuitBreaker("typed", failure_threshold=3)


@breaker
def plain(x: int, *, y: str = "") -> str:
    return f"{x}{y}"


@breaker
async def fetch(url: str) -> bytes:
    return url.encode()


@suture.timeout(1.5)
async def limited(n: int) -> int:
    return n


@suture.timeout(1.5)
def limited_sync(n: int) -> list[int]:
    return [n]


policy = Policy(retry=Retry(attempts=3), breaker=breaker, timeout=2.0, fallback=lambda e: None)


@policy
def composed(a: int, b: float) -> float:
    return a + b


@policy
async def acomposed(a: int) -> str:
    return str(a)


assert_type(plain(1, y="a"), str)
assert_type(limited_sync(1), list[int])
assert_type(composed(1, 2.0), float)
assert_type(breaker.call(plain, 1), str)
assert_type(breaker.state, BreakerState)
assert_type(breaker.stats(), BreakerStats)
assert_type(suture.breakers.get("typed-2"), CircuitBreaker)
assert_type(suture.compose(breaker, Retry()), Policy)


async def use() -> None:
    assert_type(await breaker.acall(fetch, "u"), bytes)
    assert_type(await policy.acall(acomposed, 1), str)


def coroutines() -> None:
    """The async wrappers still return coroutines of the original result type."""
    for coro in (
        assert_type(fetch("u"), Coroutine[Any, Any, bytes]),
        assert_type(limited(1), Coroutine[Any, Any, int]),
        assert_type(acomposed(1), Coroutine[Any, Any, str]),
    ):
        coro.close()
