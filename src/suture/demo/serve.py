"""Serve the reference service from a JSON of :class:`Settings` (what ``suture chaos`` starts).

    python -m suture.demo.serve --port 8123 --settings '{"database_url": "...", "naive": true}'

A real uvicorn process on 127.0.0.1, without proxy headers (the chaos admin
endpoint sees the TCP peer), logging warnings only, with the slow-client limits
of ``suture demo`` (:func:`suture.demo.guard.server_options`: a header read
timeout, a connection cap) unless the settings are ``naive`` (then uvicorn's
own defaults, which bound neither). ``suture demo`` is the command for people;
this one is for a harness that needs every setting.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from dataclasses import fields

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suture.demo.serve")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--settings", default="{}")
    args = parser.parse_args(argv)
    uvicorn = importlib.import_module("uvicorn")
    settings = settings_from_json(args.settings)
    app = create_app(settings)
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
