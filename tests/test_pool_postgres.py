"""PoolMonitor against the real PostgreSQL: server slots, an exhausted SQLAlchemy pool, leaks."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SAWarning
from sqlalchemy.ext.asyncio import create_async_engine

import suture
from suture import Overloaded, PoolMonitor, PressureLevel, Priority
from suture.classify import is_overload
from suture.contrib.sqlalchemy_deadline import AsyncDeadlineQueuePool
from suture.contrib.sqlalchemy_pool import PostgresServerSource, SQLAlchemyPoolSource
from suture.testing import FakeClock

pytestmark = pytest.mark.postgres


def _psycopg_conninfo(pg_url: str) -> dict[str, Any]:
    url = make_url(pg_url)
    return {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "dbname": url.database,
        "application_name": "suture-test-extra",
    }


def _wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    # Real threads doing real pool work: poll briefly, never assert on timing.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


@pytest.fixture
def small_engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(pg_url, pool_size=2, max_overflow=1, pool_timeout=0.3)
    yield engine
    engine.dispose()


# --- the server -------------------------------------------------------------------------


def test_server_source_reads_real_limits(pg_url: str) -> None:
    source = PostgresServerSource(pg_url)
    try:
        reading = source.read()
        with psycopg.connect(**_psycopg_conninfo(pg_url), autocommit=True) as conn:
            max_conn, su_reserved = conn.execute(
                "SELECT current_setting('max_connections')::int,"
                " current_setting('superuser_reserved_connections')::int"
            ).fetchone() or (0, 0)
        d = reading.details
        assert d["max_connections"] == max_conn
        assert d["superuser_reserved_connections"] == su_reserved
        assert reading.limit == max_conn - su_reserved - d["reserved_connections"]
        assert reading.current >= 1  # at least the source's own connection
        assert d["active"] >= 1  # the monitoring query itself
        assert source.connects == 1
    finally:
        source.close()


def test_server_usage_rises_by_the_connections_opened(pg_url: str) -> None:
    # Other test runs share the server: retry the measurement until no one else moved.
    n = 4
    source = PostgresServerSource(pg_url)
    try:
        deltas = []
        for _ in range(5):
            before = source.read().current
            extra = [psycopg.connect(**_psycopg_conninfo(pg_url)) for _ in range(n)]
            try:
                during = source.read().current
            finally:
                for conn in extra:
                    conn.close()
            deltas.append(during - before)
            if deltas[-1] == n:
                break
        assert n in deltas, deltas
    finally:
        source.close()


def test_server_source_reports_idle_in_transaction(pg_url: str) -> None:
    source = PostgresServerSource(pg_url)
    try:
        with psycopg.connect(**_psycopg_conninfo(pg_url)) as conn:
            conn.execute("SELECT 1")  # opens a transaction and leaves it idle
            for _ in range(50):
                d = source.read().details
                if d["idle_in_transaction"] >= 1 and d["oldest_idle_in_transaction"] > 0:
                    break
                time.sleep(0.02)
            assert d["idle_in_transaction"] >= 1
            assert d["oldest_idle_in_transaction"] > 0
            conn.rollback()
    finally:
        source.close()


def test_server_source_reconnects_after_its_connection_is_killed(pg_url: str) -> None:
    source = PostgresServerSource(pg_url, application_name="suture-test-reconnect")
    try:
        source.read()
        with psycopg.connect(**_psycopg_conninfo(pg_url), autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'suture-test-reconnect'"
            ).fetchone()
        assert killed == (1,)
        reading = source.read()  # the dead connection is replaced within this read
        assert reading.current >= 1
        assert source.reconnects == 1
        assert source.connects == 2
    finally:
        source.close()


def test_server_source_statement_timeout_is_set(pg_url: str) -> None:
    source = PostgresServerSource(pg_url, statement_timeout=0.25)
    try:
        source.read()
        value = source._conn.execute("SHOW statement_timeout").fetchone()
        assert value == ("250ms",)
    finally:
        source.close()


def test_server_source_from_engine_and_creator(pg_url: str, small_engine: sa.Engine) -> None:
    from_engine = PostgresServerSource(small_engine)
    from_creator = PostgresServerSource(lambda: psycopg.connect(**_psycopg_conninfo(pg_url)))
    try:
        assert from_engine.read().limit == from_creator.read().limit
        assert small_engine.pool.checkedout() == 0  # the app's pool was never used
    finally:
        from_engine.close()
        from_creator.close()


def test_server_source_rejects_other_databases() -> None:
    with pytest.raises(ValueError, match="postgresql"):
        PostgresServerSource("sqlite:///x.db")
    with pytest.raises(TypeError, match="target"):
        PostgresServerSource(42)  # type: ignore[arg-type]


# --- the application's pool -----------------------------------------------------------------


def test_exhausted_pool_is_critical_and_sheds_by_priority(
    pg_url: str, small_engine: sa.Engine
) -> None:
    app = SQLAlchemyPoolSource(small_engine, name="app")
    server = PostgresServerSource(pg_url, name="server")
    monitor = PoolMonitor([app, server], interval=0.02, recover_after=2, name="exhaust")
    held = [small_engine.connect() for _ in range(3)]  # pool_size 2 + max_overflow 1
    try:
        for conn in held:
            conn.execute(sa.text("SELECT 1"))
        before = monitor.sample()
        assert monitor.level is PressureLevel.CRITICAL
        assert (before.source, before.current, before.limit) == ("app", 3, 3)
        assert before.detail("server").error is None  # the server is still sampled
        assert before.detail("server").current >= 4

        # The background sampler keeps sampling while the pool is exhausted.
        monitor.start()
        assert _wait_until(
            lambda: monitor.usage is not None and monitor.usage.sampled_at > before.sampled_at
        )
        assert monitor.usage is not None
        assert monitor.usage.detail("server").error is None
        monitor.stop()
        assert not monitor.running

        for priority in (Priority.LOW, Priority.NORMAL):
            with pytest.raises(Overloaded) as info:
                monitor.admit(priority)
            assert info.value.level is PressureLevel.CRITICAL
        monitor.admit(Priority.CRITICAL)
        assert not monitor.can_accept()
    finally:
        for conn in held:
            conn.close()
    monitor.sample()
    assert monitor.level is PressureLevel.CRITICAL  # hysteresis: one sample is not enough
    monitor.sample()
    assert monitor.level is PressureLevel.NORMAL
    monitor.admit(Priority.LOW)
    monitor.close()  # closes both sources
    assert server._conn is None
    assert "connect" not in vars(small_engine.pool)


def test_waiters_and_checkout_timeouts_are_counted(small_engine: sa.Engine) -> None:
    source = SQLAlchemyPoolSource(small_engine)
    held = [small_engine.connect() for _ in range(3)]
    got: list[sa.Connection] = []
    errors: list[BaseException] = []

    def waiter(timeout_ok: bool) -> None:
        try:
            got.append(small_engine.connect())
        except sa.exc.TimeoutError as exc:
            errors.append(exc)

    try:
        # One caller times out (pool_timeout=0.3 s).
        t = threading.Thread(target=waiter, args=(True,))
        t.start()
        t.join(10)
        assert len(errors) == 1
        assert source.read().details["timeouts"] == 1

        # Another waits; it is seen waiting, then served when a connection comes back.
        small_engine.pool._timeout = 10.0  # type: ignore[attr-defined]
        t = threading.Thread(target=waiter, args=(False,))
        t.start()
        assert _wait_until(lambda: source.read().details["waiting"] == 1)
        held.pop().close()
        t.join(10)
        assert len(got) == 1
        d = source.read().details
        assert d["waiting"] == 0
        assert d["wait_samples"] == 4  # three immediate checkouts and the waiter
        assert d["wait_max"] >= d["wait_p99"] >= d["wait_p50"] > 0
        assert d["checked_out"] == 3
    finally:
        for conn in held + got:
            conn.close()
    d = source.read().details
    assert d["checked_out"] == 0
    assert d["checkouts"] == d["checkins"] == 4
    source.close()


def test_invalidated_connections_are_counted(small_engine: sa.Engine) -> None:
    source = SQLAlchemyPoolSource(small_engine)
    with small_engine.connect() as conn:
        conn.invalidate()
    assert source.read().details["invalidated"] == 1
    source.close()


def test_source_close_removes_listeners_and_wrapper(small_engine: sa.Engine) -> None:
    source = SQLAlchemyPoolSource(small_engine)
    assert "connect" in vars(small_engine.pool)
    source.close()
    assert "connect" not in vars(small_engine.pool)
    with small_engine.connect():
        pass
    assert source.read().details["checkouts"] == 0


def test_source_follows_the_pool_across_dispose(small_engine: sa.Engine) -> None:
    source = SQLAlchemyPoolSource(small_engine)
    small_engine.dispose()
    source.read()  # re-instruments the new pool
    with small_engine.connect():
        assert source.read().details["checked_out"] == 1
    source.close()


def test_unbounded_pool_needs_a_limit(pg_url: str) -> None:
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    try:
        with pytest.raises(ValueError, match="limit"):
            SQLAlchemyPoolSource(engine)
        assert SQLAlchemyPoolSource(engine, limit=7).read().limit == 7
    finally:
        engine.dispose()


async def test_async_engine_leak_by_cancelled_task_is_reported(async_pg_url: str) -> None:
    clock = FakeClock()
    engine = create_async_engine(async_pg_url, pool_size=2, max_overflow=0)
    source = SQLAlchemyPoolSource(engine, leak_after=5, clock=clock)
    leaked: list[Any] = []
    checked_out = asyncio.Event()

    async def handler() -> None:
        conn = await engine.connect()  # no context manager: the bug being caught
        leaked.append(conn)  # still referenced somewhere, as a leaked object often is
        checked_out.set()
        await asyncio.sleep(30)
        await conn.close()

    try:
        task = asyncio.create_task(handler())
        await asyncio.wait_for(checked_out.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        d = source.read().details
        assert (d["checked_out"], d["held_past_threshold"], d["leaked"]) == (1, 0, 0)
        clock.advance(6)
        reading = source.read()
        d = reading.details
        assert (d["checked_out"], d["held_past_threshold"], d["leaked"]) == (1, 1, 1)
        assert d["oldest_held"] == 6
        assert reading.current == 1
        assert source.read().details["leaked"] == 1  # counted once

        # Dropped by the garbage collector: SQLAlchemy detaches it from the pool.
        # (SQLAlchemy logs and warns "The garbage collector is trying to clean up ...".)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SAWarning)
            del task
            leaked.clear()
            for _ in range(3):
                gc.collect()
                await asyncio.sleep(0)
        d = source.read().details
        assert (d["checked_out"], d["detached"]) == (0, 1)
    finally:
        for conn in leaked:
            await conn.close()
        await engine.dispose()
    source.close()


async def test_async_engine_exhaustion_with_monitor(async_pg_url: str) -> None:
    engine = create_async_engine(async_pg_url, pool_size=1, max_overflow=1)
    source = SQLAlchemyPoolSource(engine)
    monitor = PoolMonitor(source, interval=0.02)
    try:
        await monitor.astart()
        a = await engine.connect()
        b = await engine.connect()
        for _ in range(500):
            if monitor.level is PressureLevel.CRITICAL:
                break
            await asyncio.sleep(0.01)
        assert monitor.level is PressureLevel.CRITICAL
        with pytest.raises(Overloaded):
            monitor.admit(Priority.NORMAL)
        await a.close()
        await b.close()
        for _ in range(500):
            if monitor.level is PressureLevel.NORMAL:
                break
            await asyncio.sleep(0.01)
        assert monitor.level is PressureLevel.NORMAL
    finally:
        await monitor.astop()
        await engine.dispose()
        source.close()
    assert not monitor.running


def test_server_source_over_a_connection_without_autocommit_sees_fresh_numbers(
    pg_url: str,
) -> None:
    # A creator whose connection has no autocommit switch (some DB-API drivers): the
    # reads used to share one open transaction, whose snapshot of pg_stat_activity
    # never changed (and which sat "idle in transaction" on the server).
    class NoAutocommit:
        def __init__(self) -> None:
            self._conn = psycopg.connect(**_psycopg_conninfo(pg_url))

        def cursor(self) -> Any:
            return self._conn.cursor()

        def commit(self) -> None:
            self._conn.commit()

        def rollback(self) -> None:
            self._conn.rollback()

        def close(self) -> None:
            self._conn.close()

        def status(self) -> Any:
            return self._conn.info.transaction_status

    made: list[NoAutocommit] = []

    def creator() -> NoAutocommit:
        made.append(NoAutocommit())
        return made[-1]

    n = 3
    source = PostgresServerSource(creator, statement_timeout=1.5)
    try:
        deltas = []
        for _ in range(5):  # other test runs share the server: retry until no one moved
            before = source.read().current
            extra = [psycopg.connect(**_psycopg_conninfo(pg_url)) for _ in range(n)]
            try:
                during = source.read().current
            finally:
                for conn in extra:
                    conn.close()
            deltas.append(during - before)
            if deltas[-1] == n:
                break
        assert n in deltas, deltas
        assert made[0].status() == psycopg.pq.TransactionStatus.IDLE  # no transaction left open
        cur = made[0].cursor()
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone() == ("1500ms",)  # the SET survived the rollbacks
        made[0].rollback()
    finally:
        source.close()


async def test_a_pool_exhausted_between_samples_is_shed_at_the_checkout(
    async_pg_url: str,
) -> None:
    # The sampler waits an hour between samples: only the checkout itself can tell.
    engine = create_async_engine(async_pg_url, pool_size=2, max_overflow=0)
    source = SQLAlchemyPoolSource(engine)
    monitor = PoolMonitor(source, interval=3600.0)
    try:
        await monitor.astart()
        for _ in range(500):  # the first sample (in a worker thread)
            if monitor.usage is not None:
                break
            await asyncio.sleep(0.01)
        assert monitor.level is PressureLevel.NORMAL
        a = await engine.connect()
        assert monitor.level is PressureLevel.NORMAL  # 1 of 2: below WARNING
        b = await engine.connect()
        assert monitor.level is PressureLevel.CRITICAL
        assert monitor.usage is not None and monitor.usage.current == 2
        with pytest.raises(Overloaded):
            monitor.admit(Priority.NORMAL)
        await a.close()
        await b.close()
        # A fall waits for the sampler (its recovery streak counts samples).
        assert monitor.level is PressureLevel.CRITICAL
    finally:
        await monitor.astop()
        await engine.dispose()
        source.close()
    assert not source._watchers  # stopping the monitor stops watching


async def test_a_full_pool_inside_an_attempt_is_overload_not_a_timeout(
    async_pg_url: str,
) -> None:
    # The pool's checkout wait is as long as the attempt's timeout: the pool now gives up
    # first, so a full pool is overload (not retried, not counted), not a slow database.
    engine = create_async_engine(
        async_pg_url, poolclass=AsyncDeadlineQueuePool, pool_size=1, max_overflow=0,
        pool_timeout=0.3,
    )  # fmt: skip
    breaker = suture.CircuitBreaker(f"full-{time.monotonic_ns()}", failure_threshold=1)
    retry = suture.Retry(attempts=3, initial_delay=0.01, max_delay=0.01)
    attempts = 0

    @suture.Policy(retry=retry, breaker=breaker, timeout=0.3)
    async def attempt() -> None:
        nonlocal attempts
        attempts += 1
        async with engine.connect() as conn:
            await conn.scalar(sa.text("SELECT 1"))

    held = await engine.connect()
    try:
        with pytest.raises(sa.exc.TimeoutError) as caught:  # the pool's own, not the attempt's
            await attempt()
        assert is_overload(caught.value)
        assert attempts == 1
        assert breaker.state is suture.BreakerState.CLOSED
    finally:
        await held.close()
        await engine.dispose()
