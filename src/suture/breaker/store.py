"""Where a breaker's state lives: the record, the store protocol, the memory store.

A breaker writes its store only when its state changes (a compare-and-set on
the record's version) and learns of other writers' changes through the store's
listener. The default store keeps records in this process; a shared one
(``suture.contrib.redis.RedisBreakerStore``) plugs in without changing the breaker.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from suture.events import logger

__all__ = [
    "BreakerRecord",
    "BreakerState",
    "BreakerStore",
    "MemoryBreakerStore",
    "RecordListener",
    "SharedPermits",
]


class BreakerState(enum.Enum):
    """The three states of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerRecord:
    """The shared part of a breaker's state, as a store keeps it.

    Times are wall-clock seconds (``clock.wall()``) so that processes can
    share them. ``version`` grows by one with every change; ``origin`` is the
    breaker instance that wrote it.
    """

    state: BreakerState
    version: int
    opened_at: float | None = None
    retry_at: float | None = None
    open_count: int = 0
    forced: bool = False
    reason: str = ""
    origin: str = ""


RecordListener = Callable[[BreakerRecord], None]


class BreakerStore(Protocol):
    """Where breakers keep their state. Written only on state changes.

    ``swap`` is a compare-and-set: it stores ``record`` only when the stored
    version is ``expected_version`` (0 when nothing is stored) and returns the
    record that is stored afterwards (``record`` when it won, the other
    writer's record when it lost). Listeners receive every record stored under
    the name; they must be quick and must not call back into the store (a
    breaker's listener only sets a flag).
    """

    def load(self, name: str) -> BreakerRecord | None: ...

    def swap(self, name: str, expected_version: int, record: BreakerRecord) -> BreakerRecord: ...

    def subscribe(self, name: str, listener: RecordListener) -> Callable[[], None]: ...

    def delete(self, name: str) -> None: ...


@runtime_checkable
class SharedPermits(Protocol):
    """Optional: a store that counts half-open permits for the whole cluster.

    ``try_permit`` must never wait: it answers a token (a permit held), ``""``
    (none free now: the call is refused with a short ``retry_after``) or
    ``None`` (no shared count now: the breaker counts its own permits).
    ``release_permit`` gives a token back, also without waiting.
    """

    def try_permit(self, name: str, limit: int, ttl: float) -> str | None: ...

    def release_permit(self, name: str, token: str) -> None: ...


class MemoryBreakerStore:
    """Breaker state in this process. Breakers that share one store share their state.

    >>> store = MemoryBreakerStore()
    >>> a = CircuitBreaker("db", store=store)
    >>> b = CircuitBreaker("db", store=store)
    >>> a.force_open(); b.state
    <BreakerState.OPEN: 'open'>
    """

    __slots__ = ("_listeners", "_lock", "_records")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, BreakerRecord] = {}
        self._listeners: dict[str, tuple[RecordListener, ...]] = {}

    def load(self, name: str) -> BreakerRecord | None:
        return self._records.get(name)

    def swap(self, name: str, expected_version: int, record: BreakerRecord) -> BreakerRecord:
        with self._lock:
            current = self._records.get(name)
            if (current.version if current is not None else 0) != expected_version:
                assert current is not None  # a version > 0 means a record exists
                return current
            self._records[name] = record
            targets = self._listeners.get(name, ())
        for listener in targets:
            try:
                listener(record)
            except Exception:
                logger.exception("suture: breaker store listener %r failed", listener)
        return record

    def subscribe(self, name: str, listener: RecordListener) -> Callable[[], None]:
        with self._lock:
            self._listeners[name] = (*self._listeners.get(name, ()), listener)

        def unsubscribe() -> None:
            with self._lock:
                remaining = tuple(x for x in self._listeners.get(name, ()) if x is not listener)
                if remaining:
                    self._listeners[name] = remaining
                else:
                    self._listeners.pop(name, None)

        return unsubscribe

    def delete(self, name: str) -> None:
        with self._lock:
            self._records.pop(name, None)

    def __repr__(self) -> str:
        return f"MemoryBreakerStore({len(self._records)} record(s))"
