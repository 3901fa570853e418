"""Per-attempt timeouts: ``suture.timeout(seconds)``.

* ``async def``: the attempt is cancelled when it runs too long and
  :class:`TimeoutError` is raised (``asyncio.timeout``, on the event loop's
  clock). :class:`TimeoutError` is transient: a retry tries again, a breaker
  counts a failure.
* ``def``: Python cannot stop a running thread. A sync call that runs past
  its timeout is allowed to finish; **when it returns**, its result is
  discarded and :class:`TimeoutError` is raised, so retry and breaker see a
  timeout failure. It does not make the caller wait less. To bound the wait
  itself, give the blocking call its own timeout (socket, HTTP client,
  database statement timeout).

Both respect the request's deadline (:func:`suture.deadline`): an attempt's
limit is the smaller of ``seconds`` and what remains of it, and an attempt is
not started once it is spent. When the deadline is what cut the attempt
short, the error is :class:`suture.DeadlineExceeded` (a ``TimeoutError``
that no retry retries and no breaker counts: the caller's time ran out, the
dependency did nothing wrong).

While an ``async def`` attempt runs, :func:`attempt_remaining` says how long it
has left, so that a queue of our own inside it (a pool checkout,
:mod:`suture.contrib.sqlalchemy_deadline`) gives up just before the attempt is
cut and says *overload* itself, instead of the attempt's timeout calling a full
queue a slow dependency (retried, and counted by the breaker).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import Any, Final, ParamSpec, TypeVar

from suture._config import Seconds, check_seconds
from suture._decorator import Decorator
from suture.clock import SYSTEM_CLOCK, Clock
from suture.deadline import get_current
from suture.errors import DeadlineExceeded

__all__ = ["Timeout", "attempt_remaining", "timeout"]

#: The running ``async def`` attempt's end: (the event loop's clock, the time it is cut).
_ATTEMPT: Final[ContextVar[tuple[Callable[[], float], float] | None]] = ContextVar(
    "suture.attempt", default=None
)


def attempt_remaining() -> float | None:
    """Seconds left to the innermost running ``async def`` attempt under a :class:`Timeout`.

    ``None`` outside one (or in a ``def`` attempt, which is never cut).
    """
    attempt = _ATTEMPT.get()
    if attempt is None:
        return None
    now, ends = attempt
    return ends - now()


P = ParamSpec("P")
T = TypeVar("T")


class Timeout(Decorator):
    """A per-attempt time limit; use it as a decorator (``def`` and ``async def``).

    >>> @timeout(2.5)
    ... async def fetch() -> bytes: ...
    """

    _tag = "timeout"
    __slots__ = ("clock", "seconds")

    seconds: float
    clock: Clock

    def __init__(self, seconds: Seconds, *, clock: Clock = SYSTEM_CLOCK) -> None:
        object.__setattr__(self, "seconds", check_seconds("seconds", seconds, positive=True))
        object.__setattr__(self, "clock", clock)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Timeout is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Timeout):
            return NotImplemented
        return (self.seconds, self.clock) == (other.seconds, other.clock)

    def __hash__(self) -> int:
        return hash((self.seconds, id(self.clock)))

    def __repr__(self) -> str:
        return f"Timeout({self.seconds!r})"

    def _decorate_async(
        self, fn: Callable[..., Coroutine[Any, Any, Any]]
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        limit = self.seconds
        name = getattr(fn, "__qualname__", repr(fn))

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            request = get_current()
            bound = limit
            if request is not None:
                left = request.remaining()
                if left <= 0:
                    raise DeadlineExceeded(f"before {name}", request.budget)
                bound = min(limit, left)
            loop = asyncio.get_running_loop()
            ends = loop.time() + bound
            scope = asyncio.timeout_at(ends)  # the same end as attempt_remaining() reads
            token = _ATTEMPT.set((loop.time, ends))
            try:
                async with scope:
                    return await fn(*args, **kwargs)
            except TimeoutError as exc:
                if not scope.expired():  # a TimeoutError the call raised itself
                    raise
                if bound < limit:
                    assert request is not None
                    raise DeadlineExceeded(
                        f"{name} cancelled after {bound:.3f}s", request.budget
                    ) from exc
                exc.add_note(f"suture.timeout: {name} was cancelled after {limit:g}s")
                raise
            finally:
                _ATTEMPT.reset(token)

        return async_wrapper

    def _decorate_sync(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        limit = self.seconds
        name = getattr(fn, "__qualname__", repr(fn))
        now = self.clock.now

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            request = get_current()
            start = now()
            bound = limit
            if request is not None:
                left = request.at - request.clock.now()
                if left <= 0:
                    raise DeadlineExceeded(f"before {name}", request.budget)
                if left < limit:
                    bound = left
            result = fn(*args, **kwargs)
            elapsed = now() - start
            if elapsed > bound and bound < limit:
                assert request is not None
                raise DeadlineExceeded(f"{name} took {elapsed:.3f}s", request.budget)
            if elapsed > limit:
                raise TimeoutError(
                    f"{name} took {elapsed:.3f}s, past its {limit:g}s timeout "
                    "(a sync call cannot be interrupted: it ran to the end and its "
                    "result was discarded)"
                )
            return result

        return wrapper


def timeout(seconds: Seconds, *, clock: Clock = SYSTEM_CLOCK) -> Timeout:
    """A per-attempt timeout of ``seconds`` (> 0; a number or a ``timedelta``).

    ``async def``: cancelled at the limit, raising :class:`TimeoutError`.
    ``def``: cannot be interrupted; a call that returns after the limit raises
    :class:`TimeoutError` instead of returning (recorded as a timeout failure).
    """
    return Timeout(seconds, clock=clock)
