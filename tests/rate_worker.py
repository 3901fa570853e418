"""One worker process for the shared rate limiter tests and benchmark (not a test module).

    python tests/rate_worker.py URL NAME RATE BURST START END [PAUSE_AT PAUSER]

Calls ``try_acquire`` as fast as it can from wall time START to END (when
PAUSER is 1, it pauses the limiter for 1 s at wall time PAUSE_AT, as an HTTP
client told 429 would), then prints one JSON line: admitted, commands sent,
admissions from PAUSE_AT + 0.25 s to PAUSE_AT + 0.95 s (inside the pause, once
every worker's lease has expired).
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
    start, end = float(sys.argv[5]), float(sys.argv[6])
    pause_at = float(sys.argv[7]) if len(sys.argv) > 7 else None
    pauser = len(sys.argv) > 8 and sys.argv[8] == "1"
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    limiter = RedisRateLimiter(client, name, rate, burst=burst, lease_ttl=0.2)
    admitted = 0
    during_pause = 0
    paused = False
    while time.time() < start:
        time.sleep(0.001)
    while (now := time.time()) < end:
        if pauser and pause_at is not None and not paused and now >= pause_at:
            limiter.pause(1.0)
            paused = True
        if limiter.try_acquire():
            admitted += 1
            if pause_at is not None and pause_at + 0.25 <= now < pause_at + 0.95:
                during_pause += 1
        else:
            time.sleep(0.0002)  # a client that was refused does something else a moment
    stats = limiter.stats()
    print(
        json.dumps(
            {
                "admitted": admitted,
                "commands": stats.commands,
                "local": stats.local,
                "during_pause": during_pause,
                "degraded": stats.degraded,
            }
        )
    )


if __name__ == "__main__":
    main()
