"""The manager's assistance queue: the tasks waiting for an answer, and answering one.

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

__all__ = ["AssistanceQueue", "task_json"]


def task_json(task: Task) -> dict[str, Any]:
    """A task as the API shows it."""
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
        "createdAt": iso(task.created_at),
    }


class AssistanceQueue:
    """The tasks that need a manager, oldest request first, on ``db``."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def waiting(self, limit: int = 200) -> list[dict[str, Any]]:
        """The tasks waiting for a manager's answer."""

        async def op(session: AsyncSession) -> list[dict[str, Any]]:
            rows = await session.scalars(
                sa.select(Task)
                .where(Task.status == TaskStatus.ASSISTANCE_REQUIRED)
                .order_by(Task.assistance_requested_at, Task.id)
                .limit(limit)
            )
            return [task_json(t) for t in rows]

        return await self.db.run(op)

    async def respond(self, task_id: int, response: str) -> dict[str, Any]:
        """Answer a waiting task: it moves to IN_PROGRESS with the response."""
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
            )
            task = await session.get_one(Task, task_id)
            return task_json(task)

        return await self.db.run(op)
