"""AdaptiveLimiter as an admission step: acquire before the work, release after (issue 11)."""

from __future__ import annotations

import asyncio

import pytest

import suture
from suture.testing import FakeClock


def make(limit: int = 2) -> tuple[suture.AdaptiveLimiter, FakeClock]:
    clock = FakeClock()
    return suture.AdaptiveLimiter(initial=limit, min_limit=1, max_limit=limit, clock=clock), clock


def test_sync_acquire_release_by_hand_and_as_a_context() -> None:
    limiter, clock = make()
    a = limiter.acquire()
    b = limiter.acquire()
    with pytest.raises(suture.Overloaded) as info:
        limiter.acquire()
    assert info.value.source == "limiter" and suture.is_overload(info.value)
    clock.advance(0.01)
    a.release()
    a.release()  # only the first release counts
    assert limiter.inflight == 1
    b.release(TimeoutError("slow"))  # a drop
    assert limiter.inflight == 0 and limiter.drops == 1
    with limiter.acquire():
        assert limiter.inflight == 1
    assert limiter.inflight == 0


async def test_async_context_and_cancellation_release_the_slot() -> None:
    limiter, _ = make(1)
    started = asyncio.Event()

    async def work() -> None:
        async with limiter.acquire():
            started.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(work())
    await started.wait()
    assert limiter.inflight == 1
    with pytest.raises(suture.Overloaded):
        limiter.acquire()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limiter.inflight == 0 and limiter.drops == 0  # released, nothing learnt
    permit = limiter.acquire()
    permit.release(asyncio.CancelledError())
    assert limiter.inflight == 0


def test_priorities_keep_their_shares() -> None:
    limiter, _ = make(4)
    held = [limiter.acquire(suture.Priority.LOW) for _ in range(3)]  # LOW: 0.75 x 4 = 3
    with pytest.raises(suture.Overloaded):
        limiter.acquire(suture.Priority.LOW)
    held.append(limiter.acquire(suture.Priority.NORMAL))  # NORMAL still has its fourth
    with pytest.raises(suture.Overloaded):
        limiter.acquire(suture.Priority.NORMAL)
    held.append(limiter.acquire(suture.Priority.CRITICAL))  # CRITICAL: 1.25 x 4 = 5
    for permit in held:
        permit.release()
    assert limiter.inflight == 0
