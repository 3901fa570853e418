"""The demo's test clients (signed in as a manager, on a Host the demo answers) and servers."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from starlette.testclient import TestClient

#: The Host of every test request: a loopback name, answered by default.
BASE_URL = "http://localhost"


def manager_headers(app: Any) -> dict[str, str]:
    """The bearer credential of the demo app's console manager (``Service.console_token``)."""
    token = app.state.service.console_token
    assert token, "the demo app has no console token (a managers file without --token?)"
    return {"Authorization": f"Bearer {token}"}


def manager_client(app: Any, **kwargs: Any) -> TestClient:
    """A TestClient of the demo ``app`` that sends the console manager's bearer token."""
    headers = {**manager_headers(app), **kwargs.pop("headers", {})}
    kwargs.setdefault("base_url", BASE_URL)
    return TestClient(app, headers=headers, **kwargs)


def outage_settings(database_file: Any, clock: Any, *, reset_timeout: float) -> Any:
    """The demo on SQLite with chaos on and a fake clock: what the outage tests break."""
    import random

    from suture.demo.config import Settings

    return Settings(
        database_url=f"sqlite+aiosqlite:///{database_file}",
        tasks=30,
        messages=60,
        rules=20,
        background=False,
        chaos=True,
        admin_hosts=("testclient",),
        clock=clock,
        rand=random.Random(2024),
        reset_timeout=reset_timeout,
        failure_threshold=10,
        retry_attempts=5,
        pool_size=4,
        pool_timeout=1.0,
    )


@contextlib.contextmanager
def serve(app: Any, **config: Any) -> Iterator[str]:
    """``app`` served by a real uvicorn on a free loopback port, in a thread: its base URL.

    The socket listens before the thread starts, so clients may connect at once; the
    server has also run its startup (``lifespan="on"`` by default) when this yields.
    ``config`` goes to ``uvicorn.Config`` (``log_level`` defaults to ``"warning"``).
    """
    import uvicorn

    config.setdefault("log_level", "warning")
    config.setdefault("lifespan", "on")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    host, port = sock.getsockname()
    server = uvicorn.Server(uvicorn.Config(app, **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    try:
        while not server.started:
            assert thread.is_alive(), "the server did not start"
            assert time.monotonic() < deadline, "the server did not start within 60 s"
            time.sleep(0.02)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
