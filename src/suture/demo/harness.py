"""The chaos harness: break the reference service on purpose and measure how it heals.

:func:`run_harness` plays a scenario against the demo, either in this process
(:func:`in_process`: a fresh SQLite file, or PostgreSQL in a schema of its own,
driven through :class:`httpx.ASGITransport`, so no socket is opened) or against
a demo already running on this machine (:func:`remote`, ``suture demo --chaos``
on a loopback address). Each phase sets faults through the demo's own admin
endpoint, runs closed-loop workers at a bounded rate for a bounded time and
records every answer; the breaker and the pool are read from ``/health`` and
the retries and shed requests from ``/api/dashboard``. The result is a
:class:`Report`: per-phase numbers and a verdict per phase against a stated
criterion.

:class:`Traffic` is the same client as a background load (``suture demo
--traffic N``): it calls the app's own API at a fixed rate so the dashboard
moves when somebody clicks the chaos buttons.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import random
import tempfile
import urllib.parse
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx

from suture._config import check_fraction, check_int
from suture.clock import SYSTEM_CLOCK, Clock

__all__ = [
    "ASSISTANCE",
    "CAPTURE",
    "MAX_TRAFFIC",
    "PHASES",
    "TRAFFIC_READS",
    "HarnessError",
    "Phase",
    "PhaseResult",
    "Report",
    "Scenario",
    "Traffic",
    "asgi_lifespan",
    "check_loopback_url",
    "format_report",
    "in_process",
    "remote",
    "run_harness",
]

logger = logging.getLogger("suture.demo")

ASSISTANCE = "/api/manager/assistance"
CAPTURE = "/api/manager/spam/capture"
ADMIN = "/api/admin/chaos"
_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
#: Traffic's ceiling in requests per second (``suture demo --traffic``).
MAX_TRAFFIC = 200.0


class HarnessError(RuntimeError):
    """The harness cannot run (a refused URL, a demo without ``--chaos``...)."""


# --- the scenario ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase:
    """One step of the scenario: the faults to set and what healing means under them."""

    name: str
    title: str
    #: The body POSTed to ``/api/admin/chaos`` (``hold=-1`` means "the pool's limit").
    faults: Mapping[str, Any]
    criterion: str
    #: Run past ``phase_seconds`` (up to 4 times as long) until this many answers:
    #: a percentage criterion needs enough of them (one failure in 50 is 2%).
    min_requests: int = 0


PHASES: tuple[Phase, ...] = (
    Phase(
        name="baseline",
        title="no faults",
        faults={},
        criterion=">= 99% success, no 500s",
    ),
    Phase(
        name="errors-30",
        title="30% of database attempts fail",
        faults={"errorRate": 0.3},
        criterion=">= 99% success (retries absorb the errors), no 500s",
        min_requests=200,
    ),
    Phase(
        name="latency",
        title="+300 ms on every database attempt",
        faults={"latency": 0.3},
        criterion=">= 99% success, no 500s",
    ),
    Phase(
        name="pool-exhausted",
        title="every pool connection held",
        faults={"hold": -1},
        criterion="pool seen CRITICAL; no 500s; every 503 carries Retry-After",
    ),
    Phase(
        name="errors-100",
        title="every database attempt fails",
        faults={"errorRate": 1.0},
        criterion="breaker OPEN within the phase; >= 90% of answers 503 with Retry-After; "
        "503 p50 < 50 ms; no 500s",
    ),
    Phase(
        name="healed",
        title="faults cleared (breaker still open)",
        faults={},
        criterion="first success <= reset_timeout + 1 s after the faults clear; breaker "
        "CLOSED again; Retry-After kept; no 500s",
    ),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """How hard and how long the harness pushes."""

    #: Seconds each phase runs (the healed phase: until the breaker closes, then this long).
    phase_seconds: float = 5.0
    #: Closed-loop workers (each waits for its answer before the next request).
    concurrency: int = 8
    #: Ceiling on requests per second over all workers.
    rate: float = 100.0
    #: Share of the requests that are spam captures (at most one in flight).
    spam_share: float = 0.05
    #: The service's breaker open time, for the healed criterion.
    reset_timeout: float = 2.0
    #: Longest wait for the service to be healthy again between phases.
    settle_timeout: float = 20.0
    #: How often ``/health`` is read during a phase.
    poll_interval: float = 0.05
    seed: int = 7

    def __post_init__(self) -> None:
        for name in ("phase_seconds", "rate", "reset_timeout", "settle_timeout", "poll_interval"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value!r}: must be a number of seconds > 0")
        check_int("concurrency", self.concurrency, minimum=1)
        check_fraction("spam_share", self.spam_share, allow_zero=True)


# --- results -----------------------------------------------------------------------------


def _percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(slots=True)
class _Tally:
    """Every answer of one phase."""

    started: float
    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    by_route: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    latencies_503: list[float] = field(default_factory=list)
    with_retry_after: int = 0
    transport_errors: int = 0
    first_success: float | None = None
    #: (received at, Retry-After seconds) of the first 503 of the phase.
    first_promise: tuple[float, float] | None = None

    def record(self, route: str, response: httpx.Response, took: float, at: float) -> None:
        status = response.status_code
        self.statuses[status] += 1
        self.by_route[route] += 1
        self.latencies.append(took)
        if 200 <= status < 300:
            if self.first_success is None:
                self.first_success = at - self.started
            return
        code = _error_code(response)
        self.codes[code or str(status)] += 1
        if status == 503:
            self.latencies_503.append(took)
            after = _valid_retry_after(response)
            if after is not None:
                self.with_retry_after += 1
                if self.first_promise is None:
                    self.first_promise = (at - self.started, after)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + self.transport_errors


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return str(code) if code is not None else None


def _valid_retry_after(response: httpx.Response) -> float | None:
    """The Retry-After of a 503 when it is whole seconds >= 1 and matches the body."""
    header = response.headers.get("Retry-After")
    if header is None or not header.strip().isdigit():
        return None
    seconds = int(header)
    if seconds < 1:
        return None
    with suppress(ValueError):
        body = response.json()
        if isinstance(body, dict) and body.get("retryAfter") not in (None, seconds):
            return None
    return float(seconds)


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseResult:
    """The numbers of one phase and its verdict."""

    name: str
    title: str
    criterion: str
    seconds: float
    requests: int
    success_pct: float
    status_503_pct: float
    other_5xx: int
    other_errors: int
    p50_ms: float | None
    p99_ms: float | None
    p50_503_ms: float | None
    retry_after_pct: float | None
    retries: int
    breaker_rejections: int
    shed: int
    faults_injected: int
    breaker_opened_after: float | None
    breaker_states: list[str]
    pool_levels: list[str]
    codes: dict[str, int]
    routes: dict[str, int]
    first_success_after: float | None = None
    breaker_closed_after: float | None = None
    retry_after_kept: bool | None = None
    recovered_after: float | None = None
    pool_critical_after: float | None = None
    healed: bool
    measured: str

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """What :func:`run_harness` found: the setup, one result per phase, the overall verdict."""

    target: str
    settings: dict[str, Any]
    phases: list[PhaseResult]

    @property
    def healed(self) -> bool:
        return all(p.healed for p in self.phases)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "settings": self.settings,
            "phases": [p.as_dict() for p in self.phases],
            "healed": self.healed,
        }


# --- running an ASGI app in-process --------------------------------------------------------


@asynccontextmanager
async def asgi_lifespan(app: Any) -> AsyncIterator[None]:
    """Run an ASGI app's lifespan (startup ... shutdown) around the block.

    :class:`httpx.ASGITransport` sends requests only; this sends the
    ``lifespan`` messages a server would, so the app starts and stops properly.
    """
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        await outbox.put(message)

    async def expect(kind: str) -> None:
        while True:
            done = asyncio.ensure_future(outbox.get())
            finished, _ = await asyncio.wait({done, task}, return_when=asyncio.FIRST_COMPLETED)
            if done in finished:
                message = done.result()
                if message["type"] == f"lifespan.{kind}.complete":
                    return
                if message["type"] == f"lifespan.{kind}.failed":
                    # Starlette sends the whole traceback: its last error line says it all.
                    lines = str(message.get("message", "")).strip().splitlines()
                    said = [ln for ln in lines if ln[:1].isalpha() and ":" in ln]
                    with suppress(Exception):  # the same error, raised by the app's task
                        await task
                    raise HarnessError(f"the app's {kind} failed: {(said or ['?'])[-1]}")
                continue
            done.cancel()
            task.result()  # raises the app's error
            raise HarnessError(f"the app ended during {kind}")

    task = asyncio.ensure_future(app(scope, receive, send))
    await inbox.put({"type": "lifespan.startup"})
    await expect("startup")
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await expect("shutdown")
        await task


@dataclass(slots=True)
class _Target:
    client: httpx.AsyncClient
    description: str
    reset_timeout: float
    notes: list[str] = field(default_factory=list)


@asynccontextmanager
async def in_process(
    database_url: str | None = None,
    *,
    reset_timeout: float = 2.0,
    tasks: int = 300,
    messages: int = 2_000,
    rules: int = 200,
    pool_size: int = 20,
    seed: int = 7,
) -> AsyncIterator[_Target]:
    """The demo app in this process, on a fresh SQLite file (or ``database_url``).

    On PostgreSQL the demo's tables live in a schema of their own, dropped at the end.
    """
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    from suture.demo.app import Settings, async_url, create_app

    with tempfile.TemporaryDirectory(prefix="suture-chaos-") as tmp:
        url = database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'chaos.db'}"
        try:
            backend = sa.make_url(async_url(url)).get_backend_name()
        except sa.exc.ArgumentError as exc:
            raise HarnessError(f"database_url={url!r}: {exc}") from None
        schema = f"suture_chaos_{uuid.uuid4().hex[:12]}"
        settings = Settings(
            database_url=url,
            schema=schema if backend == "postgresql" else None,
            chaos=True,
            reset_timeout=reset_timeout,
            tasks=tasks,
            messages=messages,
            rules=rules,
            pool_size=pool_size,
            monitor_interval=0.5,
            rand=random.Random(seed),
        )
        try:
            app = create_app(settings)
        except Exception as exc:  # a driver that is not installed, a directory not writable...
            raise HarnessError(f"cannot build the demo on {url!r}: {exc}") from exc
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        started = False
        try:
            async with (
                asgi_lifespan(app),
                httpx.AsyncClient(transport=transport, base_url="http://suture.chaos") as client,
            ):
                started = True
                where = "PostgreSQL" if backend == "postgresql" else "SQLite"
                yield _Target(
                    client=client,
                    description=f"in-process demo on {where} ({tasks} tasks, "
                    f"{messages} messages, {rules} rules, pool {pool_size})",
                    reset_timeout=reset_timeout,
                    notes=[
                        f"breaker reset_timeout shortened to {reset_timeout:g} s "
                        "(suture demo's default is 10 s) so healing shows within the run",
                        f"pool of {pool_size} connections (the demo's default is 10) so the "
                        "workers and a spam capture stay under the 70% WARNING mark that "
                        "sheds captures; the monitor samples every 0.5 s",
                    ],
                )
        finally:
            if backend == "postgresql" and started:
                engine = create_async_engine(async_url(url))
                try:
                    async with engine.begin() as conn:
                        await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                except sa.exc.SQLAlchemyError as exc:
                    logger.warning("chaos harness: could not drop schema %s: %s", schema, exc)
                finally:
                    await engine.dispose()


def check_loopback_url(url: str) -> str:
    """``url`` without a trailing slash when it is http(s) on this machine; else ValueError."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url={url!r}: expected http://127.0.0.1:PORT (a running suture demo)")
    host = parts.hostname
    loopback = host.lower() in _LOOPBACK_NAMES
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
    if not loopback:
        raise ValueError(
            f"url={url!r}: the harness only breaks services on this machine; "
            "allowed hosts are 127.0.0.0/8, ::1 and localhost"
        )
    return url.rstrip("/")


@asynccontextmanager
async def remote(url: str, *, reset_timeout: float = 10.0) -> AsyncIterator[_Target]:
    """A demo already running on this machine with ``--chaos``."""
    base = check_loopback_url(url)
    async with httpx.AsyncClient(base_url=base, timeout=30.0) as client:
        try:
            answer = await client.get(ADMIN)
        except httpx.HTTPError as exc:
            raise HarnessError(f"cannot reach {base}: {exc}") from None
        if answer.status_code == 404:
            raise HarnessError(
                f"{base} has no chaos admin endpoint: start it with  suture demo --chaos"
            )
        if answer.status_code != 200:
            raise HarnessError(f"{base}{ADMIN} answered {answer.status_code}")
        yield _Target(
            client=client,
            description=f"suture demo at {base}",
            reset_timeout=reset_timeout,
            notes=[
                f"expecting the demo's breaker reset_timeout of {reset_timeout:g} s",
                "at 70% pool use the demo sheds spam captures: if the baseline shows shed "
                "requests, lower --concurrency or start the demo with a larger --pool-size",
            ],
        )


# --- the harness -------------------------------------------------------------------------


class _Pacer:
    """Hands out request slots no faster than ``rate`` per second."""

    def __init__(self, rate: float, clock: Clock) -> None:
        self.interval = 1.0 / rate
        self.clock = clock
        self.next = clock.now()

    async def wait(self) -> float:
        now = self.clock.now()
        slot = max(now, self.next)
        self.next = slot + self.interval
        if slot > now:
            await self.clock.asleep(slot - now)
        return slot


class _Run:
    """One harness run over one target."""

    def __init__(self, target: _Target, scenario: Scenario, clock: Clock) -> None:
        self.target = target
        self.client = target.client
        self.scenario = scenario
        self.clock = clock
        self.rng = random.Random(scenario.seed)
        self.capturing = False
        self.pool_limit = 10

    async def _json(self, path: str) -> dict[str, Any]:
        answer = await self.client.get(path)
        answer.raise_for_status()
        body = answer.json()
        if not isinstance(body, dict):
            raise HarnessError(f"{path} did not answer a JSON object")
        return body

    async def _chaos(self, body: Mapping[str, Any]) -> None:
        answer = await self.client.post(ADMIN, json=dict(body))
        if answer.status_code != 200:
            raise HarnessError(f"setting faults {dict(body)} failed: {answer.status_code}")

    async def _counters(self) -> dict[str, int]:
        health, board = await asyncio.gather(self._json("/health"), self._json("/api/dashboard"))
        breaker = health["breakers"]["database"]
        totals = board.get("totals", {})
        return {
            "retries": int(totals.get("retries", 0)),
            "shed": int(totals.get("shed", 0)),
            "faults": int(totals.get("faults", 0)),
            "breaker_rejections": int(breaker.get("total_rejections", 0)),
        }

    async def _healthy(self) -> bool:
        return bool((await self._json("/health"))["status"] == "ok")

    async def settle(self) -> float | None:
        """Wait (bounded) until the breaker is closed and the pool NORMAL; the seconds taken."""
        start = self.clock.now()
        deadline = start + self.scenario.settle_timeout
        while self.clock.now() < deadline:
            if await self._healthy():
                return self.clock.now() - start
            # An open breaker closes only after a successful probe: send one.
            with suppress(httpx.HTTPError):
                await self.client.get(ASSISTANCE)
            await self.clock.asleep(0.1)
        return None

    async def _worker(self, tally: _Tally, pacer: _Pacer, done: Callable[[], bool]) -> None:
        while True:
            await pacer.wait()
            if done():
                return
            capture = (
                not self.capturing
                and self.scenario.spam_share > 0
                and self.rng.random() < self.scenario.spam_share
            )
            route = CAPTURE if capture else ASSISTANCE
            self.capturing = self.capturing or capture
            start = self.clock.now()
            try:
                if capture:
                    response = await self.client.post(CAPTURE, params={"batchSize": 500})
                else:
                    response = await self.client.get(ASSISTANCE)
            except httpx.HTTPError:
                tally.transport_errors += 1
                continue
            finally:
                if capture:
                    self.capturing = False
            end = self.clock.now()
            tally.record(route, response, end - start, end)

    async def _watch(
        self,
        stop: asyncio.Event,
        started_wall: float,
        states: list[str],
        levels: list[str],
        seen: dict[str, float | None],
    ) -> None:
        """Poll /health: breaker states and pool levels in the order seen, when it opened/closed."""
        start = self.clock.now()
        while True:
            with suppress(httpx.HTTPError, KeyError, ValueError):
                health = await self._json("/health")
                breaker = health["breakers"]["database"]
                state = str(breaker["state"]).upper()
                level = str(health["pool"]["level"])
                if not states or states[-1] != state:
                    states.append(state)
                if not levels or levels[-1] != level:
                    levels.append(level)
                opened_at = breaker.get("opened_at")
                if state == "OPEN" and seen["opened"] is None:
                    at = self.clock.now() - start
                    if isinstance(opened_at, int | float) and opened_at >= started_wall:
                        at = min(at, opened_at - started_wall)
                    seen["opened"] = at
                if state == "CLOSED" and seen["closed"] is None:
                    seen["closed"] = self.clock.now() - start
            if stop.is_set():
                return
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.scenario.poll_interval)

    async def _held(self, count: int) -> float | None:
        """Wait (bounded) until ``count`` connections are held and the pool is CRITICAL.

        Returns the seconds until the monitor saw CRITICAL (None: not within the bound).
        """
        start = self.clock.now()
        deadline = start + self.scenario.settle_timeout
        while self.clock.now() < deadline:
            snapshot = (await self._json(ADMIN)).get("chaos", {})
            if int(snapshot.get("database", {}).get("held", 0)) >= count:
                break
            await self.clock.asleep(0.05)
        else:
            raise HarnessError(f"the chaos holder did not take {count} pool connections")
        while self.clock.now() < deadline:
            if (await self._json("/health"))["pool"]["level"] == "CRITICAL":
                return self.clock.now() - start
            await self.clock.asleep(0.05)
        return None

    async def phase(self, phase: Phase, *, settle: bool = True) -> PhaseResult:
        scenario = self.scenario
        healed_phase = phase.name == "healed"
        seconds = scenario.phase_seconds
        if healed_phase:  # long enough to see the breaker close, then serve for a phase
            seconds = self.target.reset_timeout + 2.0 + scenario.phase_seconds
        before = await self._counters()
        faults = dict(phase.faults)
        if faults.get("hold") == -1:
            faults["hold"] = self.pool_limit
        states: list[str] = []
        levels: list[str] = []
        stop = asyncio.Event()
        started_wall = self.clock.wall()
        seen: dict[str, float | None] = {"opened": None, "closed": None}
        watcher = asyncio.ensure_future(self._watch(stop, started_wall, states, levels, seen))
        await self._chaos({"clear": True} if healed_phase or not faults else faults)
        detected = None
        if faults.get("hold"):
            # Load starts once the holder has the connections and the pool monitor
            # has seen it: how long that took is reported, not hidden.
            detected = await self._held(faults["hold"])
        tally = _Tally(started=self.clock.now())
        pacer = _Pacer(scenario.rate, self.clock)
        stop_at = tally.started + seconds
        longest = tally.started + max(seconds, 4 * scenario.phase_seconds)

        def done() -> bool:
            now = self.clock.now()
            if now >= stop_at:
                return now >= longest or tally.requests >= phase.min_requests
            # The healed phase ends a phase's length after the breaker is seen CLOSED.
            closed = seen["closed"]
            return (
                healed_phase
                and closed is not None
                and now >= tally.started + closed + scenario.phase_seconds
            )

        await asyncio.gather(
            *(self._worker(tally, pacer, done) for _ in range(scenario.concurrency))
        )
        elapsed = self.clock.now() - tally.started
        stop.set()
        await watcher
        after = await self._counters()
        recovered = None
        if faults and settle:
            await self._chaos({"clear": True})
            recovered = await self.settle()
        return self._result(
            phase, tally, elapsed, before, after, seen, states, levels, recovered, detected
        )

    def _result(
        self,
        phase: Phase,
        tally: _Tally,
        elapsed: float,
        before: dict[str, int],
        after: dict[str, int],
        seen: dict[str, float | None],
        states: list[str],
        levels: list[str],
        recovered: float | None,
        detected: float | None,
    ) -> PhaseResult:
        total = tally.requests
        ok = sum(n for s, n in tally.statuses.items() if 200 <= s < 300)
        s503 = tally.statuses.get(503, 0)
        other_5xx = sum(n for s, n in tally.statuses.items() if s >= 500 and s != 503)
        other = total - ok - s503 - other_5xx

        def pct(n: int, of: int) -> float:
            return round(100.0 * n / of, 2) if of else 0.0

        def ms(value: float | None) -> float | None:
            return round(value * 1000, 1) if value is not None else None

        delta = {k: after[k] - before[k] for k in after}
        retry_after_pct = pct(tally.with_retry_after, s503) if s503 else None
        success = pct(ok, total)
        p50_503 = _percentile(tally.latencies_503, 50)
        first_success = tally.first_success
        closed_after = seen["closed"] if phase.name == "healed" else None
        kept: bool | None = None
        no_500 = other_5xx == 0 and tally.transport_errors == 0 and total > 0
        reset = self.target.reset_timeout
        if phase.name == "baseline":
            healed = no_500 and success >= 99.0
            measured = f"{success:.1f}% success"
        elif phase.name in ("errors-30", "latency"):
            healed = no_500 and success >= 99.0
            measured = f"{success:.1f}% success, {delta['retries']} retries"
        elif phase.name == "pool-exhausted":
            critical = detected is not None and "CRITICAL" in levels
            healed = no_500 and (retry_after_pct in (None, 100.0)) and critical
            measured = (
                f"CRITICAL after {_s(detected)}, {s503} x 503 "
                f"({retry_after_pct or 0:.0f}% with Retry-After), {delta['shed']} shed"
            )
        elif phase.name == "errors-100":
            opened = seen["opened"] is not None
            fast = p50_503 is not None and p50_503 < 0.050
            answered = pct(tally.with_retry_after, total)
            healed = no_500 and opened and answered >= 90.0 and fast
            measured = (
                f"opened after {_s(seen['opened'])}, {answered:.1f}% 503 + Retry-After, "
                f"503 p50 {ms(p50_503)} ms"
            )
        else:  # healed
            if tally.first_promise is not None and first_success is not None:
                promised_at, after_s = tally.first_promise
                kept = first_success <= promised_at + after_s + 0.5
            in_time = first_success is not None and first_success <= reset + 1.0
            healed = no_500 and in_time and closed_after is not None and kept is not False
            promise = (
                f", Retry-After {tally.first_promise[1]:g} s "
                + ("kept" if kept else "NOT kept" if kept is False else "not checked")
                if tally.first_promise is not None
                else ""
            )
            measured = (
                f"first success after {_s(first_success)}, CLOSED after {_s(closed_after)} "
                f"(limit {reset + 1.0:g} s){promise}"
            )
        if not no_500:
            measured += f"; {other_5xx} other 5xx, {tally.transport_errors} transport errors"
        return PhaseResult(
            name=phase.name,
            title=phase.title,
            criterion=phase.criterion,
            seconds=round(elapsed, 2),
            requests=total,
            success_pct=success,
            status_503_pct=pct(s503, total),
            other_5xx=other_5xx,
            other_errors=other,
            p50_ms=ms(_percentile(tally.latencies, 50)),
            p99_ms=ms(_percentile(tally.latencies, 99)),
            p50_503_ms=ms(p50_503),
            retry_after_pct=retry_after_pct,
            retries=delta["retries"],
            breaker_rejections=delta["breaker_rejections"],
            shed=delta["shed"],
            faults_injected=delta["faults"],
            breaker_opened_after=_round(seen["opened"]),
            breaker_states=states,
            pool_levels=levels,
            codes=dict(tally.codes),
            routes=dict(tally.by_route),
            first_success_after=_round(first_success),
            breaker_closed_after=_round(closed_after),
            retry_after_kept=kept,
            recovered_after=_round(recovered),
            pool_critical_after=_round(detected),
            healed=healed,
            measured=measured,
        )

    async def run(self, phases: Sequence[Phase]) -> list[PhaseResult]:
        await self._chaos({"clear": True})
        if await self.settle() is None:
            raise HarnessError("the service is not healthy before the run (see /health)")
        health = await self._json("/health")
        usage = health["pool"].get("usage") or {}
        self.pool_limit = int(usage.get("limit") or self.pool_limit)
        results = []
        try:
            for n, phase in enumerate(phases):
                # The healed phase starts the moment the faults before it stop.
                upcoming = phases[n + 1].name if n + 1 < len(phases) else None
                result = await self.phase(phase, settle=upcoming != "healed")
                logger.info("chaos harness: %s: %s", phase.name, result.measured)
                results.append(result)
        finally:
            with suppress(httpx.HTTPError, HarnessError):
                await self._chaos({"clear": True})
        return results


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def _s(value: float | None) -> str:
    return f"{value:.2f} s" if value is not None else "never"


async def run_harness(
    *,
    url: str | None = None,
    database_url: str | None = None,
    scenario: Scenario | None = None,
    phases: Sequence[Phase] = PHASES,
    clock: Clock = SYSTEM_CLOCK,
    **in_process_options: Any,
) -> Report:
    """Play ``phases`` against the demo (in-process unless ``url``) and report.

    ``url`` must be a loopback http(s) URL of a ``suture demo --chaos``;
    ``in_process_options`` go to :func:`in_process` (seed sizes, pool size).
    """
    scenario = scenario or Scenario()
    if url is not None:
        target_cm = remote(url, reset_timeout=scenario.reset_timeout)
    else:
        target_cm = in_process(
            database_url, reset_timeout=scenario.reset_timeout, **in_process_options
        )
    async with target_cm as target:
        try:
            results = await _Run(target, scenario, clock).run(phases)
        except httpx.HTTPError as exc:
            raise HarnessError(f"the service stopped answering: {exc!r}") from exc
        settings = {
            "phase_seconds": scenario.phase_seconds,
            "concurrency": scenario.concurrency,
            "rate": scenario.rate,
            "spam_share": scenario.spam_share,
            "reset_timeout": target.reset_timeout,
            "notes": list(target.notes),
        }
        return Report(target=target.description, settings=settings, phases=results)


# --- the text report -------------------------------------------------------------------


def _table(rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        cells = [
            cell.rjust(w) if right[i] else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return fmt.format(value) if value is not None else "-"


def format_report(report: Report) -> str:
    """The report as plain text: setup, one row of numbers per phase, the verdicts."""
    s = report.settings
    lines = [
        "suture chaos harness",
        f"  target   {report.target}",
        f"  load     {s['concurrency']} closed-loop workers, at most {s['rate']:g} requests/s, "
        f"{s['phase_seconds']:g} s per phase, {s['spam_share']:.0%} spam captures",
    ]
    lines += [f"  note     {note}" for note in s["notes"]]
    lines.append("")
    rows = [
        [
            "phase",
            "requests",
            "success",
            "503",
            "other 5xx",
            "other",
            "p50 ms",
            "p99 ms",
            "retries",
            "rejected",
            "shed",
            "Retry-After",
            "breaker",
        ]
    ]
    for p in report.phases:
        rows.append(
            [
                p.name,
                str(p.requests),
                f"{p.success_pct:.1f}%",
                f"{p.status_503_pct:.1f}%",
                str(p.other_5xx),
                str(p.other_errors),
                _num(p.p50_ms),
                _num(p.p99_ms),
                str(p.retries),
                str(p.breaker_rejections),
                str(p.shed),
                _num(p.retry_after_pct, "{:.0f}%"),
                " -> ".join(p.breaker_states) or "?",
            ]
        )
    lines += _table(rows, [False] + [True] * 11 + [False])
    lines.append("")
    verdicts = [["phase", "healed", "criterion", "measured"]]
    for p in report.phases:
        verdicts.append([p.name, "yes" if p.healed else "NO", p.criterion, p.measured])
    lines += _table(verdicts, [False, False, False, False])
    recovered = [
        f"{p.name} {_s(p.recovered_after)}" for p in report.phases if p.recovered_after is not None
    ]
    if recovered:
        lines.append("")
        lines.append("healthy again after the faults cleared: " + ", ".join(recovered))
    lines.append("")
    lines.append(
        "verdict: healed in every phase"
        if report.healed
        else "verdict: NOT healed in: " + ", ".join(p.name for p in report.phases if not p.healed)
    )
    return "\n".join(lines)


# --- background traffic ----------------------------------------------------------------


#: What :class:`Traffic` reads, with weights: what a manager's page loads.
TRAFFIC_READS: tuple[tuple[str, dict[str, Any], int], ...] = (
    (ASSISTANCE, {}, 8),
    ("/api/manager/spam", {"limit": 50}, 1),
    ("/api/messages", {"status": "READY", "limit": 20}, 1),
)


class Traffic:
    """Calls an ASGI app's own API at ``rate`` requests per second, in-process, until cancelled.

    Reads only by default (the assistance queue mostly, the spam review queue
    and the inbox), so a visitor's own clicks still find the data as seeded;
    ``spam_share`` adds spam captures (low priority: the first to be shed).
    Open loop (a request starts every ``1/rate`` s whatever the previous ones
    do), with at most ``max_in_flight`` requests waiting at once: when the
    service is slow the surplus is skipped and counted, not queued. A rate of
    0 pauses it; :meth:`set_rate` changes the rate while it runs (the demo's
    dashboard toggle).
    """

    def __init__(
        self,
        app: Any,
        rate: float,
        *,
        spam_share: float = 0.0,
        max_in_flight: int = 32,
        clock: Clock = SYSTEM_CLOCK,
        rand: Callable[[], float] | None = None,
    ) -> None:
        check_fraction("spam_share", spam_share, allow_zero=True)
        check_int("max_in_flight", max_in_flight, minimum=1)
        self.app = app
        self.rate = self._check_rate(rate)
        self.spam_share = spam_share
        self.max_in_flight = max_in_flight
        self.clock = clock
        self._rand = rand or random.Random().random
        self.sent = 0
        self.skipped = 0
        self.statuses: Counter[int] = Counter()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._capturing = False
        self._answered: asyncio.Event | None = None
        self._resumed: asyncio.Event | None = None
        self._pacer: _Pacer | None = None

    @staticmethod
    def _check_rate(rate: float) -> float:
        if isinstance(rate, bool) or not (
            isinstance(rate, int | float) and 0 <= rate <= MAX_TRAFFIC
        ):
            raise ValueError(f"rate={rate!r}: must be from 0 (paused) to {MAX_TRAFFIC:g}")
        return float(rate)

    def set_rate(self, rate: float) -> None:
        """Requests per second from now on (0 pauses); call it from the event loop's thread."""
        self.rate = self._check_rate(rate)
        if self.rate > 0:
            if self._pacer is not None:
                self._pacer.interval = 1.0 / self.rate
                self._pacer.next = min(self._pacer.next, self.clock.now() + self._pacer.interval)
            if self._resumed is not None:
                self._resumed.set()

    async def wait_until(self, predicate: Callable[[Traffic], bool]) -> None:
        """Wait until ``predicate(self)`` holds, checked after every answer (wrap in a timeout)."""
        while not predicate(self):
            self._answered = answered = asyncio.Event()
            await answered.wait()

    async def run(self) -> None:
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://suture.traffic", timeout=30.0
        ) as client:
            try:
                while True:
                    if self.rate <= 0:  # paused until set_rate
                        self._pacer = None
                        self._resumed = resumed = asyncio.Event()
                        await resumed.wait()
                        continue
                    if self._pacer is None:
                        self._pacer = _Pacer(self.rate, self.clock)
                    await self._pacer.wait()
                    if self.rate <= 0:
                        continue
                    if len(self._in_flight) >= self.max_in_flight:
                        self.skipped += 1
                        continue
                    task = asyncio.ensure_future(self._one(client))
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)
            finally:
                pending = list(self._in_flight)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    async def _one(self, client: httpx.AsyncClient) -> None:
        capture = self.spam_share > 0 and not self._capturing and self._rand() < self.spam_share
        self.sent += 1
        try:
            if capture:
                self._capturing = True
                response = await client.post(CAPTURE, params={"batchSize": 500})
            else:
                path, params = self._pick()
                response = await client.get(path, params=params)
            self.statuses[response.status_code] += 1
        except httpx.HTTPError:
            self.statuses[0] += 1
        finally:
            if capture:
                self._capturing = False
            if self._answered is not None:
                self._answered.set()

    def _pick(self) -> tuple[str, dict[str, Any]]:
        total = sum(weight for _, _, weight in TRAFFIC_READS)
        point = self._rand() * total
        for path, params, weight in TRAFFIC_READS:
            if point < weight:
                return path, params
            point -= weight
        return ASSISTANCE, {}
