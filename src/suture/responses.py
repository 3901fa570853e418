"""Response validation: any HTTP response becomes one frozen :class:`Outcome`.

:func:`validate_response` reads a response (an ``httpx.Response``, read or
streamed, anything with ``status``/``headers``/``body``, or a
:class:`SimpleResponse`) and answers, without ever raising: did it succeed,
what is the data, and if not, what is a short, plain-text, one-line reason a
person can read, how long does the server ask us to wait, and is it worth
trying again.

* Success: JSON (``application/json``, any ``+json``, ``text/json``, with
  parameters; a UTF-8 byte order mark is tolerated) parsed into ``data``; 204,
  205 and 304 are ok with ``data=None``; an optional ``schema`` validates it.
* Failure: the reason comes from the body's common JSON shapes (``error``,
  ``message``, ``detail``, RFC 9457 problem details, GraphQL ``errors``), an
  HTML page's ``<title>`` or first ``<h1>`` (read by the standard library's
  HTML tokenizer, never by regular expressions), or a text body's first line;
  else a fallback naming the status ("HTTP 502 Bad Gateway").
* Only the first ``max_error_bytes`` of a failed response are read; a streamed
  response is closed without reading the rest, so a 40 MB error page costs
  what a small one does.
* No markup survives into ``error``: entities decoded, tags and scripts
  dropped, whitespace collapsed, control characters removed, at most 300
  characters.

This module imports no HTTP library: responses are read by duck typing.
"""

from __future__ import annotations

import codecs
import inspect
import json
import math
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from typing import Any, Final, Literal, Protocol, runtime_checkable

from suture._config import check_int
from suture.classify import MAX_RETRY_AFTER, is_transient, parse_retry_after, reason_phrase
from suture.clock import SYSTEM_CLOCK, Clock
from suture.errors import ResponseError
from suture.events import ResponseRejected, emit

__all__ = [
    "ERROR_LIMIT",
    "Expect",
    "Outcome",
    "ResponseLike",
    "SimpleResponse",
    "avalidate_response",
    "clean_text",
    "validate_response",
]

Expect = Literal["json", "text", "bytes", "auto"]
"""What a successful body should be: JSON (parsed), text (decoded), raw bytes,
or ``"auto"`` (JSON when the content type says so, text otherwise)."""

ERROR_LIMIT: Final = 300
"""``Outcome.error`` is at most this many characters."""

SNIPPET_LIMIT: Final = 200
"""``Outcome.snippet`` is at most this many characters."""

_NO_CONTENT: Final = frozenset({204, 205, 304})
_EXPECTS: Final = ("json", "text", "bytes", "auto")
_SKIPPED_TAGS: Final = frozenset({"script", "style", "template", "noscript", "svg", "math"})
_HTML_TYPES: Final = frozenset({"text/html", "application/xhtml+xml"})


@runtime_checkable
class ResponseLike(Protocol):
    """The minimal response: a status, headers and the body's bytes.

    ``headers`` is any mapping (looked up case-insensitively) or anything with
    a ``get(name)`` method. Adapt a response of another library in one line,
    for example ``SimpleResponse(r.status, r.headers, r.read())``.
    """

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Any: ...

    @property
    def body(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class SimpleResponse:
    """A response held in memory, for adapters and tests.

    >>> SimpleResponse(503, {"Retry-After": "2"}, b"busy").status
    503

    ``headers`` may be a mapping or a list of ``(name, value)`` pairs; names
    are stored lowercased, so lookups are case-insensitive.
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    url: str = ""

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: bytes | bytearray | memoryview | str = b"",
        url: str = "",
    ) -> None:
        items = headers.items() if isinstance(headers, Mapping) else (headers or ())
        normalised = {str(k).lower(): str(v) for k, v in items}
        raw = body.encode() if isinstance(body, str) else bytes(body)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "headers", normalised)
        object.__setattr__(self, "body", raw)
        object.__setattr__(self, "url", url)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """The validated result of one HTTP response. Never raises; immutable.

    :ivar ok: the response is a success and its body is what was expected.
    :ivar status: the HTTP status (``None`` when the response had none).
    :ivar data: the parsed body when ``ok`` (JSON, text or bytes per ``expect``).
    :ivar error: when not ok: one line of plain text, at most 300 characters;
        ``None`` when ok.
    :ivar retry_after: seconds the server asked us to wait (header first, then
        the body's ``retryAfter``/``retry_after``), within [0, 1 day]; or ``None``.
    :ivar transient: whether trying again may succeed (see ``suture.classify``).
    :ivar snippet: when not ok, the start of the body as plain text, for logs.
    :ivar content_type: the media type, lowercased, without parameters ("" if none).
    :ivar url: the request's URL when known ("" otherwise).
    :ivar attempts: how many attempts produced this outcome (1 unless a
        retrying client says otherwise).
    """

    ok: bool
    status: int | None
    data: Any = None
    error: str | None = None
    retry_after: float | None = None
    transient: bool = False
    snippet: str = ""
    content_type: str = ""
    url: str = ""
    attempts: int = 1

    def raise_for_error(self) -> Outcome:
        """Return ``self`` when ok; otherwise raise :class:`suture.ResponseError`.

        The error carries this outcome, the status, ``retry_after`` and
        ``transient``, so retry and breaker classify it like any HTTP error.
        """
        if self.ok:
            return self
        raise ResponseError(
            self.error or "request failed",
            status=self.status,
            retry_after=self.retry_after,
            transient=self.transient,
            outcome=self,
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape the browser client (``suture.js``) resolves to."""
        return {
            "ok": self.ok,
            "status": self.status,
            "data": self.data,
            "error": self.error,
            "retryAfter": self.retry_after,
            "transient": self.transient,
            "snippet": self.snippet,
            "contentType": self.content_type,
            "url": self.url,
            "attempts": self.attempts,
        }


# --- public entry points -----------------------------------------------------------


def validate_response(
    response: object,
    *,
    expect: Expect = "json",
    schema: Any = None,
    max_error_bytes: int = 65536,
    classifier: Callable[[int], bool] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    emit_events: bool = True,
) -> Outcome:
    """Validate ``response`` and return its :class:`Outcome`. Never raises on a response.

    :param response: an ``httpx.Response`` (read, or streamed from a sync
        client), anything with ``status``/``headers``/``body``
        (:class:`ResponseLike`), a ``requests`` response, or a file-like
        response with ``read(n)`` (``urllib``).
    :param expect: ``"json"`` (default), ``"text"``, ``"bytes"`` or ``"auto"``.
    :param schema: a pydantic model (anything with ``model_validate``) or a
        callable applied to the data; a failure makes the outcome not ok.
    :param max_error_bytes: at most this many bytes of a failed response are read.
    :param classifier: ``status -> transient?``; default ``suture.is_transient``'s statuses.
    :param clock: for HTTP-date ``Retry-After`` values.
    :param emit_events: emit :class:`suture.events.ResponseRejected` for failures.
    """
    plan = _Plan.start(response, expect, schema, max_error_bytes, classifier, clock)
    if plan.outcome is None:
        try:
            if plan.wants_full_body:
                body = _read_full(response)
            else:
                body = _read_prefix(response, plan.limit)
        except Exception as exc:
            plan.read_failed(exc)
        else:
            plan.finish(body)
    return plan.result(emit_events)


async def avalidate_response(
    response: object,
    *,
    expect: Expect = "json",
    schema: Any = None,
    max_error_bytes: int = 65536,
    classifier: Callable[[int], bool] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    emit_events: bool = True,
) -> Outcome:
    """:func:`validate_response` for responses streamed from an async client.

    Reads with ``aiter_bytes``/``aread`` (httpx) or an awaitable ``read``
    (aiohttp-style); anything already in memory is handled as in the sync
    version.
    """
    plan = _Plan.start(response, expect, schema, max_error_bytes, classifier, clock)
    if plan.outcome is None:
        try:
            if plan.wants_full_body:
                body = await _aread_full(response)
            else:
                body = await _aread_prefix(response, plan.limit)
        except Exception as exc:
            plan.read_failed(exc)
        else:
            plan.finish(body)
    return plan.result(emit_events)


# --- the logic shared by both entry points (no I/O) -----------------------------


class _Plan:
    """What we know before reading the body, and the decision once it is read."""

    __slots__ = (
        "classifier",
        "clock",
        "content_type",
        "expect",
        "headers",
        "limit",
        "outcome",
        "params",
        "schema",
        "status",
        "url",
        "wants_full_body",
    )

    classifier: Callable[[int], bool]
    clock: Clock
    content_type: str
    expect: Expect
    headers: object
    limit: int
    outcome: Outcome | None
    params: str
    schema: Any
    status: int | None
    url: str
    wants_full_body: bool

    @classmethod
    def start(
        cls,
        response: object,
        expect: Expect,
        schema: Any,
        max_error_bytes: int,
        classifier: Callable[[int], bool] | None,
        clock: Clock,
    ) -> _Plan:
        if expect not in _EXPECTS:
            raise ValueError(f"expect={expect!r}: must be one of {', '.join(_EXPECTS)}")
        check_int("max_error_bytes", max_error_bytes, minimum=0)
        if schema is not None and not (hasattr(schema, "model_validate") or callable(schema)):
            raise TypeError(f"schema={schema!r}: expected a pydantic model or a callable")
        self = cls()
        self.expect = expect
        self.schema = schema
        self.limit = max_error_bytes
        self.classifier = classifier or is_transient.status_is_transient
        self.clock = clock
        self.outcome = None
        self.status = _status_of(response)
        self.url = _url_of(response)
        try:
            self.headers = getattr(response, "headers", None)
        except Exception:
            self.headers = None
        ctype = _header(self.headers, "content-type") or ""
        mime, _, self.params = ctype.partition(";")
        self.content_type = mime.strip().lower()
        status = self.status
        if status is None:
            self.wants_full_body = False
            self.outcome = self._failure("invalid response: no HTTP status", b"", transient=False)
        else:
            self.wants_full_body = 200 <= status < 300 and status not in _NO_CONTENT
            if status in _NO_CONTENT:
                _close_quietly(response)
                self.outcome = Outcome(
                    ok=True,
                    status=status,
                    retry_after=self._header_retry_after(),
                    content_type=self.content_type,
                    url=self.url,
                )
        return self

    # -- outcomes

    def _header_retry_after(self) -> float | None:
        value = _header(self.headers, "retry-after")
        if value is None:
            return None
        try:
            return parse_retry_after(value, now=self.clock.wall())
        except Exception:
            return None

    def _transient(self) -> bool:
        status = self.status
        if status is None:
            return False
        try:
            return bool(self.classifier(status))
        except Exception:
            return False

    def _failure(
        self,
        error: str,
        body: bytes,
        *,
        transient: bool | None = None,
        retry_after: float | None = None,
        snippet: str | None = None,
    ) -> Outcome:
        header_hint = self._header_retry_after()
        return Outcome(
            ok=False,
            status=self.status,
            error=clean_text(error) or self._fallback(),
            retry_after=header_hint if header_hint is not None else retry_after,
            transient=self._transient() if transient is None else transient,
            snippet=_text_snippet(body, self.params) if snippet is None else snippet,
            content_type=self.content_type,
            url=self.url,
        )

    def _fallback(self) -> str:
        if self.status is None:
            return "invalid response"
        return f"HTTP {reason_phrase(self.status)}"

    def read_failed(self, exc: Exception) -> None:
        name = type(exc).__name__
        detail = clean_text(str(exc), limit=200)
        message = f"could not read the response body ({name}: {detail})" if detail else name
        if isinstance(exc, _AsyncStreamError):
            message = str(exc)
        transient = self._transient() or bool(is_transient(exc))
        self.outcome = self._failure(message, b"", transient=transient, snippet="")

    def finish(self, body: bytes) -> None:
        status = self.status
        assert status is not None  # finish() is only reached with a status
        if self.wants_full_body:
            self.outcome = self._success(body)
        else:
            self.outcome = self._error(body)

    def _success(self, body: bytes) -> Outcome:
        expect = self.expect
        ctype = self.content_type
        is_json = _is_json_type(ctype)
        if expect == "json" or (expect == "auto" and is_json):
            if ctype and not is_json:
                return self._failure(
                    f"expected JSON, got {ctype}", body, transient=False, snippet=None
                )
            if not body.strip():
                return self._failure("expected JSON, got an empty body", body, transient=False)
            try:
                data = json.loads(body)
            except (ValueError, RecursionError) as exc:
                return self._failure(f"invalid JSON: {_json_reason(exc)}", body, transient=False)
            if isinstance(data, dict) and data.get("success") is False:
                message = _message_from_json(data) or "the server reported a failure"
                return self._failure(
                    message, body, transient=False, retry_after=_body_retry_after(data)
                )
        elif expect == "bytes":
            data = body
        else:
            data = _decode(body, self.params)
        if self.schema is not None:
            try:
                data = _apply_schema(self.schema, data)
            except Exception as exc:
                reason = _schema_reason(exc)
                return self._failure(
                    f"response did not match the schema: {reason}", body, transient=False
                )
        return Outcome(
            ok=True,
            status=self.status,
            data=data,
            retry_after=self._header_retry_after(),
            content_type=ctype,
            url=self.url,
        )

    def _error(self, body: bytes) -> Outcome:
        ctype = self.content_type
        kind = _body_kind(ctype, body)
        if kind == "json":
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):
                data = _NOT_JSON
            if data is not _NOT_JSON:
                message = _message_from_json(data)
                return self._failure(
                    message or "", body, retry_after=_body_retry_after(data), snippet=None
                )
            return self._failure("", body)
        if kind == "html":
            page = _ErrorPage.read(_decode(body, self.params))
            message = page.message
            return self._failure(message, body, snippet=page.snippet or clean_text(message))
        if kind == "text":
            text = _decode(body, self.params)
            return self._failure(_first_line(text), body)
        return self._failure("", body, snippet="")

    def result(self, emit_events: bool) -> Outcome:
        outcome = self.outcome
        assert outcome is not None
        if emit_events and not outcome.ok:
            emit(
                ResponseRejected(
                    url=outcome.url,
                    status=outcome.status,
                    error=outcome.error or "",
                    transient=outcome.transient,
                )
            )
        return outcome


_NOT_JSON: Final = object()


# --- reading responses by duck typing ----------------------------------------------


def _status_of(response: object) -> int | None:
    for attr in ("status_code", "status", "code"):
        try:
            value = getattr(response, attr, None)
        except Exception:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _url_of(response: object) -> str:
    try:
        url = getattr(response, "url", None)
    except Exception:  # httpx raises when the response has no request
        return ""
    if url is None or callable(url):
        return ""
    try:
        return str(url)
    except Exception:
        return ""


def _header(headers: object, name: str) -> str | None:
    """A header value, case-insensitively, from a mapping or anything with ``get``."""
    if headers is None:
        return None
    try:
        value = headers.get(name) if hasattr(headers, "get") else None
        # httpx, requests, aiohttp and urllib headers look up case-insensitively
        # already; only a plain dict (or a list of pairs) needs a scan.
        if value is None and isinstance(headers, dict):
            for key, val in headers.items():
                if isinstance(key, (str, bytes)) and _lower(key) == name:
                    value = val
                    break
        elif value is None and isinstance(headers, (list, tuple)):
            for pair in headers:
                if len(pair) == 2 and _lower(pair[0]) == name:
                    value = pair[1]
                    break
    except Exception:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value if isinstance(value, str) else None


def _lower(key: object) -> str:
    if isinstance(key, bytes):
        return key.decode("latin-1").lower()
    return str(key).lower()


def _as_bytes(value: object) -> bytes | None:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return None


def _in_memory(response: object) -> bytes | None:
    """The body when it is already in memory (``body``, or a read ``content``)."""
    body = _as_bytes(getattr(response, "body", None))
    if body is not None:
        return body
    if hasattr(response, "iter_bytes") or hasattr(response, "aiter_bytes"):
        try:  # httpx: ``content`` raises ResponseNotRead on an unread stream
            return _as_bytes(response.content)  # type: ignore[attr-defined]
        except Exception:
            return None
    return None


class _AsyncStreamError(TypeError):
    """A sync read of a response that can only be read asynchronously."""


def _check_sync_stream(response: object) -> None:
    stream = getattr(response, "stream", None)
    if stream is not None and hasattr(stream, "__aiter__") and not hasattr(stream, "__iter__"):
        raise _AsyncStreamError(
            "the response body is an async stream: validate it with avalidate_response"
        )


def _read_full(response: object) -> bytes:
    body = _in_memory(response)
    if body is not None:
        return body
    if hasattr(response, "iter_bytes"):
        _check_sync_stream(response)
        reader = response.read  # type: ignore[attr-defined]
        return bytes(reader())
    content = _as_bytes(getattr(response, "content", None))  # requests
    if content is not None:
        return content
    reader = getattr(response, "read", None)
    if callable(reader):
        data = reader()
        out = _as_bytes(data)
        if out is None:
            raise TypeError(f"read() returned {type(data).__name__}, not bytes")
        return out
    return b""


def _read_prefix(response: object, limit: int) -> bytes:
    body = _in_memory(response)
    if body is not None:
        _close_quietly(response)
        return body[:limit]
    try:
        if hasattr(response, "iter_bytes"):  # httpx stream: read a prefix, then close
            _check_sync_stream(response)
            inflate = _Inflate.of(response, limit)
            if inflate is not None:
                return inflate.take(response.iter_raw())  # type: ignore[attr-defined]
            return _take(response.iter_bytes(), limit)
        iter_content = getattr(response, "iter_content", None)  # requests
        if callable(iter_content):
            return _take(iter_content(chunk_size=min(max(limit, 1), 65536)), limit)
        reader = getattr(response, "read", None)  # urllib, files
        if callable(reader):
            data = _as_bytes(reader(limit))
            return data[:limit] if data is not None else b""
        return b""
    finally:
        _close_quietly(response)


def _take(chunks: Iterator[bytes], limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    try:
        if limit > 0:
            for chunk in chunks:
                parts.append(chunk)
                size += len(chunk)
                if size >= limit:
                    break
    finally:
        close = getattr(chunks, "close", None)
        if callable(close):
            close()
    return b"".join(parts)[:limit]


class _Inflate:
    """A gzip or deflate body decompressed to at most ``limit`` bytes.

    httpx decodes each network chunk whole: 64 KiB of a compressed error page can
    become 64 MB (a "zip bomb") before the prefix is cut. Here every step yields
    at most what is still missing, so memory stays near ``limit``. Other encodings
    (br, zstd, several at once) are left to httpx.
    """

    __slots__ = ("_engine", "_parts", "_raw_fallback", "_room", "_wbits", "limit")

    def __init__(self, wbits: int, limit: int) -> None:
        self._wbits = wbits
        self._engine = zlib.decompressobj(wbits)
        self._raw_fallback = wbits == zlib.MAX_WBITS  # "deflate" is sometimes sent raw
        self._parts: list[bytes] = []
        self._room = limit
        self.limit = limit

    @classmethod
    def of(cls, response: object, limit: int) -> _Inflate | None:
        if not hasattr(response, "iter_raw") and not hasattr(response, "aiter_raw"):
            return None
        coding = (_header(getattr(response, "headers", None), "content-encoding") or "").strip()
        wbits = _ZLIB_WBITS.get(coding.lower())
        return None if wbits is None else cls(wbits, limit)

    def feed(self, data: bytes) -> bool:
        """Decompress ``data``; True once the prefix is complete (or the stream broken)."""
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
        return b"".join(self._parts)

    def take(self, chunks: Iterator[bytes]) -> bytes:
        try:
            if self.limit > 0:
                for chunk in chunks:
                    if self.feed(chunk):
                        break
        finally:
            close = getattr(chunks, "close", None)
            if callable(close):
                close()
        return self.result()


_ZLIB_WBITS: Final = {
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": zlib.MAX_WBITS,
}


def _close_quietly(response: object) -> None:
    close = getattr(response, "close", None)
    # Only clients whose close() releases the connection (httpx, requests).
    if callable(close) and (hasattr(response, "iter_bytes") or hasattr(response, "iter_content")):
        try:
            close()
        except Exception:
            return


async def _aread_full(response: object) -> bytes:
    body = _in_memory(response)
    if body is not None:
        return body
    if hasattr(response, "aiter_bytes"):
        return bytes(await response.aread())  # type: ignore[attr-defined]
    reader = getattr(response, "read", None)
    if inspect.iscoroutinefunction(reader):  # aiohttp
        data = await reader()
        out = _as_bytes(data)
        if out is None:
            raise TypeError(f"read() returned {type(data).__name__}, not bytes")
        return out
    return _read_full(response)


async def _aread_prefix(response: object, limit: int) -> bytes:
    body = _in_memory(response)
    if body is not None:
        await _aclose_quietly(response)
        return body[:limit]
    parts: list[bytes] = []
    size = 0
    try:
        if hasattr(response, "aiter_bytes"):  # httpx async stream
            inflate = _Inflate.of(response, limit)
            raw = inflate is not None
            chunks = response.aiter_raw() if raw else response.aiter_bytes()  # type: ignore[attr-defined]
            try:
                if limit > 0:
                    async for chunk in chunks:
                        if inflate is not None:
                            if inflate.feed(chunk):
                                break
                            continue
                        parts.append(chunk)
                        size += len(chunk)
                        if size >= limit:
                            break
            finally:
                await chunks.aclose()
            if inflate is not None:
                return inflate.result()
            return b"".join(parts)[:limit]
        reader = getattr(getattr(response, "content", None), "read", None)
        if inspect.iscoroutinefunction(reader):  # aiohttp's StreamReader.read(n)
            while size < limit:
                chunk = _as_bytes(await reader(limit - size))
                if not chunk:
                    break
                parts.append(chunk)
                size += len(chunk)
            return b"".join(parts)[:limit]
    finally:
        await _aclose_quietly(response)
    return _read_prefix(response, limit)


async def _aclose_quietly(response: object) -> None:
    close = getattr(response, "aclose", None)
    if callable(close) and hasattr(response, "aiter_bytes"):
        try:
            await close()
        except Exception:
            return
    else:
        release = getattr(response, "release", None)  # aiohttp
        if callable(release) and not hasattr(response, "iter_bytes"):
            try:
                result = release()
                if hasattr(result, "__await__"):
                    await result
            except Exception:
                return


# --- bodies -------------------------------------------------------------------------


def _is_json_type(mime: str) -> bool:
    return mime in ("application/json", "text/json") or mime.endswith("+json")


def _body_kind(mime: str, body: bytes) -> str:
    """``"json"``, ``"html"``, ``"text"`` or ``"binary"``: by content type, else by sniffing."""
    if _is_json_type(mime):
        return "json"
    if mime in _HTML_TYPES:
        return "html"
    if mime.startswith("text/") or mime.endswith(("+xml", "/xml")):
        return "html" if mime.endswith("xml") else "text"
    if mime and mime not in ("application/octet-stream", "application/x-www-form-urlencoded"):
        if mime.startswith(("application/javascript", "application/problem")):
            return "text"
        return "binary"
    start = body[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if start.startswith((b"{", b"[", b'"')):
        return "json"
    if start.startswith(b"<"):
        return "html"
    if mime == "application/octet-stream":
        return "binary"
    return "text"


def _charset(params: str) -> str:
    for part in params.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset":
            name = value.strip().strip("\"'")
            try:
                return codecs.lookup(name).name
            except LookupError:
                return "utf-8"
    return "utf-8"


def _decode(body: bytes, params: str) -> str:
    charset = _charset(params) if params else "utf-8"
    if charset == "utf-8" and body.startswith(codecs.BOM_UTF8):
        body = body[3:]
    try:
        return body.decode(charset, errors="replace")
    except Exception:  # a codec that does not take errors=, or a broken one
        return body.decode("utf-8", errors="replace")


def _text_snippet(body: bytes, params: str) -> str:
    if not body:
        return ""
    return clean_text(_decode(body[: SNIPPET_LIMIT * 4], params), limit=SNIPPET_LIMIT)


def _first_line(text: str) -> str:
    for line in text[: ERROR_LIMIT * 8].splitlines():
        if line.strip():
            return line
    return ""


def _json_reason(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc) or type(exc).__name__


def _str(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    return None


def _message_from_json(data: object, depth: int = 0) -> str | None:
    """The human reason in a JSON error body, from its common shapes."""
    if depth > 3:
        return None
    if isinstance(data, str):
        return _str(data)
    if isinstance(data, list):
        return _message_from_list(data, depth)
    if not isinstance(data, dict):
        return None
    title, detail = _str(data.get("title")), data.get("detail")
    if title is not None and (detail is None or isinstance(detail, str)):
        # RFC 9457 problem details: "title: detail"
        detail_text = _str(detail)
        return f"{title}: {detail_text}" if detail_text and detail_text != title else title
    error = data.get("error")
    if isinstance(error, str) and error.strip():
        description = _str(data.get("error_description"))  # OAuth 2
        return f"{error}: {description}" if description else error
    if isinstance(error, (dict, list)):
        nested = _message_from_json(error, depth + 1)
        if nested:
            return nested
    message = _str(data.get("message")) or _str(data.get("msg"))
    if message:
        return message
    if detail is not None:
        nested = _message_from_json(detail, depth + 1)
        if nested:
            return nested
    errors = data.get("errors")
    if errors is not None:
        nested = _message_from_json(errors, depth + 1)
        if nested:
            return nested
    return _str(data.get("reason")) or _str(data.get("description"))


def _message_from_list(items: list[Any], depth: int) -> str | None:
    """FastAPI's ``detail`` list (``loc`` + ``msg``) or GraphQL's ``errors``."""
    parts: list[str] = []
    for item in items[:3]:
        if isinstance(item, dict):
            msg = _str(item.get("msg")) or _str(item.get("message"))
            if msg is None:
                msg = _message_from_json(item, depth + 1)
            if msg is None:
                continue
            loc = item.get("loc")
            if isinstance(loc, (list, tuple)) and loc:
                where = ".".join(str(p) for p in loc if p != "body") or str(loc[-1])
                msg = f"{where}: {msg}"
            parts.append(msg)
        elif isinstance(item, str) and item.strip():
            parts.append(item)
    if not parts:
        return None
    more = len(items) - len(parts)
    text = "; ".join(parts)
    return f"{text} (and {more} more)" if more > 0 and len(items) > 3 else text


def _body_retry_after(data: object) -> float | None:
    if not isinstance(data, dict):
        return None
    for key in ("retryAfter", "retry_after"):
        value = data.get(key)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            try:
                number = float(value)
            except OverflowError:  # an integer of hundreds of digits: ignored, as 1e400
                continue  # is (and as a browser's JSON.parse, which reads it as Infinity)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                continue
        else:
            continue
        if math.isfinite(number):
            return min(max(0.0, number), MAX_RETRY_AFTER)
    return None


def _apply_schema(schema: Any, data: Any) -> Any:
    validate = getattr(schema, "model_validate", None)
    if callable(validate):
        return validate(data)
    return schema(data)


def _schema_reason(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic's ValidationError
        try:
            items = errors()
        except Exception:
            items = None
        if isinstance(items, list):
            message = _message_from_list(items, 0)
            if message:
                return message
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# --- plain text from markup ---------------------------------------------------------


_CHUNK: Final = 2048
# The most unparsed text the tokenizer may hold: an unterminated tag, comment or
# script longer than _MAX_PENDING ends the reading, and one longer than _MAX_TAIL
# left at the end is dropped rather than re-read character by character by close().
_MAX_PENDING: Final = 32768
# A real error page says what it has to say long before this many tags; a page of
# nothing but tags (say ``<title>`` repeated) stops here instead of costing ~20 ms.
_MAX_TAGS: Final = 2048
_MAX_TAIL: Final = 256
# Where tokenizing resumes after a skip: the tags we look for, and every construct
# whose content is not markup (so a "<h1" inside it is never mistaken for a tag).
_RESUME_AT: Final = (
    "<h1",
    "<title",
    "<script",
    "<style",
    "<!",
    "<template",
    "<noscript",
    "<svg",
    "<math",
    "<textarea",
    "<xmp",
    "<iframe",
    "<noembed",
    "<noframes",
    "<plaintext",
)


class _Stop(Exception):
    """Raised inside the parser when it has read enough."""


class _ErrorPage(HTMLParser):
    """Reads an HTML error page: its ``<title>``, its first ``<h1>``, and the start
    of its visible text. Scripts, styles and templates are dropped; entities are
    decoded by the tokenizer. Stops as soon as it has what it needs."""

    def __init__(self, snippet_limit: int = SNIPPET_LIMIT) -> None:
        super().__init__(convert_charrefs=True)
        self.title: list[str] = []
        self.h1: list[str] = []
        self.text: list[str] = []
        self._text_len = 0
        self._snippet_limit = snippet_limit
        self._skip = 0
        self._in_title = False
        self._in_h1 = False
        self._title_done = False
        self._h1_done = False
        self._tags = 0

    def _count_tag(self) -> None:
        self._tags += 1
        if self._tags > _MAX_TAGS:
            raise _Stop

    @classmethod
    def read(cls, markup: str) -> _ErrorPage:
        page = cls()
        try:
            page._run(markup)
        except _Stop:
            pass
        except Exception:  # the tokenizer is lenient, but be sure: keep what was read
            pass
        return page

    def _run(self, markup: str) -> None:
        """Tokenize ``markup`` in chunks. Once the snippet is full, text that can hold
        neither a title nor an h1 is skipped: the tokenizer resumes at the next tag
        that matters (``<h1``, ``<title``) or that changes how text is read
        (scripts, styles, comments, ``<svg>``...), so a long page without a title
        costs no more than a short one."""
        lowered: str | None = None
        pos, end = 0, len(markup)
        while pos < end:
            nxt = min(pos + _CHUNK, end)
            self.feed(markup[pos:nxt])
            pos = nxt
            if (
                pos < end
                and self._text_len >= self._snippet_limit
                and not (self._skip or self._in_title or self._in_h1)
                and self.rawdata in ("", "<")  # nothing pending, or a "<" cut by the chunk
                and self.cdata_elem is None
            ):
                if lowered is None:
                    lowered = markup.lower()
                start = pos - len(self.rawdata)
                hits = [i for m in _RESUME_AT if (i := lowered.find(m, start)) >= 0]
                if not hits:
                    raise _Stop
                self.rawdata = ""
                pos = min(hits)
            pending = self.rawdata
            if len(pending) > _MAX_PENDING:
                break  # an unterminated construct this long is not a page worth reading
            if (
                pos < end
                and len(pending) > 1
                and pending[0] == "<"
                and pending[1].isalpha()
                and self.cdata_elem is None
                and markup.find(">", pos) < 0
            ):
                break  # an open tag that nothing ahead can close: no tag can follow it
        if len(self.rawdata) > _MAX_TAIL:
            # close() hands an unterminated tag or comment to the tokenizer again one
            # character at a time, which costs the square of its length: drop it.
            self.rawdata = ""
        self.close()

    @property
    def message(self) -> str:
        for parts in (self.title, self.h1):
            text = " ".join("".join(parts).split())
            if text:
                return text
        return ""

    @property
    def snippet(self) -> str:
        return clean_text(" ".join(self.text), limit=SNIPPET_LIMIT)

    def _enough(self) -> bool:
        return (self._title_done or self._h1_done) and self._text_len >= self._snippet_limit

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._count_tag()
        if tag in _SKIPPED_TAGS:
            self._skip += 1
        elif tag == "title" and not self._title_done:
            self._in_title = True
        elif tag == "h1" and not self._h1_done:
            self._in_h1 = True

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._count_tag()  # <br/>, <script/>: nothing opens

    def handle_endtag(self, tag: str) -> None:
        self._count_tag()
        if tag in _SKIPPED_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag == "title" and self._in_title:
            self._in_title = False
            self._title_done = bool("".join(self.title).strip())
        elif tag == "h1" and self._in_h1:
            self._in_h1 = False
            self._h1_done = bool("".join(self.h1).strip())
        if self._enough():
            raise _Stop

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_title:
            self.title.append(data)
        elif self._in_h1:
            self.h1.append(data)
        if self._text_len < self._snippet_limit and not self._in_title:
            stripped = data.strip()
            if stripped:
                self.text.append(stripped)
                self._text_len += len(stripped) + 1


class _TextOnly(HTMLParser):
    """Text of a fragment with every tag, script and style removed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip += 1
        self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip = max(0, self._skip - 1)
        self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _strip_tags(text: str) -> str:
    parser = _TextOnly()
    try:
        parser.feed(text)
        if len(parser.rawdata) > _MAX_TAIL:
            parser.rawdata = ""  # as in _ErrorPage._run: close() would cost its square
        parser.close()
    except Exception:
        pass
    return "".join(parser.parts)


def _starts_tag(text: str, i: int) -> bool:
    nxt = text[i + 1 : i + 2]
    return bool(nxt) and (nxt.isalpha() or nxt in "/!?")


_DROPPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def clean_text(text: str, *, limit: int = ERROR_LIMIT) -> str:
    """One line of plain text, at most ``limit`` characters.

    Tags, scripts and styles are dropped (by the HTML tokenizer), entities
    decoded, control and format characters removed, whitespace collapsed; a
    longer text ends with "…".
    """
    if not text:
        return ""
    text = _drop_controls(text[: limit * 8])
    if _has_tag(text):
        text = _drop_controls(_strip_tags(text))  # decoded entities may hold controls too
    text = " ".join(text.split())
    if _has_tag(text):  # what the tokenizer left as text must not look like markup either
        text = _neutralise(text)
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def _drop_controls(text: str) -> str:
    if text.isascii() and text.isprintable():
        return text
    return "".join(
        " " if ch.isspace() else ("" if unicodedata.category(ch) in _DROPPED_CATEGORIES else ch)
        for ch in text
    )


def _has_tag(text: str) -> bool:
    return "<" in text and any(_starts_tag(text, i) for i, ch in enumerate(text) if ch == "<")


def _neutralise(text: str) -> str:
    return "".join(
        "\u2039" if ch == "<" and _starts_tag(text, i) else ch for i, ch in enumerate(text)
    )


def outcome_from_exception(exc: BaseException, *, url: str = "") -> Outcome:
    """An outcome for a request that got no response (a connection error, a timeout)."""
    name = type(exc).__name__
    detail = clean_text(str(exc), limit=200)
    return Outcome(
        ok=False,
        status=None,
        error=clean_text(f"{name}: {detail}" if detail else name),
        retry_after=None,
        transient=bool(is_transient(exc)) if isinstance(exc, Exception) else False,
        url=url,
    )


def with_attempts(outcome: Outcome, attempts: int) -> Outcome:
    """A copy of ``outcome`` that records how many attempts produced it."""
    return replace(outcome, attempts=attempts)
