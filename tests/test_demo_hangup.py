"""A database that accepts and never answers: each attempt ends at its timeout (real PostgreSQL).

The project's :class:`~suture.chaos.FaultProxy` in blackhole mode sits between
the demo's :class:`~suture.demo.db.Database` and PostgreSQL. Cancelled,
psycopg would send the server a cancel request (a new connection, which the
blackhole accepts and never answers) and wait up to 10 s for the query to end;
the attempt hangs up its connection instead: no cancel request is sent, the
failure is counted, the connection is replaced once the database is back.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
import sqlalchemy as sa

import suture
from suture.chaos import Chaos, FaultProxy
from suture.demo.db import Database, make_engine
from suture.demo.telemetry import Telemetry
from suture.testing import FakeClock

pytestmark = pytest.mark.postgres


async def _database(
    url: str, proxy: FaultProxy
) -> tuple[Database, suture.CircuitBreaker, sa.ext.asyncio.AsyncEngine]:
    tail = url.split("@", 1)[1].split("/", 1)[1]
    engine = make_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{tail}",
        pool_size=2,
        pool_timeout=1.0,
    )
    breaker = suture.CircuitBreaker(f"hangup-{uuid.uuid4().hex[:8]}", failure_threshold=2)
    policy = suture.Policy(breaker=breaker, timeout=0.3)
    database = Database(engine, policy=policy, chaos=Chaos(), telemetry=Telemetry(FakeClock()))
    return database, breaker, engine


async def _one(conn: sa.ext.asyncio.AsyncConnection) -> int:
    return int(await conn.scalar(sa.text("SELECT 1")) or 0)


async def _one_in_session(session: sa.ext.asyncio.AsyncSession) -> int:
    return int(await session.scalar(sa.text("SELECT 1")) or 0)


async def test_a_hanging_database_is_hung_up_on_at_the_attempt_timeout(
    async_pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with FaultProxy("127.0.0.1:5432") as proxy:
        database, breaker, engine = await _database(async_pg_url, proxy)
        try:
            both = asyncio.Barrier(2)

            async def together(conn: sa.ext.asyncio.AsyncConnection) -> int:
                await both.wait()  # two connections in the pool, each with a query done
                return await _one(conn)

            assert await asyncio.gather(database.run_core(together), database.run_core(together))
            assert proxy.stats().connections == 2
            await proxy.aconfigure(mode="blackhole")
            caplog.set_level(logging.WARNING, logger="psycopg")
            # Both pooled connections hang on their query: both attempts time out,
            # the breaker counts two failures and opens.
            with pytest.raises(TimeoutError):
                await database.run_core(_one)
            with pytest.raises(TimeoutError):
                await database.run(_one_in_session)
            assert breaker.state is suture.BreakerState.OPEN
            # No cancel request went out (it would be one more connection to the
            # proxy, answered by nobody), and psycopg did not wait on one.
            assert proxy.stats().connections == 2
            assert not [r for r in caplog.records if r.name == "psycopg"]
            telemetry = database.telemetry
            assert telemetry.totals["db_calls"] == 4
            # The abandoned transactions end by themselves (hung up), as failures.
            for _ in range(100):
                if telemetry.totals["db_failures"] == 2:
                    break
                await asyncio.sleep(0.01)  # the abandoned transaction sees its socket shut
            assert telemetry.totals["db_failures"] == 2
            await proxy.aclear()
            breaker.reset()
            # The hung-up connections were invalidated: new ones serve again.
            assert await database.run_core(_one) == 1
            assert await database.run(_one_in_session) == 1
        finally:
            await proxy.aclear()
            await engine.dispose()
