"""RateLimiter and KeyedRateLimiter: GCRA admission, waits in order, pauses, bounded memory."""

from __future__ import annotations

import asyncio
import math
import threading
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from step_clock import StepClock
from suture import Overloaded
from suture.events import RequestShed
from suture.limits import KeyedRateLimiter, RateLimiter
from suture.testing import FakeClock, capture_events, no_wait

# --- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"rate": 0}, "rate"),
        ({"rate": -1}, "rate"),
        ({"rate": math.nan}, "rate"),
        ({"rate": math.inf}, "rate"),
        ({"rate": "10"}, "rate"),
        ({"rate": 10, "period": 0}, "period"),
        ({"rate": 10, "period": -1}, "period"),
        ({"rate": 10, "period": math.nan}, "period"),
        ({"rate": 10, "period": math.inf}, "period"),
        ({"rate": 10, "burst": 0}, "burst"),
        ({"rate": 10, "burst": -3}, "burst"),
        ({"rate": 10, "burst": 2.5}, "burst"),
        ({"rate": 10, "burst": True}, "burst"),
        ({"rate": 10, "max_wait": -1}, "max_wait"),
        ({"rate": 10, "max_wait": math.nan}, "max_wait"),
        ({"rate": 10, "name": 3}, "name"),
        ({"rate": 10, "clock": object()}, "clock"),
        ({"rate": 1e-300, "period": 1e300}, "rate"),
    ],
)
@pytest.mark.parametrize("cls", [RateLimiter, KeyedRateLimiter])
def test_bad_configuration_names_the_parameter(
    cls: type[RateLimiter] | type[KeyedRateLimiter], kwargs: dict[str, object], param: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=rf"^{param}="):
        cls(**kwargs)  # type: ignore[arg-type]


def test_keyed_bad_max_keys_and_key() -> None:
    with pytest.raises(ValueError, match=r"^max_keys="):
        KeyedRateLimiter(10, max_keys=0)
    limiter = KeyedRateLimiter(10)
    with pytest.raises(TypeError, match=r"^key=42: expected a string"):
        limiter.try_acquire(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^key="):
        limiter.acquire(b"client")  # type: ignore[arg-type]


def test_bad_cost_and_wait_name_the_parameter() -> None:
    limiter = RateLimiter(10, burst=5, clock=FakeClock())
    with pytest.raises(ValueError, match=r"^cost=6: must be at most burst=5"):
        limiter.try_acquire(6)
    with pytest.raises(ValueError, match=r"^cost="):
        limiter.acquire(0)
    with pytest.raises(ValueError, match=r"^max_wait="):
        limiter.acquire(max_wait=-1)
    with pytest.raises(ValueError, match=r"^until="):
        limiter.pause_until(math.inf)
    with pytest.raises(ValueError, match=r"^until="):
        limiter.pause_until(math.nan)
    with pytest.raises(TypeError, match=r"^until="):
        limiter.pause_until("soon")  # type: ignore[arg-type]


# --- admission ----------------------------------------------------------------------


def test_burst_then_one_per_interval() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, period=1.0, burst=3, clock=clock)
    assert [limiter.try_acquire() for _ in range(4)] == [True, True, True, False]
    clock.advance(0.1)
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    clock.advance(10)  # a quiet limiter is full again, never fuller
    assert limiter.available() == 3
    assert [limiter.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert limiter.stats().refused == 3


def test_default_burst_is_the_rate_rounded_up_and_period_takes_timedelta() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.5, period=timedelta(minutes=1), clock=clock)
    assert limiter.burst == 3 and limiter.period == 60.0
    assert sum(limiter.try_acquire() for _ in range(10)) == 3
    clock.advance(24)  # one token every 60 / 2.5 = 24 s
    assert limiter.try_acquire() and not limiter.try_acquire()


def test_cost_takes_several_tokens() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, burst=5, clock=clock)
    assert limiter.try_acquire(3)
    assert not limiter.try_acquire(3)
    assert limiter.try_acquire(2)
    clock.advance(0.3)
    assert limiter.try_acquire(3)


@settings(max_examples=300, deadline=None)
@given(
    rate=st.integers(min_value=1, max_value=1000),
    period=st.sampled_from([0.01, 0.1, 1.0, 7.0, 60.0]),
    burst=st.integers(min_value=1, max_value=50),
    steps=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=2.0), st.integers(min_value=1, max_value=4)),
        min_size=1,
        max_size=200,
    ),
)
def test_never_more_than_rate_times_elapsed_plus_burst(
    rate: int, period: float, burst: int, steps: list[tuple[float, int]]
) -> None:
    """In every window [t_i, t_j] the admitted tokens are <= rate * elapsed / period + burst,
    and whatever a token bucket would admit (with a hair to spare) is admitted."""
    clock = FakeClock()
    limiter = RateLimiter(rate, period=period, burst=burst, clock=clock)
    admitted: list[tuple[float, int]] = []
    tokens, last = float(burst), 0.0  # the reference token bucket
    for fraction, want in steps:
        clock.advance(fraction * period / rate * 3)
        now = clock.now()
        tokens = min(float(burst), tokens + (now - last) * rate / period)
        last = now
        cost = min(want, burst)
        ok = limiter.try_acquire(cost)
        if ok:
            admitted.append((now, cost))
            tokens -= cost
        elif tokens >= cost + 1e-6:
            pytest.fail(f"refused {cost} at {now} with {tokens} tokens in the bucket")
    for i, (start, _) in enumerate(admitted):
        total = 0
        for end, cost in admitted[i:]:
            total += cost
            assert total <= rate * (end - start) / period + burst + 1e-6


def test_threads_never_over_admit() -> None:
    """Many threads on one frozen clock: exactly ``burst`` admissions, none lost or extra."""
    clock = FakeClock()
    limiter = RateLimiter(1, period=3600, burst=500, clock=clock)
    counts: list[int] = []
    barrier = threading.Barrier(8)

    def hammer() -> None:
        barrier.wait()
        counts.append(sum(limiter.try_acquire() for _ in range(2000)))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 500


# --- waiting ------------------------------------------------------------------------


def test_acquire_waits_for_its_slot_and_refuses_a_wait_past_max_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, burst=1, clock=clock, name="api")
    limiter.acquire()
    limiter.acquire()  # waits 0.1 s
    assert clock.sleeps == pytest.approx([0.1])
    with capture_events() as events, pytest.raises(Overloaded) as info:
        limiter.acquire(2 - 1, max_wait=0.05)
    # refused at once, without sleeping, with the wait it would have needed
    assert clock.sleeps == pytest.approx([0.1])
    assert info.value.source == "rate_limiter"
    assert info.value.retry_after == pytest.approx(0.1)
    (shed,) = events.of(RequestShed)
    assert shed.name == "api" and shed.retry_after == pytest.approx(0.1)


def test_the_limiter_max_wait_is_the_default_and_no_wait_skips_sleeping() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, burst=1, max_wait=0.5, clock=clock)
    limiter.acquire()
    with pytest.raises(Overloaded):
        limiter.acquire()
    with no_wait():
        limiter.acquire(max_wait=5)
    assert clock.sleeps == []


def test_decorator_and_context_manager_sync() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, burst=1, clock=clock)

    @limiter
    def work(x: int) -> int:
        return x * 2

    assert work(1) == 2
    assert work(2) == 4
    with limiter as entered:
        assert entered is limiter
    assert clock.sleeps == pytest.approx([0.5, 0.5])
    assert work.__suture_rate_limiter__ is limiter  # type: ignore[attr-defined]


async def test_decorator_and_context_manager_async() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4, burst=1, clock=clock)

    @limiter
    async def work(x: int) -> int:
        return x + 1

    assert await work(1) == 2
    assert await work(2) == 3
    async with limiter:
        pass
    assert clock.sleeps == pytest.approx([0.25, 0.25])


async def test_waiters_are_served_in_arrival_order() -> None:
    clock = StepClock()
    limiter = RateLimiter(10, burst=1, clock=clock)
    assert limiter.try_acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await limiter.aacquire()
        order.append(i)

    tasks = []
    for i in range(6):
        tasks.append(asyncio.create_task(waiter(i)))
        await asyncio.sleep(0)
    assert clock.sleeping == 6
    assert not limiter.try_acquire()  # a newcomer does not jump the queue
    for _ in range(6):
        await clock.advance(0.1)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4, 5]


async def test_a_cancelled_waiter_gives_its_slot_back_when_last() -> None:
    clock = StepClock()
    limiter = RateLimiter(10, burst=1, clock=clock)
    assert limiter.try_acquire()
    first = asyncio.create_task(limiter.aacquire())
    await asyncio.sleep(0)
    second = asyncio.create_task(limiter.aacquire())
    await asyncio.sleep(0)
    # The first waiter is cancelled while the second holds the slot after it: its
    # slot is kept (the limiter may admit less, never more).
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    # The second (last) is cancelled: its slot is given back.
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    await clock.advance(0.2)  # the first waiter's slot (0.1-0.2) has passed
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    assert limiter.stats().waited == 1  # only the kept slot counts


class FrozenClock(FakeClock):
    """Sleeps are recorded but time stands still: each sleep is the distance to its slot."""

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)


def test_acquire_from_threads_gets_one_distinct_slot_each() -> None:
    clock = FrozenClock()
    limiter = RateLimiter(100, burst=1, clock=clock)
    threads = [threading.Thread(target=limiter.acquire) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 20 admissions at 100/s from a full bucket of 1: one now, then one every 10 ms.
    assert sorted(clock.sleeps) == pytest.approx([0.01 * k for k in range(1, 20)])
    assert limiter.stats().waited == 19


@settings(max_examples=200, deadline=None)
@given(
    rate=st.integers(min_value=1, max_value=100),
    burst=st.integers(min_value=1, max_value=10),
    steps=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=0.5), st.integers(min_value=1, max_value=3)),
        min_size=1,
        max_size=60,
    ),
)
def test_waiters_get_slots_in_arrival_order_within_the_bound(
    rate: int, burst: int, steps: list[tuple[float, int]]
) -> None:
    """Callers that wait are admitted in the order they came (each slot no earlier than
    the previous one), and the admission times keep to rate x elapsed + burst."""
    clock = FrozenClock()
    limiter = RateLimiter(rate, burst=burst, max_wait=math.inf, clock=clock)
    admitted: list[tuple[float, int]] = []
    for dt, want in steps:
        clock.advance(dt)
        cost = min(want, burst)
        before = len(clock.sleeps)
        limiter.acquire(cost)
        wait = clock.sleeps[-1] if len(clock.sleeps) > before else 0.0
        admitted.append((clock.now() + wait, cost))
    times = [t for t, _ in admitted]
    assert times == sorted(times)  # first come, first served
    for i, (start, _) in enumerate(admitted):
        total = 0
        for end, cost in admitted[i:]:
            total += cost
            assert total <= rate * (end - start) + burst + 1e-6


# --- pauses ---------------------------------------------------------------------------


def test_pause_until_admits_nobody_then_resumes_one_at_a_time() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, burst=5, clock=clock)
    limiter.pause(2.0)
    assert limiter.paused_until == 2.0
    assert not limiter.try_acquire()
    assert limiter.stats().paused_for == 2.0
    clock.advance(1.99)
    assert not limiter.try_acquire()
    clock.advance(0.01)
    assert limiter.try_acquire()
    assert not limiter.try_acquire()  # no burst right after a pause
    limiter.pause_until(1.0)  # an earlier end does not shorten anything
    assert limiter.paused_until == 2.0
    clock.advance(10)
    assert sum(limiter.try_acquire() for _ in range(10)) == 5


def test_acquire_during_a_pause_waits_until_it_ends() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, burst=5, clock=clock)
    limiter.pause(1.5)
    limiter.acquire()
    assert clock.now() == pytest.approx(1.5)
    with pytest.raises(Overloaded) as info:
        limiter.pause(3)
        limiter.acquire(max_wait=1)
    assert info.value.retry_after == pytest.approx(3.0)


async def test_a_pause_set_while_waiting_sends_waiters_back_to_the_queue() -> None:
    clock = StepClock()
    limiter = RateLimiter(10, burst=1, clock=clock)
    assert limiter.try_acquire()
    done: list[float] = []

    async def waiter() -> None:
        await limiter.aacquire()
        done.append(clock.now())

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    limiter.pause(1.0)  # an upstream said 429, Retry-After: 1
    await clock.advance(0.1)  # the slot it held is inside the pause: it queues again
    assert done == []
    await clock.advance(1.0)
    await task
    assert done == [pytest.approx(1.0)]


# --- keyed ----------------------------------------------------------------------------


def test_keys_are_independent() -> None:
    clock = FakeClock()
    limiter = KeyedRateLimiter(1, burst=2, clock=clock)
    assert [limiter.try_acquire("a") for _ in range(3)] == [True, True, False]
    assert limiter.try_acquire("b")
    assert limiter.available("a") == 0 and limiter.available("b") == 1
    assert limiter.available("never-seen") == 2
    with pytest.raises(Overloaded):
        limiter.acquire("a", max_wait=0.5)
    limiter.acquire("a")  # waits 1 s
    assert clock.sleeps == pytest.approx([1.0])


async def test_keyed_async_wait_and_cancel() -> None:
    clock = StepClock()
    limiter = KeyedRateLimiter(10, burst=1, clock=clock)
    assert limiter.try_acquire("k")
    task = asyncio.create_task(limiter.aacquire("k"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await clock.advance(0.1)
    assert limiter.try_acquire("k")  # the cancelled slot was given back
    assert not limiter.try_acquire("k")


def test_a_million_keys_stay_in_bounded_memory() -> None:
    clock = FakeClock()
    limiter = KeyedRateLimiter(10, burst=1, max_keys=1000, clock=clock)
    for i in range(1_000_000):
        assert limiter.try_acquire(f"client-{i}")
        if i % 1000 == 0:
            clock.advance(0.001)
        assert len(limiter) <= 1000
    assert len(limiter) <= 1000


def test_idle_keys_are_dropped_as_the_table_is_used() -> None:
    clock = FakeClock()
    limiter = KeyedRateLimiter(10, burst=1, clock=clock)
    for i in range(100):
        limiter.try_acquire(f"k{i}")
    assert len(limiter) == 100
    clock.advance(1)  # every key is full again: nothing worth remembering
    for _ in range(60):
        limiter.try_acquire("busy")
        clock.advance(0.1)
    assert len(limiter) <= 2


def test_a_busy_key_survives_eviction_of_others() -> None:
    clock = FakeClock()
    limiter = KeyedRateLimiter(1, period=60, burst=1, max_keys=10, clock=clock)
    assert limiter.try_acquire("greedy")
    for i in range(9):
        limiter.try_acquire(f"other-{i}")
    assert not limiter.try_acquire("greedy")  # a refusal keeps it young
    for i in range(9, 12):
        limiter.try_acquire(f"other-{i}")
    assert not limiter.try_acquire("greedy")


def test_a_pause_is_an_event() -> None:
    from suture.events import LimitPaused

    clock = FakeClock()
    limiter = RateLimiter(10, name="geo", clock=clock)
    with capture_events() as events:
        limiter.pause(3)
        limiter.pause(1)  # inside the current pause: nothing new
    assert events.of(LimitPaused) == [LimitPaused(name="geo", seconds=3.0)]
    assert "paused for 3.0s" in events[0].message()


def test_a_wait_that_would_end_past_the_request_deadline_is_refused_at_once() -> None:
    import suture

    clock = FakeClock()
    limiter = RateLimiter(1, period=1.0, burst=1, max_wait=10, clock=clock)
    limiter.acquire()  # the next token is 1 s away: within max_wait
    with suture.deadline(0.5, clock=clock), pytest.raises(Overloaded) as refused:
        limiter.acquire()
    assert refused.value.retry_after == pytest.approx(1.0)
    assert clock.now() == 0  # refused without waiting
    with suture.deadline(5, clock=clock), no_wait():
        limiter.acquire()  # 1 s away, 5 s left: it waits


async def test_a_bulkhead_queues_no_longer_than_the_request_deadline() -> None:
    import suture
    from suture.limits import Bulkhead

    clock = FakeClock()
    bulkhead = Bulkhead(max_concurrent=1, max_queue=5, max_wait=10, clock=clock)
    bulkhead.acquire()
    with suture.deadline(1, clock=clock):
        clock.advance(2)  # the deadline is spent: there is no time left to queue
        with pytest.raises(Overloaded):
            await bulkhead.aacquire()
