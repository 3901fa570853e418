"""The workers' last-known-good answers in Redis: :class:`RedisLastGoodStore`.

A :class:`suture.lastgood.LastGoodStore` for :class:`suture.LastGood`: one
worker's good answer can stand in for another's failed call (see
``docs/fallback.md``).
"""

from __future__ import annotations

import json
import math
import threading
from collections import deque
from typing import Any

from suture.contrib import missing_extra

try:
    import redis
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra(__name__, "redis", _exc) from _exc

from suture._config import Seconds, check_seconds
from suture.events import logger

__all__ = ["RedisLastGoodStore"]

# Any Redis failure leaves the worker's own memory serving: unreachable, a timeout,
# an error reply.
_ERRORS = (redis.RedisError, OSError)


class RedisLastGoodStore:
    """A :class:`suture.lastgood.LastGoodStore` in Redis: every worker's last good answers.

    ``save`` queues the value (JSON) and returns at once; a background thread,
    started by the first ``save`` (never at import), writes what is queued every
    ``flush_interval`` seconds in one pipeline (``SET key value PX keep_for``):
    the success path never waits on Redis. ``load`` is one ``GET``, called only
    when a call failed; while Redis is unreachable it answers ``None`` (the
    worker's own memory still serves) and queued values wait for the next flush.
    Values JSON cannot encode are not shared (the worker's memory keeps them).

    :param client: a ``redis.Redis`` client (short socket timeouts), or a URL.
    :param prefix: key prefix (``prefix + key``).
    :param flush_interval: seconds between two background writes (> 0).
    :param background: start the writer thread on the first save (``False``:
        call :meth:`flush` yourself, as tests do).
    """

    __slots__ = (
        "_client",
        "_lock",
        "_own",
        "_pending",
        "_stop",
        "_thread",
        "background",
        "flush_interval",
        "prefix",
    )

    def __init__(
        self,
        client: redis.Redis | str,
        *,
        prefix: str = "suture:lastgood:",
        flush_interval: Seconds = 0.5,
        background: bool = True,
    ) -> None:
        if isinstance(client, str):
            client = redis.Redis.from_url(client, socket_timeout=0.2, socket_connect_timeout=0.2)
            self._own = True
        elif isinstance(client, redis.Redis):
            self._own = False
        else:
            raise TypeError(f"client={client!r}: expected a redis.Redis client or a URL string")
        self._client = client
        self.prefix = prefix
        self.flush_interval = check_seconds("flush_interval", flush_interval, positive=True)
        self.background = background
        # Saves are appended (atomic, no lock on the success path); the flush pops them.
        self._pending: deque[tuple[str, str, int]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def save(self, key: str, value: Any, produced_at: float, keep_for: float) -> None:
        try:
            raw = json.dumps({"value": value, "at": produced_at}, separators=(",", ":"))
        except (TypeError, ValueError):
            return  # not shareable: this worker's memory keeps it
        self._pending.append((key, raw, max(1, math.ceil(keep_for * 1000))))
        if self.background and self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="suture-redis-lastgood", daemon=True
                    )
                    self._thread.start()

    def load(self, key: str) -> tuple[Any, float] | None:
        try:
            raw = self._client.get(self.prefix + key)
        except _ERRORS:
            return None
        if raw is None:
            return None
        data = json.loads(raw)
        return data["value"], float(data["at"])

    def flush(self) -> None:
        """Write what is queued (one pipeline); kept for the next flush if Redis fails."""
        queue = self._pending
        latest: dict[str, tuple[str, str, int]] = {}
        while True:
            try:
                item = queue.popleft()
            except IndexError:
                break
            latest[item[0]] = item  # the newest save of a key wins
        if not latest:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, raw, keep_ms in latest.values():
                pipe.set(self.prefix + key, raw, px=keep_ms)
            pipe.execute()
        except _ERRORS:
            queue.extendleft(reversed(latest.values()))  # before any newer save

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except Exception:  # the writer must survive anything; it is logged
                logger.exception("redis last-good store flush failed")

    def close(self) -> None:
        """Stop the writer, write what is queued, close the client if it is ours."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.flush_interval + 1.0)
        self.flush()
        if self._own:
            self._client.close()
