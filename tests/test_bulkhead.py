"""Bulkhead: bounded concurrency, a bounded FIFO queue, bounded waits, safe cancellation."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest

from step_clock import StepClock
from suture import Overloaded
from suture.events import RequestShed
from suture.limits import Bulkhead
from suture.testing import FakeClock, capture_events


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"max_concurrent": -1}, "max_concurrent"),
        ({"max_concurrent": 1.5}, "max_concurrent"),
        ({"max_concurrent": math.inf}, "max_concurrent"),
        ({"max_concurrent": 1, "max_queue": -1}, "max_queue"),
        ({"max_concurrent": 1, "max_queue": math.nan}, "max_queue"),
        ({"max_concurrent": 1, "max_wait": -0.1}, "max_wait"),
        ({"max_concurrent": 1, "max_wait": math.nan}, "max_wait"),
        ({"max_concurrent": 1, "retry_after": math.inf}, "retry_after"),
        ({"max_concurrent": 1, "name": None}, "name"),
    ],
)
def test_bad_configuration_names_the_parameter(kwargs: dict[str, object], param: str) -> None:
    with pytest.raises((ValueError, TypeError), match=rf"^{param}="):
        Bulkhead(**kwargs)  # type: ignore[arg-type]


def test_full_without_a_queue_is_overloaded_at_once() -> None:
    bulkhead = Bulkhead(2, retry_after=0.5, name="db", clock=FakeClock())
    bulkhead.acquire()
    assert bulkhead.try_acquire()
    assert not bulkhead.try_acquire()
    with capture_events() as events, pytest.raises(Overloaded) as info:
        bulkhead.acquire()
    assert info.value.source == "bulkhead"
    assert info.value.retry_after == 0.5
    (shed,) = events.of(RequestShed)
    assert shed.name == "db" and shed.source == "bulkhead"
    assert bulkhead.stats().in_flight == 2 and bulkhead.stats().rejected == 1
    bulkhead.release()
    bulkhead.acquire()
    assert bulkhead.in_flight == 2


def test_decorator_and_context_manager_release_on_error() -> None:
    bulkhead = Bulkhead(1)

    @bulkhead
    def boom() -> None:
        assert bulkhead.in_flight == 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        boom()
    assert bulkhead.in_flight == 0
    with pytest.raises(KeyError), bulkhead:
        raise KeyError("x")
    assert bulkhead.in_flight == 0
    assert boom.__suture_bulkhead__ is bulkhead  # type: ignore[attr-defined]


async def test_async_decorator_and_context_manager() -> None:
    bulkhead = Bulkhead(1)

    @bulkhead
    async def work() -> int:
        assert bulkhead.in_flight == 1
        return 7

    assert await work() == 7
    async with bulkhead:
        assert bulkhead.in_flight == 1
    assert bulkhead.in_flight == 0


async def test_waiters_are_served_first_come_first_served_and_the_queue_is_bounded() -> None:
    clock = StepClock()
    bulkhead = Bulkhead(1, max_queue=3, max_wait=10, clock=clock)
    await bulkhead.aacquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        async with bulkhead:
            order.append(i)

    tasks = []
    for i in range(3):
        tasks.append(asyncio.create_task(waiter(i)))
        await asyncio.sleep(0)
    assert bulkhead.queued == 3
    with pytest.raises(Overloaded, match="queue full"):
        await bulkhead.aacquire()
    bulkhead.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert bulkhead.in_flight == 0 and bulkhead.queued == 0


async def test_an_async_wait_is_bounded_by_max_wait_on_the_clock() -> None:
    clock = StepClock()
    bulkhead = Bulkhead(1, max_queue=5, max_wait=0.5, clock=clock)
    await bulkhead.aacquire()
    task = asyncio.create_task(bulkhead.aacquire())
    for _ in range(3):  # the waiter queues, then its timer starts sleeping
        await asyncio.sleep(0)
    assert bulkhead.queued == 1
    await clock.advance(0.4)
    assert not task.done()
    await clock.advance(0.1)
    with pytest.raises(Overloaded, match="wait timed out"):
        await task
    assert bulkhead.queued == 0 and bulkhead.in_flight == 1


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    bulkhead = Bulkhead(1, max_queue=5, max_wait=math.inf)
    await bulkhead.aacquire()
    first = asyncio.create_task(bulkhead.aacquire())
    second = asyncio.create_task(bulkhead.aacquire())
    await asyncio.sleep(0)
    assert bulkhead.queued == 2
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert bulkhead.queued == 1
    bulkhead.release()
    await second  # the slot went to the one still waiting
    assert bulkhead.in_flight == 1 and bulkhead.queued == 0


async def test_a_waiter_cancelled_after_it_was_handed_a_slot_passes_it_on() -> None:
    bulkhead = Bulkhead(1, max_queue=5, max_wait=math.inf)
    await bulkhead.aacquire()
    first = asyncio.create_task(bulkhead.aacquire())
    second = asyncio.create_task(bulkhead.aacquire())
    await asyncio.sleep(0)
    bulkhead.release()  # hands the slot to ``first``, which has not run yet
    first.cancel()  # ... and is cancelled before it could
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    assert bulkhead.in_flight == 1 and bulkhead.queued == 0
    bulkhead.release()
    assert bulkhead.in_flight == 0


async def test_retry_after_is_estimated_from_how_fast_the_queue_moves() -> None:
    clock = StepClock()
    bulkhead = Bulkhead(1, max_queue=2, max_wait=10, retry_after=1.0, clock=clock)
    assert bulkhead.estimate_wait() == 1.0  # nothing measured yet: the configured hint
    await bulkhead.aacquire()
    task = asyncio.create_task(bulkhead.aacquire())
    for _ in range(3):
        await asyncio.sleep(0)
    await clock.advance(0.2)
    bulkhead.release()  # the waiter at place 1 waited 0.2 s
    await task
    assert bulkhead.stats().wait_per_place == pytest.approx(0.2)
    tasks = [asyncio.create_task(bulkhead.aacquire()) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded) as info:
        await bulkhead.aacquire()
    assert info.value.retry_after == pytest.approx(0.6)  # two ahead, and then us
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_threads_never_exceed_max_concurrent_and_all_get_through() -> None:
    bulkhead = Bulkhead(3, max_queue=20, max_wait=math.inf)
    active, peak, done = [0], [0], [0]
    guard = threading.Lock()

    @bulkhead
    def work() -> None:
        with guard:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.002)  # real work that holds the slot: the thing a bulkhead bounds
        with guard:
            active[0] -= 1
            done[0] += 1

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert done[0] == 12
    assert peak[0] <= 3
    assert bulkhead.in_flight == 0 and bulkhead.queued == 0


def test_a_thread_wait_is_bounded() -> None:
    bulkhead = Bulkhead(1, max_queue=1, max_wait=0.02)
    bulkhead.acquire()
    started = time.monotonic()
    with pytest.raises(Overloaded, match="wait timed out"):
        bulkhead.acquire()
    assert 0.015 <= time.monotonic() - started < 1.0
    assert bulkhead.queued == 0


def test_a_thread_is_woken_by_a_release_from_another() -> None:
    bulkhead = Bulkhead(1, max_queue=1, max_wait=5)
    bulkhead.acquire()
    got = threading.Event()

    def waiter() -> None:
        bulkhead.acquire()
        got.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    while bulkhead.queued == 0:
        time.sleep(0.001)
    bulkhead.release()
    assert got.wait(5)
    thread.join()
    assert bulkhead.in_flight == 1


async def test_an_async_waiter_is_woken_by_a_release_from_a_thread() -> None:
    bulkhead = Bulkhead(1, max_queue=1, max_wait=math.inf)
    bulkhead.acquire()
    task = asyncio.create_task(bulkhead.aacquire())
    await asyncio.sleep(0)
    thread = threading.Thread(target=bulkhead.release)
    thread.start()
    await asyncio.wait_for(task, 5)
    thread.join()
    assert bulkhead.in_flight == 1


def test_no_slot_is_lost_or_doubled_when_waits_time_out_under_contention() -> None:
    bulkhead = Bulkhead(2, max_queue=4, max_wait=0.003)
    outcomes = {"ok": 0, "shed": 0}
    guard = threading.Lock()
    active, peak = [0], [0]

    def worker() -> None:
        for _ in range(30):
            try:
                bulkhead.acquire()
            except Overloaded:
                with guard:
                    outcomes["shed"] += 1
                continue
            with guard:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.001)
            with guard:
                active[0] -= 1
                outcomes["ok"] += 1
            bulkhead.release()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes["ok"] + outcomes["shed"] == 240
    assert outcomes["ok"] > 0
    assert peak[0] <= 2
    assert bulkhead.in_flight == 0 and bulkhead.queued == 0
    assert bulkhead.try_acquire() and bulkhead.try_acquire() and not bulkhead.try_acquire()
