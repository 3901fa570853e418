"""The ``suture`` command line."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import pytest

from suture import cli


@pytest.fixture(autouse=True)
def _no_redis_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """A REDIS_URL in the caller's environment must not make these demos share state."""
    monkeypatch.delenv("REDIS_URL", raising=False)


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("suture ")


def test_demo_defaults() -> None:
    args = cli.build_parser().parse_args(["demo"])
    assert (args.host, args.port, args.database_url, args.chaos) == ("127.0.0.1", 8000, None, False)
    assert (args.error_rate, args.latency, args.hold) == (0.0, 0.0, 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--error-rate", "1.5"], "must be between 0 and 1"),
        (["demo", "--error-rate", "lots"], "is not a number"),
        (["demo", "--latency", "-1"], "0 seconds or more"),
        (["demo", "--port", "70000"], "not a TCP port"),
        (["demo", "--hold", "-3"], "0 or more"),
    ],
)
def test_bad_flags_are_explained(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_demo_extra_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name in {"fastapi", "uvicorn"} else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert cli.main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "missing: fastapi, uvicorn" in err
    assert "pip install 'suture[demo]'" in err


def test_demo_prints_its_urls_and_serves(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    import uvicorn

    served: dict[str, Any] = {}

    def fake_run(app: Any, **kwargs: Any) -> None:
        served["app"] = app
        served.update(kwargs)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    code = cli.main(
        [
            "demo",
            "--port",
            "8123",
            "--database-url",
            url,
            "--chaos",
            "--error-rate",
            "0.3",
            "--latency",
            "0.05",
            "--messages",
            "10",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8123/" in out
    assert "http://127.0.0.1:8123/dashboard" in out
    assert "/api/admin/chaos" in out
    assert "error rate 30%" in out
    assert served["host"] == "127.0.0.1"
    assert served["port"] == 8123
    # the peer address is the TCP peer's: X-Forwarded-For cannot make a request local
    assert served["proxy_headers"] is False
    # --traffic's in-process requests are not logged one line each
    import logging

    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    settings = served["app"].state.service.settings
    assert settings.database_url == url
    assert settings.chaos is True
    assert settings.error_rate == 0.3
    assert settings.latency == 0.05
    assert settings.messages == 10


def test_passwords_are_not_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    monkeypatch.setattr(cli, "_preflight", lambda url: None)  # no such database here
    url = "postgresql+psycopg://app:s3cret@127.0.0.1:5432/demo"
    argv = ["demo", "--database-url", url, "--host", "0.0.0.0", "--chaos", "--token", "t0ken"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out
    assert "app:***@127.0.0.1" in out
    assert "only answers 127.0.0.1" in out


def test_database_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    import uvicorn

    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app))
    url = f"sqlite+aiosqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    assert cli.main(["demo"]) == 0
    assert served["app"].state.service.settings.database_url == url


def test_demo_refuses_to_hold_more_connections_than_the_pool_has(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["demo", "--pool-size", "4", "--hold", "5"]) == 2
    assert "--hold 5 is more than the pool's 4 connections" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("sqlite://", "in-memory SQLite database lives in one connection"),
        ("not a url", "ArgumentError"),
        ("postgresql+psycopg://postgres:s3cret@127.0.0.1:1/test", "OperationalError"),
    ],
)
def test_a_database_the_demo_cannot_use_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, reason: str
) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("must not serve"))
    assert cli.main(["demo", "--database-url", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("suture demo: cannot use the database ")
    assert reason in err
    assert "Traceback" not in err
    assert "s3cret" not in err
    assert len(err.strip().splitlines()) == 1


def test_redis_url_is_shown_without_its_password_and_a_dead_redis_is_not_fatal(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Any,
) -> None:
    import socket

    import uvicorn

    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app))
    with socket.socket() as sock:  # a local port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    redis_url = f"redis://:s3cret@127.0.0.1:{port}/0"
    url = f"sqlite+aiosqlite:///{tmp_path / 'redis.db'}"
    with caplog.at_level(logging.WARNING, logger="suture"):
        code = cli.main(["demo", "--database-url", url, "--redis-url", redis_url])
    assert code == 0
    service = served["app"].state.service
    try:
        out = capsys.readouterr().out
        assert "s3cret" not in out
        assert f"redis://:***@127.0.0.1:{port}/0  (not answering: local state" in out
        assert service.settings.redis_url == redis_url
        assert service.state_store()["degraded"] is True
        warnings = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert "s3cret" not in warnings[0]
    finally:
        service.close_state_store()


def test_redis_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    import uvicorn

    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    url = f"sqlite+aiosqlite:///{tmp_path / 'env-redis.db'}"
    assert cli.main(["demo", "--database-url", url]) == 0
    service = served["app"].state.service
    service.close_state_store()
    assert service.settings.redis_url == "redis://127.0.0.1:1/0"
    assert "shared state   redis://127.0.0.1:1/0" in capsys.readouterr().out


def test_without_redis_the_state_is_this_process_memory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    import uvicorn

    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app))
    url = f"sqlite+aiosqlite:///{tmp_path / 'memory.db'}"
    assert cli.main(["demo", "--database-url", url]) == 0
    assert served["app"].state.service.settings.redis_url is None
    assert "shared state   none" in capsys.readouterr().out
