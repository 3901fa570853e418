"""Smoke: the real PostgreSQL and Redis that the integration tests use answer."""

from __future__ import annotations

import pytest


@pytest.mark.postgres
def test_postgres_answers(pg_url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar_one() == 1
            version = conn.execute(sa.text("show server_version")).scalar_one()
            assert str(version)[0].isdigit()
    finally:
        engine.dispose()


@pytest.mark.redis
def test_redis_answers(redis_url: str, unique_name: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping()
        client.set(unique_name, "1", ex=10)
        assert client.get(unique_name) == b"1"
        client.delete(unique_name)
    finally:
        client.close()


def test_a_missing_service_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    import conftest

    monkeypatch.setattr(conftest, "_reachable", lambda host, port: False)
    monkeypatch.setattr(conftest, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI must provide it"):
        conftest.require_service("Redis", "127.0.0.1", 6379)
    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="not reachable"):
        conftest.require_service("Redis", "127.0.0.1", 6379)
