"""Guarded transitions on PostgreSQL: one statement against the founding spec's way.

    .venv/bin/python bench/transitions.py [--url URL] [--rows 100000] [--move 10000]

A table of ``--rows`` messages, all READY; ``--move`` of them (every tenth) are
moved to SPAM_REVIEW, as the spam capture does:

* spec way: for each row, ``UPDATE ... SET status = 'spam_review' WHERE id = :id
  AND status = 'ready'``, then, for each row again, a ``SELECT status`` to count
  what changed (what the founding spec's capture does);
* suture: ``transition(conn, ..., keys=ids)``, one guarded statement whose
  ``RETURNING`` gives the keys changed; then the same with the per-row matched
  patterns set in that statement (``row_values=``), with an audit table, and
  with a ``where=`` condition instead of a key list.

Each case runs in its own transaction on one connection, the table is reset
between runs (not timed), and the figure is the best of ``--repeat`` runs.
Prints seconds per batch and each case's speed-up over the spec's way.
"""

from __future__ import annotations

import argparse
import enum
import gc
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from suture import Transitions
from suture.contrib.sqlalchemy import audit_table, transition


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

DEFAULT_URL = os.environ.get(
    "SUTURE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--move", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    engine = sa.create_engine(args.url)
    name = f"bench_{uuid.uuid4().hex[:10]}"
    md = sa.MetaData()
    messages = sa.Table(
        name,
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("patterns", sa.String(200), nullable=True),
    )
    audit = audit_table(f"{name}_audit", md)
    step = max(1, args.rows // args.move)
    ids = list(range(step, args.rows + 1, step))[: args.move]
    md.create_all(engine)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"INSERT INTO {name} (id, status) "
                    "SELECT g, 'ready' FROM generate_series(1, :n) AS g"
                ),
                {"n": args.rows},
            )
            conn.execute(sa.text(f"ANALYZE {name}"))

        def reset() -> None:
            with engine.begin() as conn:
                conn.execute(
                    sa.update(messages)
                    .where(messages.c.status != "ready")
                    .values(status="ready", patterns=None)
                )
                conn.execute(sa.delete(audit))
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                    sa.text(f"VACUUM {name}")
                )

        def spec_way(conn: sa.Connection) -> int:
            update = sa.text(
                f"UPDATE {name} SET status = 'spam_review' WHERE id = :id AND status = 'ready'"
            )
            for i in ids:
                conn.execute(update, {"id": i})
            read = sa.text(f"SELECT status FROM {name} WHERE id = :id")
            return sum(conn.execute(read, {"id": i}).scalar_one() == "spam_review" for i in ids)

        def suture_keys(conn: sa.Connection) -> int:
            return transition(conn, messages, SPEC, Msg.SPAM_REVIEW, keys=ids).count

        patterns = {i: f"pattern-{i % 7}" for i in ids}

        def suture_row_values(conn: sa.Connection) -> int:
            return transition(
                conn,
                messages,
                SPEC,
                Msg.SPAM_REVIEW,
                row_values={i: {"patterns": p} for i, p in patterns.items()},
            ).count

        def suture_audited(conn: sa.Connection) -> int:
            return transition(
                conn, messages, SPEC, Msg.SPAM_REVIEW, keys=ids, audit=audit, context="bench"
            ).count

        def suture_where(conn: sa.Connection) -> int:
            return transition(
                conn, messages, SPEC, Msg.SPAM_REVIEW, where=messages.c.id % step == 0
            ).count

        cases: list[tuple[str, Callable[[sa.Connection], int]]] = [
            ("spec: UPDATE per row + re-read per row", spec_way),
            ("suture transition(keys=)", suture_keys),
            ("suture transition(row_values=)", suture_row_values),
            ("suture transition(keys=, audit=)", suture_audited),
            ("suture transition(where=)", suture_where),
        ]
        results: dict[str, float] = {}
        for label, case in cases:
            best = float("inf")
            for _ in range(args.repeat):
                reset()
                gc.collect()
                with engine.connect() as conn:
                    t0 = time.perf_counter()
                    with conn.begin():
                        moved = case(conn)
                    elapsed = time.perf_counter() - t0
                if moved != len(ids):
                    raise SystemExit(f"{label}: moved {moved}, expected {len(ids)}")
                best = min(best, elapsed)
            results[label] = best
    finally:
        md.drop_all(engine)
        engine.dispose()

    dialect: Any = engine.dialect
    print(
        f"PostgreSQL via {dialect.driver}: move {len(ids):,} of {args.rows:,} rows "
        f"READY -> SPAM_REVIEW (best of {args.repeat})"
    )
    baseline = results[cases[0][0]]
    width = max(len(label) for label, _ in cases)
    for label, _ in cases:
        seconds = results[label]
        ratio = baseline / seconds
        print(f"  {label:<{width}}  {seconds * 1000:9.1f} ms  {ratio:6.1f}x")
    print(
        f"target: >= 20x for suture transition(keys=); got {baseline / results[cases[1][0]]:.1f}x"
    )


if __name__ == "__main__":
    main()
