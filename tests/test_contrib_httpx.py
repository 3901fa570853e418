"""suture.contrib.httpx against httpx.MockTransport, with a FakeClock: no sockets, no sleeps."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from suture import BreakerOpen, Outcome, Retry, avalidate_response
from suture.breaker import BreakerState, CircuitBreaker
from suture.contrib.httpx import (
    OUTCOME_KEY,
    AsyncResilientClient,
    AsyncResilientTransport,
    ResilientClient,
    ResilientTransport,
    outcome_of,
)
from suture.limits import RateLimiter
from suture.testing import FakeClock

Handler = Callable[[httpx.Request], httpx.Response]


class Server:
    """A scripted server: answers from a list (the last one repeats), records requests."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    @property
    def calls(self) -> int:
        return len(self.requests)


def busy(retry_after: str | None = "4") -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(
        503, headers=headers, json={"success": False, "error": "busy", "retryAfter": 9}
    )


def client(server: Server, clock: FakeClock, **options: object) -> ResilientClient:
    options.setdefault("retry", Retry(attempts=3, initial_delay=0.5, max_delay=10.0, clock=clock))
    return ResilientClient(inner=httpx.MockTransport(server), clock=clock, **options)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Either:
    """A :class:`ResilientClient` or an :class:`AsyncResilientClient` on the same
    scripted handler, awaited alike: one test covers both."""

    def __init__(self, mode: str, handler: Handler, clock: FakeClock, **options: Any) -> None:
        options.setdefault(
            "retry", Retry(attempts=3, initial_delay=0.5, max_delay=10.0, clock=clock)
        )
        self.client: ResilientClient | AsyncResilientClient
        if mode == "sync":
            self.client = ResilientClient(
                inner=httpx.MockTransport(handler), clock=clock, **options
            )
        else:

            async def handle(request: httpx.Request) -> httpx.Response:
                return handler(request)

            self.client = AsyncResilientClient(
                inner=httpx.MockTransport(handle), clock=clock, **options
            )
        self.resilient = self.client.resilient

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return await _awaited(self.client.request(method, url, **kwargs))

    async def fetch(self, method: str, url: str, **kwargs: Any) -> Outcome:
        return await _awaited(self.client.fetch(method, url, **kwargs))

    async def __aenter__(self) -> Either:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await _awaited(
            self.client.close()
            if isinstance(self.client, ResilientClient)
            else self.client.aclose()
        )


async def _awaited(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def test_503_with_retry_after_is_retried_after_that_delay(
    mode: str, clock: FakeClock
) -> None:
    server = Server(busy("4"), httpx.Response(200, json={"items": [1]}))
    async with Either(mode, server, clock) as c:
        response = await c.request("GET", "http://api.test/items")
    assert response.status_code == 200
    assert server.calls == 2
    assert clock.sleeps == [4.0]
    outcome = outcome_of(response)
    assert (outcome.ok, outcome.data, outcome.attempts) == (True, {"items": [1]}, 2)
    server = Server(busy("3"), httpx.Response(200, json={"v": 2}))
    async with Either(mode, server, clock, retry=Retry(attempts=3, clock=clock)) as c:
        outcome = await c.fetch("GET", "http://a.test/")
    assert (outcome.ok, outcome.data, outcome.attempts) == (True, {"v": 2}, 2)
    assert clock.sleeps == [4.0, 3.0]


def test_retry_after_as_http_date(clock: FakeClock) -> None:
    when = httpx.Headers({"d": "Tue, 14 Nov 2023 22:13:25 GMT"})["d"]  # wall_start + 5 s
    server = Server(busy(when), httpx.Response(204))
    with client(server, clock) as c:
        assert c.get("http://api.test/").status_code == 204
    assert clock.sleeps == [5.0]


def test_retry_after_longer_than_max_delay_ends_the_retries(clock: FakeClock) -> None:
    # The server asked for an hour: retrying after max_delay (10 s) would knock early.
    server = Server(busy("3600"), httpx.Response(200, json={}))
    with client(server, clock) as c:
        response = c.get("http://api.test/")
        outcome = c.fetch("GET", "http://api.test/")
    assert response.status_code == 503
    assert response.extensions[OUTCOME_KEY].retry_after == 3600.0
    assert (outcome.ok, outcome.retry_after, outcome.attempts) == (True, None, 1)
    assert clock.sleeps == []
    assert server.calls == 2


def test_gives_up_after_the_attempts_and_returns_the_last_answer(clock: FakeClock) -> None:
    server = Server(busy("1"))
    with client(server, clock, breaker_options={"failure_threshold": 10}) as c:
        response = c.get("http://api.test/")
        assert response.status_code == 503
        assert response.json() == {"success": False, "error": "busy", "retryAfter": 9}
        outcome = response.extensions[OUTCOME_KEY]
        assert isinstance(outcome, Outcome)
        assert (outcome.error, outcome.retry_after, outcome.attempts) == ("busy", 1.0, 3)
        assert c.fetch("GET", "http://api.test/").attempts == 3
    assert server.calls == 6
    assert clock.sleeps == [1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
def test_client_errors_are_not_retried(clock: FakeClock, status: int) -> None:
    server = Server(httpx.Response(status, json={"detail": "nope"}))
    with client(server, clock) as c:
        outcome = c.fetch("GET", "http://api.test/")
    assert server.calls == 1
    assert clock.sleeps == []
    assert (outcome.ok, outcome.status, outcome.error, outcome.transient) == (
        False,
        status,
        "nope",
        False,
    )


def test_post_without_idempotency_key_is_not_retried(clock: FakeClock) -> None:
    server = Server(busy(), httpx.Response(201, json={"id": 1}))
    with client(server, clock) as c:
        response = c.post("http://api.test/orders", json={"n": 1})
    assert response.status_code == 503
    assert server.calls == 1
    assert clock.sleeps == []


def test_post_with_idempotency_key_is_retried(clock: FakeClock) -> None:
    server = Server(busy("2"), httpx.Response(201, json={"id": 1}))
    with client(server, clock) as c:
        outcome = c.fetch(
            "POST", "http://api.test/orders", json={"n": 1}, headers={"Idempotency-Key": "k-1"}
        )
    assert (outcome.ok, outcome.data, outcome.attempts) == (True, {"id": 1}, 2)
    assert [r.content for r in server.requests] == [b'{"n":1}', b'{"n":1}']


def test_post_opt_in_per_request_and_per_client(clock: FakeClock) -> None:
    server = Server(busy("1"), httpx.Response(200, json={}))
    with client(server, clock) as c:
        assert c.post("http://a.test/", extensions={"suture.retry": True}).status_code == 200
    server = Server(busy("1"), httpx.Response(200, json={}))
    with client(server, clock, methods={"GET", "POST"}) as c:
        assert c.post("http://a.test/").status_code == 200
    server = Server(busy("1"), httpx.Response(200, json={}))
    with client(server, clock) as c:
        assert c.get("http://a.test/", extensions={"suture.retry": False}).status_code == 503


def test_connection_errors_are_retried_then_raised(clock: FakeClock) -> None:
    server = Server(httpx.ConnectError("refused"))
    with client(server, clock, breaker_options={"failure_threshold": 10}) as c:
        with pytest.raises(httpx.ConnectError):
            c.get("http://down.test/")
        outcome = c.fetch("GET", "http://down.test/")
    assert server.calls == 6
    assert (outcome.ok, outcome.status, outcome.transient) == (False, None, True)
    assert outcome.error == "ConnectError: refused"


def test_breaker_opens_and_the_transport_is_no_longer_called(clock: FakeClock) -> None:
    server = Server(
        httpx.Response(
            502, text="<title>502 Bad Gateway</title>", headers={"content-type": "text/html"}
        )
    )
    with client(
        server,
        clock,
        retry=Retry(attempts=2, initial_delay=0.1, clock=clock),
        breaker_options={"failure_threshold": 4, "reset_timeout": 30.0},
    ) as c:
        for _ in range(2):
            assert c.get("http://flaky.test/").status_code == 502
        assert server.calls == 4
        breaker = c.resilient.breakers["flaky.test"]
        assert breaker.state is BreakerState.OPEN
        with pytest.raises(BreakerOpen):
            c.get("http://flaky.test/")
        outcome = c.fetch("GET", "http://flaky.test/")
        assert server.calls == 4  # the transport was not called again
        assert (outcome.ok, outcome.transient) == (False, False)
        assert outcome.retry_after is not None and 0 < outcome.retry_after <= 30.0
        # another host has its own breaker
        assert c.get("http://other.test/").status_code == 502
        assert server.calls == 6
        # after the reset timeout a probe goes through
        clock.advance(31)
        server.answers = [httpx.Response(200, json={"ok": True})]
        assert c.fetch("GET", "http://flaky.test/").ok
        assert breaker.state is BreakerState.CLOSED


def test_client_errors_do_not_open_the_breaker(clock: FakeClock) -> None:
    server = Server(httpx.Response(404))
    with client(server, clock, breaker_options={"failure_threshold": 2}) as c:
        for _ in range(5):
            c.get("http://api.test/missing")
        assert c.resilient.breakers["api.test"].state is BreakerState.CLOSED
    assert server.calls == 5


def test_breaker_scopes(clock: FakeClock) -> None:
    shared = CircuitBreaker("mine", failure_threshold=1, clock=clock)
    server = Server(httpx.ConnectError("x"))
    with client(server, clock, breaker=shared, retry=Retry(attempts=1, clock=clock)) as c:
        with pytest.raises(httpx.ConnectError):
            c.get("http://a.test/")
        with pytest.raises(BreakerOpen):
            c.get("http://b.test/")
    with client(server, clock, breaker="client", retry=Retry(attempts=1, clock=clock)) as c:
        c.fetch("GET", "http://a.test:8080/")
        c.fetch("GET", "http://b.test/")
        assert list(c.resilient.breakers) == ["client"]
    with client(server, clock, breaker=None, retry=Retry(attempts=1, clock=clock)) as c:
        for _ in range(10):
            c.fetch("GET", "http://a.test/")
        assert c.resilient.breakers == {}


class Pulled(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A first chunk, then 40 MB more that must never be downloaded; counts what is pulled."""

    def __init__(self, first: bytes, filler: bytes) -> None:
        self.first = first
        self.filler = filler * 16384
        self.pulled = 0

    def __iter__(self) -> Iterator[bytes]:
        yield self.first
        for _ in range(2560):
            self.pulled += len(self.filler)
            yield self.filler

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self:
            yield chunk


@pytest.mark.parametrize(
    ("content_type", "first", "filler", "error", "limit"),
    [
        ("text/html", b"<title>Huge failure</title>", b"x", "Huge failure", 32768),
        ("application/json", b'{"error": "too much"}' + b" " * 16000, b" ", "too much", None),
    ],
)
async def test_error_bodies_are_read_only_up_to_the_limit(
    mode: str,
    clock: FakeClock,
    content_type: str,
    first: bytes,
    filler: bytes,
    error: str,
    limit: int | None,
) -> None:
    streams: list[Pulled] = []

    def handler(request: httpx.Request) -> httpx.Response:
        streams.append(Pulled(first, filler))
        status = 500 if content_type == "text/html" else 400
        return httpx.Response(status, headers={"content-type": content_type}, stream=streams[-1])

    options: dict[str, Any] = {"retry": Retry(attempts=1, clock=clock)}
    if limit is not None:
        options["max_error_bytes"] = limit
    async with Either(mode, handler, clock, **options) as c:
        response = await c.request("GET", "http://big.test/")
        assert len(response.content) == (limit or 65536)
        assert outcome_of(response).error == error
        outcome = await c.fetch("GET", "http://big.test/")
    assert outcome.error == error
    assert all(s.pulled <= (limit or 65536) + 16384 for s in streams)


def test_per_attempt_timeout_is_set_on_the_request(clock: FakeClock) -> None:
    seen: list[object] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json={})

    with ResilientClient(inner=httpx.MockTransport(handler), attempt_timeout=2.5) as c:
        c.get("http://t.test/")
    assert seen == [{"connect": 2.5, "read": 2.5, "write": 2.5, "pool": 2.5}]


def test_fetch_validates_with_expect_and_schema(clock: FakeClock) -> None:
    server = Server(
        httpx.Response(200, text="<html>login</html>", headers={"content-type": "text/html"})
    )
    with client(server, clock) as c:
        outcome = c.fetch("GET", "http://x.test/")
        assert outcome.error == "expected JSON, got text/html"
        assert c.fetch("GET", "http://x.test/", expect="text").data == "<html>login</html>"
        assert c.fetch("GET", "http://x.test/", expect="text", schema=len).data == 18


def test_plain_httpx_client_with_the_transport(clock: FakeClock) -> None:
    server = Server(busy("1"), httpx.Response(200, json={"ok": 1}))
    transport = ResilientTransport(
        httpx.MockTransport(server), retry=Retry(attempts=2, clock=clock), clock=clock
    )
    with httpx.Client(transport=transport) as c:
        assert c.get("http://p.test/").json() == {"ok": 1}
    assert clock.sleeps == [1.0]


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="breaker='everything'"):
        ResilientTransport(breaker="everything")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry=3"):
        ResilientTransport(retry=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="failure_threshold=0"):
        ResilientTransport(breaker_options={"failure_threshold": 0})
    with pytest.raises(ValueError, match="max_error_bytes=-1"):
        ResilientTransport(max_error_bytes=-1)
    with pytest.raises(TypeError, match="transport="):
        ResilientClient(transport=httpx.MockTransport(Server()))


# --- async -----------------------------------------------------------------------


class AsyncServer(Server):
    async def handle(self, request: httpx.Request) -> httpx.Response:
        return self(request)


async def test_transport_in_a_plain_client_not_retried_and_breaker(
    mode: str, clock: FakeClock
) -> None:
    server = AsyncServer(busy("1"))
    options: dict[str, Any] = {
        "retry": Retry(attempts=2, clock=clock),
        "breaker_options": {"failure_threshold": 3},
        "clock": clock,
    }
    c: httpx.Client | httpx.AsyncClient
    if mode == "sync":
        c = httpx.Client(transport=ResilientTransport(httpx.MockTransport(server), **options))
    else:
        transport = AsyncResilientTransport(httpx.MockTransport(server.handle), **options)
        c = httpx.AsyncClient(transport=transport)
    assert (await _awaited(c.post("http://a.test/"))).status_code == 503  # 1 call, not retried
    assert (await _awaited(c.get("http://a.test/"))).status_code == 503  # 2 calls: opens
    assert server.calls == 3
    with pytest.raises(BreakerOpen):
        await _awaited(c.get("http://a.test/"))
    assert server.calls == 3
    await _awaited(c.close() if isinstance(c, httpx.Client) else c.aclose())


async def test_a_compressed_error_body_is_inflated_only_up_to_the_limit(
    mode: str, clock: FakeClock
) -> None:
    import gzip
    import tracemalloc

    bomb = gzip.compress(b"<title>Zipped outage</title>" + b"\0" * 40 * 1024 * 1024, 9)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            502,
            headers={"content-type": "text/html", "content-encoding": "gzip"},
            stream=httpx.ByteStream(bomb),
        )

    async with Either(
        mode,
        handler,
        clock,
        retry=Retry(attempts=2, initial_delay=0.1, clock=clock),
        max_error_bytes=32768,
    ) as c:
        tracemalloc.start()
        try:
            response = await c.request("GET", "http://zipped.test/")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert "content-encoding" not in response.headers  # the copy holds plain bytes
        assert len(response.content) == 32768
        assert outcome_of(response).error == "Zipped outage"
        assert outcome_of(response).attempts == 2
    assert peak < 4 * 1024 * 1024  # two attempts, never the 40 MB inside


# --- Outcome.attempts is the number of calls made, in every path of fetch() -----------------


def refused() -> httpx.ConnectError:
    return httpx.ConnectError("connection refused")


ATTEMPT_PATHS: dict[str, tuple[Callable[[], list[httpx.Response | Exception]], int]] = {
    "success at once": (lambda: [httpx.Response(200, json={})], 1),
    "answer retried, then ok": (lambda: [busy("1"), httpx.Response(200, json={})], 2),
    "answers retried to the end": (lambda: [busy("1")], 3),
    "network error, then ok": (lambda: [refused(), httpx.Response(200, json={})], 2),
    "network errors to the end": (lambda: [refused()], 3),
    "timeouts to the end": (lambda: [httpx.ReadTimeout("slow")], 3),
    "client error, not retried": (lambda: [httpx.Response(404, json={})], 1),
}


@pytest.mark.parametrize("path", list(ATTEMPT_PATHS))
async def test_fetch_attempts_are_the_calls_made(mode: str, clock: FakeClock, path: str) -> None:
    answers, calls = ATTEMPT_PATHS[path]
    server = Server(*answers())  # fresh responses: a read one cannot be sent again
    async with Either(mode, server, clock, breaker=None) as c:
        outcome = await c.fetch("GET", "http://api.test/")
    assert server.calls == calls
    assert outcome.attempts == calls


async def test_fetch_attempts_after_network_errors_on_an_unretried_method(
    mode: str, clock: FakeClock
) -> None:
    server = Server(refused())
    async with Either(mode, server, clock, breaker=None) as c:
        outcome = await c.fetch("POST", "http://api.test/", json={})
    assert (server.calls, outcome.attempts, outcome.transient) == (1, 1, True)


async def test_fetch_attempts_zero_when_the_breaker_refuses_before_any_call(
    mode: str, clock: FakeClock
) -> None:
    server = Server(refused())
    breaker = CircuitBreaker("api", failure_threshold=1, reset_timeout=60.0, clock=clock)
    breaker.force_open()
    async with Either(mode, server, clock, breaker=breaker) as c:
        outcome = await c.fetch("GET", "http://api.test/")
    assert server.calls == 0
    assert (outcome.ok, outcome.attempts, outcome.retry_after) == (False, 0, 60.0)
    assert "circuit api is open" in (outcome.error or "")


async def test_fetch_attempts_when_the_breaker_opens_between_retries(
    mode: str, clock: FakeClock
) -> None:
    server = Server(refused())
    options = {"failure_threshold": 2, "reset_timeout": 60.0}
    async with Either(mode, server, clock, breaker_options=options) as c:
        outcome = await c.fetch("GET", "http://api.test/")
    assert server.calls == 2  # the third attempt was refused by the breaker
    assert (outcome.attempts, outcome.status) == (2, None)


class _AsyncOnlyStream(httpx.AsyncByteStream):
    """A body only an async client can release (as a real async connection's is)."""

    def __init__(self) -> None:
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b""

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.parametrize("status", [204, 205, 304])
async def test_async_no_content_stream_is_released(clock: FakeClock, status: int) -> None:
    # The sync close() that avalidate_response used here is refused by an async stream
    # (RuntimeError, swallowed): the connection was never given back to the pool.
    streams: list[_AsyncOnlyStream] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        streams.append(_AsyncOnlyStream())
        return httpx.Response(status, stream=streams[-1])

    async with AsyncResilientClient(inner=httpx.MockTransport(handle), clock=clock) as c:
        response = await c.send(c.build_request("GET", "http://api.test/"), stream=True)
        outcome = await avalidate_response(response, emit_events=False)
    assert (outcome.ok, outcome.status) == (True, status)
    assert response.is_closed
    assert streams[0].closed


async def test_fetch_attempts_zero_when_our_own_rate_limit_refuses(
    mode: str, clock: FakeClock
) -> None:
    server = Server(httpx.Response(200, json={}))
    limiter = RateLimiter(1, period=60, burst=1, max_wait=0, clock=clock)
    async with Either(mode, server, clock, rate_limit=limiter) as c:
        first = await c.fetch("GET", "http://api.test/")
        refused_outcome = await c.fetch("GET", "http://api.test/")
    assert (first.ok, first.attempts) == (True, 1)
    assert (refused_outcome.ok, refused_outcome.attempts) == (False, 0)
    assert server.calls == 1
