"""Composition: fallback, rate limit, bulkhead, retry, breaker and timeout as one
policy, in a fixed order.

Outer to inner, whatever order the parts are given in::

    fallback( rate_limit( bulkhead( retry( breaker( timeout( call ) ) ) ) ) )

* the rate limit and the bulkhead admit the *call*, once: retries do not
  take more tokens or more slots (a slot is held across the attempts), and
  a refusal (:class:`suture.Overloaded`) is never retried; the token is taken
  before the slot, so a call waiting for a token holds no slot;
* each attempt has its own timeout, and a timed-out attempt is a failure the
  breaker counts;
* the breaker sees every attempt, so a retry cannot hammer an open
  dependency: a rejection (:class:`suture.BreakerOpen`) stops the retry at
  once, even when the retry's ``on=`` would accept it; and the retry asks the
  breaker before each wait: when the failure opened it (or it is open) and it
  stays open past the wait, the wait is skipped and the next attempt made at
  once, so the breaker refuses it now instead of after the wait (a breaker
  half-open by the end of the wait still gets the attempt);
* the fallback sees only what is left when everything else gave up, a
  refusal by the rate limit or the bulkhead included (a
  :class:`suture.LastGood` then answers with the last good result).

``docs/limits.md`` compares this order with Microsoft.Extensions.Http.Resilience's
standard pipeline.

>>> policy = Policy(retry=Retry(attempts=3), breaker=CircuitBreaker("db"), timeout=2.0)
>>> @policy
... async def load(key: str) -> bytes: ...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from suture._config import ExceptionSpec, Seconds, check_seconds, exception_classifier
from suture._decorator import Decorator
from suture.breaker import CircuitBreaker
from suture.classify import ExceptionClassifier
from suture.clock import SYSTEM_CLOCK, Clock
from suture.lastgood import LastGood, LastGoodStore, default_on
from suture.limits.bulkhead import Bulkhead
from suture.limits.rate import RateLimiter
from suture.retrying import Retry
from suture.timeouts import Timeout

__all__ = ["Fallback", "Policy", "compose"]

P = ParamSpec("P")
T = TypeVar("T")

#: The parts of a :class:`Policy`, outermost first.
_ORDER = ("fallback", "rate_limit", "bulkhead", "retry", "breaker", "timeout")


class Fallback:
    """The last resort: ``handler(exc)`` gives the result when the call failed.

    ``on`` picks the errors it handles (a classifier or exception type(s);
    default: every :class:`Exception`, never cancellation). ``handler`` may be
    ``async`` for ``async def`` functions.
    """

    __slots__ = ("handler", "on")

    def __init__(
        self,
        handler: Callable[[Exception], Any],
        *,
        on: ExceptionClassifier | type[Exception] | tuple[type[Exception], ...] = Exception,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler={handler!r}: expected a callable (exc) -> result")
        self.on: ExceptionClassifier = exception_classifier(on)
        self.handler = handler

    def __repr__(self) -> str:
        return f"Fallback({self.handler!r})"

    @staticmethod
    def last_good(
        *,
        ttl: Seconds = 0.0,
        stale_for: Seconds = 300.0,
        key: Callable[..., str] | None = None,
        on: ExceptionSpec = default_on,
        max_entries: int = 1024,
        store: LastGoodStore | None = None,
        name: str = "last_good",
        clock: Clock = SYSTEM_CLOCK,
    ) -> LastGood:
        """The last good result per key, served marked stale when the call fails.

        A :class:`suture.LastGood` (``ttl`` as HTTP's max-age, ``stale_for`` as
        stale-if-error); give it to :class:`Policy` as its ``fallback``.
        """
        return LastGood(
            ttl=ttl,
            stale_for=stale_for,
            key=key,
            on=on,
            max_entries=max_entries,
            store=store,
            name=name,
            clock=clock,
        )

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        handler, on = self.handler, self.on
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await fn(*args, **kwargs)
                except Exception as exc:
                    if not on(exc):
                        raise
                    result = handler(exc)
                    if inspect.isawaitable(result):
                        result = await result
                    return result

            return async_wrapper

        if inspect.iscoroutinefunction(handler):
            raise TypeError(
                f"fallback {handler!r} is async but {fn!r} is not: a sync function needs "
                "a sync fallback"
            )

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if not on(exc):
                    raise
                return handler(exc)

        return wrapper


class Policy(Decorator):
    """Fallback, rate limit, bulkhead, retry, breaker and timeout, outermost to innermost.

    Every part is optional. ``timeout`` takes seconds or a :class:`suture.Timeout`;
    ``fallback`` a callable ``(exc) -> result``, a :class:`Fallback` or a
    :class:`suture.LastGood`; ``rate_limit`` a :class:`suture.RateLimiter`;
    ``bulkhead`` a :class:`suture.Bulkhead`.
    Use it as a decorator (``def`` and ``async def``), or ``call`` / ``acall``.
    """

    _tag = "policy"
    __slots__ = ("breaker", "bulkhead", "fallback", "rate_limit", "retry", "timeout")

    def __init__(
        self,
        *,
        retry: Retry | None = None,
        breaker: CircuitBreaker | None = None,
        timeout: Timeout | Seconds | None = None,
        fallback: Fallback | LastGood | Callable[[Exception], Any] | None = None,
        rate_limit: RateLimiter | None = None,
        bulkhead: Bulkhead | None = None,
    ) -> None:
        if rate_limit is not None and not isinstance(rate_limit, RateLimiter):
            raise TypeError(f"rate_limit={rate_limit!r}: expected a suture.RateLimiter or None")
        if bulkhead is not None and not isinstance(bulkhead, Bulkhead):
            raise TypeError(f"bulkhead={bulkhead!r}: expected a suture.Bulkhead or None")
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry={retry!r}: expected a suture.Retry or None")
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker={breaker!r}: expected a suture.CircuitBreaker or None")
        if timeout is not None and not isinstance(timeout, Timeout):
            timeout = Timeout(check_seconds("timeout", timeout, positive=True))
        if fallback is not None and not isinstance(fallback, (Fallback, LastGood)):
            fallback = Fallback(fallback)
        # The retry's own rule (never retry BreakerOpen or Overloaded) keeps it off an
        # open breaker, whatever its ``on`` says; the breaker's gate (in _decorate_sync)
        # spares it the wait that would end in a rejection.
        self.retry = retry
        self.breaker = breaker
        self.timeout: Timeout | None = timeout
        self.fallback: Fallback | LastGood | None = fallback
        self.rate_limit = rate_limit
        self.bulkhead = bulkhead

    def __repr__(self) -> str:
        parts = [
            f"{name}={value!r}" for name in _ORDER if (value := getattr(self, name)) is not None
        ]
        return f"Policy({', '.join(parts)})"

    def _decorate_async(
        self, fn: Callable[..., Coroutine[Any, Any, Any]]
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        return self._decorate_sync(fn)

    def _decorate_sync(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """fallback(rate_limit(bulkhead(retry(breaker(timeout(fn)))))): each part picks its
        own sync or async wrapper."""
        inner: Callable[..., Any] = fn
        if self.timeout is not None:
            inner = self.timeout(inner)
        if self.breaker is not None:
            inner = self.breaker(inner)
        if self.retry is not None and self.breaker is not None:
            inner = self.retry._gated(inner, self.breaker._rejects_within)
        elif self.retry is not None:
            inner = self.retry(inner)
        if self.bulkhead is not None:
            inner = self.bulkhead(inner)
        if self.rate_limit is not None:
            inner = self.rate_limit(inner)
        if self.fallback is not None:
            inner = self.fallback.wrap(inner)
        return inner

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` under the policy (wraps on each call: prefer decorating)."""
        return self(fn)(*args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` under the policy."""
        wrapped: Callable[..., Awaitable[T]] = self(fn)
        return await wrapped(*args, **kwargs)


def compose(
    *parts: Retry | CircuitBreaker | Timeout | Fallback | LastGood | RateLimiter | Bulkhead,
) -> Policy:
    """A :class:`Policy` from parts in any order (at most one of each kind).

    >>> compose(Timeout(2), CircuitBreaker("db"), Retry(attempts=3))  # doctest: +ELLIPSIS
    Policy(retry=..., breaker=..., timeout=Timeout(2.0))
    """
    found: dict[str, Any] = {}
    kinds = (
        ("retry", Retry),
        ("breaker", CircuitBreaker),
        ("timeout", Timeout),
        ("fallback", Fallback),
        ("fallback", LastGood),
        ("rate_limit", RateLimiter),
        ("bulkhead", Bulkhead),
    )
    for part in parts:
        for key, kind in kinds:
            if isinstance(part, kind):
                if key in found:
                    raise ValueError(f"compose: two {key} parts given ({found[key]!r}, {part!r})")
                found[key] = part
                break
        else:
            raise TypeError(
                f"compose: {part!r} is not a Retry, CircuitBreaker, Timeout, Fallback, "
                "LastGood, RateLimiter or Bulkhead"
            )
    return Policy(**found)
