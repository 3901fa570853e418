"""Last-known-good answers: serve the last success, marked stale, when the call fails.

The founding spec's breaker was to "return cached data" when open; HTTP has
the same idea as ``Cache-Control: max-age=..., stale-if-error=...``.
:class:`LastGood` wraps a function (``def`` or ``async def``), remembers its
last successful result per key, and when a later call fails in a way it
handles (by default: a transient error, an open breaker, overload in our own
process) returns that result instead, marked stale with its age:

* ``ttl`` (HTTP's ``max-age``): a result younger than this is served from
  memory without calling at all (default 0: always call);
* ``stale_for`` (``stale-if-error``): how long past ``ttl`` a result may still
  stand in for a failed call. Older results are forgotten and the error
  propagates: an answer from last week is not an answer.

How the caller knows: every call through the wrapper records a
:class:`Served` in a context variable, read with :func:`last_served` right
after the call (the same thread, or the same asyncio task); or call through
:meth:`LastGood.call` / :meth:`LastGood.acall`, which return the
:class:`Served` itself. The wrapped function's own return type is unchanged.

Memory is bounded: at most ``max_entries`` keys (least recently stored
dropped first) and nothing older than ``ttl + stale_for``. The success path
stores one dict entry and takes no lock (each dict operation is atomic in
CPython; two threads storing at once may leave the table one entry over its
bound until the next store).

**Several workers.** Give it a ``store`` (:class:`LastGoodStore`; Redis:
:class:`suture.contrib.redis_lastgood.RedisLastGoodStore`) and every success is
also saved there, in the background (the success path never waits on it),
as JSON stamped with the wall clock; when a call fails and the store holds a
newer good answer than this worker's memory (another worker's), that one is
served. Values that JSON cannot encode stay in memory only.

In a :class:`suture.Policy` it takes the fallback's place, outermost, so it
sees what is left when retry and breaker gave up, and an open breaker's
:class:`suture.BreakerOpen` is served from memory too.
"""

from __future__ import annotations

import functools
import inspect
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, runtime_checkable

from suture._config import (
    ExceptionSpec,
    Seconds,
    check_clock,
    check_int,
    check_name,
    check_seconds,
    exception_classifier,
)
from suture._decorator import Decorator
from suture.classify import is_transient
from suture.clock import SYSTEM_CLOCK, Clock
from suture.errors import BreakerOpen, Overloaded
from suture.events import StaleServed, emit, listening

__all__ = ["LastGood", "LastGoodStore", "Served", "default_on", "last_served"]

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Served(Generic[T]):
    """What a call through :class:`LastGood` returned, and how old it is.

    ``stale`` is true when the value stood in for a failed call (``error`` is
    that failure); ``age`` is seconds since the value was produced (0 for a
    fresh call, more when served from memory, fresh within ``ttl`` or stale).
    """

    value: T
    key: str
    stale: bool
    age: float
    error: BaseException | None = None

    def as_dict(self) -> dict[str, Any]:
        """The metadata, JSON-friendly (without the value)."""
        return {
            "key": self.key,
            "stale": self.stale,
            "age": round(self.age, 3),
            "error": None if self.error is None else type(self.error).__name__,
        }


@runtime_checkable
class LastGoodStore(Protocol):
    """Where several workers share their last good answers (see ``RedisLastGoodStore``).

    ``save`` must not wait on I/O (queue it); ``load`` is called only when a
    call failed and may do one round trip. Times are wall-clock seconds
    (``clock.wall()``), comparable between workers.
    """

    def save(self, key: str, value: Any, produced_at: float, keep_for: float) -> None: ...

    def load(self, key: str) -> tuple[Any, float] | None: ...


_SERVED: ContextVar[Served[Any] | None] = ContextVar("suture_last_served", default=None)


def last_served() -> Served[Any] | None:
    """The :class:`Served` of the latest call through a :class:`LastGood` in this
    context (thread or asyncio task), or ``None`` when there was none."""
    return _SERVED.get()


def default_on(exc: BaseException) -> bool:
    """The failures a last-known-good answer stands in for by default: transient errors
    (``suture.is_transient``), an open breaker, overload in our own process."""
    return isinstance(exc, (BreakerOpen, Overloaded)) or is_transient(exc)


_SCALARS = (str, int, float, bool, type(None))


def _default_key(*args: Any, **kwargs: Any) -> str:
    """The call's arguments as a key, when they are all plain scalars."""
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in sorted(kwargs.items())]
    for value in (*args, *kwargs.values()):
        if not isinstance(value, _SCALARS):
            raise TypeError(
                f"LastGood: cannot make a key from the argument {value!r} "
                f"({type(value).__name__}); pass key=lambda ...: 'a string'"
            )
    return ",".join(parts)


class LastGood(Decorator):
    """Remember the last good result per key; serve it, marked stale, when the call fails.

    >>> assistance = LastGood(ttl=0, stale_for=600, key=lambda status: f"list:{status}")
    >>> @assistance
    ... async def load_list(status: str) -> list[dict[str, object]]: ...

    :param ttl: seconds a result is served from memory without calling (0: always call).
    :param stale_for: seconds past ``ttl`` a result may stand in for a failed call.
    :param key: ``(*args, **kwargs) -> str`` naming what the call returns; by
        default the arguments themselves when they are strings, numbers or None.
    :param on: the failures it stands in for (classifier or exception types;
        default :func:`default_on`).
    :param max_entries: keys remembered at most (least recently stored dropped first).
    :param store: shares the answers with other workers (default: this process only).
    :param name: names it in reprs and errors.
    :param clock: measures ages.
    """

    _tag = "last_good"
    __slots__ = (
        "_clock",
        "_entries",
        "key",
        "max_entries",
        "name",
        "on",
        "stale_for",
        "store",
        "ttl",
    )

    def __init__(
        self,
        *,
        ttl: Seconds = 0.0,
        stale_for: Seconds = 300.0,
        key: Callable[..., str] | None = None,
        on: ExceptionSpec = default_on,
        max_entries: int = 1024,
        store: LastGoodStore | None = None,
        name: str = "last_good",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if store is not None and not isinstance(store, LastGoodStore):
            raise TypeError(f"store={store!r}: expected a LastGoodStore (save, load) or None")
        self.store = store
        self.ttl = check_seconds("ttl", ttl)
        self.stale_for = check_seconds("stale_for", stale_for, positive=True)
        if key is not None and not callable(key):
            raise TypeError(f"key={key!r}: expected a callable (*args, **kwargs) -> str")
        self.key: Callable[..., str] = _default_key if key is None else key
        self.on = exception_classifier(on)
        self.max_entries = check_int("max_entries", max_entries, minimum=1)
        check_name("name", name)
        self.name = name
        self._clock = check_clock(clock)
        self._entries: OrderedDict[str, tuple[Any, float]] = OrderedDict()

    def __repr__(self) -> str:
        return f"LastGood(ttl={self.ttl:g}, stale_for={self.stale_for:g}, name={self.name!r})"

    def __len__(self) -> int:
        return len(self._entries)

    # --- the memory ---------------------------------------------------------------------

    def _key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        key = self.key(*args, **kwargs)
        if not isinstance(key, str):
            raise TypeError(
                f"key={self.key!r} returned {key!r} ({type(key).__name__}): expected a string"
            )
        return key

    def remember(self, key: str, value: Any) -> None:
        """Store ``value`` as ``key``'s last good result, produced now."""
        if not isinstance(key, str):
            raise TypeError(f"key={key!r}: expected a string, got {type(key).__name__}")
        entries = self._entries
        entries[key] = (value, self._clock.now())
        entries.move_to_end(key)
        while len(entries) > self.max_entries:
            try:
                entries.popitem(last=False)
            except KeyError:  # emptied by another thread meanwhile
                break
        if self.store is not None:
            self.store.save(key, value, self._clock.wall(), self.ttl + self.stale_for)

    def lookup(self, key: str) -> tuple[Any, float] | None:
        """``(value, age)`` of ``key``'s last good result if still servable, else ``None``."""
        if not isinstance(key, str):
            raise TypeError(f"key={key!r}: expected a string, got {type(key).__name__}")
        entry = self._entries.get(key)
        if entry is None:
            return None
        age = self._clock.now() - entry[1]
        if age > self.ttl + self.stale_for:
            self._entries.pop(key, None)
            return None
        return entry[0], age

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    # --- one call, planned once --------------------------------------------------------------

    def _fresh(self, key: str) -> Served[Any] | None:
        """Served from memory without calling, when ``ttl`` allows."""
        if self.ttl <= 0:
            return None
        found = self.lookup(key)
        if found is None or found[1] > self.ttl:
            return None
        return Served(found[0], key, stale=False, age=found[1])

    def _stale(self, key: str, exc: Exception) -> Served[Any]:
        """The stand-in for a failed call, or the error itself when there is none."""
        if not self.on(exc):
            raise exc
        found = self.lookup(key)
        if self.store is not None:
            shared = self.store.load(key)
            if shared is not None:
                age = max(0.0, self._clock.wall() - shared[1])
                if age <= self.ttl + self.stale_for and (found is None or age < found[1]):
                    found = (shared[0], age)
        if found is None:
            raise exc
        if listening(StaleServed):
            emit(StaleServed(name=self.name, key=key, age=found[1], error=exc))
        return Served(found[0], key, stale=True, age=found[1], error=exc)

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Served[T]:
        """Run ``fn(*args, **kwargs)`` and return the :class:`Served` (value and staleness)."""
        key = self._key(args, kwargs)
        served = self._fresh(key)
        if served is None:
            try:
                value = fn(*args, **kwargs)
            except Exception as exc:
                served = self._stale(key, exc)
            else:
                self.remember(key, value)
                served = Served(value, key, stale=False, age=0.0)
        _SERVED.set(served)
        return served

    async def acall(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Served[T]:
        """Await ``fn(*args, **kwargs)`` and return the :class:`Served`."""
        key = self._key(args, kwargs)
        served = self._fresh(key)
        if served is None:
            try:
                value = await fn(*args, **kwargs)
            except Exception as exc:
                served = self._stale(key, exc)
            else:
                self.remember(key, value)
                served = Served(value, key, stale=False, age=0.0)
        _SERVED.set(served)
        return served

    # --- as a decorator, and as Policy's fallback ---------------------------------------------

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` wrapped (``def`` or ``async def``): what :class:`suture.Policy` calls."""
        if inspect.iscoroutinefunction(fn):
            return self._decorate_async(fn)
        return self._decorate_sync(fn)

    def _decorate_sync(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        call = self.call

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return call(fn, *args, **kwargs).value

        return wrapper

    def _decorate_async(
        self, fn: Callable[..., Coroutine[Any, Any, Any]]
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        acall = self.acall

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            return (await acall(fn, *args, **kwargs)).value

        return wrapper
