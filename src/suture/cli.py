# Over ~400 lines on purpose: every subcommand's options and their checks, each a few lines.
"""The ``suture`` command.

``suture demo`` serves the reference service (the ``demo`` extra):

    suture demo [--host 127.0.0.1] [--port 8000] [--database-url URL] [--chaos]
                [--redis-url URL] [--error-rate X] [--latency S] [--hold N] [--traffic N]

``suture chaos`` breaks it on purpose and reports how it healed:

    suture chaos [--quick] [--url http://127.0.0.1:PORT | --database-url URL] [--json]

``suture proxy`` puts a TCP fault proxy in front of a dependency (no extra needed):

    suture proxy [--control ADDR] [--mode MODE] [--latency S] [--jitter S]
                 [--bandwidth B] [--drop F] [--allow-remote] [--no-check] LISTEN TARGET
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import ipaddress
import json
import logging
import math
import os
import sys
import urllib.parse
from collections.abc import Sequence
from typing import Any

__all__ = ["build_parser", "main"]

DEMO_MODULES = (
    "fastapi",
    "uvicorn",
    "sqlalchemy",
    "greenlet",
    "aiosqlite",
    "psycopg",
    "starlette",
    "prometheus_client",
)
_LOOPBACK_NAMES = {"localhost", "ip6-localhost"}
#: Ceiling of ``suture demo --traffic`` (requests per second); kept in step with
#: ``suture.demo.traffic.MAX_TRAFFIC``.
MAX_TRAFFIC = 200.0


def _version() -> str:
    from suture._version import __version__

    return __version__


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1 (0.3 means 30%)")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 seconds or more")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _positive(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def _rate(text: str) -> float:
    value = _seconds(text)
    if value > MAX_TRAFFIC:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {MAX_TRAFFIC:g} requests/s")
    return value


def _port(text: str) -> int:
    value = _count(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="suture",
        description="suture: a self-healing toolkit for Python services.",
    )
    parser.add_argument("--version", action="version", version=f"suture {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="serve the reference service (manager page, dashboard, API)",
        description=(
            "Serve the reference service: a manager's assistance queue and spam capture "
            "that heal themselves. SQLite by default (./suture-demo.db, created and seeded "
            "on first start); PostgreSQL with --database-url or DATABASE_URL."
        ),
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    demo.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    demo.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db "
        "(default: $DATABASE_URL, else sqlite+aiosqlite:///./suture-demo.db)",
    )
    demo.add_argument(
        "--redis-url",
        default=None,
        help="share the database breaker and retry budget with every 'suture demo' "
        "using this Redis, e.g. redis://127.0.0.1:6379/0 (default: $REDIS_URL, else "
        "this process's memory)",
    )
    demo.add_argument(
        "--workers",
        type=_count,
        default=1,
        help="worker processes (default 1, with in-memory state); more than 1 shares the "
        "breaker and retry budget through Redis and needs --redis-url",
    )
    demo.add_argument(
        "--chaos",
        action="store_true",
        help="enable the fault-injection admin endpoint (/api/admin/chaos, local clients only)",
    )
    access = demo.add_argument_group("who may act (every manager page and API route)")
    access.add_argument(
        "--token",
        default=None,
        help="the token of the manager named 'manager' (default: $SUTURE_DEMO_TOKEN, else a "
        "fresh random one printed at start with a one-time login link)",
    )
    access.add_argument(
        "--managers",
        metavar="FILE",
        default=None,
        help="named managers, one 'name sha256-of-token' per line "
        "(printf %%s TOKEN | sha256sum prints the hash)",
    )
    access.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host the service answers besides localhost, 127.0.0.1 and ::1 (repeatable); "
        "other Host values get a 421",
    )
    faults = demo.add_argument_group("faults injected from the start (database target)")
    faults.add_argument("--error-rate", type=_fraction, default=0.0, help="0..1, e.g. 0.3")
    faults.add_argument("--latency", type=_seconds, default=0.0, help="seconds added per call")
    faults.add_argument("--hold", type=_count, default=0, help="pool connections held")
    tuning = demo.add_argument_group("tuning")
    tuning.add_argument("--pool-size", type=_count, default=10, help="connections (default 10)")
    tuning.add_argument(
        "--reset-timeout", type=_seconds, default=10.0, help="breaker open time in s (default 10)"
    )
    tuning.add_argument("--tasks", type=_count, default=300, help="tasks to seed (default 300)")
    tuning.add_argument(
        "--messages", type=_count, default=10_000, help="messages to seed (default 10000)"
    )
    tuning.add_argument(
        "--rules", type=_count, default=200, help="spam rules to seed (default 200)"
    )
    tuning.add_argument("--no-seed", action="store_true", help="start with empty tables")
    tuning.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    demo.add_argument(
        "--traffic",
        type=_rate,
        default=0.0,
        metavar="N",
        help="synthetic requests per second to the app's own API, in-process, so the "
        f"dashboard moves (default 0 = off, at most {MAX_TRAFFIC:g})",
    )
    _add_chaos_command(commands)
    _add_proxy_command(commands)
    return parser


def _add_proxy_command(commands: Any) -> None:
    proxy = commands.add_parser(
        "proxy",
        help="a TCP fault proxy in front of a dependency (PostgreSQL, Redis...)",
        description=(
            "Forward LISTEN to TARGET and inject network faults, switched at run time "
            "through a local control endpoint: GET / shows the faults and the counts, "
            'POST /faults with {"mode": "blackhole"} (or "reset", "pass", "latency": 0.3, '
            '"jitter", "bandwidth", "drop") changes them, POST /clear heals. Loopback '
            "addresses only unless --allow-remote. Ctrl-C stops it."
        ),
    )
    proxy.add_argument("listen", metavar="LISTEN", help="HOST:PORT or PORT, e.g. 6432")
    proxy.add_argument("target", metavar="TARGET", help="HOST:PORT, e.g. 127.0.0.1:5432")
    proxy.add_argument(
        "--control",
        default="127.0.0.1:0",
        metavar="ADDR",
        help="the control endpoint's HOST:PORT, loopback only (default: a free port)",
    )
    proxy.add_argument(
        "--mode", choices=["pass", "reset", "blackhole"], default="pass", help="(default pass)"
    )
    proxy.add_argument("--latency", type=_seconds, default=0.0, help="seconds per round trip")
    proxy.add_argument("--jitter", type=_seconds, default=0.0, help="± seconds on the latency")
    proxy.add_argument(
        "--bandwidth", type=_positive, default=None, help="bytes per second each way (no limit)"
    )
    proxy.add_argument("--drop", type=_fraction, default=0.0, help="fraction of new connections")
    proxy.add_argument(
        "--allow-remote",
        action="store_true",
        help="accept a LISTEN or TARGET address that is not loopback",
    )
    proxy.add_argument(
        "--no-check", action="store_true", help="start even if TARGET does not answer yet"
    )


def _add_chaos_command(commands: Any) -> None:
    chaos = commands.add_parser(
        "chaos",
        help="break the reference service on purpose and report how it healed",
        description=(
            "The chaos harness: plays baseline, 30% database errors, a slow database "
            "(+300 ms per statement, inside the connection), "
            "an exhausted pool, 100% database errors, and the faults cleared against "
            "the reference service, with closed-loop workers at a bounded rate, and "
            "prints per-phase numbers and a verdict per phase. In-process on a fresh "
            "SQLite file by default (no socket opened). Exit code 0 when every phase "
            "healed, 1 otherwise, 2 when it could not run."
        ),
    )
    where = chaos.add_mutually_exclusive_group()
    where.add_argument(
        "--url",
        default=None,
        help="a running 'suture demo --chaos' on this machine, e.g. http://127.0.0.1:8000 "
        "(loopback addresses only)",
    )
    where.add_argument(
        "--database-url",
        default=None,
        help="run in-process on this database instead of a temporary SQLite file "
        "(PostgreSQL: in a schema of its own, dropped afterwards)",
    )
    chaos.add_argument(
        "--quick", action="store_true", help="short phases of 1 s (about 12 s in all)"
    )
    chaos.add_argument(
        "--phase-seconds", type=_positive, default=None, help="seconds per phase (default 5)"
    )
    chaos.add_argument(
        "--concurrency", type=_count, default=8, help="closed-loop workers (default 8)"
    )
    chaos.add_argument(
        "--rate", type=_positive, default=100.0, help="requests per second, at most (default 100)"
    )
    chaos.add_argument(
        "--reset-timeout",
        type=_positive,
        default=None,
        help="the breaker's open time: set on the in-process service (default 2 s), "
        "expected of a --url service (default 10 s, the demo's)",
    )
    chaos.add_argument("--json", action="store_true", help="print the report as JSON")
    chaos.add_argument("--verbose", action="store_true", help="log suture's events to stderr")
    network = chaos.add_argument_group(
        "network scenarios (PostgreSQL behind suture's fault proxy, the service as a real "
        "process, each scenario with and without suture)"
    )
    network.add_argument(
        "--scenario",
        action="append",
        default=None,
        metavar="NAME",
        help="play this scenario (repeatable); --list-scenarios shows them",
    )
    network.add_argument(
        "--scenario-file", default=None, metavar="PATH", help="play the scenario(s) of a JSON file"
    )
    network.add_argument("--all", action="store_true", help="play every shipped scenario")
    network.add_argument(
        "--report",
        default=None,
        metavar="DIR",
        help="write report.html, report.json and one CSV per run there "
        "(with --quick alone: the CI-sized set)",
    )
    network.add_argument(
        "--list-scenarios", action="store_true", help="list the shipped scenarios and exit"
    )
    network.add_argument(
        "--redis-url",
        default=None,
        metavar="URL",
        help="the Redis the multi-worker scenarios share, behind a proxy (default: "
        "$REDIS_URL, else redis://127.0.0.1:6379/0)",
    )


def missing_demo_modules() -> list[str]:
    """The modules of the ``demo`` extra that are not installed."""
    return [name for name in DEMO_MODULES if importlib.util.find_spec(name) is None]


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _display_url(url: str) -> str:
    """The database URL without its password."""
    # The demo extra's packages are loaded by name: the command line is importable
    # (``suture --help``) without them, and the core stays free of third-party imports.
    make_url = importlib.import_module("sqlalchemy.engine").make_url
    try:
        return str(make_url(url).render_as_string(hide_password=True))
    except Exception:  # an unparsable URL is reported by the engine later
        return url


def _display_redis_url(url: str) -> str:
    """The Redis URL without its password."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        user = urllib.parse.quote(parts.username or "", safe="")
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port is not None else ""
        return parts._replace(netloc=f"{user}:***@{host}{port}").geturl()
    except ValueError:  # an unparsable URL: show nothing that might be a secret
        return "(unparsable Redis URL)"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _preflight(url: str) -> str | None:
    """Connect once to the demo's database; the reason in one line when that fails."""
    import asyncio

    from suture.demo.config import async_url

    sa_async = importlib.import_module("sqlalchemy.ext.asyncio")

    async def check() -> None:
        engine = sa_async.create_async_engine(async_url(url))
        try:
            async with engine.connect():
                pass
        finally:
            await engine.dispose()

    try:
        asyncio.run(check())
    except Exception as exc:
        return _one_line(exc)
    return None


_WILDCARDS = ("0.0.0.0", "::", "")


def _access(
    args: argparse.Namespace,
) -> tuple[str | None, tuple[tuple[str, str], ...], tuple[str, ...]] | str:
    """The token, the managers and the extra allowed hosts; or why the demo refuses to start."""
    token = args.token or os.environ.get("SUTURE_DEMO_TOKEN") or None
    managers: tuple[tuple[str, str], ...] = ()
    if args.managers:
        from suture.demo.auth import load_managers

        try:
            managers = load_managers(args.managers)
        except (OSError, ValueError) as exc:
            return f"--managers: {_one_line(exc)}"
    if not _is_loopback(args.host) and token is None and not managers:
        return (
            f"--host {args.host} is not a loopback address: give --token (or "
            "SUTURE_DEMO_TOKEN) or --managers FILE, so that only managers can act"
        )
    allowed = list(args.allowed_host)
    if args.host not in _WILDCARDS and not _is_loopback(args.host):
        allowed.append(args.host)
    return token, managers, tuple(allowed)


def _login_lines(service: Any, args: argparse.Namespace) -> list[str]:
    """How to sign in: the one-time link (with a console token), or the login page."""
    host = "127.0.0.1" if args.host in _WILDCARDS else args.host
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{args.port}"
    lines = []
    if service.console_token is not None:
        code = service.managers.login_link()
        lines.append(f"  log in         {base}/login?code={code}  (works once)")
        if not (args.token or os.environ.get("SUTURE_DEMO_TOKEN")):
            lines.append(f"  API token      {service.console_token}  (Authorization: Bearer ...)")
    if args.managers:
        count = len(service.settings.managers)
        lines.append(f"  managers       {count} from {args.managers}: sign in at {base}/login")
    if args.host in _WILDCARDS and not args.allowed_host:
        lines.append(
            "  note: only Host names localhost, 127.0.0.1 and ::1 are answered; "
            "add --allowed-host NAME for the name clients use"
        )
    return lines


def _demo(args: argparse.Namespace) -> int:  # noqa: C901, PLR0911, PLR0912, PLR0915 - one exit per refused setting, each with its line
    missing = missing_demo_modules()
    if missing:
        print(
            f"suture demo needs the 'demo' extra; missing: {', '.join(missing)}.\n"
            "Install it with:  pip install 'suture[demo]'\n"
            "(from a clone:    pip install -e '.[demo]')",
            file=sys.stderr,
        )
        return 2
    if args.pool_size < 1:
        print("suture demo: --pool-size must be at least 1", file=sys.stderr)
        return 2
    if args.reset_timeout <= 0:
        print("suture demo: --reset-timeout must be more than 0 seconds", file=sys.stderr)
        return 2
    if args.hold > args.pool_size:
        print(
            f"suture demo: --hold {args.hold} is more than the pool's {args.pool_size} "
            "connections (--pool-size)",
            file=sys.stderr,
        )
        return 2

    redis_url = args.redis_url or os.environ.get("REDIS_URL") or None
    if redis_url and importlib.util.find_spec("redis") is None:
        print(
            "suture demo: --redis-url needs the 'redis' package (in the 'demo' extra): "
            "pip install 'suture[demo]'",
            file=sys.stderr,
        )
        return 2

    access = _access(args)
    if isinstance(access, str):
        print(f"suture demo: {access}", file=sys.stderr)
        return 2
    token, managers, allowed = access
    problem = _workers_problem(args.workers, redis_url)
    if problem is not None:
        print(f"suture demo: {problem}", file=sys.stderr)
        return 2

    uvicorn = importlib.import_module("uvicorn")
    from suture.demo.app import DEFAULT_DATABASE_URL, Settings, create_app
    from suture.demo.serve import freeze_after_startup

    url = args.database_url or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    settings = Settings(
        database_url=url,
        chaos=args.chaos,
        error_rate=args.error_rate,
        latency=args.latency,
        hold=args.hold,
        pool_size=args.pool_size,
        reset_timeout=args.reset_timeout,
        tasks=args.tasks,
        messages=args.messages,
        rules=args.rules,
        seed=not args.no_seed,
        traffic=args.traffic,
        redis_url=redis_url,
        token=token,
        managers=managers,
        allowed_hosts=allowed,
    )
    # suture's events (retries, breaker changes, shed requests) and the seeding note;
    # configured first, so a Redis that does not answer at start is one logged warning.
    level = getattr(logging, args.log_level.upper())
    logging.basicConfig(level=level, format="%(levelname)s:     %(name)s: %(message)s")
    # Each applied transition is an INFO event: one line per spam batch is noise at INFO.
    logging.getLogger("suture").setLevel(level if level <= logging.DEBUG else max(level, 30))
    logging.getLogger("suture.demo").setLevel(level)
    # --traffic sends its requests through httpx, which logs each one at INFO.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
    # A database the demo cannot use is one clear line, not a traceback from the
    # engine (a bad URL, a driver not installed, a server that does not answer).
    try:
        app = freeze_after_startup(create_app(settings))
        problem = _preflight(url)
    except Exception as exc:
        problem = _one_line(exc)
    if problem is not None:
        print(
            f"suture demo: cannot use the database {_display_url(url)}: {problem}", file=sys.stderr
        )
        return 2
    shown = f"[{args.host}]" if ":" in args.host else args.host
    base = f"http://{shown}:{args.port}"
    lines = [
        "suture demo",
        f"  manager page   {base}/",
        f"  dashboard      {base}/dashboard",
        f"  API docs       {base}/api/docs",
        f"  health         {base}/health",
        f"  metrics        {base}/metrics",
        f"  database       {_display_url(url)}",
    ]
    if redis_url:
        store = app.state.service.state_store()
        note = (
            "  (not answering: local state until it does)"
            if store["degraded"]
            else f"  (keys {store['prefix']}*)"
        )
        lines.append(f"  shared state   {_display_redis_url(redis_url)}{note}")
    else:
        lines.append("  shared state   none (this process's memory; --redis-url to share)")
    lines.extend(_login_lines(app.state.service, args))
    if args.chaos:
        lines.append(f"  chaos admin    {base}/api/admin/chaos  (local clients only)")
        if not _is_loopback(args.host):
            lines.append(
                "  note: bound to a non-local address; the chaos endpoint still only "
                "answers 127.0.0.1 / ::1"
            )
    if args.error_rate or args.latency or args.hold:
        lines.append(
            f"  faults         error rate {args.error_rate:.0%}, latency {args.latency:g}s, "
            f"{args.hold} connection(s) held"
        )
    if args.traffic:
        lines.append(
            f"  traffic        {args.traffic:g} requests/s to the app's own API (in-process)"
        )
    print("\n".join(lines), flush=True)
    # proxy_headers=False: the client address is the TCP peer's, so an X-Forwarded-For
    # header cannot make a request look local to the chaos admin endpoint.
    from suture.demo.guard import server_options

    if args.workers > 1:
        return _serve_workers(uvicorn, app, settings, args)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        proxy_headers=False,
        **server_options(),  # slow clients: header timeout, connection cap, keep-alive
    )
    return 0


def _network_plan(args: argparse.Namespace) -> tuple[list[Any], str]:
    """The scenarios to play and the PostgreSQL URL; a ``ValueError`` says why not."""
    from suture.chaos.scenarios import SCENARIOS, load_scenario_file, quick_scenarios
    from suture.demo.runner import DEFAULT_DATABASE

    if args.url is not None:
        raise ValueError(
            "--url drives the in-process harness; the network scenarios start their own "
            "service (leave --url out)"
        )
    quick = {s.name: s for s in quick_scenarios()}
    chosen: list[Any] = []
    if args.scenario_file:
        chosen += load_scenario_file(args.scenario_file)
    for name in args.scenario or ():
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; shipped: {', '.join(SCENARIOS)}")
        chosen.append(quick[name] if args.quick and name in quick else SCENARIOS[name])
    if args.all:
        chosen += list(SCENARIOS.values())
    if not chosen:
        chosen = list(quick.values()) if args.quick else list(SCENARIOS.values())
    url = args.database_url or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE
    if not url.startswith(("postgresql", "postgres://")):
        raise ValueError(
            "the network scenarios need PostgreSQL (--database-url "
            "postgresql://user@127.0.0.1:5432/db)"
        )
    return chosen, url


def _network_chaos(args: argparse.Namespace) -> int:
    """``suture chaos --scenario/--all/--report``: network faults, with and without suture."""
    import asyncio

    from suture.chaos.report import summary, write_report
    from suture.chaos.results import Session
    from suture.chaos.scenarios import SCENARIOS
    from suture.demo.runner import ChaosError, play_all

    if args.list_scenarios:
        for s in SCENARIOS.values():
            mark = " (quick)" if s.quick else ""
            print(f"{s.name:<20} {s.seconds:>4g} s  {s.title}{mark}")
        return 0
    try:
        chosen, url = _network_plan(args)
    except ValueError as exc:  # ScenarioError too: a malformed scenario file
        print(f"suture chaos: {exc}", file=sys.stderr)
        return 2
    session = Session(database_url=url, redis_url=args.redis_url or os.environ.get("REDIS_URL"))
    live = sys.stderr.isatty()

    def progress(text: str) -> None:
        if live:
            sys.stderr.write("\r" + text[:99].ljust(99))
            sys.stderr.flush()

    logging.basicConfig(format="%(levelname)s: %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("suture").setLevel(logging.INFO if args.verbose else logging.CRITICAL)
    print(
        f"suture chaos: {len(chosen)} scenario(s) x 2 runs (with suture, and naive), "
        f"about {sum(s.seconds + 8 for s in chosen) * 2:.0f} s...",
        file=sys.stderr,
        flush=True,
    )
    code = 0
    try:
        asyncio.run(play_all(chosen, session, progress=progress))
    except KeyboardInterrupt:
        session.interrupted = True
        code = 130
    except ChaosError as exc:
        print(f"{chr(10) if live else ''}suture chaos: {exc}", file=sys.stderr)
        code = 2
    if live:
        sys.stderr.write("\r" + " " * 99 + "\r")
    if code == 2 and all(not r.rows for r in session.results):
        return 2  # nothing was measured: the one line above says why
    print(summary(session))
    if args.report:
        page = write_report(session, args.report)
        print(f"report: {page} (and report.json, {len(session.results)} of {len(chosen) * 2} CSV)")
    return code or (0 if session.held else 1)


#: The environment variable that hands the settings to ``--workers`` processes.
WORKER_SETTINGS = "SUTURE_DEMO_WORKER_SETTINGS"

_WORKER_FIELDS = (
    "database_url",
    "chaos",
    "error_rate",
    "latency",
    "hold",
    "pool_size",
    "reset_timeout",
    "tasks",
    "messages",
    "rules",
    "seed",
    "traffic",
    "redis_url",
    "token",
    "managers",
    "allowed_hosts",
)


def _workers_problem(workers: int, redis_url: str | None) -> str | None:
    if workers < 1:
        return "--workers must be at least 1"
    if workers > 1 and not redis_url:
        return (
            f"--workers {workers} needs --redis-url (or $REDIS_URL): the workers share "
            "the breaker and the retry budget through Redis"
        )
    return None


def _serve_workers(uvicorn: Any, app: Any, settings: Any, args: argparse.Namespace) -> int:
    """``--workers N``: N uvicorn worker processes, each its own app, sharing state via Redis."""
    from suture.demo.guard import server_options

    print(f"  workers        {args.workers} processes sharing state through Redis", flush=True)
    service = app.state.service
    _prepare_database(service)  # once, before the workers race for it
    service.close_state_store()  # this process only checked the settings
    # Each worker process builds its own app from the same settings.
    os.environ[WORKER_SETTINGS] = json.dumps(_worker_settings(settings, service.console_token))
    uvicorn.run(
        "suture.cli:worker_app",
        factory=True,
        workers=args.workers,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        proxy_headers=False,
        **server_options(),  # the same slow-client limits as one process
    )
    return 0


def _prepare_database(service: Any) -> None:
    """Create the schema and seed an empty database, in this process, once."""
    import asyncio

    from suture.demo.db import utcnow

    s = service.settings

    async def prepare() -> None:
        await service.db.create_schema(s.schema)
        if s.seed:
            await service.db.seed_if_empty(
                tasks=s.tasks,
                messages=s.messages,
                rules=s.rules,
                seed=s.seed_random,
                now=utcnow(service.clock),
            )
        await service.engine.dispose()

    asyncio.run(prepare())


def _worker_settings(settings: Any, token: str | None) -> dict[str, Any]:
    options = {name: getattr(settings, name) for name in _WORKER_FIELDS}
    options["token"] = token  # every worker takes the parent's API token
    return options


def worker_app() -> Any:
    """The app of one ``suture demo --workers N`` process (uvicorn's factory)."""
    from suture.demo.app import Settings, create_app
    from suture.demo.serve import freeze_after_startup

    options = json.loads(os.environ[WORKER_SETTINGS])
    options["seed"] = False  # the parent seeded the database once
    options["managers"] = tuple(tuple(pair) for pair in options["managers"])
    options["allowed_hosts"] = tuple(options["allowed_hosts"])
    return freeze_after_startup(create_app(Settings(**options)))


def _chaos(args: argparse.Namespace) -> int:
    missing = missing_demo_modules()
    if missing:
        print(
            f"suture chaos needs the 'demo' extra; missing: {', '.join(missing)}.\n"
            "Install it with:  pip install 'suture[demo]'",
            file=sys.stderr,
        )
        return 2
    if args.scenario or args.scenario_file or args.all or args.report or args.list_scenarios:
        return _network_chaos(args)
    if args.concurrency < 1:
        print("suture chaos: --concurrency must be at least 1", file=sys.stderr)
        return 2
    import asyncio
    import json

    from suture.demo.harness import (
        HarnessError,
        Scenario,
        check_loopback_url,
        format_report,
        run_harness,
    )

    if args.url is not None:
        try:
            check_loopback_url(args.url)
        except ValueError as exc:
            print(f"suture chaos: refused: {exc}", file=sys.stderr)
            return 2
    phase_seconds = args.phase_seconds or (1.0 if args.quick else 5.0)
    reset_timeout = args.reset_timeout or (10.0 if args.url else 2.0)
    scenario = Scenario(
        phase_seconds=phase_seconds,
        concurrency=args.concurrency,
        rate=args.rate,
        reset_timeout=reset_timeout,
    )
    logging.basicConfig(format="%(levelname)s: %(name)s: %(message)s", stream=sys.stderr)
    # The report counts what the log would say (retries, give-ups): quiet unless asked.
    logging.getLogger("suture").setLevel(logging.INFO if args.verbose else logging.CRITICAL)
    if not args.json:
        print(
            f"suture chaos: 6 phases of {phase_seconds:g} s against "
            f"{args.url or 'an in-process demo'}...",
            file=sys.stderr,
            flush=True,
        )
    try:
        report = asyncio.run(
            run_harness(url=args.url, database_url=args.database_url, scenario=scenario)
        )
    except HarnessError as exc:
        print(f"suture chaos: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(format_report(report))
    return 0 if report.healed else 1


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"  # pragma: no cover - the loop returns


def _proxy(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import math
    import signal

    from suture.chaos.proxy import FaultProxy, ProxyError, ProxyFaults, parse_address

    try:
        listen = parse_address(args.listen)
        target = parse_address(args.target)
        control = parse_address(args.control)
        faults = ProxyFaults(
            mode=args.mode,
            latency=args.latency,
            jitter=args.jitter,
            bandwidth=args.bandwidth if args.bandwidth is not None else math.inf,
            drop=args.drop,
        )
        proxy = FaultProxy(
            target,
            listen=listen,
            control=control,
            allow_remote=args.allow_remote,
            faults=faults,
        )
    except (ValueError, ProxyError) as exc:
        print(f"suture proxy: refused: {exc}", file=sys.stderr)
        return 2
    # Every change of faults is one WARNING line on the "suture" logger.
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.WARNING)

    async def serve() -> None:
        if not args.no_check:
            await proxy.aprobe()
        async with proxy:
            shown = proxy.faults.as_dict()
            print(
                "suture proxy\n"
                f"  listen    {_host_port(proxy.address)}\n"
                f"  target    {_host_port(proxy.target)}\n"
                f"  control   {proxy.control_url}  (GET /, POST /faults "
                '{"mode": "blackhole"}, POST /clear)\n'
                f"  faults    {', '.join(f'{k}={v}' for k, v in shown.items())}\n"
                "Ctrl-C stops it.",
                flush=True,
            )
            stop = asyncio.Event()
            if hasattr(signal, "SIGTERM"):  # a service manager's stop: as clean as Ctrl-C
                with contextlib.suppress(NotImplementedError):  # not on Windows
                    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            await stop.wait()

    try:
        asyncio.run(serve())
    except ProxyError as exc:
        print(f"suture proxy: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    stats = proxy.stats()
    print(
        f"suture proxy: stopped; {stats.connections} connection(s), {stats.reached} reached "
        f"the target, {_size(stats.bytes_up)} up, {_size(stats.bytes_down)} down",
        flush=True,
    )
    return 0


def _host_port(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    if args.command == "chaos":
        return _chaos(args)
    if args.command == "proxy":
        return _proxy(args)
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
