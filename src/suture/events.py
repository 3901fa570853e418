"""Typed events: one frozen dataclass per happening, delivered to listeners.

Every retry, breaker state change, rejected call, shed request, pressure
change and transition is an event. Listeners are plain callables
``(event) -> None`` subscribed with :func:`subscribe`. The default listener,
:func:`log_event`, writes each event to the standard ``logging`` logger
``"suture"``; Prometheus metrics and the demo dashboard are listeners too.

Events are only emitted off the healthy path (a failure, a state change), so
the cost of a listener is never paid by a call that simply succeeds. Code that
would emit at the rate of the calls (a breaker's rejections) first asks
:func:`listening` whether anyone would see the event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "BreakerRejected",
    "BreakerStateChanged",
    "Event",
    "FaultInjected",
    "LimitChanged",
    "LimitPaused",
    "Listener",
    "PressureChanged",
    "RequestShed",
    "ResponseRejected",
    "RetryBudgetExhausted",
    "RetryGaveUp",
    "RetryScheduled",
    "StaleServed",
    "TransitionApplied",
    "TransitionRejected",
    "emit",
    "listeners",
    "listening",
    "log_event",
    "logger",
    "subscribe",
    "unsubscribe",
]

logger = logging.getLogger("suture")
# The logging HOWTO's advice for libraries: the application decides where
# suture's records go (without a handler, WARNING and above reach stderr).


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every suture event."""

    #: The logging level the default listener uses for this kind of event.
    log_level: ClassVar[int] = logging.INFO

    def message(self) -> str:
        """One line for a log."""
        return repr(self)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict, with the event's type under ``"event"``."""
        out: dict[str, Any] = {"event": type(self).__name__}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, BaseException):
                value = f"{type(value).__name__}: {value}"
            elif hasattr(value, "name") and hasattr(value, "value"):  # enums
                value = value.name
            elif not isinstance(value, (str, int, float, bool, type(None), list, dict)):
                value = str(value)
            out[name] = value
        return out


# --- retry -------------------------------------------------------------------------


def _describe(error: BaseException) -> str:
    """``"ConnectionError: refused"``, or just ``"TimeoutError"`` when there is no message."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryScheduled(Event):
    """An attempt failed with a transient error and another one is scheduled after ``delay``."""

    log_level: ClassVar[int] = logging.WARNING
    name: str
    attempt: int  #: the attempt that just failed (1-based)
    attempts: int  #: the most attempts the policy allows
    delay: float  #: seconds until the next attempt
    error: BaseException
    elapsed: float  #: seconds since the first attempt started

    def message(self) -> str:
        return (
            f"retry {self.name}: attempt {self.attempt}/{self.attempts} failed with "
            f"{_describe(self.error)}; next attempt in {self.delay:.3f}s "
            f"(elapsed {self.elapsed:.3f}s)"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryGaveUp(Event):
    """A retry policy stopped and the error propagates.

    ``reason`` is ``"attempts"`` (all attempts used), ``"deadline"`` (the next
    wait would end past the deadline), ``"budget"`` (the retry budget is empty),
    ``"retry_after"`` (the server's Retry-After is longer than ``max_delay``).
    A non-transient error is not an event: it is simply raised.
    """

    log_level: ClassVar[int] = logging.ERROR
    name: str
    attempts: int  #: attempts made
    elapsed: float
    reason: str
    error: BaseException

    def message(self) -> str:
        return (
            f"retry {self.name}: giving up after {self.attempts} attempt(s) over "
            f"{self.elapsed:.3f}s ({self.reason}): {_describe(self.error)}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryBudgetExhausted(Event):
    """A retry was refused because the retry budget is empty."""

    log_level: ClassVar[int] = logging.WARNING
    name: str
    budget: str
    error: BaseException

    def message(self) -> str:
        return f"retry {self.name}: budget {self.budget!r} is empty; not retrying {self.error!r}"


# --- circuit breaker ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerStateChanged(Event):
    """A breaker moved from ``source`` to ``target`` (``BreakerState`` values)."""

    log_level: ClassVar[int] = logging.WARNING
    name: str
    source: Any
    target: Any
    reason: str

    def message(self) -> str:
        src = getattr(self.source, "name", self.source)
        tgt = getattr(self.target, "name", self.target)
        return f"breaker {self.name}: {src} -> {tgt} ({self.reason})"


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerRejected(Event):
    """An open (or saturated half-open) breaker refused a call."""

    log_level: ClassVar[int] = logging.DEBUG
    name: str
    retry_after: float

    def message(self) -> str:
        return f"breaker {self.name}: call rejected; retry after {self.retry_after:.1f}s"


# --- pool monitor and limiter ------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PressureChanged(Event):
    """The pool monitor's pressure level changed (``PressureLevel`` values)."""

    log_level: ClassVar[int] = logging.WARNING
    name: str
    source: Any
    target: Any
    fraction: float
    current: int
    limit: int

    def message(self) -> str:
        src = getattr(self.source, "name", self.source)
        tgt = getattr(self.target, "name", self.target)
        return (
            f"pool {self.name}: pressure {src} -> {tgt} "
            f"({self.current}/{self.limit}, {self.fraction:.0%})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestShed(Event):
    """Admission control refused a request (``source`` is ``"pool"`` or ``"limiter"``)."""

    log_level: ClassVar[int] = logging.DEBUG
    name: str
    source: str
    priority: Any
    level: Any
    retry_after: float

    def message(self) -> str:
        pr = getattr(self.priority, "name", self.priority)
        lv = getattr(self.level, "name", self.level)
        return f"{self.source} {self.name}: shed a {pr} request at {lv}"


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitChanged(Event):
    """An adaptive concurrency limit moved."""

    log_level: ClassVar[int] = logging.DEBUG
    name: str
    old: float
    new: float
    reason: str

    def message(self) -> str:
        return f"limiter {self.name}: limit {self.old:.1f} -> {self.new:.1f} ({self.reason})"


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitPaused(Event):
    """A rate limiter was told to slow down (an upstream's 429/503 with Retry-After):
    it admits nobody for ``seconds``."""

    name: str
    seconds: float

    def message(self) -> str:
        return f"rate limiter {self.name}: paused for {self.seconds:.1f}s"


@dataclass(frozen=True, slots=True, kw_only=True)
class StaleServed(Event):
    """A last-known-good answer stood in for a failed call (``age`` seconds old)."""

    log_level: ClassVar[int] = logging.DEBUG
    name: str
    key: str
    age: float
    error: BaseException

    def message(self) -> str:
        return (
            f"last good {self.name}: served {self.key!r} from {self.age:.1f}s ago "
            f"instead of {_describe(self.error)}"
        )


# --- transitions -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TransitionApplied(Event):
    """A guarded transition changed ``count`` records to ``target``."""

    log_level: ClassVar[int] = logging.INFO
    entity: str
    target: Any
    count: int
    context: Any = None
    actor: str | None = None

    def message(self) -> str:
        tgt = getattr(self.target, "value", self.target)
        return f"transition {self.entity}: {self.count} record(s) -> {tgt}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TransitionRejected(Event):
    """A transition was refused (by the table, or because the row was missing)."""

    log_level: ClassVar[int] = logging.WARNING
    entity: str
    source: Any
    target: Any
    reason: str
    context: Any = None
    actor: str | None = None

    def message(self) -> str:
        src = getattr(self.source, "value", self.source)
        tgt = getattr(self.target, "value", self.target)
        return f"transition {self.entity}: {src} -> {tgt} rejected ({self.reason})"


# --- responses and chaos -----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseRejected(Event):
    """An HTTP response was validated as a failure."""

    log_level: ClassVar[int] = logging.INFO
    url: str
    status: int | None
    error: str
    transient: bool

    def message(self) -> str:
        return f"response {self.url}: HTTP {self.status}: {self.error}"


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultInjected(Event):
    """The chaos harness injected a fault."""

    log_level: ClassVar[int] = logging.DEBUG
    target: str
    kind: str
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def message(self) -> str:
        return f"chaos {self.target}: injected {self.kind} {self.detail}".rstrip()


# --- the bus -----------------------------------------------------------------------

Listener = Callable[[Event], None]
"""A listener receives every event; it must not raise (errors are logged and dropped)."""


def log_event(event: Event) -> None:
    """The default listener: one line on the logger ``"suture"``."""
    level = event.log_level
    if logger.isEnabledFor(level):
        logger.log(level, "%s", event.message(), extra={"suture_event": event})


_lock = threading.Lock()
# Copy-on-write tuple: emit() reads it without a lock.
_listeners: tuple[Listener, ...] = (log_event,)
# Whether the listeners are exactly the default logger: then an event is seen only
# when the logger is enabled for its level. Written with ``_listeners``, under ``_lock``.
_only_log = True
_log_enabled = logger.isEnabledFor


def listening(kind: type[Event] = Event) -> bool:
    """Would an event of this kind reach anyone? Cheap enough for a hot path.

    With only the default listener (:func:`log_event`), the answer is whether
    the ``"suture"`` logger is enabled for the kind's ``log_level``; with any
    other listener, yes; with none, no. Code that emits an event at the rate of
    the calls (a rejection) asks first, so the event is not even built for nobody.
    """
    if _only_log:
        return _log_enabled(kind.log_level)
    return bool(_listeners)


def _set_listeners(items: tuple[Listener, ...]) -> None:
    """Swap the listener tuple. Called under ``_lock``."""
    global _listeners, _only_log  # noqa: PLW0603 - the one registry, swapped atomically
    _listeners = items
    _only_log = items == (log_event,)


def subscribe(listener: Listener) -> Callable[[], None]:
    """Add a listener; returns a function that removes it again."""
    with _lock:
        _set_listeners((*_listeners, listener))

    def _unsubscribe() -> None:
        unsubscribe(listener)

    return _unsubscribe


def unsubscribe(listener: Listener) -> None:
    """Remove a listener (the first registration of it); unknown listeners are ignored."""
    with _lock:
        items = list(_listeners)
        if listener in items:
            items.remove(listener)
            _set_listeners(tuple(items))


def listeners() -> tuple[Listener, ...]:
    """The listeners currently subscribed, in order."""
    return _listeners


def emit(event: Event) -> None:
    """Deliver ``event`` to every listener. A listener that raises is logged, not propagated."""
    for listener in _listeners:
        try:
            listener(event)
        except Exception:  # a broken listener must not break the call it observes
            logger.exception("suture: listener %r failed on %s", listener, type(event).__name__)
