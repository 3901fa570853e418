"""Breaker state and retry budgets shared through Redis: :class:`RedisBreakerStore`
and :class:`RedisRetryBudget`.

Several workers (processes, hosts) that call the same dependency share one
breaker state: when one of them opens the breaker, the others stop calling
too, within ``poll_interval`` seconds.

>>> import redis                                            # doctest: +SKIP
>>> from suture.contrib.redis import RedisBreakerStore      # doctest: +SKIP
>>> store = RedisBreakerStore(redis.Redis.from_url("redis://localhost:6379/0"))  # doctest: +SKIP
>>> breaker = suture.CircuitBreaker("payments", store=store)  # doctest: +SKIP

How it keeps the hot path local:

* A breaker reads its own memory on every call; it writes the store only when
  its state changes (one ``EVALSHA``: a compare-and-set on the record's
  version, which also bumps nothing else).
* A background thread (started on the first ``subscribe``, never at import)
  reads the subscribed records every ``poll_interval`` seconds with one
  ``MGET`` and hands newer ones to the breakers, which apply them on their
  next call. A closed breaker that succeeds never waits on Redis.

When Redis is unreachable the store **degrades to local state**: writes land
in memory (the breaker keeps working exactly as with the default store),
reads answer from memory, one warning is logged. When Redis answers again,
the poller **heals**: a local record newer than Redis's is written back, an
older one is replaced by Redis's (on a tie, each side keeps its record until
the next state change). Use short socket timeouts on the client
(``socket_timeout=0.2``): a state change waits at most that long during an
outage.

:class:`RedisRetryBudget` is a :class:`suture.RetryBudget` whose bucket lives in
one Redis hash shared by every worker that names the same ``key``. Successes
are counted locally (lock-free, no command) and folded into Redis in batches:
by the next ``try_spend``/``stats`` call and by a background flush every
``flush_interval`` seconds. ``try_spend`` is one atomic script (fold the
pending deposits, refill the floor by Redis ``TIME``, cap, take a token).
While Redis is unreachable the budget degrades to a local
:class:`suture.RetryBudget` (same numbers) and tries Redis again every
``reconnect_after`` seconds.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import redis

from suture.breaker import BreakerRecord, BreakerState, MemoryBreakerStore, RecordListener
from suture.events import logger

__all__ = ["RedisBreakerStore"]

# Compare-and-set on the record's version: store ARGV[2] only when the stored
# version is ARGV[1] (0 when absent); return whatever is stored afterwards.
_SWAP = """
local current = redis.call('GET', KEYS[1])
local version = 0
if current then version = tonumber(cjson.decode(current)['version']) end
if version ~= tonumber(ARGV[1]) then return current end
redis.call('SET', KEYS[1], ARGV[2])
return ARGV[2]
"""

# Any Redis failure degrades to local state: unreachable, a timeout, and also an
# error reply (READONLY from a replica during a failover, OOM): a state change
# must never replace the caller's own error with Redis's.
_ERRORS = (redis.RedisError, OSError)


def _encode(record: BreakerRecord) -> str:
    return json.dumps(
        {
            "state": record.state.value,
            "version": record.version,
            "opened_at": record.opened_at,
            "retry_at": record.retry_at,
            "open_count": record.open_count,
            "forced": record.forced,
            "reason": record.reason,
            "origin": record.origin,
        },
        separators=(",", ":"),
    )


def _decode(raw: bytes | str | None) -> BreakerRecord | None:
    if raw is None:
        return None
    data: dict[str, Any] = json.loads(raw)
    return BreakerRecord(
        state=BreakerState(data["state"]),
        version=int(data["version"]),
        opened_at=data.get("opened_at"),
        retry_at=data.get("retry_at"),
        open_count=int(data.get("open_count", 0)),
        forced=bool(data.get("forced", False)),
        reason=str(data.get("reason", "")),
        origin=str(data.get("origin", "")),
    )


class RedisBreakerStore:
    """A :class:`suture.BreakerStore` in Redis, with local fallback and healing.

    :param client: a ``redis.Redis`` client (sync). Give it short socket timeouts.
    :param prefix: key prefix; a breaker's record lives at ``prefix + name``.
    :param poll_interval: seconds between two reads of the subscribed records (> 0).
    :param background: start the polling thread on the first ``subscribe``
        (``False``: call :meth:`poll` yourself, as tests do).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "suture:breaker:",
        poll_interval: float = 0.5,
        background: bool = True,
    ) -> None:
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)):
            raise TypeError(f"poll_interval={poll_interval!r}: expected seconds as a number")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval={poll_interval!r}: must be greater than 0 seconds")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix={prefix!r}: must be a non-empty string")
        self._client = client
        self._prefix = prefix
        self._poll_interval = float(poll_interval)
        self._background = background
        self._local = MemoryBreakerStore()  # the degraded mode, and the local listeners
        self._lock = threading.Lock()
        self._names: dict[str, int] = {}  # subscribed name -> subscriber count
        self._seen: dict[str, int] = {}  # name -> the newest version handed to listeners
        self._dirty: set[str] = set()  # written locally while Redis was down
        self._degraded = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._script: Any = client.register_script(_SWAP)

    @property
    def degraded(self) -> bool:
        """True while Redis is unreachable and the state is local."""
        return self._degraded

    def _key(self, name: str) -> str:
        return self._prefix + name

    def _down(self, what: str, exc: BaseException) -> None:
        if not self._degraded:
            logger.warning("redis breaker store unreachable (%s: %s); using local state", what, exc)
        self._degraded = True

    def _up(self) -> None:
        if self._degraded:
            logger.warning("redis breaker store reachable again; state shared again")
        self._degraded = False

    # --- the BreakerStore protocol ----------------------------------------------------

    def load(self, name: str) -> BreakerRecord | None:
        try:
            raw = self._client.get(self._key(name))
        except _ERRORS as exc:
            self._down("load", exc)
            return self._local.load(name)
        self._up()
        record = _decode(raw)
        if record is not None:
            self._store_locally(name, record)
        return self._local.load(name)

    def swap(self, name: str, expected_version: int, record: BreakerRecord) -> BreakerRecord:
        try:
            raw = self._script(keys=[self._key(name)], args=[expected_version, _encode(record)])
        except _ERRORS as exc:
            self._down("swap", exc)
            with self._lock:
                self._dirty.add(name)
            return self._local.swap(name, expected_version, record)
        self._up()
        stored = _decode(raw)
        if stored is None:  # cannot happen: the script stores or returns what is stored
            return self._store_locally(name, record)
        return self._store_locally(name, stored)

    def _store_locally(self, name: str, record: BreakerRecord) -> BreakerRecord:
        """Keep the newest record in memory and notify this process's listeners."""
        current = self._local.load(name)
        expected = current.version if current is not None else 0
        if current is not None and current.version >= record.version:
            return current if current.version > record.version else record
        with self._lock:
            self._seen[name] = max(self._seen.get(name, 0), record.version)
        return self._local.swap(name, expected, record)

    def subscribe(self, name: str, listener: RecordListener) -> Callable[[], None]:
        unsubscribe_local = self._local.subscribe(name, listener)
        with self._lock:
            self._names[name] = self._names.get(name, 0) + 1
            start = self._background and self._thread is None
            if start:
                self._thread = threading.Thread(
                    target=self._run, name="suture-redis-breaker-store", daemon=True
                )
        if start:
            assert self._thread is not None
            self._thread.start()

        def unsubscribe() -> None:
            unsubscribe_local()
            with self._lock:
                left = self._names.get(name, 0) - 1
                if left > 0:
                    self._names[name] = left
                else:
                    self._names.pop(name, None)

        return unsubscribe

    def delete(self, name: str) -> None:
        self._local.delete(name)
        with self._lock:
            self._seen.pop(name, None)
            self._dirty.discard(name)
        try:
            self._client.delete(self._key(name))
        except _ERRORS as exc:
            self._down("delete", exc)

    # --- polling and healing --------------------------------------------------------------

    def poll(self) -> None:
        """Read every subscribed record once; hand newer ones to the breakers; heal."""
        with self._lock:
            names = list(self._names)
            dirty = set(self._dirty)
        if not names and not dirty:
            return
        try:
            raws = self._client.mget([self._key(n) for n in names]) if names else []
            for name in dirty:
                local = self._local.load(name)
                if local is None:
                    continue
                remote = _decode(self._client.get(self._key(name)))
                if remote is None or local.version > remote.version:
                    self._script(
                        keys=[self._key(name)],
                        args=[remote.version if remote else 0, _encode(local)],
                    )
        except _ERRORS as exc:
            self._down("poll", exc)
            return
        self._up()
        with self._lock:
            self._dirty -= dirty
        for name, raw in zip(names, raws, strict=True):
            remote = _decode(raw)
            if remote is not None and remote.version > self._seen.get(name, 0):
                self._store_locally(name, remote)

    def _run(self) -> None:
        while not self._stop.wait(self._poll_interval):
            try:
                self.poll()
            except Exception:  # the poller must survive anything; it is logged
                logger.exception("redis breaker store poll failed")

    def close(self) -> None:
        """Stop the polling thread (the client stays open: it is yours)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._poll_interval + 1.0)

    def __repr__(self) -> str:
        mode = "degraded" if self._degraded else "shared"
        return f"RedisBreakerStore(prefix={self._prefix!r}, {mode})"
