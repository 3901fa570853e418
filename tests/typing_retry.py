"""Checked by mypy --strict from tests/test_package.py; not a pytest module.

The decorators keep the wrapped function's signature and return type.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, assert_type

import suture


@suture.retry
def plain(x: int, *, y: str = "") -> str:
    return f"{x}{y}"


@suture.retry(attempts=5, deadline=10)
def configured(x: int) -> list[int]:
    return [x]


@suture.retry(attempts=2)
async def fetch(url: str, limit: float = 1.0) -> bytes:
    return url.encode()


policy = suture.Retry(attempts=3, jitter="equal")


@policy
async def also_async(n: int) -> int:
    return n


class Client:
    @suture.retry
    def get(self, key: str) -> int:
        return len(key)


assert_type(plain(1, y="a"), str)
assert_type(configured(2), list[int])
coro = fetch("u")
_c1 = assert_type(coro, Coroutine[Any, Any, bytes])
coro.close()
coro2 = also_async(1)
_c2 = assert_type(coro2, Coroutine[Any, Any, int])
coro2.close()
assert_type(Client().get("k"), int)
assert_type(policy, suture.Retry)
assert_type(suture.retry(attempts=3), suture.Retry)
assert_type(policy.call(plain, 1), str)


async def use() -> None:
    assert_type(await fetch("u"), bytes)
    assert_type(await policy.acall(fetch, "u", limit=2.0), bytes)
    async for attempt in policy.attempts():
        with attempt:
            pass
    for attempt2 in policy.attempts():
        with attempt2:
            pass


# Any suture.Budget is accepted: RetryBudget here, RedisRetryBudget across workers.
shared: suture.Budget = suture.RetryBudget(ratio=0.2)
assert_type(suture.Retry(budget=shared), suture.Retry)
assert_type(shared.try_spend(), bool)
