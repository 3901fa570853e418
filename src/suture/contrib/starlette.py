"""Starlette and FastAPI: suture's errors at the HTTP edge, admission, and ``suture.js``.

``install(app)`` does the three things a service needs:

* **error mapping**: :class:`~suture.BreakerOpen` and :class:`~suture.Overloaded`
  become ``503`` with a ``Retry-After`` header and
  ``{"success": false, "error": ..., "retryAfter": N}``;
  :class:`~suture.InvalidTransition` becomes ``409`` (``404`` when the record
  is missing); a transient error that escaped its retries a ``503`` with a
  short ``Retry-After``; any other error a ``500`` with a generic message and a
  request id (the traceback goes to the log under that id, never into the
  response). The framework's own errors take the same shape: an unknown route
  (``404``), a wrong method (``405``), any ``HTTPException``, and FastAPI's
  request validation (``422`` naming the fields and what is wrong with them,
  never echoing the input back);
* **a body limit** (``max_body_bytes``): a larger request body is a ``413``
  before it is read into memory;
* **admission**: :class:`AdmissionMiddleware` asks an admission function (a
  ``suture.PoolMonitor``'s ``admit``) before each request, with a priority
  chosen per route, and sheds with the same ``503`` shape;
* **the browser client**: ``GET /suture.js`` serves ``suture/static/suture.js``
  from the installed package;
* **a deadline per request** (``deadline=``): :class:`DeadlineMiddleware` sets
  :func:`suture.deadline` for each request (a default, per route prefix),
  lowered by an ``X-Request-Timeout`` header, never raised; a spent deadline
  is ``503 deadline_exceeded`` with ``Retry-After``, never a ``500`` or a hang;
* **overload**: an error :func:`suture.classify.is_overload` recognises (a pool
  checkout timeout) is ``503 overloaded`` with ``Retry-After``, like a shed
  request; :class:`LimiterMiddleware` admits requests through a
  :class:`suture.AdaptiveLimiter` (acquire before, release with the latency after).

:func:`health_route` adds a ``/health`` answering breaker states and pool
levels (:func:`health_report`).

Needs the ``web`` extra (``starlette``).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import logging
import math
import re
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from suture.contrib import missing_extra

try:
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra(__name__, "web", _exc) from _exc

from suture.classify import is_overload, is_transient, reason_phrase
from suture.contrib.starlette_openapi import ERROR_SCHEMA, REQUEST_ID_HEADER, openapi_responses
from suture.contrib.starlette_security import (
    DEFAULT_CONTENT_SECURITY_POLICY,
    SecurityHeadersMiddleware,
)
from suture.deadline import deadline as _deadline_scope
from suture.errors import BreakerOpen, DeadlineExceeded, InvalidTransition, Overloaded

__all__ = [
    "DEADLINE_HEADER",
    "DEADLINE_RETRY_AFTER",
    "DEFAULT_CONTENT_SECURITY_POLICY",
    "ERROR_SCHEMA",
    "EXEMPT",
    "REQUEST_ID_HEADER",
    "TRANSIENT_RETRY_AFTER",
    "AdmissionMiddleware",
    "BodyLimitMiddleware",
    "DeadlineMiddleware",
    "LimiterMiddleware",
    "RequestIdMiddleware",
    "SecurityHeadersMiddleware",
    "TransientErrorMiddleware",
    "breaker_open_handler",
    "deadline_exceeded_handler",
    "deadline_exceeded_response",
    "error_body",
    "health_report",
    "health_route",
    "http_exception_handler",
    "install",
    "invalid_json_response",
    "invalid_transition_handler",
    "openapi_responses",
    "overloaded_handler",
    "overloaded_response",
    "request_id",
    "requested_seconds",
    "suture_js",
    "suture_js_route",
    "unavailable_response",
    "unexpected_error_handler",
    "validation_error_handler",
]

logger = logging.getLogger("suture")

#: The header a client lowers its request's deadline with (seconds).
DEADLINE_HEADER = "X-Request-Timeout"
#: ``Retry-After`` seconds for a request whose deadline was spent.
DEADLINE_RETRY_AFTER = 1.0
#: ``Retry-After`` seconds for a transient error that escaped its retries.
TRANSIENT_RETRY_AFTER = 2.0
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class _Exempt:
    """The priority of a route that admission never sheds (health checks, metrics, assets)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "EXEMPT"


EXEMPT: Any = _Exempt()
"""Use as a route's priority in :class:`AdmissionMiddleware` to never shed it."""


# --- responses -----------------------------------------------------------------


def request_id(request: Request) -> str:
    """The request's id: the client's ``X-Request-ID`` when it is sane, else a new one.

    Stored on ``request.state`` so every handler and log line of a request shares it.
    """
    existing = getattr(request.state, "suture_request_id", None)
    if isinstance(existing, str):
        return existing
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    rid = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex[:16]
    request.state.suture_request_id = rid
    return rid


def _loggable(text: str, limit: int = 200) -> str:
    """A client-chosen string fit for one log line: control characters escaped, bounded.

    A path is percent-decoded: ``/x%0AERROR ...`` would otherwise forge a log line.
    """
    clean = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text[:limit])
    return clean + ("..." if len(text) > limit else "")


def _retry_seconds(retry_after: float) -> int:
    """Whole seconds for ``Retry-After`` (at least 1: 0 would invite a tight loop)."""
    if not math.isfinite(retry_after):
        return 60
    return max(1, math.ceil(retry_after))


def error_body(error: str, **extra: Any) -> dict[str, Any]:
    """The JSON shape of every error suture's handlers send."""
    return {"success": False, "error": error, **extra}


def unavailable_response(
    error: str, retry_after: float, *, code: str, rid: str | None = None
) -> JSONResponse:
    """A ``503`` with ``Retry-After`` and ``{"success": false, "error", "retryAfter"}``."""
    seconds = _retry_seconds(retry_after)
    headers = {"Retry-After": str(seconds), "Cache-Control": "no-store"}
    if rid is not None:
        headers[REQUEST_ID_HEADER] = rid
    return JSONResponse(
        error_body(error, retryAfter=seconds, code=code), status_code=503, headers=headers
    )


def overloaded_response(exc: Overloaded, rid: str | None = None) -> JSONResponse:
    """The ``503`` for a shed request."""
    seconds = _retry_seconds(exc.retry_after)
    return unavailable_response(
        f"The service is busy right now; please try again in {seconds} s.",
        exc.retry_after,
        code="overloaded",
        rid=rid,
    )


async def breaker_open_handler(request: Request, exc: Exception) -> Response:
    """``BreakerOpen`` -> ``503`` with ``Retry-After``."""
    assert isinstance(exc, BreakerOpen)
    seconds = _retry_seconds(exc.retry_after)
    return unavailable_response(
        f"A service we depend on ({exc.name}) is unavailable; please try again in {seconds} s.",
        exc.retry_after,
        code="breaker_open",
        rid=request_id(request),
    )


async def overloaded_handler(request: Request, exc: Exception) -> Response:
    """``Overloaded`` -> ``503`` with ``Retry-After``."""
    assert isinstance(exc, Overloaded)
    return overloaded_response(exc, request_id(request))


def deadline_exceeded_response(rid: str | None = None) -> JSONResponse:
    """The ``503`` for a request whose deadline was spent before its answer was ready."""
    return unavailable_response(
        "The service could not answer in time; please try again in a moment.",
        DEADLINE_RETRY_AFTER,
        code="deadline_exceeded",
        rid=rid,
    )


async def deadline_exceeded_handler(request: Request, exc: Exception) -> Response:
    """``DeadlineExceeded`` -> ``503 deadline_exceeded`` with ``Retry-After``."""
    return deadline_exceeded_response(request_id(request))


def _local_overload_response(request: Request, exc: Exception) -> JSONResponse:
    """A full queue of our own (a pool checkout timeout) answered as a shed request."""
    logger.warning(
        "%s %s shed: %s (a local queue is full; request id %s)",
        request.method,
        _loggable(request.url.path),
        type(exc).__name__,
        request_id(request),
    )
    return overloaded_response(
        Overloaded(type(exc).__name__, TRANSIENT_RETRY_AFTER, source="local queue"),
        request_id(request),
    )


def _state_name(state: object) -> str | None:
    if state is None:
        return None
    value = getattr(state, "value", state)
    return str(getattr(state, "name", value))


async def invalid_transition_handler(request: Request, exc: Exception) -> Response:
    """``InvalidTransition`` -> ``409`` naming the two states (``404`` for a missing record)."""
    assert isinstance(exc, InvalidTransition)
    source, target = _state_name(exc.source), _state_name(exc.target)
    if isinstance(
        exc, LookupError
    ):  # the record does not exist (contrib.sqlalchemy's RecordNotFound)
        # Not ``target``: the record is missing, so no move was refused.
        return JSONResponse(
            error_body("This record does not exist.", code="not_found"),
            status_code=404,
            headers={REQUEST_ID_HEADER: request_id(request)},
        )
    if source is not None and source != target:
        message = f"This record is {source} and cannot be moved to {target}."
    else:
        message = exc.reason or f"This record cannot be moved to {target}."
    return JSONResponse(
        error_body(message, code="invalid_transition", status=source, target=target),
        status_code=409,
        headers={REQUEST_ID_HEADER: request_id(request)},
    )


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    """Any other error -> ``500``, a generic message and a request id; details go to the log.

    A transient error (``suture.classify.is_transient``: a dropped connection, a
    timeout) that escaped its retries becomes a ``503`` with a short
    ``Retry-After`` instead: the client may try again, nothing is broken.
    """
    rid = request_id(request)
    if is_overload(exc):
        return _local_overload_response(request, exc)
    if is_transient(exc):
        # A dependency failed in a way that heals (a dropped connection, a timeout)
        # and the retries are spent: tell the client to come back soon, not "bug".
        return _transient_response(request, exc, TRANSIENT_RETRY_AFTER)
    logger.error(
        "unhandled %s on %s %s (request id %s)",
        type(exc).__name__,
        request.method,
        _loggable(request.url.path),
        rid,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return JSONResponse(
        error_body(
            f"Something went wrong on our side. Reference: {rid}.",
            code="internal_error",
            requestId=rid,
        ),
        status_code=500,
        headers={REQUEST_ID_HEADER: rid},
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
}
_HTTP_MESSAGES = {
    404: "There is nothing at this address.",
    405: "This address does not accept that method.",
    413: "The request body is too large.",
}
#: At most this many fields are listed in a ``422`` body, each message at most this long.
_MAX_FIELDS = 20
_MAX_FIELD_TEXT = 200
#: Pydantic's error types for a body that is not an object where an object is expected.
_NOT_AN_OBJECT = frozenset({"model_attributes_type", "dict_type", "model_type"})
_NOT_AN_OBJECT_TEXT = "the request body must be a JSON object"
#: What FastAPI raises (as ``HTTPException(400)``) from a body it could not parse:
#: invalid UTF-8 (``UnicodeDecodeError``, a ``ValueError``), nesting past the
#: interpreter's recursion limit, an integer past ``sys.get_int_max_str_digits()``.
_UNPARSEABLE = (ValueError, RecursionError)
_FASTAPI_PARSE_ERROR = "There was an error parsing the body"


def invalid_json_response(request: Request) -> JSONResponse:
    """The ``422 invalid_json`` for a body that is not parseable JSON (no parser detail)."""
    return JSONResponse(
        error_body("The request body is not valid JSON.", code="invalid_json", fields=[]),
        status_code=422,
        headers={REQUEST_ID_HEADER: request_id(request)},
    )


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's ``HTTPException`` (unknown route, wrong method, ...) in suture's error shape.

    The status and headers (``Allow`` on a ``405``) are kept; the message is the
    exception's ``detail`` when it is a string an application chose, or a
    sentence for the statuses the framework itself raises.
    """
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if (
        status == 400
        and exc.detail == _FASTAPI_PARSE_ERROR
        and isinstance(exc.__cause__, _UNPARSEABLE)
    ):  # FastAPI could not parse the body: the same 422 as malformed JSON
        return invalid_json_response(request)
    headers = dict(exc.headers or {})
    if status in {204, 304} or status < 400:
        return Response(status_code=status, headers=headers)
    headers[REQUEST_ID_HEADER] = request_id(request)
    detail = exc.detail if isinstance(exc.detail, str) else ""
    generic = reason_phrase(status).split(" ", 1)[-1]
    if status in _HTTP_MESSAGES and detail in ("", generic, "Content Too Large"):
        message = _HTTP_MESSAGES[status]
    else:
        message = (detail or generic)[:_MAX_FIELD_TEXT]
    code = _HTTP_CODES.get(status, f"http_{status}")
    if status == 503:
        headers.setdefault("Retry-After", str(_retry_seconds(TRANSIENT_RETRY_AFTER)))
        seconds = int(headers["Retry-After"]) if headers["Retry-After"].isdigit() else None
        return JSONResponse(
            error_body(message, code=code, retryAfter=seconds), status_code=503, headers=headers
        )
    return JSONResponse(error_body(message, code=code), status_code=status, headers=headers)


def _field_name(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in {"body", "query", "path", "header", "cookie"}:
        parts = parts[1:]
    return ".".join(parts)[:_MAX_FIELD_TEXT] or "request"


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    """FastAPI's ``RequestValidationError`` -> ``422`` naming the fields, never echoing the input.

    FastAPI's own answer repeats every rejected value (``input``), however
    large, and parser internals (``ctx``); this one lists each field (where
    it was: ``body``, ``query``, ``path``...) with the validator's message.
    """
    raw = getattr(exc, "errors", None)
    errors: list[Any] = list(raw()) if callable(raw) else []
    fields: list[dict[str, str]] = []
    malformed = False
    for err in errors[:_MAX_FIELDS]:
        if not isinstance(err, Mapping):
            continue
        loc = err.get("loc") or ()
        loc = tuple(loc) if isinstance(loc, (list, tuple)) else (str(loc),)
        if err.get("type") == "json_invalid":
            malformed = True
            continue
        if tuple(loc) == ("body",) and err.get("type") in _NOT_AN_OBJECT:
            # The whole body is a list, a string, a number or not JSON: say that, not
            # "response: Field required" for each field an object would have carried.
            fields.append({"field": "body", "in": "body", "problem": _NOT_AN_OBJECT_TEXT})
            continue
        msg = err.get("msg")
        fields.append(
            {
                "field": _field_name(loc),
                "in": str(loc[0]) if loc else "request",
                "problem": (msg if isinstance(msg, str) else "is not valid")[:_MAX_FIELD_TEXT],
            }
        )
    if malformed:
        return invalid_json_response(request)
    if fields and fields[0]["field"] == "body" and fields[0]["problem"] == _NOT_AN_OBJECT_TEXT:
        message = f"The request is not valid: {_NOT_AN_OBJECT_TEXT}."
    elif fields:
        first = fields[0]
        message = f"The request is not valid: {first['field']}: {first['problem']}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
    else:
        message = "The request is not valid."
    return JSONResponse(
        error_body(message, code="invalid_request", fields=fields),
        status_code=422,
        headers={REQUEST_ID_HEADER: request_id(request)},
    )


# --- body limit -----------------------------------------------------------------


class BodyLimitMiddleware:
    """Refuses a request body larger than ``max_bytes`` with a ``413``, without reading it all.

    A declared ``Content-Length`` over the limit is answered before the app
    runs; a body streamed without one is counted as it arrives and the read
    that passes the limit raises ``HTTPException(413)`` (answered by
    :func:`http_exception_handler`).
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes={max_bytes!r}: expected a whole number of bytes >= 0")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = value
                break
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                size = -1
            if size < 0 or size > self.max_bytes:
                if size < 0:
                    exc = HTTPException(400, "The Content-Length header is not valid.")
                else:
                    exc = HTTPException(413, "")
                response = await http_exception_handler(Request(scope), exc)
                await response(scope, receive, send)
                return
        seen = 0
        limit = self.max_bytes

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, "")
            return message

        await self.app(scope, limited_receive, send)


# --- request id -------------------------------------------------------------------


class RequestIdMiddleware:
    """Sends ``X-Request-ID`` on every response, successes included.

    The id is :func:`request_id`'s (the client's when it is sane, else a new
    one), chosen before the app runs, so the handlers' error bodies and log
    lines carry the same one; a response that already set the header keeps it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(Request(scope)).encode("latin-1")
        header = REQUEST_ID_HEADER.lower().encode("latin-1")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == header for name, _ in headers):
                    headers.append((header, rid))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


# --- admission -----------------------------------------------------------------

Admit = Callable[[Any], object]
"""Raises :class:`~suture.Overloaded` to shed; called with the route's priority."""


class AdmissionMiddleware:
    """Sheds requests before they reach the app when the admission function says so.

    :param admit: called with the route's priority before each request; raises
        ``Overloaded`` to shed it (``PoolMonitor.admit`` does exactly that).
    :param priorities: path prefix -> priority; the longest matching prefix
        wins; :data:`EXEMPT` never sheds. Exact paths match too.
    :param default: the priority of a path no prefix matches.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        admit: Admit,
        priorities: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
        default: Any,
    ) -> None:
        if not callable(admit):
            raise TypeError(f"admit={admit!r}: expected a callable(priority) raising Overloaded")
        self.app = app
        self.admit = admit
        items = priorities.items() if isinstance(priorities, Mapping) else priorities
        table: list[tuple[str, Any]] = []
        for prefix, priority in items:
            if not isinstance(prefix, str) or not prefix.startswith("/"):
                raise ValueError(f"priorities: prefix {prefix!r} must be a path starting with '/'")
            table.append((prefix, priority))
        # Longest prefix first, so "/api/manager/spam" beats "/api".
        self.table: Sequence[tuple[str, Any]] = sorted(table, key=lambda kv: -len(kv[0]))
        self.default = default

    def priority_for(self, path: str) -> Any:
        for prefix, priority in self.table:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return priority
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        priority = self.priority_for(scope["path"])
        if priority is not EXEMPT:
            try:
                self.admit(priority)
            except Overloaded as exc:
                request = Request(scope)
                await overloaded_response(exc, request_id(request))(scope, receive, send)
                return
        await self.app(scope, receive, send)


class TransientErrorMiddleware:
    """Answers a transient error that escaped its retries with a ``503`` and ``Retry-After``.

    Starlette re-raises every error its ``500`` handler saw, so servers log a
    traceback for each one; a dropped database connection is not a bug, so
    this middleware answers it (a short warning in the log, no traceback) and
    lets only the other errors reach the ``500`` handler.
    """

    def __init__(self, app: ASGIApp, *, retry_after: float = TRANSIENT_RETRY_AFTER) -> None:
        self.app = app
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            request = Request(scope)
            if is_overload(exc):
                await _local_overload_response(request, exc)(scope, receive, send)
                return
            if not is_transient(exc):
                raise
            await _transient_response(request, exc, self.retry_after)(scope, receive, send)


def _transient_response(request: Request, exc: Exception, retry_after: float) -> JSONResponse:
    rid = request_id(request)
    logger.warning(
        "%s %s failed with a transient %s (request id %s)",
        request.method,
        _loggable(request.url.path),
        type(exc).__name__,
        rid,
    )
    return unavailable_response(
        "The service is temporarily unavailable; please try again in a moment.",
        retry_after,
        code="unavailable",
        rid=rid,
    )


# --- deadline -------------------------------------------------------------------

#: An ``X-Request-Timeout`` above this is not a number of seconds anyone meant.
_MAX_HEADER_SECONDS = 86_400.0
_HEADER_SECONDS = re.compile(r"(?:[0-9]{1,9}(?:\.[0-9]{0,6})?|\.[0-9]{1,6})", re.ASCII)
_HEADER_KEY = DEADLINE_HEADER.lower().encode("latin-1")
#: Clients already warned about a bad ``X-Request-Timeout`` (bounded: cleared when full).
_WARNED_CLIENTS: set[str] = set()
_MAX_WARNED = 1024


def _prefix_table(items: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Path prefix -> value, longest prefix first; a prefix must start with ``/``."""
    pairs = items.items() if isinstance(items, Mapping) else items
    table: list[tuple[str, Any]] = []
    for prefix, value in pairs:
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise ValueError(f"prefix {prefix!r} must be a path starting with '/'")
        table.append((prefix, value))
    return sorted(table, key=lambda kv: -len(kv[0]))


def _lookup(table: Sequence[tuple[str, Any]], path: str, default: Any) -> Any:
    for prefix, value in table:
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            return value
    return default


def _route_seconds(name: str, value: object) -> float | None:
    """A route's deadline: ``None`` (no deadline: a stream, a health check) or seconds > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}={value!r}: expected seconds (a number > 0) or None")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r}: must be a finite number of seconds > 0, or None")
    return float(value)


def _warn_once(scope: Scope, raw: bytes) -> None:
    client = scope.get("client")
    who = str(client[0]) if client else "unknown"
    if who in _WARNED_CLIENTS:
        return
    if len(_WARNED_CLIENTS) >= _MAX_WARNED:
        _WARNED_CLIENTS.clear()
    _WARNED_CLIENTS.add(who)
    logger.warning(
        "ignoring %s: %s from %s (expected seconds > 0; the route's deadline applies; "
        "logged once per client)",
        DEADLINE_HEADER,
        _loggable(raw.decode("latin-1"), 40),
        _loggable(who, 64),
    )


def requested_seconds(scope: Scope) -> float | None:
    """The client's ``X-Request-Timeout`` in seconds, or ``None`` when absent or not valid.

    A malformed, zero, negative or huge value is ignored (logged once per client).
    """
    for key, raw in scope.get("headers", ()):
        if key == _HEADER_KEY:
            text = raw.decode("latin-1").strip()
            if _HEADER_SECONDS.fullmatch(text):
                value = float(text)
                if 0 < value <= _MAX_HEADER_SECONDS:
                    return value
            _warn_once(scope, raw)
            return None
    return None


class DeadlineMiddleware:
    """Gives every request a deadline (:func:`suture.deadline`) and answers it when spent.

    :param default: seconds for a path no prefix matches (``None``: no deadline).
    :param routes: path prefix -> seconds (or ``None`` for no deadline: streams,
        health checks); the longest matching prefix wins.
    :param header: the request header that lowers the deadline (``X-Request-Timeout``,
        seconds); never raised past the route's; ignored when malformed.

    Everything the request does (retry, breaker probes, ``suture.timeout``,
    pool checkout, statement and HTTP timeouts) sees what remains. If the app
    has not started its answer when the deadline is spent, it is cancelled and
    the client gets ``503 deadline_exceeded`` with ``Retry-After``; once the
    answer has started (a stream), the deadline no longer cuts it.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        default: float | None,
        routes: Mapping[str, float | None] | Iterable[tuple[str, float | None]] = (),
        header: bool = True,
    ) -> None:
        self.app = app
        self.default = _route_seconds("default", default)
        self.table = [
            (prefix, _route_seconds(f"routes[{prefix!r}]", seconds))
            for prefix, seconds in _prefix_table(routes)
        ]
        self.header = header

    def seconds_for(self, scope: Scope) -> float | None:
        """The request's deadline in seconds: the route's, lowered by the header."""
        limit: float | None = _lookup(self.table, scope["path"], self.default)
        if limit is None:
            return None
        asked = requested_seconds(scope) if self.header else None
        return limit if asked is None else min(asked, limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seconds = self.seconds_for(scope)
        if seconds is None:
            await self.app(scope, receive, send)
            return
        started = answered = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if answered:
                return  # the 503 went out: what the cancelled app still sends is dropped
            if message["type"] == "http.response.start":
                started = True  # the answer is on its way: a stream is not cut
            await send(message)

        async def run_app() -> None:
            await self.app(scope, receive, tracking_send)

        with _deadline_scope(seconds):  # the app's task runs in a copy of this context
            task = asyncio.get_running_loop().create_task(run_app())
        try:
            await asyncio.wait({task}, timeout=seconds)
        except BaseException:  # this request cancelled (a disconnect, a shutdown)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise
        if not task.done() and not started:
            # Answer at the deadline: the app's own cleanup on cancellation (giving a
            # database connection back through a slow network, say) runs after the
            # answer, not before it.
            answered = True
            task.cancel()
            await deadline_exceeded_response(request_id(Request(scope)))(scope, receive, send)
            await asyncio.gather(task, return_exceptions=True)
            return
        try:
            await task
        except (TimeoutError, DeadlineExceeded):
            if started:
                raise
            await deadline_exceeded_response(request_id(Request(scope)))(scope, receive, send)


# --- adaptive admission ------------------------------------------------------------


class LimiterMiddleware:
    """Admits requests through an :class:`suture.AdaptiveLimiter`, shedding the excess at once.

    Each request acquires a permit with its route's priority before the app
    runs (over the limit: ``503 overloaded`` with ``Retry-After``, in
    microseconds, without touching the app) and releases it when the answer
    is complete, teaching the limiter the latency: a ``5xx`` without
    ``Retry-After`` (a bug, a failed dependency), or any answer slower than the
    limiter's ``timeout`` (a spent deadline included), is a drop; a cancelled
    request (the client left) is released untaught.

    :param limiter: the :class:`suture.AdaptiveLimiter`.
    :param priorities: path prefix -> :class:`suture.Priority` (or :data:`EXEMPT`).
    :param default: the priority of a path no prefix matches.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: Any,
        priorities: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
        default: Any,
    ) -> None:
        if not callable(getattr(limiter, "acquire", None)):
            raise TypeError(f"limiter={limiter!r}: expected a suture.AdaptiveLimiter")
        self.app = app
        self.limiter = limiter
        self.table = _prefix_table(priorities)
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        priority = _lookup(self.table, scope["path"], self.default)
        if priority is EXEMPT:
            await self.app(scope, receive, send)
            return
        try:
            permit = self.limiter.acquire(priority)
        except Overloaded as exc:
            await overloaded_response(exc, request_id(Request(scope)))(scope, receive, send)
            return
        status = 0
        shed = False

        async def tracking_send(message: Message) -> None:
            nonlocal status, shed
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if status == 503:
                    for key, _value in message.get("headers", ()):
                        if key == b"retry-after":
                            shed = True  # an answer that says "come back": not our latency
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except BaseException as exc:
            permit.release(exc)
            raise
        if status >= 500 and not shed:
            permit.dropped()
        else:
            permit.success()  # the latency decides: slower than the limiter's timeout is a drop


# --- health ------------------------------------------------------------------


def health_report(*, breakers: Iterable[Any] = (), monitors: Iterable[Any] = ()) -> dict[str, Any]:
    """Breaker states and pool levels as one JSON-ready dict.

    ``status`` is ``"ok"`` when every breaker is closed and every pool at
    NORMAL, else ``"degraded"``. ``breakers`` are ``suture.CircuitBreaker``
    objects (``stats()``), ``monitors`` ``suture.PoolMonitor`` objects.
    """
    degraded = False
    breaker_view: dict[str, Any] = {}
    for breaker in breakers:
        stats = breaker.stats()
        breaker_view[breaker.name] = stats.as_dict()
        degraded = degraded or getattr(stats.state, "value", stats.state) != "closed"
    pool_view: dict[str, Any] = {}
    for monitor in monitors:
        usage = monitor.usage
        level = monitor.level
        pool_view[str(getattr(monitor, "name", "pool"))] = {
            "level": getattr(level, "name", str(level)),
            "stale": bool(monitor.stale),
            "usage": usage.as_dict() if usage is not None else None,
        }
        degraded = degraded or getattr(level, "name", level) != "NORMAL"
    return {
        "status": "degraded" if degraded else "ok",
        "breakers": breaker_view,
        "pools": pool_view,
    }


def health_route(
    path: str = "/health",
    *,
    breakers: Iterable[Any] = (),
    monitors: Iterable[Any] = (),
    degraded_status: int = 200,
) -> Route:
    """A ``GET`` route answering :func:`health_report`.

    ``degraded_status`` is the HTTP status while degraded: ``200`` (the
    process is alive and answering, with some dependencies failing) or ``503``
    for load balancers that should stop sending traffic meanwhile.
    """
    breakers, monitors = tuple(breakers), tuple(monitors)

    async def endpoint(request: Request) -> Response:
        report = health_report(breakers=breakers, monitors=monitors)
        code = 200 if report["status"] == "ok" else degraded_status
        return JSONResponse(report, status_code=code, headers={"Cache-Control": "no-store"})

    return Route(path, endpoint, methods=["GET"], name="suture_health")


# --- suture.js -----------------------------------------------------------------

_JS_CACHE: dict[str, tuple[bytes, str]] = {}


def suture_js() -> bytes:
    """The browser client shipped in the package (``suture/static/suture.js``)."""
    cached = _JS_CACHE.get("js")
    if cached is None:
        data = importlib.resources.files("suture").joinpath("static/suture.js").read_bytes()
        cached = (data, '"' + hashlib.sha256(data).hexdigest()[:16] + '"')
        _JS_CACHE["js"] = cached
    return cached[0]


async def _serve_js(request: Request) -> Response:
    try:
        body = suture_js()
    except FileNotFoundError:
        return JSONResponse(error_body("suture.js is not installed"), status_code=404)
    etag = _JS_CACHE["js"][1]
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)


def suture_js_route(path: str = "/suture.js") -> Route:
    """A route serving ``suture.js`` (with an ETag)."""
    return Route(path, _serve_js, methods=["GET", "HEAD"], name="suture_js")


# --- install -------------------------------------------------------------------


def install(
    app: Starlette,
    *,
    admit: Admit | None = None,
    priorities: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
    default_priority: Any = None,
    js_path: str | None = "/suture.js",
    max_body_bytes: int | None = None,
    deadline: float | Mapping[str, float | None] | None = None,
    limiter: Any = None,
) -> Starlette:
    """Add suture's error handlers, optional admission, and the ``suture.js`` route to ``app``.

    Installs the four exception handlers, :class:`TransientErrorMiddleware`,
    :class:`AdmissionMiddleware` when ``admit`` is given, and the ``suture.js``
    route at ``js_path`` (``None``: no route). Works with Starlette and FastAPI
    apps. ``admit`` is usually ``monitor.admit`` of a ``suture.PoolMonitor``;
    ``default_priority`` is the priority of routes not listed in ``priorities``
    (required with ``admit``).
    The ``suture.js`` route is exempt from admission. ``max_body_bytes`` adds
    :class:`BodyLimitMiddleware` (``None``: no limit). The framework's own
    errors (``HTTPException``: 404, 405...; FastAPI's ``RequestValidationError``)
    are answered in the same JSON shape.
    ``deadline`` adds :class:`DeadlineMiddleware`: every request gets that many
    seconds, or, given a mapping of path prefix to seconds (``None``: no deadline;
    ``"/"`` is every path), its route's; an ``X-Request-Timeout`` header lowers it.
    ``limiter`` (a :class:`suture.AdaptiveLimiter`) adds :class:`LimiterMiddleware`
    with the same ``priorities``. Returns ``app``.
    """
    if max_body_bytes is not None and (
        isinstance(max_body_bytes, bool)
        or not isinstance(max_body_bytes, int)
        or max_body_bytes < 0
    ):
        raise ValueError(
            f"max_body_bytes={max_body_bytes!r}: expected a whole number of bytes >= 0, or None"
        )
    if app.debug:
        logger.warning("app.debug is on: Starlette answers unhandled errors with a traceback")
    app.add_exception_handler(BreakerOpen, breaker_open_handler)
    app.add_exception_handler(Overloaded, overloaded_handler)
    app.add_exception_handler(DeadlineExceeded, deadline_exceeded_handler)
    app.add_exception_handler(InvalidTransition, invalid_transition_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
    app.add_exception_handler(HTTPException, http_exception_handler)
    # FastAPI's validation error, when the app is a FastAPI one (already imported then).
    fastapi_exceptions = sys.modules.get("fastapi.exceptions")
    validation_error = getattr(fastapi_exceptions, "RequestValidationError", None)
    if isinstance(validation_error, type):
        app.add_exception_handler(validation_error, validation_error_handler)
    if js_path is not None:
        app.router.routes.append(suture_js_route(js_path))
    app.add_middleware(TransientErrorMiddleware)
    if max_body_bytes is not None:
        app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    table = list(priorities.items() if isinstance(priorities, Mapping) else priorities)
    if js_path is not None:
        table.append((js_path, EXEMPT))
    if (admit is not None or limiter is not None) and default_priority is None:
        raise ValueError(
            "default_priority=None: pass the priority of unlisted routes "
            "(for example suture.Priority.NORMAL) when admit or limiter is given"
        )
    if limiter is not None:
        app.add_middleware(
            LimiterMiddleware, limiter=limiter, priorities=table, default=default_priority
        )
    if admit is not None:
        app.add_middleware(
            AdmissionMiddleware,
            admit=admit,
            priorities=table,
            default=default_priority,
        )
    if deadline is not None:
        # Outermost: admission, the limiter and the app all run within the deadline.
        routes = list(deadline.items()) if isinstance(deadline, Mapping) else []
        if js_path is not None:
            routes.append((js_path, None))
        default = None if isinstance(deadline, Mapping) else deadline
        app.add_middleware(DeadlineMiddleware, default=default, routes=routes)
    app.add_middleware(RequestIdMiddleware)  # outermost: every answer carries the id
    return app
