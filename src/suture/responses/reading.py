"""Bounded readers: a response's whole body, or only its first bytes, sync and async.

Responses are read by duck typing (no HTTP library is imported): httpx
(read, or streamed from a sync or async client), requests, urllib and files
(``read(n)``), aiohttp (``content.read(n)``), or anything holding its
``body`` in memory.

:func:`read_prefix` and :func:`aread_prefix` read at most ``limit`` bytes and
close the response, so the rest of a 40 MB error page is never downloaded. A
gzip or deflate stream is inflated only up to ``limit`` too (:class:`Inflater`):
64 KiB of gzip can hold 64 MB of zeros.

Each reader is one plan with no I/O (which source, which sink) run by a sync
or an async driver of a few lines: the two differ only in how they pull,
call and close.
"""

from __future__ import annotations

import inspect
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import suppress
from typing import Any, Final, NamedTuple

from suture._config import check_int
from suture.responses._duck import as_bytes, header, in_memory

__all__ = [
    "AsyncStreamError",
    "Inflater",
    "aclose_quietly",
    "aread_body",
    "aread_prefix",
    "close_quietly",
    "read_body",
    "read_prefix",
]


class AsyncStreamError(TypeError):
    """A sync read of a response that can only be read asynchronously (use the ``a`` reader)."""


# --- the readers: a plan, then a few lines of I/O ------------------------------------


def read_body(response: object) -> bytes:
    """The whole body of ``response`` (a success's data: read it all).

    :raises AsyncStreamError: the body is an async stream (use :func:`aread_body`).
    :raises TypeError: the response's ``read()`` returned something other than bytes.
    """
    step = _body_step(response, asynchronous=False)
    return step if isinstance(step, bytes) else _checked(step.read())


async def aread_body(response: object) -> bytes:
    """:func:`read_body` for a response of an async client (httpx, aiohttp)."""
    step = _body_step(response, asynchronous=True)
    if isinstance(step, bytes):
        return step
    data = step.read()
    return _checked(await data if step.awaited else data)


def read_prefix(response: object, limit: int) -> bytes:
    """At most the first ``limit`` bytes of the body; then the response is closed.

    A streamed body is read only that far (the rest is never downloaded); one
    already in memory is sliced; a gzip or deflate stream is inflated only up
    to ``limit``.

    :raises AsyncStreamError: the body is an async stream (use :func:`aread_prefix`).
    """
    if type(limit) is not int or limit < 0:
        check_int("limit", limit, minimum=0)
    try:
        step = _prefix_step(response, limit, asynchronous=False)
        assert step is not None  # every response can be read synchronously
        return step if isinstance(step, bytes) else _drain(step.chunks, step.sink)
    finally:
        close_quietly(response)


async def aread_prefix(response: object, limit: int) -> bytes:
    """:func:`read_prefix` for a response of an async client (httpx, aiohttp); any
    other response is read as :func:`read_prefix` does."""
    if type(limit) is not int or limit < 0:
        check_int("limit", limit, minimum=0)
    try:
        step = _prefix_step(response, limit, asynchronous=True)
        if step is not None:
            return step if isinstance(step, bytes) else await _adrain(step.chunks, step.sink)
    finally:
        await aclose_quietly(response)
    return read_prefix(response, limit)  # not an async response


def close_quietly(response: object) -> None:
    """Release the connection of an httpx or requests response; never raises."""
    close = _closer(response, asynchronous=False)
    if close is not None:
        with suppress(Exception):
            close()


async def aclose_quietly(response: object) -> None:
    """Release the connection of an async httpx or an aiohttp response; never raises."""
    close = _closer(response, asynchronous=True)
    if close is not None:
        with suppress(Exception):
            result = close()
            if inspect.isawaitable(result):
                await result


def _drain(chunks: Iterator[bytes], sink: _Sink) -> bytes:
    try:
        while not sink.done and (chunk := next(chunks, None)) is not None:
            sink.feed(chunk)
    finally:
        close = getattr(chunks, "close", None)
        if callable(close):
            close()
    return sink.result()


async def _adrain(chunks: AsyncIterator[bytes], sink: _Sink) -> bytes:
    try:
        while not sink.done and (chunk := await anext(chunks, None)) is not None:
            sink.feed(chunk)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]  # async generators, ours and httpx's
    return sink.result()


def _checked(data: object) -> bytes:
    out = as_bytes(data)
    if out is None:
        raise TypeError(f"read() returned {type(data).__name__}, not bytes")
    return out


# --- the plans (no I/O): where the bytes come from, where they go ----------------------


class _Call(NamedTuple):
    read: Callable[[], Any]
    awaited: bool


class _Stream(NamedTuple):
    chunks: Any  # Iterator[bytes] for the sync driver, AsyncIterator[bytes] for the async one
    sink: _Sink


def _body_step(response: object, *, asynchronous: bool) -> bytes | _Call:
    """The body itself when it is known already, else the call that reads it."""
    body = in_memory(response)
    if body is not None:
        return body
    if asynchronous:
        if hasattr(response, "aiter_bytes"):  # httpx
            return _Call(response.aread, awaited=True)  # type: ignore[attr-defined]
        read = getattr(response, "read", None)
        if inspect.iscoroutinefunction(read):  # aiohttp
            return _Call(read, awaited=True)
    if hasattr(response, "iter_bytes"):  # httpx
        _check_sync_stream(response)
        return _Call(response.read, awaited=False)  # type: ignore[attr-defined]
    content = as_bytes(getattr(response, "content", None))  # requests
    if content is not None:
        return content
    read = getattr(response, "read", None)  # urllib, files
    return _Call(read, awaited=False) if callable(read) else b""


def _prefix_step(response: object, limit: int, *, asynchronous: bool) -> bytes | _Stream | None:  # noqa: PLR0911 - one return per kind of response object
    """The prefix itself when it is known already, else the chunks to pull and the sink
    that keeps at most ``limit`` bytes of them; ``None``: not an async response."""
    body = in_memory(response)
    if body is not None:
        return body[:limit]
    if asynchronous:
        if hasattr(response, "aiter_bytes"):  # httpx
            return _httpx_stream(response, limit, "aiter_")
        read = getattr(getattr(response, "content", None), "read", None)
        if inspect.iscoroutinefunction(read):  # aiohttp's StreamReader.read(n)
            sink = _Prefix(limit)
            return _Stream(_pulled(read, sink), sink)
        return None
    if hasattr(response, "iter_bytes"):  # httpx
        _check_sync_stream(response)
        return _httpx_stream(response, limit, "iter_")
    iter_content = getattr(response, "iter_content", None)  # requests
    if callable(iter_content):
        chunks = iter(iter_content(chunk_size=min(max(limit, 1), 65536)))
        return _Stream(chunks, _Prefix(limit))
    read = getattr(response, "read", None)  # urllib, files
    if callable(read):
        return _Stream(_read_once(read, limit), _Prefix(limit))
    return b""


def _httpx_stream(response: object, limit: int, prefix: str) -> _Stream:
    """httpx's decoded chunks, or its raw ones through an :class:`Inflater`."""
    inflater = Inflater.of(response, limit)
    if inflater is None:
        return _Stream(getattr(response, prefix + "bytes")(), _Prefix(limit))
    return _Stream(getattr(response, prefix + "raw")(), inflater)


def _check_sync_stream(response: object) -> None:
    stream = getattr(response, "stream", None)
    if stream is not None and hasattr(stream, "__aiter__") and not hasattr(stream, "__iter__"):
        raise AsyncStreamError(
            "the response body is an async stream: validate it with avalidate_response"
        )


def _read_once(read: Callable[[int], object], limit: int) -> Iterator[bytes]:
    data = as_bytes(read(limit))
    if data is not None:
        yield data


async def _pulled(read: Callable[[int], Awaitable[object]], sink: _Prefix) -> AsyncIterator[bytes]:
    """Chunks of ``read(n)``, asked each time for what the prefix still misses
    (a short read is not the end; an empty one is)."""
    while sink.room > 0:
        chunk = as_bytes(await read(sink.room))
        if not chunk:
            return
        yield chunk


def _closer(response: object, *, asynchronous: bool) -> Callable[[], object] | None:
    """The call that releases the connection, or ``None`` (nothing to release)."""
    if asynchronous:
        close = getattr(response, "aclose", None)
        if callable(close) and hasattr(response, "aiter_bytes"):  # httpx
            return close  # type: ignore[no-any-return]
        release = getattr(response, "release", None)  # aiohttp
        if callable(release) and not hasattr(response, "iter_bytes"):
            return release  # type: ignore[no-any-return]
        return None
    close = getattr(response, "close", None)
    # Only clients whose close() releases the connection (httpx, requests).
    if callable(close) and (hasattr(response, "iter_bytes") or hasattr(response, "iter_content")):
        return close  # type: ignore[no-any-return]
    return None


# --- the sinks: at most ``limit`` bytes, plain or inflated -----------------------------


class _Prefix:
    """The first ``limit`` bytes of a stream of chunks."""

    __slots__ = ("_parts", "_size", "done", "limit")

    def __init__(self, limit: int) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self.limit = limit
        self.done = limit <= 0

    @property
    def room(self) -> int:
        return self.limit - self._size

    def feed(self, data: bytes) -> bool:
        """Keep ``data``; True once the prefix is complete."""
        self._parts.append(data)
        self._size += len(data)
        self.done = self._size >= self.limit
        return self.done

    def result(self) -> bytes:
        return b"".join(self._parts)[: self.limit]


class Inflater:
    """A gzip or deflate body decompressed to at most ``limit`` bytes.

    httpx decodes each network chunk whole: 64 KiB of a compressed error page can
    become 64 MB (a "zip bomb") before the prefix is cut. Here every step yields
    at most what is still missing, so memory stays near ``limit``. Other encodings
    (br, zstd, several at once) are left to httpx. Feed it the raw chunks
    (httpx's ``iter_raw``), then read :meth:`result`.
    """

    __slots__ = ("_engine", "_parts", "_raw_fallback", "_room", "_wbits", "done", "limit")

    def __init__(self, wbits: int, limit: int) -> None:
        """``wbits`` as :func:`zlib.decompressobj` takes it (see :meth:`for_encoding`)."""
        self._wbits = wbits
        self._engine = zlib.decompressobj(wbits)
        self._raw_fallback = wbits == zlib.MAX_WBITS  # "deflate" is sometimes sent raw
        self._parts: list[bytes] = []
        self._room = limit
        self.limit = limit
        self.done = limit <= 0

    @classmethod
    def for_encoding(cls, coding: str, limit: int) -> Inflater | None:
        """An inflater for a ``Content-Encoding`` (gzip, x-gzip, deflate), else ``None``."""
        wbits = _ZLIB_WBITS.get(coding.strip().lower())
        return None if wbits is None else cls(wbits, limit)

    @classmethod
    def of(cls, response: object, limit: int) -> Inflater | None:
        """The inflater for an httpx stream's ``Content-Encoding``, else ``None``."""
        if not hasattr(response, "iter_raw") and not hasattr(response, "aiter_raw"):
            return None
        coding = header(getattr(response, "headers", None), "content-encoding") or ""
        return cls.for_encoding(coding, limit)

    def feed(self, data: bytes) -> bool:
        """Decompress ``data``; True once the prefix is complete (or the stream broken)."""
        self.done = self._feed(data)
        return self.done

    def _feed(self, data: bytes) -> bool:
        while data and self._room > 0:
            try:
                out = self._engine.decompress(data, self._room)
            except zlib.error:
                if self._raw_fallback and not self._parts:
                    self._raw_fallback = False
                    self._engine = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                return True  # a corrupt body: keep what was decoded
            self._raw_fallback = False
            if out:
                self._parts.append(out)
                self._room -= len(out)
            if self._engine.eof:  # a gzip member ended: another may follow
                data = self._engine.unused_data
                self._engine = zlib.decompressobj(self._wbits)
            else:
                data = b""  # consumed, or the prefix is full (the tail is not wanted)
        return self._room <= 0

    def result(self) -> bytes:
        """What was inflated so far: at most ``limit`` bytes."""
        return b"".join(self._parts)


_Sink = _Prefix | Inflater

_ZLIB_WBITS: Final = {
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": zlib.MAX_WBITS,
}
