"""suture.chaos: faults per target, off by default, injected through the clock and rand."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from suture import Retry, is_transient
from suture.chaos import AsyncConnectionHog, Chaos, ConnectionHog, FaultConfig, InjectedFault
from suture.events import FaultInjected
from suture.testing import FakeClock, capture_events, no_wait


def rand_from(*values: float):  # type: ignore[no-untyped-def]
    it = iter(values)
    return lambda: next(it)


def test_everything_is_off_by_default() -> None:
    chaos = Chaos(clock=FakeClock())
    assert chaos.config("database") == FaultConfig()
    assert not chaos.active
    with capture_events() as events:
        for _ in range(100):
            chaos.inject("database")
    assert events.of(FaultInjected) == []
    assert chaos.snapshot() == {}


def test_error_rate_uses_the_injected_randomness() -> None:
    chaos = Chaos(rand=rand_from(0.5, 0.1, 0.29, 0.3, 0.99), clock=FakeClock())
    chaos.configure("database", error_rate=0.3)
    outcomes = []
    for _ in range(5):
        try:
            chaos.inject("database")
            outcomes.append("ok")
        except InjectedFault as exc:
            outcomes.append(f"fault:{exc.target}")
    assert outcomes == ["ok", "fault:database", "fault:database", "ok", "ok"]
    assert chaos.snapshot()["database"]["injected"] == {"error": 2}


def test_full_error_rate_always_fails_and_zero_never() -> None:
    chaos = Chaos(rand=lambda: 0.999999, clock=FakeClock())
    chaos.configure("db", error_rate=1.0)
    for _ in range(10):
        with pytest.raises(InjectedFault):
            chaos.inject("db")
    chaos.configure("db", error_rate=0.0)
    chaos.inject("db")
    assert not chaos.active


def test_injected_faults_are_transient_so_policies_heal_them() -> None:
    exc = InjectedFault("database")
    assert isinstance(exc, ConnectionError)
    assert is_transient(exc)
    clock = FakeClock()
    chaos = Chaos(rand=rand_from(0.0, 0.0, 0.9), clock=clock)
    chaos.configure("database", error_rate=0.5)
    calls = []

    @Retry(attempts=3, clock=clock)
    def query() -> str:
        calls.append(1)
        chaos.inject("database")
        return "rows"

    assert query() == "rows"
    assert len(calls) == 3


def test_latency_waits_on_the_clock_and_emits_events() -> None:
    clock = FakeClock()
    chaos = Chaos(clock=clock)
    chaos.configure("payments", latency=0.25)
    with capture_events() as events:
        chaos.inject("payments")
        chaos.inject("payments")
    assert clock.sleeps == [0.25, 0.25]
    faults = events.of(FaultInjected)
    assert [(e.target, e.kind) for e in faults] == [("payments", "latency")] * 2
    assert faults[0].extra == {"seconds": 0.25}


def test_no_wait_skips_the_latency_but_counts_it() -> None:
    clock = FakeClock()
    chaos = Chaos(clock=clock)
    chaos.configure("payments", latency=1.0)
    with no_wait():
        chaos.inject("payments")
    assert clock.sleeps == []
    assert chaos.snapshot()["payments"]["injected"] == {"latency": 1}


async def test_async_injection_and_wrap() -> None:
    clock = FakeClock()
    chaos = Chaos(rand=rand_from(0.9, 0.0), clock=clock)
    chaos.configure("svc", error_rate=0.5, latency=0.1)

    @chaos.wrap("svc")
    async def fetch(x: int) -> int:
        return x * 2

    assert await fetch(2) == 4
    with pytest.raises(InjectedFault):
        await fetch(3)
    assert clock.sleeps == [0.1, 0.1]


def test_wrap_sync_keeps_the_function() -> None:
    chaos = Chaos(rand=lambda: 0.0, clock=FakeClock())

    @chaos.wrap("svc")
    def add(a: int, b: int) -> int:
        """Adds."""
        return a + b

    assert add(1, 2) == 3
    assert add.__doc__ == "Adds."
    chaos.configure("svc", error_rate=0.1)
    with pytest.raises(InjectedFault):
        add(1, 2)


def test_targets_are_independent_and_configure_keeps_other_fields() -> None:
    chaos = Chaos(clock=FakeClock())
    chaos.configure("a", error_rate=0.2)
    chaos.configure("a", latency=0.5)
    chaos.configure("b", latency=0.1)
    assert chaos.config("a") == FaultConfig(error_rate=0.2, latency=0.5)
    assert chaos.config("b") == FaultConfig(latency=0.1)
    chaos.clear("a")
    assert chaos.config("a") == FaultConfig()
    assert chaos.config("b").latency == 0.1
    chaos.clear()
    assert not chaos.active


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"error_rate": 1.5}, r"error_rate=1\.5"),
        ({"error_rate": -0.1}, r"error_rate=-0\.1"),
        ({"latency": -1}, "latency=-1"),
        ({"hold": -2}, "hold=-2"),
    ],
)
def test_bad_configuration_names_the_parameter(kwargs: dict[str, float], message: str) -> None:
    chaos = Chaos(clock=FakeClock())
    with pytest.raises(ValueError, match=message):
        chaos.configure("db", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        FaultConfig(**kwargs)  # type: ignore[arg-type]
    assert not chaos.active


def test_bad_target_and_rand() -> None:
    with pytest.raises(ValueError, match="target=''"):
        Chaos().configure("", error_rate=0.1)
    with pytest.raises(TypeError, match="rand=3"):
        Chaos(rand=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"hold=1\.5"):
        Chaos().configure("db", hold=1.5)  # type: ignore[arg-type]


def test_configuration_changes_are_thread_safe() -> None:
    chaos = Chaos(rand=lambda: 0.5, clock=FakeClock())
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        barrier.wait()
        for j in range(200):
            chaos.configure(f"t{i}", error_rate=(j % 10) / 10, latency=0.0)
            chaos.configure("shared", hold=0, latency=j / 1000)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        assert chaos.config(f"t{i}").error_rate == 0.9
    assert chaos.config("shared").latency == 0.199


class FakePool:
    def __init__(self, size: int) -> None:
        self.free = list(range(size))
        self.lock = threading.Lock()

    def acquire(self) -> int:
        with self.lock:
            return self.free.pop()

    def release(self, conn: int) -> None:
        with self.lock:
            self.free.append(conn)


def test_connection_hog_holds_and_gives_back() -> None:
    pool = FakePool(5)
    hog: ConnectionHog[int] = ConnectionHog(pool.acquire, pool.release)
    chaos = Chaos(clock=FakeClock())
    chaos.register_holder("db", hog)
    chaos.configure("db", hold=3)
    assert hog.wait(timeout=30)
    assert hog.held == 3
    assert len(pool.free) == 2
    chaos.configure("db", hold=1)
    assert hog.held == 1
    assert len(pool.free) == 4
    chaos.clear("db")
    assert hog.held == 0
    assert len(pool.free) == 5
    assert chaos.snapshot()["db"]["held"] == 0


def test_register_holder_rejects_non_holders() -> None:
    with pytest.raises(TypeError, match="holder="):
        Chaos().register_holder("db", object())  # type: ignore[arg-type]


async def test_async_connection_hog_holds_until_released() -> None:
    inside = 0
    entered = asyncio.Event()

    @asynccontextmanager
    async def connect() -> AsyncIterator[None]:
        nonlocal inside
        inside += 1
        entered.set()
        try:
            yield
        finally:
            inside -= 1

    hog = AsyncConnectionHog(connect)
    chaos = Chaos(clock=FakeClock())
    chaos.register_holder("db", hog)
    chaos.configure("db", hold=2)
    for _ in range(10):
        await asyncio.sleep(0)
    assert inside == 2
    assert hog.held == 2
    chaos.configure("db", hold=1)
    for _ in range(10):
        await asyncio.sleep(0)
    assert inside == 1
    await hog.aclose()
    assert inside == 0
    assert hog.held == 0


async def test_a_hold_the_pool_cannot_serve_is_one_warning_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @asynccontextmanager
    async def exhausted() -> AsyncIterator[None]:
        raise TimeoutError("QueuePool limit of size 10 overflow 0 reached")
        yield  # pragma: no cover

    hog = AsyncConnectionHog(exhausted)
    with caplog.at_level("WARNING", logger="suture"):
        await hog.aset_held(2)
        await asyncio.sleep(0)
        await hog.aclose()
    lines = [r for r in caplog.records if "could not take a connection" in r.getMessage()]
    assert len(lines) == 2
    assert all(r.levelname == "WARNING" and r.exc_info is None for r in lines)
    assert "TimeoutError: QueuePool limit" in lines[0].getMessage()
    assert hog.held == 0


def test_a_blocking_pool_that_cannot_serve_a_hold_is_one_warning_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def acquire() -> int:
        raise TimeoutError("QueuePool limit of size 5 overflow 0 reached")

    hog: ConnectionHog[int] = ConnectionHog(acquire, lambda conn: None)
    with caplog.at_level("WARNING", logger="suture"):
        hog.set_held(2)
        for thread in threading.enumerate():
            if thread.name == "suture-chaos-hog":
                thread.join(timeout=30)
    (record,) = [r for r in caplog.records if "could not take a connection" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert record.exc_info is None
    assert "TimeoutError: QueuePool limit" in record.getMessage()
    assert hog.held == 0
