# About 400 lines: the Retry options with their docs, and the thin sync, async and block loops.
"""Retry with exponential backoff: a frozen policy that is also a decorator.

:class:`Retry` is one frozen dataclass: its fields are the option list, each
validated once at construction. The decisions live once, in
:class:`suture._retry_state.CallState` (no I/O: it only answers "wait this
long" or "give up"); the thin sync and async loops here drive it, and so does
the block form (``for attempt in policy.attempts(): with attempt: ...``, in
:mod:`suture._retry_block`).

The success path does the least it can: a ``try``, and one clock read only
when the policy has a deadline. Without one, the elapsed time of the events
and notes counts from the end of the first failed attempt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypedDict, TypeVar, Unpack, overload

from suture._config import (
    ExceptionSpec,
    Option,
    Seconds,
    check_clock,
    check_int,
    check_name,
    check_seconds,
    exception_classifier,
    normalise_options,
)
from suture._decorator import Decorator
from suture._retry_block import Attempt, AttemptManager
from suture._retry_state import CallState, Gate
from suture.backoff import Backoff, Jitter
from suture.budget import Budget
from suture.classify import ExceptionClassifier, is_overload, is_transient
from suture.clock import _WAITS, SYSTEM_CLOCK, Clock
from suture.events import RetryScheduled

__all__ = ["Attempt", "AttemptManager", "Retry", "RetryHook", "RetryOptions", "retry"]

P = ParamSpec("P")
T = TypeVar("T")

RetryHook = Callable[[RetryScheduled], None]
"""Called before each wait with the same frozen event the listeners receive."""


class RetryOptions(TypedDict, total=False):
    """The keyword arguments of :class:`Retry` and :func:`retry`, for typing ``**options``.

    Python cannot derive a ``TypedDict`` from a dataclass: a test checks that
    these keys are exactly :class:`Retry`'s fields.
    """

    attempts: int
    initial_delay: Seconds
    max_delay: Seconds
    multiplier: float
    jitter: Jitter
    deadline: Seconds | None
    on: ExceptionSpec
    overload: ExceptionSpec
    on_retry: RetryHook | None
    budget: Budget | None
    clock: Clock
    rand: Callable[[], float]
    name: str | None


class _AttemptCount(int):
    """``policy.attempts`` is the number of tries, and calling it starts the block form.

    ``Retry(attempts=3).attempts == 3``, and ``for attempt in policy.attempts(): ...``.
    """

    _policy: Retry

    def __call__(self, *, name: str | None = None) -> AttemptManager:
        return self._policy.block(name=name)

    def __repr__(self) -> str:
        return int.__repr__(self)


def _attempt_count(name: str, value: int) -> _AttemptCount:
    return _AttemptCount(check_int(name, value, minimum=1))


def _deadline(name: str, value: Seconds | None) -> float | None:
    return None if value is None else check_seconds(name, value, positive=True)


def _classifier(name: str, value: ExceptionSpec) -> ExceptionClassifier:  # on=, overload=
    return exception_classifier(value, name)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Retry(Decorator):
    """A retry policy. Immutable; use it as a decorator, or ``call``, or the block form.

    >>> policy = Retry(attempts=5, initial_delay=0.1, max_delay=2.0, deadline=10.0)
    >>> @policy
    ... def fetch() -> str: ...
    >>> for attempt in policy.attempts():   # doctest: +SKIP
    ...     with attempt:
    ...         fetch()

    :param attempts: total tries, the first included (>= 1). ``policy.attempts``
        compares equal to this number and, called, starts the block form.
    :param initial_delay: the first wait, in seconds or as a ``timedelta``.
    :param max_delay: the cap on any backoff wait. A server's Retry-After sets the
        wait instead; one longer than ``max_delay`` ends the retries at once (the
        error propagates with its ``retry_after``): never retry earlier than asked.
    :param multiplier: growth per wait (>= 1).
    :param jitter: ``"none"``, ``"full"``, ``"equal"`` or ``"decorrelated"``.
    :param deadline: the whole call, waits included, never runs past this many
        seconds; no wait is started that would end at or past it. ``None``: no deadline.
        The request's deadline (:func:`suture.deadline`) is respected either way:
        no wait is started that would end at or past it.
    :param on: what is worth retrying: a classifier ``(exc) -> bool``, an
        exception type or a tuple of them. Default :data:`suture.is_transient`.
        Whatever it says, :class:`suture.BreakerOpen` and :class:`suture.Overloaded`
        are never retried, nor is :class:`suture.DeadlineExceeded`.
    :param overload: what is *overload* (a full queue in our own process, such
        as a pool checkout timeout), never retried: retrying into a full queue
        makes it longer. Default :data:`suture.classify.is_overload`;
        ``overload=()`` leaves such errors to ``on``.
    :param on_retry: a hook called before each wait with the :class:`RetryScheduled` event.
    :param budget: a :class:`suture.RetryBudget` (or any :class:`suture.Budget`, such as
        ``suture.contrib.redis.RedisRetryBudget``) shared by policies; when empty,
        the error propagates.
    :param clock: where time comes from (tests pass ``FakeClock``).
    :param rand: randomness for jitter, a callable returning a float in [0, 1).
    :param name: the name in events; default: the wrapped function's qualified name.

    Durations are kept as float seconds and ``on`` as a classifier (the
    :class:`suture._config.Option` fields).
    """

    _tag = "retry"

    # The option list (the first six are shown by repr). An Option is a shared,
    # immutable descriptor, not a mutable default (hence the RUF009 waivers).
    attempts: Option[int, _AttemptCount] = Option(3, _attempt_count)
    initial_delay: Option[Seconds, float] = Option(1.0, check_seconds)
    max_delay: Option[Seconds, float] = Option(8.0, check_seconds)
    multiplier: float = 2.0
    jitter: Jitter = "full"
    deadline: Option[Seconds | None, float | None] = Option(None, _deadline)
    on: Option[ExceptionSpec, ExceptionClassifier] = Option(is_transient, _classifier)
    overload: Option[ExceptionSpec, ExceptionClassifier] = Option(is_overload, _classifier)
    on_retry: RetryHook | None = None
    budget: Budget | None = None
    clock: Clock = SYSTEM_CLOCK
    rand: Callable[[], float] = random.random
    name: str | None = None
    # Derived once.
    _backoff: Backoff = dataclasses.field(init=False, repr=False, compare=False)
    _attempts: int = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        given = normalise_options(self)
        set_ = object.__setattr__
        self.attempts._policy = self
        set_(self, "_attempts", int(self.attempts))
        first = self.initial_delay
        if self.max_delay < first:
            raise ValueError(
                f"max_delay={given['max_delay']!r}: must be >= initial_delay ({first!r} seconds)"
            )
        # Named as Retry names them (Backoff calls the first one ``initial``).
        backoff = Backoff(
            initial=first, max_delay=self.max_delay, multiplier=self.multiplier, jitter=self.jitter
        )
        set_(self, "multiplier", backoff.multiplier)
        set_(self, "_backoff", backoff)
        if self.on_retry is not None and not callable(self.on_retry):
            raise TypeError(f"on_retry={self.on_retry!r}: expected a callable or None")
        if not callable(self.rand):
            raise TypeError(f"rand={self.rand!r}: expected a callable returning a float in [0, 1)")
        check_name("name", self.name, optional=True)
        check_clock(self.clock)
        if self.budget is not None and not isinstance(self.budget, Budget):
            raise TypeError(
                f"budget={self.budget!r}: expected a suture.RetryBudget (or any object with "
                "name, deposit(), try_spend() and stats(): suture.Budget) or None"
            )

    def __repr__(self) -> str:
        shown = dataclasses.fields(self)[:6]
        return f"Retry({', '.join(f'{f.name}={getattr(self, f.name)!r}' for f in shown)})"

    def replace(self, **changes: Unpack[RetryOptions]) -> Retry:
        """A copy with some options changed."""
        return dataclasses.replace(self, **changes)

    # --- decorator ---------------------------------------------------------------

    def _decorate_sync(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return self._wrap_sync(fn, self._name_for(fn))

    def _decorate_async(
        self, fn: Callable[..., Coroutine[Any, Any, Any]]
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        return self._wrap_async(fn, self._name_for(fn))

    def _gated(self, fn: Callable[..., Any], gate: Gate) -> Callable[..., Any]:
        """``self(fn)`` asking ``gate(delay)`` before each wait (:class:`suture.Policy`
        gives its breaker's): a wait the gate says ends in a refusal is skipped."""
        name = self._name_for(fn)
        if inspect.iscoroutinefunction(fn):
            wrapped: Callable[..., Any] = self._wrap_async(fn, name, gate)
        else:
            wrapped = self._wrap_sync(fn, name, gate)
        return self._tagged(wrapped)

    def _name_for(self, fn: object) -> str:
        if self.name:
            return self.name
        qualname = getattr(fn, "__qualname__", None)
        return qualname if isinstance(qualname, str) else repr(fn)

    def _wrap_sync(self, fn: Callable[P, T], name: str, gate: Gate | None = None) -> Callable[P, T]:
        # A closure per case, chosen once here: each success path runs only what it needs.
        run = self._run_sync
        now = self.clock.now
        timed = self.deadline is not None
        if self.budget is not None:
            deposit = self.budget.deposit

            @functools.wraps(fn)
            def deposits(*args: P.args, **kwargs: P.kwargs) -> T:
                start = now() if timed else None
                try:
                    result = fn(*args, **kwargs)
                except Exception as e:
                    exc = e
                else:
                    deposit()
                    return result
                return run(fn, args, kwargs, exc, start, name, gate)

            return deposits
        if timed:  # the deadline counts from the start of the first attempt

            @functools.wraps(fn)
            def timed_wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                start = now()
                try:
                    return fn(*args, **kwargs)
                except Exception as e:
                    exc = e
                return run(fn, args, kwargs, exc, start, name, gate)

            return timed_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            # No clock on the way in: the elapsed time starts at the first failure.
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                exc = e
            return run(fn, args, kwargs, exc, None, name, gate)

        return wrapper

    def _wrap_async(
        self, fn: Callable[P, Coroutine[Any, Any, T]], name: str, gate: Gate | None = None
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        now = self.clock.now
        budget = self.budget
        run = self._run_async
        deadline = self.deadline

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            start = None if deadline is None else now()
            try:
                if deadline is None:
                    result = await fn(*args, **kwargs)
                else:
                    async with asyncio.timeout(deadline):
                        result = await fn(*args, **kwargs)
            except Exception as e:
                exc = e
            else:
                if budget is not None:
                    budget.deposit()
                return result
            return await run(fn, args, kwargs, exc, start, name, gate)

        return wrapper

    # --- the two loops -----------------------------------------------------------

    def _run_sync(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: Exception,
        start: float | None,
        name: str,
        gate: Gate | None,
    ) -> T:
        state = CallState(self, name, start, gate=gate)
        sleep = self.clock.sleep
        while True:
            delay = state.next_delay(exc)
            if delay is None:
                raise exc
            if delay > 0 and not _WAITS.skip:
                sleep(delay)
            try:
                result = fn(*args, **kwargs)
            except Exception as e:
                exc = e
                continue
            if self.budget is not None:
                self.budget.deposit()
            return result

    async def _run_async(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: Exception,
        start: float | None,
        name: str,
        gate: Gate | None,
    ) -> T:
        state = CallState(self, name, start, gate=gate)
        asleep = self.clock.asleep
        now = self.clock.now
        deadline = self.deadline
        while True:
            delay = state.next_delay(exc)
            if delay is None:
                raise exc
            if delay > 0 and not _WAITS.skip:
                await asleep(delay)
            try:
                if deadline is None:
                    result = await fn(*args, **kwargs)
                else:
                    remaining = max(0.0, deadline - (now() - state.start))
                    async with asyncio.timeout(remaining):
                        result = await fn(*args, **kwargs)
            except Exception as e:
                exc = e
                continue
            if self.budget is not None:
                self.budget.deposit()
            return result

    # --- other ways in -----------------------------------------------------------

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` under this policy (sync)."""
        return self._wrap_sync(fn, self._name_for(fn))(*args, **kwargs)

    async def acall(
        self,
        fn: Callable[P, Coroutine[Any, Any, T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Await ``fn(*args, **kwargs)`` under this policy."""
        wrapped = self._wrap_async(fn, self._name_for(fn))
        return await wrapped(*args, **kwargs)

    def block(self, *, name: str | None = None) -> AttemptManager:
        """The block form: ``for attempt in policy.block(): with attempt: ...``.

        The same as ``policy.attempts()``; works with ``async for`` too.
        """
        return AttemptManager(self, name or self.name or "block")


def _refuse_set(self: Retry, name: str, value: object) -> None:
    raise AttributeError(f"Retry is immutable; use policy.replace({name}=...)")


def _refuse_del(self: Retry, name: str) -> None:
    raise AttributeError("Retry is immutable")


# Over the dataclass's own frozen guard: the same error type, a message that names replace().
setattr(Retry, "__setattr__", _refuse_set)  # noqa: B010
setattr(Retry, "__delattr__", _refuse_del)  # noqa: B010


# --- the retry() decorator ---------------------------------------------------------


@overload
def retry(fn: Callable[P, Coroutine[Any, Any, T]], /) -> Callable[P, Coroutine[Any, Any, T]]: ...


@overload
def retry(fn: Callable[P, T], /) -> Callable[P, T]: ...


@overload
def retry(**options: Unpack[RetryOptions]) -> Retry: ...


def retry(fn: Callable[P, Any] | None = None, /, **options: Unpack[RetryOptions]) -> Any:
    """Retry a function on transient errors.

    ``@retry`` alone uses the defaults (3 attempts, 1 s initial delay, 8 s cap,
    full jitter); ``@retry(attempts=5, deadline=30)`` configures it. Returns
    a :class:`Retry` policy when called without a function.
    """
    policy = Retry(**options)
    if fn is None:
        return policy
    return policy(fn)
