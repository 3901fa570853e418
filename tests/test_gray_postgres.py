"""A slow PostgreSQL is overload, not an outage; a spent deadline cancels on the server (issue 11).

Real PostgreSQL; the latency is put inside the connection (``statement_latency``
through a SQLAlchemy event), so a slow statement holds its pooled connection
as a slow database does. No mock of the pool.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

import suture
from suture.classify import is_overload
from suture.contrib.sqlalchemy_chaos import slow_statements
from suture.contrib.sqlalchemy_deadline import (
    AsyncDeadlineQueuePool,
    DeadlineQueuePool,
    bound_statements,
)
from suture.testing import no_wait

POOL = 3


def _policy(name: str) -> tuple[suture.Policy, suture.CircuitBreaker]:
    breaker = suture.CircuitBreaker(name, failure_threshold=3, reset_timeout=30.0)
    retry = suture.Retry(attempts=3, initial_delay=0.05, max_delay=0.2, name=name)
    return suture.Policy(retry=retry, breaker=breaker, timeout=5.0), breaker


async def test_a_slow_database_does_not_open_the_breaker_and_sheds_the_excess(
    async_pg_url: str,
) -> None:
    engine = create_async_engine(
        async_pg_url, poolclass=AsyncDeadlineQueuePool, pool_size=POOL, max_overflow=0,
        pool_timeout=2.0,
    )  # fmt: skip
    chaos = suture.Chaos()
    slow_statements(engine, chaos, "db")
    bound_statements(engine)
    policy, breaker = _policy(f"slow-{uuid.uuid4().hex[:8]}")
    limiter = suture.AdaptiveLimiter(initial=POOL, min_limit=1, max_limit=POOL, timeout=2.0)

    @policy
    async def attempt() -> int:
        async with limiter.acquire(), engine.connect() as conn:
            return int(await conn.scalar(sa.text("SELECT 1")))

    outcomes: Counter[str] = Counter()
    shed_latency: list[float] = []

    async def request() -> None:
        start = time.perf_counter()
        try:
            async with suture.deadline(1.0):
                await attempt()
            outcomes["ok"] += 1
        except suture.DeadlineExceeded:
            outcomes["deadline"] += 1
        except Exception as exc:
            if not is_overload(exc):
                raise
            outcomes["overloaded"] += 1
            shed_latency.append(time.perf_counter() - start)

    try:
        async with engine.connect() as conn:  # warm the pool before the latency
            await conn.scalar(sa.text("SELECT 1"))
        chaos.configure("db", statement_latency=0.3)
        for _ in range(4):  # 4 waves of 3 x the pool at once
            await asyncio.gather(*(request() for _ in range(3 * POOL)))
        assert breaker.state is suture.BreakerState.CLOSED
        assert breaker.stats().total_failures == 0
        assert outcomes["ok"] >= 4 * POOL  # the pool's worth per wave got through
        assert outcomes["overloaded"] > 0  # the rest was shed...
        assert max(shed_latency) < 0.05  # ... at once, not after queueing
        chaos.clear()
        async with suture.deadline(1.0):
            assert await attempt() == 1  # healed: nothing to heal, nothing was open
    finally:
        await engine.dispose()


async def test_a_dead_database_still_opens_the_breaker() -> None:
    # Nothing listens on port 1: every connection is refused, an error of the dependency.
    engine = create_async_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/test",
        poolclass=AsyncDeadlineQueuePool, pool_size=POOL, max_overflow=0, pool_timeout=2.0,
    )  # fmt: skip
    policy, breaker = _policy(f"dead-{uuid.uuid4().hex[:8]}")

    @policy
    async def attempt() -> None:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    try:
        with no_wait():
            for _ in range(3):
                with pytest.raises((sa.exc.OperationalError, suture.BreakerOpen)):
                    await attempt()
        assert breaker.state is suture.BreakerState.OPEN
    finally:
        await engine.dispose()


def _running(pg_url: str, app: str) -> list[str]:
    probe = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    try:
        with probe.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT query FROM pg_stat_activity "
                    "WHERE application_name = :app AND state = 'active'"
                ),
                {"app": app},
            )
            return [r[0] for r in rows]
    finally:
        probe.dispose()


def test_a_spent_deadline_cancels_the_statement_on_the_server(pg_url: str) -> None:
    app = f"suture-i11-{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(
        pg_url, poolclass=DeadlineQueuePool, pool_size=1, max_overflow=0,
        connect_args={"application_name": app},
    )  # fmt: skip
    bound_statements(engine)
    try:
        start = time.monotonic()
        # A blocking call cannot be interrupted from Python: only the server can stop it.
        with suture.deadline(0.5), pytest.raises(suture.DeadlineExceeded), engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_sleep(10)"))
        assert time.monotonic() - start < 2.0
        assert _running(pg_url, app) == []  # cancelled there, not left running for nobody
        with engine.begin() as conn:  # outside any deadline: no statement timeout is set
            assert conn.scalar(sa.text("SHOW statement_timeout")) == "0"
            assert conn.scalar(sa.text("SELECT 2")) == 2
        with pytest.raises(suture.DeadlineExceeded, match="pool checkout"):
            with suture.deadline(0.01):
                time.sleep(0.02)
                engine.connect()
    finally:
        engine.dispose()


async def test_an_async_request_past_its_deadline_leaves_nothing_running(
    async_pg_url: str, pg_url: str
) -> None:
    app = f"suture-i11a-{uuid.uuid4().hex[:8]}"
    engine = create_async_engine(
        async_pg_url, poolclass=AsyncDeadlineQueuePool, pool_size=1, max_overflow=0,
        connect_args={"application_name": app},
    )  # fmt: skip
    bound_statements(engine)

    @suture.timeout(30.0)
    async def sleepy() -> None:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT pg_sleep(10)"))

    try:
        start = time.monotonic()
        with pytest.raises(suture.DeadlineExceeded):
            async with suture.deadline(0.5):
                await sleepy()
        assert time.monotonic() - start < 2.0
        for _ in range(20):  # the cancel request lands within a moment
            if not _running(pg_url, app):
                break
            await asyncio.sleep(0.05)
        assert _running(pg_url, app) == []
    finally:
        await engine.dispose()
