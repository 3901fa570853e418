"""Guarded transitions under races (real PostgreSQL) and random tables (hypothesis).

The race: 8 workers, 4 threads with their own connections and 4 asyncio tasks,
race capture, release, archive and promote over 20,000 rows for a short fixed
time. Afterwards the audit, replayed in order, gives every row's final state;
no row ever left a terminal state; every worker was told exactly the number of
audit rows it produced.
"""

from __future__ import annotations

import asyncio
import enum
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import create_async_engine

from suture import InvalidTransition, Transitions
from suture.contrib.sqlalchemy import (
    RecordNotFound,
    TransitionOutcome,
    atransition,
    audit_table,
    transition,
)


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

ROWS = 20_000
HOT = 1_500  # most operations aim here, so workers really collide
DURATION = 2.5  # seconds of racing (a fixed time, not an assertion)
THREADS = 4
TASKS = 4

# capture and release often, archive and promote (terminal) rarely
OPERATIONS = [
    (Msg.SPAM_REVIEW, 10),
    (Msg.READY, 10),
    (Msg.SPAM_ARCHIVED, 1),
    (Msg.PROMOTED, 1),
]


@dataclass
class Tally:
    told: int = 0
    calls: int = 0
    rejected: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class Race:
    messages: sa.Table
    audit: sa.Table


def _request(rng: random.Random, table: sa.Table) -> tuple[Msg, dict[str, Any]]:
    target = rng.choices([t for t, _ in OPERATIONS], [w for _, w in OPERATIONS])[0]
    r = rng.random()
    if r < 0.45:
        return target, {"keys": rng.sample(range(1, HOT + 1), 30)}
    if r < 0.7:
        start = rng.randint(1, HOT)
        return target, {"where": table.c.id.between(start, start + 60)}
    if r < 0.9:
        return target, {"key": rng.randint(1, HOT)}
    return target, {"keys": rng.sample(range(1, ROWS + 1), 200)}


def _account(tally: Tally, target: Msg, outcome: TransitionOutcome[Msg]) -> None:
    tally.told += outcome.count
    if outcome.sources is None or set(outcome.sources) != set(outcome.keys):
        tally.problems.append(f"sources unknown for {outcome!r}")
        return
    for key, source in outcome.sources.items():
        if source not in SPEC.sources_of(target):
            tally.problems.append(f"{key}: moved {source} -> {target}")


def _thread_worker(
    engine: sa.Engine, race: Race, name: str, seed: int, stop_at: float, tally: Tally
) -> None:
    rng = random.Random(seed)
    try:
        with engine.connect() as conn:
            while time.monotonic() < stop_at:
                target, selection = _request(rng, race.messages)
                tally.calls += 1
                try:
                    with conn.begin():
                        outcome = transition(
                            conn,
                            race.messages,
                            SPEC,
                            target,
                            audit=race.audit,
                            context=name,
                            **selection,
                        )
                except RecordNotFound as exc:
                    tally.problems.append(f"missing row: {exc}")
                    continue
                except InvalidTransition:
                    tally.rejected += 1
                    continue
                _account(tally, target, outcome)
    except Exception as exc:  # surfaced by the assertion on problems
        tally.problems.append(f"{name} crashed: {exc!r}")


async def _task_worker(
    engine: Any, race: Race, name: str, seed: int, stop_at: float, tally: Tally
) -> None:
    rng = random.Random(seed)
    async with engine.connect() as conn:
        while time.monotonic() < stop_at:
            target, selection = _request(rng, race.messages)
            tally.calls += 1
            try:
                async with conn.begin():
                    outcome = await atransition(
                        conn,
                        race.messages,
                        SPEC,
                        target,
                        audit=race.audit,
                        context=name,
                        **selection,
                    )
            except RecordNotFound as exc:
                tally.problems.append(f"missing row: {exc}")
                continue
            except InvalidTransition:
                tally.rejected += 1
                continue
            _account(tally, target, outcome)


@pytest.fixture
def race(pg_url: str, unique_name: str) -> Iterator[tuple[sa.Engine, Race]]:
    engine = sa.create_engine(pg_url, pool_size=THREADS + 2)
    md = sa.MetaData()
    messages = sa.Table(
        f"{unique_name}_race",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("status", sa.String(20), nullable=False),
    )
    audit = audit_table(f"{unique_name}_race_audit", md)
    md.create_all(engine)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"INSERT INTO {messages.name} (id, status) "
                    "SELECT g, 'ready' FROM generate_series(1, :n) AS g"
                ),
                {"n": ROWS},
            )
        yield engine, Race(messages, audit)
    finally:
        md.drop_all(engine)
        engine.dispose()


@pytest.mark.postgres
async def test_eight_workers_race_and_the_audit_replays_exactly(
    race: tuple[sa.Engine, Race], async_pg_url: str
) -> None:
    engine, tables = race
    async_engine = create_async_engine(async_pg_url, pool_size=TASKS + 1)
    stop_at = time.monotonic() + DURATION
    tallies = {f"thread-{i}": Tally() for i in range(THREADS)}
    tallies |= {f"task-{i}": Tally() for i in range(TASKS)}
    threads = [
        threading.Thread(
            target=_thread_worker,
            args=(engine, tables, f"thread-{i}", i, stop_at, tallies[f"thread-{i}"]),
        )
        for i in range(THREADS)
    ]
    try:
        for t in threads:
            t.start()
        await asyncio.gather(
            *(
                _task_worker(
                    async_engine, tables, f"task-{i}", 100 + i, stop_at, tallies[f"task-{i}"]
                )
                for i in range(TASKS)
            )
        )
    finally:
        for t in threads:
            t.join()
        await async_engine.dispose()

    problems = [p for tally in tallies.values() for p in tally.problems]
    assert problems == []
    assert all(t.calls > 0 for t in tallies.values())

    m, a = tables.messages, tables.audit
    with engine.connect() as conn:
        final = dict(conn.execute(sa.select(m.c.id, m.c.status)).all())  # type: ignore[arg-type]
        rows = conn.execute(
            sa.select(a.c.record_key, a.c.source, a.c.target, a.c.context).order_by(a.c.id)
        ).all()
    assert len(final) == ROWS
    assert sum(t.told for t in tallies.values()) == len(rows) > 0

    # the counts each worker was told equal the audit rows it produced
    produced = Counter(r.context for r in rows)
    assert {name: t.told for name, t in tallies.items()} == {
        name: produced.get(name, 0) for name in tallies
    }

    # replaying the audit in order gives exactly every row's final state,
    # through allowed steps only, and never out of a terminal state
    state: dict[int, Msg] = dict.fromkeys(range(1, ROWS + 1), Msg.READY)
    for key, source, target, _ in rows:
        k = int(key)
        src, tgt = Msg(source), Msg(target)
        assert src == state[k], f"row {k}: audit says {src}, replay says {state[k]}"
        assert src not in SPEC.terminal
        assert (src, tgt) in SPEC
        state[k] = tgt
    assert state == {k: Msg(v) for k, v in final.items()}
    # the race was a race: rows went back and forth, some reached a terminal state
    assert Counter(r.target for r in rows)["ready"] > 0
    assert any(s in SPEC.terminal for s in state.values())


# --- hypothesis: random tables, random requests --------------------------------------

NAMES = ["a", "b", "c", "d", "e"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, set[str]], list[tuple[str, Any]]]:
    states = draw(st.lists(st.sampled_from(NAMES), min_size=2, max_size=5, unique=True))
    table = {s: draw(st.sets(st.sampled_from(states))) for s in states}
    selection = st.one_of(
        st.tuples(st.just("key"), st.integers(1, 5)),
        st.tuples(st.just("keys"), st.lists(st.integers(1, 6), max_size=5)),
        st.tuples(st.just("where"), st.integers(0, 5)),
    )
    steps = draw(st.lists(st.tuples(st.sampled_from(states), selection), max_size=12))
    return {"initial": {states[0]}, **table}, steps  # "initial" names the first state


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scenario=scenarios(), returning=st.booleans())
def test_random_tables_never_take_a_forbidden_path(
    scenario: tuple[dict[str, set[str]], list[tuple[str, Any]]], returning: bool
) -> None:
    raw, steps = scenario
    start = next(iter(raw.pop("initial")))
    table = Transitions(raw, states=list(raw))
    engine = sa.create_engine("sqlite://")
    md = sa.MetaData()
    rows = sa.Table(
        "rows",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("status", sa.String(5), nullable=False),
    )
    audit = audit_table("audit", md)
    md.create_all(engine)
    expected = dict.fromkeys(range(1, 6), start)
    with engine.begin() as conn:
        conn.execute(sa.insert(rows), [{"id": k, "status": start} for k in expected])
        for target, (kind, arg) in steps:
            if kind == "key":
                chosen = {arg} if arg in expected else set()
                selection: dict[str, Any] = {"key": arg}
            elif kind == "keys":
                chosen = set(arg) & set(expected)
                selection = {"keys": arg}
            else:
                chosen = {k for k in expected if k > arg}
                selection = {"where": rows.c.id > arg}
            movable = {k for k in chosen if expected[k] in table.sources_of(target)}
            if kind == "key" and not movable and (arg not in expected or expected[arg] != target):
                with pytest.raises(InvalidTransition) as info:
                    transition(conn, rows, table, target, audit=audit, returning=returning, key=arg)
                assert isinstance(info.value, RecordNotFound) == (arg not in expected)
                if arg in expected:
                    assert info.value.source == expected[arg]
                    assert not table.can(expected[arg], target)
                continue
            outcome = transition(
                conn, rows, table, target, audit=audit, returning=returning, **selection
            )
            assert set(outcome.keys) == movable
            if kind == "key" and not movable:
                assert expected[arg] == target  # only the same state is a quiet no-op
            for k in movable:
                expected[k] = target
        final = dict(conn.execute(sa.select(rows.c.id, rows.c.status)).all())  # type: ignore[arg-type]
        trail = conn.execute(
            sa.select(audit.c.record_key, audit.c.source, audit.c.target).order_by(audit.c.id)
        ).all()
    engine.dispose()
    assert final == expected
    replay = dict.fromkeys(range(1, 6), start)
    for key, source, target in trail:
        assert source == replay[int(key)]
        assert (source, target) in table
        replay[int(key)] = target
    assert replay == final
