"""Shared by the Redis integration tests (not a test module)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import redis


class CountingRedis(redis.Redis):
    """A real client that counts its commands and can pretend Redis is down."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = 0
        self.down = False

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands += 1
        if self.down:
            raise redis.ConnectionError("injected outage")
        return super().execute_command(*args, **options)


def together(fn: Callable[[], object], threads: int = 8) -> None:
    """Run ``fn`` on ``threads`` threads released at one instant (a barrier); wait for all."""
    start = threading.Barrier(threads)

    def run() -> None:
        start.wait()
        fn()

    running = [threading.Thread(target=run) for _ in range(threads)]
    for t in running:
        t.start()
    for t in running:
        t.join()
