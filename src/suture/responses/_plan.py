"""The decision of response validation, with no I/O: what is known before the body
is read, and the :class:`Outcome` once it is.

``Plan.start`` reads the status and headers and decides what to read: the whole
body (a success), a bounded prefix (a failure) or nothing (204, 205, 304, no
status). ``finish`` (or ``read_failed``) turns the bytes into the outcome;
``result`` emits the event. The sync and async entry points
(:mod:`suture.responses.validate`) only read the bytes between the two.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from suture._config import check_int
from suture.classify import is_transient, parse_retry_after, reason_phrase
from suture.clock import Clock
from suture.events import ResponseRejected, emit
from suture.responses._duck import header, status_of, url_of
from suture.responses._html import ErrorPage, clean_text, decode, first_line, text_snippet
from suture.responses._json import (
    apply_schema,
    body_retry_after,
    json_reason,
    message_from_json,
    schema_reason,
)
from suture.responses.outcome import Expect, Outcome
from suture.responses.reading import AsyncStreamError

__all__ = ["NO_CONTENT", "Plan", "outcome_from_exception"]

NO_CONTENT: Final = frozenset({204, 205, 304})
"""Statuses that carry no body: ok with ``data=None``, nothing read."""
_EXPECTS: Final = ("json", "text", "bytes", "auto")
_HTML_TYPES: Final = frozenset({"text/html", "application/xhtml+xml"})


class Plan:
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
    ) -> Plan:
        """Check the options (a bad one raises here) and read the status and headers."""
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
        self.status = status_of(response)
        self.url = url_of(response)
        try:
            self.headers = getattr(response, "headers", None)
        except Exception:
            self.headers = None
        ctype = header(self.headers, "content-type") or ""
        mime, _, self.params = ctype.partition(";")
        self.content_type = mime.strip().lower()
        status = self.status
        if status is None:
            self.wants_full_body = False
            self.outcome = self._failure("invalid response: no HTTP status", b"", transient=False)
        elif status in NO_CONTENT:  # nothing to read (the entry point releases it)
            self.wants_full_body = False
            self.outcome = Outcome(
                ok=True,
                status=status,
                retry_after=self._header_retry_after(),
                content_type=self.content_type,
                url=self.url,
            )
        else:
            self.wants_full_body = 200 <= status < 300
        return self

    # -- outcomes

    def _header_retry_after(self) -> float | None:
        value = header(self.headers, "retry-after")
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
        plain: bool = False,
    ) -> Outcome:
        """A failed outcome; ``error`` is markup to clean, or ``plain`` text already clean."""
        header_hint = self._header_retry_after()
        return Outcome(
            ok=False,
            status=self.status,
            error=(error if plain else clean_text(error)) or self._fallback(),
            retry_after=header_hint if header_hint is not None else retry_after,
            transient=self._transient() if transient is None else transient,
            snippet=text_snippet(body, self.params) if snippet is None else snippet,
            content_type=self.content_type,
            url=self.url,
        )

    def _fallback(self) -> str:
        if self.status is None:
            return "invalid response"
        return f"HTTP {reason_phrase(self.status)}"

    def read_failed(self, exc: Exception) -> None:
        """The body could not be read: a failed outcome that says why."""
        name = type(exc).__name__
        detail = clean_text(str(exc), limit=200)
        message = f"could not read the response body ({name}: {detail})" if detail else name
        if isinstance(exc, AsyncStreamError):
            message = str(exc)
        transient = self._transient() or bool(is_transient(exc))
        self.outcome = self._failure(message, b"", transient=transient, snippet="")

    def finish(self, body: bytes) -> None:
        """The outcome of a response whose body (or its prefix) is ``body``."""
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
                return self._failure(f"invalid JSON: {json_reason(exc)}", body, transient=False)
            if isinstance(data, dict) and data.get("success") is False:
                message = message_from_json(data) or "the server reported a failure"
                return self._failure(
                    message, body, transient=False, retry_after=body_retry_after(data)
                )
        elif expect == "bytes":
            data = body
        else:
            data = decode(body, self.params)
        if self.schema is not None:
            try:
                data = apply_schema(self.schema, data)
            except Exception as exc:
                reason = schema_reason(exc)
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
                message = message_from_json(data)
                return self._failure(
                    message or "", body, retry_after=body_retry_after(data), snippet=None
                )
            return self._failure("", body)
        if kind == "html":
            page = ErrorPage.read(decode(body, self.params))
            message = page.message  # text, already one clean line: never read as markup again
            return self._failure(message, body, snippet=page.snippet or message, plain=True)
        if kind == "text":
            text = decode(body, self.params)
            return self._failure(first_line(text), body)
        return self._failure("", body, snippet="")

    def result(self, emit_events: bool) -> Outcome:
        """The outcome, with its :class:`ResponseRejected` event when it is a failure."""
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


def _is_json_type(mime: str) -> bool:
    return mime in ("application/json", "text/json") or mime.endswith("+json")


def _body_kind(mime: str, body: bytes) -> str:  # noqa: PLR0911 - one return per content kind
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
