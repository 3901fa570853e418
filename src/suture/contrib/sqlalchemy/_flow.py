"""The plan of a guarded transition: every statement and the reading of its results, no I/O.

Over 400 lines on purpose: one plan serves four SQL strategies (PostgreSQL's
locking CTE, ``UPDATE ... RETURNING``, the row count, SQLite's lock-then-read)
that share its state; the sync and async edges in ``edges`` only execute.
"""

from __future__ import annotations

import enum
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.orm.attributes import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from suture.clock import SYSTEM_CLOCK, Clock
from suture.contrib.sqlalchemy.audit import ACTOR_LIMIT, AUDIT_NAMES
from suture.contrib.sqlalchemy.outcome import RecordNotFound, S, SameState, TransitionOutcome
from suture.errors import InvalidTransition
from suture.events import TransitionApplied, TransitionRejected, emit, logger
from suture.transitions import Transitions


@dataclass(slots=True)
class Rows:
    rows: list[Sequence[Any]]
    rowcount: int


Step = tuple[sa.Executable, Any]


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


class Flow(Generic[S]):
    """Everything a guarded transition does except I/O: the statements and the reading
    of their results. :meth:`run` is a generator that yields ``(statement, params)``
    and receives :class:`Rows`; the sync and async edges only execute."""

    def __init__(  # noqa: PLR0913 - every option of transition(), keyword-only, defaults once
        self,
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
        actor: str | None = None,
        column: Any = "status",
        returning: bool | None = None,
        clock: Clock = SYSTEM_CLOCK,
        same_state: SameState = "ok",
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
        self._select(key, keys, where, row_values)
        self._set_values(values)
        self._audit_with(audit, actor)
        self.sources = transitions.sources_of(self.target)
        self.decoded: dict[Any, S | None] = {}

    def _select(
        self,
        key: Any,
        keys: Iterable[Any] | None,
        where: ColumnElement[bool] | None,
        row_values: Mapping[Any, Mapping[Any, Any]] | None,
    ) -> None:
        """Which rows: one ``key``, a batch of ``keys`` (or ``row_values``' keys), ``where``."""
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

    def _set_values(self, values: Mapping[Any, Any] | None) -> None:
        """The values set: status, then the caller's columns, then the per-row ones."""
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

    def _audit_with(self, audit: Any, actor: str | None) -> None:
        """The optional audit table, and who decided (checked against its columns)."""
        self.audit: sa.Table | None = None
        if audit is not None:
            self.audit, _ = _table_of(audit, "audit")
            missing = [n for n in AUDIT_NAMES if n not in self.audit.c]
            if missing:
                raise ValueError(
                    f"audit={audit!r}: the audit table lacks column(s) {missing} "
                    "(use audit_table() or TransitionAuditMixin)"
                )
        if actor is not None:
            if not isinstance(actor, str) or not actor or len(actor) > ACTOR_LIMIT:
                raise ValueError(
                    f"actor={actor!r}: expected a non-empty string of at most "
                    f"{ACTOR_LIMIT} characters (or None for the system)"
                )
            if self.audit is not None and "actor" not in self.audit.c:
                raise ValueError(
                    f"actor={actor!r}: the audit table {self.audit.name!r} has no 'actor' "
                    "column (audit_table() and TransitionAuditMixin have one)"
                )
        self.actor = actor
        self.audit_names = AUDIT_NAMES + (("actor",) if actor is not None else ())

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

    def run(self, dialect: Dialect) -> Generator[Step, Rows, TransitionOutcome[S]]:  # noqa: C901, PLR0912, PLR0915 - one generator over four SQL strategies sharing their state
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
    ) -> Generator[Step, Rows, TransitionOutcome[S]]:
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

    def _explain(self, got: Rows) -> None:
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
