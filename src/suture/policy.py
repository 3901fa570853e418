"""Composition: fallback, retry, breaker and timeout as one policy, in a fixed order.

Outer to inner, whatever order the parts are given in::

    fallback( retry( breaker( timeout( call ) ) ) )

* each attempt has its own timeout, and a timed-out attempt is a failure the
  breaker counts;
* the breaker sees every attempt, so a retry cannot hammer an open
  dependency: a rejection (:class:`suture.BreakerOpen`) stops the retry at
  once, even when the retry's ``on=`` would accept it;
* the fallback sees only what is left when everything else gave up.

>>> policy = Policy(retry=Retry(attempts=3), breaker=CircuitBreaker("db"), timeout=2.0)
>>> @policy
... async def load(key: str) -> bytes: ...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from suture._config import Seconds, check_seconds, exception_classifier
from suture._decorator import Decorator
from suture.breaker import CircuitBreaker
from suture.classify import ExceptionClassifier
from suture.retrying import Retry
from suture.timeouts import Timeout

__all__ = ["Fallback", "Policy", "compose"]

P = ParamSpec("P")
T = TypeVar("T")


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
    """Fallback, retry, breaker and timeout applied outermost to innermost.

    Every part is optional. ``timeout`` takes seconds or a :class:`suture.Timeout`;
    ``fallback`` a callable ``(exc) -> result`` or a :class:`Fallback`.
    Use it as a decorator (``def`` and ``async def``), or ``call`` / ``acall``.
    """

    _tag = "policy"
    __slots__ = ("breaker", "fallback", "retry", "timeout")

    def __init__(
        self,
        *,
        retry: Retry | None = None,
        breaker: CircuitBreaker | None = None,
        timeout: Timeout | Seconds | None = None,
        fallback: Fallback | Callable[[Exception], Any] | None = None,
    ) -> None:
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry={retry!r}: expected a suture.Retry or None")
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker={breaker!r}: expected a suture.CircuitBreaker or None")
        if timeout is not None and not isinstance(timeout, Timeout):
            timeout = Timeout(check_seconds("timeout", timeout, positive=True))
        if fallback is not None and not isinstance(fallback, Fallback):
            fallback = Fallback(fallback)
        # The retry's own rule (never retry BreakerOpen or Overloaded) keeps it off an
        # open breaker, whatever its ``on`` says: nothing to add here.
        self.retry = retry
        self.breaker = breaker
        self.timeout: Timeout | None = timeout
        self.fallback: Fallback | None = fallback

    def __repr__(self) -> str:
        parts = [
            f"{name}={value!r}"
            for name in ("fallback", "retry", "breaker", "timeout")
            if (value := getattr(self, name)) is not None
        ]
        return f"Policy({', '.join(parts)})"

    def _decorate_async(
        self, fn: Callable[..., Coroutine[Any, Any, Any]]
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        return self._decorate_sync(fn)

    def _decorate_sync(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """fallback(retry(breaker(timeout(fn)))): each part picks its own sync or async wrapper."""
        inner: Callable[..., Any] = fn
        if self.timeout is not None:
            inner = self.timeout(inner)
        if self.breaker is not None:
            inner = self.breaker(inner)
        if self.retry is not None:
            inner = self.retry(inner)
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


def compose(*parts: Retry | CircuitBreaker | Timeout | Fallback) -> Policy:
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
                f"compose: {part!r} is not a Retry, CircuitBreaker, Timeout or Fallback"
            )
    return Policy(**found)
