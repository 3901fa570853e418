"""Concurrent spam captures on the real PostgreSQL: each message captured once."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from suture.demo.app import Service, Settings
from suture.demo.models import MessageStatus, RawMessage, SpamRule, TransitionAudit
from suture.demo.spam import Rule, reference_matches

pytestmark = pytest.mark.postgres


@pytest.fixture
async def svc(pg_url: str, unique_name: str) -> AsyncIterator[Service]:
    service = Service(
        Settings(
            database_url=pg_url,
            schema=unique_name,
            tasks=5,
            messages=3000,
            rules=120,
            background=False,
            rand=random.Random(5),
        )
    )
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
        engine = sa.create_engine(pg_url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE'))
        engine.dispose()


async def expected_spam(svc: Service) -> set[int]:
    async with svc.engine.connect() as conn:
        rules = [
            Rule(r.id, r.pattern, r.mode, r.brand)
            for r in await conn.execute(
                sa.select(SpamRule.id, SpamRule.pattern, SpamRule.mode, SpamRule.brand).where(
                    SpamRule.enabled.is_(True)
                )
            )
        ]
        rows = await conn.execute(sa.select(RawMessage.id, RawMessage.brand, RawMessage.text))
        return {r.id for r in rows if reference_matches(rules, r.brand, r.text)}


async def test_concurrent_captures_count_each_message_once(svc: Service) -> None:
    expected = await expected_spam(svc)
    assert len(expected) > 100
    results = await asyncio.gather(
        *(svc.capture_spam(size) for size in (50, 100, 250, 1000, 100, 7))
    )
    assert sum(r["updatedCount"] for r in results) == len(expected)
    async with svc.engine.connect() as conn:
        in_review = {
            r.id
            for r in await conn.execute(
                sa.select(RawMessage.id).where(RawMessage.status == MessageStatus.SPAM_REVIEW)
            )
        }
        audit = [
            r.record_key
            for r in await conn.execute(
                sa.select(TransitionAudit.record_key).where(
                    TransitionAudit.context == "spam-capture"
                )
            )
        ]
    assert in_review == expected
    # one audit row per captured message: nobody moved a message twice
    assert len(audit) == len(set(audit)) == len(expected)
    for r in results:
        assert r["success"] is True
        assert r["processed"] >= r["updatedCount"]
    assert await svc.count_ready() == 3000 - len(expected)
