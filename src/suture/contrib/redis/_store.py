"""The breaker store shared through Redis: :class:`RedisBreakerStore` and :class:`Quorum`.

Local first: ``swap`` applies a state change in memory at once and hands it
to the store's I/O thread (a coalescing outbox: only the latest record per
breaker is sent), so no call ever waits on Redis. The I/O thread publishes
each change (a compare-and-set script that also PUBLISHes it on the
namespace's channel and records this worker's view), reads the subscribed
records every ``poll_interval`` as the safety net for lost messages, resyncs
on every reconnect, heartbeats this worker and holds the cluster-wide
half-open permits. Over 400 lines: one I/O loop and the scripts it runs, kept
together so the order of its steps reads in one place.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

import redis

from suture.breaker import BreakerRecord, BreakerState, RecordListener
from suture.events import logger

__all__ = ["MAJORITY", "Quorum", "RedisBreakerStore"]

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN

#: Clock skew (seconds) between this host and Redis below which times are not shifted.
SKEW_TOLERANCE = 0.05

#: The record format this code writes; a newer one is not ours to read.
FORMAT = 1

# Compare-and-set on the record's version: store ARGV[2] only when the stored
# version is ARGV[1] (0 when absent); return whatever is stored afterwards.
# Either way the writer's own view (its decision, for the quorum) is recorded
# in KEYS[2] (field ARGV[4]) stamped by Redis TIME and published on ARGV[5]:
# the record when it won (ARGV[7]), the view alone when it lost (ARGV[8]).
# Every key gets an expiry (ARGV[3] s).
_SWAP = """
local ttl = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('HSET', KEYS[2], ARGV[4], ARGV[6] .. '|' .. string.format('%.6f', now))
redis.call('EXPIRE', KEYS[2], ttl)
local current = redis.call('GET', KEYS[1])
local version = 0
if current then
  local ok, data = pcall(cjson.decode, current)
  if ok and type(data) == 'table' then version = tonumber(data['version']) or 0 end
end
if version ~= tonumber(ARGV[1]) then
  redis.call('PUBLISH', ARGV[5], ARGV[8])
  return current
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ttl)
redis.call('PUBLISH', ARGV[5], ARGV[7])
return ARGV[2]
"""

# Half-open permits: take the first free slot among KEYS (SET NX PX with an owner
# token); return its index, or -1 when all are held.
_ACQUIRE = """
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then return i - 1 end
end
return -1
"""

# Release a permit only if we still own it (compare-and-delete).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Any Redis failure degrades to local state: unreachable, a timeout, and also an
# error reply (READONLY from a replica during a failover, OOM, a wrong password).
_ERRORS = (redis.RedisError, OSError)


@dataclasses.dataclass(frozen=True, slots=True)
class Quorum:
    """How many live workers must report OPEN before the others follow.

    ``Quorum(2)``: at least two; ``Quorum(fraction=0.5)``: at least half of
    the live workers (at least one); :data:`MAJORITY`: more than half.
    """

    k: int | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        if self.k is not None and self.fraction is not None:
            raise ValueError("Quorum: give k or fraction, not both")
        if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, int)):
            raise TypeError(f"Quorum(k={self.k!r}): expected an int")
        if self.k is not None and self.k < 1:
            raise ValueError(f"Quorum(k={self.k!r}): must be at least 1 worker")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError(f"Quorum(fraction={self.fraction!r}): must be in (0, 1]")

    def needed(self, live: int) -> int:
        """How many OPEN reports it takes among ``live`` workers."""
        if self.k is not None:
            return self.k
        if self.fraction is not None:
            return max(1, math.ceil(self.fraction * live - 1e-9))
        return live // 2 + 1

    def __repr__(self) -> str:
        if self.k is not None:
            return f"Quorum({self.k})"
        if self.fraction is not None:
            return f"Quorum(fraction={self.fraction})"
        return "Quorum(majority)"


#: The default follow policy: a majority of the live workers.
MAJORITY = Quorum()

Follow = Literal["any"] | Quorum


def _encode(record: BreakerRecord, offset: float) -> str:
    """JSON for Redis; wall times shifted onto Redis's clock by ``offset``."""

    def shift(value: float | None) -> float | None:
        return None if value is None else value + offset

    return json.dumps(
        {
            "format": FORMAT,
            "state": record.state.value,
            "version": record.version,
            "opened_at": shift(record.opened_at),
            "retry_at": shift(record.retry_at),
            "open_count": record.open_count,
            "forced": record.forced,
            "reason": record.reason,
            "origin": record.origin,
        },
        separators=(",", ":"),
    )


class BadRecord(ValueError):
    """A record in Redis that is not ours or is corrupted."""


def _decode(raw: bytes | str | None, offset: float) -> BreakerRecord | None:
    """The record, times back on this host's clock; :class:`BadRecord` when it is not ours."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or int(data.get("format", 1)) > FORMAT:
            raise BadRecord(f"not a record of format <= {FORMAT}: {str(raw)[:80]!r}")
        opened, retry = data.get("opened_at"), data.get("retry_at")
        version = data["version"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise BadRecord(f"bad version {version!r}")
        return BreakerRecord(
            state=BreakerState(data["state"]),
            version=version,
            opened_at=None if opened is None else float(opened) - offset,
            retry_at=None if retry is None else float(retry) - offset,
            open_count=int(data.get("open_count", 0)),
            forced=bool(data.get("forced", False)),
            reason=str(data.get("reason", "")),
            origin=str(data.get("origin", "")),
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise BadRecord(str(exc)) from exc


def _client_from(client: redis.Redis | str, timeout: float) -> tuple[redis.Redis, bool]:
    if isinstance(client, str):
        try:
            made = redis.Redis.from_url(
                client, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        except ValueError as exc:
            raise ValueError(f"client={client!r}: not a Redis URL ({exc})") from exc
        return made, True
    if isinstance(client, redis.Redis):
        return client, False
    raise TypeError(f"client={client!r}: expected a redis.Redis client or a URL string")


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}={value!r}: expected seconds as a number")
    if not value > 0:
        raise ValueError(f"{name}={value!r}: must be greater than 0 seconds")
    return float(value)


class RedisBreakerStore:
    """A :class:`suture.BreakerStore` in Redis that never makes a call wait on Redis.

    :param client: a ``redis.Redis`` client (give it short socket timeouts) or a
        Redis URL (``rediss://`` for TLS, ``redis://:password@host``); with a URL
        the store makes its own client (0.5 s timeouts) and closes it in :meth:`close`.
    :param prefix: the namespace: every key starts with it, and workers share
        state only within one prefix.
    :param poll_interval: seconds between two safety-net reads (> 0).
    :param follow: ``"any"``: follow any worker's OPEN; a :class:`Quorum`: follow
        only when that many live workers report OPEN (default :data:`MAJORITY`).
        A worker's own failures always open its breaker; forced states and
        CLOSED records are always followed.
    :param workers: how many workers you run, when known: checks the quorum.
    :param heartbeat_interval: seconds between two heartbeats of this worker.
    :param quorum_window: seconds an OPEN report counts for the quorum.
    :param ttl: seconds every key lives after its last write or heartbeat.
    :param background: run the I/O thread (default). ``False``: every Redis
        command runs inline on the caller and :meth:`poll` is yours to call
        (tests, scripts); never for a service.
    :param worker_id: this worker's name in the heartbeats (default: unique).
    """

    def __init__(  # noqa: PLR0913 - keyword-only options of a shared store
        self,
        client: redis.Redis | str,
        *,
        prefix: str = "suture:",
        poll_interval: float = 0.5,
        follow: Follow = MAJORITY,
        workers: int | None = None,
        heartbeat_interval: float = 1.0,
        quorum_window: float = 60.0,
        ttl: float = 86_400.0,
        background: bool = True,
        worker_id: str | None = None,
    ) -> None:
        self._poll_interval = _seconds("poll_interval", poll_interval)
        self._heartbeat = _seconds("heartbeat_interval", heartbeat_interval)
        self._window = _seconds("quorum_window", quorum_window)
        self._ttl = math.ceil(_seconds("ttl", ttl))
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix={prefix!r}: must be a non-empty string")
        if follow != "any" and not isinstance(follow, Quorum):
            raise ValueError(f"follow={follow!r}: expected 'any' or a suture Quorum")
        if workers is not None and (isinstance(workers, bool) or workers < 1):
            raise ValueError(f"workers={workers!r}: must be at least 1")
        if isinstance(follow, Quorum) and workers is not None and follow.needed(workers) > workers:
            raise ValueError(
                f"follow={follow!r}: needs {follow.needed(workers)} of {workers} workers"
            )
        self._client, self._own_client = _client_from(client, 0.5)
        self._prefix = prefix
        self._follow = follow
        self._background = background
        self.worker_id = worker_id or uuid.uuid4().hex[:12]
        self._channel = f"{prefix}events"
        self._workers_key = f"{prefix}workers"
        self._swap: Any = self._client.register_script(_SWAP)
        self._acquire: Any = self._client.register_script(_ACQUIRE)
        self._release: Any = self._client.register_script(_RELEASE)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._records: dict[str, BreakerRecord] = {}  # this worker's view, per name
        self._listeners: dict[str, tuple[RecordListener, ...]] = {}
        self._origins: set[str] = set()  # the breakers that wrote through this store
        self._outbox: dict[str, BreakerRecord] = {}  # unpublished, latest per name
        self._remote: dict[str, int] = {}  # the version Redis holds, as last seen
        self._held: dict[str, BreakerRecord] = {}  # others' records awaiting the quorum
        self._permits: dict[str, list[str]] = {}  # name -> acquired, unused tokens
        self._want: dict[str, tuple[int, int]] = {}  # name -> (limit, ttl ms) to acquire
        self._release_queue: list[tuple[str, str]] = []
        self._views: dict[str, dict[str, Any]] = {}  # name -> {worker: view}
        self._live: list[str] = []
        self._offset = 0.0  # Redis TIME - this host's wall clock
        self._degraded = False
        # The I/O thread and the pub/sub thread both report Redis's health: one lock
        # makes each change of it (and its one warning) happen once.
        self._health = threading.Lock()
        self._resync = True
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.published = 0  # records written to Redis
        self.delivered = 0  # others' records handed to this worker's breakers

    # --- state ----------------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        """True while Redis does not answer and the state is this worker's own."""
        return self._degraded

    def _key(self, name: str, part: str) -> str:
        return f"{self._prefix}{{{name}}}:{part}"

    def _down(self, what: str, exc: BaseException) -> None:
        with self._health:
            if not self._degraded:
                logger.warning(
                    "redis breaker store unreachable (%s: %s: %s); using local state",
                    what,
                    type(exc).__name__,
                    exc,
                )
            self._degraded = True
            self._resync = True

    def _up(self) -> None:
        if not self._degraded:  # the common case: no lock on a healthy call
            return
        with self._health:
            if self._degraded:
                logger.warning("redis breaker store answers again; state shared again")
            self._degraded = False

    # --- the BreakerStore protocol (never a Redis command when background) --------------

    def load(self, name: str) -> BreakerRecord | None:
        if not self._background:
            self._read([name])
        with self._lock:
            return self._records.get(name)

    def swap(self, name: str, expected_version: int, record: BreakerRecord) -> BreakerRecord:
        with self._lock:
            current = self._records.get(name)
            version = current.version if current is not None else 0
            if version != expected_version:
                assert current is not None  # a version > 0 means a record exists
                if current.origin != record.origin:
                    return current
                # The breaker's own last record, renumbered by a conflict in Redis:
                # its decision stands, numbered after it.
                record = dataclasses.replace(record, version=version + 1)
            self._records[name] = record
            self._origins.add(record.origin)
            self._outbox[name] = record
            self._held.pop(name, None)
            if record.state is not HALF_OPEN:
                self._want.pop(name, None)
                for token in self._permits.pop(name, []):
                    self._release_queue.append((name, token))
            self._wake.notify()
            targets = self._listeners.get(name, ())
        self._notify(targets, record)
        if not self._background:
            self._flush()
            with self._lock:
                return self._records.get(name, record)
        return record

    def subscribe(self, name: str, listener: RecordListener) -> Callable[[], None]:
        with self._lock:
            self._listeners[name] = (*self._listeners.get(name, ()), listener)
            start = self._background and not self._threads and not self._stop.is_set()
            self._resync = True
            self._wake.notify()
        if start:
            self._start()

        def unsubscribe() -> None:
            with self._lock:
                left = tuple(x for x in self._listeners.get(name, ()) if x is not listener)
                if left:
                    self._listeners[name] = left
                else:
                    self._listeners.pop(name, None)

        return unsubscribe

    def delete(self, name: str) -> None:
        with self._lock:
            self._records.pop(name, None)
            self._outbox.pop(name, None)
            self._remote.pop(name, None)
        keys = [self._key(name, "record"), self._key(name, "views")]
        self._io("delete", lambda: self._client.delete(*keys))

    # --- cluster-wide half-open permits --------------------------------------------------

    def try_permit(self, name: str, limit: int, ttl: float) -> str | None:
        """A half-open permit: a token, ``""`` when none is free yet, ``None`` to use local.

        Never waits: permits are acquired by the I/O thread on demand; the first
        callers of a half-open period are refused while it asks. While Redis
        does not answer, ``None``: the breaker counts its own permits.
        """
        if self._degraded:
            return None
        if not self._background:
            self._want[name] = (limit, max(1, int(ttl * 1000)))
            self._acquire_wanted()
        if self.degraded:  # the property: the line above may have changed it
            return None
        with self._lock:
            tokens = self._permits.get(name)
            if tokens:
                return tokens.pop()
            self._want[name] = (limit, max(1, int(ttl * 1000)))
            self._wake.notify()
        # Refused for now, without waiting; a Redis that does not answer becomes
        # "degraded" at the client's socket timeout, and local permits from then.
        return ""

    def release_permit(self, name: str, token: str) -> None:
        """Give a permit back (compare-and-delete on the I/O thread)."""
        if not token:
            return
        with self._lock:
            self._release_queue.append((name, token))
            self._wake.notify()
        if not self._background:
            self._release_all()

    # --- what /health shows ---------------------------------------------------------------

    def cluster(self, name: str) -> dict[str, Any]:
        """The live workers and each one's view of ``name``, as of the last poll."""
        with self._lock:
            return {
                "worker": self.worker_id,
                "live": list(self._live),
                "views": dict(self._views.get(name, {})),
                "follow": "any" if self._follow == "any" else repr(self._follow),
                "degraded": self._degraded,
            }

    # --- delivery -----------------------------------------------------------------------

    @staticmethod
    def _notify(targets: tuple[RecordListener, ...], record: BreakerRecord) -> None:
        for listener in targets:
            try:
                listener(record)
            except Exception:  # a listener must not stop the others; it is logged
                logger.exception("suture: breaker store listener %r failed", listener)

    def _offer(self, name: str, remote: BreakerRecord) -> None:
        """A record read from Redis or pushed: adopt it, hold it for the quorum, or skip it."""
        with self._lock:
            self._remote[name] = max(self._remote.get(name, 0), remote.version)
            current = self._records.get(name)
            if name in self._outbox or remote.origin in self._origins:
                return  # ours, or our own newer change is on its way
            if current is not None and remote.version <= current.version:
                if remote.version < current.version or remote.origin == current.origin:
                    return
                if (remote.state, remote.forced) == (current.state, current.forced):
                    return  # a tie: the same state, written by another worker
            follows = (
                self._follow == "any"
                or remote.forced
                or remote.state is CLOSED
                or self._quorum_met(name)
            )
            if not follows:
                self._held[name] = remote
                return
            self._held.pop(name, None)
            self._records[name] = remote
            self.delivered += 1
            targets = self._listeners.get(name, ())
        self._notify(targets, remote)

    def _quorum_met(self, name: str) -> bool:
        """At least the quorum of live workers reported OPEN within the window. Locked."""
        assert isinstance(self._follow, Quorum)
        live = set(self._live)
        now = time.time() + self._offset
        reports = sum(
            1
            for worker, view in self._views.get(name, {}).items()
            if worker in live and view["state"] == OPEN.value and now - view["at"] <= self._window
        )
        return bool(live) and reports >= self._follow.needed(len(live))

    # --- Redis I/O (the I/O thread, or inline when not background) ------------------------

    def _io(self, what: str, command: Callable[[], Any]) -> Any:
        try:
            result = command()
        except _ERRORS as exc:
            self._down(what, exc)
            return None
        except Exception as exc:  # a bad reply must not end the I/O thread
            self._down(what, exc)
            return None
        self._up()
        return result

    def _flush(self) -> None:
        """Publish the outbox: one compare-and-set per breaker; resolve conflicts."""
        with self._lock:
            batch, self._outbox = self._outbox, {}
        for name, record in batch.items():
            if not self._publish(name, record):
                with self._lock:  # keep it for the next try, unless a newer one came
                    self._outbox.setdefault(name, record)

    def _publish(self, name: str, record: BreakerRecord) -> bool:
        for _ in range(4):
            expected = self._remote.get(name, 0)
            raw = self._io("publish", functools.partial(self._cas, name, expected, record))
            if self._degraded:
                return False
            try:
                stored = _decode(raw, self._offset)
            except BadRecord as exc:
                logger.warning("redis breaker store: %r in Redis is not ours (%s)", name, exc)
                self._io("repair", lambda: self._client.delete(self._key(name, "record")))
                self._remote[name] = 0
                continue
            if stored is None:
                self._remote[name] = 0
                continue
            self._remote[name] = stored.version
            if stored.origin == record.origin and stored.version == record.version:
                self.published += 1
                return True
            if (stored.state, stored.forced) == (record.state, record.forced):
                self._adopt_tie(name, stored)  # the same state by someone else: adopt theirs
                return True
            # Our own decision is the latest: renumber it after Redis's and retry.
            with self._lock:
                current = self._records.get(name)
                if current is not record:
                    return True  # a newer local change is queued; it goes next
                record = dataclasses.replace(record, version=stored.version + 1)
                self._records[name] = record
        return False

    def _adopt_tie(self, name: str, stored: BreakerRecord) -> None:
        with self._lock:
            current = self._records.get(name)
            if current is None or current.version > stored.version:
                return
            self._records[name] = stored
            targets = self._listeners.get(name, ())
        self._notify(targets, stored)

    def _cas(self, name: str, expected: int, record: BreakerRecord) -> Any:
        body = _encode(record, self._offset)
        message = json.dumps({"name": name, "record": body, "worker": self.worker_id})
        view = json.dumps({"name": name, "view": record.state.value, "worker": self.worker_id})
        return self._swap(
            keys=[self._key(name, "record"), self._key(name, "views")],
            args=[
                expected,
                body,
                self._ttl,
                self.worker_id,
                self._channel,
                record.state.value,
                message,
                view,
            ],
        )

    def _read(self, names: list[str]) -> None:
        """The safety net: the records, views, live workers and Redis TIME in one round trip."""
        if not names and not self._background:
            return
        client = self._client

        def run() -> list[Any]:
            # One round trip (a pipeline without a transaction: a Redis Cluster
            # client splits it by slot); on the I/O thread, off every request.
            pipe = client.pipeline(transaction=False)
            pipe.time()
            for name in names:
                pipe.get(self._key(name, "record"))
                pipe.hgetall(self._key(name, "views"))
            pipe.zrangebyscore(self._workers_key, "-inf", "+inf", withscores=True)
            replies: list[Any] = pipe.execute()
            return replies

        local = time.time()
        replies = self._io("poll", run)
        if replies is None:
            return
        seconds, micros = replies[0]
        redis_now = float(seconds) + float(micros) / 1e6
        skew = redis_now - (local + time.time()) / 2
        # Below SKEW_TOLERANCE the hosts agree (NTP): no shift, so that the
        # measurement's own jitter never moves a deadline.
        self._offset = skew if abs(skew) > SKEW_TOLERANCE else 0.0
        workers = replies[-1]
        live = [
            w.decode() if isinstance(w, bytes) else str(w)
            for w, at in workers
            if redis_now - float(at) <= 3 * self._heartbeat
        ]
        with self._lock:
            self._live = live
        for i, name in enumerate(names):
            raw, views = replies[1 + 2 * i], replies[2 + 2 * i]
            parsed: dict[str, Any] = {}
            for worker, value in views.items():
                state, _, at = (value.decode() if isinstance(value, bytes) else value).partition(
                    "|"
                )
                key = worker.decode() if isinstance(worker, bytes) else str(worker)
                try:
                    parsed[key] = {"state": state, "at": float(at)}
                except ValueError:
                    continue
            with self._lock:
                self._views[name] = parsed
            try:
                remote = _decode(raw, self._offset)
            except BadRecord as exc:
                logger.warning("redis breaker store: %r in Redis is not ours (%s)", name, exc)
                continue
            if remote is not None:
                self._offer(name, remote)
        with self._lock:
            held = dict(self._held)
        for name, record in held.items():
            self._offer(name, record)

    def _beat(self, names: list[str]) -> None:
        """This worker is alive; its keys stay (expiry refreshed); the dead are pruned."""

        def run() -> None:
            client = self._client
            now = time.time() + self._offset
            client.zadd(self._workers_key, {self.worker_id: now})
            client.zremrangebyscore(self._workers_key, "-inf", now - self._ttl)
            client.expire(self._workers_key, self._ttl)
            for name in names:
                client.expire(self._key(name, "record"), self._ttl)
                client.expire(self._key(name, "views"), self._ttl)

        self._io("heartbeat", run)

    def _acquire_wanted(self) -> None:
        with self._lock:
            wanted, self._want = self._want, {}
        for name, (limit, ttl_ms) in wanted.items():
            token = f"{self.worker_id}:{uuid.uuid4().hex[:12]}"
            keys = [self._key(name, f"permit:{i}") for i in range(limit)]
            slot = self._io(
                "permit", functools.partial(self._acquire, keys=keys, args=[token, ttl_ms])
            )
            if slot is None or int(slot) < 0:
                continue
            with self._lock:
                record = self._records.get(name)
                if record is None or record.state is HALF_OPEN:
                    self._permits.setdefault(name, []).append(f"{keys[int(slot)]}|{token}")
                    continue
            self._release_one(f"{keys[int(slot)]}|{token}")

    def _release_one(self, permit: str) -> None:
        key, _, token = permit.rpartition("|")
        self._io("release", lambda: self._release(keys=[key], args=[token]))

    def _release_all(self) -> None:
        with self._lock:
            batch, self._release_queue = self._release_queue, []
        for _name, permit in batch:
            self._release_one(permit)

    def poll(self) -> None:
        """One round of the I/O loop: publish, release, acquire, beat, read (inline use)."""
        with self._lock:
            names = list(self._listeners)
        self._flush()
        if self._degraded and self._outbox:
            return  # Redis refused the publish: the rest would fail too
        self._release_all()
        self._acquire_wanted()
        self._beat(names)
        self._read(names)

    # --- the threads ------------------------------------------------------------------------

    def _start(self) -> None:
        for target, label in ((self._run, "io"), (self._listen, "pubsub")):
            thread = threading.Thread(
                target=target, name=f"suture-redis-store-{label}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _run(self) -> None:
        next_read = 0.0
        next_beat = 0.0
        while not self._stop.is_set():
            try:
                now = time.monotonic()
                if self._resync or now >= next_beat:
                    with self._lock:
                        names = list(self._listeners)
                    self._beat(names)
                    next_beat = now + self._heartbeat
                self._flush()
                self._release_all()
                self._acquire_wanted()
                if self._degraded and self._outbox:
                    self._stop.wait(0.2)  # Redis refused the publish: retry shortly
                    continue
                if self._resync or now >= next_read:
                    with self._lock:
                        names = list(self._listeners)
                    was = self._resync
                    self._resync = False
                    self._read(names)
                    if was and not self._degraded:
                        logger.debug("redis breaker store resynced %d breaker(s)", len(names))
                    next_read = now + self._poll_interval
                with self._lock:
                    if self._degraded:
                        # Unreachable this round: the next in a moment. A refused connection
                        # fails at once and sets _resync, so without this pause the round
                        # would run again at once: thousands of connections a second.
                        self._wake.wait(0.2)
                    elif not (self._outbox or self._release_queue or self._want or self._resync):
                        wait = min(next_read, next_beat) - time.monotonic()
                        self._wake.wait(max(0.0, min(wait, 1.0)))
            except Exception:  # the I/O thread must survive anything; it is logged
                logger.exception("redis breaker store: I/O round failed")
                self._stop.wait(0.1)

    def _listen(self) -> None:
        """Apply pushed records as they arrive; resubscribe (and resync) after a drop."""
        pubsub: Any = None
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                    pubsub.subscribe(self._channel)
                    with self._lock:
                        self._resync = True  # messages sent while we were away are lost
                        self._wake.notify()
                message = pubsub.get_message(timeout=0.5)
                if message is not None and message.get("type") == "message":
                    self._on_message(message["data"])
            except Exception as exc:  # a drop: resubscribe after a pause; never end
                self._down("pubsub", exc)
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # closing a broken connection may fail too
                        logger.debug("redis breaker store: pubsub close failed", exc_info=True)
                pubsub = None
                self._stop.wait(0.2)
        if pubsub is not None:
            pubsub.close()

    def _on_message(self, data: bytes | str) -> None:
        """A record (a won write) or a view alone (a lost one) from another worker."""
        try:
            message = json.loads(data)
            name = str(message["name"])
            worker = str(message["worker"])
            if worker == self.worker_id:
                return
            record = _decode(message["record"], self._offset) if "record" in message else None
            state = record.state.value if record is not None else str(message["view"])
        except (ValueError, TypeError, KeyError) as exc:
            logger.warning("redis breaker store: a message that is not ours (%s)", exc)
            return
        with self._lock:
            if name not in self._listeners:
                return
            views = self._views.setdefault(name, {})
            views[worker] = {"state": state, "at": time.time() + self._offset}
            if record is None:
                record = self._held.get(name)  # a new view may complete the quorum
        if record is not None:
            self._offer(name, record)

    def close(self) -> None:
        """Stop the threads (after one last publish) and close the client if it is ours."""
        self._stop.set()
        with self._lock:
            self._wake.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)
        if self._background:
            self._flush()
            self._release_all()
        if self._own_client:
            self._client.close()

    def __repr__(self) -> str:
        mode = "degraded" if self._degraded else "shared"
        return f"RedisBreakerStore(prefix={self._prefix!r}, follow={self._follow!r}, {mode})"
