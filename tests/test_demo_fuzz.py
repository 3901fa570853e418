"""The reference service fuzzed from its own OpenAPI document (Schemathesis), on PostgreSQL.

The demo runs under uvicorn on a loopback port, on a fresh PostgreSQL schema;
Schemathesis reads ``/openapi.json`` and runs every phase (the documented
examples, the coverage of each constraint's edges, random fuzzing in positive
and negative modes, and the stateful phase that follows the document's links:
list, then promote, release, archive or respond with the ids it found) with
every check on: no 5xx, every status and body as documented, invalid input
refused, valid input accepted, ``405`` with ``Allow`` for other methods. A fixed
seed and a bounded number of examples keep it reproducible and under two
minutes. A failure prints Schemathesis' own report, with the ``curl`` line
that reproduces each finding.
"""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import require
from demo_support import serve
from suture.demo.app import Settings, create_app

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _schemathesis_installed() -> None:
    """The dev extra installs it; in CI a missing one fails (the CI rule), locally it skips."""
    require(
        importlib.util.find_spec("schemathesis") is not None,
        "schemathesis is not installed (pip install -e '.[dev]')",
    )


#: Test cases per operation and phase: enough to reach every constraint's edges in
#: about a minute. A longer hunt: SUTURE_FUZZ_EXAMPLES=500 SUTURE_FUZZ_SEED=... pytest ...
MAX_EXAMPLES = int(os.environ.get("SUTURE_FUZZ_EXAMPLES", "40"))
SEED = int(os.environ.get("SUTURE_FUZZ_SEED", "15"))
#: The CI budget of one run; a longer hunt sets its own.
BUDGET = 120.0 if "SUTURE_FUZZ_EXAMPLES" not in os.environ else float("inf")
PHASES = "examples,coverage,fuzzing,stateful"


@pytest.fixture
def served_demo(pg_url: str, unique_name: str) -> Iterator[Served]:
    """The demo on PostgreSQL under uvicorn on a loopback port; yields its base URL."""
    settings = Settings(
        database_url=pg_url,
        schema=unique_name,
        tasks=60,
        messages=400,
        rules=40,
        # The pool is sampled every second (as `suture demo` does): admission then reads a
        # fresh level; without sampling a stale level sheds the low-priority capture.
        rand=random.Random(SEED),
    )
    app = create_app(settings)
    try:
        with serve(app) as url:
            yield Served(url, app)
    finally:
        engine = sa.create_engine(pg_url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE'))
        engine.dispose()


class Served(str):
    """The base URL of a served demo; ``.app`` is the app it serves."""

    app: Any

    def __new__(cls, url: str, app: Any) -> Served:
        served = super().__new__(cls, url)
        served.app = app
        return served


def schemathesis_run(base_url: Served, *extra: str) -> subprocess.CompletedProcess[str]:
    # Signed in as the console manager once the demo signs managers in (others get 401).
    token = getattr(base_url.app.state.service, "console_token", None)
    auth = ["--header", f"Authorization: Bearer {token}"] if token else []
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{base_url}/openapi.json",
        "--phases",
        PHASES,
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-database",
        "none",  # nothing kept between runs: the seed alone decides what is sent
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--no-color",
        *auth,
        *extra,
    ]
    # Schemathesis keeps a crash cache in its working directory: not in the repository.
    with tempfile.TemporaryDirectory() as workdir:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=3600, check=False, cwd=workdir
        )


def test_schemathesis_finds_nothing(served_demo: Served) -> None:
    started = time.monotonic()
    result = schemathesis_run(served_demo)
    took = time.monotonic() - started
    report = result.stdout[-20_000:] + result.stderr[-5_000:]
    assert result.returncode == 0, report
    assert "No issues found" in result.stdout, report
    # every phase ran, the stateful one included (it needs the document's links)
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert phase in result.stdout, report
    assert took < BUDGET, f"the fuzz run took {took:.0f} s (the budget is 2 minutes)\n{report}"
    print(result.stdout[-3000:])  # the summary, in pytest's output of this test (-rP, -s)


def test_the_run_fails_on_a_server_error(served_demo: Served, monkeypatch: Any) -> None:
    """The same run fails (so CI fails) when a route answers 500: promote is broken here."""
    app = served_demo.app

    async def broken(*args: object, **kwargs: object) -> dict[str, Any]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.state.service, "move_message", broken)
    result = schemathesis_run(
        served_demo, "--include-operation-id", "promote", "--max-failures", "1"
    )
    assert result.returncode != 0, result.stdout[-5000:]
    assert "Server error" in result.stdout, result.stdout[-5000:]
