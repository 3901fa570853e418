"""The single definitions of "transient" and of "overload", and Retry-After parsing.

Retry, breaker and the HTTP edge all ask this module whether an error is worth
trying again. Connection errors, timeouts and the HTTP statuses 5xx, 408, 425
and 429 are transient; every other 4xx is not, and anything unknown is not,
unless the user says so (:meth:`Classifier.extend`).

HTTP status codes are read by duck typing from the common clients' errors
(``httpx.HTTPStatusError``, ``requests.HTTPError``,
``aiohttp.ClientResponseError``, :class:`suture.ResponseError`) without
importing those libraries, and never by matching message text.

*Overload* (:data:`is_overload`) is a different question: did the call fail
because a queue **in our own process** was full (a pool checkout that timed
out, :class:`suture.Overloaded`, a limiter's rejection), rather than because
the dependency erred? A full local queue says nothing about the dependency's
health, so by default a breaker counts it neither way, a retry does not retry
it (retrying into a full queue makes it longer) and the HTTP edge answers it
as ``503 overloaded`` with ``Retry-After``.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC
from http import HTTPStatus
from typing import Final

from suture._config import ExceptionClassifier
from suture.clock import SYSTEM_CLOCK

__all__ = [
    "TRANSIENT_STATUSES",
    "Classifier",
    "ExceptionClassifier",
    "OverloadClassifier",
    "is_overload",
    "is_transient",
    "is_transient_status",
    "parse_retry_after",
    "retry_after",
    "status_of",
]


TRANSIENT_STATUSES: Final = frozenset({408, 425, 429, *range(500, 600)})
"""HTTP statuses that may succeed when tried again."""

MAX_RETRY_AFTER: Final = 86_400.0
"""Retry-After values are clamped to one day."""

# delta-seconds is 1*DIGIT (RFC 9110); a decimal fraction is tolerated. ASCII only:
# no "1_000", "1e3" or non-Latin digits.
_DELTA_SECONDS: Final = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)

# Transient errors of libraries suture does not import, by "<top package>.<class name>"
# anywhere in the exception's MRO.
_TRANSIENT_NAMES: Final = frozenset(
    {
        # httpx
        "httpx.TimeoutException",
        "httpx.NetworkError",
        "httpx.RemoteProtocolError",
        "httpx.ProxyError",
        # requests / urllib3
        "requests.ConnectionError",
        "requests.Timeout",
        "requests.ChunkedEncodingError",
        "urllib3.TimeoutError",
        "urllib3.ProtocolError",
        "urllib3.NewConnectionError",
        # aiohttp
        "aiohttp.ClientConnectionError",
        "aiohttp.ServerTimeoutError",
        "aiohttp.ClientPayloadError",
        # SQLAlchemy: a pool checkout timeout and a dropped connection
        "sqlalchemy.TimeoutError",
        "sqlalchemy.DisconnectionError",
        # PostgreSQL drivers: connection-level failures and retryable conflicts
        "psycopg.OperationalError",
        "psycopg2.OperationalError",
        "asyncpg.PostgresConnectionError",
        "asyncpg.SerializationError",
        "asyncpg.DeadlockDetectedError",
        "asyncpg.TooManyConnectionsError",
        # redis-py
        "redis.ConnectionError",
        "redis.TimeoutError",
        "redis.BusyLoadingError",
    }
)

# Local resource exhaustion in libraries suture does not import: a wait for a
# slot of our own pool or queue that timed out. Checked before "transient".
_OVERLOAD_NAMES: Final = frozenset(
    {
        # SQLAlchemy's only TimeoutError: "QueuePool limit of size N overflow M reached"
        "sqlalchemy.TimeoutError",
        # psycopg's own pool, httpx's and urllib3's connection pools
        "psycopg_pool.PoolTimeout",
        "psycopg_pool.TooManyRequests",
        "httpx.PoolTimeout",
        "urllib3.EmptyPoolError",
    }
)

# psycopg errors that are OperationalError subclasses but will fail again.
_PERMANENT_NAMES: Final = frozenset(
    {
        "psycopg.errors.UndefinedTable",
        "psycopg.errors.InsufficientPrivilege",
    }
)

# sqlite3 result codes that clear by themselves: SQLITE_BUSY, SQLITE_LOCKED.
_SQLITE_TRANSIENT_CODES: Final = frozenset({5, 6})


def is_transient_status(status: int) -> bool:
    """True for HTTP 5xx, 408, 425 and 429."""
    return status in TRANSIENT_STATUSES


def status_of(obj: object) -> int | None:
    """The HTTP status carried by an error or a response, or ``None``.

    Reads ``status_code`` and ``status`` on the object, then on its
    ``response`` attribute (httpx and requests errors carry the response).
    """
    for holder in (obj, getattr(obj, "response", None)):
        if holder is None:
            continue
        for attr in ("status_code", "status"):
            value = getattr(holder, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return value
    return None


def _mro_names(exc: BaseException) -> Iterable[str]:
    for cls in type(exc).__mro__:
        root = cls.__module__.partition(".")[0]
        yield f"{root}.{cls.__qualname__}"


class Classifier:
    """Decides whether an error is transient. Immutable; :meth:`extend` returns a new one.

    Order of the questions: cancellation is never transient; an error that
    carries a boolean ``transient`` attribute says so itself; the user's
    permanent types, then transient types and predicates; an HTTP status;
    the builtin connection errors and timeouts; known errors of common
    libraries, by name; SQLAlchemy's wrapper is looked through to the
    driver's error.
    """

    __slots__ = ("_permanent", "_predicates", "_statuses", "_transient")

    def __init__(
        self,
        *,
        transient: tuple[type[BaseException], ...] = (),
        permanent: tuple[type[BaseException], ...] = (),
        statuses: Iterable[int] = TRANSIENT_STATUSES,
        predicates: tuple[ExceptionClassifier, ...] = (),
    ) -> None:
        for name, types in (("transient", transient), ("permanent", permanent)):
            for t in types:
                if not (isinstance(t, type) and issubclass(t, BaseException)):
                    raise TypeError(
                        f"{name}={types!r}: every item must be an exception type, got {t!r}"
                    )
        status_set = frozenset(statuses)
        for s in status_set:
            if not (isinstance(s, int) and 100 <= s <= 599):
                raise ValueError(f"statuses: {s!r} is not an HTTP status code (100..599)")
        self._transient = transient
        self._permanent = permanent
        self._statuses = status_set
        self._predicates = predicates

    def extend(
        self,
        *,
        transient: tuple[type[BaseException], ...] = (),
        permanent: tuple[type[BaseException], ...] = (),
        statuses: Iterable[int] = (),
        predicate: ExceptionClassifier | None = None,
    ) -> Classifier:
        """A new classifier that also treats these types, statuses or predicate as transient
        (or ``permanent`` types as not transient)."""
        return Classifier(
            transient=self._transient + tuple(transient),
            permanent=self._permanent + tuple(permanent),
            statuses=self._statuses | frozenset(statuses),
            predicates=self._predicates + ((predicate,) if predicate else ()),
        )

    def status_is_transient(self, status: int) -> bool:
        return status in self._statuses

    def __call__(self, exc: BaseException) -> bool:  # noqa: PLR0911 - one early return per kind of error: the classification table itself
        if not isinstance(exc, Exception):  # cancellation, KeyboardInterrupt, SystemExit
            return False
        if self._permanent and isinstance(exc, self._permanent):
            return False
        if self._transient and isinstance(exc, self._transient):
            return True
        for predicate in self._predicates:
            if predicate(exc):
                return True
        status = status_of(exc)
        if status is not None:
            return status in self._statuses
        own = getattr(exc, "transient", None)
        if isinstance(own, bool):  # suture's errors, and any error that says so itself
            return own
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        return self._by_name(exc)

    def _by_name(self, exc: Exception) -> bool:
        names = list(_mro_names(exc))
        full = f"{type(exc).__module__}.{type(exc).__qualname__}"
        if full in _PERMANENT_NAMES:
            return False
        if any(n in _TRANSIENT_NAMES for n in names):
            return True
        # sqlite3: "database is locked" and friends, by result code, never by text.
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int) and (code & 0xFF) in _SQLITE_TRANSIENT_CODES:
            return True
        # SQLAlchemy wraps the driver's error in ``orig``; a dropped connection
        # is flagged with ``connection_invalidated``.
        if "sqlalchemy.DBAPIError" in names:
            if getattr(exc, "connection_invalidated", False):
                return True
            orig = getattr(exc, "orig", None)
            if isinstance(orig, BaseException) and orig is not exc:
                return self(orig)
        return False

    def __repr__(self) -> str:
        extra = []
        if self._transient:
            extra.append(f"transient={self._transient!r}")
        if self._permanent:
            extra.append(f"permanent={self._permanent!r}")
        if self._predicates:
            extra.append(f"predicates={len(self._predicates)}")
        return f"Classifier({', '.join(extra)})"


is_transient: Final = Classifier()
"""The default classifier: ``suture.is_transient(exc) -> bool``."""


class OverloadClassifier:
    """Decides whether an error is *overload*: a full queue in our own process.

    Order of the questions: cancellation is never overload; an error that
    carries a boolean ``overload`` attribute says so itself
    (:class:`suture.Overloaded` does); the user's types and predicates; known
    errors of common libraries, by name (SQLAlchemy's pool checkout timeout,
    ``httpx.PoolTimeout``, ``psycopg_pool.PoolTimeout``, urllib3's
    ``EmptyPoolError``). A bare ``TimeoutError`` from an ``asyncio`` or
    ``threading`` semaphore wait cannot be told from a dependency's timeout:
    raise :class:`suture.Overloaded` there (``suture.AdaptiveLimiter`` and the
    pool monitor do), or add your type with :meth:`extend`.
    Immutable; :meth:`extend` returns a new one.
    """

    __slots__ = ("_predicates", "_types")

    def __init__(
        self,
        *,
        types: tuple[type[BaseException], ...] = (),
        predicates: tuple[ExceptionClassifier, ...] = (),
    ) -> None:
        for t in types:
            if not (isinstance(t, type) and issubclass(t, BaseException)):
                raise TypeError(f"types={types!r}: every item must be an exception type, got {t!r}")
        for p in predicates:
            if not callable(p):
                raise TypeError(f"predicates: {p!r} is not a callable (exception) -> bool")
        self._types = types
        self._predicates = predicates

    def extend(
        self,
        *,
        types: tuple[type[BaseException], ...] = (),
        predicate: ExceptionClassifier | None = None,
    ) -> OverloadClassifier:
        """A new classifier that also calls these types (or what ``predicate`` accepts) overload."""
        return OverloadClassifier(
            types=self._types + tuple(types),
            predicates=self._predicates + ((predicate,) if predicate else ()),
        )

    def __call__(self, exc: BaseException) -> bool:
        if not isinstance(exc, Exception):
            return False
        own = getattr(exc, "overload", None)
        if isinstance(own, bool):
            return own
        if self._types and isinstance(exc, self._types):
            return True
        for predicate in self._predicates:
            if predicate(exc):
                return True
        return any(n in _OVERLOAD_NAMES for n in _mro_names(exc))

    def __repr__(self) -> str:
        extra = []
        if self._types:
            extra.append(f"types={self._types!r}")
        if self._predicates:
            extra.append(f"predicates={len(self._predicates)}")
        return f"OverloadClassifier({', '.join(extra)})"


is_overload: Final = OverloadClassifier()
"""The default overload classifier: ``suture.classify.is_overload(exc) -> bool``."""


def _header(headers: object, name: str) -> str | None:
    if headers is None:
        return None
    getter = getattr(headers, "get", None)
    if getter is None:
        return None
    value = getter(name)
    if value is None and isinstance(headers, Mapping):
        lname = name.lower()
        for key, val in headers.items():
            if isinstance(key, str) and key.lower() == lname:
                value = val
                break
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value if isinstance(value, str) else None


def parse_retry_after(value: str | bytes | None, *, now: float | None = None) -> float | None:  # noqa: PLR0911 - one return per Retry-After form (empty, seconds, date, garbage)
    """A ``Retry-After`` header value as seconds from ``now`` (wall clock, epoch seconds).

    Accepts delta-seconds and HTTP dates. ``None`` when absent or invalid;
    never negative; at most one day.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("latin-1")
        except Exception:  # pragma: no cover - latin-1 decodes any bytes
            return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        return min(float(text), MAX_RETRY_AFTER)
    if text[0].isdigit() or text[0] in "+-.":
        return None  # a malformed number is not a date either
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # An HTTP-date is always GMT: the asctime form ("Sun Nov  6 08:49:37 1994")
        # and "-0000" carry no zone, and recipients must accept them (RFC 9110 5.6.7).
        when = when.replace(tzinfo=UTC)
    current = SYSTEM_CLOCK.wall() if now is None else now
    return min(max(0.0, when.timestamp() - current), MAX_RETRY_AFTER)


def retry_after(obj: object, *, now: float | None = None) -> float | None:
    """The server's requested wait, in seconds, from an error or a response.

    An error may carry ``retry_after`` itself (:class:`suture.BreakerOpen`,
    :class:`suture.ResponseError`); otherwise the ``Retry-After`` header of
    the object or of its ``response`` is parsed. ``None`` when absent or
    invalid, never negative.
    """
    own = getattr(obj, "retry_after", None)
    if isinstance(own, (int, float)) and not isinstance(own, bool):
        if math.isfinite(own):
            return min(max(0.0, float(own)), MAX_RETRY_AFTER)
        return None
    for holder in (obj, getattr(obj, "response", None)):
        if holder is None:
            continue
        try:
            value = _header(getattr(holder, "headers", None), "Retry-After")
        except Exception:
            value = None
        if value is not None:
            return parse_retry_after(value, now=now)
    return None


def reason_phrase(status: int) -> str:
    """``"502 Bad Gateway"`` for 502; the bare number for unknown codes."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)
