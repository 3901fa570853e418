"""Spam capture and message moves: the inbox's domain.

:class:`Messages` lists messages by status and moves one through the
message transitions (release, archive, promote). :class:`SpamCapture`
compiles the enabled rules into a :class:`suture.demo.spam.SpamMatcher`
(recompiled only when they change) and moves every READY message that
matches to SPAM_REVIEW, one guarded statement per batch.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from suture.clock import Clock
from suture.contrib.sqlalchemy import atransition
from suture.demo.config import DEFAULT_CAPTURE_BATCH
from suture.demo.db import Database, iso
from suture.demo.models import (
    MESSAGE_TRANSITIONS,
    MessageStatus,
    RawMessage,
    SpamRule,
    TransitionAudit,
)
from suture.demo.seed import rule_from_row
from suture.demo.spam import SpamMatcher, fingerprint

__all__ = [
    "CAPTURE_ACTOR",
    "READ_CHUNK",
    "WRITERS",
    "Messages",
    "SpamCapture",
    "message_json",
    "new_matches",
    "take",
]

logger = logging.getLogger("suture.demo")

#: Spam capture reads this many READY messages at a time (at least one batch).
READ_CHUNK = 2_000
#: Guarded UPDATEs one capture runs at once (each on its own pooled connection).
WRITERS = 3


def message_json(msg: RawMessage) -> dict[str, Any]:
    """A message as the API shows it."""
    return {
        "id": msg.id,
        "brand": msg.brand,
        "text": msg.text,
        "status": msg.status.value,
        "matchedPatterns": msg.matched_patterns.split("\n") if msg.matched_patterns else [],
        "releasedPatterns": msg.released_patterns.split("\n") if msg.released_patterns else [],
        "createdAt": iso(msg.created_at),
    }


#: The actor of the spam capture's audit rows (a manager starts it; the rules decide).
CAPTURE_ACTOR = "capture"


class Messages:
    """The inbox on ``db``: messages by status, and one message's moves."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def move(
        self, message_id: int, target: MessageStatus, context: str, actor: str | None = None
    ) -> dict[str, Any]:
        """Move one message to ``target`` (a guarded transition; a wrong status is a 409).

        ``actor`` (the manager) is recorded in the audit row.
        """
        values: dict[str, Any] = {}
        if target is MessageStatus.READY:
            # A release is a decision: the patterns it was caught by join those it was
            # released from before (in the same statement, from the row's own values),
            # and capture does not catch it again for them alone.
            matched, released = RawMessage.matched_patterns, RawMessage.released_patterns
            values["released_patterns"] = sa.case(
                (matched.is_(None), released),
                (released.is_(None), matched),
                else_=released + "\n" + matched,
            )
            values["matched_patterns"] = None

        async def op(session: AsyncSession) -> dict[str, Any]:
            await atransition(
                session,
                RawMessage,
                MESSAGE_TRANSITIONS,
                target,
                key=message_id,
                values=values,
                audit=TransitionAudit,
                context=context,
                clock=self.clock,
                actor=actor,
            )
            return message_json(await session.get_one(RawMessage, message_id))

        return await self.db.run(op)

    async def listed(self, status: MessageStatus, limit: int) -> tuple[list[dict[str, Any]], int]:
        """The first ``limit`` messages in ``status``, by id, and how many there are."""

        async def op(session: AsyncSession) -> tuple[list[dict[str, Any]], int]:
            rows = await session.scalars(
                sa.select(RawMessage)
                .where(RawMessage.status == status)
                .order_by(RawMessage.id)
                .limit(limit)
            )
            items = [message_json(m) for m in rows]
            total = await session.scalar(
                sa.select(sa.func.count())
                .select_from(RawMessage)
                .where(RawMessage.status == status)
            )
            return items, int(total or 0)

        return await self.db.run(op)


def new_matches(
    matcher: SpamMatcher, patterns_of: dict[int, str], rows: list[Any]
) -> dict[int, dict[str, Any]]:
    """The rows ``matcher`` catches, each with its ``matched_patterns`` (one per line).

    A row carries ``released_patterns``, the patterns a reviewer released it from:
    those do not catch it again, and a row that only they match is not caught.
    ``patterns_of`` maps a rule's id to its (single-line) pattern.
    """
    found = matcher.match_batch([(row.brand, row.text) for row in rows])
    hits: dict[int, dict[str, Any]] = {}
    for row, ids in zip(rows, found, strict=True):
        if not ids:
            continue
        # two rules may share a pattern (say, one per brand): list it once
        patterns = list(dict.fromkeys(patterns_of[i] for i in ids))
        if row.released_patterns:  # a reviewer released it from these: not again
            released = set(row.released_patterns.split("\n"))
            patterns = [p for p in patterns if p not in released]
        if patterns:
            hits[row.id] = {"matched_patterns": "\n".join(patterns)}
    return hits


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel the tasks not done yet and wait for them to finish."""
    left = [t for t in tasks if not t.done()]
    for task in left:
        task.cancel()
    if left:
        await asyncio.gather(*left, return_exceptions=True)


def take(pending: dict[int, dict[str, Any]], n: int) -> dict[int, dict[str, Any]]:
    """Remove and return the first ``n`` entries of ``pending`` (in insertion order)."""
    keys = list(itertools.islice(pending, n))
    return {k: pending.pop(k) for k in keys}


class SpamCapture:
    """Moves the READY messages the enabled spam rules match to SPAM_REVIEW, on ``db``."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._matcher: SpamMatcher | None = None

    async def matcher(self) -> SpamMatcher:
        """The compiled matcher of the enabled rules; recompiled only when they change."""

        async def op(session: AsyncSession) -> list[Any]:
            result = await session.execute(
                sa.select(SpamRule.id, SpamRule.pattern, SpamRule.mode, SpamRule.brand).where(
                    SpamRule.enabled.is_(True)
                )
            )
            return list(result.all())

        rows = await self.db.run(op)
        rules = []
        for row in rows:
            try:
                rules.append(rule_from_row(row))
            except ValueError as exc:  # a broken rule must not stop capture
                logger.warning("spam rule %s skipped: %s", row.id, exc)
        current = self._matcher
        if current is None or current.fingerprint != fingerprint(rules):
            current = await asyncio.to_thread(SpamMatcher.compile, rules)
            self._matcher = current
        return current

    async def count_ready(self) -> int:
        """How many messages wait in READY."""

        async def op(session: AsyncSession) -> int:
            n = await session.scalar(
                sa.select(sa.func.count())
                .select_from(RawMessage)
                .where(RawMessage.status == MessageStatus.READY)
            )
            return int(n or 0)

        return await self.db.run(op)

    async def capture(self, batch_size: int = DEFAULT_CAPTURE_BATCH) -> dict[str, Any]:
        """Match every READY message; move the matches to SPAM_REVIEW, ``batch_size`` a statement.

        Batches are read by key (``id > cursor``), matched off the event loop,
        and written by one guarded ``UPDATE ... WHERE status IN ('READY')
        RETURNING id`` each: a message another capture moved first is simply
        not returned, so concurrent captures never count a message twice, and
        the counts come from ``RETURNING``, not from a re-read.

        A reviewer's release is respected: a message is not caught again by the
        patterns it was released from (``released_patterns``), only by a pattern
        that did not catch it before; ``matched_patterns`` then lists the new ones.

        The steps overlap: messages are read :data:`READ_CHUNK` at a time (the
        next chunk is read while this one is matched), and up to
        :data:`WRITERS` batch statements run at once; each read and each write
        is its own short transaction under the policy, and the guard in the
        ``UPDATE`` makes the split safe.
        """
        matcher = await self.matcher()
        by_id = {r.id: r.normalized for r in matcher.rules}  # single lines, joined by "\n"
        total = await self.count_ready()
        processed = updated = 0

        match = functools.partial(new_matches, matcher, by_id)
        chunk = max(batch_size, READ_CHUNK)
        writers = asyncio.Semaphore(WRITERS)

        def read(after: int) -> asyncio.Task[list[Any]]:
            return asyncio.ensure_future(
                self.db.run_core(functools.partial(self._read_batch, after, chunk))
            )

        async def write(hits: dict[int, dict[str, Any]]) -> int:
            async with writers:
                return await self.db.run_core(functools.partial(self._write_batch, hits))

        reading: asyncio.Task[list[Any]] | None = None
        writes: list[asyncio.Task[int]] = []
        pending: dict[int, dict[str, Any]] = {}  # matches not written yet, in key order
        try:
            reading = read(0)
            while rows := await reading:
                processed += len(rows)
                reading = read(rows[-1].id)  # prefetch while this chunk is matched
                # Matching many rows is CPU work: keep it off the event loop.
                hits = await asyncio.to_thread(match, rows) if len(rows) > 200 else match(rows)
                # One guarded statement per ``batch_size`` matches (not rows read): the
                # statements are as few as the matches allow, whatever the spam rate.
                pending.update(hits)
                while len(pending) >= batch_size:
                    writes.append(asyncio.ensure_future(write(take(pending, batch_size))))
                for task in [t for t in writes if t.done()]:
                    updated += task.result()  # a failed write raises here
                    writes.remove(task)
            if pending:
                writes.append(asyncio.ensure_future(write(take(pending, len(pending)))))
            for task in writes:
                updated += await task
            writes.clear()
        finally:
            # On an error (say, the breaker opened) stop the rest; what moved stays moved.
            await _cancel([*writes, *([reading] if reading is not None else [])])
        remaining = await self.count_ready()
        return {
            "success": True,
            "updatedCount": updated,
            "totalInQueue": total,
            "remainingInQueue": remaining,
            "processed": processed,
        }

    async def _read_batch(self, after: int, batch_size: int, conn: AsyncConnection) -> list[Any]:
        """The next READY messages after ``after``, by key."""
        result = await conn.execute(
            sa.select(
                RawMessage.id, RawMessage.brand, RawMessage.text, RawMessage.released_patterns
            )
            .where(RawMessage.status == MessageStatus.READY, RawMessage.id > after)
            .order_by(RawMessage.id)
            .limit(batch_size)
        )
        return list(result.all())

    async def _write_batch(self, hits: dict[int, dict[str, Any]], conn: AsyncConnection) -> int:
        """One guarded UPDATE (and its audit rows) for a batch's matches; the rows it moved."""
        outcome = await atransition(
            conn,
            RawMessage,
            MESSAGE_TRANSITIONS,
            MessageStatus.SPAM_REVIEW,
            row_values=hits,
            audit=TransitionAudit,
            context="spam-capture",
            clock=self.clock,
            actor=CAPTURE_ACTOR,
        )
        return outcome.count
