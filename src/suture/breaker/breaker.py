"""The circuit breaker's edge: the decorator, ``call``/``acall`` and the public surface.

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

Every decision lives in :class:`suture.breaker._machine.BreakerCore`; this
module only runs the user's function. It does so from one skeleton,
:data:`_SKELETON`, specialised once per (sync or async, decorator or
``call``, counting mode) into plain code, so the closed path of each kind
pays for nothing it does not use (as ``dataclasses`` writes its ``__init__``).
"""

from __future__ import annotations

import functools
import inspect
import linecache
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal, ParamSpec, TypeVar, Unpack

from suture._decorator import Decorator
from suture.breaker._machine import CLOSED, HALF_OPEN, OPEN, BreakerCore
from suture.breaker.config import BreakerConfig, BreakerOptions
from suture.breaker.store import BreakerState
from suture.deadline import get_current
from suture.errors import BreakerOpen, DeadlineExceeded
from suture.events import Event, emit
from suture.windows import count_value

__all__ = ["BreakerStats", "CircuitBreaker"]

P = ParamSpec("P")
T = TypeVar("T")


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

    Slow calls (window mode with ``slow_call_duration``) are a dimension of the
    answered calls: ``total_slow_successes`` are among ``total_successes`` and
    ``total_slow_failures`` among ``total_failures``, as the window's slow-call
    rate counts both. :meth:`outcomes` splits the calls into five outcomes that
    add up to ``total_calls``, where a slow success is ``slow`` and a slow
    failure is ``failed`` (what the metrics export).
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
    opened_at: float | None = None
    retry_after: float | None = None
    open_count: int = 0
    forced: bool = False
    total_opens: int = 0
    total_slow_successes: int = 0
    total_slow_failures: int = 0

    def outcomes(self) -> tuple[tuple[str, int], ...]:
        """Every call once, by outcome: ``successful`` (and not slow), ``slow``,
        ``failed``, ``ignored``, ``rejected``; the counts add up to ``total_calls``."""
        slow = self.total_slow_successes
        return (
            ("successful", self.total_successes - slow),
            ("slow", slow),
            ("failed", self.total_failures),
            ("ignored", self.total_ignored),
            ("rejected", self.total_rejections),
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (the state as its value, e.g. ``"half_open"``)."""
        out = asdict(self)
        out["state"] = self.state.value
        return out


class CircuitBreaker(BreakerCore, Decorator):
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
    :param overload: what is *overload*, counted neither way: a full queue in our
        own process (a pool checkout timeout, :class:`suture.Overloaded`) says
        nothing about the dependency. Default :data:`suture.classify.is_overload`;
        ``overload=()`` counts such errors by ``on`` like any other.
        :class:`suture.DeadlineExceeded` (the caller's time ran out) is always ignored.
    :param ignore: exception types that count neither way.
    :param fallback: called with the :class:`BreakerOpen` error instead of
        raising it; its result (awaited if awaitable) is returned.
    :param clock: where time comes from.
    :param store: where the state lives; default: this breaker's own memory.
    """

    # ``__dict__`` and ``__weakref__`` keep a breaker as open as a plain object is.
    __slots__ = ("__dict__", "__weakref__", "_acall", "_call")

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

    # --- public surface ------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state (an OPEN breaker whose timeout elapsed reports HALF_OPEN)."""
        if not self._closed:
            events: list[Event] = []
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
                self._slow_successes,
                self._slow_failures,
            )
            self._open_count = 0
            self._total_opens = 0
        self._manual(CLOSED, "reset", forced=False)

    def close(self) -> None:
        """Stop listening to the store (for breakers dropped from a long-lived store)."""
        self._unsubscribe()

    def stats(self) -> BreakerStats:
        """A frozen snapshot of the state and the counts."""
        events: list[Event] = []
        with self._lock:
            now = self._clock.now()
            self._sync(now, events)
            b_succ, b_ign, b_rej, b_fail, b_slow_succ, b_slow_fail = self._baseline
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
                total_slow_successes=self._slow_successes - b_slow_succ,
                total_slow_failures=self._slow_failures - b_slow_fail,
            )
        for event in events:
            emit(event)
        return stats

    # --- decorator and calls ---------------------------------------------------------

    def _decorate_sync(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return functools.wraps(fn)(self._specialise("sync", "wrap", fn))

    def _decorate_async(
        self, fn: Callable[..., Coroutine[Any, Any, Any]]
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        return functools.wraps(fn)(self._specialise("async", "wrap", fn))

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` through the breaker."""
        return self._call(fn, args, kwargs)  # type: ignore[no-any-return]

    async def acall(
        self,
        fn: Callable[P, Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Await ``fn(*args, **kwargs)`` through the breaker."""
        return await self._acall(fn, args, kwargs)  # type: ignore[no-any-return]

    def _setup(self, name: str, config: BreakerConfig) -> None:
        super()._setup(name, config)
        self._call = self._specialise("sync", "call", None)
        self._acall = self._specialise("async", "call", None)

    def _specialise(
        self, kind: Literal["sync", "async"], form: Literal["wrap", "call"], fn: Any
    ) -> Callable[..., Any]:
        """The skeleton made into code for this breaker's counting mode, bound to it."""
        mode = "consecutive" if self._window is None else "timed" if self._timed else "window"
        return _factory(kind, form, mode)(
            fn,
            self,
            self._quick_reject,
            self._admit,
            self._finish,
            self._async_fallback if kind == "async" else self._sync_fallback,
            self._successes.__next__,
            self._closed_ok,
            self._closed_error,
            self._clock.now,
            OPEN,
        )

    def _sync_fallback(self, error: BreakerOpen) -> Any:
        assert self._fallback is not None
        result = self._fallback(error)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(
                f"breaker {self.name}: the fallback of a sync call returned an awaitable"
            )
        return result

    async def _async_fallback(self, error: BreakerOpen) -> Any:
        assert self._fallback is not None
        result = self._fallback(error)
        return (await result) if inspect.isawaitable(result) else result


# --- the one skeleton --------------------------------------------------------------------

_SKELETON: Final = """\
def factory(fn, breaker, quick, admit, finish, fallback, ok, closed_ok, closed_error, now, OPEN):
    {a}def guarded(fn, args, kwargs):
        request = current_deadline()
        if request is not None and request.remaining() <= 0:
            raise DeadlineExceeded(f"{{breaker.name}} not probed", request.budget)
        gen, admitted, error = admit()
        if error is not None:
            if breaker._fallback is None:
                raise error
            return {w}fallback(error)
        start = now()
        try:
            result = {w}fn(*args, **kwargs)
        except BaseException as exc:
            finish(admitted, gen, start, exc)
            raise
        finish(admitted, gen, start, None)
        return result

    {a}def run({params}):
        if not breaker._closed:
            if breaker._state is OPEN and (error := quick()) is not None:
                if breaker._fallback is None:
                    raise error
                return {w}fallback(error)
            return {w}guarded(fn, args, kwargs)
        gen = breaker._generation
        {start}
        try:
            result = {w}fn(*args, **kwargs)
        except BaseException as exc:
            closed_error(exc, gen, {duration})
            raise
        {success}
        return result

    return run
"""
"""How every call runs: ``guarded`` when the breaker is not CLOSED (the open
rejection first, without the lock; no probe once the request's deadline is
spent), the closed hot path otherwise.
``{a}``/``{w}`` make it sync or async; ``{params}`` the decorator's wrapper
(``fn`` from the closure) or ``call``'s runner (``fn`` passed in);
:data:`_MODES` what the closed path measures and counts."""

_MODES: Final = {
    # Consecutive failures: a success only clears the run (inline, no call).
    "consecutive": {
        "start": "",
        "duration": "0.0",
        "success": "ok()\n        if breaker._consecutive:\n            breaker._consecutive = 0",
    },
    # A window without slow calls: no clock reading around the call.
    "window": {"start": "pass", "duration": "0.0", "success": "closed_ok(0.0, 0.0)"},
    # Slow calls count: the call is timed.
    "timed": {
        "start": "start = now()",
        "duration": "now() - start",
        "success": "closed_ok(start, now())",
    },
}


@functools.cache
def _factory(kind: str, form: str, mode: str) -> Callable[..., Callable[..., Any]]:
    """Compile the skeleton for one (kind, form, mode), once per process."""
    a, w = ("async ", "await ") if kind == "async" else ("", "")
    params = "*args, **kwargs" if form == "wrap" else "fn, args, kwargs"
    source = _SKELETON.format(a=a, w=w, params=params, **_MODES[mode])
    filename = f"<suture.breaker {kind} {form} {mode}>"
    # Registered like dataclasses' generated code is not, so tracebacks show the lines.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {
        "current_deadline": get_current,
        "DeadlineExceeded": DeadlineExceeded,
    }
    exec(compile(source, filename, "exec"), namespace)
    factory: Callable[..., Callable[..., Any]] = namespace["factory"]
    return factory
