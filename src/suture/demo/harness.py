"""The chaos harness: break the reference service on purpose and measure how it heals.

:func:`run_harness` plays a scenario against the demo, either in this process
(:func:`~suture.demo.targets.in_process`: a fresh SQLite file, or PostgreSQL
in a schema of its own, driven through :class:`httpx.ASGITransport`, so no
socket is opened) or against a demo already running on this machine
(:func:`~suture.demo.targets.remote`, ``suture demo --chaos`` on a loopback
address). Each phase (:mod:`suture.demo.phases`) sets faults through the
demo's own admin endpoint, runs closed-loop workers at a bounded rate for a
bounded time and records every answer; the breaker and the pool are read from
``/health`` and the retries and shed requests from ``/api/dashboard``. Each
phase's own judge then checks its criterion. The result is a
:class:`~suture.demo.report.Report`: per-phase numbers and a verdict per phase.

The names of the rooms it is made of (phases, report, targets, traffic) stay
importable from here.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any

import httpx

from suture.clock import SYSTEM_CLOCK, Clock
from suture.demo.phases import PHASES, Measurement, Phase, Scenario, judge_phase
from suture.demo.report import (
    PhaseResult,
    Report,
    Tally,
    format_report,
    millis,
    percent,
    percentile,
    rounded,
)
from suture.demo.targets import (
    ADMIN,
    HarnessError,
    Target,
    asgi_lifespan,
    check_loopback_url,
    in_process,
    remote,
)
from suture.demo.traffic import (
    ASSISTANCE,
    CAPTURE,
    MAX_TRAFFIC,
    TRAFFIC_READS,
    Pacer,
    Traffic,
)

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


# --- the harness -------------------------------------------------------------------------


class _Run:
    """One harness run over one target."""

    def __init__(self, target: Target, scenario: Scenario, clock: Clock) -> None:
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

    async def _worker(self, tally: Tally, pacer: Pacer, done: Callable[[], bool]) -> None:
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
        until_closed = phase.until_closed
        seconds = scenario.phase_seconds
        if until_closed:  # long enough to see the breaker close, then serve for a phase
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
        await self._chaos({"clear": True} if until_closed or not faults else faults)
        detected = None
        if faults.get("hold"):
            # Load starts once the holder has the connections and the pool monitor
            # has seen it: how long that took is reported, not hidden.
            detected = await self._held(faults["hold"])
        tally = Tally(started=self.clock.now())
        pacer = Pacer(scenario.rate, self.clock)
        stop_at = tally.started + seconds
        longest = tally.started + max(seconds, 4 * scenario.phase_seconds)

        def done() -> bool:
            now = self.clock.now()
            if now >= stop_at:
                return now >= longest or tally.requests >= phase.min_requests
            # The healed phase ends a phase's length after the breaker is seen CLOSED.
            closed = seen["closed"]
            return (
                until_closed
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

    def _result(  # noqa: PLR0913 - a phase's measured figures, keyword-only
        self,
        phase: Phase,
        tally: Tally,
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

        delta = {k: after[k] - before[k] for k in after}
        m = Measurement(
            tally=tally,
            requests=total,
            success_pct=percent(ok, total),
            status_503=s503,
            other_5xx=other_5xx,
            no_500=other_5xx == 0 and tally.transport_errors == 0 and total > 0,
            retry_after_pct=percent(tally.with_retry_after, s503) if s503 else None,
            p50_503=percentile(tally.latencies_503, 50),
            delta=delta,
            pool_levels=levels,
            pool_critical_after=detected,
            breaker_opened_after=seen["opened"],
            breaker_closed_after=seen["closed"],
            reset_timeout=self.target.reset_timeout,
        )
        verdict = judge_phase(phase, m)
        return PhaseResult(
            name=phase.name,
            title=phase.title,
            criterion=phase.criterion,
            seconds=round(elapsed, 2),
            requests=total,
            success_pct=m.success_pct,
            status_503_pct=percent(s503, total),
            other_5xx=other_5xx,
            other_errors=total - ok - s503 - other_5xx,
            p50_ms=millis(percentile(tally.latencies, 50)),
            p99_ms=millis(percentile(tally.latencies, 99)),
            p50_503_ms=millis(m.p50_503),
            retry_after_pct=m.retry_after_pct,
            retries=delta["retries"],
            breaker_rejections=delta["breaker_rejections"],
            shed=delta["shed"],
            faults_injected=delta["faults"],
            breaker_opened_after=rounded(seen["opened"]),
            breaker_states=states,
            pool_levels=levels,
            codes=dict(tally.codes),
            routes=dict(tally.by_route),
            first_success_after=rounded(tally.first_success),
            breaker_closed_after=rounded(verdict.breaker_closed_after),
            retry_after_kept=verdict.retry_after_kept,
            recovered_after=rounded(recovered),
            pool_critical_after=rounded(detected),
            healed=verdict.healed,
            measured=verdict.measured,
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
                # A phase that runs until_closed starts the moment the faults before it stop.
                upcoming = phases[n + 1] if n + 1 < len(phases) else None
                result = await self.phase(
                    phase, settle=upcoming is None or not upcoming.until_closed
                )
                logger.info("chaos harness: %s: %s", phase.name, result.measured)
                results.append(result)
        finally:
            with suppress(httpx.HTTPError, HarnessError):
                await self._chaos({"clear": True})
        return results


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
