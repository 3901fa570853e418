"""The founding spec's resilience design, kept to compare against (``Settings.naive``).

``suture chaos`` runs every scenario twice against the same service: once with
suture's policy (:func:`suture.demo.db.resilience`), once with this one, so a
report can show what the same faults do to the design the spec asked for:

* a retry of 3 attempts waiting 1 s then 2 s, without jitter (every client of
  an outage retries in step), that retries every transient error **and the
  breaker's own rejections** (the spec found "do not retry" by searching the
  message for a 4xx code), with no retry budget and no overall deadline;
* no per-attempt timeout: an attempt waits as long as the driver does;
* a breaker that opens after 5 consecutive failures, stays open 30 s, and
  then lets **every** caller through at once (an unbounded half-open);
* at the HTTP edge, no per-request deadline (a client's ``X-Request-Timeout``
  is not read) and no adaptive concurrency limit in front of the database
  work: :mod:`suture.demo.app` installs neither in this mode (and
  :mod:`suture.demo.serve` leaves uvicorn without the slow-client limits).

What stays suture's at the edge is how an error is answered: an open breaker
that escapes the retries is a 503 with ``Retry-After``, every error in the
same JSON envelope, and the pool's admission (its monitor's shedding) is
unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

from suture._decorator import Decorator
from suture.breaker import CircuitBreaker
from suture.classify import is_transient
from suture.clock import Clock
from suture.errors import BreakerOpen
from suture.retrying import Retry

__all__ = [
    "NAIVE_ATTEMPTS",
    "NAIVE_FAILURES",
    "NAIVE_FIRST_WAIT",
    "NAIVE_RESET_TIMEOUT",
    "NaivePolicy",
]

NAIVE_ATTEMPTS = 3
#: Seconds before the second attempt; the third waits twice as long.
NAIVE_FIRST_WAIT = 1.0
NAIVE_FAILURES = 5
NAIVE_RESET_TIMEOUT = 30.0
#: "Unbounded": more probes at once than any client of the demo sends.
_UNBOUNDED = 1_000_000


class _Rejected(Exception):
    """An open breaker's rejection, disguised so that the naive retry retries it."""

    def __init__(self, original: BreakerOpen) -> None:
        super().__init__(str(original))
        self.original = original


def _naive_retries(exc: BaseException) -> bool:
    return isinstance(exc, _Rejected) or is_transient(exc)


def naive_breaker(name: str, *, clock: Clock) -> CircuitBreaker:
    """5 consecutive failures open it for 30 s; then every caller is a probe."""
    return CircuitBreaker(
        name,
        failure_threshold=NAIVE_FAILURES,
        reset_timeout=NAIVE_RESET_TIMEOUT,
        half_open_max_calls=_UNBOUNDED,
        clock=clock,
    )


def naive_retry(name: str, *, clock: Clock) -> Retry:
    """3 attempts, 1 s then 2 s, no jitter, the breaker's rejections retried too."""
    return Retry(
        attempts=NAIVE_ATTEMPTS,
        initial_delay=NAIVE_FIRST_WAIT,
        max_delay=2 * NAIVE_FIRST_WAIT,
        multiplier=2.0,
        jitter="none",
        on=_naive_retries,
        clock=clock,
        name=name,
    )


class NaivePolicy(Decorator):
    """retry(breaker(fn)) as the spec composed them: a rejection is retried like a failure."""

    __slots__ = ("breaker", "retry")
    _tag = "naive_policy"

    def __init__(self, *, retry: Retry, breaker: CircuitBreaker) -> None:
        self.retry = retry
        self.breaker = breaker

    def _decorate_sync(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        guarded: Callable[..., Any] = self.breaker(fn)

        @functools.wraps(fn)
        def attempt(*args: Any, **kwargs: Any) -> Any:
            try:
                return guarded(*args, **kwargs)
            except BreakerOpen as exc:
                raise _Rejected(exc) from None

        retried: Callable[..., Any] = self.retry(attempt)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return retried(*args, **kwargs)
            except _Rejected as exc:  # the edge answers the breaker's own error (503)
                raise exc.original from None

        return call

    def _decorate_async(
        self, fn: Callable[..., Coroutine[Any, Any, Any]]
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        guarded: Callable[..., Coroutine[Any, Any, Any]] = self.breaker(fn)

        @functools.wraps(fn)
        async def attempt(*args: Any, **kwargs: Any) -> Any:
            try:
                return await guarded(*args, **kwargs)
            except BreakerOpen as exc:
                raise _Rejected(exc) from None

        retried: Callable[..., Coroutine[Any, Any, Any]] = self.retry(attempt)

        @functools.wraps(fn)
        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await retried(*args, **kwargs)
            except _Rejected as exc:
                raise exc.original from None

        return call
