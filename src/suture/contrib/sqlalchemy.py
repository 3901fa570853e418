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

import enum
from collections.abc import Callable, Generator, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from suture.contrib import missing_extra

try:
    import sqlalchemy as sa
    from sqlalchemy import event
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.engine import Connection, Dialect
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    from sqlalchemy.orm import Mapped, Mapper, Session, mapped_column
    from sqlalchemy.orm.attributes import InstrumentedAttribute
    from sqlalchemy.sql.elements import ColumnElement
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra(__name__, "sql", _exc) from _exc

from suture.clock import SYSTEM_CLOCK, Clock
from suture.errors import InvalidTransition
from suture.events import TransitionApplied, TransitionRejected, emit, logger
from suture.transitions import Transitions

__all__ = [
    "PostgresServerSource",
    "RecordNotFound",
    "SQLAlchemyPoolSource",
    "TransitionAuditMixin",
    "TransitionOutcome",
    "atransition",
    "audit_table",
    "guard",
    "transition",
]

S = TypeVar("S", bound=Hashable)

SameState = Literal["ok", "reject"]
"""What a single row already in the target state means: a no-op (``"ok"``) or an error."""


class RecordNotFound(InvalidTransition, LookupError):
    """A single-row transition found no row with that key (``source`` is ``None``)."""


@dataclass(frozen=True, slots=True)
class TransitionOutcome(Generic[S]):
    """What a guarded transition changed.

    ``keys`` are the primary keys of the rows moved to ``target`` (scalars, or
    tuples for a composite key), in the order the database returned them.
    ``sources`` maps each of them to the state it really had, when known (always
    on PostgreSQL and when audited; otherwise ``None``). ``requested`` is the
    number of keys asked for (``None`` for a ``where=`` condition alone).
    Truthy when something changed; ``len()`` is ``count``.
    """

    entity: str
    target: S
    keys: tuple[Any, ...]
    sources: Mapping[Any, S] | None = None
    requested: int | None = None
    count: int = field(default=-1)

    def __post_init__(self) -> None:
        if self.count < 0:
            object.__setattr__(self, "count", len(self.keys))

    @property
    def missed(self) -> int | None:
        """How many requested keys were not changed (missing, or in another state)."""
        return None if self.requested is None else self.requested - self.count

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0


# --- the audit table -----------------------------------------------------------------


def _audit_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("entity", sa.String(100), nullable=False),
        sa.Column("record_key", sa.String(200), nullable=False, index=True),
        sa.Column("source", sa.String(100), nullable=True),
        sa.Column("target", sa.String(100), nullable=False),
        sa.Column("context", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=True),
    ]


def audit_table(name: str, metadata: sa.MetaData, *, schema: str | None = None) -> sa.Table:
    """A Core table for audit rows: ``id, entity, record_key, source, target, context, at``.

    One row per changed record, written in the same transaction as the change.
    Within one ``record_key``, ``id`` order is the order the changes happened
    (each change holds the row's lock until its transaction ends).
    """
    return sa.Table(name, metadata, *_audit_columns(), schema=schema)


class TransitionAuditMixin:
    """Declarative mixin for an audit model: add ``__tablename__`` and your ``Base``.

    Columns as in :func:`audit_table`.
    """

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    entity: Mapped[str] = mapped_column(sa.String(100))
    record_key: Mapped[str] = mapped_column(sa.String(200), index=True)
    source: Mapped[str | None] = mapped_column(sa.String(100))
    target: Mapped[str] = mapped_column(sa.String(100))
    context: Mapped[str | None] = mapped_column(sa.Text())
    at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    actor: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)


_AUDIT_NAMES = ("entity", "record_key", "source", "target", "context", "at")
_ACTOR_LIMIT = 200  # the audit column's length


# --- the plan: statements built once, run by a sync or an async edge -----------------


@dataclass(slots=True)
class _Rows:
    rows: list[Sequence[Any]]
    rowcount: int


_Step = tuple[sa.Executable, Any]


def _table_of(model: Any, param: str) -> tuple[sa.Table, Mapper[Any] | None]:
    if isinstance(model, sa.Table):
        return model, None
    try:
        mapper = sa.inspect(model)
    except sa.exc.NoInspectionAvailable:
        mapper = None
    if isinstance(mapper, Mapper) and isinstance(mapper.local_table, sa.Table):
        return mapper.local_table, mapper
    raise TypeError(f"{param}={model!r}: expected a mapped class or a sqlalchemy Table")


def _column(table: sa.Table, mapper: Mapper[Any] | None, name: Any, param: str) -> sa.Column[Any]:
    if isinstance(name, InstrumentedAttribute):
        name = name.key
    if isinstance(name, sa.Column):
        if name.table is not table:
            raise ValueError(f"{param}={name!r}: not a column of table {table.name!r}")
        return name
    if not isinstance(name, str):
        raise TypeError(f"{param}={name!r}: expected a column name")
    if mapper is not None and name in mapper.column_attrs:
        col = mapper.column_attrs[name].columns[0]
        if isinstance(col, sa.Column) and col.table is table:
            return col
    if name in table.c:
        return table.c[name]
    raise ValueError(
        f"{param}={name!r}: table {table.name!r} has no such column "
        f"(columns: {', '.join(table.c.keys())})"
    )


def _label(state: object) -> str:
    if isinstance(state, enum.Enum):
        return str(state.value) if isinstance(state.value, str) else state.name
    return str(state)


class _Flow(Generic[S]):
    """Everything a guarded transition does except I/O: the statements and the reading
    of their results. :meth:`run` is a generator that yields ``(statement, params)``
    and receives :class:`_Rows`; the sync and async edges only execute."""

    def __init__(
        self,
        model: Any,
        transitions: Transitions[S],
        target: S,
        *,
        key: Any,
        keys: Iterable[Any] | None,
        where: ColumnElement[bool] | None,
        values: Mapping[Any, Any] | None,
        row_values: Mapping[Any, Mapping[Any, Any]] | None,
        audit: Any,
        context: Any,
        column: Any,
        returning: bool | None,
        clock: Clock,
        same_state: SameState = "ok",
        actor: str | None = None,
    ) -> None:
        if same_state not in ("ok", "reject"):
            raise ValueError(f"same_state={same_state!r}: must be 'ok' or 'reject'")
        self.same_state = same_state
        if not isinstance(transitions, Transitions):
            raise TypeError(f"transitions={transitions!r}: expected a suture.Transitions table")
        self.table, self.mapper = _table_of(model, "model")
        self.transitions = transitions
        try:
            self.target: S = transitions.state(target)
        except ValueError as exc:
            raise ValueError(f"target={target!r}: {exc}") from None
        self.status = _column(self.table, self.mapper, column, "column")
        self.pk: tuple[sa.Column[Any], ...] = tuple(self.table.primary_key.columns)
        if not self.pk:
            raise ValueError(f"model={model!r}: table {self.table.name!r} has no primary key")
        self.entity = self.table.name
        self.context = context
        self.clock = clock
        self.returning = returning
        self.key = key
        self.keys: list[Any] | None = None
        if keys is not None:
            if isinstance(keys, (str, bytes)):
                raise TypeError(f"keys={keys!r}: expected a collection of keys, not a string")
            self.keys = list(dict.fromkeys(keys))
        self.row_values = dict(row_values) if row_values is not None else None
        if self.row_values is not None and key is None and self.keys is None:
            self.keys = list(self.row_values)
        if key is None and self.keys is None and where is None:
            raise TypeError(
                "transition: give key=, keys= or where= (where=sqlalchemy.true() for every row)"
            )
        if key is not None and self.keys is not None:
            raise TypeError("transition: give key= (one row) or keys= (a batch), not both")
        self.where = where
        # The values set: status, then the caller's columns, then the per-row ones.
        self.sets: dict[sa.Column[Any], Any] = {self.status: self._to_db(self.target)}
        for name, value in (values or {}).items():
            col = _column(self.table, self.mapper, name, "values")
            if col is self.status:
                raise ValueError(f"values[{name!r}]: the status is set by target=")
            self.sets[col] = value
        # Per-row values: {column: [(key, value), ...]}; SQL built per database at run().
        self.per_col: dict[sa.Column[Any], list[tuple[Any, Any]]] = {}
        for k, row in (self.row_values or {}).items():
            for name, value in row.items():
                col = _column(self.table, self.mapper, name, "row_values")
                if col is self.status:
                    raise ValueError(f"row_values[{k!r}][{name!r}]: the status is set by target=")
                self.per_col.setdefault(col, []).append((k, value))
        if self.per_col and len(self.pk) > 1:
            for pairs in self.per_col.values():
                for k, _ in pairs:
                    self._key_is(k)  # a scalar given for a composite key fails here, early
        self.audit: sa.Table | None = None
        if audit is not None:
            self.audit, _ = _table_of(audit, "audit")
            missing = [n for n in _AUDIT_NAMES if n not in self.audit.c]
            if missing:
                raise ValueError(
                    f"audit={audit!r}: the audit table lacks column(s) {missing} "
                    "(use audit_table() or TransitionAuditMixin)"
                )
        if actor is not None:
            if not isinstance(actor, str) or not actor or len(actor) > _ACTOR_LIMIT:
                raise ValueError(
                    f"actor={actor!r}: expected a non-empty string of at most "
                    f"{_ACTOR_LIMIT} characters (or None for the system)"
                )
            if self.audit is not None and "actor" not in self.audit.c:
                raise ValueError(
                    f"actor={actor!r}: the audit table {self.audit.name!r} has no 'actor' "
                    "column (audit_table() and TransitionAuditMixin have one)"
                )
        self.actor = actor
        self.audit_names = _AUDIT_NAMES + (("actor",) if actor is not None else ())
        self.sources = transitions.sources_of(self.target)
        self.decoded: dict[Any, S | None] = {}

    # --- pieces ------------------------------------------------------------------------

    def _to_db(self, state: S) -> Any:
        col_type = self.status.type
        if isinstance(col_type, sa.Enum) and col_type.enum_class is not None:
            return state
        if isinstance(state, enum.Enum):
            return state.value
        return state

    def _key_is(self, key: Any) -> ColumnElement[bool]:
        if len(self.pk) == 1:
            same: ColumnElement[bool] = self.pk[0] == key
            return same
        if not isinstance(key, tuple) or len(key) != len(self.pk):
            raise ValueError(
                f"key {key!r}: table {self.entity!r} has a composite primary key of "
                f"{len(self.pk)} columns; pass a tuple"
            )
        return sa.and_(*(c == v for c, v in zip(self.pk, key, strict=True)))

    def _key_of(self, row: Sequence[Any]) -> Any:
        n = len(self.pk)
        return row[0] if n == 1 else tuple(row[:n])

    def _condition(self, mode: str) -> ColumnElement[bool]:
        parts: list[ColumnElement[bool]] = []
        if self.key is not None:
            parts.append(self._key_is(self.key))
        if self.keys is not None:
            if len(self.pk) == 1 and mode == "postgresql":
                # one array parameter instead of one parameter per key
                pk = self.pk[0]
                parts.append(pk == sa.any_(sa.literal(self.keys, postgresql.ARRAY(pk.type))))
            elif len(self.pk) == 1:
                parts.append(self.pk[0].in_(self.keys))
            else:
                parts.append(sa.tuple_(*self.pk).in_(self.keys))
        if self.where is not None:
            parts.append(self.where)
        parts.append(self.status.in_([self._to_db(s) for s in self.sources]))
        return sa.and_(*parts)

    def _arrayable(self, col: sa.Column[Any], pairs: list[tuple[Any, Any]]) -> bool:
        """Whether PostgreSQL can take this column's per-row values as one array."""
        return (
            len(self.pk) == 1
            and len(pairs) == len(self.row_values or ())
            and not isinstance(col.type, (sa.JSON, sa.ARRAY, sa.PickleType, sa.Enum))
            and not any(isinstance(v, sa.ClauseElement) for _, v in pairs)
        )

    def _case_sets(self, sets: dict[sa.Column[Any], Any], cols: list[sa.Column[Any]]) -> None:
        """Per-row values as ``CASE WHEN key = k THEN v ... ELSE <column> END`` (portable,
        but each row scans the WHENs: fine for the dozens, slow for thousands)."""
        for col in cols:
            whens = [
                (self._key_is(k), v if isinstance(v, sa.ClauseElement) else sa.literal(v, col.type))
                for k, v in self.per_col[col]
            ]
            sets[col] = sa.case(*whens, else_=sets.get(col, col))

    def _pg_statement(self, cond: ColumnElement[bool]) -> sa.Executable:
        """``WITH locked AS (SELECT ... ORDER BY key FOR UPDATE) UPDATE ... FROM locked
        RETURNING key, locked.status``; per-row values joined in from ``unnest`` of
        arrays; with an audit table, the audit ``INSERT`` in the same statement."""
        t, n = self.table, len(self.pk)
        sets = dict(self.sets)
        arrays = [c for c, pairs in self.per_col.items() if self._arrayable(c, pairs)]
        self._case_sets(sets, [c for c in self.per_col if c not in arrays])
        picked: list[Any] = [*self.pk, self.status]
        source: Any = t
        if arrays:
            pk = self.pk[0]
            ks = list(self.row_values or ())
            params = [sa.literal(ks, postgresql.ARRAY(pk.type))]
            names = [sa.column("k", pk.type)]
            for i, col in enumerate(arrays):
                by_key = dict(self.per_col[col])
                params.append(sa.literal([by_key[k] for k in ks], postgresql.ARRAY(col.type)))
                names.append(sa.column(f"v{i}", col.type))
            vals = sa.func.unnest(*params).table_valued(*names).render_derived(name="suture_values")
            source = t.outerjoin(vals, vals.c.k == pk)
            picked.append(vals.c.k.label("suture_k"))
            picked.extend(vals.c[f"v{i}"].label(f"suture_v{i}") for i in range(len(arrays)))
        locked = (
            sa.select(*picked)
            .select_from(source)
            .where(cond)
            .order_by(*self.pk)
            .with_for_update(of=t)
            .cte("suture_locked")
        )
        lc = list(locked.c)
        for i, col in enumerate(arrays):
            sets[col] = sa.case((lc[n + 1].is_(None), sets.get(col, col)), else_=lc[n + 2 + i])
        update = (
            sa.update(t)
            .where(*(pk == c for pk, c in zip(self.pk, lc[:n], strict=True)))
            .values(sets)
            .returning(*self.pk, lc[n].label("suture_source"))
        )
        if self.audit is None:
            return update
        moved = update.cte("suture_moved")
        mc = list(moved.c)
        if n == 1:
            key_text: Any = sa.cast(mc[0], sa.String)
        else:
            key_text = sa.func.concat_ws("/", *(sa.cast(c, sa.String) for c in mc[:n]))
        # the audit holds labels (an enum's value), whatever the column stores
        labels = [
            (mc[n] == sa.literal(self._to_db(s), self.status.type), _label(s)) for s in self.sources
        ]
        src_text = sa.case(*labels, else_=sa.cast(mc[n], sa.String))
        ctx = None if self.context is None else str(self.context)
        at = datetime.fromtimestamp(self.clock.wall(), UTC)
        insert = (
            sa.insert(self.audit)
            .from_select(
                list(self.audit_names),
                sa.select(
                    sa.literal(self.entity, sa.String),
                    key_text,
                    src_text,
                    sa.literal(_label(self.target), sa.String),
                    sa.literal(ctx, sa.Text),
                    sa.literal(at, sa.DateTime(timezone=True)),
                    *(() if self.actor is None else (sa.literal(self.actor, sa.String),)),
                ).select_from(moved),
            )
            .cte("suture_audit")
        )
        return sa.select(*mc).add_cte(insert)

    def _mode(self, dialect: Dialect) -> str:
        supports = bool(getattr(dialect, "update_returning", False))
        if self.returning is True and not supports:
            raise ValueError(
                f"returning=True: dialect {dialect.name!r} has no UPDATE ... RETURNING"
            )
        if self.returning is False or not supports:
            return "rowcount"
        return "postgresql" if dialect.name == "postgresql" else "returning"

    def _state_of(self, raw: Any) -> S | None:
        try:
            return self.decoded[raw]  # a handful of states, thousands of rows
        except KeyError:
            pass
        state: S | None
        try:
            state = self.transitions.state(raw)
        except ValueError:
            logger.warning(
                "transition %s: unknown state %r read from the database", self.entity, raw
            )
            state = None
        self.decoded[raw] = state
        return state

    def _write_lock(self) -> sa.Executable:
        """An ``UPDATE`` that changes nothing, to take SQLite's write lock.

        SQLite has no ``FOR UPDATE``, and its Python driver begins a transaction
        only at the first write: a ``SELECT`` before it holds no lock, so another
        connection could change a row between the read of the previous states
        and the guarded ``UPDATE`` (which would then record a source the row no
        longer had). Once this statement has run, this transaction is the only
        writer until it ends; a connection whose snapshot is already stale gets
        "database is locked" instead (the caller retries the transaction).
        """
        return sa.update(self.table).where(sa.false()).values({self.status: self.status})

    # --- the flow ----------------------------------------------------------------------

    def run(self, dialect: Dialect) -> Generator[_Step, _Rows, TransitionOutcome[S]]:
        requested = 1 if self.key is not None else None if self.keys is None else len(self.keys)
        audited = False
        if (self.keys is not None and not self.keys) or not self.sources:
            keys: tuple[Any, ...] = ()
            sources: dict[Any, S] | None = {}
        else:
            mode = self._mode(dialect)
            cond = self._condition(mode)
            sources = None
            if mode == "postgresql":
                got = yield (self._pg_statement(cond), None)
                n = len(self.pk)
                keys = tuple(self._key_of(r) for r in got.rows)
                sources = {}
                for r in got.rows:
                    state = self._state_of(r[n])
                    if state is not None:
                        sources[self._key_of(r)] = state
                audited = self.audit is not None
            elif mode == "returning":
                if self.audit is not None:
                    # The previous states are read first: take the write lock before
                    # reading, so no other writer changes a row between the two.
                    if dialect.name == "sqlite":
                        yield (self._write_lock(), None)
                    got = yield (sa.select(*self.pk, self.status).where(cond), None)
                    n = len(self.pk)
                    sources = {}
                    for r in got.rows:
                        state = self._state_of(r[n])
                        if state is not None:
                            sources[self._key_of(r)] = state
                    if not got.rows:
                        return (yield from self._finish((), sources, requested))
                sets = dict(self.sets)
                self._case_sets(sets, list(self.per_col))
                stmt = sa.update(self.table).where(cond).values(sets).returning(*self.pk)
                got = yield (stmt, None)
                keys = tuple(self._key_of(r) for r in got.rows)
                if sources is not None:
                    sources = {k: sources[k] for k in keys if k in sources}
            else:
                if dialect.name == "sqlite":
                    yield (self._write_lock(), None)
                pre = yield (
                    # FOR UPDATE where the database knows it, in key order (no deadlock
                    # between two of these); SQLite is locked for writing just above.
                    sa.select(*self.pk, self.status)
                    .where(cond)
                    .order_by(*self.pk)
                    .with_for_update(),
                    None,
                )
                n = len(self.pk)
                pre_keys = [self._key_of(r) for r in pre.rows]
                if not pre_keys:
                    return (yield from self._finish((), {}, requested))
                sets = dict(self.sets)
                self._case_sets(sets, list(self.per_col))
                got = yield (sa.update(self.table).where(cond).values(sets), None)
                if got.rowcount == len(pre_keys):
                    keys = tuple(pre_keys)
                    sources = {}
                    for r in pre.rows:
                        state = self._state_of(r[n])
                        if state is not None:
                            sources[self._key_of(r)] = state
                else:
                    logger.warning(
                        "transition %s: %d row(s) changed but %d were selected first; "
                        "the keys are unknown on this database",
                        self.entity,
                        got.rowcount,
                        len(pre_keys),
                    )
                    return TransitionOutcome(
                        self.entity, self.target, (), None, requested, max(got.rowcount, 0)
                    )
        return (yield from self._finish(keys, sources, requested, audited=audited))

    def _finish(
        self,
        keys: tuple[Any, ...],
        sources: dict[Any, S] | None,
        requested: int | None,
        *,
        audited: bool = False,
    ) -> Generator[_Step, _Rows, TransitionOutcome[S]]:
        if keys and self.audit is not None and not audited:
            at = datetime.fromtimestamp(self.clock.wall(), UTC)
            ctx = None if self.context is None else str(self.context)
            tgt = _label(self.target)
            rows = [
                {
                    "entity": self.entity,
                    "record_key": _key_text(k),
                    "source": None if sources is None or k not in sources else _label(sources[k]),
                    "target": tgt,
                    "context": ctx,
                    "at": at,
                    **({} if self.actor is None else {"actor": self.actor}),
                }
                for k in keys
            ]
            yield (sa.insert(self.audit), rows)
        if not keys and self.key is not None:
            # Only now, off the success path: why did the one row not change?
            got = yield (sa.select(self.status).where(self._key_is(self.key)), None)
            self._explain(got)
        outcome = TransitionOutcome(self.entity, self.target, keys, sources, requested)
        if keys:
            emit(
                TransitionApplied(
                    entity=self.entity,
                    target=self.target,
                    count=len(keys),
                    context=self.context,
                    actor=self.actor,
                )
            )
        if requested is not None and self.key is None and len(keys) < requested:
            emit(
                TransitionRejected(
                    entity=self.entity,
                    source=None,
                    target=self.target,
                    reason=(
                        f"{requested - len(keys)} of {requested} record(s) missing or not in "
                        f"a state that may move to {_label(self.target)}"
                    ),
                    context=self.context,
                    actor=self.actor,
                )
            )
        return outcome

    def _explain(self, got: _Rows) -> None:
        ctx = self.context if self.context is not None else f"{self.entity} {self.key!r}"
        if not got.rows:
            reason = f"{self.entity} {self.key!r} does not exist"
            emit(
                TransitionRejected(
                    entity=self.entity,
                    source=None,
                    target=self.target,
                    reason=reason,
                    context=ctx,
                    actor=self.actor,
                )
            )
            raise RecordNotFound(None, self.target, ctx, reason=reason)
        current = self._state_of(got.rows[0][0])
        if current == self.target:
            if self.same_state == "ok":
                return  # the same state: valid, and nothing to change
            reason = f"{self.entity} {self.key!r} is already {_label(current)}"
        elif current is None:
            reason = f"{self.entity} {self.key!r} has unknown state {got.rows[0][0]!r}"
        elif current not in self.sources:
            reason = self.transitions.validate(current, self.target).error or "not allowed"
        else:
            reason = (
                f"{self.entity} {self.key!r} is {_label(current)} but did not match the "
                "condition (or changed concurrently)"
            )
        emit(
            TransitionRejected(
                entity=self.entity,
                source=current,
                target=self.target,
                reason=reason,
                context=ctx,
                actor=self.actor,
            )
        )
        raise InvalidTransition(current, self.target, ctx, reason=reason)

    def expire_loaded(self, session: Session, outcome: TransitionOutcome[S]) -> None:
        """Expire the changed attributes of objects this session already holds."""
        if self.mapper is None or not outcome.keys or not session.identity_map:
            return
        names = [
            prop.key
            for prop in self.mapper.column_attrs
            if any(c in self.sets or c in self.per_col for c in prop.columns)
        ]
        for k in outcome.keys:
            ident = self.mapper.identity_key_from_primary_key(k if isinstance(k, tuple) else (k,))
            obj = session.identity_map.get(ident)
            if obj is not None:
                session.expire(obj, names)


def _key_text(key: Any) -> str:
    if isinstance(key, tuple):
        return "/".join(str(k) for k in key)
    return str(key)


# --- the two edges -------------------------------------------------------------------


def transition(
    db: Session | Connection,
    model: Any,
    transitions: Transitions[S],
    target: S,
    *,
    key: Any = None,
    keys: Iterable[Any] | None = None,
    where: ColumnElement[bool] | None = None,
    values: Mapping[Any, Any] | None = None,
    row_values: Mapping[Any, Mapping[Any, Any]] | None = None,
    audit: Any = None,
    context: Any = None,
    column: Any = "status",
    returning: bool | None = None,
    clock: Clock = SYSTEM_CLOCK,
    same_state: SameState = "ok",
    actor: str | None = None,
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
    flow = _Flow(
        model,
        transitions,
        target,
        key=key,
        keys=keys,
        where=where,
        values=values,
        row_values=row_values,
        audit=audit,
        context=context,
        column=column,
        returning=returning,
        clock=clock,
        same_state=same_state,
        actor=actor,
    )
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
    *,
    key: Any = None,
    keys: Iterable[Any] | None = None,
    where: ColumnElement[bool] | None = None,
    values: Mapping[Any, Any] | None = None,
    row_values: Mapping[Any, Mapping[Any, Any]] | None = None,
    audit: Any = None,
    context: Any = None,
    column: Any = "status",
    returning: bool | None = None,
    clock: Clock = SYSTEM_CLOCK,
    same_state: SameState = "ok",
    actor: str | None = None,
) -> TransitionOutcome[S]:
    """:func:`transition` for an ``AsyncSession`` or an ``AsyncConnection``."""
    flow = _Flow(
        model,
        transitions,
        target,
        key=key,
        keys=keys,
        where=where,
        values=values,
        row_values=row_values,
        audit=audit,
        context=context,
        column=column,
        returning=returning,
        clock=clock,
        same_state=same_state,
        actor=actor,
    )
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


def _read(res: Any) -> _Rows:
    rows = list(res.all()) if res.returns_rows else []
    return _Rows(rows, getattr(res, "rowcount", -1))


# --- the ORM guard -------------------------------------------------------------------


def guard(
    attribute: Any,
    transitions: Transitions[Any],
    *,
    context: Callable[[Any], Any] | None = None,
) -> Callable[[], None]:
    """Make flushing an illegal change of a mapped status attribute raise
    :class:`~suture.errors.InvalidTransition`.

    ``attribute`` is the mapped attribute (``Task.status``). At flush, an object
    whose attribute changed from ``a`` to ``b`` is checked with
    ``transitions.check(a, b)``; a new object must hold a known state. The old
    value is loaded when the attribute is assigned (``active_history``), so the
    check sees it even if it was expired. ``context(obj)`` gives the error's
    context (default: the object's identity). Returns a function that removes
    the guard. A bug catcher: the in-memory old value can be stale under
    concurrency, which is what :func:`transition` is for.
    """
    if not isinstance(attribute, InstrumentedAttribute):
        raise TypeError(f"attribute={attribute!r}: expected a mapped attribute like Task.status")
    if not isinstance(transitions, Transitions):
        raise TypeError(f"transitions={transitions!r}: expected a suture.Transitions table")
    cls = attribute.class_
    name = attribute.key

    def ctx(obj: Any) -> Any:
        if context is not None:
            return context(obj)
        ident = sa.inspect(obj).identity
        if ident is None:
            return f"{cls.__name__}(new)"
        return f"{cls.__name__} {ident[0] if len(ident) == 1 else ident!r}"

    def on_set(target: Any, value: Any, oldvalue: Any, initiator: Any) -> Any:
        return value  # present only to turn on active_history (load the old value)

    def before_update(mapper: Any, connection: Any, obj: Any) -> None:
        hist = sa.inspect(obj).attrs[name].history
        if not hist.added or not hist.deleted:
            return
        old, new = hist.deleted[0], hist.added[0]
        if old is None:
            transitions.check(new, new, context=ctx(obj))  # a known state at least
            return
        transitions.check(old, new, context=ctx(obj))

    def before_insert(mapper: Any, connection: Any, obj: Any) -> None:
        value = getattr(obj, name)
        if value is not None:
            transitions.check(value, value, context=ctx(obj))

    event.listen(attribute, "set", on_set, active_history=True, retval=True)
    event.listen(cls, "before_update", before_update, propagate=True)
    event.listen(cls, "before_insert", before_insert, propagate=True)

    def remove() -> None:
        event.remove(attribute, "set", on_set)
        event.remove(cls, "before_update", before_update)
        event.remove(cls, "before_insert", before_insert)

    return remove


# Pool sources live in their own module; re-exported here for one import path.
from suture.contrib.sqlalchemy_pool import PostgresServerSource, SQLAlchemyPoolSource  # noqa: E402
