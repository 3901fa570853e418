"""Guarded status transitions in SQLAlchemy: the database enforces the table.

Install with the ``sql`` extra. A check in Python followed by a write is two
steps that two workers can interleave; :func:`transition` is one statement::

    UPDATE raw_message SET status = :target, <values>
     WHERE <your condition> AND status IN (<the states allowed to reach target>)
    RETURNING id

so the check and the write are one atomic step, and the keys it returns are
exactly the rows it changed (no re-read to count them). On PostgreSQL it is
still one statement, richer::

    WITH locked AS (SELECT id, status FROM raw_message
                     WHERE <condition> AND status IN (...) ORDER BY id FOR UPDATE),
         moved  AS (UPDATE raw_message SET ... FROM locked
                     WHERE raw_message.id = locked.id RETURNING id, locked.status),
         audit  AS (INSERT INTO transition_audit (...) SELECT ... FROM moved)
    SELECT id, status FROM moved

rows are locked in key order (two guarded transitions cannot deadlock each other),
each row's real previous state comes back with it, the audit rows are written
by the same statement, a key list travels as one array parameter and per-row
values as arrays joined in with ``unnest``. On SQLite (one writer at a time)
the previous states are read in the same transaction just before the update,
after a no-op ``UPDATE`` has taken the write lock (the driver begins a
transaction only at the first write, so a read alone would hold no lock).

Example (the reference service's spam capture)::

    import sqlalchemy as sa
    from suture import Transitions
    from suture.contrib.sqlalchemy import (
        TransitionAuditMixin, atransition, transition, guard, RecordNotFound,
    )

    MESSAGES = Transitions(
        {Msg.READY: {Msg.SPAM_REVIEW, Msg.PROMOTED},
         Msg.SPAM_REVIEW: {Msg.READY, Msg.SPAM_ARCHIVED}},
        name="raw_message",
    )

    class TransitionAudit(TransitionAuditMixin, Base):      # optional audit table
        __tablename__ = "transition_audit"

    # a batch, with per-row values set in the same statement:
    moved = transition(
        session, RawMessage, MESSAGES, Msg.SPAM_REVIEW,
        keys=matches.keys(),                                  # or where=..., or key=...
        values={"reviewed_at": sa.func.now()},                # same value for every row
        row_values={k: {"matched_patterns": p} for k, p in matches.items()},
        audit=TransitionAudit, context="spam-capture",
    )
    moved.count, moved.keys, moved.sources     # 2, (7, 9), {7: Msg.READY, 9: Msg.READY}
    session.commit()                            # transition() never commits

    # one row: when nothing changes, it says why
    try:
        await atransition(async_session, Task, TASKS, TaskStatus.DONE, key=task_id)
    except RecordNotFound:        # a subclass of InvalidTransition and LookupError
        ...                       # -> 404
    except InvalidTransition as e:
        ...                       # -> 409; e.source is the row's current state

    # a bug in the application cannot write an illegal state through the ORM:
    guard(Task.status, TASKS)     # task.status = DONE -> ...; flush raises InvalidTransition

:func:`transition` takes a ``Session`` or a ``Connection``; :func:`atransition`
an ``AsyncSession`` or an ``AsyncConnection``. Both run the same plan (built
once, by :class:`_Flow`); only the execution differs. Neither commits: the
update and its audit rows belong to the caller's transaction. A ``Session``'s
already loaded objects have the changed attributes expired, so they reload.

Databases without ``UPDATE ... RETURNING`` fall back to the row count (keys are
then selected first, ``FOR UPDATE`` where the database knows it).
A deadlock with the application's own multi-statement transactions is still
possible (as with any UPDATE): wrap the whole transaction in ``suture.retry``.
"""

from __future__ import annotations

from suture.contrib import missing_extra

try:
    import sqlalchemy
    import sqlalchemy.ext.asyncio  # noqa: F401  (needs greenlet: the 'sql' extra brings it)
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra(__name__, "sql", _exc) from _exc

from suture.contrib.sqlalchemy.audit import TransitionAuditMixin, audit_table
from suture.contrib.sqlalchemy.edges import TransitionOptions, atransition, transition
from suture.contrib.sqlalchemy.guard import guard
from suture.contrib.sqlalchemy.outcome import RecordNotFound, SameState, TransitionOutcome

# Pool sources live in their own module; re-exported here for one import path.
from suture.contrib.sqlalchemy_pool import PostgresServerSource, SQLAlchemyPoolSource

__all__ = [
    "PostgresServerSource",
    "RecordNotFound",
    "SQLAlchemyPoolSource",
    "SameState",
    "TransitionAuditMixin",
    "TransitionOptions",
    "TransitionOutcome",
    "atransition",
    "audit_table",
    "guard",
    "transition",
]
