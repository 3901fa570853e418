# Over ~400 lines on purpose: one run, start to end, reads in order.
"""Play a :class:`~suture.chaos.scenarios.Scenario` against the real reference service.

For each scenario, two runs with the same load, the second in the service's
naive mode (the founding spec's retry and breaker, :mod:`suture.demo.naive`).
One run:

1. a :class:`~suture.chaos.proxy.FaultProxy` in this process, in front of
   PostgreSQL;
2. the reference service as a real uvicorn process (``python -m
   suture.demo.serve``) on a free loopback port, its database URL pointing at
   the proxy, its tables in a schema of its own;
3. the load as another process (``python -m suture.demo.load``: closed-loop
   httpx "browsers"), which reports every second;
4. the steps, from a whole second of the wall clock on which the load starts
   too (so each row of the report is one step's): at each step's start the
   proxy's faults are switched (and the step's slow clients connect, each
   timed until the server closes it); at the start of every second this
   process reads the service's ``/health`` (breaker
   state and when it opened, pool use, attempts, retries, shed) and the
   proxy's counts: what a counter gained from one second's start to the next
   is that second's (an attempt is counted by the service when it starts);
5. the end: the proxy back to pass, the processes stopped, every acknowledged
   write looked up in the database directly (lost or duplicated), the schema
   dropped, one row per second built and the criteria judged.

A scenario with ``service_workers`` N > 1 starts N service processes, each on
its own port with its own proxy to PostgreSQL (one schema for all: the first
creates and seeds it, then the others start), sharing their breaker and retry
budget through Redis behind one more proxy (a key prefix of the run's own);
the load spreads its requests over them round robin, every worker is sampled
each second (the ``breakers`` column: each one's state) and the criteria
naming a worker are judged on that worker's requests only.

Ctrl-C (a cancellation) still restores the proxies, stops every process, drops
the schema and keeps what was measured: the run is marked ``partial``.
httpx and psycopg are imported when a run starts (the ``demo`` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import secrets
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from suture.chaos.proxy import FaultProxy, ProxyError, parse_address
from suture.chaos.results import COLUMNS, MODES, RunResult, Session
from suture.chaos.scenarios import (
    SLOW_CLIENT_INTERVAL,
    Judged,
    RunView,
    Scenario,
    Step,
    Try,
    judge,
)

__all__ = ["MODES", "ChaosError", "RunResult", "Session", "play", "play_all"]

DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/test"
#: The Redis the workers of a multi-worker scenario share (behind a proxy of the run's).
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
_START_TIMEOUT = 60.0
#: Seconds the load process is given to start (Python and httpx imported) before its
#: first click, which is on the next whole second after that.
_LOAD_BOOT = 0.8


class ChaosError(RuntimeError):
    """The run cannot go on (a database that does not answer, a service that does not start)."""


Progress = Callable[[str], None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pythonpath() -> str:
    here = str(Path(__file__).resolve().parents[2])  # the directory holding ``suture``
    old = os.environ.get("PYTHONPATH")
    return here if not old else f"{here}{os.pathsep}{old}"


def database_target(url: str, *, default_port: int = 5432) -> tuple[tuple[str, int], str]:
    """``(host, port)`` of a PostgreSQL (or Redis) URL and the URL's ``user@`` part."""
    rest = url.split("://", 1)[1] if "://" in url else url
    auth, _, tail = rest.rpartition("@")
    hostport = tail.partition("/")[0]
    host, port = parse_address(hostport if ":" in hostport else f"{hostport}:{default_port}")
    return (host, port), f"{auth}@" if auth else ""


def _proxied_redis_url(url: str, proxy_port: int) -> str:
    """``url`` (``redis://[auth@]host[:port][/db]``) pointing at the proxy instead."""
    _, auth = database_target(url, default_port=6379)
    rest = url.split("://", 1)[1] if "://" in url else url
    tail = rest.rpartition("@")[2]
    db = tail.partition("/")[2] or "0"
    return f"redis://{auth}127.0.0.1:{proxy_port}/{db}"


def _proxied_url(url: str, proxy_port: int) -> str:
    (_, _), auth = database_target(url)
    dbname = url.rsplit("/", 1)[1]
    return f"postgresql+psycopg://{auth}127.0.0.1:{proxy_port}/{dbname}"


def _psycopg_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


class _Processes:
    """The service and the load: started in their own session, stopped for sure."""

    def __init__(self) -> None:
        self.items: list[asyncio.subprocess.Process] = []
        self.logs: list[Path] = []

    async def start(
        self, *argv: str, stdout: int | None = None, env: Mapping[str, str] | None = None
    ) -> asyncio.subprocess.Process:
        descriptor, name = tempfile.mkstemp(prefix="suture-chaos-", suffix=".log")
        self.logs.append(Path(name))
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdout=stdout if stdout is not None else asyncio.subprocess.DEVNULL,
                stderr=descriptor,
                stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": _pythonpath(), **(env or {})},
                start_new_session=True,  # a Ctrl-C in the terminal is ours to pass on
            )
        finally:
            os.close(descriptor)
        self.items.append(process)
        return process

    def last_line(self, index: int) -> str:
        try:
            lines = self.logs[index].read_text("utf-8", "replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    async def stop(self) -> None:
        for process in self.items:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for process in self.items:
            try:
                await asyncio.wait_for(process.wait(), 3)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        for log in self.logs:
            with contextlib.suppress(OSError):
                log.unlink()


async def _get_json(client: Any, path: str) -> dict[str, Any] | None:
    try:
        answer = await client.get(path, timeout=2.0)
        body = answer.json()
    except Exception:
        return None
    return body if isinstance(body, dict) else None


async def _sample(client: Any, proxy: FaultProxy) -> dict[str, Any]:
    # ``/health`` only: it carries the breaker's stats and the totals, and costs the
    # service a fraction of ``/api/dashboard`` (17 KB of series), which requests that
    # arrive while it is built would wait for.
    health = await _get_json(client, "/health")
    stats = proxy.stats()
    out: dict[str, Any] = {
        "proxy_connections": stats.connections,
        "proxy_chunks_up": stats.chunks_up,
        "proxy_bytes_up": stats.bytes_up,
    }
    if health is None:
        return out
    breaker = health.get("breakers", {}).get("database", {})
    out["breaker"] = breaker.get("state")
    opened_at = breaker.get("opened_at")
    if isinstance(opened_at, int | float) and breaker.get("state") != "closed":
        out["opened_at"] = float(opened_at)
    if "total_opens" in breaker:
        out["breaker_opens"] = int(breaker["total_opens"])
    usage = (health.get("pool") or {}).get("usage") or {}
    out["pool_in_use"] = usage.get("fraction")
    totals = health.get("totals", {})
    for key in ("db_calls", "retries", "shed"):
        out[key] = int(totals.get(key, 0))
    return out


#: What a slow client sends, one byte at a time (then ``a`` after ``a``: a header that
#: never ends).
_SLOW_HEAD = b"GET /api/manager/assistance HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


async def _closed_before(reader: asyncio.StreamReader, due: float) -> bool:
    """Read (an answer, if any) until ``due``; True once the server has closed."""
    while (left := due - time.monotonic()) > 0:
        try:
            data = await asyncio.wait_for(reader.read(4096), left)
        except TimeoutError:
            return False
        except OSError:
            return True
        if not data:
            return True
    return False


async def _slow_client(port: int, until: float) -> float:
    """One slow client: seconds from its connection until the server closed it, or ``until``.

    It sends :data:`_SLOW_HEAD` one byte every ``SLOW_CLIENT_INTERVAL`` seconds and
    reads whatever the server answers; ``until`` is a ``time.monotonic()`` instant
    (the step's end), where it closes the connection itself. A refused connection is 0 s.
    """
    opened = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return 0.0
    index = 0
    try:
        while (now := time.monotonic()) < until:
            try:
                writer.write(_SLOW_HEAD[index : index + 1] or b"a")
                await writer.drain()
            except OSError:
                break
            index += 1
            if await _closed_before(reader, min(now + SLOW_CLIENT_INTERVAL, until)):
                break
        return min(time.monotonic(), until) - opened
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _slow_clients(port: int, count: int, *, until: float) -> list[asyncio.Task[float]]:
    """``count`` :func:`_slow_client` tasks, running until ``until`` (monotonic) at most."""
    loop = asyncio.get_running_loop()
    return [loop.create_task(_slow_client(port, until)) for _ in range(count)]


def _combine(each: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The workers' samples as one: counts summed, the pool's use the highest, the rest
    (the breaker) worker 0's; a count some worker did not answer is left out."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for sample in each for k in sample):
        values = [sample.get(key) for sample in each]
        numeric = [isinstance(v, int | float) and not isinstance(v, bool) for v in values]
        if key == "pool_in_use":
            present = [float(v) for v in values if isinstance(v, int | float)]
            out[key] = max(present) if present else None
        elif key == "opened_at":  # a time, not a count: the first worker's opening
            out[key] = min(float(v) for v in values if isinstance(v, int | float))
        elif all(numeric):
            out[key] = sum(values)
        elif not any(numeric):
            out[key] = each[0].get(key)
    return out


async def _sample_all(stage: Stage, clients: Sequence[Any]) -> dict[str, Any]:
    """One worker: :func:`_sample`; several: combined, with each one's under ``workers``."""
    if len(clients) == 1:
        return await _sample(clients[0], stage.proxies[0])
    pairs = zip(clients, stage.proxies, strict=True)
    each = await asyncio.gather(*(_sample(client, proxy) for client, proxy in pairs))
    out = _combine(each)
    out["workers"] = list(each)
    out["breakers"] = ";".join(str(sample.get("breaker") or "") for sample in each)
    if stage.redis_proxy is not None:
        out["redis_connections"] = stage.redis_proxy.stats().connections
    return out


async def _tick(samples: dict[int, dict[str, Any]], stage: Stage, clients: Sequence[Any]) -> None:
    """The counters at the start of this second (once a second, never overwritten)."""
    second = int(time.time())
    if second not in samples:
        samples[second] = await _sample_all(stage, clients)


def _to_next_second() -> float:
    return 1.0 - time.time() % 1.0 + 0.005


async def _inject(client: Any, body: Mapping[str, Any]) -> None:
    """Set the service's in-process faults through its (loopback-only) chaos admin endpoint."""
    try:
        answer = await client.post("/api/admin/chaos", json=dict(body), timeout=5.0)
    except Exception as exc:
        raise ChaosError(f"setting the service's faults {dict(body)} failed: {exc}") from None
    if answer.status_code != 200:
        raise ChaosError(
            f"setting the service's faults {dict(body)} failed: HTTP {answer.status_code}"
        )


def _reconcile(dsn: str, schema: str, acked: Mapping[int, str]) -> tuple[int, int]:
    """Lost and duplicated acknowledged writes, read from the database directly."""
    import psycopg

    if not acked:
        return 0, 0
    ids = list(acked)
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        found: dict[int, str] = dict(
            conn.execute(
                f'SELECT id, manager_response FROM "{schema}".demo_task WHERE id = ANY(%s)',
                (ids,),
            ).fetchall()
        )
        repeated = conn.execute(
            f'SELECT record_key, count(*) FROM "{schema}".demo_transition_audit '
            "WHERE context = 'manager-response' AND record_key = ANY(%s) "
            "GROUP BY record_key HAVING count(*) > 1",
            ([str(i) for i in ids],),
        ).fetchall()
    lost = len([task_id for task_id, text in acked.items() if found.get(task_id) != text])
    return lost, len(repeated)


def _drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def _fault(step: Step) -> str:
    """The ``fault`` column of a step's rows."""
    faults = step.proxy_faults().as_dict()
    fault = str(step.faults.get("mode", "pass")) if step.faults else "none"
    if fault == "pass" and faults["latency"]:
        fault = f"+{faults['latency'] * 1000:g} ms"
    if step.injected.get("error_rate"):
        fault = f"errors {step.injected['error_rate']:.0%}"
    elif step.injected.get("hold"):
        fault = f"{step.injected['hold']:g} held"
    elif step.slow_clients:
        fault = f"{step.slow_clients} slow clients"
    if fault != "none" and step.dependency == "redis":
        fault = f"redis {fault}"
    elif fault != "none" and step.worker is not None:
        fault = f"worker {step.worker} {fault}"
    return fault


def build_rows(
    scenario: Scenario,
    t0: float,
    lines: Mapping[int, Mapping[str, Any]],
    samples: Mapping[int, Mapping[str, Any]],
    end: float,
) -> list[dict[str, Any]]:
    """One row per second (the CSV's :data:`~suture.chaos.report.COLUMNS`).

    ``samples[s]`` holds the counters read at the start of second ``s``: a
    second's count is what they gained until the next sample (when a sample is
    missing, the earlier one's row takes the whole gap and this one is empty).
    """
    bounds = scenario.step_bounds()
    first = int(t0)
    rows: list[dict[str, Any]] = []
    taken = sorted(samples)
    for second in range(first, int(end) + 1):
        middle = second + 0.5 - t0
        step_name, fault = bounds[-1][0].name, "none"
        for step, start, stop in bounds:
            if start <= middle < stop:
                step_name, fault = step.name, _fault(step)
                break
        else:
            if middle < 0:
                continue
        line = lines.get(second, {})
        outcomes = line.get("outcomes", {})
        sample = samples.get(second, {})
        later = next((samples[k] for k in taken if k > second), {})

        def delta(
            key: str, sample: Mapping[str, Any] = sample, later: Mapping[str, Any] = later
        ) -> int | None:
            now, after = sample.get(key), later.get(key)
            if now is None or after is None:
                return None
            return max(0, int(after) - int(now))

        latencies = line.get("latencies", [])
        tries = line.get("tries", {})
        try_ms = line.get("try_ms", [])
        rows.append(
            {
                "t": second - first,
                "step": step_name,
                "fault": fault,
                "sent": int(line.get("sent", 0)),
                "req_ok": int(tries.get("ok", 0)),
                "req_503": int(tries.get("503", 0)),
                "req_500": int(tries.get("500", 0)),
                "req_4xx": int(tries.get("4xx", 0)),
                "req_timeout": int(tries.get("timeout", 0)),
                "req_error": int(tries.get("error", 0)),
                "req_p50_ms": _round(_percentile(try_ms, 50)),
                "req_p99_ms": _round(_percentile(try_ms, 99)),
                "clicks": int(line.get("clicks", 0)),
                "ok": int(outcomes.get("ok", 0)),
                "status_503": int(outcomes.get("503", 0)),
                "status_500": int(outcomes.get("500", 0)),
                "status_4xx": int(outcomes.get("4xx", 0)),
                "timeout": int(outcomes.get("timeout", 0)),
                "error": int(outcomes.get("error", 0)),
                "p50_ms": _round(_percentile(latencies, 50)),
                "p99_ms": _round(_percentile(latencies, 99)),
                "db_attempts": delta("db_calls"),
                "proxy_connections": delta("proxy_connections"),
                "proxy_chunks_up": delta("proxy_chunks_up"),
                "breaker": sample.get("breaker"),
                "pool_in_use": sample.get("pool_in_use"),
                "retries": delta("retries"),
                "shed": delta("shed"),
                "breaker_opens": delta("breaker_opens"),
                "breakers": sample.get("breakers"),
                "worker_sent": _each(line, lambda w: int(w.get("sent", 0))),
                "worker_req_ok": _each(line, lambda w: int(w.get("tries", {}).get("ok", 0))),
                "worker_req_p99_ms": _each(
                    line, lambda w: _round(_percentile(w.get("try_ms", []), 99))
                ),
                "redis_connections": delta("redis_connections"),
            }
        )
    while rows and not rows[-1]["sent"] and rows[-1]["breaker"] is None:
        rows.pop()  # the seconds after the load stopped
    assert all(set(r) == set(COLUMNS) for r in rows)
    return rows


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _each(line: Mapping[str, Any], value: Callable[[Mapping[str, Any]], Any]) -> str | None:
    """``value`` of each worker's part of a load line, ";"-joined (None: one worker)."""
    parts = line.get("workers")
    if not parts:
        return None
    return ";".join("" if (v := value(part)) is None else f"{v:g}" for part in parts)


def _worker_lines(lines: Mapping[int, Mapping[str, Any]], index: int) -> dict[int, Any]:
    return {
        second: line["workers"][index]
        for second, line in lines.items()
        if len(line.get("workers", ())) > index
    }


def worker_rows(
    scenario: Scenario,
    t0: float,
    lines: Mapping[int, Mapping[str, Any]],
    samples: Mapping[int, Mapping[str, Any]],
    end: float,
) -> list[list[dict[str, Any]]]:
    """Each worker's own rows (its requests, breaker, attempts); [] with one worker."""
    if scenario.service_workers == 1:
        return []
    return [
        build_rows(
            scenario,
            t0,
            _worker_lines(lines, index),
            {
                second: sample["workers"][index]
                for second, sample in samples.items()
                if len(sample.get("workers", ())) > index
            },
            end,
        )
        for index in range(scenario.service_workers)
    ]


class Stage:
    """One run's own infrastructure: its proxies, its service process(es), its schema.

    Started ahead of the run (:meth:`start`), so that the services of a session
    boot together while nothing is measured; :meth:`stop` undoes everything.
    With several service workers: one database proxy per worker, and one Redis
    proxy they share.
    """

    def __init__(
        self, scenario: Scenario, mode: str, database_url: str, redis_url: str = DEFAULT_REDIS
    ) -> None:
        self.scenario = scenario
        self.mode = mode
        self.database_url = database_url
        self.redis_url = redis_url
        self.schema = f"chaos_{uuid.uuid4().hex[:10]}"
        self.direct = _psycopg_dsn(database_url)
        target, _ = database_target(database_url)
        self.proxies = [FaultProxy(target) for _ in range(scenario.service_workers)]
        self.redis_proxy: FaultProxy | None = None
        if scenario.uses_redis:
            redis_target, _ = database_target(redis_url, default_port=6379)
            self.redis_proxy = FaultProxy(redis_target)
        self.processes = _Processes()
        self.ports: list[int] = []
        self.services: list[asyncio.subprocess.Process] = []
        self.settings = {**scenario.service, "naive": mode == "naive", "schema": self.schema}
        if scenario.uses_redis:  # a namespace of the run's own in the shared Redis
            self.settings["redis_prefix"] = f"suture-chaos:{self.schema}:"
        # Only managers get in (suture.demo.auth): one fresh token per run, for this
        # process's own reads and for the load's "browsers" (in their environment).
        self.token = secrets.token_urlsafe(24)
        from suture.demo.db import db_slots
        from suture.demo.serve import settings_from_json

        self.slots = db_slots(settings_from_json(json.dumps(self.settings)))

    @property
    def proxy(self) -> FaultProxy:
        """Worker 0's database proxy (the only one with one worker)."""
        return self.proxies[0]

    @property
    def all_proxies(self) -> list[FaultProxy]:
        return [*self.proxies, *([self.redis_proxy] if self.redis_proxy is not None else [])]

    @property
    def port(self) -> int:
        """Worker 0's port (the only one with one worker)."""
        return self.ports[0]

    @property
    def base_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    @property
    def base_url(self) -> str:
        return self.base_urls[0]

    async def start(self) -> None:
        for proxy in self.proxies:
            await proxy.aprobe()
            await proxy.start()
        if self.redis_proxy is not None:
            try:
                await self.redis_proxy.aprobe()
            except ProxyError as exc:
                raise ChaosError(f"Redis ({self.redis_url}): {exc}") from None
            await self.redis_proxy.start()
        self.ports = [_free_port() for _ in self.proxies]
        await self._start_worker(0)
        if len(self.proxies) > 1:  # the others once the first has made and seeded the schema
            async with self.clients() as clients:
                await self._wait(clients[0], 0)
            for index in range(1, len(self.proxies)):
                await self._start_worker(index)

    @contextlib.asynccontextmanager
    async def clients(self) -> AsyncIterator[list[Any]]:
        """One httpx client per worker, with the run's token."""
        import httpx

        auth = {"Authorization": f"Bearer {self.token}"}
        async with contextlib.AsyncExitStack() as stack:
            yield [
                await stack.enter_async_context(httpx.AsyncClient(base_url=url, headers=auth))
                for url in self.base_urls
            ]

    async def booted(self) -> None:
        """Wait until every worker answers (so that no boot overlaps a measured run)."""
        async with self.clients() as clients:
            await self.ready(*clients)

    async def _start_worker(self, index: int) -> None:
        settings = {
            **self.settings,
            "database_url": _proxied_url(self.database_url, self.proxies[index].port),
            # The admin endpoint only when a step injects faults in the service.
            "chaos": self.scenario.injects,
            "traffic": 0.0,
            "token": self.token,
        }
        if self.redis_proxy is not None:
            settings["redis_url"] = _proxied_redis_url(self.redis_url, self.redis_proxy.port)
        self.services.append(
            await self.processes.start(
                sys.executable,
                "-m",
                "suture.demo.serve",
                "--port",
                str(self.ports[index]),
                "--settings",
                json.dumps(settings),
            )
        )

    async def _wait(self, client: Any, index: int) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while await _get_json(client, "/health") is None:
            service = self.services[index] if index < len(self.services) else None
            if service is None or service.returncode is not None or time.monotonic() > deadline:
                which = f" (worker {index})" if len(self.proxies) > 1 else ""
                raise ChaosError(
                    f"the reference service{which} did not start: {self.processes.last_line(index)}"
                )
            await asyncio.sleep(0.2)

    async def ready(self, *clients: Any) -> None:
        """Every worker answers ``/health`` (``clients``: one per worker, in order)."""
        for index, client in enumerate(clients):
            await self._wait(client, index)

    async def warm(self, clients: Sequence[Any]) -> None:
        """Off the clock: as many reads at once to each worker as the load has browsers
        (its pool filled, its caches warm)."""
        for client in clients:
            await asyncio.gather(
                *(
                    _get_json(client, "/api/manager/assistance")
                    for _ in range(self.scenario.workers)
                )
            )

    async def apply(self, step: Step, clients: Sequence[Any]) -> None:
        """The network (and the service's own faults) as ``step`` says; the rest healthy."""
        faults = step.proxy_faults()
        if step.dependency == "redis":
            assert self.redis_proxy is not None  # the scenario checked it
            broken = [self.redis_proxy]
        else:
            broken = self.proxies if step.worker is None else [self.proxies[step.worker]]
        for proxy in self.all_proxies:
            await proxy.aset(faults if proxy in broken else type(faults)())
        if self.scenario.injects:
            for index, client in enumerate(clients):
                await _inject(
                    client,
                    step.admin_body()
                    if step.worker in (None, index)
                    else {"target": "database", "clear": True},
                )

    async def heal(self, clients: Sequence[Any]) -> None:
        """Every proxy back to pass, the service's own faults cleared."""
        for proxy in self.all_proxies:
            await proxy.aclear()
        if self.scenario.injects:
            for client in clients:
                await _inject(client, {"target": "database", "clear": True})

    def proxy_counts(self) -> dict[str, int]:
        """The database proxies' counts, summed over the workers."""
        total: dict[str, int] = {}
        for proxy in self.proxies:
            for key, value in proxy.stats().as_dict().items():
                total[key] = total.get(key, 0) + value
        return total

    async def stop(self) -> None:
        """Proxies back to pass and closed, processes stopped, schema dropped (idempotent)."""
        for proxy in self.all_proxies:
            proxy.clear()
            await proxy.aclose()
        await self.processes.stop()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(_drop_schema, self.direct, self.schema)


async def play(  # noqa: C901, PLR0915 - one run in order; its cleanup in one finally
    stage: Stage, *, result: RunResult, progress: Progress
) -> RunResult:
    """One run on a started ``stage``; fills ``result`` as it goes (also when cancelled)."""
    scenario, mode = stage.scenario, stage.mode
    lines: dict[int, dict[str, Any]] = {}
    samples: dict[int, dict[str, Any]] = {}
    acked: dict[int, str] = {}
    slow_open: dict[str, list[float]] = {}
    slow_clients: list[asyncio.Task[float]] = []
    t0: float | None = None
    started = time.monotonic()
    result.service = dict(stage.settings)
    try:
        progress(f"{scenario.name} [{mode}] waiting for the service...")
        async with stage.clients() as clients:
            client = clients[0]
            await stage.ready(*clients)
            await stage.warm(clients)
            queue = await _get_json(client, "/api/manager/assistance?limit=200")
            ids = [int(t["id"]) for t in (queue or {}).get("requests", [])]
            start_at = math.ceil(time.time() + _LOAD_BOOT)
            load = await stage.processes.start(
                sys.executable,
                "-m",
                "suture.demo.load",
                *(arg for url in stage.base_urls for arg in ("--url", url)),
                "--seconds",
                str(scenario.seconds),
                "--workers",
                str(scenario.workers),
                "--rate",
                str(scenario.rate),
                "--browser",
                mode,
                "--write-share",
                str(scenario.write_share),
                "--write-ids",
                ",".join(map(str, ids)),
                "--tag",
                stage.schema,
                "--grace",
                str(scenario.grace),
                "--start-at",
                str(start_at),
                "--probe",
                stdout=asyncio.subprocess.PIPE,
                env={"SUTURE_DEMO_TOKEN": stage.token},
            )
            assert load.stdout is not None
            stdout = load.stdout

            async def read_load() -> None:
                while raw := await stdout.readline():
                    item = json.loads(raw)
                    if "second" in item:
                        lines[int(item["second"])] = item
                        for task_id, text in item.get("acked", []):
                            acked[int(task_id)] = str(text)

            reader = asyncio.get_running_loop().create_task(read_load())
            await asyncio.sleep(max(0.0, start_at - time.time()))
            t0 = float(start_at)
            for step, _, stop in scenario.step_bounds():
                await stage.apply(step, clients)
                slow_clients = _slow_clients(  # on worker 0 (the only one with one worker)
                    stage.port, step.slow_clients, until=time.monotonic() + t0 + stop - time.time()
                )
                while (now := time.time()) < t0 + stop:
                    await _tick(samples, stage, clients)
                    _show(progress, scenario, mode, step.name, now - t0, lines)
                    await asyncio.sleep(max(0.0, min(_to_next_second(), t0 + stop - time.time())))
                if slow_clients:
                    slow_open[step.name] = list(await asyncio.gather(*slow_clients))
                    slow_clients = []
            await stage.heal(clients)
            while load.returncode is None:
                await _tick(samples, stage, clients)
                _show(progress, scenario, mode, "ending", time.time() - t0, lines)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(load.wait(), _to_next_second())
            await _tick(samples, stage, clients)  # closes the last second
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader, 5)
    except asyncio.CancelledError:
        result.partial = True
        raise
    except (ChaosError, ProxyError) as exc:
        result.error = str(exc)
    finally:
        for task in slow_clients:
            task.cancel()
        for proxy in stage.all_proxies:
            proxy.clear()
        result.proxy = stage.proxy_counts()
        if stage.redis_proxy is not None:
            result.redis_proxy = stage.redis_proxy.stats().as_dict()
        await stage.processes.stop()
        result.seconds = time.monotonic() - started
        if t0 is not None:
            end = time.time()
            result.rows = build_rows(scenario, t0, lines, samples, end)
            result.worker_rows = worker_rows(scenario, t0, lines, samples, end)
            result.acked_writes = len(acked)
            try:
                lost, dup = await asyncio.to_thread(_reconcile, stage.direct, stage.schema, acked)
                result.lost_writes, result.duplicated_writes = lost, dup
            except Exception as exc:  # the run's numbers are still worth reporting
                result.error = result.error or f"could not reconcile the writes: {exc}"
            result.judged = _judge(
                scenario, result, t0, lines, samples, slots=stage.slots, slow_open=slow_open
            )
        await stage.stop()
    return result


def _judge(
    scenario: Scenario,
    result: RunResult,
    t0: float,
    lines: Mapping[int, Mapping[str, Any]],
    samples: Mapping[int, Mapping[str, Any]],
    *,
    slots: int | None = None,
    slow_open: Mapping[str, Sequence[float]] | None = None,
) -> list[Judged]:
    view = _view(
        scenario,
        result,
        result.rows,
        t0,
        lines,
        slots=slots,
        slow_open=slow_open,
        openings=_openings(samples),
    )
    if result.worker_rows:
        workers = [
            _view(
                scenario,
                result,
                rows,
                t0,
                _worker_lines(lines, index),
                slots=slots,
                openings=_openings(samples, index),
            )
            for index, rows in enumerate(result.worker_rows)
        ]
        view = dataclasses.replace(view, workers=workers)
    return [judge(c, view) for c in scenario.criteria]


def _openings(samples: Mapping[int, Mapping[str, Any]], worker: int | None = None) -> set[float]:
    """When the breaker was seen to have opened (the service's own times), of ``worker``."""
    out: set[float] = set()
    for whole in samples.values():
        sample = whole
        if worker is not None:
            each = whole.get("workers") or ()
            sample = each[worker] if worker < len(each) else {}
        if "opened_at" in sample:
            out.add(float(sample["opened_at"]))
    return out


def _view(
    scenario: Scenario,
    result: RunResult,
    rows: Sequence[Mapping[str, Any]],
    t0: float,
    lines: Mapping[int, Mapping[str, Any]],
    *,
    slots: int | None = None,
    slow_open: Mapping[str, Sequence[float]] | None = None,
    openings: Collection[float] = (),
) -> RunView:
    """What the metrics read, from ``rows`` and the load's ``lines`` (a run's or a worker's)."""
    first = int(t0)
    bounds = [(s.name, start, stop) for s, start, stop in scenario.step_bounds()]
    fail: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in bounds}
    tries: dict[str, list[Try]] = {name: [] for name, _, _ in bounds}
    for line in lines.values():
        for sent, ms, status, retry_after in line.get("try_at", []):
            at = float(sent) - t0
            name = next((n for n, start, stop in bounds if start <= at < stop), None)
            if name is not None:
                code = None if status is None else int(status)
                tries[name].append(Try(at, float(ms), code, bool(retry_after)))
    first_ok_after: dict[str, float | None] = {}
    opened: dict[str, float | None] = {}
    oks = [(float(a), float(b)) for line in lines.values() for a, b in line.get("ok_at", [])]
    for name, start, stop in bounds:
        # When the breaker first opened in the step (the service's own time of it).
        during = [at for at in openings if t0 + start <= at < t0 + stop]
        opened[name] = min(during) - first if during else None
        for line in lines.values():
            for when, ms in line.get("fail_ms", []):
                sent_at = when - ms / 1000  # fast-fail is about the requests sent while open
                if t0 + start <= sent_at < t0 + stop:
                    fail[name].append((sent_at - first, ms))
        # Recovery: the first request sent after the step that succeeds (one held by a
        # partition and answered once it heals says nothing about new requests).
        later = [answered for sent, answered in oks if sent >= t0 + stop]
        first_ok_after[name] = min(later) - (t0 + stop) if later else None
    return RunView(
        rows=rows,
        step_bounds=bounds,
        first_ok_after=first_ok_after,
        lost_writes=result.lost_writes,
        duplicated_writes=result.duplicated_writes,
        fail_latencies=fail,
        tries=tries,
        slots=slots,
        slow_clients=dict(slow_open or {}),
        opened=opened,
    )


def _show(
    progress: Progress,
    scenario: Scenario,
    mode: str,
    step: str,
    elapsed: float,
    lines: Mapping[int, Mapping[str, Any]],
) -> None:
    recent = [lines[s] for s in sorted(lines)[-3:]]
    clicks = sum(int(line.get("clicks", 0)) for line in lines.values())
    shown = sum(int(line.get("clicks", 0)) for line in recent)
    rates = ""
    if shown:
        outcomes = {
            k: sum(int(line["outcomes"].get(k, 0)) for line in recent) for k in ("ok", "503")
        }
        other = shown - outcomes["ok"] - outcomes["503"]
        rates = (
            f"  ok {100 * outcomes['ok'] / shown:3.0f}%  503 {100 * outcomes['503'] / shown:3.0f}%"
            f"  other {100 * other / shown:3.0f}%"
        )
    progress(
        f"{scenario.name} [{mode}] {step:<8} {elapsed:5.1f}/{scenario.seconds:g} s  "
        f"clicks {clicks:>5}{rates}"
    )


async def play_all(
    scenarios: Sequence[Scenario],
    session: Session,
    *,
    progress: Progress,
    modes: Sequence[str] = MODES,
) -> Session:
    """Every scenario in every mode, in order; results land in ``session`` as they run.

    Every run's service starts at once, before the first run (they boot while
    nothing is measured, and wait idle for their turn); each run's stage is
    stopped right after it, and every stage also when the session is cancelled.
    """
    redis_url = session.redis_url or DEFAULT_REDIS
    stages = [Stage(s, mode, session.database_url, redis_url) for s in scenarios for mode in modes]
    try:
        progress(f"starting {len(stages)} service(s)...")
        # Every start ends before a failure is raised: none goes on after the stages stop.
        started = await asyncio.gather(*(stage.start() for stage in stages), return_exceptions=True)
        for outcome in started:
            if isinstance(outcome, ProxyError):
                raise ChaosError(f"the database: {outcome}")
            if isinstance(outcome, BaseException):
                raise outcome
        await asyncio.gather(*(stage.booted() for stage in stages))
        for stage in stages:
            result = RunResult(scenario=stage.scenario, mode=stage.mode)
            session.results.append(result)
            try:
                await play(stage, result=result, progress=progress)
            except asyncio.CancelledError:
                session.interrupted = True
                raise
            if result.error is not None and not result.rows:
                raise ChaosError(result.error)
    finally:
        await asyncio.gather(*(stage.stop() for stage in stages), return_exceptions=True)
    return session


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None
