# Over ~400 lines on purpose: the engine, the policy and the one attempt routine (with its
# hang-up of a connection that never answers) are the one database edge, read together.
"""The database edge: the engine, the one policy every call goes through, start-up.

:func:`make_engine` is the only place that reads a database URL (the wiring
passes it once); everything else receives the engine or a :class:`Database`.
:func:`resilience` builds the ``database`` breaker, retry budget and retry into
one :class:`suture.Policy` (retry outside, breaker inside, a per-attempt
timeout innermost). :class:`Database` runs an operation in one transaction
under that policy: :meth:`Database.run` hands it an ORM session,
:meth:`Database.run_core` a bare connection, both through the one attempt
routine (chaos first, as a flaky network would, then the transaction). An
attempt the policy's timeout abandons hangs up its connection (:class:`_Line`):
a database that never answers costs an attempt its timeout, no more.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from suture._decorator import Decorator
from suture.admission import Priority
from suture.breaker import BreakerStore, CircuitBreaker
from suture.budget import Budget, RetryBudget
from suture.chaos import Chaos
from suture.clock import Clock
from suture.contrib.sqlalchemy_chaos import slow_statements
from suture.contrib.sqlalchemy_deadline import AsyncDeadlineQueuePool, bound_statements
from suture.demo.config import Settings, async_url
from suture.demo.models import Base, RawMessage, SpamRule, Task, TransitionAudit
from suture.demo.naive import NaivePolicy, naive_breaker, naive_retry
from suture.demo.seed import aseed, generate
from suture.demo.telemetry import Telemetry
from suture.limiter import AdaptiveLimiter
from suture.policy import Policy
from suture.retrying import Retry

__all__ = [
    "BUDGET_CAPACITY",
    "DB",
    "Database",
    "Resilience",
    "db_limiter",
    "db_slots",
    "iso",
    "make_engine",
    "resilience",
    "uses_limiter",
    "utcnow",
]

logger = logging.getLogger("suture.demo")

T = TypeVar("T")
H = TypeVar("H")  # what a transaction hands to an operation: a session or a connection

DB = "database"  # the breaker's and the chaos target's name
#: The retry budget's bucket: at most this many earned retries saved up.
BUDGET_CAPACITY = 50


def utcnow(clock: Clock) -> datetime:
    """The clock's wall time as an aware UTC datetime (what the tables store)."""
    return datetime.fromtimestamp(clock.wall(), UTC)


def iso(value: datetime | None) -> str | None:
    """A stored time in ISO 8601, with its UTC offset."""
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; they were written in UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def make_engine(
    database_url: str, *, pool_size: int, pool_timeout: float, schema: str | None = None
) -> AsyncEngine:
    """The demo's engine: a fixed pool (no overflow, so the gauge is honest).

    The pool's checkout waits no longer than the request's deadline
    (:class:`~suture.contrib.sqlalchemy_deadline.AsyncDeadlineQueuePool`), and on
    PostgreSQL each transaction's statements are bounded by it too
    (``SET LOCAL statement_timeout``). SQLite gets WAL and a busy timeout;
    PostgreSQL a ``search_path`` when ``schema`` is set. An in-memory SQLite
    database is refused by name: each pooled connection would see its own empty
    database.
    """
    url = sa.make_url(async_url(database_url))
    kwargs: dict[str, Any] = {
        "poolclass": AsyncDeadlineQueuePool,
        "pool_size": pool_size,
        "max_overflow": 0,
        "pool_timeout": pool_timeout,
        "pool_pre_ping": False,
    }
    sqlite = url.get_backend_name() == "sqlite"
    if sqlite:
        if not url.database or url.database == ":memory:" or "mode=memory" in str(url):
            raise ValueError(
                f"database_url={database_url!r}: an in-memory SQLite database lives in "
                f"one connection and this service pools {pool_size}; use a file, "
                "e.g. sqlite+aiosqlite:///./suture-demo.db"
            )
        kwargs["connect_args"] = {"timeout": 30}
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    elif schema:
        kwargs["connect_args"] = {"options": f"-c search_path={schema}"}
    engine = create_async_engine(url, **kwargs)
    if sqlite:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    bound_statements(engine)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@dataclass(frozen=True, slots=True)
class Resilience:
    """The ``database`` breaker, retry budget and retry, and the policy made of them."""

    breaker: CircuitBreaker
    retry_budget: Budget
    retry: Retry
    #: suture's :class:`Policy`, or the spec's design (:class:`NaivePolicy`) for comparison.
    policy: Decorator


def resilience(
    settings: Settings,
    *,
    rand: random.Random,
    store: BreakerStore | None = None,
    budget: Budget | None = None,
) -> Resilience:
    """The policy of every database call; ``store`` and ``budget`` share state (Redis).

    With ``settings.naive`` the founding spec's design instead (:mod:`suture.demo.naive`):
    its breaker keeps its state in this process, and the budget is only displayed.
    """
    s = settings
    if s.naive:
        naive_breaker_ = naive_breaker(DB, clock=s.clock)
        naive_retry_ = naive_retry(DB, clock=s.clock)
        shown_budget: Budget = budget or RetryBudget(
            ratio=s.retry_budget_ratio, capacity=BUDGET_CAPACITY, name=DB, clock=s.clock
        )
        return Resilience(
            breaker=naive_breaker_,
            retry_budget=shown_budget,
            retry=naive_retry_,
            policy=NaivePolicy(retry=naive_retry_, breaker=naive_breaker_),
        )
    breaker = CircuitBreaker(
        DB,
        failure_threshold=s.failure_threshold,
        reset_timeout=s.reset_timeout,
        clock=s.clock,
        store=store,
    )
    retry_budget: Budget = budget or RetryBudget(
        ratio=s.retry_budget_ratio,
        capacity=BUDGET_CAPACITY,
        min_per_second=s.retry_budget_floor,
        name=DB,
        clock=s.clock,
    )
    retry = Retry(
        attempts=s.retry_attempts,
        initial_delay=s.retry_initial_delay,
        max_delay=s.retry_max_delay,
        clock=s.clock,
        rand=rand.random,
        name=DB,
        budget=retry_budget,
    )
    policy = Policy(retry=retry, breaker=breaker, timeout=s.db_timeout)
    return Resilience(breaker=breaker, retry_budget=retry_budget, retry=retry, policy=policy)


def uses_limiter(settings: Settings) -> bool:
    """Whether :func:`db_limiter` stands in front of the database work (the naive mode
    has none: see :mod:`suture.demo.naive`)."""
    return settings.limit_concurrency and not settings.naive


def db_slots(settings: Settings) -> int:
    """Requests let work on the database at once: :func:`db_limiter`'s ceiling, else the pool."""
    s = settings
    if not uses_limiter(s):
        return s.pool_size
    return max(1, math.ceil(s.pool_size * s.critical) - 1)


def db_limiter(settings: Settings) -> AdaptiveLimiter:
    """The database work's concurrency limit: adaptive, and below what fills the pool.

    Requests past what the pool can serve would only queue for a connection
    (Little's law: in flight = throughput x latency; a slower database needs
    more in flight for the same throughput, which the pool cannot give), so
    they are shed at once. The ceiling is the largest count of connections in
    use that keeps the pool monitor below CRITICAL (which sheds every NORMAL
    request at the edge): the limiter's own saturation never trips it, a pool
    held by something else still does. A transaction slower than the
    per-attempt timeout, or failing transiently, lowers the limit (AIMD);
    successes raise it back.
    """
    s = settings
    ceiling = db_slots(s)
    return AdaptiveLimiter(
        initial=ceiling,
        min_limit=max(1, ceiling // 2),
        max_limit=ceiling,
        timeout=s.db_timeout or s.request_deadline,
        retry_after=1.0,
        name=DB,
        clock=s.clock,
    )


def _unchanged(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn


class _Line:
    """The connection an attempt holds, so that abandoning the attempt can hang up."""

    __slots__ = ("pgconn",)

    def __init__(self) -> None:
        self.pgconn: Any = None

    async def hold(self, conn: AsyncConnection) -> None:
        """Note the driver's connection (psycopg's; other drivers are cancelled as before)."""
        raw = await conn.get_raw_connection()
        self.pgconn = getattr(raw.driver_connection, "pgconn", None)

    def hang_up(self) -> bool:
        """Shut the connection's socket down; False when there is none to hang up.

        The socket is read from the driver now, so it is the connection's own (a
        closed connection has none). It is shut down through a copy of its descriptor
        (the driver still owns and closes it): the driver then reads the end of the
        stream and fails at once ("server closed the connection unexpectedly"),
        which SQLAlchemy takes for a disconnect and invalidates the connection.
        """
        try:
            fd = int(self.pgconn.socket) if self.pgconn is not None else -1
        except Exception:  # psycopg: "the connection is lost"
            return False
        if fd < 0:
            return False
        try:
            with socket.socket(fileno=os.dup(fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            return False
        return True


def _retrieved(task: asyncio.Future[Any]) -> None:
    """An abandoned attempt's end: its error was counted already; nobody awaits it."""
    if not task.cancelled():
        task.exception()


class Database:
    """Runs operations on ``engine`` in one transaction each, under ``policy``.

    Each attempt first asks ``chaos`` for a fault on :data:`DB` and reports to
    ``telemetry`` how it went. ``chaos``'s ``statement_latency`` is added inside
    the connection, to every statement. With a ``limiter``, each transaction is
    admitted by it first: past its limit the attempt raises
    :class:`suture.Overloaded` at once (never retried, never counted by the
    breaker) instead of waiting for a connection. (The demo admits whole API
    requests through :func:`db_limiter` at the HTTP edge instead: batch work such
    as a spam capture runs its writes concurrently within one request.)
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        policy: Decorator,
        chaos: Chaos,
        telemetry: Telemetry,
        limiter: AdaptiveLimiter | None = None,
        timed: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
    ) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.policy = policy
        self.chaos = chaos
        self.telemetry = telemetry
        self.limiter = limiter
        slow_statements(engine, chaos, DB)
        # ``timed`` (PrometheusListener.timed) sees each call as its caller waits for
        # it: retries and rejections included.
        wrap = timed if timed is not None else _unchanged
        self._guarded = wrap(policy(self._attempt))
        self._guarded_core = wrap(policy(self._attempt_core))

    async def run(self, op: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``op`` in a transaction under the policy: retry, breaker, timeout."""
        return cast(T, await self._guarded(op))

    async def run_core(self, op: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """:meth:`run` with a Core connection instead of a session (bulk work)."""
        return cast(T, await self._guarded_core(op))

    async def _attempt_with(
        self,
        begin: Callable[[_Line], AbstractAsyncContextManager[H]],
        op: Callable[[H], Awaitable[T]],
    ) -> T:
        """One attempt, cut at once when the policy's timeout cancels it.

        The transaction runs in a task of its own: a cancellation (the per-attempt
        timeout, the deadline) ends this attempt at once and *hangs up* the
        transaction's connection (its socket shut down), so that the transaction fails
        by itself within a loop turn instead of being cancelled. Cancelled, psycopg
        would send the server a cancel request and wait for the query to end, up to
        10 s, and a database that accepts and never answers (a partition, a hung
        server) answers neither. Hung up, the connection is invalidated, and the pool
        opens a new one when it is next needed. Before a connection is held
        (admission, pool checkout, connecting) a plain cancellation is enough.
        """
        self.telemetry.db_started()
        line = _Line()
        work = asyncio.ensure_future(self._transaction(begin, op, line))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            if work.done() or not line.hang_up():
                work.cancel()
            work.add_done_callback(_retrieved)
            raise

    async def _transaction(
        self,
        begin: Callable[[_Line], AbstractAsyncContextManager[H]],
        op: Callable[[H], Awaitable[T]],
        line: _Line,
    ) -> T:
        """Chaos first (as a flaky network would), then one transaction."""
        error: BaseException | None = None
        try:
            await self.chaos.ainject(DB)
            if self.limiter is None:
                async with begin(line) as handle:
                    return await op(handle)
            async with self.limiter.acquire(Priority.NORMAL), begin(line) as handle:
                return await op(handle)
        except Exception as exc:
            error = exc
            raise
        finally:
            self.telemetry.db_ended(error)

    @asynccontextmanager
    async def _session_transaction(self, line: _Line) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            await line.hold(await session.connection())
            yield session

    @asynccontextmanager
    async def _core_transaction(self, line: _Line) -> AsyncIterator[AsyncConnection]:
        async with self.engine.begin() as conn:
            await line.hold(conn)
            yield conn

    async def _attempt(self, op: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """One attempt in an ORM session's transaction."""
        return await self._attempt_with(self._session_transaction, op)

    async def _attempt_core(self, op: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """One attempt on a bare connection: no ORM session to set up."""
        return await self._attempt_with(self._core_transaction, op)

    # --- start-up (outside the policy: a database that is not there is a start-up error)

    async def create_schema(self, schema: str | None = None) -> None:
        """The demo's tables (in ``schema`` on PostgreSQL, created if missing)."""
        async with self.engine.begin() as conn:
            if schema and conn.dialect.name == "postgresql":
                await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await conn.run_sync(Base.metadata.create_all)
            await conn.run_sync(_add_actor_column)
            await conn.run_sync(_add_released_patterns_column)

    async def seed_if_empty(
        self, *, tasks: int, messages: int, rules: int, seed: int, now: datetime
    ) -> None:
        """Seed generated rows, unless any table holds a row already (never seed twice)."""
        async with self.engine.begin() as conn:
            for table in (Task, RawMessage, SpamRule):
                if await conn.scalar(sa.select(sa.literal(1)).select_from(table).limit(1)):
                    return  # seeded before (or real data)
            data = generate(tasks=tasks, messages=messages, rules=rules, seed=seed, now=now)
            await aseed(conn, data)
        logger.info(
            "seeded %d tasks, %d messages, %d spam rules",
            len(data.tasks),
            len(data.messages),
            len(data.rules),
        )


def _add_actor_column(conn: sa.Connection) -> None:
    """A database made before the audit's ``actor`` column gets it (``ALTER TABLE``).

    ``create_all`` creates missing tables, never missing columns: an older
    ``suture-demo.db`` (or PostgreSQL schema) has the audit table without it.
    """
    table = sa.Table(TransitionAudit.__tablename__, Base.metadata)
    columns = {c["name"] for c in sa.inspect(conn).get_columns(table.name, schema=table.schema)}
    if "actor" not in columns:
        name = conn.dialect.identifier_preparer.format_table(table)
        conn.execute(sa.text(f"ALTER TABLE {name} ADD COLUMN actor VARCHAR(200)"))
        logger.info("added the 'actor' column to %s", table.name)


def _add_released_patterns_column(conn: sa.Connection) -> None:
    """A database made before a release kept its decision gets the column (``ALTER TABLE``).

    Without it, capture's read would fail on an older ``suture-demo.db``; the
    messages released before have no decision to keep (NULL), as then.
    """
    table = sa.Table(RawMessage.__tablename__, Base.metadata)
    columns = {c["name"] for c in sa.inspect(conn).get_columns(table.name, schema=table.schema)}
    if "released_patterns" not in columns:
        name = conn.dialect.identifier_preparer.format_table(table)
        conn.execute(sa.text(f"ALTER TABLE {name} ADD COLUMN released_patterns TEXT"))
        logger.info("added the 'released_patterns' column to %s", table.name)
