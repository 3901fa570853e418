# Over ~400 lines on purpose: two pool sources that share one reading shape and its counters.
"""Pool sources for SQLAlchemy engines and the PostgreSQL server.

* :class:`SQLAlchemyPoolSource` follows an engine's pool (sync or async) through
  its pool events: connections checked out against ``pool_size +
  max_overflow``, callers waiting for a connection, checkout wait time (p50,
  p99 over a window), checkout timeouts, invalidated connections, and
  connections held past a threshold (leaks, such as one left checked out by a
  cancelled task). Nothing polls: a sample only reads counters.
* :class:`PostgresServerSource` reads ``pg_stat_activity`` against what the
  server really allows (``max_connections`` less ``superuser_reserved_connections``
  and, from PostgreSQL 16, ``reserved_connections``), over its own single
  dedicated psycopg connection with a statement timeout. It never borrows from
  the application's pool, so it keeps working when that pool is exhausted, and
  it reconnects when its connection drops.

Both are :class:`suture.pool.PoolSource` objects for :class:`suture.PoolMonitor`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from suture.contrib import missing_extra

try:
    from sqlalchemy import event, exc
    from sqlalchemy.engine import URL, Engine, make_url
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.pool import Pool, QueuePool, SingletonThreadPool, StaticPool
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra(__name__, "sql", _exc) from _exc

from suture._config import Seconds, check_int, check_seconds
from suture.clock import SYSTEM_CLOCK, Clock
from suture.pool.sources import Reading

__all__ = ["PostgresServerSource", "SQLAlchemyPoolSource"]

logger = logging.getLogger("suture")

_POOL_EVENTS = (
    "connect",
    "checkout",
    "checkin",
    "detach",
    "invalidate",
    "soft_invalidate",
    "close",
)


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _pool_limit(pool: Pool) -> int | None:
    if isinstance(pool, QueuePool):  # AsyncAdaptedQueuePool is a QueuePool too
        overflow = int(getattr(pool, "_max_overflow", 0))
        return None if overflow < 0 else pool.size() + overflow
    if isinstance(pool, StaticPool):
        return 1
    if isinstance(pool, SingletonThreadPool):
        return int(getattr(pool, "size", 5))
    return None


class SQLAlchemyPoolSource:
    """Follows a SQLAlchemy engine's pool through its events.

    :param engine: an ``Engine`` or an ``AsyncEngine``.
    :param limit: the most connections the pool can hand out; by default
        ``pool_size + max_overflow`` of a ``QueuePool`` (required for pools
        without a bound, such as ``NullPool`` or ``max_overflow=-1``).
    :param window: seconds of checkout waits kept for the p50/p99.
    :param leak_after: a connection checked out for longer than this is reported as held
        past the threshold (a leak suspect).
    :param max_samples: the most waits kept in the window (memory bound).

    SQLAlchemy has no event before a caller starts waiting, so the source
    wraps the pool's public ``connect()`` on that pool instance (and only
    there) to time checkouts and count waiters and timeouts. :meth:`close`
    removes the listeners and the wrapper.
    """

    def __init__(
        self,
        engine: Engine | AsyncEngine,
        *,
        limit: int | None = None,
        window: Seconds = 60.0,
        leak_after: Seconds = 30.0,
        max_samples: int = 10_000,
        name: str = "sqlalchemy",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        if not isinstance(sync_engine, Engine):
            raise TypeError(f"engine={engine!r}: expected a SQLAlchemy Engine or AsyncEngine")
        self.engine = sync_engine
        self.name = name
        self.window = check_seconds("window", window, positive=True)
        self.leak_after = check_seconds("leak_after", leak_after, positive=True)
        self.max_samples = check_int("max_samples", max_samples, minimum=10)
        if limit is not None:
            limit = check_int("limit", limit, minimum=1)
        elif _pool_limit(sync_engine.pool) is None:
            raise ValueError(
                f"limit=None: the pool {type(sync_engine.pool).__name__} has no bound; "
                "pass limit= (an integer >= 1)"
            )
        self._limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[int, float] = {}  # id(connection record) -> checkout time
        self._leaked_ids: set[int] = set()
        self._waits: deque[tuple[float, float]] = deque(maxlen=self.max_samples)
        self._waiting = 0
        self._peak_waiting = 0
        self._counts = dict.fromkeys(
            (
                "checkouts",
                "checkins",
                "detached",
                "connects",
                "closes",
                "invalidated",
                "soft_invalidated",
                "timeouts",
                "leaked",
            ),
            0,
        )
        self._listening = False
        self._watchers: tuple[Callable[[float], object], ...] = ()
        self._pool: Pool | None = None
        self._listen()
        self._wrap(sync_engine.pool)

    # --- pool events ------------------------------------------------------------------

    def _listen(self) -> None:
        # Listening on the engine follows the pool across dispose()/recreate().
        for name in _POOL_EVENTS:
            event.listen(self.engine, name, getattr(self, f"_on_{name}"))
        self._listening = True

    def _on_connect(self, dbapi_connection: Any, record: Any) -> None:
        with self._lock:
            self._counts["connects"] += 1

    def _on_checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        now = self._clock.now()
        with self._lock:
            self._counts["checkouts"] += 1
            self._held[id(record)] = now
            held = len(self._held)
            watchers = self._watchers
        if watchers:
            fraction = held / self.limit
            for watcher in watchers:
                try:
                    watcher(fraction)
                except Exception:
                    logger.exception("pool source %s: a watcher failed", self.name)

    def watch(self, callback: Callable[[float], object]) -> Callable[[], None]:
        """Call ``callback(fraction)`` after every checkout; returns a remover.

        :class:`suture.PoolMonitor` watches while it samples, so a pool that runs out
        between two samples raises its level at the checkout that exhausts it. The
        callback runs on the thread that checked out (the event loop's, for an
        asyncio engine): it must be quick and should not raise (an error is logged).
        """
        if not callable(callback):
            raise TypeError(f"callback={callback!r}: expected a callable taking a fraction")
        with self._lock:
            self._watchers = (*self._watchers, callback)

        def remove() -> None:
            with self._lock:
                self._watchers = tuple(w for w in self._watchers if w is not callback)

        return remove

    def _on_checkin(self, dbapi_connection: Any, record: Any) -> None:
        with self._lock:
            if self._held.pop(id(record), None) is not None:
                self._counts["checkins"] += 1
            self._leaked_ids.discard(id(record))

    def _on_detach(self, dbapi_connection: Any, record: Any) -> None:
        # Explicit ``detach()``, or the garbage collector dropping a connection that was
        # never returned (an async engine cannot return it safely): it leaves the pool.
        with self._lock:
            self._counts["detached"] += 1
            self._held.pop(id(record), None)
            self._leaked_ids.discard(id(record))

    def _on_invalidate(self, dbapi_connection: Any, record: Any, exception: Any) -> None:
        with self._lock:
            self._counts["invalidated"] += 1

    def _on_soft_invalidate(self, dbapi_connection: Any, record: Any, exception: Any) -> None:
        with self._lock:
            self._counts["soft_invalidated"] += 1

    def _on_close(self, dbapi_connection: Any, record: Any) -> None:
        with self._lock:
            self._counts["closes"] += 1

    # --- waiting: the one thing pool events do not show -----------------------------------

    def _wrap(self, pool: Pool) -> None:
        if self._pool is pool:
            return
        self._pool = pool
        original = pool.connect
        if getattr(original, "__suture_source__", None) is self:
            return
        source = self
        clock = self._clock

        def connect() -> Any:
            started = clock.now()
            with source._lock:
                source._waiting += 1
                source._peak_waiting = max(source._peak_waiting, source._waiting)
            ok = False
            try:
                conn = original()
                ok = True
                return conn
            except exc.TimeoutError:
                with source._lock:
                    source._counts["timeouts"] += 1
                raise
            finally:
                ended = clock.now()
                with source._lock:
                    source._waiting -= 1
                    if ok:
                        source._waits.append((ended, ended - started))

        connect.__suture_source__ = source  # type: ignore[attr-defined]
        connect.__wrapped__ = original  # type: ignore[attr-defined]
        pool.connect = connect  # type: ignore[method-assign]

    # --- reading ---------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        if self._limit is not None:
            return self._limit
        bound = _pool_limit(self.engine.pool)
        return 1 if bound is None else bound

    def read(self) -> Reading:
        """The pool's counters now: no I/O and no call into the pool."""
        pool = self.engine.pool
        if pool is not self._pool:  # recreated by engine.dispose()
            self._wrap(pool)
        now = self._clock.now()
        horizon = now - self.window
        with self._lock:
            while self._waits and self._waits[0][0] < horizon:
                self._waits.popleft()
            waits = sorted(w for _, w in self._waits)
            held = list(self._held.items())
            for key, since in held:
                if now - since > self.leak_after and key not in self._leaked_ids:
                    self._leaked_ids.add(key)
                    self._counts["leaked"] += 1
            counts = dict(self._counts)
            waiting = self._waiting
            peak, self._peak_waiting = self._peak_waiting, self._waiting
        ages = [now - since for _, since in held]
        over = [a for a in ages if a > self.leak_after]
        details: dict[str, Any] = {
            "checked_out": len(held),
            "waiting": waiting,
            "peak_waiting": peak,
            "wait_p50": _percentile(waits, 0.50),
            "wait_p99": _percentile(waits, 0.99),
            "wait_max": waits[-1] if waits else 0.0,
            "wait_samples": len(waits),
            "held_past_threshold": len(over),
            "oldest_held": max(ages, default=0.0),
            "leak_after": self.leak_after,
            "pool": type(pool).__name__,
            **counts,
        }
        return Reading(len(held), self.limit, details)

    def close(self) -> None:
        """Stop listening and unwrap the pool's ``connect``."""
        if self._listening:
            for name in _POOL_EVENTS:
                event.remove(self.engine, name, getattr(self, f"_on_{name}"))
            self._listening = False
        pool = self._pool
        if pool is not None and getattr(pool.connect, "__suture_source__", None) is self:
            del pool.connect  # the instance attribute; the class method shows through again
        self._pool = None

    def __repr__(self) -> str:
        return f"SQLAlchemyPoolSource({self.engine.url!r}, name={self.name!r})"


_SERVER_QUERY = """
SELECT
    current_setting('max_connections')::int,
    current_setting('superuser_reserved_connections')::int,
    coalesce(current_setting('reserved_connections', true), '0')::int,
    count(*) FILTER (WHERE backend_type = 'client backend'),
    count(*) FILTER (WHERE backend_type = 'client backend' AND state = 'active'),
    count(*) FILTER (WHERE backend_type = 'client backend' AND state = 'idle'),
    count(*) FILTER (WHERE backend_type = 'client backend'
                     AND state IN ('idle in transaction', 'idle in transaction (aborted)')),
    coalesce(extract(epoch FROM max(clock_timestamp() - state_change) FILTER (
        WHERE state IN ('idle in transaction', 'idle in transaction (aborted)'))), 0)::float8,
    coalesce(extract(epoch FROM max(clock_timestamp() - xact_start) FILTER (
        WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())), 0)::float8,
    count(*) FILTER (WHERE backend_type = 'client backend' AND wait_event_type = 'Lock')
FROM pg_stat_activity
"""

_SERVER_FIELDS = (
    "active",
    "idle",
    "idle_in_transaction",
    "oldest_idle_in_transaction",
    "oldest_transaction",
    "waiting_on_locks",
)


def _conninfo(url: URL) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if url.host:
        params["host"] = url.host
    if url.port:
        params["port"] = url.port
    if url.username:
        params["user"] = url.username
    if url.password is not None:
        params["password"] = url.password
    if url.database:
        params["dbname"] = url.database
    for key, value in url.query.items():
        params[key] = value if isinstance(value, str) else value[-1]
    return params


class PostgresServerSource:
    """The PostgreSQL server's connection slots, read over one dedicated connection.

    :param target: a SQLAlchemy URL (``postgresql+psycopg://user@host/db``, as a
        string or ``URL``), an ``Engine``/``AsyncEngine`` (only its URL is used:
        the pool is never touched), or a ``creator`` callable returning a
        PEP 249 connection.
    :param statement_timeout: the server aborts the monitoring query after this long.
    :param connect_timeout: the most a (re)connection may take (libpq rounds up to 2 s).

    ``current`` is the number of client backends (this source's own
    connection included); ``limit`` is ``max_connections`` less the reserved
    slots. Superusers may use the reserved slots, so the fraction can pass 1.
    """

    def __init__(
        self,
        target: str | URL | Engine | AsyncEngine | Callable[[], Any],
        *,
        statement_timeout: Seconds = 1.0,
        connect_timeout: Seconds = 2.0,
        application_name: str = "suture-pool-monitor",
        name: str = "postgres",
    ) -> None:
        self.statement_timeout = check_seconds(
            "statement_timeout", statement_timeout, positive=True
        )
        self.connect_timeout = check_seconds("connect_timeout", connect_timeout, positive=True)
        self.application_name = application_name
        self.name = name
        self._creator: Callable[[], Any] | None = None
        self._params: dict[str, Any] = {}
        if isinstance(target, AsyncEngine):
            target = target.sync_engine
        if isinstance(target, Engine):
            target = target.url
        if isinstance(target, (str, URL)):
            url = make_url(target)
            if not url.get_backend_name().startswith("postgresql"):
                raise ValueError(f"target={target!r}: expected a postgresql:// URL")
            self._params = _conninfo(url)
            self._description = url.render_as_string(hide_password=True)
        elif callable(target):
            self._creator = target
            self._description = repr(target)
        else:
            raise TypeError(
                f"target={target!r}: expected a URL, an Engine or a callable returning a connection"
            )
        self._lock = threading.Lock()
        self._conn: Any = None
        self._reconnects = itertools.count()
        self.connects = 0

    def _connect(self) -> Any:
        timeout_ms = max(1, round(self.statement_timeout * 1000))
        if self._creator is not None:
            conn = self._creator()
            if hasattr(conn, "autocommit"):
                conn.autocommit = True
            cur = conn.cursor()
            try:
                cur.execute(f"SET statement_timeout = {timeout_ms}")
            finally:
                cur.close()
            if not getattr(conn, "autocommit", False):
                conn.commit()  # SET is transactional: keep it past the first rollback
            return conn
        import psycopg  # the sql extra; imported only when a server source connects

        params = dict(self._params)
        params.setdefault("application_name", self.application_name)
        params["connect_timeout"] = max(2, round(self.connect_timeout))
        options = params.pop("options", "")
        params["options"] = f"{options} -c statement_timeout={timeout_ms}".strip()
        return psycopg.connect(autocommit=True, **params)

    def _query(self) -> tuple[Any, ...]:
        if self._conn is None:
            self._conn = self._connect()
            self.connects += 1
        conn = self._conn
        cur = conn.cursor()
        try:
            cur.execute(_SERVER_QUERY)
            row = cur.fetchone()
        finally:
            cur.close()
            if not getattr(conn, "autocommit", False):
                # A connection that cannot autocommit would keep one transaction open
                # (idle in transaction) and PostgreSQL would answer every later read
                # from that transaction's snapshot of pg_stat_activity: end it.
                conn.rollback()
        if row is None:  # pragma: no cover - an aggregate always returns one row
            raise RuntimeError("pg_stat_activity returned no row")
        return tuple(row)

    def _healthy(self) -> bool:
        conn = self._conn
        if conn is None:
            return False
        return not (getattr(conn, "closed", False) or getattr(conn, "broken", False))

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing more to release
                conn.close()

    def read(self) -> Reading:
        """One query over the dedicated connection; a dropped connection is replaced once."""
        with self._lock:
            try:
                row = self._query()
            except Exception:
                if self._healthy():
                    # The connection is fine (the statement timed out, say): report it.
                    raise
                self._drop()
                next(self._reconnects)
                row = self._query()
        max_conn, su_reserved, reserved, in_use = (int(v) for v in row[:4])
        details: dict[str, Any] = dict(zip(_SERVER_FIELDS, row[4:], strict=True))
        for key in ("active", "idle", "idle_in_transaction", "waiting_on_locks"):
            details[key] = int(details[key])
        for key in ("oldest_idle_in_transaction", "oldest_transaction"):
            details[key] = float(details[key])
        details.update(
            max_connections=max_conn,
            superuser_reserved_connections=su_reserved,
            reserved_connections=reserved,
            reconnects=self.reconnects,
        )
        return Reading(in_use, max_conn - su_reserved - reserved, details)

    @property
    def reconnects(self) -> int:
        """How many times a failed read replaced the dedicated connection."""
        return int(repr(self._reconnects)[6:-1])

    def close(self) -> None:
        """Close the dedicated connection (the next read opens a new one)."""
        with self._lock:
            self._drop()

    def __repr__(self) -> str:
        return f"PostgresServerSource({self._description}, name={self.name!r})"
