"""How the reference service runs: :class:`Settings` and the database URL's flavours.

The wiring (:mod:`suture.demo.app`) reads ``Settings.database_url`` once and
hands the engine, not the URL, to the rooms that need the database.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

from suture.clock import SYSTEM_CLOCK, Clock

__all__ = ["DEFAULT_CAPTURE_BATCH", "DEFAULT_DATABASE_URL", "Settings", "async_url"]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./suture-demo.db"
#: Spam capture's batch when the request names none: matches moved per guarded UPDATE
#: (``bench/spam_capture.py`` measures it against the founding spec's loop).
DEFAULT_CAPTURE_BATCH = 1_000


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
    #: The founding spec's design instead of suture's policy (for comparison in
    #: ``suture chaos``): 3 attempts, 1 s then 2 s waits without jitter, every error
    #: retried but a 4xx (an open breaker too), no retry budget, no per-attempt
    #: timeout, a breaker of 5 consecutive failures with an unbounded half-open and a
    #: 30 s open time; at the HTTP edge no request deadline and no adaptive limit. The
    #: retry and breaker settings above, ``request_deadline`` and ``limit_concurrency``
    #: are then not used.
    naive: bool = False
    #: Every API request's deadline in seconds (a client's ``X-Request-Timeout``
    #: may lower it): retry, timeout, pool checkout and statements all fit in it.
    request_deadline: float = 3.0
    #: API requests are admitted by an adaptive concurrency limit below what fills the
    #: pool: past it, they are shed at once (503 overloaded) instead of queueing.
    limit_concurrency: bool = True
    #: Pool monitor: sampling period and the WARNING / CRITICAL fractions.
    monitor_interval: float = 1.0
    warning: float = 0.7
    critical: float = 0.9
    #: Start background work (pool sampling, dashboard sampling); tests turn it off.
    background: bool = True
    #: Synthetic requests per second to the app's own API (``--traffic``), 0 for none:
    #: :class:`suture.demo.traffic.Traffic`, in-process, so the dashboard moves.
    traffic: float = 0.0
    clock: Clock = SYSTEM_CLOCK
    rand: random.Random | None = None
    #: Share the ``database`` breaker and its retry budget with every worker that
    #: names the same Redis and prefix (``redis://host:6379/0``); ``None``: this
    #: process's memory. An unreachable Redis degrades to local state, never an error.
    redis_url: str | None = None
    #: Key prefix in Redis: the breaker's keys are ``<prefix>breaker:{database}:*``,
    #: the retry budget's ``<prefix>budget:database``.
    redis_prefix: str = "suture-demo:"
    #: Whose OPEN this worker follows: ``"majority"`` of the live workers (the
    #: default), ``"any"`` worker, or at least ``"<k>"`` of them.
    redis_follow: str = "majority"
    #: Who may act (:mod:`suture.demo.auth`): the token of the manager named
    #: ``manager`` (``--token`` / ``SUTURE_DEMO_TOKEN``); with neither a token nor
    #: ``managers``, a fresh random one (``Service.console_token``).
    token: str | None = None
    #: Named managers: ``(name, sha256 hex of the token)`` (``--managers FILE``).
    managers: tuple[tuple[str, str], ...] = ()
    #: ``Host`` values answered besides the loopback names (``--allowed-host``).
    allowed_hosts: tuple[str, ...] = ()
    #: A login link works once, within this many seconds; a session lasts this long.
    login_link_ttl: float = 3600.0
    session_ttl: float = 12 * 3600.0
