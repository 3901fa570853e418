"""Chaos inside the connection: a slow database, as SQLAlchemy sees one.

Install with the ``sql`` extra. :func:`slow_statements` adds the chaos
target's ``statement_latency`` to every statement of an engine, *while the
statement holds its connection* (a ``before_cursor_execute`` event): the
connection stays checked out longer, so the pool fills as it does when the
database itself is slow. Latency added before the call (``Chaos.latency``)
never holds a connection, so it cannot show that::

    chaos = Chaos()
    slow_statements(engine, chaos, "database")
    chaos.configure("database", statement_latency=0.3)   # every statement 300 ms slower

An :class:`~sqlalchemy.ext.asyncio.AsyncEngine` waits on the event loop
(``chaos.clock.asleep``), a blocking engine in its thread (``chaos.clock.sleep``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from suture.contrib import missing_extra

try:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.util import await_only
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra(__name__, "sql", _exc) from _exc

from suture.chaos import Chaos

__all__ = ["slow_statements"]


def slow_statements(engine: Engine | AsyncEngine, chaos: Chaos, target: str) -> Callable[[], None]:
    """Add ``chaos``'s ``statement_latency`` of ``target`` to each statement of ``engine``.

    Returns a function that removes the listener.
    """
    if isinstance(engine, AsyncEngine):
        sync_engine = engine.sync_engine
        asleep = chaos.clock.asleep

        def wait(seconds: float) -> None:
            await_only(asleep(seconds))  # inside SQLAlchemy's greenlet: the loop keeps running

    elif isinstance(engine, Engine):
        sync_engine = engine
        wait = chaos.clock.sleep
    else:
        raise TypeError(f"engine={engine!r}: expected a SQLAlchemy Engine or AsyncEngine")

    def before(conn: Any, cursor: Any, statement: Any, params: Any, ctx: Any, many: bool) -> None:
        delay = chaos.statement_delay(target)
        if delay > 0:
            wait(delay)

    event.listen(sync_engine, "before_cursor_execute", before)

    def remove() -> None:
        event.remove(sync_engine, "before_cursor_execute", before)

    return remove
