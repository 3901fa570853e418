"""Guarded transitions on SQLite and the real PostgreSQL: one row, batches, audit,
the row-count fallback, asyncio, enum columns, composite keys and the ORM guard."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

from suture import InvalidTransition, TransitionApplied, TransitionRejected, Transitions
from suture.contrib.sqlalchemy import (
    RecordNotFound,
    TransitionAuditMixin,
    TransitionOutcome,
    atransition,
    audit_table,
    guard,
    transition,
)
from suture.testing import FakeClock, capture_events


class Msg(enum.StrEnum):
    READY = "ready"
    SPAM_REVIEW = "spam_review"
    PROMOTED = "promoted"
    SPAM_ARCHIVED = "spam_archived"


SPEC = Transitions(
    {
        Msg.READY: {Msg.SPAM_REVIEW, Msg.PROMOTED},
        Msg.SPAM_REVIEW: {Msg.READY, Msg.SPAM_ARCHIVED},
    },
    name="raw_message",
)

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@dataclass
class Schema:
    engine: sa.Engine
    async_url: str
    Message: Any
    Audit: Any
    messages: sa.Table
    audit: sa.Table
    metadata: sa.MetaData

    def seed(self, n: int, status: Msg = Msg.READY) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(self.messages),
                [{"id": i, "status": status.value} for i in range(1, n + 1)],
            )

    def statuses(self) -> dict[int, str]:
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.select(self.messages.c.id, self.messages.c.status)).all())  # type: ignore[arg-type]

    def audit_rows(self) -> list[tuple[Any, ...]]:
        a = self.audit
        with self.engine.connect() as conn:
            return [
                tuple(r)
                for r in conn.execute(
                    sa.select(a.c.record_key, a.c.source, a.c.target, a.c.context).order_by(a.c.id)
                )
            ]


@pytest.fixture(params=BACKENDS)
def schema(request: pytest.FixtureRequest, tmp_path: Any, unique_name: str) -> Iterator[Schema]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/t.db"
        async_url = f"sqlite+aiosqlite:///{tmp_path}/t.db"
    else:
        url = async_url = request.getfixturevalue("pg_url")

    class Base(DeclarativeBase):
        pass

    message = type(
        "Message",
        (Base,),
        {
            "__tablename__": f"{unique_name}_msg",
            "id": mapped_column(sa.Integer, primary_key=True, autoincrement=False),
            "status": mapped_column(sa.String(20), nullable=False),
            "patterns": mapped_column(sa.String(200), nullable=True),
            "note": mapped_column(sa.String(200), nullable=True),
        },
    )
    audit = type("Audit", (TransitionAuditMixin, Base), {"__tablename__": f"{unique_name}_audit"})
    engine = sa.create_engine(url)
    Base.metadata.create_all(engine)
    try:
        yield Schema(
            engine,
            async_url,
            message,
            audit,
            message.__table__,  # type: ignore[attr-defined]
            audit.__table__,  # type: ignore[attr-defined]
            Base.metadata,
        )
    finally:
        Base.metadata.drop_all(engine)
        engine.dispose()


# --- one row -------------------------------------------------------------------------


def test_single_row_moves_and_reports_its_source(schema: Schema) -> None:
    schema.seed(3)
    with capture_events() as events, schema.engine.begin() as conn:
        moved = transition(conn, schema.Message, SPEC, Msg.SPAM_REVIEW, key=2, context="capture")
    assert isinstance(moved, TransitionOutcome)
    assert moved.keys == (2,)
    assert moved.count == 1
    assert len(moved) == 1
    assert moved
    assert moved.requested == 1
    assert moved.missed == 0
    assert moved.target is Msg.SPAM_REVIEW
    assert moved.entity == schema.messages.name
    assert schema.statuses() == {1: "ready", 2: "spam_review", 3: "ready"}
    applied = events.of(TransitionApplied)
    assert [(e.count, e.target, e.context) for e in applied] == [(1, Msg.SPAM_REVIEW, "capture")]
    assert events.of(TransitionRejected) == []


def test_same_state_is_a_valid_no_op(schema: Schema) -> None:
    schema.seed(1, Msg.PROMOTED)
    with capture_events() as events, schema.engine.begin() as conn:
        moved = transition(conn, schema.Message, SPEC, Msg.PROMOTED, key=1)
    assert moved.count == 0
    assert not moved
    assert events.of(TransitionRejected) == []
    assert events.of(TransitionApplied) == []


def test_same_state_can_be_rejected_for_actions_that_happen_once(schema: Schema) -> None:
    schema.seed(1, Msg.PROMOTED)
    with (
        capture_events() as events,
        schema.engine.begin() as conn,
        pytest.raises(InvalidTransition) as info,
    ):
        transition(conn, schema.Message, SPEC, Msg.PROMOTED, key=1, same_state="reject")
    assert info.value.source is Msg.PROMOTED
    assert info.value.target is Msg.PROMOTED
    assert "is already" in str(info.value)
    assert len(events.of(TransitionRejected)) == 1
    with (
        schema.engine.connect() as conn,
        pytest.raises(ValueError, match="same_state='nope': must be 'ok' or 'reject'"),
    ):
        transition(conn, schema.Message, SPEC, Msg.PROMOTED, key=1, same_state="nope")  # type: ignore[arg-type]


def test_missing_row_says_so(schema: Schema) -> None:
    schema.seed(1)
    with (
        capture_events() as events,
        schema.engine.begin() as conn,
        pytest.raises(RecordNotFound) as info,
    ):
        transition(conn, schema.Message, SPEC, Msg.PROMOTED, key=42)
    err = info.value
    assert isinstance(err, InvalidTransition)
    assert isinstance(err, LookupError)
    assert err.source is None
    assert err.target is Msg.PROMOTED
    assert "42 does not exist" in str(err)
    assert [e.reason for e in events.of(TransitionRejected)] == [
        f"{schema.messages.name} 42 does not exist"
    ]


def test_invalid_transition_carries_the_current_state(schema: Schema) -> None:
    schema.seed(1, Msg.SPAM_ARCHIVED)
    with schema.engine.begin() as conn, pytest.raises(InvalidTransition) as info:
        transition(conn, schema.Message, SPEC, Msg.READY, key=1, context={"actor": "ann"})
    err = info.value
    assert not isinstance(err, RecordNotFound)
    assert err.source is Msg.SPAM_ARCHIVED
    assert err.target is Msg.READY
    assert err.context == {"actor": "ann"}
    assert "SPAM_ARCHIVED is terminal" in str(err)
    assert schema.statuses() == {1: "spam_archived"}


def test_single_row_excluded_by_the_condition(schema: Schema) -> None:
    schema.seed(1)
    m = schema.Message
    with schema.engine.begin() as conn, pytest.raises(InvalidTransition, match="did not match"):
        transition(conn, m, SPEC, Msg.PROMOTED, key=1, where=m.note == "vip")
    assert schema.statuses() == {1: "ready"}


# --- batches -------------------------------------------------------------------------


def test_batch_applies_to_only_part_of_its_rows(schema: Schema) -> None:
    schema.seed(6)
    with schema.engine.begin() as conn:
        transition(conn, schema.Message, SPEC, Msg.PROMOTED, keys=[1, 2])
    with capture_events() as events, schema.engine.begin() as conn:
        moved = transition(conn, schema.Message, SPEC, Msg.SPAM_REVIEW, keys=[1, 2, 3, 4, 99])
    assert sorted(moved.keys) == [3, 4]
    assert moved.requested == 5
    assert moved.missed == 3
    assert moved.sources == {3: Msg.READY, 4: Msg.READY} or moved.sources is None
    assert schema.statuses() == {
        1: "promoted",
        2: "promoted",
        3: "spam_review",
        4: "spam_review",
        5: "ready",
        6: "ready",
    }
    (rejected,) = events.of(TransitionRejected)
    assert rejected.reason.startswith("3 of 5 record(s)")
    assert events.of(TransitionApplied)[0].count == 2


def test_batch_by_condition_with_values(schema: Schema) -> None:
    schema.seed(10)
    m = schema.Message
    with Session(schema.engine) as session:
        moved = transition(
            session,
            m,
            SPEC,
            Msg.PROMOTED,
            where=m.id > 7,
            values={"note": "bulk", m.patterns: sa.literal("x") + sa.literal("y")},
        )
        session.commit()
    assert sorted(moved.keys) == [8, 9, 10]
    assert moved.requested is None
    assert moved.missed is None
    with schema.engine.connect() as conn:
        rows = conn.execute(sa.select(m.id, m.status, m.note, m.patterns).where(m.id >= 7)).all()
    assert sorted(tuple(r) for r in rows) == [
        (7, "ready", None, None),
        (8, "promoted", "bulk", "xy"),
        (9, "promoted", "bulk", "xy"),
        (10, "promoted", "bulk", "xy"),
    ]


def test_per_row_values_in_the_same_statement(schema: Schema) -> None:
    schema.seed(4)
    with schema.engine.begin() as conn:
        transition(conn, schema.Message, SPEC, Msg.PROMOTED, key=3)
        moved = transition(
            conn,
            schema.Message,
            SPEC,
            Msg.SPAM_REVIEW,
            row_values={
                1: {"patterns": "viagra"},
                2: {"patterns": "lottery"},
                3: {"patterns": "x"},
            },
            values={"note": "captured"},
            audit=schema.Audit,
            context="spam-capture",
        )
    assert sorted(moved.keys) == [1, 2]
    assert moved.requested == 3
    m = schema.Message
    with schema.engine.connect() as conn:
        rows = conn.execute(sa.select(m.id, m.status, m.patterns, m.note).order_by(m.id)).all()
    assert [tuple(r) for r in rows] == [
        (1, "spam_review", "viagra", "captured"),
        (2, "spam_review", "lottery", "captured"),
        (3, "promoted", None, None),
        (4, "ready", None, None),
    ]
    assert sorted(schema.audit_rows()) == [
        ("1", "ready", "spam_review", "spam-capture"),
        ("2", "ready", "spam_review", "spam-capture"),
    ]


def test_empty_key_list_runs_no_statement(schema: Schema) -> None:
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(str(args[2]))

    sa.event.listen(schema.engine, "before_cursor_execute", record)
    try:
        with schema.engine.begin() as conn:
            moved = transition(conn, schema.Message, SPEC, Msg.READY, keys=[])
    finally:
        sa.event.remove(schema.engine, "before_cursor_execute", record)
    assert moved.count == 0
    assert moved.keys == ()
    assert not any("UPDATE" in s for s in statements)


def test_one_statement_on_the_success_path(schema: Schema) -> None:
    schema.seed(3)
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(str(args[2]).strip().split()[0].upper())

    sa.event.listen(schema.engine, "before_cursor_execute", record)
    try:
        with schema.engine.begin() as conn:
            transition(conn, schema.Message, SPEC, Msg.PROMOTED, key=1)
            transition(conn, schema.Message, SPEC, Msg.PROMOTED, keys=[2, 3])
    finally:
        sa.event.remove(schema.engine, "before_cursor_execute", record)
    dml = [s for s in statements if s in {"UPDATE", "WITH", "SELECT"}]
    assert len(dml) == 2  # one guarded statement each; no diagnosis, no re-read


# --- audit ---------------------------------------------------------------------------


def test_audit_rows_record_the_real_source_and_the_time(schema: Schema) -> None:
    schema.seed(3)
    clock = FakeClock(wall_start=1_800_000_000.0)
    with Session(schema.engine) as session:
        for target in (Msg.SPAM_REVIEW, Msg.READY, Msg.SPAM_REVIEW, Msg.SPAM_ARCHIVED):
            transition(
                session,
                schema.Message,
                SPEC,
                target,
                where=schema.Message.id <= 2,
                audit=schema.Audit,
                context="bob",
                clock=clock,
            )
            clock.advance(1)
        transition(session, schema.Message, SPEC, Msg.PROMOTED, key=3, audit=schema.Audit)
        session.commit()
    rows = schema.audit_rows()
    assert sorted(rows) == sorted(
        [
            (k, src, tgt, "bob")
            for k in ("1", "2")
            for src, tgt in [
                ("ready", "spam_review"),
                ("spam_review", "ready"),
                ("ready", "spam_review"),
                ("spam_review", "spam_archived"),
            ]
        ]
        + [("3", "ready", "promoted", None)]
    )
    with schema.engine.connect() as conn:
        times = conn.execute(sa.select(schema.audit.c.at).order_by(schema.audit.c.id)).scalars()
        stamps = [t if t.tzinfo else t.replace(tzinfo=UTC) for t in times]
    assert stamps[0] == datetime.fromtimestamp(1_800_000_000.0, UTC)
    assert stamps[-2] == datetime.fromtimestamp(1_800_000_003.0, UTC)


def test_audit_is_part_of_the_callers_transaction(schema: Schema) -> None:
    schema.seed(2)
    with Session(schema.engine) as session:
        transition(session, schema.Message, SPEC, Msg.PROMOTED, keys=[1, 2], audit=schema.Audit)
        session.rollback()
    assert schema.audit_rows() == []
    assert schema.statuses() == {1: "ready", 2: "ready"}


def test_core_audit_table_factory(schema: Schema) -> None:
    schema.seed(1)
    md = sa.MetaData()
    table = audit_table(f"{schema.messages.name}_core_audit", md)
    md.create_all(schema.engine)
    try:
        with schema.engine.begin() as conn:
            transition(conn, schema.messages, SPEC, Msg.PROMOTED, key=1, audit=table)
        with schema.engine.connect() as conn:
            rows = conn.execute(sa.select(table.c.record_key, table.c.source, table.c.target)).all()
        assert [tuple(r) for r in rows] == [("1", "ready", "promoted")]
    finally:
        md.drop_all(schema.engine)


# --- the row-count fallback ----------------------------------------------------------


def test_rowcount_fallback(schema: Schema) -> None:
    schema.seed(5)
    with schema.engine.begin() as conn:
        moved = transition(
            conn,
            schema.Message,
            SPEC,
            Msg.PROMOTED,
            where=schema.Message.id >= 3,
            returning=False,
            audit=schema.Audit,
        )
        assert sorted(moved.keys) == [3, 4, 5]
        assert moved.count == 3
        assert moved.sources == {3: Msg.READY, 4: Msg.READY, 5: Msg.READY}
        with pytest.raises(InvalidTransition) as info:
            transition(conn, schema.Message, SPEC, Msg.READY, key=3, returning=False)
        assert info.value.source is Msg.PROMOTED
        nothing = transition(
            conn, schema.Message, SPEC, Msg.SPAM_ARCHIVED, keys=[1], returning=False
        )
        assert nothing.count == 0
    assert sorted(r[0] for r in schema.audit_rows()) == ["3", "4", "5"]


# --- sessions and asyncio ------------------------------------------------------------


def test_session_expires_changed_attributes_of_loaded_objects(schema: Schema) -> None:
    schema.seed(2)
    with Session(schema.engine) as session:
        obj = session.get(schema.Message, 1)
        assert obj.status == "ready"
        transition(
            session, schema.Message, SPEC, Msg.SPAM_REVIEW, keys=[1, 2], values={"note": "n"}
        )
        assert obj.status == "spam_review"
        assert obj.note == "n"
        session.commit()


async def test_async_session_and_connection(schema: Schema) -> None:
    schema.seed(4)
    engine: AsyncEngine = create_async_engine(schema.async_url)
    try:
        async with AsyncSession(engine) as session:
            obj = await session.get(schema.Message, 1)
            moved = await atransition(
                session, schema.Message, SPEC, Msg.SPAM_REVIEW, keys=[1, 2], audit=schema.Audit
            )
            assert sorted(moved.keys) == [1, 2]
            await session.refresh(obj)
            assert obj.status == "spam_review"
            with pytest.raises(RecordNotFound):
                await atransition(session, schema.Message, SPEC, Msg.READY, key=77)
            await session.commit()
        async with engine.begin() as conn:
            one = await atransition(
                conn, schema.messages, SPEC, Msg.SPAM_ARCHIVED, key=1, audit=schema.audit
            )
            assert one.keys == (1,)
            with pytest.raises(InvalidTransition) as info:
                await atransition(conn, schema.messages, SPEC, Msg.READY, key=1)
            assert info.value.source is Msg.SPAM_ARCHIVED
            fallback = await atransition(
                conn, schema.messages, SPEC, Msg.PROMOTED, keys=[3, 4], returning=False
            )
            assert sorted(fallback.keys) == [3, 4]
    finally:
        await engine.dispose()
    assert schema.statuses() == {1: "spam_archived", 2: "spam_review", 3: "promoted", 4: "promoted"}
    assert [r[:3] for r in schema.audit_rows()] == [
        ("1", "ready", "spam_review"),
        ("2", "ready", "spam_review"),
        ("1", "spam_review", "spam_archived"),
    ]


def test_wrong_executor_types(schema: Schema) -> None:
    with pytest.raises(TypeError, match="use atransition"):
        transition(schema.engine, schema.Message, SPEC, Msg.READY, key=1)  # type: ignore[arg-type]


async def test_async_wrong_executor_types(schema: Schema) -> None:
    with Session(schema.engine) as session, pytest.raises(TypeError, match="use transition"):
        await atransition(session, schema.Message, SPEC, Msg.READY, key=1)  # type: ignore[arg-type]


# --- column types and keys -----------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def any_engine(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path}/e.db")
    else:
        engine = sa.create_engine(request.getfixturevalue("pg_url"))
    yield engine
    engine.dispose()


def test_enum_column_and_composite_key(any_engine: sa.Engine, unique_name: str) -> None:
    md = sa.MetaData()
    table = sa.Table(
        f"{unique_name}_cmp",
        md,
        sa.Column("shard", sa.Integer, primary_key=True),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("state", sa.Enum(Msg, name=f"{unique_name}_msg_enum"), nullable=False),
        sa.Column("note", sa.String(20), nullable=True),
    )
    audit = audit_table(f"{unique_name}_cmp_audit", md)
    md.create_all(any_engine)
    try:
        with any_engine.begin() as conn:
            conn.execute(
                sa.insert(table),
                [{"shard": s, "id": i, "state": Msg.READY} for s in (1, 2) for i in (1, 2)],
            )
            moved = transition(
                conn,
                table,
                SPEC,
                "spam_review",
                keys=[(1, 1), (2, 2), (3, 3)],
                column="state",
                row_values={(1, 1): {"note": "first"}},
                audit=audit,
            )
            assert sorted(moved.keys) == [(1, 1), (2, 2)]
            assert moved.sources == {(1, 1): Msg.READY, (2, 2): Msg.READY}
            trail = conn.execute(sa.select(audit.c.record_key, audit.c.source, audit.c.target))
            assert sorted(tuple(r) for r in trail) == [
                ("1/1", "ready", "spam_review"),
                ("2/2", "ready", "spam_review"),
            ]
            notes = conn.execute(sa.select(table.c.note).order_by(table.c.shard, table.c.id))
            assert list(notes.scalars()) == ["first", None, None, None]
            with pytest.raises(InvalidTransition) as info:
                transition(conn, table, SPEC, Msg.SPAM_ARCHIVED, key=(1, 2), column="state")
            assert info.value.source is Msg.READY
            with pytest.raises(ValueError, match="composite primary key"):
                transition(conn, table, SPEC, Msg.PROMOTED, key=1, column="state")
            rows = conn.execute(sa.select(table.c.shard, table.c.id, table.c.state)).all()
        assert sorted(tuple(r) for r in rows) == [
            (1, 1, Msg.SPAM_REVIEW),
            (1, 2, Msg.READY),
            (2, 1, Msg.READY),
            (2, 2, Msg.SPAM_REVIEW),
        ]
    finally:
        md.drop_all(any_engine)


def test_plain_string_table(any_engine: sa.Engine, unique_name: str) -> None:
    tasks = Transitions(
        {"OPEN": {"IN_PROGRESS", "ASSISTANCE_REQUIRED"}, "IN_PROGRESS": {"DONE", "OPEN"}},
        name="task",
    )
    md = sa.MetaData()
    table = sa.Table(
        f"{unique_name}_task",
        md,
        sa.Column("id", sa.String(10), primary_key=True),
        sa.Column("status", sa.String(30), nullable=False),
    )
    md.create_all(any_engine)
    try:
        with any_engine.begin() as conn:
            conn.execute(sa.insert(table), [{"id": "a", "status": "OPEN"}])
            assert transition(conn, table, tasks, "IN_PROGRESS", key="a").keys == ("a",)
            assert transition(conn, table, tasks, "DONE", key="a").keys == ("a",)
            with pytest.raises(InvalidTransition, match="DONE is terminal"):
                transition(conn, table, tasks, "OPEN", key="a")
            # no state may reach OPEN from ASSISTANCE_REQUIRED: nothing to select
            assert transition(conn, table, tasks, "ASSISTANCE_REQUIRED", keys=["a"]).count == 0
    finally:
        md.drop_all(any_engine)


# --- configuration errors ------------------------------------------------------------


def test_configuration_errors_name_the_parameter(schema: Schema) -> None:
    m = schema.Message
    with Session(schema.engine) as s:
        with pytest.raises(TypeError, match="give key=, keys= or where="):
            transition(s, m, SPEC, Msg.READY)
        with pytest.raises(TypeError, match="not both"):
            transition(s, m, SPEC, Msg.READY, key=1, keys=[1])
        with pytest.raises(ValueError, match="target='nope'"):
            transition(s, m, SPEC, "nope", key=1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="the status is set by target="):
            transition(s, m, SPEC, Msg.READY, key=1, values={"status": "x"})
        with pytest.raises(ValueError, match="values='nope'"):
            transition(s, m, SPEC, Msg.READY, key=1, values={"nope": 1})
        with pytest.raises(ValueError, match="column='state'"):
            transition(s, m, SPEC, Msg.READY, key=1, column="state")
        with pytest.raises(TypeError, match="model="):
            transition(s, object(), SPEC, Msg.READY, key=1)
        with pytest.raises(TypeError, match="transitions="):
            transition(s, m, {"a": {"b"}}, Msg.READY, key=1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="keys="):
            transition(s, m, SPEC, Msg.READY, keys="123")
        with pytest.raises(ValueError, match=r"audit=.*lacks column"):
            transition(s, m, SPEC, Msg.READY, key=1, audit=schema.messages)
    if schema.engine.dialect.name == "sqlite":
        return
    with schema.engine.connect() as conn:
        conn.dialect.update_returning = False
        try:
            with pytest.raises(ValueError, match="returning=True"):
                transition(conn, m, SPEC, Msg.READY, key=1, returning=True)
        finally:
            conn.dialect.update_returning = True


# --- the ORM guard -------------------------------------------------------------------


def test_orm_guard_rejects_an_illegal_assignment_at_flush(schema: Schema) -> None:
    schema.seed(2)
    remove = guard(schema.Message.status, SPEC)
    try:
        with Session(schema.engine) as session:
            obj = session.get(schema.Message, 1)
            obj.status = "spam_archived"  # READY -> SPAM_ARCHIVED is not in the table
            with pytest.raises(InvalidTransition) as info:
                session.flush()
            assert info.value.source is Msg.READY
            assert info.value.target is Msg.SPAM_ARCHIVED
            session.rollback()
            obj = session.get(schema.Message, 2)
            session.expire(obj)  # the guard loads the old value on assignment
            obj.status = "spam_review"
            session.commit()
            obj.status = "spam_archived"
            session.commit()
            obj.status = "ready"
            with pytest.raises(InvalidTransition, match="terminal"):
                session.commit()
            session.rollback()
            session.add(schema.Message(id=3, status="bogus"))
            with pytest.raises(InvalidTransition, match="unknown"):
                session.flush()
            session.rollback()
    finally:
        remove()
    assert schema.statuses() == {1: "ready", 2: "spam_archived"}
    with Session(schema.engine) as session:  # removed: nothing checks any more
        session.get(schema.Message, 2).status = "ready"
        session.commit()
    with pytest.raises(TypeError, match="attribute="):
        guard("status", SPEC)
    with pytest.raises(TypeError, match="transitions="):
        guard(schema.Message.status, {})  # type: ignore[arg-type]


def test_per_row_values_mixed_with_shared_values_and_rows_without_any(schema: Schema) -> None:
    schema.seed(4)
    m = schema.Message
    with schema.engine.begin() as conn:
        moved = transition(
            conn,
            m,
            SPEC,
            Msg.SPAM_REVIEW,
            keys=[1, 2, 3],
            values={"note": "base"},
            row_values={
                1: {"patterns": "p1", "note": sa.literal("n") + sa.literal("1")},
                2: {"patterns": "p2"},
            },
        )
    assert sorted(moved.keys) == [1, 2, 3]
    with schema.engine.connect() as conn:
        rows = conn.execute(sa.select(m.id, m.status, m.patterns, m.note).order_by(m.id)).all()
    assert [tuple(r) for r in rows] == [
        (1, "spam_review", "p1", "n1"),
        (2, "spam_review", "p2", "base"),
        (3, "spam_review", None, "base"),
        (4, "ready", None, None),
    ]


# --- SQLite: the previous states are read under the write lock --------------------------

TWO_WAYS = Transitions({"a": {"b", "c"}, "b": {"c"}}, states=["a", "b", "c"], name="item")


@pytest.mark.parametrize("returning", [None, False], ids=["returning", "rowcount"])
@pytest.mark.parametrize("when", ["before-lock", "after-lock"])
def test_sqlite_audit_source_is_the_state_the_row_really_had(
    tmp_path: Any, returning: bool | None, when: str
) -> None:
    # Python's sqlite3 driver begins a transaction only at the first write, so the
    # read of the previous states once held no lock: another connection could move
    # row 1 from a to b in between, and the audit said a -> c for a row that went
    # b -> c. Now the write lock is taken first: a writer either gets in before it
    # (and the audit sees b) or is refused ("database is locked").
    url = f"sqlite:///{tmp_path}/race.db"
    engine = sa.create_engine(url)
    other = sa.create_engine(url, connect_args={"timeout": 0.05})
    md = sa.MetaData()
    items = sa.Table(
        "items",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("status", sa.String(5), nullable=False),
    )
    audit = audit_table("items_audit", md)
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(items), [{"id": 1, "status": "a"}, {"id": 2, "status": "b"}])
    interfered: list[str] = []

    def meddle(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        first = statement.lstrip().split()[0].upper()
        if interfered or first != ("UPDATE" if when == "before-lock" else "SELECT"):
            return
        try:
            with other.begin() as c2:
                c2.execute(sa.update(items).where(items.c.id == 1).values(status="b"))
                c2.execute(
                    sa.insert(audit),
                    [
                        {
                            "entity": "items",
                            "record_key": "1",
                            "source": "a",
                            "target": "b",
                            "context": "other",
                            "at": datetime.now(UTC),
                        }
                    ],
                )
            interfered.append("wrote")
        except sa.exc.OperationalError as exc:
            interfered.append("locked out" if "locked" in str(exc) else repr(exc))

    sa.event.listen(engine, "before_cursor_execute", meddle)
    try:
        with engine.begin() as conn:
            moved = transition(
                conn, items, TWO_WAYS, "c", where=sa.true(), audit=audit, returning=returning
            )
    finally:
        sa.event.remove(engine, "before_cursor_execute", meddle)
    assert interfered == (["wrote"] if when == "before-lock" else ["locked out"])
    assert sorted(moved.keys) == [1, 2]
    with engine.connect() as conn:
        trail = conn.execute(
            sa.select(audit.c.record_key, audit.c.source, audit.c.target).order_by(audit.c.id)
        ).all()
    state = {"1": "a", "2": "b"}
    for key, source, target in trail:
        assert source == state[key], f"row {key}: audit says {source}, it was {state[key]}"
        assert (source, target) in TWO_WAYS
        state[key] = target
    assert state == {"1": "c", "2": "c"}
    engine.dispose()
    other.dispose()


# --- who decided: the actor -------------------------------------------------------------


def _actors(schema: Schema) -> list[tuple[str, str | None]]:
    a = schema.audit
    with schema.engine.connect() as conn:
        rows = conn.execute(sa.select(a.c.record_key, a.c.actor).order_by(a.c.id)).all()
    return [(r[0], r[1]) for r in rows]


@pytest.mark.parametrize("returning", [None, False], ids=["returning", "rowcount"])
def test_the_actor_is_recorded_in_every_audit_row(schema: Schema, returning: bool | None) -> None:
    schema.seed(3)
    with capture_events() as events, schema.engine.begin() as conn:
        transition(
            conn, schema.Message, SPEC, Msg.SPAM_REVIEW, keys=[1, 2],
            audit=schema.Audit, actor="alice", returning=returning,
        )  # fmt: skip
        transition(conn, schema.Message, SPEC, Msg.PROMOTED, key=3, audit=schema.Audit)
    assert sorted(_actors(schema)) == [("1", "alice"), ("2", "alice"), ("3", None)]
    applied = events.of(TransitionApplied)
    assert [e.actor for e in applied] == ["alice", None]


async def test_the_actor_is_recorded_through_asyncio(schema: Schema) -> None:
    schema.seed(2)
    engine = create_async_engine(schema.async_url)
    try:
        async with engine.begin() as conn:
            await atransition(
                conn, schema.Message, SPEC, Msg.PROMOTED, key=1, audit=schema.Audit, actor="bob"
            )
    finally:
        await engine.dispose()
    assert _actors(schema) == [("1", "bob")]


def test_a_rejected_transition_names_its_actor(schema: Schema) -> None:
    schema.seed(1, Msg.PROMOTED)
    with capture_events() as events, pytest.raises(InvalidTransition):
        with schema.engine.begin() as conn:
            transition(
                conn, schema.Message, SPEC, Msg.SPAM_REVIEW, key=1, audit=schema.Audit, actor="eve"
            )
    assert [e.actor for e in events.of(TransitionRejected)] == ["eve"]
    assert _actors(schema) == []


@pytest.mark.parametrize("actor", ["", "x" * 201, 42])
def test_a_bad_actor_is_refused_naming_it(schema: Schema, actor: Any) -> None:
    with schema.engine.connect() as conn:
        with pytest.raises(ValueError, match=r"actor=.*non-empty string of at most 200"):
            transition(conn, schema.Message, SPEC, Msg.PROMOTED, key=1, actor=actor)


def test_an_actor_needs_an_audit_table_with_an_actor_column(schema: Schema) -> None:
    md = sa.MetaData()
    name = f"{schema.messages.name}_old_audit"
    old = sa.Table(  # an audit table made before the actor column existed
        name,
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        *(sa.Column(c, sa.String(200)) for c in ("entity", "record_key", "source", "target")),
        sa.Column("context", sa.Text),
        sa.Column("at", sa.DateTime(timezone=True)),
    )
    with schema.engine.connect() as conn:
        with pytest.raises(ValueError, match=rf"actor='alice': the audit table '{name}' has no"):
            transition(conn, schema.Message, SPEC, Msg.PROMOTED, key=1, audit=old, actor="alice")
    # without an actor, an audit table from before the column still works
    with schema.engine.begin() as conn:
        md.create_all(conn)
    try:
        schema.seed(1)
        with schema.engine.begin() as conn:
            transition(conn, schema.Message, SPEC, Msg.PROMOTED, key=1, audit=old)
    finally:
        md.drop_all(schema.engine)
