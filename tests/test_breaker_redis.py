"""RedisBreakerStore against the real Redis: state shared between "processes"
(two stores, two clients), no round trip on the closed hot path, an outage
degrades to local state and heals back."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redis_support import CountingRedis, together
from suture import BreakerOpen, BreakerState, CircuitBreaker
from suture.contrib.redis import RedisBreakerStore
from suture.testing import FakeClock

pytestmark = pytest.mark.redis

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


@pytest.fixture
def prefix(redis_url: str, unique_name: str) -> Iterator[str]:
    prefix = f"suture-test:{unique_name}:"
    yield prefix
    cleanup = redis.Redis.from_url(redis_url)
    keys = list(cleanup.scan_iter(match=prefix + "*"))
    if keys:
        cleanup.delete(*keys)
    cleanup.close()


def client(redis_url: str) -> CountingRedis:
    return CountingRedis.from_url(redis_url, socket_timeout=1.0)  # type: ignore[return-value]


def boom() -> None:
    raise ConnectionError("down")


def trip(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            breaker.call(boom)


def test_state_is_shared_between_processes(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    store_a = RedisBreakerStore(client(redis_url), prefix=prefix, background=False, follow="any")
    store_b = RedisBreakerStore(client(redis_url), prefix=prefix, background=False, follow="any")
    a = CircuitBreaker(
        "payments", failure_threshold=2, reset_timeout=10, store=store_a, clock=clock
    )
    b = CircuitBreaker(
        "payments", failure_threshold=2, reset_timeout=10, store=store_b, clock=clock
    )
    trip(a, 2)
    assert a.state is OPEN
    assert b.state is CLOSED  # b has not polled yet
    store_b.poll()
    calls = 0

    def work() -> str:
        nonlocal calls
        calls += 1
        return "ok"

    with pytest.raises(BreakerOpen) as info:
        b.call(work)
    assert calls == 0
    assert info.value.retry_after == pytest.approx(10.0)

    clock.advance(10)
    assert b.call(work) == "ok"  # b's probe closes it, in Redis too
    assert b.state is CLOSED
    store_a.poll()
    assert a.state is CLOSED

    late = CircuitBreaker(
        "payments",
        failure_threshold=2,
        reset_timeout=10,
        store=RedisBreakerStore(client(redis_url), prefix=prefix, background=False, follow="any"),
        clock=clock,
    )
    a.force_open()
    late_store = RedisBreakerStore(client(redis_url), prefix=prefix, background=False, follow="any")
    latest = CircuitBreaker("payments", store=late_store, clock=clock)
    assert latest.state is OPEN  # a new process starts from what Redis holds
    assert late.state is CLOSED  # until it polls
    late.close()


def test_concurrent_writers_compare_and_set(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    store_a = RedisBreakerStore(client(redis_url), prefix=prefix, background=False, follow="any")
    store_b = RedisBreakerStore(client(redis_url), prefix=prefix, background=False, follow="any")
    a = CircuitBreaker("db", failure_threshold=1, store=store_a, clock=clock)
    b = CircuitBreaker("db", failure_threshold=1, store=store_b, clock=clock)
    trip(a, 1)  # version 1, written by a
    trip(b, 1)  # b still thinks version 0: its write loses and it adopts a's record
    assert b.state is OPEN
    record_b = store_b.load("db")
    assert record_b is not None and record_b.version == 1
    assert record_b.origin == a._origin


def test_closed_hot_path_makes_no_round_trip(redis_url: str, prefix: str) -> None:
    conn = client(redis_url)
    store = RedisBreakerStore(conn, prefix=prefix, background=False, follow="any")
    breaker = CircuitBreaker("hot", store=store, clock=FakeClock())

    @breaker
    def ok() -> int:
        return 1

    before = conn.commands
    for _ in range(1000):
        ok()
    trip(breaker, 3)  # failures below the threshold: no state change either
    assert conn.commands == before
    trip(breaker, 2)  # the fifth opens it: one write (EVALSHA; SCRIPT LOAD the first time)
    assert before < conn.commands <= before + 3


def test_outage_degrades_to_local_state_and_heals(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    conn = client(redis_url)
    store = RedisBreakerStore(conn, prefix=prefix, background=False, follow="any")
    breaker = CircuitBreaker("flaky-redis", failure_threshold=2, store=store, clock=clock)
    conn.down = True
    trip(breaker, 2)  # the state change cannot reach Redis: it is kept locally
    assert store.degraded
    assert breaker.state is OPEN
    with pytest.raises(BreakerOpen):
        breaker.call(boom)
    store.poll()  # still down: nothing breaks
    assert store.degraded

    observer = RedisBreakerStore(client(redis_url), prefix=prefix, background=False, follow="any")
    assert CircuitBreaker("flaky-redis", store=observer, clock=clock).state is CLOSED

    conn.down = False
    store.poll()  # heals: the local, newer record is written back
    assert not store.degraded
    assert CircuitBreaker("flaky-redis", store=observer, clock=clock).state is OPEN


def test_threads_that_find_redis_down_together_warn_once(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The I/O thread and the pub/sub thread find an outage at the same moment (seen in
    # CI as two warnings for one outage): each change of health is logged once.
    conn = client(redis_url)
    store = RedisBreakerStore(conn, prefix=prefix, background=False, follow="any")
    with caplog.at_level(logging.WARNING, logger="suture"):
        for _ in range(20):  # twenty outages, each found and each healed by eight threads
            conn.down = True
            together(store.poll)
            assert store.degraded
            conn.down = False
            together(store.poll)
            assert not store.degraded
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 20
    assert sum("answers again" in m for m in messages) == 20


class ReadOnlyRedis(CountingRedis):
    """A real client whose server turns into a read-only replica (a failover)."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if self.down:
            self.commands += 1
            raise redis.exceptions.ReadOnlyError("You can't write against a read only replica.")
        return super().execute_command(*args, **options)


def test_an_error_reply_degrades_instead_of_replacing_the_callers_error(
    redis_url: str, prefix: str
) -> None:
    conn: ReadOnlyRedis = ReadOnlyRedis.from_url(redis_url, socket_timeout=1.0)  # type: ignore[assignment]
    store = RedisBreakerStore(conn, prefix=prefix, background=False, follow="any")
    breaker = CircuitBreaker("failover", failure_threshold=2, store=store, clock=FakeClock())
    conn.down = True
    trip(breaker, 2)  # each call raises its own ConnectionError, not Redis's ReadOnlyError
    assert store.degraded
    assert breaker.state is OPEN
    conn.down = False
    store.poll()  # heals: the local record is written back
    assert not store.degraded


def test_background_poller_delivers_remote_changes(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    writer = RedisBreakerStore(client(redis_url), prefix=prefix, background=False, follow="any")
    reader = RedisBreakerStore(client(redis_url), prefix=prefix, poll_interval=0.02, follow="any")
    try:
        a = CircuitBreaker("bg", failure_threshold=1, store=writer, clock=clock)
        b = CircuitBreaker("bg", failure_threshold=1, store=reader, clock=clock)
        delivered = threading.Event()
        reader.subscribe("bg", lambda record: delivered.set())
        trip(a, 1)
        assert delivered.wait(timeout=10), "the poller delivered the new record"
        assert b.state is OPEN
    finally:
        reader.close()


def test_bad_configuration(redis_url: str) -> None:
    conn = client(redis_url)
    with pytest.raises(ValueError, match="poll_interval=0"):
        RedisBreakerStore(conn, poll_interval=0)
    with pytest.raises(ValueError, match="prefix=''"):
        RedisBreakerStore(conn, prefix="")


def test_breakers_of_the_same_name_in_two_processes_have_different_origins() -> None:
    """A breaker ignores the store records it wrote itself; two workers' breakers of one
    name must therefore never share an origin (a per-process counter once did)."""
    import subprocess
    import sys

    code = "import suture; print(suture.CircuitBreaker('database')._origin)"
    origins = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(origins) == 2
    assert all(o.startswith("database#") for o in origins)
