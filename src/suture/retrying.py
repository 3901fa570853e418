"""Retry with exponential backoff: a frozen policy that is also a decorator.

The decision logic lives once, in :class:`_CallState` (no I/O: it only
answers "wait this long" or "give up"); a thin sync loop and a thin async
loop drive it, and so does the block form (``for attempt in
policy.attempts(): with attempt: ...``).

The success path does the least it can: one clock read and a ``try``.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, ParamSpec, TypedDict, TypeVar, Unpack, overload

from suture._config import (
    Seconds,
    check_clock,
    check_int,
    check_name,
    check_seconds,
    exception_classifier,
)
from suture._decorator import Decorator
from suture.backoff import Backoff, Jitter
from suture.budget import Budget
from suture.classify import ExceptionClassifier, is_transient, retry_after
from suture.clock import _WAITS, SYSTEM_CLOCK, Clock
from suture.errors import BreakerOpen, Overloaded
from suture.events import (
    RetryBudgetExhausted,
    RetryGaveUp,
    RetryScheduled,
    emit,
)

__all__ = ["Attempt", "AttemptManager", "Retry", "RetryHook", "RetryOptions", "retry"]

P = ParamSpec("P")
T = TypeVar("T")

RetryHook = Callable[[RetryScheduled], None]
"""Called before each wait with the same frozen event the listeners receive."""

_REASONS = {
    "attempts": "all attempts used",
    "deadline": "the next wait would end at or past the deadline",
    "budget": "the retry budget is empty",
}


class RetryOptions(TypedDict, total=False):
    """The keyword arguments of :class:`Retry` and :func:`retry`."""

    attempts: int
    initial_delay: Seconds
    max_delay: Seconds
    multiplier: float
    jitter: Jitter
    deadline: Seconds | None
    on: ExceptionClassifier | type[BaseException] | tuple[type[BaseException], ...]
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

    def __new__(cls, value: int, policy: Retry) -> _AttemptCount:
        self = super().__new__(cls, value)
        self._policy = policy
        return self

    def __call__(self, *, name: str | None = None) -> AttemptManager:
        return self._policy.block(name=name)

    def __repr__(self) -> str:
        return int.__repr__(self)


_FIELDS = (
    "attempts",
    "initial_delay",
    "max_delay",
    "multiplier",
    "jitter",
    "deadline",
    "on",
    "on_retry",
    "budget",
    "clock",
    "rand",
    "name",
)


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
    :param max_delay: the cap on any wait, Retry-After included.
    :param multiplier: growth per wait (>= 1).
    :param jitter: ``"none"``, ``"full"``, ``"equal"`` or ``"decorrelated"``.
    :param deadline: the whole call, waits included, never runs past this many
        seconds; no wait is started that would end at or past it. ``None``: no deadline.
    :param on: what is worth retrying: a classifier ``(exc) -> bool``, an
        exception type or a tuple of them. Default :data:`suture.is_transient`.
    :param on_retry: a hook called before each wait with the :class:`RetryScheduled` event.
    :param budget: a :class:`suture.RetryBudget` (or any :class:`suture.Budget`, such as
        ``suture.contrib.redis.RedisRetryBudget``) shared by policies; when empty,
        the error propagates.
    :param clock: where time comes from (tests pass ``FakeClock``).
    :param rand: randomness for jitter, a callable returning a float in [0, 1).
    :param name: the name in events; default: the wrapped function's qualified name.
    """

    _tag = "retry"
    __slots__ = (
        "_attempts",
        "_backoff",
        "budget",
        "clock",
        "deadline",
        "initial_delay",
        "jitter",
        "max_delay",
        "multiplier",
        "name",
        "on",
        "on_retry",
        "rand",
    )

    initial_delay: float
    max_delay: float
    multiplier: float
    jitter: Jitter
    deadline: float | None
    on: ExceptionClassifier
    on_retry: RetryHook | None
    budget: Budget | None
    clock: Clock
    rand: Callable[[], float]
    name: str | None
    _attempts: int
    _backoff: Backoff

    @property
    def attempts(self) -> _AttemptCount:
        """The number of tries; call it for the block form."""
        return _AttemptCount(self._attempts, self)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Retry is immutable; use policy.replace({name}=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Retry is immutable")

    def _key(self) -> tuple[object, ...]:
        return tuple(getattr(self, f) for f in _FIELDS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Retry):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        parts = ", ".join(f"{f}={getattr(self, f)!r}" for f in _FIELDS[:6])
        return f"Retry({parts})"

    def __init__(
        self,
        *,
        attempts: int = 3,
        initial_delay: Seconds = 1.0,
        max_delay: Seconds = 8.0,
        multiplier: float = 2.0,
        jitter: Jitter = "full",
        deadline: Seconds | None = None,
        on: ExceptionClassifier
        | type[BaseException]
        | tuple[type[BaseException], ...] = is_transient,
        on_retry: RetryHook | None = None,
        budget: Budget | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rand: Callable[[], float] = random.random,
        name: str | None = None,
    ) -> None:
        check_int("attempts", attempts, minimum=1)
        # Named as Retry names them (Backoff calls the first one ``initial``).
        first = check_seconds("initial_delay", initial_delay)
        if check_seconds("max_delay", max_delay) < first:
            raise ValueError(
                f"max_delay={max_delay!r}: must be >= initial_delay ({first!r} seconds)"
            )
        backoff = Backoff(
            initial=initial_delay, max_delay=max_delay, multiplier=multiplier, jitter=jitter
        )
        dl = None if deadline is None else check_seconds("deadline", deadline, positive=True)
        if on_retry is not None and not callable(on_retry):
            raise TypeError(f"on_retry={on_retry!r}: expected a callable or None")
        if not callable(rand):
            raise TypeError(f"rand={rand!r}: expected a callable returning a float in [0, 1)")
        check_name("name", name, optional=True)
        check_clock(clock)
        if budget is not None and not isinstance(budget, Budget):
            raise TypeError(
                f"budget={budget!r}: expected a suture.RetryBudget (or any object with "
                "name, deposit(), try_spend() and stats(): suture.Budget) or None"
            )
        setter = object.__setattr__
        setter(self, "_attempts", attempts)
        setter(self, "initial_delay", backoff.initial)
        setter(self, "max_delay", backoff.max_delay)
        setter(self, "multiplier", backoff.multiplier)
        setter(self, "jitter", jitter)
        setter(self, "deadline", dl)
        setter(self, "on", exception_classifier(on))
        setter(self, "on_retry", on_retry)
        setter(self, "budget", budget)
        setter(self, "clock", clock)
        setter(self, "rand", rand)
        setter(self, "name", name)
        setter(self, "_backoff", backoff)

    def replace(self, **changes: Unpack[RetryOptions]) -> Retry:
        """A copy with some options changed."""
        current: dict[str, Any] = {
            "attempts": self._attempts,
            "initial_delay": self.initial_delay,
            "max_delay": self.max_delay,
            "multiplier": self.multiplier,
            "jitter": self.jitter,
            "deadline": self.deadline,
            "on": self.on,
            "on_retry": self.on_retry,
            "budget": self.budget,
            "clock": self.clock,
            "rand": self.rand,
            "name": self.name,
        }
        current.update(changes)
        return Retry(**current)

    # --- decorator ---------------------------------------------------------------

    def _decorate_sync(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return self._wrap_sync(fn, self._name_for(fn))

    def _decorate_async(
        self, fn: Callable[..., Coroutine[Any, Any, Any]]
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        return self._wrap_async(fn, self._name_for(fn))

    def _name_for(self, fn: object) -> str:
        if self.name:
            return self.name
        qualname = getattr(fn, "__qualname__", None)
        return qualname if isinstance(qualname, str) else repr(fn)

    def _wrap_sync(self, fn: Callable[P, T], name: str) -> Callable[P, T]:
        now = self.clock.now
        budget = self.budget
        run = self._run_sync

        if budget is None:

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                start = now()
                try:
                    return fn(*args, **kwargs)
                except Exception as e:
                    exc = e
                return run(fn, args, kwargs, exc, start, name)

        else:
            deposit = budget.deposit

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                start = now()
                try:
                    result = fn(*args, **kwargs)
                except Exception as e:
                    exc = e
                else:
                    deposit()
                    return result
                return run(fn, args, kwargs, exc, start, name)

        return wrapper

    def _wrap_async(
        self, fn: Callable[P, Coroutine[Any, Any, T]], name: str
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        now = self.clock.now
        budget = self.budget
        run = self._run_async
        deadline = self.deadline

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            start = now()
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
            return await run(fn, args, kwargs, exc, start, name)

        return wrapper

    # --- the two loops -----------------------------------------------------------

    def _run_sync(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: Exception,
        start: float,
        name: str,
    ) -> T:
        state = _CallState(self, name, start)
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
        start: float,
        name: str,
    ) -> T:
        state = _CallState(self, name, start)
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
                    remaining = max(0.0, deadline - (now() - start))
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


# Waiting is the breaker's and the shedder's job: whatever ``on`` says, a retry
# never hammers an open breaker or a service that just shed the request.
_NEVER_RETRIED = (BreakerOpen, Overloaded)


class _CallState:
    """The decisions of one retried call. No I/O: only arithmetic, events and hooks."""

    __slots__ = ("attempt", "name", "policy", "previous", "start")

    def __init__(self, policy: Retry, name: str, start: float, attempt: int = 1) -> None:
        self.policy = policy
        self.name = name
        self.start = start
        self.attempt = attempt  # the attempt that just failed
        self.previous = 0.0

    def next_delay(self, exc: BaseException) -> float | None:
        """The wait before the next attempt, or ``None``: give up and raise ``exc``."""
        policy = self.policy
        if not isinstance(exc, Exception):
            return None  # cancellation, KeyboardInterrupt, SystemExit: left untouched
        if isinstance(exc, _NEVER_RETRIED) or not policy.on(exc):
            if self.attempt > 1:
                self._note(exc, "the error is not retryable")
            return None
        clock = policy.clock
        elapsed = clock.now() - self.start
        if self.attempt >= policy._attempts:
            return self._give_up(exc, elapsed, "attempts")
        delay = policy._backoff.delay(self.attempt, self.previous, policy.rand)
        hinted = retry_after(exc, now=clock.wall())
        if hinted is not None:
            delay = min(hinted, policy.max_delay)
        # A wait that ends at the deadline would start an attempt with no time left
        # (in async code, cancelled at once, its TimeoutError replacing the real error).
        if policy.deadline is not None and elapsed + delay >= policy.deadline:
            return self._give_up(exc, elapsed, "deadline")
        budget = policy.budget
        if budget is not None and not budget.try_spend():
            emit(RetryBudgetExhausted(name=self.name, budget=budget.name, error=exc))
            return self._give_up(exc, elapsed, "budget")
        self.previous = delay
        event = RetryScheduled(
            name=self.name,
            attempt=self.attempt,
            attempts=policy._attempts,
            delay=delay,
            error=exc,
            elapsed=elapsed,
        )
        emit(event)
        if policy.on_retry is not None:
            policy.on_retry(event)
        self.attempt += 1
        return delay

    def _note(self, exc: BaseException, reason: str) -> None:
        elapsed = self.policy.clock.now() - self.start
        exc.add_note(
            f"suture.retry: gave up on {self.name} after {self.attempt} attempt(s) "
            f"over {elapsed:.3f}s ({reason})"
        )

    def _give_up(self, exc: BaseException, elapsed: float, reason: str) -> float | None:
        exc.add_note(
            f"suture.retry: gave up on {self.name} after {self.attempt} attempt(s) "
            f"over {elapsed:.3f}s ({_REASONS[reason]})"
        )
        emit(
            RetryGaveUp(
                name=self.name, attempts=self.attempt, elapsed=elapsed, reason=reason, error=exc
            )
        )
        return None


class Attempt:
    """One try in the block form: use it as ``with attempt:``."""

    __slots__ = ("_manager", "number")

    def __init__(self, manager: AttemptManager, number: int) -> None:
        self._manager = manager
        self.number = number  #: 1-based

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return self._manager._exit(exc)

    def __repr__(self) -> str:
        return f"<Attempt {self.number}>"


class AttemptManager:
    """Iterates attempts for code that is not a function.

    >>> for attempt in policy.attempts():    # doctest: +SKIP
    ...     with attempt:
    ...         do_something()

    ``async for attempt in policy.attempts():`` works the same in async code.
    A transient error inside ``with attempt`` is swallowed and the loop goes
    on after the wait; when the policy gives up, the error propagates out of
    the ``with`` block unchanged.
    """

    __slots__ = ("_delay", "_done", "_number", "_policy", "_start", "_state", "name")

    def __init__(self, policy: Retry, name: str) -> None:
        self._policy = policy
        self.name = name
        self._start = policy.clock.now()
        self._number = 0
        self._delay: float | None = None
        self._done = False
        self._state: _CallState | None = None

    def _exit(self, exc: BaseException | None) -> bool:
        if exc is None:
            self._done = True
            if self._policy.budget is not None:
                self._policy.budget.deposit()
            return False
        if self._state is None:
            self._state = _CallState(self._policy, self.name, self._start, self._number)
        delay = self._state.next_delay(exc)
        if delay is None:
            self._done = True
            return False
        self._delay = delay
        return True

    def _advance(self) -> bool:
        """True when another attempt should run (and the wait, if any, is owed)."""
        if self._done:
            return False
        if self._number and self._delay is None:
            # The previous attempt was not entered, or finished without an error.
            self._done = True
            return False
        return True

    def __iter__(self) -> Iterator[Attempt]:
        return self

    def __next__(self) -> Attempt:
        if not self._advance():
            raise StopIteration
        delay, self._delay = self._delay, None
        if delay and not _WAITS.skip:
            self._policy.clock.sleep(delay)
        self._number += 1
        return Attempt(self, self._number)

    def __aiter__(self) -> AsyncIterator[Attempt]:
        return self

    async def __anext__(self) -> Attempt:
        if not self._advance():
            raise StopAsyncIteration
        delay, self._delay = self._delay, None
        if delay and not _WAITS.skip:
            await self._policy.clock.asleep(delay)
        self._number += 1
        return Attempt(self, self._number)


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
