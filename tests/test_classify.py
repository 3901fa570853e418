"""One definition of "transient": exceptions, HTTP statuses, Retry-After."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import suture
from suture.classify import Classifier, parse_retry_after, reason_phrase, retry_after, status_of


def http_error(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "https://api.example/items")
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError(f"HTTP {status}", request=request, response=response)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599, 408, 425, 429])
def test_transient_http_statuses(status: int) -> None:
    assert suture.is_transient(http_error(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422, 451])
def test_other_4xx_are_not_transient(status: int) -> None:
    assert not suture.is_transient(http_error(status))


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionError("x"),
        ConnectionRefusedError(),
        ConnectionResetError(),
        ConnectionAbortedError(),
        BrokenPipeError(),
        TimeoutError(),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("peer closed"),
    ],
)
def test_connection_errors_and_timeouts_are_transient(exc: Exception) -> None:
    assert suture.is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [ValueError("bad"), KeyError("k"), RuntimeError("x"), suture.BreakerOpen("db", 3.0)],
)
def test_everything_else_is_not(exc: Exception) -> None:
    assert not suture.is_transient(exc)


def test_timeout_aliases_are_transient() -> None:
    # Both are aliases of TimeoutError on 3.11+, named here because users ask for them.
    assert suture.is_transient(socket.timeout())  # noqa: UP041
    assert suture.is_transient(asyncio.TimeoutError())  # noqa: UP041


def test_cancellation_is_never_transient() -> None:
    assert not suture.is_transient(asyncio.CancelledError())
    assert not suture.is_transient(KeyboardInterrupt())
    assert not suture.is_transient(SystemExit())


def test_message_text_is_never_read() -> None:
    # The founding spec matched "4xx" in the message; a 500 whose text says 404 is transient.
    err = http_error(500)
    lying = httpx.HTTPStatusError("404 Not Found", request=err.request, response=err.response)
    assert suture.is_transient(lying)
    assert not suture.is_transient(RuntimeError("503 Service Unavailable"))


def test_duck_typed_status_of_common_clients() -> None:
    class AiohttpLike(Exception):  # aiohttp.ClientResponseError carries ``status``
        def __init__(self, status: int) -> None:
            self.status = status

    class RequestsLike(Exception):  # requests.HTTPError carries ``response.status_code``
        def __init__(self, status: int) -> None:
            self.response = type("R", (), {"status_code": status, "headers": {}})()

    assert suture.is_transient(AiohttpLike(503))
    assert not suture.is_transient(AiohttpLike(404))
    assert suture.is_transient(RequestsLike(429))
    assert not suture.is_transient(RequestsLike(400))
    assert status_of(RequestsLike(418)) == 418
    assert status_of(object()) is None


def test_response_error_is_classified_by_status() -> None:
    assert suture.is_transient(suture.ResponseError("x", status=502))
    assert not suture.is_transient(suture.ResponseError("x", status=404))


def test_sqlite_busy_is_transient_by_code_not_text() -> None:
    db = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.OperationalError) as info:
        db.execute("select * from missing_table")
    assert not suture.is_transient(info.value)  # SQLITE_ERROR: will fail again
    locked = sqlite3.OperationalError("database is locked")
    locked.sqlite_errorcode = 5  # type: ignore[attr-defined]
    assert suture.is_transient(locked)


def test_sqlalchemy_wrapper_is_looked_through() -> None:
    from sqlalchemy import exc as sa_exc

    wrapped = sa_exc.OperationalError("SELECT 1", {}, ConnectionResetError("reset"))
    assert suture.is_transient(wrapped)
    permanent = sa_exc.ProgrammingError("SELECT 1", {}, ValueError("syntax"))
    assert not suture.is_transient(permanent)
    assert suture.is_transient(sa_exc.TimeoutError("QueuePool limit of size 5 overflow 10"))


def test_classifier_extend() -> None:
    class Flaky(Exception):
        pass

    custom = suture.is_transient.extend(transient=(Flaky,), statuses=[418])
    assert custom(Flaky()) and not suture.is_transient(Flaky())
    assert custom(http_error(418)) and not suture.is_transient(http_error(418))
    strict = Classifier(permanent=(ConnectionResetError,))
    assert not strict(ConnectionResetError()) and strict(ConnectionRefusedError())
    by_predicate = suture.is_transient.extend(predicate=lambda e: isinstance(e, KeyError))
    assert by_predicate(KeyError("k"))


def test_classifier_bad_configuration() -> None:
    with pytest.raises(TypeError, match="transient"):
        Classifier(transient=("nope",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="statuses"):
        Classifier(statuses=[42])


# --- Retry-After ---------------------------------------------------------------------


def test_retry_after_seconds_and_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now=now) == 120.0
    assert parse_retry_after(" 0 ", now=now) == 0.0
    date = format_datetime(datetime.fromtimestamp(now, UTC) + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(90.0)
    past = format_datetime(datetime.fromtimestamp(now, UTC) - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0  # never negative


def test_retry_after_accepts_the_three_http_date_forms() -> None:
    now = 784_111_777.0  # Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example
    for form in (
        "Sun, 06 Nov 1994 08:49:47 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:47 GMT",  # obsolete RFC 850
        "Sun Nov  6 08:49:47 1994",  # obsolete asctime: no zone, GMT by definition
        "Sun, 06 Nov 1994 08:49:47 -0000",  # "-0000": no zone either
    ):
        assert parse_retry_after(form, now=now) == pytest.approx(10.0), form
    assert parse_retry_after("1.5", now=now) == 1.5  # a fraction is tolerated


@pytest.mark.parametrize(
    "value",
    [
        "",
        "soon",
        "-5",
        "+5",
        "NaN",
        "inf",
        "1e999",
        "1e3",
        "1_000",
        "0x10",
        "\u0663",  # ARABIC-INDIC DIGIT THREE: float() reads it, HTTP does not
        "Mon, 99 Foo 2020",
        "12 apples",
        None,
    ],
)
def test_retry_after_garbage_is_none(value: str | None) -> None:
    result = parse_retry_after(value)
    # "-5": a negative number is invalid; "1e999" parses to inf: rejected.
    assert result is None


def test_retry_after_is_clamped_to_a_day() -> None:
    assert parse_retry_after("9999999") == 86_400.0


def test_retry_after_from_errors_and_responses() -> None:
    assert retry_after(http_error(503, {"Retry-After": "7"})) == 7.0
    assert retry_after(http_error(503)) is None
    assert retry_after(suture.BreakerOpen("db", 4.5)) == 4.5
    assert retry_after(httpx.Response(429, headers={"retry-after": "3"})) == 3.0
    assert retry_after({"nope": 1}) is None


@given(st.text(max_size=80))
def test_retry_after_never_raises_and_never_negative(value: str) -> None:
    result = parse_retry_after(value)
    assert result is None or 0.0 <= result <= 86_400.0


def test_reason_phrase() -> None:
    assert reason_phrase(502) == "502 Bad Gateway"
    assert reason_phrase(599) == "599"
