"""AdaptiveLimiter: admission, priorities, AIMD and gradient, convergence in simulated time."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from typing import Any

import pytest

from suture import AdaptiveLimiter, Overloaded, Priority
from suture.events import LimitChanged, RequestShed
from suture.testing import FakeClock, capture_events


def make(clock: FakeClock, **kw: Any) -> AdaptiveLimiter:
    kw.setdefault("initial", 4)
    return AdaptiveLimiter(clock=clock, **kw)


# --- admission --------------------------------------------------------------------------


def test_admits_up_to_the_limit_then_raises_overloaded() -> None:
    lim = make(FakeClock())
    permits = [lim.acquire() for _ in range(4)]
    assert lim.inflight == 4
    with capture_events() as events, pytest.raises(Overloaded) as info:
        lim.acquire()
    assert info.value.source == "limiter"
    assert info.value.retry_after == 1.0
    (shed,) = events.of(RequestShed)
    assert (shed.source, shed.priority, shed.level) == ("limiter", Priority.NORMAL, 4)
    assert lim.shed == 1
    for p in permits:
        p.success()
    assert lim.inflight == 0
    lim.acquire().ignore()


def test_priorities_get_their_share_of_the_limit() -> None:
    lim = make(FakeClock(), initial=8)  # LOW 0.75 -> 6, NORMAL 8, CRITICAL 1.25 -> 10
    taken = [lim.acquire(Priority.LOW) for _ in range(6)]
    assert lim.try_acquire(Priority.LOW) is None
    taken += [lim.acquire(Priority.NORMAL) for _ in range(2)]
    assert lim.try_acquire(Priority.NORMAL) is None
    taken += [lim.acquire(Priority.CRITICAL) for _ in range(2)]
    assert lim.try_acquire(Priority.CRITICAL) is None
    assert lim.inflight == 10
    for p in taken:
        p.ignore()


def test_a_permit_is_released_once() -> None:
    lim = make(FakeClock())
    p = lim.acquire()
    p.success()
    p.success()
    p.dropped()
    assert lim.inflight == 0


def test_sync_context_manager_classifies_the_outcome() -> None:
    clock = FakeClock()
    lim = make(clock, initial=10)
    with lim(Priority.NORMAL):
        clock.advance(0.01)
    assert lim.drops == 0
    with pytest.raises(ConnectionError), lim():
        raise ConnectionError("reset")  # transient: a drop
    assert lim.drops == 1
    assert lim.estimate == pytest.approx(9.0)
    with pytest.raises(ValueError, match="bug"), lim():
        raise ValueError("bug")  # says nothing about capacity: ignored
    assert (lim.drops, lim.inflight) == (1, 0)
    assert lim.estimate == pytest.approx(9.0)


async def test_async_context_manager_and_cancellation() -> None:
    clock = FakeClock()
    lim = make(clock, initial=2)
    async with lim(Priority.LOW):
        assert lim.inflight == 1
    assert lim.inflight == 0

    started = asyncio.Event()

    async def work() -> None:
        async with lim():
            started.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(work())
    await started.wait()
    assert lim.inflight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (lim.inflight, lim.drops) == (0, 0)


def test_threads_never_exceed_the_limit_and_lose_no_release() -> None:
    lim = AdaptiveLimiter(initial=5, min_limit=5, max_limit=5)
    peak = 0
    admitted = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal peak, admitted
        for _ in range(500):
            permit = lim.try_acquire()
            if permit is None:
                continue
            with lock:
                peak = max(peak, lim.inflight)
                admitted += 1
            permit.success()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert lim.inflight == 0
    assert admitted > 0
    assert peak <= 5


# --- AIMD ----------------------------------------------------------------------------------


def test_aimd_increase_only_when_the_limit_is_in_use() -> None:
    clock = FakeClock()
    lim = make(clock, initial=10)
    lim.acquire().success()  # 1 in flight of 10: application-limited, no growth
    assert lim.estimate == 10
    permits = [lim.acquire() for _ in range(6)]
    permits[-1].success()  # it started with 6 in flight: 6 * 2 >= 10
    assert lim.estimate == pytest.approx(10.1)
    for p in permits:
        p.ignore()


def test_aimd_backs_off_once_per_round() -> None:
    clock = FakeClock()
    lim = make(clock, initial=10)
    a, b = lim.acquire(), lim.acquire()
    clock.advance(0.01)
    a.dropped()
    assert lim.estimate == pytest.approx(9.0)
    b.dropped()  # started before the decrease: the same congestion, no second cut
    assert lim.estimate == pytest.approx(9.0)
    clock.advance(0.01)
    lim.acquire().dropped()
    assert lim.estimate == pytest.approx(8.1)


def test_slow_completion_counts_as_a_drop() -> None:
    clock = FakeClock()
    lim = make(clock, initial=10, timeout=0.5)
    p = lim.acquire()
    clock.advance(0.6)
    p.success()
    assert lim.drops == 1
    assert lim.estimate == pytest.approx(9.0)


def test_limit_stays_within_min_and_max() -> None:
    clock = FakeClock()
    lim = make(clock, initial=2, min_limit=2, max_limit=3)
    for _ in range(50):
        clock.advance(0.01)
        lim.acquire().dropped()
    assert lim.limit == 2
    for _ in range(200):
        ps = [lim.acquire(), lim.acquire()]
        for p in ps:
            p.success()
    assert lim.limit == 3
    assert lim.estimate == 3.0


def test_limit_changed_events() -> None:
    clock = FakeClock()
    lim = make(clock, initial=10, name="api")
    with capture_events() as events:
        clock.advance(0.01)
        lim.acquire().dropped()
    (event,) = events.of(LimitChanged)
    assert (event.name, event.old, event.new, event.reason) == ("api", 10.0, 9.0, "drop")


# --- gradient ------------------------------------------------------------------------------


def test_gradient_measures_min_rtt_at_low_concurrency_first() -> None:
    clock = FakeClock()
    lim = make(clock, mode="gradient", initial=20, probe_limit=3, probe_samples=5)
    assert lim.limit == 3
    assert lim.min_rtt is None
    for _ in range(5):
        p = lim.acquire()
        clock.advance(0.02)
        p.success()
    assert lim.min_rtt == pytest.approx(0.02)
    assert lim.limit == 20  # back to where it was


def test_gradient_reprobes_after_the_interval() -> None:
    clock = FakeClock()
    lim = make(
        clock, mode="gradient", initial=10, probe_limit=2, probe_samples=2, probe_interval=10
    )
    for _ in range(2):
        p = lim.acquire()
        clock.advance(0.01)
        p.success()
    assert lim.limit == 10
    clock.advance(10)
    lim.acquire().success()  # the first completion past the interval starts a probe
    assert lim.limit == 2
    for _ in range(2):
        p = lim.acquire()
        clock.advance(0.05)
        p.success()
    assert lim.min_rtt == pytest.approx(0.05)
    assert lim.limit >= 10


def simulate(
    lim: AdaptiveLimiter,
    clock: FakeClock,
    *,
    knee: int,
    base: float,
    duration: float,
    rate: float,
) -> list[int]:
    """A service whose latency is ``base`` up to ``knee`` requests in flight and grows in
    proportion past it (its throughput saturates at the knee), offered more load than it can
    take. Discrete events in simulated time: no real sleeping."""
    heap: list[tuple[float, int, Any]] = []
    seq = itertools.count()
    history: list[int] = []
    step = 1.0 / rate
    for i in range(int(duration * rate)):
        now = i * step
        while heap and heap[0][0] <= now:
            when, _, permit = heapq.heappop(heap)
            clock.set(when)
            permit.success()
        clock.set(now)
        permit = lim.try_acquire()
        if permit is not None:
            latency = base * max(1.0, lim.inflight / knee)
            heapq.heappush(heap, (now + latency, next(seq), permit))
        history.append(lim.limit)
    return history


@pytest.mark.parametrize(
    ("mode", "options"),
    [("aimd", {"timeout": 0.012}), ("gradient", {})],
)
def test_limit_converges_near_the_knee(mode: str, options: dict[str, Any]) -> None:
    knee, base = 20, 0.01
    clock = FakeClock()
    lim = AdaptiveLimiter(
        mode=mode,  # type: ignore[arg-type]
        initial=5,
        max_limit=500,
        clock=clock,
        **options,
    )
    history = simulate(lim, clock, knee=knee, base=base, duration=8.0, rate=2.5 * knee / base)
    tail = history[len(history) // 2 :]
    mean = sum(tail) / len(tail)
    assert 0.9 * knee <= mean <= 1.5 * knee, (mean, min(tail), max(tail))
    assert 0.7 * knee <= min(tail) and max(tail) <= 1.6 * knee, (min(tail), max(tail))
    if mode == "gradient":
        assert lim.min_rtt == pytest.approx(base)


def test_limit_grows_when_the_service_has_room() -> None:
    clock = FakeClock()
    lim = AdaptiveLimiter(mode="gradient", initial=5, max_limit=500, clock=clock)
    history = simulate(lim, clock, knee=200, base=0.01, duration=3.0, rate=10_000)
    assert history[-1] >= 30  # from 5, without a knee in sight (it keeps growing)
    assert history[-1] > history[len(history) // 2]


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"mode": "tcp"}, "mode"),
        ({"min_limit": 0}, "min_limit"),
        ({"min_limit": 5, "max_limit": 4, "initial": 5}, "max_limit"),
        ({"initial": 2000}, "initial"),
        ({"timeout": 0}, "timeout"),
        ({"backoff_ratio": 1.0}, "backoff_ratio"),
        ({"backoff_ratio": 0}, "backoff_ratio"),
        ({"smoothing": 0}, "smoothing"),
        ({"window": -1}, "window"),
        ({"probe_limit": 0}, "probe_limit"),
        ({"shares": {Priority.LOW: 0}}, "shares"),
        ({"shares": {Priority.LOW: 2.0}}, "shares"),
    ],
)
def test_bad_configuration_names_the_parameter(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(ValueError, match=param):
        AdaptiveLimiter(**kwargs)


def test_bad_types() -> None:
    with pytest.raises(TypeError, match="drop_on"):
        AdaptiveLimiter(drop_on=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="shares"):
        AdaptiveLimiter(shares={"LOW": 0.5})  # type: ignore[dict-item]


def test_as_dict_is_json_friendly() -> None:
    lim = AdaptiveLimiter(mode="gradient", name="api")
    data = lim.as_dict()
    assert data == {
        "name": "api",
        "mode": "gradient",
        "limit": 3,
        "estimate": 20.0,
        "inflight": 0,
        "min_rtt": None,
        "shed": 0,
        "drops": 0,
    }


def test_gradient_with_latencies_below_the_clock_resolution_does_not_collapse() -> None:
    # A service that answers within the same clock tick: min_rtt and every window's
    # latency are 0. 0/0 once read as a gradient of 0 (clamped to 0.5) and halved the
    # limit at every window down to the minimum.
    clock = FakeClock()
    lim = AdaptiveLimiter(
        mode="gradient", initial=50, max_limit=200, probe_samples=5, window=0.1, clock=clock
    )
    for _ in range(400):
        permits = [lim.acquire() for _ in range(min(lim.limit, 40))]
        for permit in permits:
            permit.success()  # no time passes during the call
        clock.advance(0.01)
    assert lim.min_rtt == 0.0
    assert lim.limit >= 50  # it held (or grew: 40 in flight keeps the limit in use)


def test_negative_latency_from_a_clock_going_backwards_is_not_a_drop() -> None:
    clock = FakeClock(start=100.0)
    lim = make(clock, initial=4, timeout=1.0)
    permit = lim.acquire()
    clock._now -= 50.0  # a broken clock: the call "ends" before it started
    permit.success()
    assert lim.drops == 0
    assert lim.inflight == 0
    assert lim.min_limit <= lim.limit <= lim.max_limit
