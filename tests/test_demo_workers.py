"""``suture demo --workers N``: real worker processes sharing the breaker through Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from shared_state_support import free_port
from suture.cli import main

RUN = "import sys; from suture.cli import main; sys.exit(main(sys.argv[1:]))"


def test_more_than_one_worker_needs_a_redis_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["demo", "--workers", "2"]) == 2
    assert "--workers 2 needs --redis-url" in capsys.readouterr().err
    assert main(["demo", "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err


def _health(port: int) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/health", headers={"Authorization": "Bearer w0rkers-t0ken"}
    )
    with urllib.request.urlopen(request, timeout=5) as r:
        data: dict[str, object] = json.loads(r.read())
    return data


@pytest.mark.redis
@pytest.mark.parametrize("workers", [2, 4])
def test_workers_share_one_breaker(tmp_path: Path, redis_url: str, workers: int) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    db = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"
    args = ["demo", "--workers", str(workers), "--port", str(port), "--database-url", db]
    args += ["--redis-url", redis_url, "--tasks", "5", "--messages", "5", "--rules", "2"]
    args += ["--token", "w0rkers-t0ken"]
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        seen: set[str] = set()
        live: list[str] = []
        while time.monotonic() < deadline and (len(seen) < workers or not seen <= set(live)):
            try:
                cluster = _health(port)["workers"]
            except OSError:
                time.sleep(0.5)
                continue
            assert isinstance(cluster, dict)
            seen.add(cluster["worker"])
            live = cluster["live"]
            time.sleep(0.05)
        assert len(seen) == workers  # answered by each worker process
        # ...and each sees all of them live (others may share the default prefix).
        assert seen <= set(live)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
