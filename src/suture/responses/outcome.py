"""The public types of response validation: :class:`Outcome` and what it is made from.

The lowest room of ``suture.responses``: it imports nothing of its siblings,
only :class:`suture.errors.ResponseError` (which ``Outcome.raise_for_error``
raises).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, Protocol, runtime_checkable

from suture.errors import ResponseError

__all__ = [
    "ERROR_LIMIT",
    "SNIPPET_LIMIT",
    "Expect",
    "Outcome",
    "ResponseLike",
    "SimpleResponse",
    "with_attempts",
]

Expect = Literal["json", "text", "bytes", "auto"]
"""What a successful body should be: JSON (parsed), text (decoded), raw bytes,
or ``"auto"`` (JSON when the content type says so, text otherwise)."""

ERROR_LIMIT: Final = 300
"""``Outcome.error`` is at most this many characters."""

SNIPPET_LIMIT: Final = 200
"""``Outcome.snippet`` is at most this many characters."""


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


def with_attempts(outcome: Outcome, attempts: int) -> Outcome:
    """A copy of ``outcome`` that records how many attempts produced it."""
    return replace(outcome, attempts=attempts)
