"""Composition: fallback, retry, breaker, timeout, outermost to innermost, whatever
order the parts come in; a retry never retries BreakerOpen, nor waits for a breaker
that will still be open; plain stacking works."""

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
from suture.events import BreakerRejected, BreakerStateChanged, RetryScheduled
from suture.testing import FakeClock, capture_events


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
    # A wait after attempt 1; attempt 2 opened the breaker (open 30 s), so attempt 3
    # was made, and rejected, at once: no wait for a rejection.
    assert clock.sleeps == [0.1]


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


def _opening(clock: FakeClock, *, reset_timeout: float = 10.0, **options: Any) -> Policy:
    """A breaker that opens on the first failure, in a retry waiting 1 s then 2 s."""
    breaker = CircuitBreaker("db", failure_threshold=1, reset_timeout=reset_timeout, clock=clock)
    retry = Retry(
        attempts=3, initial_delay=1.0, max_delay=2.0, jitter="none", clock=clock, **options
    )
    return Policy(retry=retry, breaker=breaker)


def _check_no_wait_after_opening(
    clock: FakeClock, policy: Policy, down: Down, events: list[Any], caught: BreakerOpen
) -> None:
    assert down.calls == 1  # the failure that opened the breaker, nothing after it
    assert clock.sleeps == [], "no wait between the opening failure and the rejection"
    assert caught.retry_after == 10.0  # the whole open time is still ahead
    assert [type(e) for e in events] == [BreakerStateChanged, BreakerRejected]
    assert policy.breaker is not None
    stats = policy.breaker.stats()
    assert (stats.total_failures, stats.total_rejections) == (1, 1)  # counted as before
    assert "after 2 attempt(s)" in "".join(caught.__notes__)


def test_no_wait_after_the_failure_that_opens_the_breaker() -> None:
    clock = FakeClock()
    budget = suture.RetryBudget(ratio=0.5, capacity=5, clock=clock)
    policy = _opening(clock, budget=budget)
    down = Down()
    spendable = budget.stats()
    with capture_events() as events, pytest.raises(BreakerOpen) as caught:
        policy(down)()
    _check_no_wait_after_opening(clock, policy, down, events, caught.value)
    assert budget.stats() == spendable  # no retry ran: no token spent


async def test_no_wait_after_the_failure_that_opens_the_breaker_async() -> None:
    clock = FakeClock()
    policy = _opening(clock)
    down = Down()

    async def work() -> str:
        return down()

    with capture_events() as events, pytest.raises(BreakerOpen) as caught:
        await policy(work)()
    _check_no_wait_after_opening(clock, policy, down, events, caught.value)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_failed_half_open_probe_is_answered_at_once(kind: str) -> None:
    clock = FakeClock()
    policy = _opening(clock)
    down = Down()
    guarded = policy(down)
    with pytest.raises(BreakerOpen):
        guarded()
    clock.advance(10.0)  # half-open: the next call is a probe
    assert policy.breaker is not None and policy.breaker.state is BreakerState.HALF_OPEN

    async def work() -> str:
        return down()

    with pytest.raises(BreakerOpen) as caught:
        if kind == "sync":
            guarded()
        else:
            asyncio.run(policy(work)())
    assert down.calls == 2  # the probe ran and failed; the breaker reopened
    assert clock.sleeps == []
    assert caught.value.retry_after == 10.0
    assert policy.breaker.state is BreakerState.OPEN


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_breaker_half_open_before_the_wait_ends_still_gets_the_attempt(kind: str) -> None:
    clock = FakeClock()
    policy = _opening(clock, reset_timeout=0.5)  # open 0.5 s, the wait is 1 s
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return "ok"

    async def work() -> str:
        return flaky()

    with capture_events() as events:
        result = policy(flaky)() if kind == "sync" else asyncio.run(policy(work)())
    assert result == "ok"
    assert calls == 2  # the second attempt ran as the half-open probe, and closed it
    assert clock.sleeps == [1.0]
    assert len(events.of(RetryScheduled)) == 1
    assert policy.breaker is not None and policy.breaker.state is BreakerState.CLOSED


def test_a_half_open_breaker_is_asked_without_taking_its_permit() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "db", failure_threshold=1, reset_timeout=1.0, half_open_max_calls=1, clock=clock
    )
    with pytest.raises(ConnectionError):
        breaker(Down())()
    clock.advance(1.0)
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker._rejects_within(5.0)  # its probes may close it meanwhile
    assert breaker.call(lambda: "probe") == "probe"  # the one permit was still there
    assert breaker.state is BreakerState.CLOSED


def test_a_breaker_fallback_still_answers_the_skipped_wait() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "db", failure_threshold=1, reset_timeout=10.0, clock=clock, fallback=lambda e: "cached"
    )
    retry = Retry(attempts=3, initial_delay=1.0, jitter="none", clock=clock)
    down = Down()
    assert Policy(retry=retry, breaker=breaker)(down)() == "cached"
    assert down.calls == 1
    assert clock.sleeps == []


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
