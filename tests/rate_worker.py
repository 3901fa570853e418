"""One worker process for the shared rate limiter tests (not a test module).

    python tests/rate_worker.py URL NAME RATE BURST PAUSER

Prints ``ready`` once imported and connected, then reads one line from stdin,
``START END [PAUSE_AT]`` (wall times: a loaded machine takes seconds to start
a Python process, so the clock starts only when every worker is ready). Calls
``try_acquire`` as fast as it can from START to END; when PAUSER is 1 it
pauses the limiter for 1 s at PAUSE_AT, as an HTTP client told 429 would.
Then prints one JSON line: admitted, commands sent, and with PAUSE_AT the
wall time of every admission and of the pause (``paused_at``, the pauser's).
"""

from __future__ import annotations

import json
import sys
import time

import redis

from suture.contrib.redis_limits import RedisRateLimiter


def main() -> None:
    url, name = sys.argv[1], sys.argv[2]
    rate, burst = float(sys.argv[3]), int(sys.argv[4])
    pauser = sys.argv[5] == "1"
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    client.ping()
    limiter = RedisRateLimiter(client, name, rate, burst=burst, lease_ttl=0.2)
    print("ready", flush=True)
    times = [float(x) for x in sys.stdin.readline().split()]
    start, end = times[0], times[1]
    pause_at = times[2] if len(times) > 2 else None
    admitted = 0
    admitted_at: list[float] = []
    paused_at: float | None = None
    while time.time() < start:
        time.sleep(0.001)
    while (now := time.time()) < end:
        if pauser and pause_at is not None and paused_at is None and now >= pause_at:
            paused_at = time.time()
            limiter.pause(1.0)
        if limiter.try_acquire():
            admitted += 1
            if pause_at is not None:
                admitted_at.append(time.time())
        else:
            time.sleep(0.0002)  # a client that was refused does something else a moment
    stats = limiter.stats()
    print(
        json.dumps(
            {
                "admitted": admitted,
                "commands": stats.commands,
                "local": stats.local,
                "admitted_at": admitted_at,
                "paused_at": paused_at,
                "degraded": stats.degraded,
            }
        )
    )


if __name__ == "__main__":
    main()
