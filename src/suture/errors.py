"""The errors suture raises. Every one derives from :class:`SutureError`.

Callers branch on these types and their attributes, never on message text.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BreakerOpen",
    "DeadlineExceeded",
    "InvalidTransition",
    "Overloaded",
    "ResponseError",
    "SutureError",
]


class SutureError(Exception):
    """The root of every error suture raises."""

    #: Whether a retry policy may try again after this error (see ``suture.classify``).
    transient: bool = False


class BreakerOpen(SutureError):
    """A circuit breaker refused the call without running it.

    ``retry_after`` is the number of seconds until the breaker admits a probe.
    Never retried by a retry policy: waiting is the breaker's job.
    """

    transient = False
    # Slots: no per-instance dict to build on every rejected call.
    __slots__ = ("name", "retry_after")

    def __init__(self, name: str, retry_after: float) -> None:
        # ``args`` is ``(name, retry_after)``; the message is formatted only when
        # read, because an open breaker raises this on every rejected call.
        self.name = name
        self.retry_after = max(0.0, float(retry_after))

    @classmethod
    def rejecting(cls, name: str, retry_after: float) -> BreakerOpen:
        """The error for a rejection, built for the rate of the calls.

        Equal to ``BreakerOpen(name, retry_after)`` for a float ``retry_after``
        >= 0, at about half the cost: no Python ``__init__`` runs (an open
        breaker builds one on every call it refuses).
        """
        error = _new_breaker_open(cls, name, retry_after)
        error.name = name
        error.retry_after = retry_after
        return error

    def __str__(self) -> str:
        return f"circuit breaker {self.name!r} is open; retry after {self.retry_after:.1f}s"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.retry_after))


_new_breaker_open = BreakerOpen.__new__


class Overloaded(SutureError):
    """Admission control shed the request (pool pressure or concurrency limit).

    ``level`` is the pressure level (or a short reason) that caused the shed,
    ``retry_after`` a hint in seconds for the client.
    """

    transient = False
    #: Local resource exhaustion, not an error of a dependency (``suture.classify.is_overload``).
    overload = True

    def __init__(self, level: object, retry_after: float, *, source: str = "pool") -> None:
        self.level = level
        self.retry_after = max(0.0, float(retry_after))
        self.source = source
        lvl = getattr(level, "name", level)
        super().__init__(f"overloaded ({source}: {lvl}); retry after {self.retry_after:.1f}s")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_overloaded, (self.level, self.retry_after, self.source))


def _rebuild_overloaded(level: object, retry_after: float, source: str) -> Overloaded:
    return Overloaded(level, retry_after, source=source)


class DeadlineExceeded(SutureError, TimeoutError):
    """The request's deadline (:func:`suture.deadline`) is spent, or too close to start this step.

    A :class:`TimeoutError` (code that catches timeouts catches it), but neither
    transient nor a failure of a dependency: the caller's time ran out. A retry
    never retries it, a breaker counts it neither way, the HTTP edge answers it
    as ``503 deadline_exceeded`` with ``Retry-After``. ``budget`` is the
    deadline's length in seconds, ``where`` the step that found it spent.
    """

    transient = False
    overload = False

    def __init__(self, where: str, budget: float | None = None) -> None:
        self.where = where
        self.budget = budget
        within = "" if budget is None else f" of {budget:g}s"
        super().__init__(f"the request's deadline{within} is spent ({where})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.where, self.budget))


class InvalidTransition(SutureError):
    """A status change that the transition table does not allow.

    ``source`` is the state the record was in (``None`` when unknown, for
    example a missing row), ``target`` the state asked for, ``context`` what
    the caller passed along (an id, an actor).
    """

    transient = False

    def __init__(
        self,
        source: object,
        target: object,
        context: object = None,
        *,
        reason: str | None = None,
    ) -> None:
        self.source = source
        self.target = target
        self.context = context
        self.reason = reason
        src = getattr(source, "value", source)
        tgt = getattr(target, "value", target)
        msg = reason or f"transition {src!s} -> {tgt!s} is not allowed"
        if context is not None:
            msg = f"{msg} ({context})"
        super().__init__(msg)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_invalid, (self.source, self.target, self.context, self.reason))


def _rebuild_invalid(
    source: object, target: object, context: object, reason: str | None
) -> InvalidTransition:
    return InvalidTransition(source, target, context, reason=reason)


class ResponseError(SutureError):
    """An HTTP response that was not a success, as a typed error.

    Raised by ``Outcome.raise_for_error()``. ``status`` and ``retry_after``
    let retry and breaker classify it like any HTTP error; ``outcome`` is the
    :class:`suture.Outcome` it came from (or ``None``). It is typed ``Any``
    because this room sits below ``suture.responses`` and imports nothing of it.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        retry_after: float | None = None,
        transient: bool | None = None,
        outcome: Any = None,
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        self.outcome = outcome
        if transient is None:
            from suture.classify import is_transient_status

            transient = status is not None and is_transient_status(status)
        self.transient = transient
        super().__init__(message)
