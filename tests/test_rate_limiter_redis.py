"""RedisRateLimiter against the real Redis: leases, sharing between workers and processes,
pauses that reach every worker, and a Redis killed and restarted mid-run."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from redis_support import CountingRedis
from suture import Overloaded
from suture.contrib.redis_limits import AsyncRedisRateLimiter, RedisRateLimiter
from suture.testing import FakeClock

pytestmark = pytest.mark.redis

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def client(url: str) -> CountingRedis:
    return CountingRedis.from_url(url, socket_timeout=1.0)  # type: ignore[return-value]


@pytest.fixture
def name(redis_url: str, unique_name: str) -> Iterator[str]:
    yield unique_name
    cleanup = redis.Redis.from_url(redis_url)
    for key in cleanup.scan_iter(f"suture:rate:{{{unique_name}}}*"):
        cleanup.delete(key)
    cleanup.close()


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"rate": 0}, "rate"),
        ({"rate": float("nan")}, "rate"),
        ({"rate": 2e6}, "rate"),
        ({"rate": 10, "burst": 0}, "burst"),
        ({"rate": 10, "lease": 0}, "lease"),
        ({"rate": 10, "burst": 5, "lease": 6}, "lease"),
        ({"rate": 10, "lease_ttl": 0}, "lease_ttl"),
        ({"rate": 10, "period": float("inf")}, "period"),
    ],
)
def test_bad_configuration_names_the_parameter(
    redis_url: str, kwargs: dict[str, Any], param: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=rf"^{param}="):
        RedisRateLimiter(redis_url, "x", **kwargs)
    with pytest.raises(TypeError, match=r"^client="):
        RedisRateLimiter(42, "x", 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^name="):
        RedisRateLimiter(redis_url, "", 10)


def test_headroom_needs_no_command_on_most_calls(redis_url: str, name: str) -> None:
    c = client(redis_url)
    limiter = RedisRateLimiter(c, name, 100_000, burst=10_000, lease_ttl=5.0)
    assert all(limiter.try_acquire() for _ in range(5_000))
    stats = limiter.stats()
    assert stats.local + stats.commands >= 5_000
    assert c.commands <= 0.05 * 5_000  # the lease grows 1, 2, 4, ... up to 1,000
    assert stats.lease == 1_000


def test_two_workers_share_one_limit_exactly_with_lease_1(redis_url: str, name: str) -> None:
    a = RedisRateLimiter(client(redis_url), name, 10, period=3600, burst=10, lease=1)
    b = RedisRateLimiter(client(redis_url), name, 10, period=3600, burst=10, lease=1)
    admitted = sum(a.try_acquire() + b.try_acquire() for _ in range(20))
    assert admitted == 10
    assert a.stats().workers == 2


def test_leases_never_exceed_burst_plus_leases(redis_url: str, name: str) -> None:
    workers = [
        RedisRateLimiter(client(redis_url), name, 1, period=3600, burst=20, lease=4)
        for _ in range(3)
    ]
    admitted = sum(w.try_acquire() for _ in range(50) for w in workers)
    assert admitted == 20  # leased tokens were taken from the shared bucket: never more


def test_a_refused_worker_does_not_ask_again_before_a_token_is_due(
    redis_url: str, name: str
) -> None:
    c = client(redis_url)
    limiter = RedisRateLimiter(c, name, 1, period=60, burst=1, lease=1)
    assert limiter.try_acquire()
    before = c.commands
    assert not any(limiter.try_acquire() for _ in range(100))
    assert c.commands - before == 1  # told "not for 60 s", it believes it
    with pytest.raises(Overloaded) as info:
        limiter.acquire(max_wait=1)
    assert 58 < info.value.retry_after <= 60


def test_a_pause_reaches_the_other_worker_at_its_next_lease(redis_url: str, name: str) -> None:
    a = RedisRateLimiter(client(redis_url), name, 1000, burst=100, lease=10, lease_ttl=0.05)
    b = RedisRateLimiter(client(redis_url), name, 1000, burst=100, lease=10, lease_ttl=0.05)
    assert a.try_acquire() and b.try_acquire()
    a.pause(2.0)  # a's upstream said 429, Retry-After: 2
    assert not a.try_acquire()
    time.sleep(0.06)  # b's lease expires (real time: the lease is timed by b's clock)
    assert not b.try_acquire()
    assert not any(b.try_acquire() for _ in range(50))


def test_an_outage_degrades_to_rate_over_workers_and_heals(redis_url: str, name: str) -> None:
    clock = FakeClock()
    ca, cb = client(redis_url), client(redis_url)
    a = RedisRateLimiter(ca, name, 10, period=1, burst=10, lease=1, reconnect_after=5, clock=clock)
    b = RedisRateLimiter(cb, name, 10, period=1, burst=10, lease=1, clock=clock)
    assert b.try_acquire() and a.try_acquire()
    assert a.stats().workers == 2
    ca.down = True
    admitted = sum(a.try_acquire() for _ in range(20))
    assert a.degraded
    assert admitted == 5  # half the burst: this worker's share of it
    commands = ca.commands
    clock.advance(1)
    assert sum(a.try_acquire() for _ in range(20)) == 5  # and half the rate
    assert ca.commands == commands  # not retried before reconnect_after
    ca.down = False
    clock.advance(5)
    assert a.try_acquire()
    assert not a.degraded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@pytest.mark.slow
def test_redis_killed_and_restarted_mid_run() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    server = _start_redis(port)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        limiter = RedisRateLimiter(url, "outage", 1000, burst=50, lease=5, reconnect_after=0.2)
        assert limiter.try_acquire()
        server.kill()
        server.wait()
        admitted = sum(limiter.try_acquire() for _ in range(200))
        assert limiter.degraded
        # local limiting at the last known share (one worker: the whole burst), plus
        # what was left of the lease: no error
        assert 0 < admitted <= 50 + 5
        server = _start_redis(port)
        time.sleep(0.25)
        assert limiter.try_acquire()
        assert not limiter.degraded
        limiter.close()
    finally:
        server.kill()
        server.wait()


def _run_workers(
    redis_url: str, name: str, count: int, rate: float, burst: int, seconds: float, **pause: float
) -> list[dict[str, Any]]:
    procs = []
    for i in range(count):
        args = [sys.executable, str(HERE / "rate_worker.py"), redis_url, name]
        args += [str(rate), str(burst), "1" if i == 0 and "pause_at" in pause else "0"]
        procs.append(
            subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env={"PYTHONPATH": str(SRC), "PATH": ""},
            )
        )
    for proc in procs:  # every worker imported and connected: the clock starts now
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    start = time.time() + 0.2
    line = f"{start} {start + seconds}"
    if "pause_at" in pause:
        line += f" {start + pause['pause_at']}"
    for proc in procs:  # to all of them first: each then runs on its own
        assert proc.stdin is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
    out = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=seconds + 60)
        assert proc.returncode == 0
        out.append(json.loads(stdout))
    return out


@pytest.mark.slow
def test_several_processes_share_the_limit(redis_url: str, name: str) -> None:
    rate, burst, seconds = 300, 30, 3.0
    results = _run_workers(redis_url, name, 3, rate, burst, seconds)
    admitted = sum(r["admitted"] for r in results)
    allowed = rate * seconds + burst
    assert admitted <= allowed + 3 * 3  # + the leases (burst // 10 each)
    # Liveness, not accuracy (bench/limits.py --redis measures that: 0.999x). On a
    # loaded 2-core machine the workers are descheduled for long stretches: tokens
    # nobody asked for lapse (a limiter never owes more than its burst), and a lease
    # held past its lease_ttl is dropped. The cluster then admits less, never more.
    assert admitted >= 0.75 * allowed
    assert all(r["admitted"] > 0 for r in results)


@pytest.mark.slow
def test_a_429_pause_in_one_process_stops_the_others(redis_url: str, name: str) -> None:
    results = _run_workers(redis_url, name, 2, 200, 20, 2.5, pause_at=0.8)
    pauser, other = results
    paused_at = pauser["paused_at"]
    assert paused_at is not None
    assert all(r["admitted"] > 0 for r in results)
    # The other process learns of the pause at its next lease: within lease_ttl (0.2 s).
    # From then until the pause ends nobody is admitted, in either process.
    quiet = (paused_at + 0.25, paused_at + 0.95)
    for r in results:
        assert [t for t in r["admitted_at"] if quiet[0] <= t < quiet[1]] == []
    assert any(t >= paused_at + 1.0 for t in other["admitted_at"])  # and it resumes


async def test_async_flavour(redis_url: str, name: str) -> None:
    c = redis.asyncio.Redis.from_url(redis_url)
    limiter = AsyncRedisRateLimiter(c, name, 5, period=3600, burst=5, lease=2)
    results = [await limiter.try_acquire() for _ in range(8)]
    assert sum(results) == 5
    with pytest.raises(Overloaded):
        await limiter.acquire(max_wait=1)
    await limiter.pause(1)
    assert limiter.stats().commands >= 3
    await c.aclose()
