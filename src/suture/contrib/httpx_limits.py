"""An httpx transport that keeps to a rate limit and slows down when told to.

:class:`RateLimitedTransport` / :class:`AsyncRateLimitedTransport` wrap any
httpx transport. Before each request they take a token from a rate limiter
(:class:`suture.limits.RateLimiter`, or the Redis-shared
:class:`suture.contrib.redis_limits.RedisRateLimiter` /
:class:`~suture.contrib.redis_limits.AsyncRedisRateLimiter`); when the
upstream answers **429 or 503 with ``Retry-After``**, they pause that limiter
until then. Every caller of the limiter then waits, instead of each finding
out with a request of its own; with the Redis limiter, every worker does.

With :class:`suture.contrib.httpx.ResilientTransport`, pass the limiter as
``rate_limit=``: each attempt then takes a token inside the retry and outside
the breaker (a wait for a token is not the dependency's latency)::

    client = httpx.Client(transport=ResilientTransport(rate_limit=limiter))

On its own, wrap the transport that does the I/O. A retry around it still
honours the ``Retry-After`` of the answer it got; its next attempt then finds
the limiter paused until the same moment, as every other caller does.

A call that would wait longer than the limiter's ``max_wait`` raises
:class:`suture.Overloaded` (``source="rate_limiter"``) without sending
anything: overload in our own process, never retried.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, runtime_checkable

from suture.contrib import missing_extra

try:
    import httpx
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra(__name__, "http", _exc) from _exc

from suture.classify import retry_after

__all__ = [
    "PAUSE_STATUSES",
    "AsyncRateLimitedTransport",
    "PausableLimiter",
    "RateLimitedTransport",
    "async_acquirer",
    "pause_async",
    "told_to_wait",
]

PAUSE_STATUSES: Final = frozenset({429, 503})
"""Answers whose ``Retry-After`` pauses the limiter: too many requests, and unavailable."""


@runtime_checkable
class PausableLimiter(Protocol):
    """What the sync transport needs: ``acquire()`` (waiting) and ``pause(seconds)``."""

    def acquire(self) -> None: ...

    def pause(self, seconds: float) -> Any: ...


def told_to_wait(response: object, *, wall_now: float | None = None) -> float | None:
    """Seconds an upstream asked every caller to wait: a 429 or 503 carrying
    ``Retry-After`` (seconds or an HTTP date); ``None`` for anything else."""
    status = getattr(response, "status_code", None)
    if status not in PAUSE_STATUSES:
        return None
    wait = retry_after(response, now=wall_now)
    return wait if wait is not None and wait > 0 else None


def async_acquirer(limiter: Any) -> Callable[[], Awaitable[None]]:
    """The waiting acquire of a limiter, for ``async`` code: ``RateLimiter.aacquire``, or an
    ``AsyncRedisRateLimiter``'s ``acquire``; a ``TypeError`` naming ``limiter`` otherwise."""
    acquire: Callable[[], Awaitable[None]] | None = getattr(limiter, "aacquire", None)
    if acquire is None and inspect.iscoroutinefunction(getattr(limiter, "acquire", None)):
        acquire = limiter.acquire
    if acquire is None or not callable(getattr(limiter, "pause", None)):
        raise TypeError(
            f"limiter={limiter!r}: expected a RateLimiter or an AsyncRedisRateLimiter "
            "(an async acquire and a pause(seconds))"
        )
    return acquire


async def pause_async(limiter: Any, seconds: float) -> None:
    """``limiter.pause(seconds)``, awaited when the limiter's pause is a coroutine."""
    paused = limiter.pause(seconds)
    if inspect.isawaitable(paused):
        await paused


class RateLimitedTransport(httpx.BaseTransport):
    """Take a token before each request; pause the limiter on 429/503 + Retry-After.

    :param limiter: a :class:`suture.limits.RateLimiter` or
        :class:`suture.contrib.redis_limits.RedisRateLimiter` (anything with
        ``acquire()`` and ``pause(seconds)``).
    :param transport: the transport that does the I/O (default ``httpx.HTTPTransport()``).
    """

    def __init__(
        self, limiter: PausableLimiter, transport: httpx.BaseTransport | None = None
    ) -> None:
        if not isinstance(limiter, PausableLimiter):
            raise TypeError(
                f"limiter={limiter!r}: expected a rate limiter with acquire() and pause(seconds)"
            )
        self.limiter = limiter
        self.transport = transport if transport is not None else httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.limiter.acquire()
        response = self.transport.handle_request(request)
        wait = told_to_wait(response)
        if wait is not None:
            self.limiter.pause(wait)
        return response

    def close(self) -> None:
        self.transport.close()


class AsyncRateLimitedTransport(httpx.AsyncBaseTransport):
    """The async twin: ``RateLimiter`` (waits with ``aacquire``) or ``AsyncRedisRateLimiter``."""

    def __init__(self, limiter: Any, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._acquire = async_acquirer(limiter)
        self.limiter = limiter
        self.transport = transport if transport is not None else httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self._acquire()
        response = await self.transport.handle_async_request(request)
        wait = told_to_wait(response)
        if wait is not None:
            await pause_async(self.limiter, wait)
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()
