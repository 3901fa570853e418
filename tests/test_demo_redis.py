"""Two demo workers share the ``database`` breaker through the real Redis.

Each app has its own SQLite file; they share one Redis and one key prefix, so
when one worker's database fails and its breaker opens, the other stops calling
its (healthy) database too, as soon as its store has polled Redis.
"""

from __future__ import annotations

import logging
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from demo_support import manager_client
from suture.demo.app import Service, Settings, create_app
from suture.testing import FakeClock

pytestmark = pytest.mark.redis

RESET = 30.0
#: How long a worker may take to see the other's state: the store polls every 0.5 s.
SHARED_WITHIN = 5.0


def _settings(tmp_path: Path, name: str, clock: FakeClock, **overrides: Any) -> Settings:
    options: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}",
        "tasks": 20,
        "messages": 20,
        "rules": 5,
        "background": False,
        "chaos": True,
        "admin_hosts": ("testclient",),
        "clock": clock,
        "rand": random.Random(11),
        "reset_timeout": RESET,
        "failure_threshold": 10,
        "pool_size": 4,
        "pool_timeout": 1.0,
    }
    options.update(overrides)
    return Settings(**options)


def service(client: TestClient) -> Service:
    svc = client.app.state.service  # type: ignore[attr-defined]
    assert isinstance(svc, Service)
    return svc


def inject(client: TestClient, **faults: Any) -> None:
    r = client.post("/api/admin/chaos", json=faults)
    assert r.status_code == 200, r.text


def eventually(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` until it holds; fail after ``SHARED_WITHIN`` seconds (not a speed test)."""
    deadline = time.monotonic() + SHARED_WITHIN
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {SHARED_WITHIN} s: {what}")
        time.sleep(0.02)


@pytest.fixture
def prefix(redis_url: str, unique_name: str) -> Iterator[str]:
    prefix = f"{unique_name}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


@pytest.fixture
def workers(
    tmp_path: Path, clock: FakeClock, redis_url: str, prefix: str
) -> Iterator[tuple[TestClient, TestClient]]:
    with ExitStack() as stack:
        a, b = (
            stack.enter_context(
                manager_client(
                    create_app(
                        _settings(
                            tmp_path,
                            name,
                            clock,
                            redis_url=redis_url,
                            redis_prefix=prefix,
                            redis_follow="any",  # one worker's OPEN opens both
                        )
                    ),
                    raise_server_exceptions=False,
                )
            )
            for name in ("a", "b")
        )
        yield a, b


def test_one_worker_opens_the_breaker_for_both_then_both_close(
    workers: tuple[TestClient, TestClient], clock: FakeClock, prefix: str, redis_url: str
) -> None:
    a, b = workers
    svc_a, svc_b = service(a), service(b)
    for client in (a, b):
        store = client.get("/health").json()["stateStore"]
        assert store == {"backend": "redis", "degraded": False, "prefix": prefix}
    assert b.get("/api/manager/assistance").status_code == 200

    # Worker A's database fails every call: A's breaker opens.
    inject(a, errorRate=1.0)
    for _ in range(30):
        if a.get("/api/manager/assistance").json().get("code") == "breaker_open":
            break
    assert svc_a.breaker.stats().state.value == "open"
    with redis.Redis.from_url(redis_url) as conn:
        # Local first: the store's I/O thread writes the record just after.
        def written() -> bool:
            raw = conn.get(f"{prefix}breaker:{{database}}:record")
            return raw is not None and b'"state":"open"' in raw

        eventually(written, "A's open breaker reaches Redis")

    # Worker B's database is healthy, but B learns of the open breaker from Redis
    # and rejects without calling its database at all.
    eventually(lambda: svc_b.breaker.state.value == "open", "B sees A's open breaker")
    calls = svc_b.telemetry.totals["db_calls"]
    r = b.get("/api/manager/assistance")
    assert r.status_code == 503
    assert r.json()["code"] == "breaker_open"
    assert svc_b.telemetry.totals["db_calls"] == calls
    assert b.get("/health").json()["status"] == "degraded"

    # A's database heals; after the reset timeout A's probe succeeds and closes the
    # breaker for both.
    inject(a, clear=True)
    clock.advance(RESET + 1)
    # The first half-open callers wait for the cluster-wide permit (taken by A's
    # store thread) and are refused meanwhile; A's probe then closes the breaker.
    eventually(lambda: a.get("/api/manager/assistance").status_code == 200, "A's probe succeeds")
    assert svc_a.breaker.stats().state.value == "closed"
    eventually(lambda: svc_b.breaker.state.value == "closed", "B sees A's closed breaker")
    assert b.get("/api/manager/assistance").status_code == 200
    for client in (a, b):
        health = client.get("/health").json()
        assert health["breakers"]["database"]["state"] == "closed"
        assert client.get("/api/dashboard").json()["stateStore"]["backend"] == "redis"


# One worker in a fresh process: its "database" breaker is the process's first, as in
# every other worker. ``watch`` waits (bounded) until it sees the breaker open;
# ``open`` forces it open.
_WORKER = """
import sys, time
from suture.demo.app import Service, Settings

role, database_url, redis_url, prefix = sys.argv[1:5]
svc = Service(Settings(database_url=database_url, redis_url=redis_url, redis_prefix=prefix))
try:
    if role == "open":
        svc.breaker.force_open("another worker")
    else:
        print("ready", flush=True)
        deadline = time.monotonic() + float(sys.argv[5])
        while svc.breaker.state.value != "open" and time.monotonic() < deadline:
            time.sleep(0.02)
        print(svc.breaker.state.value, flush=True)
finally:
    svc.close_state_store()
"""


def test_workers_in_two_processes_share_the_breaker(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    def worker(role: str, db: str) -> list[str]:
        url = f"sqlite+aiosqlite:///{tmp_path / db}"
        args = [role, url, redis_url, prefix, str(SHARED_WITHIN)]
        return [sys.executable, "-c", _WORKER, *args]

    with subprocess.Popen(
        worker("watch", "watch.db"), stdout=subprocess.PIPE, text=True
    ) as watcher:
        assert watcher.stdout is not None
        assert watcher.stdout.readline().strip() == "ready"
        subprocess.run(worker("open", "open.db"), check=True, timeout=30)
        seen = watcher.stdout.readline().strip()
        assert watcher.wait(timeout=30) == 0
    assert seen == "open"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed


def test_an_unreachable_redis_degrades_to_local_state(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    settings = _settings(tmp_path, "alone", clock, redis_url=url)
    with caplog.at_level(logging.WARNING, logger="suture"):
        with manager_client(create_app(settings), raise_server_exceptions=False) as client:
            health = client.get("/health")
            assert health.status_code == 200
            assert health.json()["stateStore"] == {
                "backend": "redis",
                "degraded": True,
                "prefix": "suture-demo:",
            }
            assert health.json()["status"] == "ok"
            # It serves, and its retries (a local budget now) still absorb faults.
            inject(client, errorRate=0.3)
            codes = [client.get("/api/manager/assistance").status_code for _ in range(20)]
            assert codes.count(200) >= 19, codes
            svc = service(client)
            assert svc.telemetry.totals["retries"] > 0
            assert svc.shared_budget is not None and svc.shared_budget.degraded
    assert any("unreachable" in record.getMessage() for record in caplog.records)


def test_without_a_redis_url_the_state_is_in_memory(tmp_path: Path, clock: FakeClock) -> None:
    with manager_client(create_app(_settings(tmp_path, "memory", clock))) as client:
        assert client.get("/health").json()["stateStore"] == {
            "backend": "memory",
            "degraded": False,
        }
        svc = service(client)
        assert svc.redis is None and svc.breaker_store is None and svc.shared_budget is None
