"""The 429 pause: an upstream's 429/503 with Retry-After pauses the rate limiter for every
caller, against a real local HTTP server (and a mock one for the composition with retry)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from suture import Overloaded, Retry
from suture.contrib.httpx import AsyncResilientClient, ResilientClient, ResilientTransport
from suture.contrib.httpx_limits import (
    AsyncRateLimitedTransport,
    RateLimitedTransport,
    told_to_wait,
)
from suture.limits import RateLimiter
from suture.testing import FakeClock


def test_told_to_wait_reads_429_and_503_with_retry_after() -> None:
    assert told_to_wait(httpx.Response(429, headers={"Retry-After": "2"})) == 2.0
    assert told_to_wait(httpx.Response(503, headers={"Retry-After": "7"})) == 7.0
    date = "Tue, 14 Nov 2023 22:13:30 GMT"  # 10 s after wall_now below
    assert told_to_wait(
        httpx.Response(429, headers={"Retry-After": date}), wall_now=1_700_000_000.0
    ) == pytest.approx(10.0)
    assert told_to_wait(httpx.Response(429)) is None  # no header: nothing to go by
    assert told_to_wait(httpx.Response(500, headers={"Retry-After": "3"})) is None
    assert told_to_wait(httpx.Response(200)) is None


def test_bad_limiter_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"^limiter="):
        RateLimitedTransport(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^limiter="):
        AsyncRateLimitedTransport(object())


class Upstream:
    """A real HTTP server: the first ``busy`` requests get 429 + Retry-After: 1."""

    def __init__(self, busy: int = 1) -> None:
        self.busy = busy
        self.arrivals: list[tuple[float, int]] = []
        self.lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with upstream.lock:
                    n = len(upstream.arrivals)
                    status = 429 if n < upstream.busy else 200
                    upstream.arrivals.append((time.monotonic(), status))
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Upstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


@pytest.mark.slow
def test_a_429_pauses_every_thread_that_shares_the_limiter(upstream: Upstream) -> None:
    limiter = RateLimiter(100, burst=10)
    client = httpx.Client(transport=RateLimitedTransport(limiter))
    first = client.get(upstream.url)
    assert first.status_code == 429
    assert limiter.stats().paused_for > 0.9
    statuses: list[int] = []

    def call() -> None:
        statuses.append(client.get(upstream.url).status_code)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()
    assert statuses == [200] * 4
    told_at = upstream.arrivals[0][0]
    # nobody asked again before the second the upstream asked for had passed
    assert all(at - told_at >= 0.95 for at, _ in upstream.arrivals[1:])


@pytest.mark.slow
async def test_a_429_pauses_every_task_that_shares_the_limiter(upstream: Upstream) -> None:
    limiter = RateLimiter(100, burst=10)
    async with httpx.AsyncClient(transport=AsyncRateLimitedTransport(limiter)) as client:
        first = await client.get(upstream.url)
        assert first.status_code == 429
        answers = await asyncio.gather(*(client.get(upstream.url) for _ in range(4)))
    assert [a.status_code for a in answers] == [200] * 4
    told_at = upstream.arrivals[0][0]
    assert all(at - told_at >= 0.95 for at, _ in upstream.arrivals[1:])


def test_a_wait_longer_than_max_wait_sends_nothing() -> None:
    clock = FakeClock()
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(429, headers={"Retry-After": "30"})

    limiter = RateLimiter(10, max_wait=5, clock=clock)
    client = httpx.Client(transport=RateLimitedTransport(limiter, httpx.MockTransport(handler)))
    assert client.get("http://upstream/").status_code == 429
    with pytest.raises(Overloaded) as info:
        client.get("http://upstream/")
    assert info.value.retry_after == pytest.approx(30)
    assert len(sent) == 1


def test_inside_the_retry_each_attempt_takes_a_token_and_waits_once() -> None:
    """The retry honours Retry-After; its next attempt finds the limiter paused until
    the same moment, so the two waits are one."""
    clock = FakeClock()
    answers = iter(
        [httpx.Response(429, headers={"Retry-After": "4"}), httpx.Response(200, text="ok")]
    )
    limiter = RateLimiter(10, clock=clock)
    inner = RateLimitedTransport(limiter, httpx.MockTransport(lambda _: next(answers)))
    transport = ResilientTransport(
        inner, retry=Retry(attempts=3, max_delay=10, clock=clock), clock=clock
    )
    with httpx.Client(transport=transport) as client:
        assert client.get("http://upstream/").text == "ok"
    assert clock.sleeps == [pytest.approx(4.0)]


def test_resilient_transport_rate_limit_sits_inside_the_retry_outside_the_breaker() -> None:
    clock = FakeClock()
    answers = iter(
        [httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(200, text="ok")]
    )
    limiter = RateLimiter(1, period=60, burst=5, clock=clock)
    transport = ResilientTransport(
        httpx.MockTransport(lambda _: next(answers)),
        retry=Retry(attempts=3, max_delay=10, clock=clock),
        rate_limit=limiter,
        clock=clock,
    )
    with httpx.Client(transport=transport) as client:
        assert client.get("http://upstream/").text == "ok"
    assert clock.sleeps == [pytest.approx(3.0)]  # the retry's wait and the pause are one
    # the 429 paused the limiter until 3.0; the retry's attempt at 3.0 took the one
    # token a pause's end frees (it resumes one call at a time)
    assert limiter.paused_until == pytest.approx(3.0)
    assert limiter.available() == 0
    with pytest.raises(TypeError, match=r"^rate_limit="):
        ResilientTransport(rate_limit=object())  # type: ignore[arg-type]


def test_a_refusal_by_our_own_limit_is_an_outcome_and_not_a_breaker_failure() -> None:
    clock = FakeClock()
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"ok": True})

    limiter = RateLimiter(1, period=60, burst=1, max_wait=0, clock=clock)
    with ResilientClient(
        inner=httpx.MockTransport(handler), rate_limit=limiter, clock=clock
    ) as client:
        assert client.fetch("GET", "http://upstream/").ok
        for _ in range(10):
            outcome = client.fetch("GET", "http://upstream/")
            assert not outcome.ok
            assert outcome.retry_after == pytest.approx(60)
        (breaker,) = client.resilient.breakers.values()
        assert breaker.stats().state.value == "closed"
    assert len(sent) == 1


async def test_async_resilient_transport_with_a_rate_limit() -> None:
    clock = FakeClock()
    answers = iter(
        [httpx.Response(503, headers={"Retry-After": "2"}), httpx.Response(200, text="ok")]
    )
    limiter = RateLimiter(10, clock=clock)
    async with AsyncResilientClient(
        inner=httpx.MockTransport(lambda _: next(answers)),
        retry=Retry(attempts=3, max_delay=10, clock=clock),
        rate_limit=limiter,
        clock=clock,
    ) as client:
        assert (await client.get("http://upstream/")).text == "ok"
    assert limiter.paused_until == pytest.approx(2.0)
