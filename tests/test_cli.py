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


# --- who may act ----------------------------------------------------------------------


def _serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, *argv: str) -> tuple[int, Any]:
    """Run ``suture demo`` with uvicorn replaced; the exit code and the app it would serve."""
    import uvicorn

    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    monkeypatch.delenv("SUTURE_DEMO_TOKEN", raising=False)
    url = f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"
    code = cli.main(["demo", "--database-url", url, "--messages", "10", *argv])
    return code, served.get("app")


def test_demo_prints_a_one_time_login_link_and_a_fresh_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    from starlette.testclient import TestClient

    code, app = _serve(monkeypatch, tmp_path)
    assert code == 0
    out = capsys.readouterr().out
    service = app.state.service
    token = service.console_token
    assert token and len(token) >= 24 and f"API token      {token}" in out
    link = next(line for line in out.splitlines() if "log in" in line).split()[2]
    assert link.startswith("http://127.0.0.1:8000/login?code=")
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        path = link.removeprefix("http://127.0.0.1:8000")
        assert client.get(path, follow_redirects=False).status_code == 303
        assert client.get(path, follow_redirects=False).status_code == 401  # once


def test_demo_token_from_the_option_or_the_environment_is_not_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    code, app = _serve(monkeypatch, tmp_path, "--token", "given-token-123")
    assert code == 0 and app.state.service.console_token == "given-token-123"
    assert "given-token-123" not in capsys.readouterr().out
    monkeypatch.setenv("SUTURE_DEMO_TOKEN", "env-token-456")
    import uvicorn

    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app))
    url = f"sqlite+aiosqlite:///{tmp_path / 'env.db'}"
    assert cli.main(["demo", "--database-url", url, "--messages", "10"]) == 0
    assert served["app"].state.service.console_token == "env-token-456"
    assert "env-token-456" not in capsys.readouterr().out


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_demo_beyond_loopback_refuses_to_start_without_a_credential(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any, host: str
) -> None:
    code, app = _serve(monkeypatch, tmp_path, "--host", host)
    assert code == 2 and app is None
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0  # one clear line
    assert f"--host {host} is not a loopback address" in err and "--token" in err


def test_demo_beyond_loopback_with_a_managers_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    import hashlib

    managers = tmp_path / "managers"
    managers.write_text(f"alice {hashlib.sha256(b'alice-secret').hexdigest()}\n")
    code, app = _serve(
        monkeypatch,
        tmp_path,
        "--host",
        "192.0.2.10",
        "--managers",
        str(managers),
        "--allowed-host",
        "demo.example",
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "1 from" in out and "/login" in out and "log in " not in out  # no console token
    service = app.state.service
    assert service.console_token is None
    assert service.managers.check("alice-secret") == "alice"
    assert set(service.settings.allowed_hosts) == {"demo.example", "192.0.2.10"}


def test_demo_refuses_a_bad_managers_file_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    bad = tmp_path / "managers"
    bad.write_text("alice not-a-hash\n")
    code, _ = _serve(monkeypatch, tmp_path, "--managers", str(bad))
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("suture demo: --managers: ") and ":1: expected" in err
    code, _ = _serve(monkeypatch, tmp_path, "--managers", str(tmp_path / "missing"))
    assert code == 2 and "--managers" in capsys.readouterr().err


def _frozen_once_started(app: Any) -> bool:
    """Whether ``app``'s startup left what it holds frozen out of the garbage collector."""
    import gc

    from starlette.testclient import TestClient

    gc.unfreeze()
    try:
        with TestClient(app, base_url="http://127.0.0.1:8000"):
            return gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # this test process's objects go back to the collector


def test_the_demo_freezes_its_startup_objects_out_of_the_collector(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # A full collection walking the imports and the seed paused every request 20-100 ms.
    code, app = _serve(monkeypatch, tmp_path)
    assert code == 0
    assert _frozen_once_started(app)


def test_each_demo_worker_freezes_its_startup_objects_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    import json

    from suture.demo.app import Settings

    url = f"sqlite+aiosqlite:///{tmp_path / 'worker.db'}"
    settings = Settings(database_url=url, messages=10)
    monkeypatch.setenv(cli.WORKER_SETTINGS, json.dumps(cli._worker_settings(settings, "t" * 32)))
    app = cli.worker_app()
    assert _frozen_once_started(app)
