"""The chaos load (``python -m suture.demo.load``) against a real server: the prober,
--start-at; and the chaos service process (``suture.demo.serve``) freezing its startup."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from demo_support import serve

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
#: The server's first answers: an open breaker's 503 (what wakes the prober).
REJECTED = 20


def _app(hits: list[float]) -> Starlette:
    lock = threading.Lock()

    async def assistance(request: Request) -> JSONResponse:
        with lock:
            hits.append(time.time())
            rejected = len(hits) <= REJECTED
        if rejected:
            body = {"success": False, "error": "unavailable", "code": "breaker_open"}
            return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
        return JSONResponse({"success": True, "requests": []})

    return Starlette(routes=[Route("/api/manager/assistance", assistance)])


def _run_load(url: str, *extra: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "suture.demo.load", "--url", url, "--workers", "1"),
            *("--rate", "2", "--seconds", "1", "--write-share", "0", "--grace", "5", *extra),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_the_prober_adds_fast_failures_but_no_sent_request() -> None:
    hits: list[float] = []
    with serve(_app(hits)) as url:
        start_at = time.time() + 0.5
        lines = _run_load(url, "--probe", "--start-at", f"{start_at:.3f}")
    assert lines[-1] == {"done": True}
    seconds = lines[:-1]
    sent = sum(line["sent"] for line in seconds)
    probes = sum(line["probes"] for line in seconds)
    fails = [f for line in seconds for f in line["fail_ms"]]
    # Every request the server got is a browser's try or the prober's, counted once.
    assert sent + probes == len(hits)
    # The first answer (a browser's) woke the prober, which kept asking while the
    # breaker rejected it: every rejection is a fast-fail sample, the prober's too.
    assert probes >= REJECTED - sent
    assert len(fails) == REJECTED
    # Nothing was sent before --start-at.
    assert min(hits) >= start_at - 0.01


def _healthy(hits: list[float]) -> Starlette:
    async def assistance(request: Request) -> JSONResponse:
        hits.append(time.time())
        return JSONResponse({"success": True, "requests": []})

    return Starlette(routes=[Route("/api/manager/assistance", assistance)])


def test_with_two_services_the_prober_asks_the_open_one_until_it_closes() -> None:
    # Round robin would send every other probe to the healthy service, whose 200 would
    # stop the prober after two tries: the open one's fast failures would be a handful.
    open_hits: list[float] = []
    healthy_hits: list[float] = []
    with serve(_app(open_hits)) as open_url, serve(_healthy(healthy_hits)) as healthy_url:
        start_at = time.time() + 0.5
        lines = _run_load(
            open_url, "--url", healthy_url, "--probe", "--start-at", f"{start_at:.3f}",
            "--seconds", "3",  # time for every rejection, each try one after the other
        )  # fmt: skip
    seconds = lines[:-1]
    sent = [sum(line["workers"][i]["sent"] for line in seconds) for i in (0, 1)]
    fails = [f for line in seconds for f in line["workers"][0]["fail_ms"]]
    # Every rejection of the open service is a fast-fail sample: the prober kept at it.
    assert len(fails) == REJECTED
    # The healthy one got only the browsers' tries: the prober asks the open one alone.
    assert len(healthy_hits) == sent[1]
    assert sum(line["probes"] for line in seconds) == len(open_hits) - sent[0]


def test_without_the_prober_only_the_browsers_ask() -> None:
    hits: list[float] = []
    with serve(_app(hits)) as url:
        lines = _run_load(url)
    seconds = lines[:-1]
    assert sum(line["probes"] for line in seconds) == 0
    assert sum(line["sent"] for line in seconds) == len(hits)


async def test_the_served_app_is_frozen_out_of_the_collector_once_started() -> None:
    import gc
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    from suture.demo.serve import freeze_after_startup

    steps: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        steps.append("started")
        yield
        steps.append("stopped")

    app = freeze_after_startup(FastAPI(lifespan=lifespan))
    gc.unfreeze()
    try:
        async with app.router.lifespan_context(app):
            assert steps == ["started"]
            assert gc.get_freeze_count() > 0  # what startup left alive: frozen
        assert steps == ["started", "stopped"]
    finally:
        gc.unfreeze()  # this test process's objects go back to the collector
