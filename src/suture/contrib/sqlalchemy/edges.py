"""The two edges of a guarded transition: a blocking one and an asyncio one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypedDict, Unpack

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from suture.clock import Clock
from suture.contrib.sqlalchemy._flow import Flow, Rows
from suture.contrib.sqlalchemy.outcome import S, SameState, TransitionOutcome
from suture.transitions import Transitions

__all__ = ["TransitionOptions", "atransition", "transition"]


class TransitionOptions(TypedDict, total=False):
    """The keyword options of :func:`transition` and :func:`atransition` (see there)."""

    key: Any
    keys: Iterable[Any] | None
    where: ColumnElement[bool] | None
    values: Mapping[Any, Any] | None
    row_values: Mapping[Any, Mapping[Any, Any]] | None
    audit: Any
    context: Any
    actor: str | None
    column: Any
    returning: bool | None
    clock: Clock
    same_state: SameState


def transition(
    db: Session | Connection,
    model: Any,
    transitions: Transitions[S],
    target: S,
    **options: Unpack[TransitionOptions],
) -> TransitionOutcome[S]:
    """Move the selected rows of ``model`` to ``target`` in one guarded statement.

    ``model`` is a mapped class or a ``Table`` whose ``column`` (default
    ``"status"``) holds the state. Select rows with ``key=`` (one row: when it
    does not change, raise :class:`RecordNotFound` or
    :class:`~suture.errors.InvalidTransition` with its current state; a row
    already in ``target`` is a valid no-op), ``keys=`` (a batch), and/or
    ``where=`` (any SQLAlchemy condition, ANDed). Only rows whose state may
    reach ``target`` change. ``values`` sets more columns in the same statement
    (values or SQL expressions); ``row_values`` sets per-row values,
    ``{key: {column: value}}`` (its keys are the batch when ``keys=`` is not
    given). ``audit`` (a table from :func:`audit_table` or a
    :class:`TransitionAuditMixin` model) receives one row per changed record,
    stamped with ``clock.wall()``, in the same transaction; ``context`` (an actor,
    a reason) goes with it and with the events. ``returning=False`` forces the
    row-count fallback. ``same_state="reject"`` makes a single row that is
    already in ``target`` an :class:`~suture.errors.InvalidTransition` too (for
    actions that must happen once, such as answering a request); the default,
    ``"ok"``, keeps the table's rule that staying put is valid. ``actor`` says
    who decided (a user's name, ``"capture"`` for a job; ``None``, the default,
    for the system): it goes into the audit rows' ``actor`` column and the
    events. Never commits.
    """
    flow = Flow(model, transitions, target, **options)
    if isinstance(db, Session):
        dialect = db.get_bind(mapper=flow.mapper, clause=flow.table).dialect
    elif isinstance(db, Connection):
        dialect = db.dialect
    else:
        raise TypeError(
            f"db={db!r}: expected a Session or a Connection (use atransition() for asyncio)"
        )
    steps = flow.run(dialect)
    outcome: TransitionOutcome[S]
    try:
        stmt, params = next(steps)
        while True:
            res: Any = db.execute(stmt, params)
            stmt, params = steps.send(_read(res))
    except StopIteration as stop:
        outcome = stop.value
    if isinstance(db, Session):
        flow.expire_loaded(db, outcome)
    return outcome


async def atransition(
    db: AsyncSession | AsyncConnection,
    model: Any,
    transitions: Transitions[S],
    target: S,
    **options: Unpack[TransitionOptions],
) -> TransitionOutcome[S]:
    """:func:`transition` for an ``AsyncSession`` or an ``AsyncConnection``."""
    flow = Flow(model, transitions, target, **options)
    if isinstance(db, AsyncSession):
        dialect = db.sync_session.get_bind(mapper=flow.mapper, clause=flow.table).dialect
    elif isinstance(db, AsyncConnection):
        dialect = db.dialect
    else:
        raise TypeError(
            f"db={db!r}: expected an AsyncSession or an AsyncConnection "
            "(use transition() for a Session or a Connection)"
        )
    steps = flow.run(dialect)
    outcome: TransitionOutcome[S]
    try:
        stmt, params = next(steps)
        while True:
            res: Any = await db.execute(stmt, params)
            stmt, params = steps.send(_read(res))
    except StopIteration as stop:
        outcome = stop.value
    if isinstance(db, AsyncSession):
        flow.expire_loaded(db.sync_session, outcome)
    return outcome


def _read(res: Any) -> Rows:
    rows = list(res.all()) if res.returns_rows else []
    return Rows(rows, getattr(res, "rowcount", -1))
