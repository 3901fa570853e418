"""SQLAlchemy within the request's deadline: pool checkout and statements bounded by it.

Install with the ``sql`` extra. Two pieces, each optional:

* **the pool checkout**: :class:`DeadlineQueuePool` (a blocking engine) and
  :class:`AsyncDeadlineQueuePool` (an asyncio engine) wait for a pooled
  connection no longer than the engine's ``pool_timeout`` nor than what
  remains of :func:`suture.deadline`; once it is spent they raise
  :class:`suture.DeadlineExceeded` without waiting. A checkout that times out
  is SQLAlchemy's ``TimeoutError``, which :func:`suture.classify.is_overload`
  calls *overload*: our own queue is full, the database did nothing wrong::

      engine = create_async_engine(url, poolclass=AsyncDeadlineQueuePool, pool_timeout=2)

* **the statement timeout**: :func:`bound_statements` makes every transaction
  begun inside a deadline start with ``SET LOCAL statement_timeout`` (PostgreSQL)
  set to what remains, so the *server* cancels a statement the caller can no
  longer wait for (and frees its connection and locks) instead of running it
  to the end for nobody. Other dialects are left alone (SQLite has no such
  setting; MySQL's ``max_execution_time`` covers only ``SELECT``). It costs one
  round trip per transaction, only when a deadline is set.
"""

from __future__ import annotations

import math
from typing import Any, Final

from suture.contrib import missing_extra

try:
    import sqlalchemy as sa
    from sqlalchemy import event
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.pool import AsyncAdaptedQueuePool, QueuePool
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra(__name__, "sql", _exc) from _exc

from suture.deadline import get_current
from suture.errors import DeadlineExceeded
from suture.timeouts import attempt_remaining

__all__ = ["AsyncDeadlineQueuePool", "DeadlineQueuePool", "bound_statements"]

_PENDING: Final = "suture.statement_timeout"
#: Never ask the server for less than this (a 0 would mean "no timeout").
_MIN_MS: Final = 1
#: The server is asked to stop this much before the deadline, so that its clean
#: cancel (an error, the transaction rolled back, the connection back in the pool)
#: comes before the caller's own cancellation of the task at the deadline, which
#: interrupts the driver mid-result.
_MARGIN: Final = 0.05
#: A pool checkout inside an attempt gives up this long before the attempt is cut.
_ATTEMPT_MARGIN: Final = 0.02


class _DeadlineTimeout:
    """``pool._timeout`` read through the request's deadline: the checkout waits the lesser.

    Inside an attempt under :class:`suture.Timeout` it also ends :data:`_ATTEMPT_MARGIN`
    before the attempt is cut: a full pool is then the pool's own ``TimeoutError``
    (overload: never retried, never counted by a breaker), not the attempt's timeout
    (a failure of the dependency, which did nothing wrong).
    """

    def __get__(self, pool: Any, owner: type | None = None) -> Any:
        if pool is None:
            return self
        base: float = pool._suture_timeout
        attempt = attempt_remaining()
        if attempt is not None:
            # A wait of 0 does not wait: the checkout is refused at once when nothing is idle.
            base = min(base, max(0.0, attempt - _ATTEMPT_MARGIN))
        request = get_current()
        if request is None:
            return base
        left = request.remaining()
        if left <= 0:
            raise DeadlineExceeded("pool checkout", request.budget)
        return left if left < base else base

    def __set__(self, pool: Any, value: float) -> None:
        pool._suture_timeout = value


class DeadlineQueuePool(QueuePool):
    """A :class:`sqlalchemy.pool.QueuePool` whose checkout wait respects :func:`suture.deadline`."""

    _timeout = _DeadlineTimeout()  # over QueuePool's plain float

    def recreate(self) -> QueuePool:
        new = super().recreate()
        new._timeout = self._suture_timeout  # type: ignore[attr-defined]  # the engine's own
        return new


class AsyncDeadlineQueuePool(AsyncAdaptedQueuePool):
    """The asyncio twin of :class:`DeadlineQueuePool` (for ``create_async_engine``)."""

    _timeout = _DeadlineTimeout()  # over QueuePool's plain float

    def recreate(self) -> QueuePool:
        new = super().recreate()
        new._timeout = self._suture_timeout  # type: ignore[attr-defined]  # the engine's own
        return new


def _on_begin(conn: Connection) -> None:
    # Set (or cleared) at every begin: a transaction that ran no statement leaves
    # nothing for the next one on this connection.
    if get_current() is not None:
        conn.info[_PENDING] = True
    else:
        conn.info.pop(_PENDING, None)


def _before_execute(
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> None:
    if not conn.info.pop(_PENDING, False):
        return
    request = get_current()
    if request is None:
        return
    left = request.remaining()
    if left <= 0:
        raise DeadlineExceeded("statement", request.budget)
    ms = max(_MIN_MS, math.floor((left - _MARGIN) * 1000))
    cursor.execute(f"SET LOCAL statement_timeout = {ms:d}")


#: PostgreSQL's query_canceled: a statement timeout, or a cancel request.
_QUERY_CANCELED: Final = "57014"
#: A cancellation this close to the deadline is the deadline's.
_SLACK: Final = 0.05


def _on_error(context: Any) -> None:
    """A statement the server cancelled at our deadline is :class:`DeadlineExceeded`.

    Not the driver's ``OperationalError``, which is transient: a retry would
    try again past the deadline and a breaker would count the database failed.
    """
    orig = getattr(context, "original_exception", None)
    if getattr(orig, "sqlstate", None) != _QUERY_CANCELED:
        return
    request = get_current()
    if request is not None and request.remaining() <= _MARGIN + _SLACK:
        raise DeadlineExceeded("statement cancelled by the server", request.budget) from orig


def bound_statements(engine: Engine | AsyncEngine) -> None:
    """Bound each statement of a transaction begun inside a deadline by what remains of it.

    PostgreSQL only (``SET LOCAL statement_timeout``, set once at the first
    statement of the transaction, undone by its end); other dialects are left
    alone. The server then cancels a statement that outlives the deadline
    (``57014 canceling statement due to statement timeout``).
    """
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    if not isinstance(sync_engine, sa.engine.Engine):
        raise TypeError(f"engine={engine!r}: expected a SQLAlchemy Engine or AsyncEngine")
    if sync_engine.dialect.name != "postgresql":
        return
    event.listen(sync_engine, "begin", _on_begin)
    event.listen(sync_engine, "before_cursor_execute", _before_execute)
    event.listen(sync_engine, "handle_error", _on_error)
