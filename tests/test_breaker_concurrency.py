"""Half-open admits exactly ``half_open_max_calls`` probes under asyncio and threads;
no counter update is lost under threads. No sleeps: gates and barriers."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Iterator

import pytest

from suture import BreakerOpen, BreakerState, CircuitBreaker, CountWindow, TimeWindow
from suture.testing import FakeClock


@pytest.fixture(autouse=True)
def frequent_switches() -> Iterator[None]:
    """Make the interpreter switch threads far more often than usual."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def half_open(max_calls: int, clock: FakeClock) -> CircuitBreaker:
    breaker = CircuitBreaker(
        "probe", failure_threshold=1, reset_timeout=10, half_open_max_calls=max_calls, clock=clock
    )
    with pytest.raises(ConnectionError):
        breaker.call(_boom)
    clock.advance(10)
    assert breaker.state is BreakerState.HALF_OPEN
    return breaker


def _boom() -> None:
    raise ConnectionError("down")


@pytest.mark.parametrize("max_calls", [1, 3])
async def test_1000_tasks_against_half_open(max_calls: int) -> None:
    clock = FakeClock()
    breaker = half_open(max_calls, clock)
    gate = asyncio.Event()
    running = 0
    most = 0

    @breaker
    async def probe() -> str:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await gate.wait()
        running -= 1
        return "ok"

    turned_away = 0
    everyone_tried = asyncio.Event()

    async def caller() -> str:
        nonlocal turned_away
        try:
            return await probe()
        except BreakerOpen:
            turned_away += 1
            if turned_away == 1000 - max_calls:
                everyone_tried.set()
            return "rejected"

    tasks = [asyncio.create_task(caller()) for _ in range(1000)]
    async with asyncio.timeout(30):
        await everyone_tried.wait()
    assert running == max_calls
    gate.set()
    results = await asyncio.gather(*tasks)
    assert results.count("ok") == max_calls
    assert results.count("rejected") == 1000 - max_calls
    assert most == max_calls
    stats = breaker.stats()
    assert stats.total_rejections == 1000 - max_calls
    assert breaker.state is BreakerState.CLOSED or max_calls > 1


@pytest.mark.parametrize("max_calls", [1, 4])
def test_64_threads_against_half_open(max_calls: int) -> None:
    clock = FakeClock()
    breaker = half_open(max_calls, clock)
    start = threading.Barrier(64)
    gate = threading.Event()
    lock = threading.Lock()
    finished = threading.Condition(lock)
    admitted: list[int] = []
    rejected: list[int] = []

    @breaker
    def probe(i: int) -> None:
        with lock:
            admitted.append(i)
            finished.notify_all()
        gate.wait(timeout=30)

    def worker(i: int) -> None:
        start.wait(timeout=30)
        try:
            probe(i)
        except BreakerOpen:
            with lock:
                rejected.append(i)
                finished.notify_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    with lock:
        assert finished.wait_for(lambda: len(admitted) + len(rejected) == 64, timeout=60)
        assert len(admitted) == max_calls
    gate.set()
    for t in threads:
        t.join(timeout=30)
    assert len(admitted) == max_calls
    assert len(rejected) == 64 - max_calls
    stats = breaker.stats()
    assert stats.total_rejections == 64 - max_calls
    assert stats.total_successes == max_calls
    # No lost update: every call is counted once (plus the failure that opened it).
    assert stats.total_calls == 64 + 1


@pytest.mark.parametrize(
    "window",
    [None, CountWindow(50), TimeWindow(60, buckets=6)],
    ids=["consecutive", "count", "time"],
)
def test_no_lost_update_under_threads(window: CountWindow | TimeWindow | None) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "totals",
        failure_threshold=10**9,
        window=window,
        minimum_calls=10**9,  # never trips: this test counts
        ignore=(KeyError,),
        clock=clock,
    )
    per_thread = 300
    start = threading.Barrier(16)

    @breaker
    def work(n: int) -> int:
        if n % 7 == 0:
            raise ConnectionError("failure")
        if n % 11 == 0:
            raise KeyError("ignored")
        return n

    def worker() -> None:
        start.wait(timeout=30)
        for n in range(per_thread):
            with contextlib.suppress(ConnectionError, KeyError):
                work(n)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    failures = sum(1 for n in range(per_thread) if n % 7 == 0) * 16
    ignored = sum(1 for n in range(per_thread) if n % 7 and n % 11 == 0) * 16
    stats = breaker.stats()
    assert stats.state is BreakerState.CLOSED
    assert stats.total_calls == per_thread * 16
    assert stats.total_failures == failures
    assert stats.total_ignored == ignored
    assert stats.total_successes == per_thread * 16 - failures - ignored
    if isinstance(window, CountWindow):
        # The running counts always equal what the ring holds.
        ring = breaker._window._ring  # type: ignore[union-attr]
        assert stats.calls == 50
        assert stats.failures == sum(1 for slot in ring if slot & 1)
    if isinstance(window, TimeWindow):
        assert stats.calls == per_thread * 16 - ignored
        assert stats.failures == failures


def test_store_records_arriving_at_once_keep_the_newest() -> None:
    """A store notifies outside its lock, so two records can arrive at once from two
    threads. Force the worst interleaving: the older delivery has read the pending
    record when the newer one arrives. The newer one must win."""
    from suture.breaker import BreakerRecord

    breaker = CircuitBreaker("pending", clock=FakeClock())
    older = BreakerRecord(state=BreakerState.OPEN, version=2, origin="elsewhere")
    newer = BreakerRecord(state=BreakerState.CLOSED, version=3, origin="elsewhere")
    newer_delivered = threading.Event()

    class Stalls:
        """The pending record the older delivery compares against: it stalls there."""

        @property
        def version(self) -> int:
            if threading.current_thread().name == "older":
                # Give the newer delivery its chance (it cannot take it while the
                # older one holds the breaker's pending lock; then this times out).
                newer_delivered.wait(timeout=0.2)
            return 1

    breaker._pending = Stalls()  # type: ignore[assignment]

    def deliver_newer() -> None:
        breaker._on_record(newer)
        newer_delivered.set()

    first = threading.Thread(target=breaker._on_record, args=(older,), name="older")
    first.start()
    second = threading.Thread(target=deliver_newer, name="newer")
    second.start()
    first.join(timeout=30)
    second.join(timeout=30)
    assert breaker._pending is newer
