"""Where the chaos harness plays: the demo in this process, or one running on this machine.

:func:`in_process` builds the demo on a fresh SQLite file (or PostgreSQL in a
schema of its own) and drives it through :class:`httpx.ASGITransport`, so no
socket is opened; :func:`remote` checks that a ``suture demo --chaos`` answers
on a loopback address. Both yield a :class:`Target`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import secrets
import tempfile
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "ADMIN",
    "HarnessError",
    "Target",
    "asgi_lifespan",
    "check_loopback_url",
    "in_process",
    "remote",
]

logger = logging.getLogger("suture.demo")

#: The demo's chaos admin endpoint (``suture demo --chaos``).
ADMIN = "/api/admin/chaos"
_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


class HarnessError(RuntimeError):
    """The harness cannot run (a refused URL, a demo without ``--chaos``...)."""


@asynccontextmanager
async def asgi_lifespan(app: Any) -> AsyncIterator[None]:
    """Run an ASGI app's lifespan (startup ... shutdown) around the block.

    :class:`httpx.ASGITransport` sends requests only; this sends the
    ``lifespan`` messages a server would, so the app starts and stops properly.
    """
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        await outbox.put(message)

    async def expect(kind: str) -> None:
        while True:
            done = asyncio.ensure_future(outbox.get())
            finished, _ = await asyncio.wait({done, task}, return_when=asyncio.FIRST_COMPLETED)
            if done in finished:
                message = done.result()
                if message["type"] == f"lifespan.{kind}.complete":
                    return
                if message["type"] == f"lifespan.{kind}.failed":
                    # Starlette sends the whole traceback: its last error line says it all.
                    lines = str(message.get("message", "")).strip().splitlines()
                    said = [ln for ln in lines if ln[:1].isalpha() and ":" in ln]
                    with suppress(Exception):  # the same error, raised by the app's task
                        await task
                    raise HarnessError(f"the app's {kind} failed: {(said or ['?'])[-1]}")
                continue
            done.cancel()
            task.result()  # raises the app's error
            raise HarnessError(f"the app ended during {kind}")

    task = asyncio.ensure_future(app(scope, receive, send))
    await inbox.put({"type": "lifespan.startup"})
    await expect("startup")
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await expect("shutdown")
        await task


@dataclass(slots=True)
class Target:
    """Where the harness sends its requests, and what it should expect of it."""

    client: httpx.AsyncClient
    description: str
    reset_timeout: float
    notes: list[str] = field(default_factory=list)


@asynccontextmanager
async def in_process(
    database_url: str | None = None,
    *,
    reset_timeout: float = 2.0,
    tasks: int = 300,
    messages: int = 2_000,
    rules: int = 200,
    pool_size: int = 20,
    seed: int = 7,
) -> AsyncIterator[Target]:
    """The demo app in this process, on a fresh SQLite file (or ``database_url``).

    On PostgreSQL the demo's tables live in a schema of their own, dropped at the end.
    """
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    from suture.demo.app import create_app
    from suture.demo.config import Settings, async_url

    with tempfile.TemporaryDirectory(prefix="suture-chaos-") as tmp:
        url = database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'chaos.db'}"
        try:
            backend = sa.make_url(async_url(url)).get_backend_name()
        except sa.exc.ArgumentError as exc:
            raise HarnessError(f"database_url={url!r}: {exc}") from None
        schema = f"suture_chaos_{uuid.uuid4().hex[:12]}"
        settings = Settings(
            database_url=url,
            schema=schema if backend == "postgresql" else None,
            chaos=True,
            reset_timeout=reset_timeout,
            tasks=tasks,
            messages=messages,
            rules=rules,
            pool_size=pool_size,
            monitor_interval=0.5,
            rand=random.Random(seed),
            token=(token := secrets.token_urlsafe(24)),
        )
        try:
            app = create_app(settings)
        except Exception as exc:  # a driver that is not installed, a directory not writable...
            raise HarnessError(f"cannot build the demo on {url!r}: {exc}") from exc
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        started = False
        try:
            async with (
                asgi_lifespan(app),
                httpx.AsyncClient(
                    transport=transport,
                    base_url="http://localhost",
                    headers={"Authorization": f"Bearer {token}"},
                ) as client,
            ):
                started = True
                where = "PostgreSQL" if backend == "postgresql" else "SQLite"
                yield Target(
                    client=client,
                    description=f"in-process demo on {where} ({tasks} tasks, "
                    f"{messages} messages, {rules} rules, pool {pool_size})",
                    reset_timeout=reset_timeout,
                    notes=[
                        f"breaker reset_timeout shortened to {reset_timeout:g} s "
                        "(suture demo's default is 10 s) so healing shows within the run",
                        f"pool of {pool_size} connections (the demo's default is 10) so the "
                        "workers and a spam capture stay under the 70% WARNING mark that "
                        "sheds captures; the monitor samples every 0.5 s",
                    ],
                )
        finally:
            if backend == "postgresql" and started:
                engine = create_async_engine(async_url(url))
                try:
                    async with engine.begin() as conn:
                        await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                except sa.exc.SQLAlchemyError as exc:
                    logger.warning("chaos harness: could not drop schema %s: %s", schema, exc)
                finally:
                    await engine.dispose()


def check_loopback_url(url: str) -> str:
    """``url`` without a trailing slash when it is http(s) on this machine; else ValueError."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url={url!r}: expected http://127.0.0.1:PORT (a running suture demo)")
    host = parts.hostname
    loopback = host.lower() in _LOOPBACK_NAMES
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
    if not loopback:
        raise ValueError(
            f"url={url!r}: the harness only breaks services on this machine; "
            "allowed hosts are 127.0.0.0/8, ::1 and localhost"
        )
    return url.rstrip("/")


@asynccontextmanager
async def remote(
    url: str, *, reset_timeout: float = 10.0, token: str | None = None
) -> AsyncIterator[Target]:
    """A demo already running on this machine with ``--chaos``.

    ``token``: a manager's token (default ``$SUTURE_DEMO_TOKEN``), sent as a bearer
    credential: the demo's manager routes need one.
    """
    base = check_loopback_url(url)
    token = token or os.environ.get("SUTURE_DEMO_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=base, timeout=30.0, headers=headers) as client:
        try:
            answer = await client.get(ADMIN)
        except httpx.HTTPError as exc:
            raise HarnessError(f"cannot reach {base}: {exc}") from None
        if answer.status_code == 404:
            raise HarnessError(
                f"{base} has no chaos admin endpoint: start it with  suture demo --chaos"
            )
        if answer.status_code == 401:
            raise HarnessError(
                f"{base} needs a manager's token: set SUTURE_DEMO_TOKEN to the token "
                "'suture demo' printed (or started with --token)"
            )
        if answer.status_code != 200:
            raise HarnessError(f"{base}{ADMIN} answered {answer.status_code}")
        yield Target(
            client=client,
            description=f"suture demo at {base}",
            reset_timeout=reset_timeout,
            notes=[
                f"expecting the demo's breaker reset_timeout of {reset_timeout:g} s",
                "at 70% pool use the demo sheds spam captures: if the baseline shows shed "
                "requests, lower --concurrency or start the demo with a larger --pool-size",
            ],
        )
