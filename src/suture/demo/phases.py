"""The chaos scenario: how hard it pushes, and its phases with their criteria and judges.

A :class:`Phase` carries everything that makes it what it is: the faults to
set through the demo's admin endpoint, the criterion in words, and the
:class:`Judge` that checks that criterion against the phase's
:class:`Measurement`. The harness runs phases without knowing their names;
a new kind of phase is a new judge, not a new branch in the harness.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from suture._config import check_fraction, check_int
from suture.demo.report import Tally, millis, percent, seconds

__all__ = [
    "PHASES",
    "BreakerOpens",
    "Heals",
    "Judge",
    "Measurement",
    "Phase",
    "PoolCritical",
    "Scenario",
    "Served",
    "Verdict",
    "judge_phase",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """What a judge reads: one phase's numbers, already counted."""

    tally: Tally
    requests: int
    success_pct: float
    #: Answers that were 503.
    status_503: int
    #: Answers that were a 5xx other than 503.
    other_5xx: int
    #: No 5xx but 503, no transport error, and at least one answer.
    no_500: bool
    retry_after_pct: float | None
    #: Median latency of the 503s, in seconds.
    p50_503: float | None
    #: Counter deltas over the phase: retries, shed, faults, breaker_rejections.
    delta: Mapping[str, int]
    pool_levels: Sequence[str]
    #: Seconds until the monitor saw the pool CRITICAL (phases that hold connections).
    pool_critical_after: float | None
    breaker_opened_after: float | None
    breaker_closed_after: float | None
    #: The service's breaker open time.
    reset_timeout: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """A judge's answer: healed or not, what it measured, and what it checked on the way."""

    healed: bool
    measured: str
    breaker_closed_after: float | None = None
    retry_after_kept: bool | None = None


class Judge(Protocol):
    """Checks one phase's criterion against its :class:`Measurement`."""

    def __call__(self, m: Measurement) -> Verdict: ...


@dataclass(frozen=True, slots=True)
class Served:
    """At least ``min_success`` percent of the answers succeed, and no 500."""

    min_success: float = 99.0
    #: Say how many retries it took (the phases where retries absorb the faults).
    show_retries: bool = False

    def __call__(self, m: Measurement) -> Verdict:
        measured = f"{m.success_pct:.1f}% success"
        if self.show_retries:
            measured += f", {m.delta['retries']} retries"
        return Verdict(healed=m.no_500 and m.success_pct >= self.min_success, measured=measured)


@dataclass(frozen=True, slots=True)
class PoolCritical:
    """The pool monitor sees CRITICAL, no 500, and every 503 carries Retry-After."""

    def __call__(self, m: Measurement) -> Verdict:
        critical = m.pool_critical_after is not None and "CRITICAL" in m.pool_levels
        all_promised = m.retry_after_pct in (None, 100.0)
        return Verdict(
            healed=m.no_500 and all_promised and critical,
            measured=f"CRITICAL after {seconds(m.pool_critical_after)}, {m.status_503} x 503 "
            f"({m.retry_after_pct or 0:.0f}% with Retry-After), {m.delta['shed']} shed",
        )


@dataclass(frozen=True, slots=True)
class BreakerOpens:
    """The breaker opens; most answers are fast 503s with Retry-After; no 500."""

    #: Share of all answers that must be a 503 with a valid Retry-After, in percent.
    min_answered: float = 90.0
    #: Ceiling on the 503s' median latency, in seconds.
    max_p50_503: float = 0.050

    def __call__(self, m: Measurement) -> Verdict:
        opened = m.breaker_opened_after is not None
        fast = m.p50_503 is not None and m.p50_503 < self.max_p50_503
        answered = percent(m.tally.with_retry_after, m.requests)
        return Verdict(
            healed=m.no_500 and opened and answered >= self.min_answered and fast,
            measured=f"opened after {seconds(m.breaker_opened_after)}, {answered:.1f}% 503 + "
            f"Retry-After, 503 p50 {millis(m.p50_503)} ms",
        )


@dataclass(frozen=True, slots=True)
class Heals:
    """After the faults clear: a success within ``reset_timeout + grace``, CLOSED, promise kept."""

    #: Seconds past the breaker's open time within which the first success must come.
    grace: float = 1.0
    #: Seconds a first success may come after the first 503's Retry-After promised it.
    slack: float = 0.5

    def __call__(self, m: Measurement) -> Verdict:
        first_success = m.tally.first_success
        promise = m.tally.first_promise
        kept: bool | None = None
        if promise is not None and first_success is not None:
            promised_at, after_s = promise
            kept = first_success <= promised_at + after_s + self.slack
        limit = m.reset_timeout + self.grace
        in_time = first_success is not None and first_success <= limit
        closed_after = m.breaker_closed_after
        promised = ""
        if promise is not None:
            said = "kept" if kept else "NOT kept" if kept is False else "not checked"
            promised = f", Retry-After {promise[1]:g} s {said}"
        return Verdict(
            healed=m.no_500 and in_time and closed_after is not None and kept is not False,
            measured=f"first success after {seconds(first_success)}, CLOSED after "
            f"{seconds(closed_after)} (limit {limit:g} s){promised}",
            breaker_closed_after=closed_after,
            retry_after_kept=kept,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase:
    """One step of the scenario: the faults to set and what healing means under them."""

    name: str
    title: str
    #: The body POSTed to ``/api/admin/chaos`` (``hold=-1`` means "the pool's limit").
    faults: Mapping[str, Any]
    #: What healing means here, in words (the report prints it next to the verdict).
    criterion: str
    #: Checks the criterion against the phase's numbers.
    judge: Judge = field(default_factory=Served)
    #: Run past ``phase_seconds`` (up to 4 times as long) until this many answers:
    #: a percentage criterion needs enough of them (one failure in 50 is 2%).
    min_requests: int = 0
    #: The phase starts the moment the faults before it stop (no settling between)
    #: and runs until the breaker is seen CLOSED, then ``phase_seconds`` more.
    until_closed: bool = False


def judge_phase(phase: Phase, m: Measurement) -> Verdict:
    """``phase``'s verdict; a 500 or a transport error is named whatever the phase."""
    verdict = phase.judge(m)
    if m.no_500:
        return verdict
    return Verdict(
        healed=verdict.healed,
        measured=f"{verdict.measured}; {m.other_5xx} other 5xx, "
        f"{m.tally.transport_errors} transport errors",
        breaker_closed_after=verdict.breaker_closed_after,
        retry_after_kept=verdict.retry_after_kept,
    )


PHASES: tuple[Phase, ...] = (
    Phase(
        name="baseline",
        title="no faults",
        faults={},
        criterion=">= 99% success, no 500s",
        judge=Served(),
    ),
    Phase(
        name="errors-30",
        title="30% of database attempts fail",
        faults={"errorRate": 0.3},
        criterion=">= 99% success (retries absorb the errors), no 500s",
        judge=Served(show_retries=True),
        min_requests=200,
    ),
    Phase(
        name="latency",
        # Inside the connection, as a slow database is: the statement holds its
        # pooled connection the whole time, so the pool fills as it would.
        title="+300 ms on every database statement (a slow database)",
        faults={"statementLatency": 0.3},
        criterion=">= 99% success, no 500s",
        judge=Served(show_retries=True),
    ),
    Phase(
        name="pool-exhausted",
        title="every pool connection held",
        faults={"hold": -1},
        criterion="pool seen CRITICAL; no 500s; every 503 carries Retry-After",
        judge=PoolCritical(),
    ),
    Phase(
        name="errors-100",
        title="every database attempt fails",
        faults={"errorRate": 1.0},
        criterion="breaker OPEN within the phase; >= 90% of answers 503 with Retry-After; "
        "503 p50 < 50 ms; no 500s",
        judge=BreakerOpens(),
    ),
    Phase(
        name="healed",
        title="faults cleared (breaker still open)",
        faults={},
        criterion="first success <= reset_timeout + 1 s after the faults clear; breaker "
        "CLOSED again; Retry-After kept; no 500s",
        judge=Heals(),
        until_closed=True,
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
