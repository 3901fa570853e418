"""The naive mode: the founding spec's retry and breaker, counted attempt by attempt."""

from __future__ import annotations

import asyncio
import random

import pytest

from suture.breaker import BreakerState
from suture.demo.config import Settings
from suture.demo.db import resilience
from suture.demo.naive import NaivePolicy
from suture.errors import BreakerOpen
from suture.testing import FakeClock


def _naive(clock: FakeClock) -> NaivePolicy:
    guard = resilience(
        Settings(naive=True, clock=clock, database_url="sqlite+aiosqlite:///x.db"),
        rand=random.Random(1),
    )
    assert isinstance(guard.policy, NaivePolicy)
    return guard.policy


def test_three_attempts_waiting_1_then_2_seconds_without_jitter() -> None:
    clock = FakeClock()
    policy = _naive(clock)
    calls: list[float] = []

    @policy
    async def query() -> None:
        calls.append(clock.now())
        raise ConnectionError("database down")

    with pytest.raises(ConnectionError):
        asyncio.run(query())
    assert calls == [0.0, 1.0, 3.0]  # 3 attempts; waits of exactly 1 s and 2 s
    assert clock.sleeps == [1.0, 2.0]


def test_breaker_opens_after_5_consecutive_failures_and_its_rejections_are_retried() -> None:
    clock = FakeClock()
    policy = _naive(clock)
    attempts = 0

    @policy
    async def query() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("database down")

    with pytest.raises(ConnectionError):
        asyncio.run(query())  # 3 failures
    with pytest.raises(BreakerOpen):  # 2 more failures open it; the 3rd try is rejected
        asyncio.run(query())
    assert attempts == 5
    assert policy.breaker.state is BreakerState.OPEN
    sleeps_before = len(clock.sleeps)
    with pytest.raises(BreakerOpen) as caught:
        asyncio.run(query())  # rejected 3 times, waiting 1 s and 2 s like any failure
    assert attempts == 5  # nothing reached the database
    assert clock.sleeps[sleeps_before:] == [1.0, 2.0]
    assert caught.value.retry_after > 20  # a 30 s open time


def test_half_open_lets_every_caller_through_after_30_seconds() -> None:
    clock = FakeClock()
    policy = _naive(clock)
    attempts = 0

    async def fail() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("down")

    failing = policy(fail)
    for _ in range(2):
        with pytest.raises((ConnectionError, BreakerOpen)):
            asyncio.run(failing())
    assert policy.breaker.state is BreakerState.OPEN
    clock.advance(30.0)
    started = 0
    release = asyncio.Event()

    async def slow() -> str:
        nonlocal started
        started += 1
        await release.wait()
        return "ok"

    slow_guarded = policy(slow)

    async def many() -> list[str]:
        tasks = [asyncio.create_task(slow_guarded()) for _ in range(50)]
        while started < 50:
            await asyncio.sleep(0)
            if all(t.done() for t in tasks):
                break
        release.set()
        return await asyncio.gather(*tasks)

    assert asyncio.run(many()) == ["ok"] * 50
    assert started == 50  # every one of the 50 concurrent callers was a probe
    assert policy.breaker.state is BreakerState.CLOSED


def test_suture_mode_is_unchanged() -> None:
    guard = resilience(
        Settings(clock=FakeClock(), database_url="sqlite+aiosqlite:///x.db"),
        rand=random.Random(1),
    )
    assert not isinstance(guard.policy, NaivePolicy)
    assert guard.retry.jitter == "full"
