"""The reference service's tables (SQLAlchemy 2) and their transition tables.

* :class:`Task`: work items; a task that needs a manager is
  ``ASSISTANCE_REQUIRED`` until the manager answers.
* :class:`RawMessage`: inbound messages per brand; spam capture moves
  ``READY`` ones to ``SPAM_REVIEW``, a reviewer releases or archives them (a
  release is remembered: the same patterns never catch the message again).
* :class:`SpamRule`: the patterns spam capture compiles.
* :class:`TransitionAudit`: one row per status change, written in the same
  transaction as the change (``suture.contrib.sqlalchemy``).
"""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from suture.contrib.sqlalchemy import TransitionAuditMixin
from suture.demo.spam import RuleMode
from suture.transitions import Transitions

__all__ = [
    "MANAGER_RESPONSE",
    "MESSAGE_TRANSITIONS",
    "TASK_TRANSITIONS",
    "Base",
    "MessageStatus",
    "RawMessage",
    "RuleMode",
    "SpamRule",
    "Task",
    "TaskStatus",
    "TransitionAudit",
]


class TaskStatus(enum.StrEnum):
    OPEN = "OPEN"
    ASSISTANCE_REQUIRED = "ASSISTANCE_REQUIRED"
    IN_PROGRESS = "IN_PROGRESS"
    DONE = "DONE"


class MessageStatus(enum.StrEnum):
    READY = "READY"
    SPAM_REVIEW = "SPAM_REVIEW"
    PROMOTED = "PROMOTED"
    SPAM_ARCHIVED = "SPAM_ARCHIVED"


TASK_TRANSITIONS: Transitions[TaskStatus] = Transitions(
    {
        TaskStatus.OPEN: {TaskStatus.ASSISTANCE_REQUIRED, TaskStatus.IN_PROGRESS},
        TaskStatus.ASSISTANCE_REQUIRED: {TaskStatus.IN_PROGRESS},
        TaskStatus.IN_PROGRESS: {TaskStatus.ASSISTANCE_REQUIRED, TaskStatus.DONE},
    },
    name="task",
)
"""A task asks for help, gets an answer (back to IN_PROGRESS), and is done at the end."""

MANAGER_RESPONSE: Transitions[TaskStatus] = Transitions(
    {TaskStatus.ASSISTANCE_REQUIRED: {TaskStatus.IN_PROGRESS}},
    states=TaskStatus,
    name="task",
)
"""The one edge of :data:`TASK_TRANSITIONS` a manager's answer takes: only a task that
asked for help can be answered (an OPEN task moving to IN_PROGRESS is the agent's
move, not the manager's)."""

MESSAGE_TRANSITIONS: Transitions[MessageStatus] = Transitions(
    {
        MessageStatus.READY: {MessageStatus.SPAM_REVIEW, MessageStatus.PROMOTED},
        MessageStatus.SPAM_REVIEW: {MessageStatus.READY, MessageStatus.SPAM_ARCHIVED},
    },
    name="raw_message",
)
"""The founding spec's table: capture, release, archive, promote."""


def _enum(kind: type[enum.Enum]) -> sa.Enum:
    # A VARCHAR holding the value: portable, readable in psql, no native ENUM to migrate.
    return sa.Enum(
        kind,
        native_enum=False,
        length=32,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


#: Ids are 64-bit everywhere (the API accepts 1 to 2^63-1): BIGINT on PostgreSQL, and
#: SQLite's INTEGER PRIMARY KEY (its rowid, already 64-bit; a BIGINT key would not
#: autoincrement there).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Task(Base):
    __tablename__ = "demo_task"
    __table_args__ = (sa.Index("ix_demo_task_status", "status", "assistance_requested_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    type: Mapped[str] = mapped_column(sa.String(40))
    status: Mapped[TaskStatus] = mapped_column(_enum(TaskStatus), default=TaskStatus.OPEN)
    assignee: Mapped[str | None] = mapped_column(sa.String(80))
    assistance_notes: Mapped[str | None] = mapped_column(sa.Text())
    manager_response: Mapped[str | None] = mapped_column(sa.Text())
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    assistance_requested_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    responded_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class RawMessage(Base):
    __tablename__ = "demo_raw_message"
    __table_args__ = (sa.Index("ix_demo_raw_message_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    brand: Mapped[str] = mapped_column(sa.String(64))
    text: Mapped[str] = mapped_column(sa.Text())
    status: Mapped[MessageStatus] = mapped_column(_enum(MessageStatus), default=MessageStatus.READY)
    #: The patterns of the rules that caught it, one per line (patterns are single lines).
    matched_patterns: Mapped[str | None] = mapped_column(sa.Text())
    #: The patterns a reviewer released it from, one per line: the reviewer's decision.
    #: Spam capture does not catch it again for these patterns alone, only for a new one.
    released_patterns: Mapped[str | None] = mapped_column(sa.Text())
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class SpamRule(Base):
    __tablename__ = "demo_spam_rule"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    pattern: Mapped[str] = mapped_column(sa.String(400))
    normalized_pattern: Mapped[str] = mapped_column(sa.String(400))
    mode: Mapped[RuleMode] = mapped_column(_enum(RuleMode))
    brand: Mapped[str | None] = mapped_column(sa.String(64))
    enabled: Mapped[bool] = mapped_column(default=True)


class TransitionAudit(TransitionAuditMixin, Base):
    __tablename__ = "demo_transition_audit"
