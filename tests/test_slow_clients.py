"""Slow clients against a real uvicorn server (issue 11): they cannot hold connections open."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from suture.demo.guard import SlowClientGuard, server_options

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
MAX_CONNECTIONS = 30


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"size": len(body)})


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    app = Starlette(routes=[Route("/echo", echo, methods=["GET", "POST"])])
    app.add_middleware(SlowClientGuard, body_timeout=BODY_TIMEOUT)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    options = server_options(header_timeout=HEADER_TIMEOUT, max_connections=MAX_CONNECTIONS)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", **options)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started
    try:
        yield sock.getsockname()
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()


def _connect(addr: tuple[str, int]) -> socket.socket:
    s = socket.create_connection(addr, timeout=5)
    s.settimeout(0.05)
    return s


def _closed(s: socket.socket) -> bool:
    """True once the server closed the connection (EOF or reset); drains any answer."""
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:
        return True


def _trickle(socks: list[socket.socket], payload: bytes, seconds: float) -> dict[int, float]:
    """Send ``payload`` one byte per 0.25 s on every socket; when did each get closed?"""
    start = time.monotonic()
    closed_at: dict[int, float] = {}
    i = 0
    while time.monotonic() - start < seconds and len(closed_at) < len(socks):
        for n, s in enumerate(socks):
            if n in closed_at:
                continue
            if _closed(s):
                closed_at[n] = time.monotonic() - start
                continue
            if i < len(payload):
                with contextlib.suppress(OSError):
                    s.send(payload[i : i + 1])
        i += 1
        time.sleep(0.25)
    return closed_at


def test_a_client_sending_its_headers_byte_by_byte_is_cut_off(server: tuple[str, int]) -> None:
    socks = [_connect(server) for _ in range(20)]
    try:
        head = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n"
        closed_at = _trickle(socks, head, seconds=6.0)
        assert len(closed_at) == 20, "every slow client is disconnected"
        assert max(closed_at.values()) < HEADER_TIMEOUT + 1.0
    finally:
        for s in socks:
            s.close()


def test_a_body_that_trickles_in_is_a_408_and_the_connection_closes(
    server: tuple[str, int],
) -> None:
    s = _connect(server)
    try:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        answer = b""
        start = time.monotonic()
        while time.monotonic() - start < 6.0:
            with contextlib.suppress(OSError):
                s.send(b"x")
            try:
                chunk = s.recv(4096)
            except TimeoutError:
                chunk = None
            if chunk == b"":
                break
            if chunk:
                answer += chunk
            time.sleep(0.25)
        took = time.monotonic() - start
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert b"request_timeout" in answer
        assert took < BODY_TIMEOUT + 1.5
    finally:
        s.close()


def test_connections_past_the_cap_are_closed_and_normal_requests_are_served(
    server: tuple[str, int],
) -> None:
    idle = [_connect(server) for _ in range(MAX_CONNECTIONS + 5)]
    try:
        time.sleep(0.2)
        refused = sum(_closed(s) for s in idle)
        assert refused >= 5
    finally:
        for s in idle:
            s.close()
    time.sleep(0.3)
    s = socket.create_connection(server, timeout=5)
    try:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        answer = b""
        while b'"size"' not in answer and (chunk := s.recv(4096)):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and b'"size":3' in answer
    finally:
        s.close()


def test_the_default_guarded_protocol_pickles_for_worker_processes() -> None:
    """`suture demo --workers N` hands uvicorn's config to spawned processes by pickling."""
    import pickle

    from suture.demo.guard import server_options

    protocol = server_options()["http"]
    assert pickle.loads(pickle.dumps(protocol)) is protocol
