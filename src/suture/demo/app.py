"""The reference service's wiring: a FastAPI app on SQLAlchemy 2 that heals itself.

Every database call goes through one :class:`suture.Policy` (retry outside,
the ``database`` circuit breaker inside, a per-attempt timeout innermost;
:mod:`suture.demo.db`) and, for the API, through pool admission
(:class:`suture.PoolMonitor` over the engine's pool). Status changes are
guarded transitions (:func:`suture.contrib.sqlalchemy.atransition`): one
``UPDATE ... WHERE status IN (...) RETURNING id`` statement each, audited in
the same transaction. Faults come from :class:`suture.chaos.Chaos`, injected
right before each database attempt, so the healing is visible on the dashboard.

The rooms: :mod:`~suture.demo.config` (settings), :mod:`~suture.demo.db` (the
engine, the policy, the one attempt routine, start-up),
:mod:`~suture.demo.queue` and :mod:`~suture.demo.capture` (the domain),
:mod:`~suture.demo.dashboard`, :mod:`~suture.demo.shared` (Redis or memory),
:mod:`~suture.demo.routes` and :mod:`~suture.demo.traffic`. This module builds
them from :class:`Settings` (reading the database URL once) and runs them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from suture.chaos import AsyncConnectionHog, Chaos
from suture.contrib import starlette as suture_web
from suture.contrib.prometheus import PrometheusListener
from suture.contrib.sqlalchemy_pool import SQLAlchemyPoolSource
from suture.contrib.starlette_metrics import RequestMetricsMiddleware
from suture.demo.auth import LOOPBACK_HOSTS, AuthMiddleware, Managers, install_login
from suture.demo.capture import Messages, SpamCapture
from suture.demo.config import DEFAULT_CAPTURE_BATCH, DEFAULT_DATABASE_URL, Settings, async_url
from suture.demo.dashboard import Dashboard
from suture.demo.db import (
    DB,
    Database,
    db_limiter,
    make_engine,
    resilience,
    uses_limiter,
    utcnow,
)
from suture.demo.guard import SlowClientGuard
from suture.demo.models import MessageStatus
from suture.demo.queue import AssistanceQueue
from suture.demo.routes import MAX_CHAOS_LATENCY, install_routes
from suture.demo.shared import SharedState
from suture.demo.telemetry import RequestTelemetry, Telemetry
from suture.demo.traffic import Traffic
from suture.pool import PoolMonitor, Priority

if TYPE_CHECKING:  # the redis extra is imported only when Settings.redis_url is set
    import redis

    from suture.contrib.redis import RedisBreakerStore, RedisRetryBudget

# async_url lives in config; kept importable here, where the command line found it.
__all__ = ["DEFAULT_DATABASE_URL", "Service", "Settings", "async_url", "create_app"]

logger = logging.getLogger("suture.demo")

#: Request bodies past this size are a 413 before they are read (the largest legal
#: one, a 4000-character response, is well under it even with every character escaped).
MAX_BODY_BYTES = 64 * 1024


class Service:
    """Everything one running demo holds, built from ``settings``.

    The parts: ``engine`` and ``db`` (the policy's database), ``breaker``,
    ``retry_budget``, ``retry`` and ``policy``, ``monitor`` (the pool), ``chaos``
    and ``hog``, ``telemetry`` and ``prometheus``, ``shared`` (where the breaker
    and budget keep their state), and the domain: ``queue``, ``inbox`` and
    ``spam``. The methods the routes call delegate to those rooms.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = s = settings
        self.clock = s.clock
        rng = s.rand or random.Random()
        self.engine = make_engine(
            s.database_url, pool_size=s.pool_size, pool_timeout=s.pool_timeout, schema=s.schema
        )
        self.chaos = Chaos(rand=rng.random, clock=s.clock)
        self.shared = SharedState()
        if s.redis_url:
            self.shared = SharedState.connect(
                s.redis_url,
                prefix=s.redis_prefix,
                ratio=s.retry_budget_ratio,
                floor=s.retry_budget_floor,
                clock=s.clock,
                follow=s.redis_follow,
            )
        guard = resilience(s, rand=rng, store=self.shared.breaker_store, budget=self.shared.budget)
        self.breaker = guard.breaker
        self.retry_budget = guard.retry_budget
        self.retry = guard.retry
        self.policy = guard.policy
        self.telemetry = Telemetry(s.clock)
        # The founding spec (``naive``) had no concurrency limit at the edge.
        self.limiter = db_limiter(s) if uses_limiter(s) else None
        self.pool_source = SQLAlchemyPoolSource(self.engine, name="db-pool", clock=s.clock)
        self.monitor = PoolMonitor(
            self.pool_source,
            interval=s.monitor_interval,
            warning=s.warning,
            critical=s.critical,
            name="db-pool",
            clock=s.clock,
        )
        # Its own registry (several apps in one process never collide); subscribed
        # to the event bus only while the app runs. Everything the shipped Grafana
        # dashboard charts is here: tests/test_grafana_preview.py checks each panel
        # against a real Prometheus scraping the demo.
        self.prometheus = PrometheusListener(
            monitor=self.monitor,
            breakers=[self.breaker],
            pool_sources=[self.pool_source],
            limiters=[self.limiter] if self.limiter is not None else [],
            budgets=[self.retry_budget],
            registry_breakers=False,
            clock=s.clock,
            subscribe_now=False,
        )
        self.db = Database(
            self.engine,
            policy=self.policy,
            chaos=self.chaos,
            telemetry=self.telemetry,
            timed=self.prometheus.timed(DB),
        )
        self.hog = AsyncConnectionHog(self.engine.connect)
        self.board = Dashboard(
            breaker=self.breaker,
            monitor=self.monitor,
            telemetry=self.telemetry,
            chaos=self.chaos,
            shared=self.shared,
            clock=s.clock,
            show_chaos=s.chaos,
        )
        self.queue = AssistanceQueue(self.db, s.clock)
        self.inbox = Messages(self.db, s.clock)
        self.spam = SpamCapture(self.db, s.clock)
        #: The token of the manager named ``manager``: the given one, or a fresh random
        #: one when neither a token nor a managers file was given (None then).
        self.console_token = s.token
        if s.token is None and not s.managers:
            self.console_token = secrets.token_urlsafe(24)
        self.managers = Managers(
            s.managers,
            token=self.console_token,
            clock=s.clock,
            link_ttl=s.login_link_ttl,
            session_ttl=s.session_ttl,
        )
        #: The in-process synthetic traffic's own credential (never printed).
        self.traffic_token = self.managers.add_internal("traffic")
        self._tasks: list[asyncio.Task[None]] = []
        #: The targets this service injects faults on (the chaos admin refuses others).
        self.chaos_targets = frozenset({DB})

    # --- where the breaker and the budget keep their state ----------------------------

    @property
    def redis(self) -> redis.Redis | None:
        """The Redis client (only with ``redis_url``)."""
        return self.shared.redis

    @property
    def breaker_store(self) -> RedisBreakerStore | None:
        """The breaker's Redis store (only with ``redis_url``)."""
        return self.shared.breaker_store

    @property
    def shared_budget(self) -> RedisRetryBudget | None:
        """The retry budget shared through Redis (only with ``redis_url``)."""
        return self.shared.budget

    def state_store(self) -> dict[str, Any]:
        """Where the breaker and the retry budget keep their state, and whether it is shared.

        ``degraded`` is True while Redis does not answer: each worker then uses its
        own memory until it does again.
        """
        return self.shared.describe()

    def close_state_store(self) -> None:
        """Stop the Redis store's and budget's threads and close the client (idempotent)."""
        self.shared.close()

    def chaos_limits(self) -> dict[str, float]:
        """Ceilings of the chaos admin endpoint: added latency, and connections held."""
        return {
            "latency": MAX_CHAOS_LATENCY,
            "statement_latency": MAX_CHAOS_LATENCY,
            "hold": float(self.settings.pool_size),
        }

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        await self.db.create_schema(s.schema)
        if s.seed:
            await self.db.seed_if_empty(
                tasks=s.tasks,
                messages=s.messages,
                rules=s.rules,
                seed=s.seed_random,
                now=utcnow(self.clock),
            )
        self.telemetry.start()
        self.prometheus.subscribe()
        self.chaos.register_holder(DB, self.hog)
        if s.error_rate or s.latency or s.hold:
            self.chaos.configure(DB, error_rate=s.error_rate, latency=s.latency, hold=s.hold)
        self.monitor.sample()
        if s.background:
            await self.monitor.astart()
            loop = asyncio.get_running_loop()
            self._tasks.append(loop.create_task(self.board.sample_forever()))

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

    # --- what the routes call ----------------------------------------------------------

    async def assistance_queue(self, limit: int = 200) -> list[dict[str, Any]]:
        return await self.queue.waiting(limit)

    async def respond(self, task_id: int, response: str, actor: str | None) -> dict[str, Any]:
        return await self.queue.respond(task_id, response, actor)

    async def messages(self, status: MessageStatus, limit: int) -> tuple[list[dict[str, Any]], int]:
        return await self.inbox.listed(status, limit)

    async def move_message(
        self, message_id: int, target: MessageStatus, context: str, actor: str | None
    ) -> dict[str, Any]:
        return await self.inbox.move(message_id, target, context, actor)

    async def count_ready(self) -> int:
        return await self.spam.count_ready()

    async def capture_spam(self, batch_size: int = DEFAULT_CAPTURE_BATCH) -> dict[str, Any]:
        """Move the READY messages the spam rules match to SPAM_REVIEW (:class:`SpamCapture`)."""
        return await self.spam.capture(batch_size)

    def health(self) -> dict[str, Any]:
        return self.board.health()

    def dashboard(self) -> dict[str, Any]:
        return self.board.data()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The demo app. ``uvicorn --factory suture.demo.app:create_app`` serves it with defaults."""
    settings = settings or Settings()
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        traffic_task: asyncio.Task[None] | None = None
        if settings.traffic > 0 or settings.chaos:  # with --chaos: paused, for the dashboard
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
        docs_url=None,  # routes serve /api/docs with its assets: it works offline
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
        # In front of the database work: API requests past what the pool can serve
        # are shed at once (503 overloaded) instead of queueing for a connection.
        limiter=service.limiter,
        deadline=_deadlines(settings),
    )
    app.add_middleware(SlowClientGuard)  # a body that trickles in is a 408, not a held task
    # Outermost, so shed and rejected requests (503) are counted too.
    app.add_middleware(RequestTelemetry, telemetry=service.telemetry)
    app.add_middleware(RequestMetricsMiddleware, listener=service.prometheus)
    app.mount(
        "/static",
        StaticFiles(directory=str(resources.files("suture.demo").joinpath("static"))),
        name="static",
    )
    app.state.prometheus = service.prometheus
    install_routes(app, service)
    install_login(app, service.managers)
    # Outermost: the headers on every answer, refusals included; then who may ask.
    app.add_middleware(
        AuthMiddleware,
        managers=service.managers,
        allowed_hosts=(*LOOPBACK_HOSTS, *settings.allowed_hosts),
    )
    app.add_middleware(
        suture_web.SecurityHeadersMiddleware,
        # FastAPI's API explorer is inline script and a CDN's: its own, looser policy.
        policies={"/api/docs": None},
    )
    # The request id on every answer, the door's refusals included (install's own copy
    # sits inside the door; this one tags the id first, the inner one reuses it).
    app.add_middleware(suture_web.RequestIdMiddleware)
    return app


def _deadlines(settings: Settings) -> dict[str, float | None] | None:
    """Every API call within the request deadline; the dashboard and admin are answered
    from memory, the assets and docs are not work. The founding spec (``naive``) had
    no per-request deadline: none then."""
    if settings.naive:
        return None
    return {
        "/api": settings.request_deadline,
        # A batch over every ready message: its own, longer deadline.
        "/api/manager/spam/capture": max(30.0, settings.request_deadline),
        "/api/dashboard": None,
        "/api/admin": None,
        "/api/docs": None,
    }
