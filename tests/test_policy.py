"""Composition: fallback, retry, breaker, timeout, outermost to innermost, whatever
order the parts come in; a retry never retries BreakerOpen; plain stacking works."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

import suture
from suture import (
    BreakerOpen,
    BreakerState,
    CircuitBreaker,
    Fallback,
    Policy,
    Retry,
    Timeout,
    compose,
)
from suture.testing import FakeClock


class Down:
    """Always fails; counts the calls that reached it."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        raise ConnectionError("down")


def parts(clock: FakeClock, caught: list[BaseException]) -> list[Any]:
    def fallback(exc: Exception) -> str:
        caught.append(exc)
        return "fallback"

    return [
        Retry(attempts=5, initial_delay=0.1, max_delay=0.1, jitter="none", clock=clock),
        CircuitBreaker("dep", failure_threshold=2, clock=clock),
        Timeout(1.0, clock=clock),
        Fallback(fallback),
    ]


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_order_is_fixed_whatever_order_the_parts_come_in(order: tuple[int, ...]) -> None:
    clock = FakeClock()
    caught: list[BaseException] = []
    given = parts(clock, caught)
    policy = compose(*(given[i] for i in order))
    down = Down()
    assert policy(down)() == "fallback"
    # The breaker sits inside the retry: it opened after 2 attempts, and the
    # retry stopped at the rejection instead of using its 5 attempts.
    assert down.calls == 2
    assert len(caught) == 1 and isinstance(caught[0], BreakerOpen)
    # Waits after attempts 1 and 2; attempt 3 was rejected, and nothing after it.
    assert clock.sleeps == [0.1, 0.1]


def test_each_attempt_has_its_own_timeout_inside_the_breaker() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("slow", failure_threshold=5, clock=clock)
    attempts = 0

    def sometimes_slow() -> str:
        nonlocal attempts
        attempts += 1
        clock.advance(2.0 if attempts == 1 else 0.1)
        return "late" if attempts == 1 else "in time"

    policy = Policy(
        timeout=Timeout(1.0, clock=clock),
        breaker=breaker,
        retry=Retry(attempts=3, initial_delay=0.1, clock=clock),
    )
    assert policy(sometimes_slow)() == "in time"
    assert attempts == 2
    assert breaker.stats().total_failures == 1  # the late attempt counted as a failure


def test_retry_never_retries_breaker_open_even_when_told_to() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("db", failure_threshold=1, clock=clock)
    breaker.force_open()
    calls = 0

    def fn() -> None:
        nonlocal calls
        calls += 1

    greedy = Retry(attempts=5, on=Exception, clock=clock)  # would retry anything
    with pytest.raises(BreakerOpen):
        Policy(retry=greedy, breaker=breaker)(fn)()
    assert calls == 0
    assert clock.sleeps == [], "stopped at once, no wait"


def test_plain_stacking_retry_over_breaker() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("stack", failure_threshold=2, clock=clock)
    down = Down()

    @suture.retry(attempts=5, initial_delay=0.1, clock=clock)
    @breaker
    def call() -> str:
        return down()

    with pytest.raises(BreakerOpen):
        call()
    assert down.calls == 2
    assert breaker.state is BreakerState.OPEN
    assert len(clock.sleeps) == 2  # the third attempt was rejected: no third wait


async def test_async_composition_with_a_real_cancelling_timeout() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("async-dep", failure_threshold=3, clock=clock)
    attempts = 0

    async def first_hangs() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await asyncio.Event().wait()
        return "ok"

    policy = compose(
        Timeout(0.01),
        Retry(attempts=3, initial_delay=0.1, clock=clock),
        breaker,
    )
    assert await policy(first_hangs)() == "ok"
    assert attempts == 2
    assert breaker.stats().total_failures == 1


async def test_async_fallback_and_acall() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("af", failure_threshold=1, clock=clock)
    breaker.force_open()

    async def fallback(exc: Exception) -> str:
        await asyncio.sleep(0)
        return f"fallback for {type(exc).__name__}"

    async def work() -> str:
        return "work"

    policy = Policy(breaker=breaker, fallback=fallback)
    assert await policy.acall(work) == "fallback for BreakerOpen"
    breaker.force_closed()
    assert await policy.acall(work) == "work"


def test_fallback_only_for_what_it_handles() -> None:
    policy = Policy(fallback=Fallback(lambda exc: "default", on=ConnectionError))
    assert policy.call(Down()) == "default"

    def bad() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        policy.call(bad)


def test_an_async_fallback_for_a_sync_function_is_refused() -> None:
    async def fallback(exc: Exception) -> str:
        return "x"

    with pytest.raises(TypeError, match="needs a sync fallback"):
        Policy(fallback=fallback)(Down())


def test_policy_repr_and_marker() -> None:
    breaker = CircuitBreaker("r")
    policy = Policy(timeout=2, breaker=breaker)
    assert repr(policy) == f"Policy(breaker={breaker!r}, timeout=Timeout(2.0))"

    @policy
    def fn() -> int:
        return 1

    assert fn() == 1
    assert fn.__suture_policy__ is policy  # type: ignore[attr-defined]
    assert fn.__name__ == "fn"


def test_bad_parts() -> None:
    with pytest.raises(ValueError, match="two breaker parts"):
        compose(CircuitBreaker("a"), CircuitBreaker("b"))
    with pytest.raises(TypeError, match="is not a Retry"):
        compose(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout=-1: must be greater than 0 seconds"):
        Policy(timeout=-1)
    with pytest.raises(TypeError, match="retry="):
        Policy(retry="3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="breaker="):
        Policy(breaker=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="handler="):
        Fallback(3)  # type: ignore[arg-type]
