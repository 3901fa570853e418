"""What the demo's authentication and the security headers add to a read route, at p50.

    .venv/bin/python bench/auth.py

One process, one event loop, the same Starlette read route (a small JSON
answer, as ``GET /api/manager/assistance`` without its database) driven
through ASGI directly (no sockets, so the figures are the middleware's own):

* bare: the route alone;
* headers: behind :class:`suture.contrib.starlette.SecurityHeadersMiddleware`;
* auth + headers (bearer): behind the demo's :class:`suture.demo.auth.AuthMiddleware`
  (Host allow-list, the same-origin check, a bearer token compared by hash
  with ``hmac.compare_digest`` against 3 managers) and the headers;
* auth + headers (cookie): the same with a session cookie.

Each request is timed alone; the table gives p50 and p90 in microseconds and
what each stack adds at p50 over the bare route (target: <= 50 us).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from suture.clock import SYSTEM_CLOCK
from suture.contrib.starlette import SecurityHeadersMiddleware
from suture.demo.auth import AuthMiddleware, Managers, token_hash

TOKEN = "bench-token-0123456789abcdef"
ROWS = [{"id": i, "title": f"task {i}", "status": "ASSISTANCE_REQUIRED"} for i in range(20)]


async def read(request: Request) -> Response:
    return JSONResponse({"success": True, "requests": ROWS, "count": len(ROWS)})


def route_app() -> Starlette:
    return Starlette(routes=[Route("/api/manager/assistance", read)])


def stacks() -> tuple[dict[str, Any], Managers]:
    managers = Managers(
        [("alice", token_hash("a" * 30)), ("bob", token_hash("b" * 30))],
        token=TOKEN,
        clock=SYSTEM_CLOCK,
    )
    headers_only = SecurityHeadersMiddleware(route_app())
    guarded = SecurityHeadersMiddleware(AuthMiddleware(route_app(), managers=managers))
    return {"bare": route_app(), "headers": headers_only, "auth + headers": guarded}, managers


def scope(extra: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/manager/assistance",
        "raw_path": b"/api/manager/assistance",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"accept", b"application/json"),
            (b"user-agent", b"bench"),
            *extra,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def timings(app: Any, extra: list[tuple[bytes, bytes]], n: int) -> list[float]:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    out = []
    for _ in range(n):
        s = scope(extra)
        t0 = time.perf_counter_ns()
        await app(s, receive, send)
        out.append((time.perf_counter_ns() - t0) / 1000)
    assert set(status) == {200}, set(status)
    return out


async def main(n: int = 20_000, rounds: int = 5) -> None:
    apps, managers = stacks()
    cookie = managers.open_session("alice")
    cases = {
        "bare": (apps["bare"], []),
        "headers": (apps["headers"], []),
        "auth + headers (bearer)": (
            apps["auth + headers"],
            [(b"authorization", f"Bearer {TOKEN}".encode())],
        ),
        "auth + headers (cookie)": (
            apps["auth + headers"],
            [(b"cookie", f"suture_session={cookie}".encode())],
        ),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    gc.disable()
    try:
        for app, extra in cases.values():  # warm up
            await timings(app, extra, 2_000)
        for _ in range(rounds):  # interleaved rounds: drift hits every case alike
            for name, (app, extra) in cases.items():
                samples[name].extend(await timings(app, extra, n // rounds))
    finally:
        gc.enable()
    base = statistics.median(samples["bare"])
    print(f"\nA read route, {n} requests per case (ASGI, no sockets); target: adds <= 50 us at p50")
    print(f"  {'case':<26}{'p50 us':>9}{'p90 us':>9}{'added p50':>11}")
    for name, values in samples.items():
        p50 = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        added = "" if name == "bare" else f"{p50 - base:+.1f}"
        print(f"  {name:<26}{p50:>9.1f}{p90:>9.1f}{added:>11}")


if __name__ == "__main__":
    asyncio.run(main())
