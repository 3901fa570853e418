"""The manager's assistance queue: the tasks waiting for an answer, and answering one.

The list is read through a :class:`suture.LastGood`: during a database outage
(an error, an open breaker, a full pool) the last list read is served instead,
marked stale with its age, for up to ``stale_for`` seconds; the route says so
and the manager page shows "shown from N s ago, the database is unavailable".

Answering is a guarded transition (``ASSISTANCE_REQUIRED`` -> ``IN_PROGRESS``,
one ``UPDATE ... WHERE status IN (...)`` audited in the same transaction):
answering an open task, or answering twice, is a 409.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from suture.clock import Clock
from suture.contrib.sqlalchemy import atransition
from suture.demo.db import Database, iso, utcnow
from suture.demo.models import MANAGER_RESPONSE, Task, TaskStatus, TransitionAudit
from suture.errors import Overloaded
from suture.lastgood import LastGood, Served

__all__ = ["STALE_FOR", "AssistanceQueue", "stale_json", "task_json"]

STALE_FOR = 600.0
"""Seconds the last list read may stand in for the database (then the outage shows)."""


def task_json(task: Task, responded_by: str | None = None) -> dict[str, Any]:
    """A task as the API shows it (``respondedBy``: the manager who answered, when known)."""
    return {
        "id": task.id,
        "title": task.title,
        "type": task.type,
        "status": task.status.value,
        "assignee": task.assignee,
        "assistanceNotes": task.assistance_notes,
        "managerResponse": task.manager_response,
        "requestedAt": iso(task.assistance_requested_at),
        "respondedAt": iso(task.responded_at),
        "respondedBy": responded_by,
        "createdAt": iso(task.created_at),
    }


def stale_json(served: Served[Any]) -> dict[str, Any] | None:
    """What the API says about a list served from memory: ``None`` when it is fresh."""
    if not served.stale:
        return None
    busy = isinstance(served.error, Overloaded)
    return {
        "age": round(served.age),
        "reason": "the database is busy" if busy else "the database is unavailable",
        "error": type(served.error).__name__,
    }


class AssistanceQueue:
    """The tasks that need a manager, oldest request first, on ``db``."""

    def __init__(self, db: Database, clock: Clock, *, stale_for: float = STALE_FOR) -> None:
        self.db = db
        self.clock = clock
        self.last_good: LastGood = LastGood(
            stale_for=stale_for,
            key=lambda limit: f"waiting:{limit}",
            max_entries=16,
            name="assistance",
            clock=clock,
        )

    async def waiting(self, limit: int = 200) -> list[dict[str, Any]]:
        """The tasks waiting for a manager's answer (the last list read during an outage)."""
        return (await self.waiting_served(limit)).value

    async def waiting_served(self, limit: int = 200) -> Served[list[dict[str, Any]]]:
        """:meth:`waiting` with how it was served: fresh, or stale with its age."""
        return await self.last_good.acall(self._read_waiting, limit)

    async def _read_waiting(self, limit: int) -> list[dict[str, Any]]:
        async def op(session: AsyncSession) -> list[dict[str, Any]]:
            rows = await session.scalars(
                sa.select(Task)
                .where(Task.status == TaskStatus.ASSISTANCE_REQUIRED)
                .order_by(Task.assistance_requested_at, Task.id)
                .limit(limit)
            )
            return [task_json(t) for t in rows]

        return await self.db.run(op)

    async def respond(
        self, task_id: int, response: str, actor: str | None = None
    ) -> dict[str, Any]:
        """Answer a waiting task: it moves to IN_PROGRESS with the response.

        ``actor`` (the manager) is recorded in the audit row and returned as ``respondedBy``.
        """
        now = utcnow(self.clock)

        async def op(session: AsyncSession) -> dict[str, Any]:
            await atransition(
                session,
                Task,
                MANAGER_RESPONSE,  # only from ASSISTANCE_REQUIRED: answering an OPEN task is a 409
                TaskStatus.IN_PROGRESS,
                key=task_id,
                values={"manager_response": response, "responded_at": now, "updated_at": now},
                audit=TransitionAudit,
                context="manager-response",
                clock=self.clock,
                same_state="reject",  # answering twice is a 409, not a silent no-op
                actor=actor,
            )
            task = await session.get_one(Task, task_id)
            return task_json(task, actor)

        return await self.db.run(op)
