"""PoolMonitor without a database: levels, hysteresis, admission, staleness, actions, sampler."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import suture
from suture import (
    CallableSource,
    Overloaded,
    PoolMonitor,
    PressureChanged,
    PressureLevel,
    Priority,
    RequestShed,
)
from suture.pool import Reading
from suture.pool._pressure import _Pressure
from suture.testing import FakeClock, capture_events


class Gauge:
    """A settable (current, limit) source."""

    def __init__(self, current: int = 0, limit: int = 100) -> None:
        self.current = current
        self.limit = limit
        self.reads = 0

    def __call__(self) -> tuple[int, int]:
        self.reads += 1
        return self.current, self.limit


def monitor(gauge: Gauge, clock: FakeClock, **kw: Any) -> PoolMonitor:
    kw.setdefault("interval", 1.0)
    return PoolMonitor(CallableSource(gauge, name="gauge"), clock=clock, **kw)


# --- levels ---------------------------------------------------------


def test_levels_follow_thresholds_and_rise_at_once() -> None:
    clock, gauge = FakeClock(), Gauge()
    m = monitor(gauge, clock)
    assert m.level is PressureLevel.NORMAL
    gauge.current = 85
    m.sample()
    assert m.level is PressureLevel.WARNING
    gauge.current = 92
    m.sample()
    assert m.level is PressureLevel.CRITICAL
    assert m.usage is not None
    assert (m.usage.current, m.usage.limit, m.usage.fraction) == (92, 100, 0.92)


def test_hysteresis_band_and_recovery_streak() -> None:
    p = _Pressure(warning=0.85, critical=0.92, hysteresis=0.05, recover_after=2)
    assert p.update(0.95) is PressureLevel.CRITICAL
    # Just below critical but inside the band: stays CRITICAL however long.
    for _ in range(5):
        assert p.update(0.90) is PressureLevel.CRITICAL
    # Below the band once: not yet (needs two in a row).
    assert p.update(0.70) is PressureLevel.CRITICAL
    # Back inside the band resets the streak.
    assert p.update(0.88) is PressureLevel.CRITICAL
    assert p.update(0.70) is PressureLevel.CRITICAL
    assert p.update(0.70) is PressureLevel.NORMAL
    # From WARNING, 0.81 holds WARNING (band), 0.79 falls.
    assert p.update(0.86) is PressureLevel.WARNING
    assert p.update(0.81) is PressureLevel.WARNING
    assert p.update(0.81) is PressureLevel.WARNING
    assert p.update(0.79) is PressureLevel.WARNING
    assert p.update(0.79) is PressureLevel.NORMAL


def test_step_down_goes_to_the_highest_level_the_streak_supports() -> None:
    p = _Pressure(warning=0.5, critical=0.9, hysteresis=0.0, recover_after=2)
    p.update(1.0)
    p.update(0.1)
    assert p.update(0.6) is PressureLevel.WARNING  # streak saw NORMAL then WARNING


def test_level_does_not_flap_around_a_threshold() -> None:
    clock, gauge = FakeClock(), Gauge()
    m = monitor(gauge, clock)
    with capture_events() as events:
        for value in [86, 84, 86, 84, 86, 84, 86]:
            gauge.current = value
            m.sample()
    assert [e.target for e in events.of(PressureChanged)] == [PressureLevel.WARNING]


# --- admission ---------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "admitted"),
    [
        (10, {Priority.LOW, Priority.NORMAL, Priority.CRITICAL}),
        (86, {Priority.NORMAL, Priority.CRITICAL}),
        (95, {Priority.CRITICAL}),
    ],
)
def test_admission_table(current: int, admitted: set[Priority]) -> None:
    clock, gauge = FakeClock(), Gauge(current)
    m = monitor(gauge, clock)
    m.sample()
    for priority in Priority:
        if priority in admitted:
            m.admit(priority)
            assert m.would_admit(priority)
        else:
            with pytest.raises(Overloaded) as info:
                m.admit(priority)
            assert info.value.source == "pool"
            assert info.value.level is m.level
            assert info.value.retry_after == m.interval * m.recover_after
            assert not m.would_admit(priority)


def test_shed_request_emits_event_and_admitted_one_does_not() -> None:
    clock, gauge = FakeClock(), Gauge(95)
    m = monitor(gauge, clock, name="db")
    m.sample()
    with capture_events() as events:
        m.admit(Priority.CRITICAL)
        with pytest.raises(Overloaded):
            m.admit(Priority.LOW)
    shed = events.of(RequestShed)
    assert len(shed) == 1
    assert (shed[0].name, shed[0].source, shed[0].priority, shed[0].level) == (
        "db",
        "pool",
        Priority.LOW,
        PressureLevel.CRITICAL,
    )


def test_admits_everything_before_the_first_sample() -> None:
    clock = FakeClock()
    m = monitor(Gauge(100), clock)
    clock.advance(3600)
    for priority in Priority:
        m.admit(priority)
    assert m.usage is None
    assert m.can_accept()


def test_can_accept_is_the_simple_ninety_percent_check() -> None:
    clock, gauge = FakeClock(), Gauge(89)
    m = monitor(gauge, clock)
    m.sample()
    assert m.can_accept()
    gauge.current = 90
    m.sample()
    assert not m.can_accept()


# --- staleness ---------------------------------------------------------


def test_stale_sample_uses_stale_level_then_fresh_sample_restores() -> None:
    clock, gauge = FakeClock(), Gauge(10)
    m = monitor(gauge, clock, interval=1.0)  # stale after 3 s
    m.sample()
    clock.advance(2.9)
    assert not m.stale
    m.admit(Priority.LOW)
    clock.advance(0.2)
    assert m.stale
    assert m.level is PressureLevel.WARNING  # the default stale_level
    assert m.sampled_level is PressureLevel.NORMAL
    with pytest.raises(Overloaded) as info:
        m.admit(Priority.LOW)
    assert info.value.level is PressureLevel.WARNING
    assert info.value.retry_after == m.interval
    m.admit(Priority.NORMAL)
    m.admit(Priority.CRITICAL)
    assert not m.can_accept()
    m.sample()
    assert not m.stale
    m.admit(Priority.LOW)


def test_stale_applies_even_when_the_last_sample_was_critical() -> None:
    clock = FakeClock()
    m = monitor(Gauge(100), clock, stale_level=PressureLevel.NORMAL, stale_after=5)
    m.sample()
    with pytest.raises(Overloaded):
        m.admit(Priority.NORMAL)
    clock.advance(5)
    m.admit(Priority.LOW)  # fail open, as configured
    assert m.can_accept()


def test_stale_level_critical_fails_closed() -> None:
    clock = FakeClock()
    m = monitor(Gauge(0), clock, stale_level=PressureLevel.CRITICAL)
    m.sample()
    clock.advance(10)
    with pytest.raises(Overloaded):
        m.admit(Priority.NORMAL)
    m.admit(Priority.CRITICAL)


def test_started_monitor_without_any_sample_goes_stale() -> None:
    clock = FakeClock()
    gate = threading.Event()
    release = threading.Event()

    def hanging() -> tuple[int, int]:
        gate.set()
        release.wait(10)
        return 0, 10

    m = PoolMonitor(hanging, interval=1, clock=clock)
    m.start()
    try:
        assert gate.wait(10)
        m.admit(Priority.LOW)
        clock.advance(3)
        assert m.stale
        with pytest.raises(Overloaded):
            m.admit(Priority.LOW)
    finally:
        release.set()
        m.stop()
    assert not m.running


# --- sources and errors ---------------------------------------------------------


def test_tightest_source_sets_the_fraction() -> None:
    clock = FakeClock()
    m = PoolMonitor(
        [
            CallableSource(lambda: (50, 100), name="server"),
            CallableSource(lambda: (4, 5), name="app"),
        ],
        clock=clock,
    )
    usage = m.sample()
    assert (usage.source, usage.current, usage.limit, usage.fraction) == ("app", 4, 5, 0.8)
    assert usage.detail("server").fraction == 0.5
    with pytest.raises(KeyError):
        usage.detail("missing")


def test_failing_source_is_reported_and_left_out() -> None:
    clock = FakeClock()

    def broken() -> tuple[int, int]:
        raise ConnectionError("server gone")

    m = PoolMonitor([broken, lambda: (1, 10)], clock=clock)
    usage = m.sample()
    assert usage.fraction == 0.1
    assert usage.detail("broken").error == "ConnectionError: server gone"
    assert isinstance(m.last_error, ConnectionError)


def test_all_sources_failing_raises_and_keeps_the_old_sample() -> None:
    clock = FakeClock()
    state = {"fail": False}

    def flaky() -> tuple[int, int]:
        if state["fail"]:
            raise TimeoutError("slow")
        return 5, 10

    m = PoolMonitor(flaky, clock=clock)
    first = m.sample()
    state["fail"] = True
    clock.advance(1)
    with pytest.raises(TimeoutError):
        m.sample()
    assert m.usage is first
    assert m.status()["last_error"] == "TimeoutError: slow"


def test_reading_with_no_limit_is_full() -> None:
    assert Reading(0, 0).fraction == 1.0
    assert CallableSource(lambda: Reading(3, 4, {"x": 1})).read().details == {"x": 1}


def test_usage_and_status_are_json_friendly() -> None:
    clock = FakeClock()
    m = PoolMonitor(CallableSource(lambda: Reading(3, 4, {"waiting": 2}), name="db"), clock=clock)
    m.sample()
    data = json.loads(json.dumps(m.status()))
    assert data["level"] == "NORMAL"
    assert data["usage"]["sources"][0]["details"] == {"waiting": 2}
    assert data["usage"]["fraction"] == 0.75
    assert data["stale"] is False


# --- actions ---------------------------------------------------------


class FakeBreaker:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def force_open(self) -> None:
        self.calls.append("force_open")

    def reset(self) -> None:
        self.calls.append("reset")


def test_actions_run_on_level_change_and_failures_do_not_stop_others() -> None:
    clock, gauge = FakeClock(), Gauge()
    m = monitor(gauge, clock, recover_after=1)
    seen: list[tuple[PressureLevel, PressureLevel, float]] = []

    def broken(old: PressureLevel, new: PressureLevel, usage: suture.Usage) -> None:
        raise RuntimeError("bad action")

    m.on_level_change(broken)
    remove = m.on_level_change(lambda old, new, usage: seen.append((old, new, usage.fraction)))
    gauge.current = 95
    m.sample()
    m.sample()  # no change, no call
    gauge.current = 0
    m.sample()
    assert seen == [
        (PressureLevel.NORMAL, PressureLevel.CRITICAL, 0.95),
        (PressureLevel.CRITICAL, PressureLevel.NORMAL, 0.0),
    ]
    remove()
    gauge.current = 95
    m.sample()
    assert len(seen) == 2


def test_while_at_pauses_and_resumes_a_job() -> None:
    clock, gauge = FakeClock(), Gauge()
    m = monitor(gauge, clock, recover_after=1)
    job = threading.Event()
    job.set()  # running
    m.while_at(PressureLevel.WARNING, enter=job.clear, leave=job.set)
    gauge.current = 86
    m.sample()
    assert not job.is_set()
    gauge.current = 95
    m.sample()  # WARNING -> CRITICAL: still paused, enter not repeated
    assert not job.is_set()
    gauge.current = 10
    m.sample()
    assert job.is_set()


def test_while_at_enters_at_once_when_already_at_level() -> None:
    clock = FakeClock()
    m = monitor(Gauge(99), clock)
    m.sample()
    calls: list[str] = []
    m.while_at(PressureLevel.CRITICAL, enter=lambda: calls.append("in"), leave=lambda: None)
    assert calls == ["in"]


def test_force_open_while_critical_with_objects_and_names() -> None:
    clock, gauge = FakeClock(), Gauge()
    m = monitor(gauge, clock, recover_after=1)
    by_object, by_name = FakeBreaker(), FakeBreaker()
    m.force_open_while(
        PressureLevel.CRITICAL, by_object, "reports", resolve={"reports": by_name}.__getitem__
    )
    gauge.current = 90
    m.sample()
    assert by_object.calls == []
    gauge.current = 93
    m.sample()
    assert by_object.calls == by_name.calls == ["force_open"]
    gauge.current = 5
    m.sample()
    assert by_object.calls == by_name.calls == ["force_open", "reset"]


def test_force_open_while_acts_on_real_named_breakers() -> None:
    breaker_mod = pytest.importorskip("suture.breaker")
    registry = breaker_mod.BreakerRegistry()
    breaker = registry.get("reports-pool-test")
    clock, gauge = FakeClock(), Gauge()
    m = monitor(gauge, clock, recover_after=1)
    m.force_open_while(PressureLevel.CRITICAL, "reports-pool-test", resolve=registry.__getitem__)
    gauge.current = 100
    m.sample()
    assert breaker.state is breaker_mod.BreakerState.OPEN
    gauge.current = 0
    m.sample()
    assert breaker.state is breaker_mod.BreakerState.CLOSED


def test_force_open_while_rejects_bad_breakers() -> None:
    m = monitor(Gauge(), FakeClock())
    with pytest.raises(ValueError, match="breakers"):
        m.force_open_while(PressureLevel.CRITICAL)
    with pytest.raises(TypeError, match="force_open"):
        m.force_open_while(PressureLevel.CRITICAL, object())


def test_pressure_changed_event_carries_the_numbers() -> None:
    clock, gauge = FakeClock(), Gauge(93)
    m = monitor(gauge, clock, name="app-db")
    with capture_events() as events:
        m.sample()
    (event,) = events.of(PressureChanged)
    assert (event.name, event.source, event.target) == (
        "app-db",
        PressureLevel.NORMAL,
        PressureLevel.CRITICAL,
    )
    assert (event.current, event.limit, event.fraction) == (93, 100, 0.93)


# --- configuration ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"warning": 0.95, "critical": 0.9}, "warning"),
        ({"warning": 0.9, "critical": 0.9}, "warning"),
        ({"warning": 0.0}, "warning"),
        ({"critical": 1.5}, "critical"),
        ({"interval": 0}, "interval"),
        ({"interval": -1}, "interval"),
        ({"hysteresis": 0.9}, "hysteresis"),
        ({"recover_after": 0}, "recover_after"),
        ({"interval": 5, "stale_after": 5}, "stale_after"),
        ({"accept_below": 0}, "accept_below"),
    ],
)
def test_bad_configuration_names_the_parameter(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(ValueError, match=param):
        PoolMonitor(lambda: (0, 1), **kwargs)


def test_bad_sources_and_stale_level() -> None:
    with pytest.raises(ValueError, match="sources"):
        PoolMonitor([])
    with pytest.raises(TypeError, match="sources"):
        PoolMonitor([42])
    with pytest.raises(TypeError, match="sources"):
        PoolMonitor("db")
    with pytest.raises(ValueError, match="twice"):
        PoolMonitor([CallableSource(lambda: (0, 1)), CallableSource(lambda: (0, 1))])
    with pytest.raises(TypeError, match="stale_level"):
        PoolMonitor(lambda: (0, 1), stale_level="WARNING")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fn"):
        CallableSource(42)  # type: ignore[arg-type]


def test_timedelta_interval() -> None:
    m = PoolMonitor(lambda: (0, 1), interval=timedelta(milliseconds=500))
    assert m.interval == 0.5
    assert m.stale_after == 1.5


# --- the sampler ---------------------------------------------------------


def test_nothing_starts_at_import() -> None:
    code = (
        "import threading, suture, suture.pool, suture.limiter\n"
        "import suture.contrib.sqlalchemy_pool\n"
        "print(sorted(t.name for t in threading.enumerate()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "['MainThread']"


def test_start_samples_in_a_thread_and_stop_ends_it() -> None:
    gauge = Gauge(1, 10)
    sampled = threading.Event()

    def source() -> tuple[int, int]:
        sampled.set()
        return gauge()

    m = PoolMonitor(source, interval=0.01, name="thread-test")
    assert not m.running
    assert m.start() is m
    assert m.start() is m  # idempotent
    assert sampled.wait(10)
    names = [t.name for t in threading.enumerate()]
    assert names.count("suture-pool-thread-test") == 1
    m.stop()
    assert not m.running
    assert "suture-pool-thread-test" not in [t.name for t in threading.enumerate()]
    reads = gauge.reads
    assert m.usage is not None
    assert reads >= 1
    # Restartable.
    with m:
        assert m.running
    assert not m.running


def test_samples_never_overlap() -> None:
    active = 0
    overlap = False
    lock = threading.Lock()
    done = threading.Event()
    count = 0

    def slow() -> tuple[int, int]:
        nonlocal active, overlap, count
        with lock:
            active += 1
            overlap = overlap or active > 1
        done.wait(0.005)
        with lock:
            active -= 1
            count += 1
            if count >= 5:
                done.set()
        return 1, 10

    m = PoolMonitor(slow, interval=0.001)
    m.start()
    workers = [threading.Thread(target=m.sample) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert done.wait(10)
    m.stop()
    assert not overlap


async def test_astart_samples_in_a_task_and_astop_ends_it() -> None:
    clock = FakeClock()
    gauge = Gauge(3, 10)
    m = PoolMonitor(gauge, interval=1.0, clock=clock)
    async with m:
        assert m.running
        for _ in range(200):
            if gauge.reads >= 3:
                break
            await asyncio.sleep(0.01)
    assert not m.running
    assert gauge.reads >= 3
    assert clock.sleeps[:2] == [1.0, 1.0]
    assert m.usage is not None
    assert m.usage.current == 3


async def test_astop_without_astart_is_harmless() -> None:
    m = PoolMonitor(lambda: (0, 1))
    await m.astop()
    assert not m.running


def test_restart_does_not_refresh_an_old_sample() -> None:
    clock = FakeClock()
    release = threading.Event()
    calls = 0

    def source() -> tuple[int, int]:
        nonlocal calls
        calls += 1
        if calls > 1:
            release.wait(10)  # the restarted sampler is stuck on its first sample
        return 100, 100

    m = PoolMonitor(source, interval=1, clock=clock, stale_level=PressureLevel.NORMAL)
    m.sample()
    clock.advance(10)
    assert m.stale
    m.start()
    try:
        assert m.stale  # the old CRITICAL sample does not come back to life
        m.admit(Priority.LOW)
    finally:
        release.set()
        m.stop()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1.2), max_size=60), st.integers(1, 4))
def test_pressure_machine_properties(fractions: list[float], recover_after: int) -> None:
    p = _Pressure(warning=0.85, critical=0.92, hysteresis=0.05, recover_after=recover_after)
    threshold = {PressureLevel.WARNING: 0.85, PressureLevel.CRITICAL: 0.92}
    previous = PressureLevel.NORMAL
    below = 0  # consecutive samples under the band of the current level
    for f in fractions:
        level = p.update(f)
        assert level >= p.raw(f)  # never below what the sample alone says: rises are immediate
        if previous is not PressureLevel.NORMAL and f < threshold[previous] - 0.05:
            below += 1
        else:
            below = 0
        if level < previous:
            assert below >= recover_after  # fell only after enough samples under the band
        if level != previous:
            below = 0
        previous = level


# --- sampler lifecycle and misbehaving sources ------------------------------------------


def test_start_after_a_stop_that_timed_out_samples_again() -> None:
    # stop() could not wait for a sampler stuck in a slow sample; start() used to see
    # that thread alive, do nothing, and the monitor never sampled again once it ended.
    entered = threading.Event()
    release = threading.Event()
    resumed = threading.Event()
    calls = 0

    def source() -> tuple[int, int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            entered.set()
            release.wait(10)  # stuck until the test lets it go
        elif calls >= 3:
            resumed.set()
        return 1, 10

    m = PoolMonitor(source, interval=0.01, name="stuck")
    m.start()
    assert entered.wait(10)
    m.stop(timeout=0)  # gives up waiting: the first sampler is still inside read()
    old = m._thread
    assert old is not None and old.is_alive()
    m.start()
    assert m._thread is not old
    release.set()
    try:
        assert resumed.wait(10)  # the new sampler samples, on and on
        old.join(10)
        assert not old.is_alive()  # the stopped one ended after its sample
    finally:
        m.stop()
    assert not m.running
    assert [t.name for t in threading.enumerate()].count("suture-pool-stuck") == 0


def test_stop_then_start_from_many_threads_leaves_one_sampler() -> None:
    m = PoolMonitor(lambda: (1, 10), interval=0.01, name="many")
    try:
        for _ in range(5):
            starters = [threading.Thread(target=m.start) for _ in range(4)]
            for t in starters:
                t.start()
            for t in starters:
                t.join()
            assert [t.name for t in threading.enumerate()].count("suture-pool-many") == 1
            m.stop()
            assert not m.running
    finally:
        m.stop()


def test_a_source_returning_garbage_is_reported_and_the_others_still_count() -> None:
    class Odd:
        name = "odd"

        def __init__(self, value: Any) -> None:
            self.value = value

        def read(self) -> Any:
            return self.value

    for garbage in [None, "3/10", (1, 2, 3), (float("nan"), 10)]:
        m = PoolMonitor([Odd(garbage), lambda: (2, 10)], clock=FakeClock())
        usage = m.sample()
        assert usage.fraction == 0.2
        assert usage.detail("odd").error is not None
    pair = PoolMonitor(Odd((9, 10)), clock=FakeClock()).sample()
    assert pair.fraction == 0.9


def test_astart_again_after_the_first_loop_was_closed() -> None:
    # A sampler task left pending in a loop that was closed never runs again; the
    # monitor used to count it as running, and astart() in a new loop did nothing.
    gauge = Gauge(2, 10)
    m = PoolMonitor(gauge, interval=1.0, clock=FakeClock())
    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(m.astart())
    finally:
        stale_task = m._task
        first.close()
    assert stale_task is not None and not stale_task.done()
    assert not m.running

    async def again() -> None:
        await m.astart()
        assert m.running
        for _ in range(500):
            if gauge.reads:
                break
            await asyncio.sleep(0.01)
        await m.astop()

    asyncio.run(again())
    assert gauge.reads >= 1
    assert not m.running
    stale_task._log_destroy_pending = False  # closed on purpose: no "destroyed" warning


# --- a source that reports its rises between samples ------------------------------------


class WatchedGauge(Gauge):
    """A gauge that, like a SQLAlchemy pool's source, tells its watchers when it changes."""

    name = "watched"

    def __init__(self, current: int = 0, limit: int = 10) -> None:
        super().__init__(current, limit)
        self.watchers: list[Any] = []

    def read(self) -> Reading:
        current, limit = self()
        return Reading(current, limit)

    def watch(self, callback: Any) -> Any:
        self.watchers.append(callback)
        return lambda: self.watchers.remove(callback)

    def set(self, current: int) -> None:
        self.current = current
        for callback in list(self.watchers):
            callback(current / self.limit)


async def _started(m: PoolMonitor) -> None:
    await m.astart()
    for _ in range(10_000):  # the first sample, in a worker thread
        if m.usage is not None:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("no first sample")


async def test_a_watched_source_raises_the_level_at_once_and_alone() -> None:
    # The real clock and an hour between samples: only the source's own report can tell.
    watched = WatchedGauge(current=1)
    server = Gauge(current=10, limit=100)
    m = PoolMonitor([watched, CallableSource(server, name="server")], interval=3600)
    assert watched.watchers == []  # not before it samples
    await _started(m)
    try:
        reads = server.reads
        watched.set(5)  # no rise (50%): nothing is read
        assert watched.reads == 1 and m.level is PressureLevel.NORMAL
        with capture_events() as events:
            watched.set(10)
        assert m.level is PressureLevel.CRITICAL
        with pytest.raises(Overloaded):
            m.admit(Priority.NORMAL)
        usage = m.usage
        assert usage is not None and (usage.source, usage.fraction) == ("watched", 1.0)
        assert usage.detail("server").fraction == 0.1  # the other source's part is kept
        assert server.reads == reads  # and not read again
        assert [type(e).__name__ for e in events] == ["PressureChanged"]
        watched.set(0)  # a fall waits for the sampler's recovery streak
        assert m.level is PressureLevel.CRITICAL
    finally:
        await m.astop()
    assert watched.watchers == []


async def test_a_rise_during_a_sample_sheds_at_once_without_waiting_for_it() -> None:
    watched = WatchedGauge(current=1)
    m = PoolMonitor(watched, interval=3600)
    await _started(m)
    busy = threading.Event()
    done = threading.Event()

    def sampling() -> None:  # another thread holds the sample lock (a slow source)
        with m._sample_lock:
            busy.set()
            done.wait(10)

    thread = threading.Thread(target=sampling)
    thread.start()
    try:
        assert busy.wait(10)
        watched.set(10)
        with pytest.raises(Overloaded):
            m.admit(Priority.NORMAL)
    finally:
        done.set()
        thread.join(10)
        await m.astop()
    assert m.sample().fraction == 1.0 and m.level is PressureLevel.CRITICAL
