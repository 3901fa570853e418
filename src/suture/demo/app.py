"""The reference service: a FastAPI app on SQLAlchemy 2 that heals itself.

Every database call goes through one :class:`suture.Policy` (retry outside,
the ``database`` circuit breaker inside, a per-attempt timeout innermost) and,
for the API, through pool admission (:class:`suture.PoolMonitor` over the
engine's pool). Status changes are guarded transitions
(:func:`suture.contrib.sqlalchemy.atransition`): one ``UPDATE ... WHERE status
IN (...) RETURNING id`` statement each, audited in the same transaction.
Faults come from :class:`suture.chaos.Chaos`, injected right before each
database attempt, so the healing is visible on the dashboard.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import sqlalchemy as sa
from fastapi import Body, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from suture.breaker import CircuitBreaker
from suture.budget import Budget, RetryBudget
from suture.chaos import AsyncConnectionHog, Chaos
from suture.clock import SYSTEM_CLOCK, Clock
from suture.contrib import starlette as suture_web
from suture.contrib.prometheus import PrometheusListener, metrics_response
from suture.contrib.sqlalchemy import atransition
from suture.contrib.sqlalchemy_pool import SQLAlchemyPoolSource
from suture.demo.models import (
    MANAGER_RESPONSE,
    MESSAGE_TRANSITIONS,
    Base,
    MessageStatus,
    RawMessage,
    SpamRule,
    Task,
    TaskStatus,
    TransitionAudit,
)
from suture.demo.seed import aseed, generate, rule_from_row
from suture.demo.spam import SpamMatcher, fingerprint
from suture.demo.telemetry import Telemetry
from suture.policy import Policy
from suture.pool import PoolMonitor, Priority
from suture.retrying import Retry

if TYPE_CHECKING:  # the redis extra is imported only when Settings.redis_url is set
    import redis

    from suture.contrib.redis import RedisBreakerStore, RedisRetryBudget

__all__ = ["DEFAULT_DATABASE_URL", "Service", "Settings", "create_app"]

logger = logging.getLogger("suture.demo")

T = TypeVar("T")
H = TypeVar("H")  # what a transaction hands to an operation: a session or a connection

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./suture-demo.db"
MAX_BATCH = 10_000
#: Ids are 64-bit integers in both databases: a larger one in a URL is a 422, not a 500.
MAX_ID = 2**63 - 1
#: The longest manager response, in characters.
MAX_RESPONSE = 4000
#: Request bodies past this size are a 413 before they are read (the largest legal
#: one, a 4000-character response, is well under it even with every character escaped).
MAX_BODY_BYTES = 64 * 1024
#: The chaos admin endpoint's ceiling on added latency, in seconds.
MAX_CHAOS_LATENCY = 60.0
#: Headers that mean a proxy relayed the request: the chaos admin then refuses it,
#: since the real client is not the loopback peer.
_FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-host")
#: Spam capture reads this many READY messages at a time (at least one batch).
READ_CHUNK = 2_000
#: The retry budget's bucket: at most this many earned retries saved up.
BUDGET_CAPACITY = 50
#: Guarded UPDATEs one capture runs at once (each on its own pooled connection).
WRITERS = 3
DB = "database"  # the breaker's and the chaos target's name
#: Socket timeouts of the demo's Redis client, in seconds: while Redis does not
#: answer, a breaker state change or a retry waits at most this long for it.
REDIS_TIMEOUT = 0.2


def _default_url() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def async_url(url: str) -> str:
    """The asyncio flavour of a database URL (``postgresql://`` -> ``postgresql+psycopg://``)."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    return url


@dataclass(frozen=True, kw_only=True)
class Settings:
    """How the demo runs. Every field has a sensible default for ``suture demo``."""

    database_url: str = field(default_factory=_default_url)
    #: PostgreSQL only: the schema holding the demo's tables (created if missing).
    schema: str | None = None
    #: Seed an empty database with this many rows (``seed=False`` to start empty).
    seed: bool = True
    tasks: int = 300
    messages: int = 10_000
    rules: int = 200
    seed_random: int = 7
    #: Connections in the engine's pool (no overflow, so the gauge is honest).
    pool_size: int = 10
    pool_timeout: float = 2.0
    #: Fault injection: the admin endpoint exists only with ``chaos=True``.
    chaos: bool = False
    error_rate: float = 0.0
    latency: float = 0.0
    hold: int = 0
    admin_hosts: tuple[str, ...] = ("127.0.0.1", "::1", "localhost")
    #: The resilience policy of every database call.
    retry_attempts: int = 5
    retry_initial_delay: float = 0.02
    retry_max_delay: float = 0.5
    #: Retries may add at most this share of the successful calls (plus a small floor
    #: per second): the server's retries cannot multiply an outage, even when the
    #: browser retries a 503 on top of them.
    retry_budget_ratio: float = 0.5
    retry_budget_floor: float = 5.0
    failure_threshold: int = 10
    reset_timeout: float = 10.0
    db_timeout: float | None = 5.0
    #: Pool monitor: sampling period and the WARNING / CRITICAL fractions.
    monitor_interval: float = 1.0
    warning: float = 0.7
    critical: float = 0.9
    #: Start background work (pool sampling, dashboard sampling); tests turn it off.
    background: bool = True
    #: Synthetic requests per second to the app's own API (``--traffic``), 0 for none:
    #: :class:`suture.demo.harness.Traffic`, in-process, so the dashboard moves.
    traffic: float = 0.0
    clock: Clock = SYSTEM_CLOCK
    rand: random.Random | None = None
    #: Share the ``database`` breaker and its retry budget with every worker that
    #: names the same Redis and prefix (``redis://host:6379/0``); ``None``: this
    #: process's memory. An unreachable Redis degrades to local state, never an error.
    redis_url: str | None = None
    #: Key prefix in Redis: the breaker lives at ``<prefix>breaker:database``, the
    #: retry budget at ``<prefix>budget:database``.
    redis_prefix: str = "suture-demo:"


def _now(clock: Clock) -> datetime:
    return datetime.fromtimestamp(clock.wall(), UTC)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; they were written in UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def _task_json(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "title": task.title,
        "type": task.type,
        "status": task.status.value,
        "assignee": task.assignee,
        "assistanceNotes": task.assistance_notes,
        "managerResponse": task.manager_response,
        "requestedAt": _iso(task.assistance_requested_at),
        "respondedAt": _iso(task.responded_at),
        "createdAt": _iso(task.created_at),
    }


def _message_json(msg: RawMessage) -> dict[str, Any]:
    return {
        "id": msg.id,
        "brand": msg.brand,
        "text": msg.text,
        "status": msg.status.value,
        "matchedPatterns": msg.matched_patterns.split("\n") if msg.matched_patterns else [],
        "createdAt": _iso(msg.created_at),
    }


class Service:
    """Everything one running demo holds: engine, policy, breaker, monitor, chaos, telemetry."""

    def __init__(self, settings: Settings) -> None:
        self.settings = s = settings
        self.clock = s.clock
        rng = s.rand or random.Random()
        self.engine = self._engine()
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.chaos = Chaos(rand=rng.random, clock=s.clock)
        #: Set only with ``redis_url``: the client, the breaker's store, the shared budget.
        self.redis: redis.Redis | None = None
        self.breaker_store: RedisBreakerStore | None = None
        self.shared_budget: RedisRetryBudget | None = None
        if s.redis_url:
            self.redis, self.breaker_store, self.shared_budget = self._share_through_redis(
                s.redis_url
            )
        self.breaker = CircuitBreaker(
            DB,
            failure_threshold=s.failure_threshold,
            reset_timeout=s.reset_timeout,
            clock=s.clock,
            store=self.breaker_store,
        )
        self.retry_budget: Budget = self.shared_budget or RetryBudget(
            ratio=s.retry_budget_ratio,
            capacity=BUDGET_CAPACITY,
            min_per_second=s.retry_budget_floor,
            name=DB,
            clock=s.clock,
        )
        self.retry = Retry(
            attempts=s.retry_attempts,
            initial_delay=s.retry_initial_delay,
            max_delay=s.retry_max_delay,
            clock=s.clock,
            rand=rng.random,
            name=DB,
            budget=self.retry_budget,
        )
        self.policy = Policy(retry=self.retry, breaker=self.breaker, timeout=s.db_timeout)
        self._guarded = self.policy(self._attempt)
        self._guarded_core = self.policy(self._attempt_core)
        self.pool_source = SQLAlchemyPoolSource(self.engine, name="db-pool", clock=s.clock)
        self.monitor = PoolMonitor(
            self.pool_source,
            interval=s.monitor_interval,
            warning=s.warning,
            critical=s.critical,
            name="db-pool",
            clock=s.clock,
        )
        self.telemetry = Telemetry(s.clock)
        # Its own registry (several apps in one process never collide); subscribed
        # to the event bus only while the app runs.
        self.prometheus = PrometheusListener(
            monitor=self.monitor, breakers=[self.breaker], subscribe_now=False
        )
        self.hog = AsyncConnectionHog(self.engine.connect)
        self._matcher: SpamMatcher | None = None
        self._tasks: list[asyncio.Task[None]] = []
        #: The targets this service injects faults on (the chaos admin refuses others).
        self.chaos_targets = frozenset({DB})

    def _share_through_redis(
        self, url: str
    ) -> tuple[redis.Redis, RedisBreakerStore, RedisRetryBudget]:
        """The Redis client, the breaker store and the shared budget (the ``redis`` extra)."""
        import redis

        from suture.contrib.redis import RedisBreakerStore, RedisRetryBudget

        s = self.settings
        client = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        # Polled by the store's own thread (started when the breaker subscribes).
        store = RedisBreakerStore(client, prefix=f"{s.redis_prefix}breaker:")
        budget = RedisRetryBudget(
            client,
            key=f"{s.redis_prefix}budget:{DB}",
            ratio=s.retry_budget_ratio,
            capacity=BUDGET_CAPACITY,
            min_per_second=s.retry_budget_floor,
            name=DB,
            clock=s.clock,
        )
        return client, store, budget

    def state_store(self) -> dict[str, Any]:
        """Where the breaker and the retry budget keep their state, and whether it is shared.

        ``degraded`` is True while Redis does not answer: each worker then uses its
        own memory until it does again.
        """
        if self.breaker_store is None or self.shared_budget is None:
            return {"backend": "memory", "degraded": False}
        return {
            "backend": "redis",
            "degraded": self.breaker_store.degraded or self.shared_budget.degraded,
            "prefix": self.settings.redis_prefix,
        }

    def close_state_store(self) -> None:
        """Stop the Redis store's and budget's threads and close the client (idempotent)."""
        if self.breaker_store is not None:
            self.breaker_store.close()
        if self.shared_budget is not None:
            self.shared_budget.close()
        if self.redis is not None:
            self.redis.close()

    def chaos_limits(self) -> dict[str, float]:
        """Ceilings of the chaos admin endpoint: added latency, and connections held."""
        return {"latency": MAX_CHAOS_LATENCY, "hold": float(self.settings.pool_size)}

    def _engine(self) -> AsyncEngine:
        s = self.settings
        url = sa.make_url(async_url(s.database_url))
        kwargs: dict[str, Any] = {
            "pool_size": s.pool_size,
            "max_overflow": 0,
            "pool_timeout": s.pool_timeout,
            "pool_pre_ping": False,
        }
        if url.get_backend_name() == "sqlite":
            if not url.database or url.database == ":memory:" or "mode=memory" in str(url):
                raise ValueError(
                    f"database_url={s.database_url!r}: an in-memory SQLite database lives in "
                    f"one connection and this service pools {s.pool_size}; use a file, "
                    "e.g. sqlite+aiosqlite:///./suture-demo.db"
                )
            kwargs["connect_args"] = {"timeout": 30}
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        elif s.schema:
            kwargs["connect_args"] = {"options": f"-c search_path={s.schema}"}
        engine = create_async_engine(url, **kwargs)
        if url.get_backend_name() == "sqlite":

            @event.listens_for(engine.sync_engine, "connect")
            def _pragmas(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

        return engine

    # --- the database edge -----------------------------------------------------------

    async def _attempt_with(
        self,
        begin: Callable[[], AbstractAsyncContextManager[H]],
        op: Callable[[H], Awaitable[T]],
    ) -> T:
        """One attempt: chaos first (as a flaky network would), then one transaction."""
        error: BaseException | None = None
        try:
            await self.chaos.ainject(DB)
            async with begin() as handle:
                return await op(handle)
        except Exception as exc:
            error = exc
            raise
        finally:
            self.telemetry.db_call(error)

    @asynccontextmanager
    async def _session_transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session

    async def _attempt(self, op: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """One attempt in an ORM session's transaction."""
        return await self._attempt_with(self._session_transaction, op)

    async def db(self, op: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``op`` in a transaction under the policy: retry, breaker, timeout."""
        return await self._guarded(op)

    async def _attempt_core(self, op: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """One attempt on a bare connection: no ORM session to set up (bulk work)."""
        return await self._attempt_with(self.engine.begin, op)

    async def db_core(self, op: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """:meth:`db` with a Core connection instead of a session."""
        return await self._guarded_core(op)

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        await self._create_schema()
        if s.seed:
            await self._seed_if_empty()
        self.telemetry.start()
        self.prometheus.subscribe()
        self.chaos.register_holder(DB, self.hog)
        if s.error_rate or s.latency or s.hold:
            self.chaos.configure(DB, error_rate=s.error_rate, latency=s.latency, hold=s.hold)
        self.monitor.sample()
        if s.background:
            await self.monitor.astart()
            self._tasks.append(asyncio.get_running_loop().create_task(self._sample_forever()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.monitor.running:
            await self.monitor.astop()
        await self.hog.aclose()
        self.telemetry.stop()
        self.prometheus.close()
        self.pool_source.close()
        # Joins the store's and budget's threads (at most a poll interval): off the loop.
        await asyncio.to_thread(self.close_state_store)
        await self.engine.dispose()

    async def _create_schema(self) -> None:
        s = self.settings
        async with self.engine.begin() as conn:
            if s.schema and conn.dialect.name == "postgresql":
                await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{s.schema}"'))
            await conn.run_sync(Base.metadata.create_all)

    async def _seed_if_empty(self) -> None:
        s = self.settings
        async with self.engine.begin() as conn:
            for table in (Task, RawMessage, SpamRule):
                if await conn.scalar(sa.select(sa.literal(1)).select_from(table).limit(1)):
                    return  # seeded before (or real data): never seed twice
            data = generate(
                tasks=s.tasks,
                messages=s.messages,
                rules=s.rules,
                seed=s.seed_random,
                now=_now(self.clock),
            )
            await aseed(conn, data)
        logger.info(
            "seeded %d tasks, %d messages, %d spam rules",
            len(data.tasks),
            len(data.messages),
            len(data.rules),
        )

    async def _sample_forever(self) -> None:
        while True:
            self.sample_dashboard()
            await self.clock.asleep(1.0)

    def sample_dashboard(self) -> None:
        usage = self.monitor.usage
        if usage is not None:
            self.telemetry.pool_sample(usage.fraction)

    # --- queries -----------------------------------------------------------------

    async def assistance_queue(self, limit: int = 200) -> list[dict[str, Any]]:
        async def op(session: AsyncSession) -> list[dict[str, Any]]:
            rows = await session.scalars(
                sa.select(Task)
                .where(Task.status == TaskStatus.ASSISTANCE_REQUIRED)
                .order_by(Task.assistance_requested_at, Task.id)
                .limit(limit)
            )
            return [_task_json(t) for t in rows]

        return await self.db(op)

    async def respond(self, task_id: int, response: str) -> dict[str, Any]:
        now = _now(self.clock)

        async def op(session: AsyncSession) -> dict[str, Any]:
            await atransition(
                session,
                Task,
                MANAGER_RESPONSE,  # only from ASSISTANCE_REQUIRED: answering an OPEN task is a 409
                TaskStatus.IN_PROGRESS,
                key=task_id,
                values={"manager_response": response, "responded_at": now, "updated_at": now},
                audit=TransitionAudit,
                context="manager-response",
                clock=self.clock,
                same_state="reject",  # answering twice is a 409, not a silent no-op
            )
            task = await session.get_one(Task, task_id)
            return _task_json(task)

        return await self.db(op)

    async def move_message(
        self, message_id: int, target: MessageStatus, context: str
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if target is MessageStatus.READY:
            values["matched_patterns"] = None

        async def op(session: AsyncSession) -> dict[str, Any]:
            await atransition(
                session,
                RawMessage,
                MESSAGE_TRANSITIONS,
                target,
                key=message_id,
                values=values,
                audit=TransitionAudit,
                context=context,
                clock=self.clock,
            )
            return _message_json(await session.get_one(RawMessage, message_id))

        return await self.db(op)

    async def messages(self, status: MessageStatus, limit: int) -> tuple[list[Any], int]:
        async def op(session: AsyncSession) -> tuple[list[Any], int]:
            rows = await session.scalars(
                sa.select(RawMessage)
                .where(RawMessage.status == status)
                .order_by(RawMessage.id)
                .limit(limit)
            )
            items = [_message_json(m) for m in rows]
            total = await session.scalar(
                sa.select(sa.func.count())
                .select_from(RawMessage)
                .where(RawMessage.status == status)
            )
            return items, int(total or 0)

        return await self.db(op)

    # --- spam capture --------------------------------------------------------------

    async def matcher(self) -> SpamMatcher:
        """The compiled matcher of the enabled rules; recompiled only when they change."""

        async def op(session: AsyncSession) -> list[Any]:
            result = await session.execute(
                sa.select(SpamRule.id, SpamRule.pattern, SpamRule.mode, SpamRule.brand).where(
                    SpamRule.enabled.is_(True)
                )
            )
            return list(result.all())

        rows = await self.db(op)
        rules = []
        for row in rows:
            try:
                rules.append(rule_from_row(row))
            except ValueError as exc:  # a broken rule must not stop capture
                logger.warning("spam rule %s skipped: %s", row.id, exc)
        current = self._matcher
        if current is None or current.fingerprint != fingerprint(rules):
            current = await asyncio.to_thread(SpamMatcher.compile, rules)
            self._matcher = current
        return current

    async def count_ready(self) -> int:
        async def op(session: AsyncSession) -> int:
            n = await session.scalar(
                sa.select(sa.func.count())
                .select_from(RawMessage)
                .where(RawMessage.status == MessageStatus.READY)
            )
            return int(n or 0)

        return await self.db(op)

    async def capture_spam(self, batch_size: int = 100) -> dict[str, Any]:
        """Match every READY message; move the matches to SPAM_REVIEW, one statement per batch.

        Batches are read by key (``id > cursor``), matched off the event loop,
        and written by one guarded ``UPDATE ... WHERE status IN ('READY')
        RETURNING id`` each: a message another capture moved first is simply
        not returned, so concurrent captures never count a message twice, and
        the counts come from ``RETURNING``, not from a re-read.

        The steps overlap: messages are read :data:`READ_CHUNK` at a time (the
        next chunk is read while this one is matched), and up to
        :data:`WRITERS` batch statements run at once; each read and each write
        is its own short transaction under the policy, and the guard in the
        ``UPDATE`` makes the split safe.
        """
        matcher = await self.matcher()
        by_id = {r.id: r.normalized for r in matcher.rules}  # single lines, joined by "\n"
        total = await self.count_ready()
        processed = updated = 0

        def match(rows: list[Any]) -> dict[int, dict[str, Any]]:
            found = matcher.match_batch([(row.brand, row.text) for row in rows])
            return {
                # two rules may share a pattern (say, one per brand): list it once
                row.id: {"matched_patterns": "\n".join(dict.fromkeys(by_id[i] for i in ids))}
                for row, ids in zip(rows, found, strict=True)
                if ids
            }

        chunk = max(batch_size, READ_CHUNK)
        writers = asyncio.Semaphore(WRITERS)

        def read(after: int) -> asyncio.Task[list[Any]]:
            return asyncio.ensure_future(
                self.db_core(functools.partial(self._read_batch, after, chunk))
            )

        async def write(hits: dict[int, dict[str, Any]]) -> int:
            async with writers:
                return await self.db_core(functools.partial(self._write_batch, hits))

        reading: asyncio.Task[list[Any]] | None = None
        writes: list[asyncio.Task[int]] = []
        try:
            reading = read(0)
            while rows := await reading:
                processed += len(rows)
                reading = read(rows[-1].id)  # prefetch while this chunk is matched
                # Matching many rows is CPU work: keep it off the event loop.
                hits = await asyncio.to_thread(match, rows) if len(rows) > 200 else match(rows)
                # One guarded statement per batch of ``batch_size`` messages.
                for i in range(0, len(rows), batch_size):
                    part = {r.id: hits[r.id] for r in rows[i : i + batch_size] if r.id in hits}
                    if part:
                        writes.append(asyncio.ensure_future(write(part)))
                for task in [t for t in writes if t.done()]:
                    updated += task.result()  # a failed write raises here
                    writes.remove(task)
            for task in writes:
                updated += await task
            writes.clear()
        finally:
            # On an error (say, the breaker opened) stop the rest; what moved stays moved.
            left: list[asyncio.Task[Any]] = [t for t in writes if not t.done()]
            if reading is not None and not reading.done():
                left.append(reading)
            for pending in left:
                pending.cancel()
            if left:
                await asyncio.gather(*left, return_exceptions=True)
        remaining = await self.count_ready()
        return {
            "success": True,
            "updatedCount": updated,
            "totalInQueue": total,
            "remainingInQueue": remaining,
            "processed": processed,
        }

    async def _read_batch(self, after: int, batch_size: int, conn: AsyncConnection) -> list[Any]:
        """The next READY messages after ``after``, by key."""
        result = await conn.execute(
            sa.select(RawMessage.id, RawMessage.brand, RawMessage.text)
            .where(RawMessage.status == MessageStatus.READY, RawMessage.id > after)
            .order_by(RawMessage.id)
            .limit(batch_size)
        )
        return list(result.all())

    async def _write_batch(self, hits: dict[int, dict[str, Any]], conn: AsyncConnection) -> int:
        """One guarded UPDATE (and its audit rows) for a batch's matches; the rows it moved."""
        outcome = await atransition(
            conn,
            RawMessage,
            MESSAGE_TRANSITIONS,
            MessageStatus.SPAM_REVIEW,
            row_values=hits,
            audit=TransitionAudit,
            context="spam-capture",
            clock=self.clock,
        )
        return outcome.count

    # --- health ------------------------------------------------------------------

    def _chaos_view(self) -> dict[str, Any] | None:
        if self.settings.chaos or self.chaos.active:
            return self.chaos.snapshot()
        return None

    def health(self) -> dict[str, Any]:
        report = suture_web.health_report(breakers=[self.breaker], monitors=[self.monitor])
        report["pool"] = report["pools"][self.monitor.name]
        report["chaos"] = self._chaos_view()
        report["stateStore"] = self.state_store()
        return report

    def dashboard(self) -> dict[str, Any]:
        self.sample_dashboard()
        stats = self.breaker.stats()
        usage = self.monitor.usage
        return {
            "success": True,
            "at": self.clock.wall(),
            "breakers": [stats.as_dict()],
            "pool": {
                "level": self.monitor.level.name,
                "fraction": usage.fraction if usage is not None else None,
                "current": usage.current if usage is not None else None,
                "limit": usage.limit if usage is not None else None,
                "stale": self.monitor.stale,
            },
            "rates": self.telemetry.rates(),
            "totals": dict(self.telemetry.totals),
            "series": self.telemetry.series(300),
            "recent": list(self.telemetry.recent)[:30],
            "chaos": self._chaos_view(),
            "stateStore": self.state_store(),
        }


def _static_text(name: str) -> str:
    return resources.files("suture.demo").joinpath("static", name).read_text("utf-8")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The demo app. ``uvicorn --factory suture.demo.app:create_app`` serves it with defaults."""
    settings = settings or Settings()
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        traffic_task: asyncio.Task[None] | None = None
        if settings.traffic > 0 or settings.chaos:  # with --chaos: paused, for the dashboard
            from suture.demo.harness import Traffic  # the harness imports this module

            app.state.traffic = traffic = Traffic(app, settings.traffic, clock=settings.clock)
            traffic_task = asyncio.get_running_loop().create_task(traffic.run())
        try:
            yield
        finally:
            if traffic_task is not None:
                traffic_task.cancel()
                with suppress(asyncio.CancelledError):
                    await traffic_task
            await service.stop()

    app = FastAPI(
        title="suture demo: manager assistance and spam capture",
        lifespan=lifespan,
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.service = service
    suture_web.install(
        app,
        admit=service.monitor.admit,
        priorities={
            "/api": Priority.NORMAL,
            "/api/manager/spam/capture": Priority.LOW,
            "/api/dashboard": suture_web.EXEMPT,
            "/api/admin": suture_web.EXEMPT,
            "/api/docs": suture_web.EXEMPT,
        },
        default_priority=suture_web.EXEMPT,
        max_body_bytes=MAX_BODY_BYTES,
    )
    app.mount(
        "/static",
        StaticFiles(directory=str(resources.files("suture.demo").joinpath("static"))),
        name="static",
    )
    app.state.prometheus = service.prometheus
    _routes(app, service, service.prometheus)
    return app


Id = Annotated[int, PathParam(ge=1, le=MAX_ID)]


def _invalid(field: str, problem: str) -> JSONResponse:
    """A ``422`` in the shape of :func:`suture.contrib.starlette.validation_error_handler`."""
    return JSONResponse(
        suture_web.error_body(
            f"The request is not valid: {field}: {problem}",
            code="invalid_request",
            fields=[{"field": field, "in": "body", "problem": problem}],
        ),
        status_code=422,
    )


def _routes(app: FastAPI, service: Service, prometheus: PrometheusListener) -> None:
    settings = service.settings

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def manager_page() -> HTMLResponse:
        return HTMLResponse(_static_text("index.html"))

    @app.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard_page() -> HTMLResponse:
        return HTMLResponse(_static_text("dashboard.html"))

    @app.get("/api/manager/assistance")
    async def assistance() -> dict[str, Any]:
        requests = await service.assistance_queue()
        return {"success": True, "requests": requests, "count": len(requests)}

    @app.post("/api/manager/assistance/{task_id}/respond", response_model=None)
    async def respond(
        task_id: Id,
        response: Annotated[str, Body(embed=True, min_length=1, max_length=MAX_RESPONSE)],
    ) -> dict[str, Any] | JSONResponse:
        text = response.strip()
        if not text:
            return _invalid("response", "String should have at least 1 character besides spaces")
        task = await service.respond(task_id, text)
        return {"success": True, "task": task}

    @app.post("/api/manager/spam/capture")
    async def capture(
        batch_size: Annotated[int, Query(alias="batchSize", ge=1, le=MAX_BATCH)] = 100,
    ) -> dict[str, Any]:
        return await service.capture_spam(batch_size)

    @app.get("/api/manager/spam")
    async def spam_queue(limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        items, total = await service.messages(MessageStatus.SPAM_REVIEW, limit)
        return {"success": True, "messages": items, "total": total}

    @app.get("/api/messages")
    async def messages(
        status: Annotated[MessageStatus, Query()] = MessageStatus.READY,
        limit: Annotated[int, Query(ge=1, le=500)] = 20,
    ) -> dict[str, Any]:
        items, total = await service.messages(status, limit)
        return {"success": True, "messages": items, "total": total}

    @app.post("/api/manager/spam/{message_id}/release")
    async def release(message_id: Id) -> dict[str, Any]:
        msg = await service.move_message(message_id, MessageStatus.READY, "spam-release")
        return {"success": True, "message": msg}

    @app.post("/api/manager/spam/{message_id}/archive")
    async def archive(message_id: Id) -> dict[str, Any]:
        msg = await service.move_message(message_id, MessageStatus.SPAM_ARCHIVED, "spam-archive")
        return {"success": True, "message": msg}

    @app.post("/api/messages/{message_id}/promote")
    async def promote(message_id: Id) -> dict[str, Any]:
        msg = await service.move_message(message_id, MessageStatus.PROMOTED, "promote")
        return {"success": True, "message": msg}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return service.health()

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        response: Response = metrics_response(prometheus.registry)
        return response

    @app.get("/api/dashboard")
    async def dashboard() -> dict[str, Any]:
        data = service.dashboard()
        data["traffic"] = _traffic_rate(app)
        return data

    if settings.chaos:

        @app.get("/api/admin/chaos")
        async def chaos_state(request: Request) -> Response:
            if not _local(request, settings):
                return _forbidden()
            return JSONResponse({"success": True, "chaos": service.chaos.snapshot()})

        @app.post("/api/admin/chaos")
        async def chaos_set(
            request: Request,
            target: Annotated[str, Body(embed=True)] = DB,
            error_rate: Annotated[float | None, Body(alias="errorRate", embed=True)] = None,
            latency: Annotated[float | None, Body(embed=True)] = None,
            hold: Annotated[int | None, Body(embed=True)] = None,
            clear: Annotated[bool, Body(embed=True)] = False,
            traffic: Annotated[float | None, Body(embed=True)] = None,
        ) -> Response:
            if not _local(request, settings):
                return _forbidden()
            if target not in service.chaos_targets:
                known = ", ".join(sorted(service.chaos_targets))
                return JSONResponse(
                    suture_web.error_body(
                        f"target: unknown; this service injects faults on: {known}",
                        code="bad_chaos_config",
                    ),
                    status_code=400,
                )
            limits = service.chaos_limits()
            for name, value in (("latency", latency), ("hold", hold)):
                if value is not None and value > limits[name]:
                    return JSONResponse(
                        suture_web.error_body(
                            f"{name}={value!r}: at most {limits[name]:g} here",
                            code="bad_chaos_config",
                        ),
                        status_code=400,
                    )
            try:
                if traffic is not None:  # synthetic requests per second (0 pauses)
                    app.state.traffic.set_rate(traffic)
                if clear:
                    service.chaos.clear(target)
                else:
                    service.chaos.configure(
                        target, error_rate=error_rate, latency=latency, hold=hold
                    )
            except (TypeError, ValueError) as exc:
                return JSONResponse(
                    suture_web.error_body(str(exc), code="bad_chaos_config"), status_code=400
                )
            await asyncio.sleep(0)
            return JSONResponse(
                {"success": True, "chaos": service.chaos.snapshot(), "traffic": _traffic_rate(app)}
            )


def _traffic_rate(app: FastAPI) -> float | None:
    """Synthetic requests per second (``--traffic``; 0 paused), None when it is not running."""
    traffic = getattr(app.state, "traffic", None)
    return float(traffic.rate) if traffic is not None else None


def _local(request: Request, settings: Settings) -> bool:
    """True for a request from this machine that no proxy relayed.

    The peer address is the TCP peer's (``suture demo`` runs uvicorn without
    proxy headers); a request carrying forwarding headers came through a proxy,
    so its real client is somewhere else, and is refused too.
    """
    if any(name in request.headers for name in _FORWARDING_HEADERS):
        return False
    host = request.client.host if request.client is not None else ""
    with suppress(ValueError):  # a dual-stack socket shows 127.0.0.1 as ::ffff:127.0.0.1
        mapped = ipaddress.ip_address(host)
        if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None:
            host = str(mapped.ipv4_mapped)
    return host in settings.admin_hosts


def _forbidden() -> JSONResponse:
    return JSONResponse(
        suture_web.error_body(
            "The chaos admin endpoint only answers local requests.", code="forbidden"
        ),
        status_code=403,
    )
