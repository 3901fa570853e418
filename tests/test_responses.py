"""suture.validate_response: a table of real-world bodies, bounded reads, and properties."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, ClassVar

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import suture
from suture import Outcome, ResponseError, SimpleResponse, avalidate_response, validate_response
from suture.events import ResponseRejected
from suture.responses import clean_text
from suture.testing import FakeClock, capture_events

TAG = re.compile(r"<[A-Za-z/!?]")

Validate = Callable[..., Awaitable[Outcome]]

NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
APACHE_503 = (
    b'<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
    b"<title>503 Service Unavailable</title>\n</head><body>\n<h1>Service Unavailable</h1>\n"
    b"<p>The server is temporarily unable to service your\nrequest due to maintenance "
    b"downtime or capacity\nproblems. Please try again later.</p>\n<hr>\n"
    b"<address>Apache/2.4.57 (Debian) Server at example.org Port 80</address>\n</body></html>\n"
)
CLOUDFLARE_LIKE = (
    b"<!DOCTYPE html><html><head><meta charset='utf-8'>"
    b"<title>example.org | 504: Gateway time-out</title>"
    b"<style>body{font-family:sans-serif}</style><script>var x = '<h1>no</h1>';</script>"
    b"</head><body><h1>Gateway time-out</h1></body></html>"
)
NO_TITLE = (
    b"<html><body><div class='x'><h1>  Database\n  is   <em>down</em> </h1></div></body></html>"
)
TITLE_SCRIPT = (
    b"<html><head><title><script>alert('x')</script>Oops &amp; sorry</title></head></html>"
)
EMPTY_HTML = b"<html><head></head><body><p></p></body></html>"
ENTITIES = b"<title>Caf&eacute; &lt;closed&gt; &#x263A;\x07\x1b[31m</title>"


def resp(
    status: int, body: bytes | str = b"", content_type: str | None = None, **headers: str
) -> SimpleResponse:
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    if content_type is not None:
        hdrs["Content-Type"] = content_type
    return SimpleResponse(status, hdrs, body)


# status, content type, body, headers, expected (ok, error, retry_after, transient)
TABLE: list[tuple[str, SimpleResponse, bool, str | None, float | None, bool]] = [
    ("nginx 502", resp(502, NGINX_502, "text/html"), False, "502 Bad Gateway", None, True),
    (
        "apache 503",
        resp(503, APACHE_503, "text/html; charset=iso-8859-1"),
        False,
        "503 Service Unavailable",
        None,
        True,
    ),
    (
        "proxy 504 with script",
        resp(504, CLOUDFLARE_LIKE, "text/html"),
        False,
        "example.org | 504: Gateway time-out",
        None,
        True,
    ),
    ("h1 without title", resp(500, NO_TITLE, "text/html"), False, "Database is down", None, True),
    (
        "title holding a script",
        resp(500, TITLE_SCRIPT, "text/html"),
        False,
        "Oops & sorry",
        None,
        True,
    ),
    (
        "empty html",
        resp(500, EMPTY_HTML, "text/html"),
        False,
        "HTTP 500 Internal Server Error",
        None,
        True,
    ),
    (
        "entities and controls",
        resp(500, ENTITIES, "text/html"),
        False,
        "Café \u2039closed\u203a ☺[31m",  # escaped words kept, in look-alikes (issue 17)
        None,
        True,
    ),
    ("html without content type", resp(502, NGINX_502), False, "502 Bad Gateway", None, True),
    (
        "problem+json",
        resp(
            404,
            b'{"type":"about:blank","title":"Not Found","detail":"no user 7"}',
            "application/problem+json",
        ),
        False,
        "Not Found: no user 7",
        None,
        False,
    ),
    (
        "problem+json title only",
        resp(403, b'{"title":"Forbidden","status":403}', "application/problem+json"),
        False,
        "Forbidden",
        None,
        False,
    ),
    (
        "fastapi detail string",
        resp(404, b'{"detail":"Item not found"}', "application/json"),
        False,
        "Item not found",
        None,
        False,
    ),
    (
        "fastapi detail list",
        resp(
            422,
            json.dumps(
                {
                    "detail": [
                        {
                            "type": "missing",
                            "loc": ["body", "name"],
                            "msg": "Field required",
                            "input": {},
                        },
                        {
                            "type": "int_parsing",
                            "loc": ["query", "n"],
                            "msg": "Input should be a valid integer",
                        },
                    ]
                }
            ),
            "application/json",
        ),
        False,
        "name: Field required; query.n: Input should be a valid integer",
        None,
        False,
    ),
    (
        "graphql errors",
        resp(
            400,
            b'{"errors":[{"message":"Cannot query field \\"x\\""}],"data":null}',
            "application/graphql-response+json",
        ),
        False,
        'Cannot query field "x"',
        None,
        False,
    ),
    (
        "nested error.message",
        resp(500, b'{"error":{"code":13,"message":"backend crashed"}}', "application/json"),
        False,
        "backend crashed",
        None,
        True,
    ),
    (
        "oauth error",
        resp(
            400, b'{"error":"invalid_grant","error_description":"expired code"}', "application/json"
        ),
        False,
        "invalid_grant: expired code",
        None,
        False,
    ),
    (
        "suture contract 503",
        resp(503, b'{"success":false,"error":"Overloaded","retryAfter":7}', "application/json"),
        False,
        "Overloaded",
        7.0,
        True,
    ),
    (
        "retry_after in body",
        resp(429, b'{"message":"slow down","retry_after":"2.5"}', "application/json"),
        False,
        "slow down",
        2.5,
        True,
    ),
    (
        "header wins over body",
        resp(503, b'{"error":"x","retryAfter":99}', "application/json", Retry_After="3"),
        False,
        "x",
        3.0,
        True,
    ),
    (
        "garbage retry-after",
        resp(503, b"busy", "text/plain", Retry_After="soon-ish"),
        False,
        "busy",
        None,
        True,
    ),
    (
        "negative retry-after",
        resp(503, b"", None, Retry_After="-5"),
        False,
        "HTTP 503 Service Unavailable",
        None,
        True,
    ),
    (
        "huge retry-after clamped",
        resp(429, b"", None, Retry_After="99999999"),
        False,
        "HTTP 429 Too Many Requests",
        86400.0,
        True,
    ),
    (
        "body retry-after garbage",
        resp(503, b'{"error":"x","retryAfter":"later"}', "application/json"),
        False,
        "x",
        None,
        True,
    ),
    (
        "body retry-after negative",
        resp(503, b'{"error":"x","retryAfter":-3}', "application/json"),
        False,
        "x",
        0.0,
        True,
    ),
    (
        "truncated json",
        resp(502, b'{"error": "upstream tim', "application/json"),
        False,
        "HTTP 502 Bad Gateway",
        None,
        True,
    ),
    (
        "plain text first line",
        resp(500, b"\n\n  Internal error\nTraceback (most recent...)\n", "text/plain"),
        False,
        "Internal error",
        None,
        True,
    ),
    (
        "non-utf8 text",
        resp(500, b"Erreur: base \xe9teinte \xff\xfe", "text/plain"),
        False,
        "Erreur: base \ufffdteinte \ufffd\ufffd",
        None,
        True,
    ),
    (
        "latin-1 declared",
        resp(500, b"Erreur: base \xe9teinte", "text/plain; charset=latin-1"),
        False,
        "Erreur: base éteinte",
        None,
        True,
    ),
    (
        "unknown charset",
        resp(500, b"plain", "text/plain; charset=klingon"),
        False,
        "plain",
        None,
        True,
    ),
    (
        "binary error",
        resp(500, b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
        False,
        "HTTP 500 Internal Server Error",
        None,
        True,
    ),
    ("empty 404", resp(404), False, "HTTP 404 Not Found", None, False),
    ("unknown status", resp(599, b""), False, "HTTP 599", None, True),
    (
        "redirect not followed",
        resp(302, b"", None, Location="/x"),
        False,
        "HTTP 302 Found",
        None,
        False,
    ),
    (
        "json error with tags",
        resp(400, b'{"error":"<b>bad</b> <script>alert(1)</script>input"}', "application/json"),
        False,
        "bad input",
        None,
        False,
    ),
    (
        "json string body",
        resp(500, b'"just a string"', "application/json"),
        False,
        "just a string",
        None,
        True,
    ),
    (
        "json error too long",
        resp(400, json.dumps({"error": "x" * 5000}), "application/json"),
        False,
        "x" * 299 + "…",
        None,
        False,
    ),
    # successes
    ("200 json", resp(200, b'{"a":1}', "application/json"), True, None, None, False),
    (
        "200 vendor +json with params",
        resp(200, b'{"a":1}', "application/vnd.api+json; charset=utf-8"),
        True,
        None,
        None,
        False,
    ),
    ("200 text/json", resp(200, b"[1,2]", "text/json"), True, None, None, False),
    ("200 bom", resp(200, b'\xef\xbb\xbf{"a":1}', "application/json"), True, None, None, False),
    ("200 no content type", resp(200, b'{"a":1}'), True, None, None, False),
    ("204", resp(204), True, None, None, False),
    ("205", resp(205), True, None, None, False),
    ("304", resp(304), True, None, None, False),
    (
        "200 html when json expected",
        resp(200, b"<html><title>Login</title></html>", "text/html"),
        False,
        "expected JSON, got text/html",
        None,
        False,
    ),
    (
        "200 invalid json",
        resp(200, b'{"a":', "application/json"),
        False,
        "invalid JSON: Expecting value at line 1 column 6",
        None,
        False,
    ),
    (
        "200 empty json",
        resp(200, b"", "application/json"),
        False,
        "expected JSON, got an empty body",
        None,
        False,
    ),
    (
        "200 success false",
        resp(200, b'{"success":false,"error":"no such ticket"}', "application/json"),
        False,
        "no such ticket",
        None,
        False,
    ),
]


@pytest.mark.parametrize(
    ("name", "response", "ok", "error", "retry_after", "transient"),
    TABLE,
    ids=[row[0] for row in TABLE],
)
def test_table(
    name: str,
    response: SimpleResponse,
    ok: bool,
    error: str | None,
    retry_after: float | None,
    transient: bool,
) -> None:
    outcome = validate_response(response)
    assert outcome.ok is ok, outcome
    assert outcome.error == error
    assert outcome.retry_after == retry_after
    assert outcome.transient is transient
    assert outcome.status == response.status
    if not ok:
        assert outcome.data is None
        assert outcome.error is not None
        assert "\n" not in outcome.error and len(outcome.error) <= 300
        assert not TAG.search(outcome.error)
        assert not TAG.search(outcome.snippet)


def test_success_data_and_content_type() -> None:
    outcome = validate_response(
        resp(200, b'\xef\xbb\xbf{"a":[1]}', "Application/JSON; charset=UTF-8")
    )
    assert outcome == Outcome(ok=True, status=200, data={"a": [1]}, content_type="application/json")
    assert validate_response(resp(204)).data is None


def test_snippets() -> None:
    nginx = validate_response(resp(502, NGINX_502, "text/html"))
    assert nginx.snippet == "502 Bad Gateway nginx/1.24.0"
    assert nginx.content_type == "text/html"
    script = validate_response(resp(504, CLOUDFLARE_LIKE, "text/html"))
    assert "no" not in script.snippet.split()  # the script's text is dropped
    text = validate_response(resp(500, "line one\nline two\x00", "text/plain"))
    assert text.snippet == "line one line two"


def test_retry_after_http_date() -> None:
    clock = FakeClock(wall_start=1_700_000_000.0)
    when = datetime.fromtimestamp(1_700_000_000 + 120, tz=UTC)
    response = resp(503, b"", None, Retry_After=format_datetime(when, usegmt=True))
    assert validate_response(response, clock=clock).retry_after == 120.0
    past = format_datetime(datetime.fromtimestamp(1_600_000_000, tz=UTC), usegmt=True)
    assert validate_response(resp(503, Retry_After=past), clock=clock).retry_after == 0.0


def test_expect_modes() -> None:
    r = resp(200, "héllo", "text/plain; charset=utf-8")
    assert validate_response(r, expect="text").data == "héllo"
    assert validate_response(r, expect="bytes").data == "héllo".encode()
    assert validate_response(r, expect="auto").data == "héllo"
    assert validate_response(resp(200, b"[1]", "application/json"), expect="auto").data == [1]
    assert not validate_response(r, expect="json").ok


def test_schema_pydantic_and_callable() -> None:
    pydantic = pytest.importorskip("pydantic")

    class User(pydantic.BaseModel):  # type: ignore[misc,name-defined]
        id: int
        name: str

    good = validate_response(resp(200, b'{"id": 1, "name": "a"}', "application/json"), schema=User)
    assert good.ok and good.data == User(id=1, name="a")
    bad = validate_response(resp(200, b'{"id": "x"}', "application/json"), schema=User)
    assert not bad.ok and not bad.transient
    assert bad.error is not None
    assert bad.error.startswith("response did not match the schema: id: Input should be")
    assert "name: Field required" in bad.error

    def positive(data: Any) -> int:
        if data <= 0:
            raise ValueError("must be positive")
        return int(data)

    assert validate_response(resp(200, b"3", "application/json"), schema=positive).data == 3
    neg = validate_response(resp(200, b"-1", "application/json"), schema=positive)
    assert neg.error == "response did not match the schema: ValueError: must be positive"


def test_raise_for_error() -> None:
    ok = validate_response(resp(200, b"{}", "application/json"))
    assert ok.raise_for_error() is ok
    failed = validate_response(resp(503, b'{"error":"busy","retryAfter":2}', "application/json"))
    with pytest.raises(ResponseError) as info:
        failed.raise_for_error()
    err = info.value
    assert (str(err), err.status, err.retry_after, err.transient) == ("busy", 503, 2.0, True)
    assert err.outcome is failed
    assert suture.is_transient(err)
    assert suture.retry_after(err) == 2.0
    with pytest.raises(ResponseError) as info404:
        validate_response(resp(404)).raise_for_error()
    assert not suture.is_transient(info404.value)


def test_as_dict_is_the_browser_shape() -> None:
    outcome = validate_response(resp(503, b'{"error":"busy","retryAfter":2}', "application/json"))
    assert outcome.as_dict() == {
        "ok": False,
        "status": 503,
        "data": None,
        "error": "busy",
        "retryAfter": 2.0,
        "transient": True,
        "snippet": '{"error":"busy","retryAfter":2}',
        "contentType": "application/json",
        "url": "",
        "attempts": 1,
    }
    json.dumps(outcome.as_dict())


def test_outcome_is_frozen() -> None:
    outcome = validate_response(resp(204))
    with pytest.raises(AttributeError):
        outcome.ok = False  # type: ignore[misc]


def test_bad_arguments_raise_at_the_call() -> None:
    with pytest.raises(ValueError, match="expect='xml'"):
        validate_response(resp(200), expect="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_error_bytes=-1"):
        validate_response(resp(200), max_error_bytes=-1)
    with pytest.raises(TypeError, match="schema=3"):
        validate_response(resp(200), schema=3)


def test_events_for_failures_only() -> None:
    with capture_events() as events:
        validate_response(resp(200, b"{}", "application/json"))
        validate_response(
            resp(
                502,
                NGINX_502,
                "text/html",
            )
        )
        validate_response(resp(500), emit_events=False)
    rejected = events.of(ResponseRejected)
    assert [(e.status, e.error, e.transient) for e in rejected] == [(502, "502 Bad Gateway", True)]


def test_no_status_and_odd_objects() -> None:
    class Weird:
        status = "200"
        headers = None
        body = b"{}"

    outcome = validate_response(Weird())
    assert not outcome.ok and outcome.status is None
    assert outcome.error == "invalid response: no HTTP status"
    assert not validate_response(object()).ok

    class Boom:
        status_code = 500
        headers: ClassVar = {"content-type": "text/plain"}

        def read(self, n: int = -1) -> bytes:
            raise ConnectionResetError("peer reset")

    broken = validate_response(Boom())
    assert broken.error == "could not read the response body (ConnectionResetError: peer reset)"
    assert broken.transient


def test_urllib_style_file_response_reads_a_prefix() -> None:
    import io

    class FileResponse:
        status = 500
        headers: ClassVar = {"Content-Type": "text/plain"}

        def __init__(self) -> None:
            self.fp = io.BytesIO(b"oops\n" + b"x" * 1_000_000)
            self.asked: list[int] = []

        def read(self, n: int = -1) -> bytes:
            self.asked.append(n)
            return self.fp.read(n)

    r = FileResponse()
    assert validate_response(r, max_error_bytes=1024).error == "oops"
    assert r.asked == [1024]


def test_case_insensitive_headers_in_plain_dicts_and_pairs() -> None:
    class Plain:
        status = 503
        headers: ClassVar = {"RETRY-AFTER": "4", "CONTENT-TYPE": "application/json"}
        body = b'{"error":"x"}'

    assert validate_response(Plain()).retry_after == 4.0

    class Pairs:
        status = 503
        headers: ClassVar = [("Retry-After", "5")]
        body = b""

    assert validate_response(Pairs()).retry_after == 5.0


# --- httpx responses, read and streamed --------------------------------------------


class CountingStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A 40 MB body served lazily in 16 KiB chunks, counting what is pulled."""

    def __init__(self, total: int = 40 * 1024 * 1024, chunk: bytes | None = None) -> None:
        self.chunk = chunk or (b"<title>Big failure</title>" + b"<p>lorem ipsum</p>" * 1000)[:16384]
        self.total = total
        self.pulled = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        while self.pulled < self.total:
            self.pulled += len(self.chunk)
            yield self.chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self:
            yield chunk

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture(params=["sync", "async"])
def validate(request: pytest.FixtureRequest) -> Validate:
    """``validate_response`` or ``avalidate_response``, awaited alike."""
    if request.param == "sync":

        async def sync(response: object, **options: Any) -> Outcome:
            return validate_response(response, **options)

        return sync
    return avalidate_response


async def test_streamed_40mb_error_page_reads_only_a_prefix(validate: Validate) -> None:
    stream = CountingStream()
    response = httpx.Response(503, headers={"content-type": "text/html"}, stream=stream)
    outcome = await validate(response)
    assert outcome.error == "Big failure"
    assert (outcome.error, outcome.transient) == ("Big failure", True)
    assert stream.pulled <= 65536 + len(stream.chunk)
    assert stream.closed


def test_streamed_error_with_smaller_limit() -> None:
    stream = CountingStream()
    response = httpx.Response(500, headers={"content-type": "text/html"}, stream=stream)
    validate_response(response, max_error_bytes=1000)
    assert stream.pulled == len(stream.chunk)
    assert stream.closed


def test_in_memory_40mb_is_only_sliced() -> None:
    body = b"<title>Too big</title>" + b"<p>x</p>" * (5 * 1024 * 1024)
    outcome = validate_response(resp(500, body, "text/html"))
    assert outcome.error == "Too big"


async def test_sync_validation_of_an_async_stream_is_an_outcome_not_an_error() -> None:
    class AsyncOnly(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b"{}"

    response = httpx.Response(200, stream=AsyncOnly())
    outcome = validate_response(response)
    assert not outcome.ok
    assert outcome.error == (
        "the response body is an async stream: validate it with avalidate_response"
    )
    assert (await avalidate_response(response)).data == {}


def test_httpx_read_response_and_url() -> None:
    request = httpx.Request("GET", "https://api.example/items")
    response = httpx.Response(200, json={"items": []}, request=request)
    outcome = validate_response(response)
    assert outcome.data == {"items": []}
    assert outcome.url == "https://api.example/items"
    streamed_ok = httpx.Response(
        200, headers={"content-type": "application/json"}, stream=httpx.ByteStream(b"[1]")
    )
    assert validate_response(streamed_ok).data == [1]


def test_httpx_gzip_error_body_is_decoded() -> None:
    import gzip

    body = gzip.compress(b"<title>Zipped failure</title>")
    response = httpx.Response(
        502,
        headers={"content-type": "text/html", "content-encoding": "gzip"},
        stream=httpx.ByteStream(body),
    )
    assert validate_response(response).error == "Zipped failure"


def test_tail_of_a_truncated_multibyte_character() -> None:
    body = ("é" * 40000).encode()  # 80000 bytes, cut inside a character at 65536 would be odd
    outcome = validate_response(resp(500, body, "text/plain"), max_error_bytes=65535)
    assert outcome.error is not None and outcome.error.startswith("éé")


# --- clean_text ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("a\tb\r\nc", "a b c"),
        ("<b>x</b>", "x"),
        ("1 < 2 and 3 > 2", "1 < 2 and 3 > 2"),
        ("<scr<script>ipt>alert(1)</script>", "ipt>alert(1)"),
        ("\u202eevil\u200b", "evil"),
        ("x\u2028y", "x y"),
        ("<img src=x onerror=alert(1)>hi", "hi"),
        ("unterminated <b", "unterminated \u2039b"),
        ("", ""),
    ],
)
def test_clean_text(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


# --- properties --------------------------------------------------------------------

header_names = st.sampled_from(
    ["Content-Type", "Retry-After", "content-type", "retry-after", "X-Other", "Content-Length"]
)
header_values = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "text/html",
            "text/plain; charset=latin-1",
            "application/problem+json",
            "text/html; charset=bogus",
            "image/png",
            "120",
            "-1",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "nan",
            "inf",
            "1e400",
            "0x10",
            "9" * 64,
            "text/html; charset=utf-16",
            "text/plain; charset=punycode",
            "application/json; charset=rot13",
        ]
    ),
    st.text(max_size=40),
)
bodies = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=400).map(str.encode),
    st.builds(
        lambda t, h: f"<html><title>{t}</title><h1>{h}</h1></html>".encode(),
        st.text(max_size=80),
        st.text(max_size=80),
    ),
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.sampled_from([10**400, -(10**400)])  # past float's range
        | st.floats()
        | st.text(max_size=30),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "error",
                        "message",
                        "detail",
                        "title",
                        "errors",
                        "retryAfter",
                        "msg",
                        "loc",
                        "success",
                    ]
                )
                | st.text(max_size=5),
                children,
                max_size=4,
            )
        ),
        max_leaves=12,
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    status=st.one_of(st.integers(min_value=100, max_value=599), st.integers()),
    headers=st.lists(st.tuples(header_names, header_values), max_size=4),
    body=bodies,
    expect=st.sampled_from(["json", "text", "bytes", "auto"]),
    limit=st.integers(min_value=0, max_value=500),
)
def test_never_raises_and_errors_are_one_clean_line(
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    expect: Any,
    limit: int,
) -> None:
    outcome = validate_response(
        SimpleResponse(status, headers, body),
        expect=expect,
        max_error_bytes=limit,
        emit_events=False,
    )
    assert isinstance(outcome, Outcome)
    if outcome.ok:
        assert outcome.error is None
    else:
        assert outcome.error
        assert len(outcome.error) <= 300
        assert outcome.error == " ".join(outcome.error.split())  # one line, collapsed
        assert outcome.error.isprintable()
        assert not TAG.search(outcome.error)
        assert not TAG.search(outcome.snippet)
    if outcome.retry_after is not None:
        assert 0.0 <= outcome.retry_after <= 86400.0
    json.dumps(outcome.as_dict(), default=str)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=600))
def test_clean_text_property(text: str) -> None:
    out = clean_text(text)
    assert len(out) <= 300
    assert "\n" not in out and "\r" not in out
    assert out.isprintable()
    assert not TAG.search(out)


async def test_aiohttp_style_response_reads_a_bounded_prefix() -> None:
    class StreamReader:
        def __init__(self, data: bytes) -> None:
            self.data = data
            self.asked: list[int] = []

        async def read(self, n: int = -1) -> bytes:
            self.asked.append(n)
            size = min(n, 1000) if n >= 0 else len(self.data)  # short reads, as sockets do
            out, self.data = self.data[:size], self.data[size:]
            return out

    class AiohttpLike:
        def __init__(self, status: int, body: bytes) -> None:
            self.status = status
            self.headers = {"Content-Type": "application/json"}
            self.content = StreamReader(body)
            self.released = False

        async def read(self) -> bytes:
            return await self.content.read(-1)

        def release(self) -> None:
            self.released = True

    failing = AiohttpLike(503, b'{"error": "busy"}' + b" " * 1_000_000)
    outcome = await avalidate_response(failing, max_error_bytes=4096)
    assert (outcome.error, outcome.transient) == ("busy", True)
    assert sum(failing.content.asked) <= 4096 * 5 and len(failing.content.asked) == 5
    assert failing.released
    ok = await avalidate_response(AiohttpLike(200, b'{"a": 1}'))
    assert ok.data == {"a": 1}


@pytest.mark.parametrize("filler", [0, 10, 3000])
def test_h1_found_after_long_text_scripts_and_comments(filler: int) -> None:
    body = (
        "<html><body>"
        + "<p>filler text</p>\n" * filler
        + "<script>var s = '<h1>fake</h1>';</script>"
        + "<style>h1::before { content: '<h1>styled</h1>' }</style>"
        + "<!-- <h1>commented</h1> -->"
        + "<svg><title>icon</title></svg>"
        + "<H1 class='x'>Real &amp; true</H1>"
        + "<p>after</p></body></html>"
    ).encode()
    outcome = validate_response(resp(500, body, "text/html"))
    assert outcome.error == "Real & true"


def test_title_after_the_snippet_is_still_found() -> None:
    body = ("<html><body>" + "<p>text</p>" * 3000 + "<title>Late title</title>").encode()
    assert validate_response(resp(500, body, "text/html")).error == "Late title"


# --- hostile input: bounded work, never an exception ---------------------------------


@pytest.mark.parametrize("unit", ["<a ", "</", "<?", "<!", "<!--", "<title>"])
def test_unterminated_markup_never_reaches_close_unbounded(
    unit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # HTMLParser.close() re-reads an unterminated construct one character at a time,
    # at a cost that grows with the square of its length (46 s for 64 KiB of "<a ").
    # The tokenizer must never be left holding more than a short tail at close().
    from suture.responses import _html

    pending: list[int] = []
    for cls in (_html.ErrorPage, _html.TextOnly):
        original = cls.close

        def spy(self: Any, _original: Any = original) -> None:
            pending.append(len(self.rawdata))
            _original(self)

        monkeypatch.setattr(cls, "close", spy)
    body = (unit * (65536 // len(unit))).encode()
    outcome = validate_response(resp(502, body, "text/html"))
    assert not outcome.ok
    assert outcome.error == "HTTP 502 Bad Gateway" or not TAG.search(outcome.error or "")
    clean_text(unit * 1000)
    json_body = json.dumps({"error": unit * 3000}).encode()
    assert not validate_response(resp(400, json_body, "application/json")).ok
    assert pending
    assert max(pending) <= _html.MAX_TAIL


def test_title_with_unterminated_tag_after_it_is_kept() -> None:
    body = b"<html><head><title>Down for maintenance</title></head><body><a " + b"x" * 5000
    assert validate_response(resp(503, body, "text/html")).error == "Down for maintenance"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(9 * 10**4000, None), (-(9 * 10**4000), None), (1e308 * 10, None), ("1e400", None)],
)
def test_body_retry_after_overflow_is_ignored(value: Any, expected: Any) -> None:
    import sys

    if isinstance(value, int):
        old = sys.get_int_max_str_digits()
        sys.set_int_max_str_digits(0)
        try:
            text = '{"error": "busy", "retryAfter": ' + str(value) + "}"
        finally:
            sys.set_int_max_str_digits(old)
        body = text.encode()
    else:
        body = json.dumps({"error": "busy", "retryAfter": value}).encode()
    outcome = validate_response(resp(503, body, "application/json"))
    assert outcome.error == "busy"
    assert outcome.retry_after == expected


def test_h1_after_a_long_tag_is_found() -> None:
    # A logo as a data: URI makes one tag span many tokenizer chunks; it still ends.
    logo = b'<img alt="a > b" src="data:image/png;base64,' + b"QUJD" * 6000 + b'">'
    body = b"<html><body>" + logo + b"<h1>Maintenance &amp; upgrades</h1></body></html>"
    assert validate_response(resp(503, body, "text/html")).error == "Maintenance & upgrades"


@pytest.mark.parametrize("shift", [-2, -1, 0, 1, 2])
def test_h1_cut_by_a_tokenizer_chunk_is_found(shift: int) -> None:
    # Once the snippet is full the tokenizer skips ahead to the next tag that matters;
    # a "<" left pending at the end of a chunk must not make it skip past "<h1".
    from suture.responses import _html

    head = "<html><body><p>" + "filler text " * 40 + "</p>"
    cut = _html.CHUNK - 1 + shift  # where the "<" of "<h1" falls
    markup = head + "y" * (cut - len(head)) + "<h1>Cut &amp; found</h1>" + "<p>z</p>" * 500
    assert markup.index("<h1") == cut
    assert validate_response(resp(500, markup.encode(), "text/html")).error == "Cut & found"
    lone = "<p>" + "filler " * 60 + "</p>" + "<" * 70000
    assert validate_response(resp(502, lone.encode(), "text/html")).error == "HTTP 502 Bad Gateway"


# --- compressed error bodies: the prefix is bounded after decompression -----------------


@functools.cache
def _bomb(encoding: str, size: int = 40 * 1024 * 1024) -> bytes:
    import gzip
    import zlib

    page = b"<html><head><title>Compressed outage</title></head><body>" + b"\0" * size
    if encoding == "gzip":
        return gzip.compress(page, compresslevel=9)
    if encoding == "deflate":
        return zlib.compress(page, 9)
    raw = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)  # "deflate" sent raw
    return raw.compress(page) + raw.flush()


class Chunks(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body served in chunks of ``size`` bytes, to a sync or an async reader."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data = data
        self.size = size

    def __iter__(self) -> Iterator[bytes]:
        for i in range(0, len(self.data), self.size):
            yield self.data[i : i + self.size]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self:
            yield chunk


@pytest.mark.parametrize(
    ("encoding", "chunk", "max_error_bytes"),
    [
        # the whole body in one network read's worth: httpx would inflate it whole
        ("gzip", 0, 65536),
        ("deflate", 0, 65536),
        ("raw-deflate", 0, 65536),
        ("gzip", 4096, 1000),
    ],
)
async def test_a_compressed_40mb_error_page_is_inflated_only_up_to_the_limit(
    validate: Validate, encoding: str, chunk: int, max_error_bytes: int
) -> None:
    import tracemalloc

    body = _bomb(encoding)
    header = "deflate" if encoding == "raw-deflate" else encoding
    assert len(body) < 100 * 1024  # one network read's worth: httpx inflated it whole
    response = httpx.Response(
        503,
        headers={"content-type": "text/html", "content-encoding": header},
        stream=Chunks(body, chunk or len(body)),
    )
    tracemalloc.start()
    try:
        outcome = await validate(response, emit_events=False, max_error_bytes=max_error_bytes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.error == "Compressed outage"
    assert peak < 2 * 1024 * 1024  # not 40 MB
    assert response.is_closed


def test_multi_member_gzip_and_corrupt_bodies() -> None:
    import gzip

    two = gzip.compress(b"<title>First") + gzip.compress(b" and second</title>")
    response = httpx.Response(
        500,
        headers={"content-type": "text/html", "content-encoding": "gzip"},
        stream=httpx.ByteStream(two),
    )
    assert validate_response(response).error == "First and second"
    broken = gzip.compress(b"<title>Cut short</title>" + b"x" * 5000)[:40] + b"garbage"
    response = httpx.Response(
        500,
        headers={"content-type": "text/html", "content-encoding": "gzip"},
        stream=httpx.ByteStream(broken),
    )
    outcome = validate_response(response)  # never raises: what was decoded is used
    assert not outcome.ok
    assert outcome.error


def test_a_page_of_nothing_but_tags_stops_at_the_tag_budget() -> None:
    """``<title>`` repeated has no text to find; the reader gives up after a bounded
    number of tags instead of tokenizing all of the first 64 KiB (the error is then
    the status fallback)."""
    from suture.responses._html import MAX_TAGS as _MAX_TAGS

    hostile = b"<title>" * 40_000
    outcome = validate_response(SimpleResponse(502, {"content-type": "text/html"}, hostile))
    assert not outcome.ok
    assert outcome.error == "HTTP 502 Bad Gateway"
    # A real page says what it has to say well within the budget.
    normal = b"<html><head><title>Upstream down</title></head>" + b"<p>x</p>" * _MAX_TAGS
    outcome = validate_response(SimpleResponse(502, {"content-type": "text/html"}, normal))
    assert outcome.error == "Upstream down"
