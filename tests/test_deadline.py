"""Overload is not failure, and every request has a deadline (issue 11): unit tests, fake clock."""

from __future__ import annotations

import asyncio
import contextvars
import math
import threading
from datetime import timedelta
from typing import Any

import pytest

import suture
from suture.classify import is_overload
from suture.deadline import limit
from suture.testing import FakeClock, capture_events

# --- is_overload ------------------------------------------------------------------------


def _sqlalchemy_pool_timeout() -> BaseException:
    sa_exc = pytest.importorskip("sqlalchemy.exc")
    return sa_exc.TimeoutError("QueuePool limit of size 5 overflow 0 reached, timeout 2.00")


def test_overload_is_a_full_local_queue_not_a_dependency_error() -> None:
    assert is_overload(suture.Overloaded("limit 10", 1.0, source="limiter"))
    assert is_overload(_sqlalchemy_pool_timeout())
    assert not is_overload(ConnectionError("reset by peer"))
    assert not is_overload(TimeoutError("read timed out"))
    assert not is_overload(suture.DeadlineExceeded("here", 3.0))
    assert not is_overload(asyncio.CancelledError())
    assert not is_overload(ValueError("bug"))


def test_an_error_may_say_it_is_overload_and_users_extend_it() -> None:
    class QueueFull(Exception):
        overload = True

    class MyPoolTimeout(Exception):
        pass

    assert is_overload(QueueFull())
    assert not is_overload(MyPoolTimeout())
    mine = is_overload.extend(types=(MyPoolTimeout,))
    assert mine(MyPoolTimeout()) and mine(QueueFull())
    by_predicate = is_overload.extend(predicate=lambda e: "semaphore" in str(e))
    assert by_predicate(TimeoutError("semaphore wait"))
    with pytest.raises(TypeError, match="types="):
        is_overload.extend(types=(int,))  # type: ignore[arg-type]


def test_a_breaker_does_not_count_overload_by_default() -> None:
    clock = FakeClock()
    breaker = suture.CircuitBreaker("ov", failure_threshold=2, clock=clock)
    pool_timeout = _sqlalchemy_pool_timeout()

    def shed() -> None:
        raise pool_timeout

    for _ in range(10):
        with pytest.raises(type(pool_timeout)):
            breaker.call(shed)
    stats = breaker.stats()
    assert breaker.state is suture.BreakerState.CLOSED
    assert stats.failures == 0 and stats.total_ignored == 10

    counting = suture.CircuitBreaker("ov2", failure_threshold=2, clock=clock, overload=())
    for _ in range(2):
        with pytest.raises(type(pool_timeout)):
            counting.call(shed)
    assert counting.state is suture.BreakerState.OPEN  # the user chose to count it


def test_a_retry_does_not_retry_overload_by_default() -> None:
    clock = FakeClock()
    calls = 0
    pool_timeout = _sqlalchemy_pool_timeout()

    def shed() -> None:
        nonlocal calls
        calls += 1
        raise pool_timeout

    with pytest.raises(type(pool_timeout)):
        suture.Retry(attempts=3, initial_delay=0.1, clock=clock).call(shed)
    assert calls == 1
    calls = 0
    with pytest.raises(type(pool_timeout)):
        suture.Retry(attempts=3, initial_delay=0.1, clock=clock, overload=()).call(shed)
    assert calls == 3  # overload=() leaves it to on= (is_transient: a pool timeout is transient)


# --- suture.deadline: bad input ----------------------------------------------------------


@pytest.mark.parametrize("bad", [0, 0.0, -1, -0.5, timedelta(0), timedelta(seconds=-3)])
def test_deadline_rejects_zero_and_negative(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"seconds=.*greater than 0"):
        suture.deadline(bad)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_deadline_rejects_nan_and_inf(bad: float) -> None:
    with pytest.raises(ValueError, match=r"seconds=.*finite"):
        suture.deadline(bad)


@pytest.mark.parametrize("bad", ["3", None, True, [1], object()])
def test_deadline_rejects_non_numbers(bad: Any) -> None:
    with pytest.raises(TypeError, match=r"seconds="):
        suture.deadline(bad)


# --- arithmetic --------------------------------------------------------------------------


def test_remaining_counts_down_and_nested_deadlines_only_shorten() -> None:
    clock = FakeClock()
    assert suture.remaining() is None
    with suture.deadline(3.0, clock=clock) as outer:
        assert suture.remaining() == 3.0
        clock.advance(1.0)
        assert suture.remaining() == 2.0
        with suture.deadline(10.0, clock=clock) as inner:  # cannot extend
            assert inner is outer
            assert suture.remaining() == 2.0
        with suture.deadline(0.5, clock=clock) as tighter:
            assert tighter.budget == 0.5
            assert suture.remaining() == 0.5
            clock.advance(0.5)
            assert tighter.expired()
            with pytest.raises(suture.DeadlineExceeded, match="pool checkout"):
                limit(2.0, where="pool checkout")
        assert suture.remaining() == 1.5  # back to the outer one
        assert limit(5.0, where="x") == 1.5
        assert limit(1.0, where="x") == 1.0
        assert limit(None, where="x") == 1.5
    assert suture.remaining() is None
    assert limit(None, where="x") is None
    assert limit(2.0, where="x") == 2.0


def test_a_scope_is_entered_once_at_a_time() -> None:
    scope = suture.deadline(1.0, clock=FakeClock())
    with scope, pytest.raises(RuntimeError, match="already entered"):
        scope.__enter__()
    with scope:  # reusable once left
        assert suture.remaining() == 1.0


async def test_deadline_follows_await_and_tasks() -> None:
    clock = FakeClock()

    async def child() -> float | None:
        await asyncio.sleep(0)
        return suture.remaining()

    async with suture.deadline(2.0, clock=clock):
        clock.advance(0.5)
        assert await child() == 1.5
        assert await asyncio.create_task(child()) == 1.5
        assert await asyncio.to_thread(suture.remaining) == 1.5
    assert await child() is None


def test_deadline_reaches_threads_started_with_copy_context() -> None:
    clock = FakeClock()
    seen: list[float | None] = []
    with suture.deadline(4.0, clock=clock):
        ctx = contextvars.copy_context()
    worker = threading.Thread(target=ctx.run, args=(lambda: seen.append(suture.remaining()),))
    worker.start()
    worker.join()
    bare = threading.Thread(target=lambda: seen.append(suture.remaining()))
    bare.start()
    bare.join()
    assert seen == [4.0, None]


# --- the strategies respect it -------------------------------------------------------------


def test_retry_starts_no_wait_past_the_request_deadline() -> None:
    clock = FakeClock()
    calls = 0

    def flaky() -> None:
        nonlocal calls
        calls += 1
        clock.advance(0.4)
        raise ConnectionError("reset")

    policy = suture.Retry(attempts=10, initial_delay=0.5, jitter="none", max_delay=0.5, clock=clock)
    with capture_events() as events, suture.deadline(2.0, clock=clock):
        with pytest.raises(ConnectionError) as info:
            policy.call(flaky)
    # attempts end at 0.4, 1.3 and 2.2 (waits end at 0.9 and 1.8, within 2.0);
    # after the third the deadline is spent: no further wait is started
    assert calls == 3
    gave_up = [e for e in events if isinstance(e, suture.RetryGaveUp)]
    assert gave_up[-1].reason == "request deadline"
    assert "request's deadline" in "".join(info.value.__notes__)


def test_retry_never_retries_a_spent_deadline() -> None:
    calls = 0

    def spent() -> None:
        nonlocal calls
        calls += 1
        raise suture.DeadlineExceeded("inner", 1.0)

    policy = suture.Retry(attempts=5, initial_delay=0.0, on=TimeoutError, clock=FakeClock())
    with pytest.raises(suture.DeadlineExceeded):
        policy.call(spent)
    assert calls == 1


def test_timeout_is_bounded_by_the_deadline_and_refuses_to_start_when_spent() -> None:
    clock = FakeClock()
    calls = 0

    @suture.timeout(5.0, clock=clock)
    def slow() -> str:
        nonlocal calls
        calls += 1
        clock.advance(1.5)
        return "late"

    assert slow() == "late"  # no deadline: 1.5 s is within the 5 s timeout
    with suture.deadline(1.0, clock=clock):
        with pytest.raises(suture.DeadlineExceeded) as info:
            slow()
        assert isinstance(info.value, TimeoutError)
        with pytest.raises(suture.DeadlineExceeded, match="before"):
            slow()  # spent: not started
    assert calls == 2


async def test_async_timeout_cancels_at_the_deadline() -> None:
    @suture.timeout(5.0)
    async def hangs() -> None:
        await asyncio.sleep(10)

    loop = asyncio.get_running_loop()
    start = loop.time()
    async with suture.deadline(0.05):
        with pytest.raises(suture.DeadlineExceeded):
            await hangs()
    assert loop.time() - start < 1.0

    @suture.timeout(0.02)
    async def hangs_less() -> None:
        await asyncio.sleep(10)

    async with suture.deadline(5.0):
        with pytest.raises(TimeoutError) as info:
            await hangs_less()  # the timeout came first: a plain timeout, a failure
    assert not isinstance(info.value, suture.DeadlineExceeded)


def test_breaker_counts_a_spent_deadline_neither_way_and_admits_no_probe() -> None:
    clock = FakeClock()
    breaker = suture.CircuitBreaker("dl", failure_threshold=1, reset_timeout=1.0, clock=clock)

    def spent() -> None:
        raise suture.DeadlineExceeded("statement", 3.0)

    for _ in range(5):
        with pytest.raises(suture.DeadlineExceeded):
            breaker.call(spent)
    assert breaker.state is suture.BreakerState.CLOSED

    def down() -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        breaker.call(down)
    assert breaker.state is suture.BreakerState.OPEN
    clock.advance(1.5)  # a probe may run now
    ran = False

    def probe() -> str:
        nonlocal ran
        ran = True
        return "ok"

    with suture.deadline(0.1, clock=clock):
        clock.advance(0.2)
        with pytest.raises(suture.DeadlineExceeded):
            breaker.call(probe)
    assert not ran
    assert breaker.call(probe) == "ok"  # the permit was not taken: the next caller probes
    assert breaker.state is suture.BreakerState.CLOSED
