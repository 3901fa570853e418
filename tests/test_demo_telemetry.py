"""The dashboard's numbers (per-second buckets fed by events) and the seed data."""

from __future__ import annotations

from datetime import UTC, datetime

from suture.demo.models import MESSAGE_TRANSITIONS, TASK_TRANSITIONS, MessageStatus, TaskStatus
from suture.demo.seed import BRANDS, generate
from suture.demo.telemetry import Telemetry
from suture.events import (
    BreakerStateChanged,
    FaultInjected,
    RequestShed,
    RetryScheduled,
    TransitionApplied,
    TransitionRejected,
    emit,
)
from suture.testing import FakeClock


def retry_event() -> RetryScheduled:
    return RetryScheduled(
        name="database", attempt=1, attempts=5, delay=0.1, error=ConnectionError(), elapsed=0.0
    )


def test_counts_land_in_per_second_buckets() -> None:
    clock = FakeClock(start=100.0)
    t = Telemetry(clock, horizon=60)
    t.start()
    try:
        emit(retry_event())
        emit(retry_event())
        emit(FaultInjected(target="database", kind="error"))
        t.db_call(ConnectionError("down"))
        t.db_call(None)
        t.db_call(ValueError("a bug is not an outage"))
        t.pool_sample(0.25)
        clock.advance(1)
        emit(RequestShed(name="db-pool", source="pool", priority=1, level=2, retry_after=2.0))
        emit(TransitionRejected(entity="task", source="DONE", target="OPEN", reason="terminal"))
        emit(TransitionApplied(entity="raw_message", target="SPAM_REVIEW", count=40))
        clock.advance(2)
    finally:
        t.stop()
    emit(retry_event())  # after stop: not counted
    series = t.series(5)  # seconds 99..103; the events came at 100 and 101
    assert series["t"] == [-4, -3, -2, -1, 0]
    assert series["retries"] == [0, 2, 0, 0, 0]
    assert series["faults"] == [0, 1, 0, 0, 0]
    assert series["shed"] == [0, 0, 1, 0, 0]
    assert series["rejected_transitions"] == [0, 0, 1, 0, 0]
    assert series["applied_transitions"] == [0, 0, 40, 0, 0]
    assert series["db_calls"] == [0, 3, 0, 0, 0]
    assert series["errorRate"] == [0.0, 1 / 3, 0.0, 0.0, 0.0]
    # the pool gauge carries its last sample forward
    assert series["pool"] == [None, 0.25, 0.25, 0.25, 0.25]
    assert t.totals["retries"] == 2
    rates = t.rates(window=5)
    assert rates["retries"] == 2 / 5
    assert rates["errorRate"] == 1 / 3


def test_recent_events_newest_first_with_wall_time() -> None:
    clock = FakeClock(start=10.0, wall_start=1_800_000_000.0)
    t = Telemetry(clock, recent=2)
    t.on_event(BreakerStateChanged(name="database", source="closed", target="open", reason="x"))
    clock.advance(1)
    t.on_event(TransitionRejected(entity="task", source="DONE", target="OPEN", reason="terminal"))
    t.on_event(retry_event())  # counted, not listed
    t.on_event(TransitionApplied(entity="task", target="DONE", count=1))
    recent = list(t.recent)
    assert [e["event"] for e in recent] == ["TransitionApplied", "TransitionRejected"]
    assert recent[0]["at"] == 1_800_000_001.0
    assert "rejected" in recent[1]["message"]


def test_old_buckets_fall_off_the_horizon() -> None:
    clock = FakeClock()
    t = Telemetry(clock, horizon=3)
    for _ in range(10):
        t.count("retries")
        clock.advance(1)
    assert sum(t.series(10)["retries"]) == 3
    assert t.totals["retries"] == 10


def test_seed_data_is_realistic_and_deterministic() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    data = generate(tasks=300, messages=1000, rules=200, seed=3, now=now)
    again = generate(tasks=300, messages=1000, rules=200, seed=3, now=now)
    assert data == again
    assert (len(data.tasks), len(data.messages), len(data.rules)) == (300, 1000, 200)
    waiting = [t for t in data.tasks if t["status"] is TaskStatus.ASSISTANCE_REQUIRED]
    assert 30 < len(waiting) < 100
    assert all(t["assistance_notes"] and t["assistance_requested_at"] for t in waiting)
    assert {m["brand"] for m in data.messages} == set(BRANDS)
    assert all(m["status"] is MessageStatus.READY for m in data.messages)
    patterns = [(r["pattern"], r["mode"]) for r in data.rules]
    assert len(set(patterns)) == len(patterns)
    assert {r["mode"] for r in data.rules} == {"CONTAINS", "WORD", "REGEX", "EXACT"}


def test_transition_tables() -> None:
    assert MESSAGE_TRANSITIONS.can(MessageStatus.READY, MessageStatus.SPAM_REVIEW)
    assert not MESSAGE_TRANSITIONS.can(MessageStatus.SPAM_REVIEW, MessageStatus.PROMOTED)
    assert MESSAGE_TRANSITIONS.terminal == {MessageStatus.PROMOTED, MessageStatus.SPAM_ARCHIVED}
    assert TASK_TRANSITIONS.terminal == {TaskStatus.DONE}
    assert TASK_TRANSITIONS.sources_of(TaskStatus.IN_PROGRESS) == {
        TaskStatus.OPEN,
        TaskStatus.ASSISTANCE_REQUIRED,
    }
