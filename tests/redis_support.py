"""Shared by the Redis integration tests (not a test module)."""

from __future__ import annotations

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
