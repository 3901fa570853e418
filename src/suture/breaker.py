"""The circuit breaker: a small state machine with a lock-free healthy path.

States (:class:`BreakerState`) and the legal moves between them::

    CLOSED --(failures trip it)--> OPEN --(reset timeout elapsed)--> HALF_OPEN
    HALF_OPEN --(success_threshold successes)--> CLOSED
    HALF_OPEN --(a probe fails, or hangs past the reset timeout)--> OPEN
    any --(force_open / force_closed / reset / the shared store)--> any

* CLOSED: calls run. A closed breaker that succeeds takes no lock: it reads
  one attribute before the call, advances an atomic counter after it, and
  (in consecutive mode) clears the failure run. Failures take the lock.
* OPEN: calls fail fast with :class:`suture.BreakerOpen` (or get the
  ``fallback``'s result) without running.
* HALF_OPEN: exactly ``half_open_max_calls`` probes run at once, under
  threads and asyncio alike; every other call is rejected. A probe that ends
  in an ignored error or is cancelled gives its permit back and counts
  neither way; a probe that has not finished after ``reset_timeout`` counts
  as failed, so the breaker can never stay stuck half-open.

The state lives behind a :class:`BreakerStore`: the default keeps it in this
process (:class:`MemoryBreakerStore`); a shared store (Redis) plugs in without
changing the breaker. The breaker writes the store only when its state
changes and learns of other writers' changes through the store's listener,
which only flips a flag: the closed hot path never waits on the store.
"""

from __future__ import annotations

import enum
import functools
import inspect
import itertools
import logging
import math
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Final, ParamSpec, Protocol, TypedDict, TypeVar, Unpack

from suture import events as _events
from suture._config import (
    Seconds,
    check_clock,
    check_fraction,
    check_int,
    check_seconds,
    exception_classifier,
)
from suture._decorator import Decorator
from suture.classify import ExceptionClassifier, is_transient
from suture.clock import SYSTEM_CLOCK, Clock
from suture.errors import BreakerOpen, InvalidTransition
from suture.events import BreakerRejected, BreakerStateChanged, emit, log_event, logger
from suture.windows import FAILURE, SLOW, CountWindow, TimeWindow, WindowCounter, count_value

__all__ = [
    "TRANSITIONS",
    "BreakerConfig",
    "BreakerFallback",
    "BreakerOptions",
    "BreakerRecord",
    "BreakerRegistry",
    "BreakerState",
    "BreakerStats",
    "BreakerStore",
    "CircuitBreaker",
    "MemoryBreakerStore",
    "RecordListener",
    "breakers",
]

P = ParamSpec("P")
T = TypeVar("T")


class BreakerState(enum.Enum):
    """The three states of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


CLOSED: Final = BreakerState.CLOSED
OPEN: Final = BreakerState.OPEN
HALF_OPEN: Final = BreakerState.HALF_OPEN

#: The moves the breaker makes by itself; manual control and the store may make any move.
TRANSITIONS: Final = frozenset(
    {(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (HALF_OPEN, CLOSED)}
)

# How a finished call counts.
_SUCCESS: Final = 0
_FAILED: Final = FAILURE
_IGNORED: Final = -1


# --- the store -----------------------------------------------------------------------


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


# --- configuration -----------------------------------------------------------------

BreakerFallback = Callable[[BreakerOpen], Any]
"""Called with the rejection instead of raising it: ``fallback(exc) -> result`` (or awaitable)."""


class BreakerOptions(TypedDict, total=False):
    """The keyword arguments of :class:`CircuitBreaker` and :meth:`BreakerRegistry.get`."""

    failure_threshold: int
    reset_timeout: Seconds
    half_open_max_calls: int
    success_threshold: int
    window: CountWindow | TimeWindow | None
    minimum_calls: int
    failure_rate_threshold: float
    slow_call_duration: Seconds | None
    slow_call_rate_threshold: float
    open_factor: float
    max_reset_timeout: Seconds | None
    on: ExceptionClassifier | type[BaseException] | tuple[type[BaseException], ...]
    ignore: tuple[type[BaseException], ...]
    fallback: BreakerFallback | None
    clock: Clock
    store: BreakerStore | None


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    """A breaker's validated configuration; two breakers with equal configs behave alike."""

    failure_threshold: int = 5
    reset_timeout: float = 30.0
    half_open_max_calls: int = 1
    success_threshold: int = 1
    window: CountWindow | TimeWindow | None = None
    minimum_calls: int = 10
    failure_rate_threshold: float = 0.5
    slow_call_duration: float | None = None
    slow_call_rate_threshold: float = 1.0
    open_factor: float = 1.0
    max_reset_timeout: float | None = None
    on: Any = is_transient
    ignore: tuple[type[BaseException], ...] = ()
    fallback: Any = None
    clock: Any = SYSTEM_CLOCK
    store: Any = None

    @classmethod
    def build(cls, **options: Unpack[BreakerOptions]) -> BreakerConfig:
        """Validate and normalise keyword options; unknown names raise ``TypeError``."""
        allowed = cls.__dataclass_fields__
        for key in options:
            if key not in allowed:
                raise TypeError(
                    f"CircuitBreaker: unknown option {key!r}; the options are {', '.join(allowed)}"
                )
        o: dict[str, Any] = dict(options)
        out: dict[str, Any] = {}
        out["failure_threshold"] = check_int("failure_threshold", o.get("failure_threshold", 5))
        out["reset_timeout"] = check_seconds(
            "reset_timeout", o.get("reset_timeout", 30.0), positive=True
        )
        out["half_open_max_calls"] = check_int(
            "half_open_max_calls", o.get("half_open_max_calls", 1)
        )
        out["success_threshold"] = check_int("success_threshold", o.get("success_threshold", 1))
        window = o.get("window")
        if window is not None and not isinstance(window, (CountWindow, TimeWindow)):
            raise TypeError(
                f"window={window!r}: expected None (consecutive failures), "
                "suture.CountWindow(size) or suture.TimeWindow(seconds)"
            )
        out["window"] = window
        minimum = check_int("minimum_calls", o.get("minimum_calls", 10))
        if isinstance(window, CountWindow) and "minimum_calls" not in o:
            # The default (10) for a smaller window is the whole window: a window
            # that never holds minimum_calls calls never trips. (An explicit larger
            # value is kept: a breaker that only counts is a choice.)
            minimum = min(minimum, window.size)
        out["minimum_calls"] = minimum
        out["failure_rate_threshold"] = check_fraction(
            "failure_rate_threshold", o.get("failure_rate_threshold", 0.5)
        )
        slow = o.get("slow_call_duration")
        if slow is not None:
            slow = check_seconds("slow_call_duration", slow, positive=True)
            if window is None:
                raise ValueError(
                    f"slow_call_duration={slow!r}: a slow-call rate needs a window "
                    "(window=CountWindow(...) or TimeWindow(...)); got window=None"
                )
        out["slow_call_duration"] = slow
        out["slow_call_rate_threshold"] = check_fraction(
            "slow_call_rate_threshold", o.get("slow_call_rate_threshold", 1.0)
        )
        factor = o.get("open_factor", 1.0)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            raise TypeError(f"open_factor={factor!r}: expected a number >= 1")
        if not (factor >= 1 and math.isfinite(factor)):
            raise ValueError(f"open_factor={factor!r}: must be a finite number >= 1")
        out["open_factor"] = float(factor)
        cap = o.get("max_reset_timeout")
        if cap is not None:
            cap = check_seconds("max_reset_timeout", cap, positive=True)
            if cap < out["reset_timeout"]:
                raise ValueError(
                    f"max_reset_timeout={cap!r}: must be >= reset_timeout "
                    f"({out['reset_timeout']!r}), or None for no cap"
                )
        out["max_reset_timeout"] = cap
        out["on"] = exception_classifier(o.get("on", is_transient))
        ignore = o.get("ignore", ())
        if isinstance(ignore, type):
            ignore = (ignore,)
        if not isinstance(ignore, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in ignore
        ):
            raise TypeError(f"ignore={ignore!r}: expected a tuple of exception types")
        out["ignore"] = ignore
        fallback = o.get("fallback")
        if fallback is not None and not callable(fallback):
            raise TypeError(f"fallback={fallback!r}: expected a callable (exc) -> result, or None")
        out["fallback"] = fallback
        out["clock"] = check_clock(o.get("clock", SYSTEM_CLOCK))
        store = o.get("store")
        if store is not None and not all(
            callable(getattr(store, method, None))
            for method in ("load", "swap", "subscribe", "delete")
        ):
            raise TypeError(
                f"store={store!r}: expected None or a suture.BreakerStore "
                "(load, swap, subscribe, delete), such as MemoryBreakerStore()"
            )
        out["store"] = store
        return cls(**out)


# --- the snapshot ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerStats:
    """A frozen snapshot of one breaker.

    The window counts (``calls``, ``successes``, ``failures``, ``slow_calls``)
    come from the failure window; in consecutive mode they cover the time
    since the last state change. ``rejections`` always counts since the last
    state change; the ``total_*`` fields count since creation (or ``reset()``):
    ``total_calls`` is every call that reached the breaker, the sum of the
    successes, failures, ignored calls and rejections. ``opened_at`` is wall-clock
    time; ``retry_after`` the seconds until a probe is admitted (``None`` when
    closed or forced open, 0 when half-open). ``open_count`` is the current run
    of openings (it grows the open duration and restarts on close);
    ``total_opens`` counts every move to OPEN this breaker saw, its own and
    those delivered by a shared store, since creation (or ``reset()``).
    """

    name: str
    state: BreakerState
    calls: int
    successes: int
    failures: int
    slow_calls: int
    rejections: int
    consecutive_failures: int
    failure_rate: float
    slow_call_rate: float
    total_calls: int
    total_successes: int
    total_failures: int
    total_ignored: int
    total_rejections: int
    opened_at: float | None = field(default=None)
    retry_after: float | None = field(default=None)
    open_count: int = 0
    forced: bool = False
    total_opens: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (the state as its value, e.g. ``"half_open"``)."""
        out = asdict(self)
        out["state"] = self.state.value
        return out


# --- the breaker -------------------------------------------------------------------


_ONLY_LOG: Final = (log_event,)
_DEBUG: Final = logging.DEBUG
_logger_enabled = logger.isEnabledFor
_ONLY_LOG_AT_IMPORT: Final = _events._listeners
_new_error = BreakerOpen.__new__


def _rejection_seen() -> bool:
    """Would anyone see a :class:`BreakerRejected`? (Only the logger, at DEBUG, by default.)

    Rejections come at the rate of the calls, so the event is not even built
    when its only listener is the logger and DEBUG is off.
    """
    current = _events._listeners
    if current is _ONLY_LOG_AT_IMPORT or current == _ONLY_LOG:
        return logger.isEnabledFor(logging.DEBUG)
    return bool(current)


class CircuitBreaker(Decorator):
    """Stops calling a failing dependency for a while, then probes it carefully.

    >>> breaker = CircuitBreaker("payments", failure_threshold=5, reset_timeout=30)
    >>> @breaker
    ... def charge(amount: int) -> str: ...

    :param name: the name in events, errors and the registry.
    :param failure_threshold: consecutive failures that trip it (no window), >= 1.
    :param reset_timeout: seconds OPEN before probes are admitted (> 0).
    :param half_open_max_calls: probes admitted at once while HALF_OPEN (>= 1).
    :param success_threshold: probe successes that close it (>= 1).
    :param window: ``None`` for consecutive failures, or :class:`suture.CountWindow`
        / :class:`suture.TimeWindow` for a failure rate.
    :param minimum_calls: calls the window must hold before a rate can trip it.
    :param failure_rate_threshold: failure rate in (0, 1] that trips it (window mode).
    :param slow_call_duration: seconds after which a call is slow (window mode).
    :param slow_call_rate_threshold: slow-call rate in (0, 1] that trips it.
    :param open_factor: each reopening from HALF_OPEN multiplies the open time by
        this (>= 1); back to ``reset_timeout`` once closed.
    :param max_reset_timeout: the cap of the growing open time (``None``: no cap).
    :param on: what counts as a failure: a classifier or exception type(s);
        default :data:`suture.is_transient`. Other errors count as successes
        (the dependency answered).
    :param ignore: exception types that count neither way.
    :param fallback: called with the :class:`BreakerOpen` error instead of
        raising it; its result (awaited if awaitable) is returned.
    :param clock: where time comes from.
    :param store: where the state lives; default: this breaker's own memory.
    """

    _tag = "breaker"

    def __init__(self, name: str, /, **options: Unpack[BreakerOptions]) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name={name!r}: expected a non-empty string")
        config = BreakerConfig.build(**options)
        self._setup(name, config)

    @classmethod
    def from_config(cls, name: str, config: BreakerConfig) -> CircuitBreaker:
        """A breaker with an already validated configuration."""
        self = cls.__new__(cls)
        self._setup(name, config)
        return self

    def _setup(self, name: str, config: BreakerConfig) -> None:
        self.name = name
        self.config = config
        self._clock: Clock = config.clock
        self._store: BreakerStore = (
            config.store if config.store is not None else MemoryBreakerStore()
        )
        # Unique across threads, processes (forked workers included) and hosts: a
        # breaker ignores the store records it wrote itself, and only those.
        self._origin = f"{name}#{uuid.uuid4().hex[:16]}"
        self._lock = threading.Lock()
        self._on: ExceptionClassifier = config.on
        self._fallback: BreakerFallback | None = config.fallback
        self._timed = config.slow_call_duration is not None
        self._now = self._clock.now
        self._forced_wait = config.reset_timeout
        self._needs_time = isinstance(config.window, TimeWindow)
        self._ignore: tuple[type[BaseException], ...] = (BreakerOpen, *config.ignore)
        self._window: WindowCounter | None = (
            config.window.counter() if config.window is not None else None
        )
        # State. ``_closed`` is the one attribute the hot path reads: True only
        # while CLOSED with nothing pending from the store.
        self._state = CLOSED
        self._closed = True
        self._generation = 0
        self._version = 0
        self._forced = False
        self._opened_at: float | None = None  # monotonic
        self._opened_wall: float | None = None
        self._retry_at = 0.0  # monotonic: when OPEN admits a probe
        self._half_open_deadline = 0.0
        self._open_count = 0
        self._total_opens = 0
        self._permits = 0
        self._probe_successes = 0
        self._consecutive = 0
        self._armed = False  # window mode: the rate is over a threshold, waiting for minimum_calls
        self._pending: BreakerRecord | None = None
        self._pending_lock = threading.Lock()
        # Totals: atomic counters for the lock-free paths, ints under the lock.
        self._successes = itertools.count()
        self._ignored = itertools.count()
        self._rejections = itertools.count()
        self._count_rejection = self._rejections.__next__
        self._failures = 0
        self._baseline = (0, 0, 0, 0)  # successes, ignored, rejections, failures at reset()
        self._mark = (0, 0, 0)  # successes, rejections, failures at the last state change
        record = self._store.load(name)
        if record is not None:
            self._apply(record, self._clock.now(), announce=False)
        self._unsubscribe = self._store.subscribe(name, self._on_record)

    # --- public surface ------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state (an OPEN breaker whose timeout elapsed reports HALF_OPEN)."""
        if not self._closed:
            events: list[BreakerStateChanged] = []
            with self._lock:
                self._sync(self._clock.now(), events)
            for event in events:
                emit(event)
        return self._state

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self._state.name}>"

    def force_open(self, reason: str = "forced open") -> None:
        """Open now and stay open until :meth:`force_closed` or :meth:`reset`."""
        self._manual(OPEN, reason, forced=True)

    def force_closed(self, reason: str = "forced closed") -> None:
        """Close now (the window is cleared); the breaker may trip again."""
        self._manual(CLOSED, reason, forced=False)

    def reset(self) -> None:
        """Back to a new breaker: CLOSED, window, open count and totals cleared."""
        with self._lock:
            self._baseline = (
                count_value(self._successes),
                count_value(self._ignored),
                count_value(self._rejections),
                self._failures,
            )
            self._open_count = 0
            self._total_opens = 0
        self._manual(CLOSED, "reset", forced=False)

    def close(self) -> None:
        """Stop listening to the store (for breakers dropped from a long-lived store)."""
        self._unsubscribe()

    def stats(self) -> BreakerStats:
        """A frozen snapshot of the state and the counts."""
        events: list[BreakerStateChanged] = []
        with self._lock:
            now = self._clock.now()
            self._sync(now, events)
            b_succ, b_ign, b_rej, b_fail = self._baseline
            succ = count_value(self._successes)
            rej = count_value(self._rejections)
            m_succ, m_rej, m_fail = self._mark
            if self._window is not None:
                calls, failures, slow = self._window.counts(now)
            else:
                failures = self._failures - m_fail
                calls = (succ - m_succ) + failures
                slow = 0
            state = self._state
            retry_after: float | None = None
            if state is OPEN and not self._forced:
                retry_after = max(0.0, self._retry_at - now)
            elif state is HALF_OPEN:
                retry_after = 0.0
            total_succ = succ - b_succ
            total_fail = self._failures - b_fail
            total_ign = count_value(self._ignored) - b_ign
            total_rej = rej - b_rej
            stats = BreakerStats(
                name=self.name,
                state=state,
                calls=calls,
                successes=calls - failures,
                failures=failures,
                slow_calls=slow,
                rejections=rej - max(m_rej, b_rej),
                consecutive_failures=self._consecutive,
                failure_rate=failures / calls if calls else 0.0,
                slow_call_rate=slow / calls if calls else 0.0,
                total_calls=total_succ + total_fail + total_ign + total_rej,
                total_successes=total_succ,
                total_failures=total_fail,
                total_ignored=total_ign,
                total_rejections=total_rej,
                opened_at=self._opened_wall if state is not CLOSED else None,
                retry_after=retry_after,
                open_count=self._open_count,
                forced=self._forced,
                total_opens=self._total_opens,
            )
        for event in events:
            emit(event)
        return stats

    # --- decorator and calls ---------------------------------------------------------

    def _decorate_sync(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return self._wrap_sync(fn)

    def _decorate_async(
        self, fn: Callable[..., Coroutine[Any, Any, Any]]
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        return self._wrap_async(fn)

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` through the breaker."""
        if not self._closed:
            return self._guarded_sync(fn, args, kwargs)  # type: ignore[no-any-return]
        gen = self._generation
        if self._timed:
            return self._run_closed_sync(fn, args, kwargs, gen)  # type: ignore[no-any-return]
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._closed_error(exc, gen, 0.0)
            raise
        self._closed_ok(0.0, 0.0)
        return result

    async def acall(
        self,
        fn: Callable[P, Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Await ``fn(*args, **kwargs)`` through the breaker."""
        if not self._closed:
            return await self._guarded_async(fn, args, kwargs)  # type: ignore[no-any-return]
        gen = self._generation
        if self._timed:
            return await self._run_closed_async(fn, args, kwargs, gen)  # type: ignore[no-any-return]
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._closed_error(exc, gen, 0.0)
            raise
        self._closed_ok(0.0, 0.0)
        return result

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        guarded = self._guarded_sync
        quick = self._quick_reject
        fallback = self._sync_fallback
        closed_error = self._closed_error
        ok = self._successes.__next__
        slow = self.config.slow_call_duration
        now = self._clock.now
        window = self._window
        breaker = self

        if window is None:

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                if not breaker._closed:
                    if breaker._state is OPEN and (error := quick()) is not None:
                        if breaker._fallback is None:
                            raise error
                        return fallback(error)  # type: ignore[no-any-return]
                    return guarded(fn, args, kwargs)  # type: ignore[no-any-return]
                gen = breaker._generation
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    closed_error(exc, gen, 0.0)
                    raise
                ok()
                if breaker._consecutive:
                    breaker._consecutive = 0
                return result

        elif slow is None:
            closed_ok = self._closed_ok

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                if not breaker._closed:
                    if breaker._state is OPEN and (error := quick()) is not None:
                        if breaker._fallback is None:
                            raise error
                        return fallback(error)  # type: ignore[no-any-return]
                    return guarded(fn, args, kwargs)  # type: ignore[no-any-return]
                gen = breaker._generation
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    closed_error(exc, gen, 0.0)
                    raise
                closed_ok(0.0, 0.0)
                return result

        else:
            closed_ok = self._closed_ok

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                if not breaker._closed:
                    if breaker._state is OPEN and (error := quick()) is not None:
                        if breaker._fallback is None:
                            raise error
                        return fallback(error)  # type: ignore[no-any-return]
                    return guarded(fn, args, kwargs)  # type: ignore[no-any-return]
                gen = breaker._generation
                start = now()
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    closed_error(exc, gen, now() - start)
                    raise
                closed_ok(start, now())
                return result

        return wrapper

    def _wrap_async(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        guarded = self._guarded_async
        quick = self._quick_reject
        afallback = self._async_fallback
        closed_error = self._closed_error
        ok = self._successes.__next__
        slow = self.config.slow_call_duration
        now = self._clock.now
        window = self._window
        breaker = self

        if window is None:

            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                if not breaker._closed:
                    if breaker._state is OPEN and (error := quick()) is not None:
                        if breaker._fallback is None:
                            raise error
                        return await afallback(error)  # type: ignore[no-any-return]
                    return await guarded(fn, args, kwargs)  # type: ignore[no-any-return]
                gen = breaker._generation
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    closed_error(exc, gen, 0.0)
                    raise
                ok()
                if breaker._consecutive:
                    breaker._consecutive = 0
                return result

        else:
            closed_ok = self._closed_ok
            timed = slow is not None

            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                if not breaker._closed:
                    if breaker._state is OPEN and (error := quick()) is not None:
                        if breaker._fallback is None:
                            raise error
                        return await afallback(error)  # type: ignore[no-any-return]
                    return await guarded(fn, args, kwargs)  # type: ignore[no-any-return]
                gen = breaker._generation
                start = now() if timed else 0.0
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    closed_error(exc, gen, now() - start if timed else 0.0)
                    raise
                closed_ok(start, now() if timed else 0.0)
                return result

        return wrapper

    # --- the closed path ---------------------------------------------------------------

    def _closed_ok(self, start: float, end: float) -> None:
        """A success while CLOSED (lock-free unless it is slow or the window is armed)."""
        next(self._successes)
        window = self._window
        if window is None:
            if self._consecutive:
                self._consecutive = 0
            return
        if not self._timed:  # untimed callers pass 0.0: a time window needs the time
            end = self._clock.now() if self._needs_time else 0.0
        slow = self.config.slow_call_duration
        if slow is not None and end - start > slow:
            with self._lock:
                window.record(SLOW, end)
                event = self._evaluate(end, self._generation)
        elif window.success(end) or self._armed:
            # The window forgot old calls, or a rate is over its threshold and
            # only minimum_calls was missing: decide now, as after a failure.
            with self._lock:
                event = self._evaluate(self._clock.now(), self._generation)
        else:
            return
        if event is not None:
            emit(event)

    def _outcome(self, exc: BaseException) -> int:
        if not isinstance(exc, Exception) or isinstance(exc, self._ignore):
            return _IGNORED  # cancellation, KeyboardInterrupt, SystemExit, ignored types
        try:
            return _FAILED if self._on(exc) else _SUCCESS
        except Exception:
            logger.exception("suture: breaker %s: classifier failed on %r", self.name, exc)
            return _FAILED

    def _closed_error(self, exc: BaseException, gen: int, duration: float) -> None:
        """An error from a call admitted while CLOSED."""
        outcome = self._outcome(exc)
        if outcome == _IGNORED:
            next(self._ignored)
            return
        if outcome == _SUCCESS:
            now = self._clock.now()
            self._closed_ok(now - duration, now)
            return
        events: list[BreakerStateChanged] = []
        with self._lock:
            self._failures += 1
            if gen != self._generation or self._state is not CLOSED:
                return  # the breaker moved on while this call ran: it no longer counts
            now = self._clock.now()
            window = self._window
            if window is None:
                self._consecutive += 1
                if self._consecutive >= self.config.failure_threshold:
                    events.append(
                        self._move(
                            OPEN, f"{self._consecutive} consecutive failures", now, grow=False
                        )
                    )
            else:
                slow = self.config.slow_call_duration
                outcome = FAILURE | (SLOW if slow is not None and duration > slow else 0)
                window.record(outcome, now)
                self._consecutive += 1
                event = self._evaluate(now, gen)
                if event is not None:
                    events.append(event)
        for event in events:
            emit(event)

    def _evaluate(self, now: float, gen: int) -> BreakerStateChanged | None:
        """Window mode: trip when a rate reaches its threshold with enough calls. Locked."""
        if self._state is not CLOSED or gen != self._generation or self._window is None:
            return None
        cfg = self.config
        calls, failures, slow = self._window.counts(now, evaluate=True)
        if not calls:
            self._armed = False
            return None
        reason = ""
        if failures / calls >= cfg.failure_rate_threshold:
            reason = f"failure rate {failures}/{calls} >= {cfg.failure_rate_threshold:g}"
        elif cfg.slow_call_duration is not None and slow / calls >= cfg.slow_call_rate_threshold:
            reason = f"slow-call rate {slow}/{calls} >= {cfg.slow_call_rate_threshold:g}"
        if not reason:
            self._armed = False
            return None
        if calls < cfg.minimum_calls:
            self._armed = True
            return None
        self._armed = False
        return self._move(OPEN, reason, now, grow=False)

    # --- open and half-open --------------------------------------------------------------

    def _admit(
        self,
    ) -> tuple[int, BreakerState, BreakerOpen | None, list[BreakerStateChanged]]:
        """Decide a call that found the breaker not CLOSED.

        Returns the generation and state it was admitted in, the rejection (or
        ``None``) and the events to emit once the lock is released.
        """
        events: list[BreakerStateChanged] = []
        with self._lock:
            now = self._clock.now()
            self._sync(now, events)
            state = self._state
            if state is CLOSED:
                return self._generation, CLOSED, None, events
            if state is HALF_OPEN:
                if self._permits < self.config.half_open_max_calls:
                    self._permits += 1
                    return self._generation, HALF_OPEN, None, events
                if now >= self._half_open_deadline:
                    events.append(
                        self._move(
                            OPEN,
                            "a probe did not finish within the reset timeout",
                            now,
                            grow=True,
                        )
                    )
                    wait = self._retry_at - now
                else:
                    # Probes are running: their outcome decides within a moment.
                    wait = min(1.0, self._half_open_deadline - now)
            elif self._forced:
                wait = self.config.reset_timeout
            else:
                wait = self._retry_at - now
            next(self._rejections)
            return self._generation, self._state, BreakerOpen(self.name, wait), events

    def _sync(self, now: float, events: list[BreakerStateChanged]) -> None:
        """Apply a newer store record and an elapsed open timeout. Locked."""
        pending = self._pending
        if pending is not None and pending.version > self._version:
            event = self._apply(pending, now, announce=True)
            if event is not None:
                events.append(event)
        if self._state is OPEN and not self._forced and now >= self._retry_at:
            events.append(self._move(HALF_OPEN, "reset timeout elapsed", now, grow=False))
        self._reopen_fast_path()

    def _reopen_fast_path(self) -> None:
        """Let the hot path run again when CLOSED and nothing newer is pending. Locked.

        The store's listener writes ``_pending`` then clears ``_closed``; reading
        ``_pending`` again after setting ``_closed`` means no record is missed.
        """
        if self._state is not CLOSED or self._newer_pending():
            return
        self._closed = True
        if self._newer_pending():
            self._closed = False

    def _newer_pending(self) -> bool:
        pending = self._pending
        return pending is not None and pending.version > self._version

    def _quick_reject(self) -> BreakerOpen | None:
        """OPEN, before its timeout, nothing newer in the store: reject without the lock.

        Rejections come at the rate of the calls, so this is written for speed:
        no lock, ``BreakerOpen`` built without its Python ``__init__``, and the
        event built only when someone would see it (see :func:`_rejection_seen`).
        """
        now = self._now()
        retry_at = self._retry_at
        forced = self._forced
        if now >= retry_at and not forced:
            return None
        pending = self._pending
        if pending is not None and pending.version > self._version:
            return None
        self._count_rejection()
        name = self.name
        wait = self._forced_wait if forced else retry_at - now
        error = _new_error(BreakerOpen, name, wait)
        error.name = name
        error.retry_after = wait
        current = _events._listeners
        if current is _ONLY_LOG_AT_IMPORT or current == _ONLY_LOG:
            seen = _logger_enabled(_DEBUG)
        else:
            seen = bool(current)
        if seen:
            emit(BreakerRejected(name=name, retry_after=wait))
        return error

    def _reject(self, error: BreakerOpen) -> None:
        """Announce a rejection decided under the lock."""
        if _rejection_seen():
            emit(BreakerRejected(name=self.name, retry_after=error.retry_after))

    async def _async_fallback(self, error: BreakerOpen) -> Any:
        assert self._fallback is not None
        result = self._fallback(error)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _sync_fallback(self, error: BreakerOpen, *, emitted: bool = True) -> Any:
        if not emitted:
            self._reject(error)
        assert self._fallback is not None
        result = self._fallback(error)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(
                f"breaker {self.name}: the fallback of a sync call returned an awaitable"
            )
        return result

    def _guarded_sync(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        if self._state is OPEN:
            error = self._quick_reject()
            if error is not None:
                if self._fallback is None:
                    raise error
                return self._sync_fallback(error)
        gen, admitted, error, events = self._admit()
        for event in events:
            emit(event)
        if error is not None:
            if self._fallback is None:
                self._reject(error)  # emits the event
                raise error
            return self._sync_fallback(error, emitted=False)
        if admitted is CLOSED:
            return self._run_closed_sync(fn, args, kwargs, gen)
        slow = self.config.slow_call_duration
        now = self._clock.now
        start = now()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._probe_done(gen, self._outcome(exc), now() - start, slow)
            raise
        self._probe_done(gen, _SUCCESS, now() - start, slow)
        return result

    async def _guarded_async(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        if self._state is OPEN:
            error = self._quick_reject()
            if error is not None:
                if self._fallback is None:
                    raise error
                return await self._async_fallback(error)
        gen, admitted, error, events = self._admit()
        for event in events:
            emit(event)
        if error is not None:
            if _rejection_seen():
                emit(BreakerRejected(name=self.name, retry_after=error.retry_after))
            if self._fallback is None:
                raise error
            return await self._async_fallback(error)
        if admitted is CLOSED:
            return await self._run_closed_async(fn, args, kwargs, gen)
        slow = self.config.slow_call_duration
        now = self._clock.now
        start = now()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._probe_done(gen, self._outcome(exc), now() - start, slow)
            raise
        self._probe_done(gen, _SUCCESS, now() - start, slow)
        return result

    def _run_closed_sync(self, fn: Callable[..., Any], args: Any, kwargs: Any, gen: int) -> Any:
        now = self._clock.now
        start = now()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._closed_error(exc, gen, now() - start)
            raise
        self._closed_ok(start, now())
        return result

    async def _run_closed_async(
        self, fn: Callable[..., Any], args: Any, kwargs: Any, gen: int
    ) -> Any:
        now = self._clock.now
        start = now()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._closed_error(exc, gen, now() - start)
            raise
        self._closed_ok(start, now())
        return result

    def _probe_done(self, gen: int, outcome: int, duration: float, slow: float | None) -> None:
        """A half-open probe finished: give the permit back and count it."""
        if outcome == _IGNORED:
            next(self._ignored)
        elif outcome == _SUCCESS:
            next(self._successes)
        event: BreakerStateChanged | None = None
        with self._lock:
            if outcome == _FAILED:
                self._failures += 1
            if gen != self._generation or self._state is not HALF_OPEN:
                return  # a late probe of an earlier half-open period: it no longer counts
            self._permits -= 1
            if outcome == _IGNORED:
                return
            now = self._clock.now()
            if outcome == _FAILED:
                event = self._move(OPEN, "a probe failed", now, grow=True)
            elif slow is not None and duration > slow:
                event = self._move(OPEN, f"a probe took {duration:.3f}s (slow)", now, grow=True)
            else:
                self._probe_successes += 1
                if self._probe_successes >= self.config.success_threshold:
                    event = self._move(
                        CLOSED, f"{self._probe_successes} probe(s) succeeded", now, grow=False
                    )
        if event is not None:
            emit(event)

    # --- state changes -------------------------------------------------------------------

    def _move(
        self, target: BreakerState, reason: str, now: float, *, grow: bool
    ) -> BreakerStateChanged:
        """Change state by the breaker's own rules. Locked; returns the event to emit."""
        source = self._state
        if (source, target) not in TRANSITIONS:
            raise InvalidTransition(source, target, self.name)
        return self._set(target, reason, now, grow=grow, forced=False)

    def _set(
        self, target: BreakerState, reason: str, now: float, *, grow: bool, forced: bool
    ) -> BreakerStateChanged:
        """Write the new state through the store and apply it locally. Locked."""
        cfg = self.config
        wall = self._clock.wall()
        open_count = self._open_count
        opened_at: float | None = None
        retry_at: float | None = None
        if target is OPEN:
            open_count = open_count + 1 if grow else max(open_count, 1)
            duration = cfg.reset_timeout * cfg.open_factor ** (open_count - 1)
            if cfg.max_reset_timeout is not None:
                duration = min(duration, cfg.max_reset_timeout)
            opened_at = wall
            retry_at = wall + duration
        elif target is CLOSED:
            open_count = 0
        else:
            opened_at = self._opened_wall
        record = BreakerRecord(
            state=target,
            version=self._version + 1,
            opened_at=opened_at,
            retry_at=retry_at,
            open_count=open_count,
            forced=forced,
            reason=reason,
            origin=self._origin,
        )
        stored = self._store.swap(self.name, self._version, record)
        source = self._state
        self._apply(stored, now, announce=False)
        return BreakerStateChanged(
            name=self.name, source=source, target=stored.state, reason=stored.reason
        )

    def _apply(
        self, record: BreakerRecord, now: float, *, announce: bool
    ) -> BreakerStateChanged | None:
        """Make a stored record the local state. Locked (or during construction)."""
        source = self._state
        self._closed = False  # the hot path takes the slow path while this changes
        self._version = record.version
        self._generation += 1
        self._state = record.state
        self._forced = record.forced
        self._open_count = record.open_count
        self._permits = 0
        self._probe_successes = 0
        self._consecutive = 0
        self._armed = False
        self._mark = (count_value(self._successes), count_value(self._rejections), self._failures)
        wall = self._clock.wall()
        if record.state is CLOSED:
            self._opened_at = None
            self._opened_wall = None
            if self._window is not None:
                self._window.clear()
        elif record.state is OPEN:
            if source is not OPEN:
                self._total_opens += 1
            self._opened_wall = record.opened_at
            self._opened_at = now - (wall - record.opened_at) if record.opened_at else now
            retry_wall = record.retry_at if record.retry_at is not None else wall
            self._retry_at = now + (retry_wall - wall)
        else:  # HALF_OPEN
            self._half_open_deadline = now + self.config.reset_timeout
        self._reopen_fast_path()
        if announce and source is not record.state:
            return BreakerStateChanged(
                name=self.name,
                source=source,
                target=record.state,
                reason=f"shared store: {record.reason}",
            )
        return None

    def _on_record(self, record: BreakerRecord) -> None:
        """The store's listener: only note the record; the next call applies it."""
        if record.origin == self._origin:
            return
        # Stores deliver outside their own lock, so two records may arrive at once
        # from two threads: keep the newer one. (Never the breaker's lock here: a
        # breaker changing state holds it while its store notifies other breakers.)
        with self._pending_lock:
            pending = self._pending
            if pending is None or record.version > pending.version:
                self._pending = record
        self._closed = False

    def _manual(self, target: BreakerState, reason: str, *, forced: bool) -> None:
        events: list[BreakerStateChanged] = []
        with self._lock:
            now = self._clock.now()
            self._sync(now, events)
            source = self._state
            event = self._set(target, reason, now, grow=False, forced=forced)
        if source is not target or forced:
            events.append(event)
        for item in events:
            emit(item)


# --- the registry --------------------------------------------------------------------


class BreakerRegistry:
    """Named breakers: get or create by name, iterate, snapshot, reset.

    >>> registry = BreakerRegistry()
    >>> db = registry.get("db", failure_threshold=3)
    >>> registry.get("db") is db
    True
    >>> registry.get("db", failure_threshold=4)
    Traceback (most recent call last):
    ...
    ValueError: breaker 'db' already exists with another configuration (failure_threshold: 3 != 4)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, name: str, /, **options: Unpack[BreakerOptions]) -> CircuitBreaker:
        """The breaker called ``name``, created with ``options`` the first time.

        Asking again with no options returns it; asking with options that
        differ from its configuration raises ``ValueError``.
        """
        existing = self._breakers.get(name)
        if existing is not None and not options:
            return existing
        config = BreakerConfig.build(**options)
        with self._lock:
            existing = self._breakers.get(name)
            if existing is None:
                breaker = CircuitBreaker.from_config(name, config)
                self._breakers[name] = breaker
                return breaker
        if existing.config != config:
            diff = ", ".join(
                f"{key}: {getattr(existing.config, key)!r} != {getattr(config, key)!r}"
                for key in BreakerConfig.__dataclass_fields__
                if getattr(existing.config, key) != getattr(config, key)
            )
            raise ValueError(f"breaker {name!r} already exists with another configuration ({diff})")
        return existing

    def add(self, breaker: CircuitBreaker) -> CircuitBreaker:
        """Register a breaker made elsewhere; a different breaker with its name is an error."""
        with self._lock:
            existing = self._breakers.setdefault(breaker.name, breaker)
        if existing is not breaker:
            raise ValueError(f"a different breaker named {breaker.name!r} is already registered")
        return breaker

    def remove(self, name: str) -> CircuitBreaker | None:
        """Forget one breaker (it keeps working for whoever holds it)."""
        with self._lock:
            return self._breakers.pop(name, None)

    def clear(self) -> None:
        """Forget every breaker (for tests)."""
        with self._lock:
            self._breakers.clear()

    def reset_all(self) -> None:
        """:meth:`CircuitBreaker.reset` every breaker (for tests)."""
        for breaker in list(self._breakers.values()):
            breaker.reset()

    def snapshot(self) -> dict[str, BreakerStats]:
        """Every breaker's stats, by name."""
        return {name: b.stats() for name, b in list(self._breakers.items())}

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def __len__(self) -> int:
        return len(self._breakers)

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __getitem__(self, name: str) -> CircuitBreaker:
        return self._breakers[name]

    def __repr__(self) -> str:
        return f"BreakerRegistry({sorted(self._breakers)!r})"


breakers: Final = BreakerRegistry()
"""The process-wide registry: ``suture.breakers.get("payments", failure_threshold=5)``."""
