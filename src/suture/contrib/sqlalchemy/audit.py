"""The audit table of guarded transitions: one row per changed record, who and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

__all__ = ["ACTOR_LIMIT", "AUDIT_NAMES", "TransitionAuditMixin", "audit_table"]


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


AUDIT_NAMES = ("entity", "record_key", "source", "target", "context", "at")
ACTOR_LIMIT = 200  # the audit column's length
