"""Serve the reference service from a JSON of :class:`Settings` (what ``suture chaos`` starts).

    python -m suture.demo.serve --port 8123 --settings '{"database_url": "...", "naive": true}'

A real uvicorn process on 127.0.0.1, without proxy headers (the chaos admin
endpoint sees the TCP peer), logging warnings only, with the slow-client limits
of ``suture demo`` (:func:`suture.demo.guard.server_options`: a header read
timeout, a connection cap) unless the settings are ``naive`` (then uvicorn's
own defaults, which bound neither). ``suture demo`` is the command for people;
this one is for a harness that needs every setting.

Once the service has started (tables made, seed written), what the process
holds is frozen out of the cyclic garbage collector (:func:`gc.freeze`, which
``suture demo`` applies too, through :func:`freeze_after_startup`): a
full collection then walks only what requests made since, about 1 ms instead
of 20 to 100 ms spent walking the imported modules and the seed, during which
every request waits (a fast ``503`` among them).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import fields
from typing import Any

from fastapi import FastAPI

from suture.demo.app import create_app
from suture.demo.config import Settings
from suture.demo.guard import server_options

__all__ = ["main", "settings_from_json"]

#: Settings a JSON document may set (the clock and the random source stay the defaults).
_JSON_FIELDS = frozenset(f.name for f in fields(Settings)) - {"clock", "rand"}


def settings_from_json(text: str) -> Settings:
    """:class:`Settings` from a JSON object; an unknown field is a ``ValueError`` naming it."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("settings: expected a JSON object")
    unknown = sorted(set(data) - _JSON_FIELDS)
    if unknown:
        raise ValueError(f"settings: unknown field(s) {', '.join(unknown)}")
    if "admin_hosts" in data:
        data["admin_hosts"] = tuple(data["admin_hosts"])
    return Settings(**data)


def freeze_after_startup(app: FastAPI) -> FastAPI:
    """``app`` whose lifespan, once started, moves every object alive to the permanent
    generation of the garbage collector (after one last collection)."""
    started = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        async with started(app_) as state:
            gc.collect()
            gc.freeze()
            yield state

    app.router.lifespan_context = lifespan
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suture.demo.serve")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--settings", default="{}")
    args = parser.parse_args(argv)
    uvicorn = importlib.import_module("uvicorn")
    settings = settings_from_json(args.settings)
    app = freeze_after_startup(create_app(settings))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        proxy_headers=False,
        **({} if settings.naive else server_options()),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
