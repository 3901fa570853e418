"""The HTTP edge under gray failures (issue 11): deadlines, overload, adaptive admission."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import suture
from suture.contrib.starlette import DEADLINE_HEADER, install
from suture.testing import FakeClock


def _pool_timeout() -> BaseException:
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    return PoolTimeout("QueuePool limit of size 5 overflow 0 reached, connection timed out")


async def remaining(request: Request) -> JSONResponse:
    return JSONResponse({"remaining": suture.remaining()})


def remaining_in_thread(request: Request) -> JSONResponse:  # Starlette runs it in a thread
    return JSONResponse({"remaining": suture.remaining()})


async def hangs(request: Request) -> JSONResponse:
    await asyncio.sleep(30)
    return JSONResponse({"late": True})


async def pool_full(request: Request) -> JSONResponse:
    raise _pool_timeout()  # type: ignore[misc]


@suture.timeout(10.0)
async def _slow_statement() -> None:
    await asyncio.sleep(30)


async def slow_statement(request: Request) -> JSONResponse:
    await _slow_statement()
    return JSONResponse({"late": True})


def make_app(**kwargs: object) -> Starlette:
    app = Starlette(
        routes=[
            Route("/api/remaining", remaining),
            Route("/api/thread", remaining_in_thread),
            Route("/api/report", remaining),
            Route("/stream/remaining", remaining),
            Route("/api/hangs", hangs),
            Route("/api/pool", pool_full),
            Route("/api/statement", slow_statement),
        ]
    )
    install(app, **kwargs)  # type: ignore[arg-type]
    return app


def test_every_request_gets_the_route_deadline_and_the_header_only_lowers_it() -> None:
    app = make_app(deadline={"/": 3.0, "/api/report": 8.0, "/stream": None})
    with TestClient(app) as client:
        got = client.get("/api/remaining").json()["remaining"]
        assert 2.5 < got <= 3.0
        assert 2.5 < client.get("/api/thread").json()["remaining"] <= 3.0
        assert 7.5 < client.get("/api/report").json()["remaining"] <= 8.0
        assert client.get("/stream/remaining").json()["remaining"] is None
        lowered = client.get("/api/remaining", headers={DEADLINE_HEADER: "0.5"}).json()
        assert 0.0 < lowered["remaining"] <= 0.5
        never_raised = client.get("/api/remaining", headers={DEADLINE_HEADER: "60"}).json()
        assert never_raised["remaining"] <= 3.0


@pytest.mark.parametrize("bad", ["abc", "-1", "0", "1e3", "nan", "inf", "99999999", " ", "1_0"])
def test_a_bad_request_timeout_header_is_ignored_and_logged_once_per_client(
    bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    from suture.contrib import starlette as edge

    edge._WARNED_CLIENTS.clear()
    app = make_app(deadline=3.0)
    with TestClient(app) as client, caplog.at_level(logging.WARNING, "suture"):
        for _ in range(3):
            response = client.get("/api/remaining", headers={DEADLINE_HEADER: bad})
            assert response.status_code == 200
            assert 2.5 < response.json()["remaining"] <= 3.0
    warnings = [r for r in caplog.records if DEADLINE_HEADER in r.getMessage()]
    assert len(warnings) == 1


def test_a_spent_deadline_is_a_503_deadline_exceeded_not_a_hang() -> None:
    app = make_app(deadline=3.0)
    with TestClient(app) as client:
        for path in ("/api/hangs", "/api/statement"):
            start = time.monotonic()
            response = client.get(path, headers={DEADLINE_HEADER: "0.2"})
            took = time.monotonic() - start
            assert response.status_code == 503, path
            assert response.json()["code"] == "deadline_exceeded"
            assert response.headers["Retry-After"] == "1"
            assert took < 0.2 + 0.5, path


def test_a_pool_checkout_timeout_is_503_overloaded_with_retry_after() -> None:
    with TestClient(make_app(), raise_server_exceptions=False) as client:
        response = client.get("/api/pool")
    assert response.status_code == 503
    assert response.json()["code"] == "overloaded"
    assert int(response.headers["Retry-After"]) >= 1


def test_the_limiter_sheds_the_excess_at_once_and_releases_every_permit() -> None:
    clock = FakeClock()
    limiter = suture.AdaptiveLimiter(initial=2, min_limit=1, max_limit=2, clock=clock)
    gate = asyncio.Event()

    async def held(request: Request) -> JSONResponse:
        await gate.wait()
        return JSONResponse({"ok": True})

    async def release(request: Request) -> JSONResponse:
        gate.set()
        return JSONResponse({"released": True})

    app = Starlette(routes=[Route("/api/held", held), Route("/admin/release", release)])
    from suture.contrib.starlette import EXEMPT

    install(
        app,
        limiter=limiter,
        default_priority=suture.Priority.NORMAL,
        priorities={"/admin": EXEMPT},
    )

    async def scenario() -> list[int]:
        import httpx

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = [asyncio.create_task(client.get("/api/held")) for _ in range(2)]
            await asyncio.sleep(0.05)
            assert limiter.inflight == 2
            start = time.monotonic()
            shed = await client.get("/api/held")
            assert time.monotonic() - start < 0.05  # shed in the middleware, not queued
            assert shed.json()["code"] == "overloaded"
            await client.get("/admin/release")  # exempt: admitted while full
            done = await asyncio.gather(*first)
            return [shed.status_code, *(r.status_code for r in done)]

    assert asyncio.run(scenario()) == [503, 200, 200]
    assert limiter.inflight == 0 and limiter.shed == 1


# --- httpx: the attempt's timeout is bounded by the deadline -------------------------------


def test_httpx_timeouts_are_bounded_by_the_deadline_and_not_counted_against_the_host() -> None:
    import httpx

    from suture.contrib.httpx import ResilientTransport

    seen: list[dict[str, float | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.extensions["timeout"]))
        raise httpx.ReadTimeout("slow", request=request)

    clock = FakeClock()
    transport = ResilientTransport(
        httpx.MockTransport(handler),
        retry=suture.Retry(attempts=3, initial_delay=0.0, max_delay=0.0, clock=clock),
        breaker_options={"failure_threshold": 1, "clock": clock},
    )
    # failure_threshold=1: the first ReadTimeout (the host's, the deadline not spent) opens it
    with httpx.Client(transport=transport, timeout=10.0) as client:
        with suture.deadline(2.0, clock=clock):
            clock.advance(0.5)
            with pytest.raises(suture.BreakerOpen):
                client.get("http://slow.example/x")  # not yet expired: a host timeout
        assert seen and all(v == 1.5 for v in seen[0].values())
        breaker = next(iter(transport.breakers.values()))
        assert breaker.state is suture.BreakerState.OPEN  # the host timed out: a failure
        breaker.reset()
        seen.clear()
        with suture.deadline(1.0, clock=clock):
            clock.advance(1.0)
            with pytest.raises(suture.DeadlineExceeded):
                client.get("http://slow.example/x")  # spent: not sent at all
        assert seen == []
        assert breaker.state is suture.BreakerState.CLOSED


def test_the_deadline_answer_does_not_wait_for_the_apps_cleanup() -> None:
    # A cancelled database call gives its connection back (psycopg cancels the query on
    # the server: one more connection, round trips through a slow network): the client
    # has its 503 first, the cleanup runs after it.
    from suture.contrib.starlette import DeadlineMiddleware

    events: list[str] = []

    async def app(scope: object, receive: object, send: object) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)
            events.append("cleaned up")
            raise

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            events.append(f"answered {message['status']}")

    scope = {"type": "http", "method": "GET", "path": "/api/x", "headers": [], "query_string": b""}
    asyncio.run(DeadlineMiddleware(app, default=0.05)(scope, receive, send))  # type: ignore[arg-type]
    assert events == ["answered 503", "cleaned up"]
