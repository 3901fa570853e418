"""Shared fixtures: the real PostgreSQL and Redis, headless Chromium, and the CI rule.

Integration tests talk to real services. Outside CI a missing service (or a
missing browser) skips those tests with a clear reason; in CI (``CI=true``) it
fails them, because ``.ci/run`` is responsible for providing everything the
suite needs.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

PG_URL = os.environ.get("SUTURE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SUTURE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require(condition: bool, reason: str) -> None:
    """The CI rule: unless ``condition``, skip (locally) or fail (in CI) with ``reason``."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason}; CI must provide it (.ci/run does)", pytrace=False)
    pytest.skip(reason)


def require_service(name: str, host: str, port: int) -> None:
    """Skip (locally) or fail (in CI) when a service does not answer."""
    require(_reachable(host, port), f"{name} is not reachable at {host}:{port}")


# Playwright cannot download its own browser here: Debian's chromium, launched so
# that it makes no connection of its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium through Playwright's sync API, one per test module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - depends on the environment
        require(False, "playwright is not installed (the dev extra has it)")
        return
    executable = shutil.which("chromium")
    require(executable is not None, "chromium is not installed (Debian package 'chromium')")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The SQLAlchemy URL of the real PostgreSQL test database."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return PG_URL


@pytest.fixture(scope="session")
def async_pg_url(pg_url: str) -> str:
    """The same database through psycopg's asyncio driver (the same dialect name)."""
    return pg_url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of the real Redis."""
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture
def unique_name() -> str:
    """A name no other test (or a parallel run) uses: for tables, keys, breakers."""
    return f"t_{uuid.uuid4().hex[:12]}"
