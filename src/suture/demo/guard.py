"""Slow clients cannot hold the server's connections: a header timeout, a body deadline, a cap.

A client that sends its request one byte at a time holds a connection, a file
descriptor and (once the app runs) a task for as long as the server lets it.
uvicorn bounds none of that by default: its keep-alive timer only runs between
requests and is cancelled by any byte received. Three guards:

* :func:`guarded_protocol`: uvicorn's h11 protocol with a **header read
  timeout** (the request line and headers must be complete within
  ``header_timeout`` seconds of the connection or of the previous answer,
  else the connection is closed) and a **connection cap** (past
  ``max_connections`` open connections, a new one is closed at once);
* :class:`SlowClientGuard`: an ASGI middleware with a **body read deadline**
  (the whole body within ``body_timeout`` seconds of the app's first read,
  else ``408`` and ``Connection: close``);
* :func:`server_options`: the uvicorn settings that use both, with
  ``limit_concurrency`` (requests past it are answered ``503`` by uvicorn)
  and a short keep-alive.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "BODY_TIMEOUT",
    "HEADER_TIMEOUT",
    "MAX_CONNECTIONS",
    "SlowClientGuard",
    "guarded_protocol",
    "server_options",
]

logger = logging.getLogger("suture.demo")

#: Seconds for a request's line and headers to arrive.
HEADER_TIMEOUT: Final = 5.0
#: Seconds for a request's body to arrive, from the app's first read.
BODY_TIMEOUT: Final = 10.0
#: Open connections past which a new one is closed at once.
MAX_CONNECTIONS: Final = 1000


class _GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header read timeout and a connection cap."""

    header_timeout: float = HEADER_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            logger.warning("closing a connection: %d open (the cap)", self.max_connections)
            transport.close()
            return
        self._arm_head()

    def _arm_head(self) -> None:
        self._disarm_head()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_expired)

    def _disarm_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            # Still no complete request head: a slow (or idle) client gives the slot back.
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._disarm_head()  # the head is complete: the app and its deadline take over

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_head()  # the next request on this connection gets the same time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head()
        super().connection_lost(exc)


def guarded_protocol(
    *, header_timeout: float = HEADER_TIMEOUT, max_connections: int = MAX_CONNECTIONS
) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with these limits (pass it as ``http=``)."""
    if not header_timeout > 0:
        raise ValueError(f"header_timeout={header_timeout!r}: must be greater than 0 seconds")
    if max_connections < 1:
        raise ValueError(f"max_connections={max_connections!r}: must be at least 1")
    if header_timeout == HEADER_TIMEOUT and max_connections == MAX_CONNECTIONS:
        # The module's own class: worker processes (`--workers N`) receive it by pickling,
        # which finds a class only by its module and name.
        return _GuardedH11Protocol
    return type(
        "GuardedH11Protocol",
        (_GuardedH11Protocol,),
        {"header_timeout": float(header_timeout), "max_connections": int(max_connections)},
    )


class SlowClientGuard:
    """Answers ``408`` (and closes) a request whose body does not arrive in ``body_timeout`` s."""

    def __init__(self, app: ASGIApp, *, body_timeout: float = BODY_TIMEOUT) -> None:
        if not body_timeout > 0:
            raise ValueError(f"body_timeout={body_timeout!r}: must be greater than 0 seconds")
        self.app = app
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        ends: float | None = None
        started = False

        async def bounded_receive() -> Message:
            nonlocal ends
            if ends is None:
                ends = loop.time() + self.body_timeout
            left = ends - loop.time()
            if left <= 0:
                raise _SlowBody
            try:
                async with asyncio.timeout(left):
                    return await receive()
            except TimeoutError:
                raise _SlowBody from None

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except _SlowBody:
            if started:
                raise
            client = scope.get("client")
            logger.warning(
                "408: the request body from %s did not arrive within %gs",
                client[0] if client else "unknown",
                self.body_timeout,
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 408,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send(
                {
                    "type": "http.response.body",
                    "body": b'{"success":false,"error":"The request took too long to arrive.",'
                    b'"code":"request_timeout"}',
                }
            )


class _SlowBody(Exception):
    """The request body did not arrive in time (internal to :class:`SlowClientGuard`)."""


def server_options(
    *,
    header_timeout: float = HEADER_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    limit_concurrency: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` against slow clients."""
    return {
        "http": guarded_protocol(header_timeout=header_timeout, max_connections=max_connections),
        "limit_concurrency": limit_concurrency or max_connections,
        "timeout_keep_alive": 5,
        "h11_max_incomplete_event_size": 16 * 1024,
    }
