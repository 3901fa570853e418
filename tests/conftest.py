"""Shared fixtures: the real PostgreSQL and Redis, and the CI rule.

Integration tests talk to real services. Outside CI a missing service skips
those tests with a clear reason; in CI (``CI=true``) it fails them, because
``.ci/run`` is responsible for starting every service the suite needs.
"""

from __future__ import annotations

import os
import socket
import uuid

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


def require_service(name: str, host: str, port: int) -> None:
    """Skip (locally) or fail (in CI) when a service does not answer."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}; CI must provide it (.ci/run starts it)", pytrace=False)
    pytest.skip(message)


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
