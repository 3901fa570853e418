"""CircuitBreaker: the spec's scenario, the states, classification, manual control,
stats, the store, the registry, configuration errors. FakeClock everywhere."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pathlib
import pickle
import subprocess
import sys
import traceback
from collections.abc import Callable
from typing import Any

import pytest

import suture
from suture import (
    BreakerOpen,
    BreakerRegistry,
    BreakerRejected,
    BreakerState,
    BreakerStateChanged,
    CircuitBreaker,
    CountWindow,
    MemoryBreakerStore,
    ResponseError,
    TimeWindow,
)
from suture.testing import FakeClock, capture_events

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class Dependency:
    """A fake downstream: fails while ``down``; counts every call that reached it."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self.error: BaseException = ConnectionError("connection refused")

    def __call__(self, value: int = 1) -> int:
        self.calls += 1
        if self.down:
            raise self.error
        return value

    async def acall(self, value: int = 1) -> int:
        await asyncio.sleep(0)
        return self(value)


def fail(breaker: CircuitBreaker, dep: Dependency, times: int) -> None:
    dep.down = True
    for _ in range(times):
        with pytest.raises(type(dep.error)):
            breaker.call(dep)
    dep.down = False


# --- the spec's scenario ---------------------------------------------------------------


def guard(breaker: CircuitBreaker, dep: Dependency, kind: str) -> Callable[..., Any]:
    """``dep`` through the breaker's ``kind`` decorator, awaitable either way."""
    if kind == "sync":
        wrapped = breaker(dep)

        async def sync(value: int = 1) -> int:
            return wrapped(value)

        return sync

    @breaker
    async def guarded(value: int = 1) -> int:
        return await dep.acall(value)

    return guarded


async def through(breaker: CircuitBreaker, dep: Dependency, kind: str, value: int) -> int:
    """``breaker.call`` or ``breaker.acall``, by ``kind``."""
    if kind == "sync":
        return breaker.call(dep, value)
    return await breaker.acall(dep.acall, value)


KINDS = pytest.mark.parametrize("kind", ["sync", "async"])


@KINDS
async def test_spec_scenario_five_failures_open_then_one_probe_closes(kind: str) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("payments", clock=clock)
    dep = Dependency()
    guarded = guard(breaker, dep, kind)

    dep.down = True
    for _ in range(4):
        with pytest.raises(ConnectionError):
            await guarded()
    assert breaker.state is CLOSED
    with pytest.raises(ConnectionError):
        await guarded()
    assert breaker.state is OPEN
    assert dep.calls == 5

    dep.down = False
    for _ in range(3):
        with pytest.raises(BreakerOpen) as info:
            await guarded()
        assert info.value.name == "payments"
        assert info.value.retry_after == pytest.approx(30.0)
    assert dep.calls == 5, "an open breaker never reaches the function"

    clock.advance(29.9)
    with pytest.raises(BreakerOpen) as info:
        await guarded()
    assert info.value.retry_after == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.state is HALF_OPEN
    assert await guarded(7) == 7
    assert dep.calls == 6
    assert breaker.state is CLOSED
    assert await through(breaker, dep, kind, 4) == 4


def test_success_resets_the_consecutive_run() -> None:
    breaker = CircuitBreaker("x", failure_threshold=3, clock=FakeClock())
    dep = Dependency()
    for _ in range(5):
        fail(breaker, dep, 2)
        assert breaker.call(dep) == 1
    assert breaker.state is CLOSED
    fail(breaker, dep, 3)
    assert breaker.state is OPEN


def test_events_for_every_change_and_rejection(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("db", failure_threshold=2, reset_timeout=10, clock=clock)
    dep = Dependency()
    with capture_events() as events, caplog.at_level("DEBUG", logger="suture"):
        fail(breaker, dep, 2)
        with pytest.raises(BreakerOpen):
            breaker.call(dep)
        clock.advance(10)
        breaker.call(dep)
    changes = [(e.source, e.target) for e in events.of(BreakerStateChanged)]
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert events.of(BreakerStateChanged)[0].reason == "2 consecutive failures"
    rejected = events.of(BreakerRejected)
    assert [(e.name, e.retry_after) for e in rejected] == [("db", 10.0)]
    messages = [r.getMessage() for r in caplog.records if r.name == "suture"]
    assert "breaker db: CLOSED -> OPEN (2 consecutive failures)" in messages
    assert any("call rejected" in m for m in messages)


# --- half-open ---------------------------------------------------------------------------


def test_probe_failure_reopens_for_a_growing_duration_reset_on_close() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "x",
        failure_threshold=1,
        reset_timeout=10,
        open_factor=2.0,
        max_reset_timeout=35,
        clock=clock,
    )
    dep = Dependency()
    fail(breaker, dep, 1)
    expected = [10.0, 20.0, 35.0, 35.0]
    for wait in expected:
        with pytest.raises(BreakerOpen) as info:
            breaker.call(dep)
        assert info.value.retry_after == pytest.approx(wait)
        clock.advance(wait)
        assert breaker.state is HALF_OPEN
        fail(breaker, dep, 1)  # the probe fails: open again, longer
        assert breaker.state is OPEN
    assert breaker.stats().open_count == 5
    clock.advance(35)
    assert breaker.call(dep) == 1
    assert breaker.state is CLOSED
    assert breaker.stats().open_count == 0
    fail(breaker, dep, 1)
    with pytest.raises(BreakerOpen) as info:
        breaker.call(dep)
    assert info.value.retry_after == pytest.approx(10.0)


def test_total_opens_outlives_the_open_run_and_reset_clears_it() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("x", failure_threshold=1, reset_timeout=10, clock=clock)
    dep = Dependency()
    fail(breaker, dep, 1)  # CLOSED -> OPEN
    clock.advance(10)
    fail(breaker, dep, 1)  # HALF_OPEN -> OPEN
    clock.advance(10)
    assert breaker.call(dep) == 1  # the probe closes it
    stats = breaker.stats()
    assert (stats.state, stats.open_count, stats.total_opens) == (CLOSED, 0, 2)
    assert stats.as_dict()["total_opens"] == 2
    breaker.force_open()
    assert breaker.stats().total_opens == 3
    breaker.reset()
    assert breaker.stats().total_opens == 0


def test_success_threshold_needs_that_many_probes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "x", failure_threshold=1, reset_timeout=5, success_threshold=3, clock=clock
    )
    dep = Dependency()
    fail(breaker, dep, 1)
    clock.advance(5)
    breaker.call(dep)
    breaker.call(dep)
    assert breaker.state is HALF_OPEN
    breaker.call(dep)
    assert breaker.state is CLOSED


def test_half_open_admits_only_the_permitted_probes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "x", failure_threshold=1, half_open_max_calls=2, success_threshold=2, clock=clock
    )
    dep = Dependency()
    fail(breaker, dep, 1)
    clock.advance(30)
    admitted: list[int] = []
    rejected: list[float] = []

    def probe(depth: int) -> int:
        # While this probe runs, another caller arrives (nested, so all run at once).
        if depth < 3:
            try:
                breaker.call(probe, depth + 1)
            except BreakerOpen as exc:
                rejected.append(exc.retry_after)
        admitted.append(depth)
        return depth

    assert breaker.call(probe, 0) == 0
    assert admitted == [1, 0], "two probes at once; the third caller was turned away"
    assert len(rejected) == 1
    assert 0 < rejected[0] <= 1.0
    assert breaker.state is CLOSED  # two probes succeeded


def test_a_probe_that_never_finishes_does_not_leave_it_stuck() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("x", failure_threshold=1, reset_timeout=10, clock=clock)
    dep = Dependency()
    fail(breaker, dep, 1)
    clock.advance(10)
    results: list[str] = []

    def hanging_probe() -> None:
        # Inside the probe: time passes past the reset timeout.
        clock.advance(10)
        with pytest.raises(BreakerOpen):
            breaker.call(dep)  # the hung probe counts as failed: reopened
        results.append("reopened" if breaker.state is OPEN else "stuck")

    breaker.call(hanging_probe)
    assert results == ["reopened"]
    assert breaker.state is OPEN, "the late success of the old probe does not close it"
    clock.advance(10)
    assert breaker.call(dep) == 1
    assert breaker.state is CLOSED


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("sync", asyncio.CancelledError()),
        ("sync", KeyboardInterrupt()),
        ("sync", KeyError("ignored")),
        ("async", asyncio.CancelledError()),
        ("async", KeyError("ignored")),
    ],
    ids=[
        "sync-cancelled",
        "sync-keyboard-interrupt",
        "sync-ignored-type",
        "async-cancelled",
        "async-ignored-type",
    ],
)
async def test_ignored_and_cancelled_probes_release_their_permit(
    kind: str, error: BaseException
) -> None:
    """(An async probe cannot end in KeyboardInterrupt: asyncio stops the loop for it.)"""
    clock = FakeClock()
    breaker = CircuitBreaker("x", failure_threshold=1, ignore=(KeyError,), clock=clock)
    dep = Dependency()
    fail(breaker, dep, 1)
    clock.advance(30)
    if kind == "sync":
        dep.down, dep.error = True, error
        with pytest.raises(type(error)):
            breaker.call(dep)
    else:
        started, finish = asyncio.Event(), asyncio.Event()

        @breaker
        async def probe() -> int:
            started.set()
            await finish.wait()
            raise error

        task = asyncio.create_task(probe())
        await started.wait()
        with pytest.raises(BreakerOpen):  # the running probe holds the one permit
            await breaker.acall(dep.acall)
        if isinstance(error, asyncio.CancelledError):
            task.cancel()
        else:
            finish.set()
        with pytest.raises(type(error)):
            await task
    assert breaker.state is HALF_OPEN, "counted neither way"
    dep.down = False
    assert await through(breaker, dep, kind, 5) == 5  # the permit came back: the next probe runs
    assert breaker.state is CLOSED
    assert breaker.stats().total_ignored == 1


# --- what counts as a failure -----------------------------------------------------------


def test_non_transient_errors_do_not_trip_it() -> None:
    breaker = CircuitBreaker("x", failure_threshold=2, clock=FakeClock())
    dep = Dependency()
    dep.error = ResponseError("Not Found", status=404)
    fail(breaker, dep, 10)
    assert breaker.state is CLOSED
    stats = breaker.stats()
    assert stats.total_failures == 0
    assert stats.total_successes == 10  # the dependency answered
    dep.error = ResponseError("Bad Gateway", status=502)
    fail(breaker, dep, 2)
    assert breaker.state is OPEN


def test_on_and_ignore() -> None:
    breaker = CircuitBreaker("x", failure_threshold=1, on=ValueError, ignore=(KeyError,))
    dep = Dependency()
    dep.error = ConnectionError("not counted by on=ValueError")
    fail(breaker, dep, 3)
    dep.error = KeyError("ignored")
    fail(breaker, dep, 3)
    assert breaker.state is CLOSED
    stats = breaker.stats()
    assert (stats.total_successes, stats.total_ignored, stats.total_failures) == (3, 3, 0)
    dep.error = ValueError("counted")
    fail(breaker, dep, 1)
    assert breaker.state is OPEN


def test_a_call_admitted_before_the_breaker_opened_does_not_count_later() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("x", failure_threshold=1, clock=clock)
    dep = Dependency()

    def slow_failure() -> None:
        fail(breaker, dep, 1)  # meanwhile another call opens the breaker...
        clock.advance(30)  # ...and it becomes half-open
        assert breaker.state is HALF_OPEN
        raise ConnectionError("late")

    with pytest.raises(ConnectionError):
        breaker.call(slow_failure)
    assert breaker.state is HALF_OPEN, "a late failure from the closed period is not a probe"


# --- fallback ----------------------------------------------------------------------------


def test_fallback_instead_of_rejection_sync_and_async() -> None:
    seen: list[BreakerOpen] = []

    def fallback(exc: BreakerOpen) -> int:
        seen.append(exc)
        return -1

    breaker = CircuitBreaker("x", failure_threshold=1, fallback=fallback, clock=FakeClock())
    dep = Dependency()
    fail(breaker, dep, 1)
    assert breaker.call(dep) == -1
    assert dep.calls == 1
    assert seen[0].name == "x"

    async def afallback(exc: BreakerOpen) -> int:
        return -2

    abreaker = CircuitBreaker("y", failure_threshold=1, fallback=afallback, clock=FakeClock())
    abreaker.force_open()
    assert asyncio.run(abreaker.acall(dep.acall)) == -2
    with pytest.raises(TypeError, match="awaitable"):
        abreaker.call(dep)


# --- manual control ---------------------------------------------------------------------


def test_force_open_holds_until_closed_or_reset() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("x", reset_timeout=5, clock=clock)
    dep = Dependency()
    with capture_events() as events:
        breaker.force_open()
    assert events.of(BreakerStateChanged)[0].reason == "forced open"
    clock.advance(1000)
    assert breaker.state is OPEN
    with pytest.raises(BreakerOpen) as info:
        breaker.call(dep)
    assert info.value.retry_after == 5.0
    breaker.force_closed()
    assert breaker.state is CLOSED
    assert breaker.call(dep) == 1
    fail(breaker, dep, 5)
    assert breaker.state is OPEN, "a force-closed breaker trips again"
    breaker.reset()
    assert breaker.state is CLOSED
    assert breaker.stats().total_calls == 0
    assert dep.calls == 6


def test_registry_reset_all() -> None:
    registry = BreakerRegistry()
    a = registry.get("a", failure_threshold=1, clock=FakeClock())
    b = registry.get("b", failure_threshold=1, clock=FakeClock())
    a.force_open()
    b.force_open()
    registry.reset_all()
    assert [x.state for x in registry] == [CLOSED, CLOSED]


# --- stats -------------------------------------------------------------------------------


def test_stats_snapshot_and_as_dict() -> None:
    clock = FakeClock(start=100.0, wall_start=1_700_000_000.0)
    breaker = CircuitBreaker("x", failure_threshold=3, reset_timeout=20, clock=clock)
    dep = Dependency()
    breaker.call(dep)
    breaker.call(dep)
    fail(breaker, dep, 1)
    stats = breaker.stats()
    assert stats.state is CLOSED
    assert (stats.calls, stats.successes, stats.failures) == (3, 2, 1)
    assert stats.failure_rate == pytest.approx(1 / 3)
    assert stats.consecutive_failures == 1
    assert stats.opened_at is None and stats.retry_after is None
    fail(breaker, dep, 2)
    with pytest.raises(BreakerOpen):
        breaker.call(dep)
    clock.advance(5)
    stats = breaker.stats()
    assert stats.state is OPEN
    assert stats.opened_at == 1_700_000_000.0
    assert stats.retry_after == pytest.approx(15.0)
    assert stats.rejections == 1
    assert (stats.total_calls, stats.total_successes, stats.total_failures) == (6, 2, 3)
    assert stats.total_rejections == 1
    with pytest.raises(AttributeError):
        stats.state = CLOSED  # type: ignore[misc]
    data = stats.as_dict()
    assert data["state"] == "open"
    assert json.loads(json.dumps(data)) == data


def test_slow_calls_are_a_dimension_and_outcomes_count_every_call_once() -> None:
    """A slow success is ``slow``, a slow failure ``failed``; both are in the slow totals."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        "x",
        window=CountWindow(100),
        slow_call_duration=1.0,
        failure_rate_threshold=1.0,
        reset_timeout=5,
        clock=clock,
    )

    def call(seconds: float, error: BaseException | None = None) -> None:
        def run() -> None:
            clock.advance(seconds)
            if error is not None:
                raise error

        with contextlib.suppress(Exception):
            breaker.call(run)

    call(0.1)
    call(2.0)  # a slow success
    call(2.0, ConnectionError())  # a slow failure
    call(0.1, ConnectionError())  # a fast failure
    call(2.0, ValueError())  # not transient: the dependency answered, slowly
    stats = breaker.stats()
    assert (stats.total_slow_successes, stats.total_slow_failures) == (2, 1)
    assert dict(stats.outcomes()) == {
        "successful": 1,
        "slow": 2,
        "failed": 2,
        "ignored": 0,
        "rejected": 0,
    }
    breaker.force_open()
    call(0.1)  # rejected
    stats = breaker.stats()
    assert dict(stats.outcomes())["rejected"] == 1
    assert sum(n for _, n in stats.outcomes()) == stats.total_calls == 6
    breaker.reset()
    stats = breaker.stats()
    assert sum(n for _, n in stats.outcomes()) == stats.total_calls == 0
    assert stats.as_dict()["total_slow_successes"] == 0


def test_a_slow_probe_counts_as_slow_and_reopens() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "x", window=CountWindow(2), slow_call_duration=1.0, reset_timeout=5, clock=clock
    )
    dep = Dependency()
    dep.down = True
    for _ in range(2):
        with contextlib.suppress(ConnectionError):
            breaker.call(dep)
    assert breaker.state is OPEN
    clock.advance(5)

    def slow_probe() -> int:
        clock.advance(2.0)
        return 1

    assert breaker.call(slow_probe) == 1
    stats = breaker.stats()
    assert stats.state is OPEN
    assert dict(stats.outcomes())["slow"] == stats.total_slow_successes == 1
    assert sum(n for _, n in stats.outcomes()) == stats.total_calls == 3


# --- the store ---------------------------------------------------------------------------


def test_breakers_sharing_a_store_share_their_state() -> None:
    clock = FakeClock()
    store = MemoryBreakerStore()
    a = CircuitBreaker("db", failure_threshold=2, reset_timeout=10, store=store, clock=clock)
    b = CircuitBreaker("db", failure_threshold=2, reset_timeout=10, store=store, clock=clock)
    dep = Dependency()
    fail(a, dep, 2)
    assert a.state is OPEN
    with capture_events() as events:
        with pytest.raises(BreakerOpen) as info:
            b.call(dep)
    assert info.value.retry_after == pytest.approx(10.0)
    assert dep.calls == 2
    change = events.of(BreakerStateChanged)[0]
    assert (change.source, change.target) == (CLOSED, OPEN)
    assert change.reason.startswith("shared store: 2 consecutive failures")
    clock.advance(10)
    assert b.call(dep) == 1  # b probes and closes: a learns it
    assert a.state is CLOSED
    assert a.call(dep) == 1
    # A late breaker starts from what the store holds.
    a.force_open()
    c = CircuitBreaker("db", store=store, clock=clock)
    assert c.state is OPEN
    c.close()
    record = store.load("db")
    assert record is not None and record.forced


# --- the registry ------------------------------------------------------------------------


def test_registry_get_or_create_and_conflicts() -> None:
    registry = BreakerRegistry()
    db = registry.get("db", failure_threshold=3, reset_timeout=10)
    assert registry.get("db") is db
    assert registry.get("db", failure_threshold=3, reset_timeout=10.0) is db
    with pytest.raises(ValueError, match=r"failure_threshold: 3 != 4"):
        registry.get("db", failure_threshold=4, reset_timeout=10)
    other = registry.get("cache")
    assert [b.name for b in registry] == ["db", "cache"]
    assert "db" in registry and len(registry) == 2
    assert registry["cache"] is other
    snap = registry.snapshot()
    assert set(snap) == {"db", "cache"} and snap["db"].state is CLOSED
    with pytest.raises(ValueError, match="different breaker"):
        registry.add(CircuitBreaker("db"))
    assert registry.remove("db") is db
    assert "db" not in registry
    registry.clear()
    assert len(registry) == 0


def test_the_module_level_registry(unique_name: str) -> None:
    breaker = suture.breakers.get(unique_name, failure_threshold=2)
    try:
        assert suture.breakers.get(unique_name) is breaker
        assert unique_name in suture.breakers.snapshot()
    finally:
        suture.breakers.remove(unique_name)


# --- decorator details -----------------------------------------------------------------


def test_decorator_keeps_the_function_identity() -> None:
    breaker = CircuitBreaker("x")

    @breaker
    def documented(a: int) -> int:
        """Docs."""
        return a

    assert documented.__name__ == "documented"
    assert documented.__doc__ == "Docs."
    assert documented.__suture_breaker__ is breaker  # type: ignore[attr-defined]
    assert documented(2) == 2
    with pytest.raises(TypeError, match="expected a function"):
        breaker(42)  # type: ignore[call-overload]


def test_breaker_open_error_is_typed_and_picklable() -> None:
    breaker = CircuitBreaker("x", failure_threshold=1, clock=FakeClock())
    breaker.force_open()
    with pytest.raises(BreakerOpen) as info:
        breaker.call(Dependency())
    err = info.value
    assert type(err) is BreakerOpen
    assert err.args == ("x", 30.0)
    assert str(err) == "circuit breaker 'x' is open; retry after 30.0s"
    assert err.transient is False
    again = pickle.loads(pickle.dumps(err))
    assert (again.name, again.retry_after) == ("x", 30.0)


def test_rejecting_builds_the_same_error_as_the_constructor() -> None:
    fast, slow = BreakerOpen.rejecting("x", 2.5), BreakerOpen("x", 2.5)
    assert type(fast) is BreakerOpen
    assert (fast.args, fast.name, fast.retry_after) == (slow.args, slow.name, slow.retry_after)
    assert str(fast) == str(slow)
    again = pickle.loads(pickle.dumps(fast))
    assert (again.name, again.retry_after) == ("x", 2.5)


def test_a_traceback_through_the_breaker_shows_its_lines() -> None:
    breaker = CircuitBreaker("x", clock=FakeClock())

    @breaker
    def broken() -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError) as info:
        broken()
    lines = "".join(traceback.format_tb(info.tb))
    assert "result = fn(*args, **kwargs)" in lines


def test_rejections_are_built_only_for_someone_listening(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only the default logger listens at INFO: a rejection is counted, not announced."""
    assert suture.events.listeners() == (suture.events.log_event,)
    caplog.set_level(logging.INFO, logger="suture")
    assert not suture.events.listening(BreakerRejected)
    assert suture.events.listening(BreakerStateChanged)
    breaker = CircuitBreaker("quiet", clock=FakeClock())
    breaker.force_open()
    with pytest.raises(BreakerOpen):
        breaker.call(Dependency())
    assert not [r for r in caplog.records if "rejected" in r.getMessage()]
    caplog.set_level(logging.DEBUG, logger="suture")
    assert suture.events.listening(BreakerRejected)
    with capture_events() as events:
        assert suture.events.listening(BreakerRejected)
        with pytest.raises(BreakerOpen):
            breaker.call(Dependency())
    assert [type(e) for e in events] == [BreakerRejected]
    assert breaker.stats().total_rejections == 2
    remove = suture.events.subscribe(lambda event: None)
    suture.events.unsubscribe(suture.events.log_event)
    try:
        assert suture.events.listening(BreakerRejected)
    finally:
        remove()
        suture.events.subscribe(suture.events.log_event)
    assert suture.events.listeners() == (suture.events.log_event,)


def test_the_package_keeps_every_public_name_of_the_module() -> None:
    import suture.breaker as package

    names = {
        "TRANSITIONS", "BreakerConfig", "BreakerFallback", "BreakerOptions", "BreakerRecord",
        "BreakerRegistry", "BreakerState", "BreakerStats", "BreakerStore", "CircuitBreaker",
        "MemoryBreakerStore", "RecordListener", "breakers",
    }  # fmt: skip
    assert set(package.__all__) == names
    assert package.__all__ == sorted(package.__all__, key=lambda n: (not n.isupper(), n))
    for name in names:
        assert getattr(package, name) is not None


# --- configuration -----------------------------------------------------------------------

BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"failure_threshold": 0}, ValueError, r"failure_threshold=0: must be an integer >= 1"),
    ({"half_open_max_calls": 0}, ValueError, r"half_open_max_calls=0"),
    ({"success_threshold": -1}, ValueError, r"success_threshold=-1"),
    ({"minimum_calls": 0}, ValueError, r"minimum_calls=0"),
    ({"reset_timeout": -1}, ValueError, r"reset_timeout=-1: must be greater than 0"),
    ({"reset_timeout": 0}, ValueError, r"reset_timeout=0"),
    (
        {"failure_rate_threshold": 0},
        ValueError,
        r"failure_rate_threshold=0: .*\(0, 1\]",
    ),
    ({"failure_rate_threshold": 1.5}, ValueError, r"failure_rate_threshold=1.5"),
    ({"slow_call_rate_threshold": 0.0}, ValueError, r"slow_call_rate_threshold=0.0"),
    (
        {"slow_call_duration": 1.0},
        ValueError,
        r"slow_call_duration=1.0: .* needs a window",
    ),
    (
        {"slow_call_duration": -1.0, "window": CountWindow(5)},
        ValueError,
        r"slow_call_duration=-1.0",
    ),
    ({"open_factor": 0.5}, ValueError, r"open_factor=0.5: must be a finite number >= 1"),
    ({"max_reset_timeout": 5, "reset_timeout": 10}, ValueError, r"max_reset_timeout=5"),
    ({"window": 10}, TypeError, r"window=10: expected None"),
    ({"on": 3}, TypeError, r"on=3"),
    ({"ignore": (1,)}, TypeError, r"ignore=\(1,\)"),
    ({"fallback": "x"}, TypeError, r"fallback='x'"),
    ({"failure_treshold": 3}, TypeError, r"unknown option 'failure_treshold'; the options are"),
    ({"clock": 3}, TypeError, r"clock=3: expected a suture.Clock"),
    ({"store": "redis"}, TypeError, r"store='redis': expected None or a suture.BreakerStore"),
]


@pytest.mark.parametrize(("options", "error", "message"), BAD)
def test_bad_configuration_names_parameter_value_and_rule(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        CircuitBreaker("x", **options)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CountWindow(0), r"size=0: must be an integer >= 1"),
        (lambda: TimeWindow(0), r"seconds=0: must be greater than 0"),
        (lambda: TimeWindow(-5), r"seconds=-5"),
        (lambda: TimeWindow(10, buckets=0), r"buckets=0"),
    ],
)
def test_bad_windows(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_name_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="name="):
        CircuitBreaker("")


# --- typing ------------------------------------------------------------------------------


def test_typing_with_mypy_strict() -> None:
    """mypy --strict keeps the wrapped signatures (assert_type in tests/typing_breaker.py)."""
    target = pathlib.Path(__file__).with_name("typing_breaker.py")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(target)],
        capture_output=True,
        text=True,
        check=False,
        cwd=pathlib.Path(__file__).parent.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the documentation's examples run ---------------------------------------------------

DOCS = pathlib.Path(__file__).parent.parent / "docs" / "breaker.md"


def _doc_examples() -> list[str]:
    blocks = DOCS.read_text(encoding="utf-8").split("```python\n")[1:]
    return [block.split("```", 1)[0] for block in blocks]


@pytest.mark.parametrize("code", _doc_examples())
def test_docs_examples_run(code: str) -> None:
    exec(compile(code, str(DOCS), "exec"), {"__name__": "docs_example"})
