"""The naive mode: the founding spec's retry and breaker, and its HTTP edge (no request
deadline, no adaptive limit), counted attempt by attempt."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

import pytest

from demo_support import manager_client, outage_settings
from suture.breaker import BreakerState
from suture.contrib.starlette import DeadlineMiddleware, LimiterMiddleware
from suture.demo.app import Service, create_app
from suture.demo.config import Settings
from suture.demo.db import db_slots, resilience
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


def _edge_run(tmp_path: Any, *, naive: bool) -> tuple[Service, FakeClock, list[Any], set[type]]:
    """One API request against a database that fails every attempt, asking for a 1.5 s
    deadline: (the service, its clock, the answer's status and code, the middleware)."""
    clock = FakeClock(start=1000.0)
    settings = dataclasses.replace(
        outage_settings(tmp_path / "edge.db", clock, reset_timeout=30.0),
        naive=naive,
        retry_attempts=3,
        retry_initial_delay=1.0,
        retry_max_delay=2.0,
    )
    app = create_app(settings)
    middleware = {m.cls for m in app.user_middleware}
    with manager_client(app, raise_server_exceptions=False) as client:
        service = client.app.state.service  # type: ignore[attr-defined]
        assert client.post("/api/admin/chaos", json={"errorRate": 1.0}).status_code == 200
        r = client.get("/api/manager/assistance", headers={"X-Request-Timeout": "1.5"})
        answer = [r.status_code, r.json().get("code"), r.headers.get("Retry-After")]
    return service, clock, answer, middleware


def test_naive_edge_has_no_request_deadline_nor_adaptive_limit(tmp_path: Any) -> None:
    service, clock, answer, middleware = _edge_run(tmp_path, naive=True)
    assert DeadlineMiddleware not in middleware and LimiterMiddleware not in middleware
    assert service.limiter is None
    assert db_slots(service.settings) == service.settings.pool_size  # no limit: the pool
    # The client's 1.5 s is not a deadline here: the spec's retry makes its 3 attempts,
    # waiting 1 s then 2 s, as it would with nothing in front of it.
    assert service.chaos.snapshot()["database"]["injected"]["error"] == 3
    assert clock.sleeps[-2:] == [1.0, 2.0]
    assert answer[0] == 503  # the edge's error envelope is kept: a transient failure
    assert answer[1] == "unavailable" and answer[2] is not None  # with Retry-After


def test_suture_edge_keeps_its_deadline_and_limit(tmp_path: Any) -> None:
    service, _clock, answer, middleware = _edge_run(tmp_path, naive=False)
    assert {DeadlineMiddleware, LimiterMiddleware} <= middleware
    assert service.limiter is not None
    assert answer[0] == 503
