"""The request's deadline: one per request, carried by :mod:`contextvars`.

``with suture.deadline(3.0):`` (or ``async with``) sets the time by which the
work inside must be done; :func:`remaining` reads what is left of it. The
value lives in a :class:`contextvars.ContextVar`, so it follows the work across
``await``, into tasks (which copy the context when created) and into threads
started with :func:`contextvars.copy_context` (``asyncio.to_thread`` and
Starlette's thread pool do this). A nested deadline can only shorten the one
around it, never extend it.

Every strategy that waits or starts work asks it: :class:`suture.Retry` never
starts a wait that would end past it, :func:`suture.timeout` bounds each
attempt by it (and refuses to start one when it is spent), a breaker admits no
half-open probe once it is spent, the SQLAlchemy and httpx integrations bound
their pool checkout, statement and request timeouts by it. A spent deadline is
:class:`suture.DeadlineExceeded` (a :class:`TimeoutError`, not transient, never
counted against a dependency); the Starlette edge answers it ``503
deadline_exceeded``.

Reading the deadline costs one ``ContextVar.get`` (about 30 ns) and, when one
is set, one clock read.
"""

from __future__ import annotations

import math
from contextvars import ContextVar, Token
from datetime import timedelta
from types import TracebackType
from typing import Final

from suture.clock import SYSTEM_CLOCK, Clock
from suture.errors import DeadlineExceeded

__all__ = ["Deadline", "DeadlineExceeded", "current", "deadline", "limit", "remaining"]


class Deadline:
    """A point in time (on ``clock``'s monotonic scale) by which the work must be done."""

    __slots__ = ("at", "budget", "clock")

    def __init__(self, at: float, budget: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.at = at  #: ``clock.now()`` reading at which the time is up
        self.budget = budget  #: the seconds it was given
        self.clock = clock

    def remaining(self) -> float:
        """Seconds left; zero or less once spent."""
        return self.at - self.clock.now()

    def expired(self) -> bool:
        return self.clock.now() >= self.at

    def __repr__(self) -> str:
        return f"Deadline(budget={self.budget:g}, remaining={self.remaining():.3f})"


_CURRENT: Final[ContextVar[Deadline | None]] = ContextVar("suture.deadline", default=None)
get_current = _CURRENT.get  # for the hot paths of other rooms: one C call


def current() -> Deadline | None:
    """The deadline in force here, or ``None`` when none was set."""
    return _CURRENT.get()


def remaining() -> float | None:
    """Seconds left before the current deadline (zero or less once spent); ``None``: no deadline."""
    d = _CURRENT.get()
    return None if d is None else d.at - d.clock.now()


def limit(seconds: float | None, *, where: str) -> float | None:
    """``seconds`` lowered to what remains of the deadline; ``None`` when neither bounds it.

    Raises :class:`DeadlineExceeded` naming ``where`` when the deadline is spent:
    a step that cannot finish in time is not started.
    """
    d = _CURRENT.get()
    if d is None:
        return seconds
    left = d.at - d.clock.now()
    if left <= 0:
        raise DeadlineExceeded(where, d.budget)
    return left if seconds is None or left < seconds else seconds


def _check(seconds: object) -> float:
    if isinstance(seconds, timedelta):
        value = seconds.total_seconds()
    elif isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(
            f"seconds={seconds!r}: expected a number of seconds or a timedelta, "
            f"got {type(seconds).__name__}"
        )
    else:
        value = float(seconds)
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"seconds={seconds!r}: a deadline must be a finite number of seconds")
    if value <= 0:
        raise ValueError(f"seconds={seconds!r}: a deadline must be greater than 0 seconds")
    return value


class deadline:  # lower case: used as a function, ``with suture.deadline(3):``
    """A context (``with`` and ``async with``) in which the work must be done within ``seconds``.

    :param seconds: > 0 and finite, a number or a ``timedelta``; anything else
        is a ``ValueError`` or ``TypeError`` naming ``seconds``.
    :param clock: where time comes from (tests pass ``FakeClock``).

    Entering returns the :class:`Deadline` in force: the new one, or the one
    around it when that ends sooner (a nested deadline never extends).
    A scope object is entered once at a time.
    """

    __slots__ = ("_token", "clock", "seconds")

    def __init__(self, seconds: float | timedelta, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.seconds = _check(seconds)
        self.clock = clock
        self._token: Token[Deadline | None] | None = None

    def __enter__(self) -> Deadline:
        if self._token is not None:
            raise RuntimeError("this suture.deadline(...) is already entered; make a new one")
        outer = _CURRENT.get()
        mine = Deadline(self.clock.now() + self.seconds, self.seconds, self.clock)
        if outer is not None and outer.remaining() <= self.seconds:
            mine = outer
        self._token = _CURRENT.set(mine)
        return mine

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, self._token = self._token, None
        if token is not None:
            _CURRENT.reset(token)

    async def __aenter__(self) -> Deadline:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        return f"deadline({self.seconds:g})"
