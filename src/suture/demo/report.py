"""What the chaos harness records and prints: answers, per-phase results, the report.

:class:`Tally` counts every answer of a phase; :class:`PhaseResult` holds a
phase's numbers and verdict; :class:`Report` the whole run, and
:func:`format_report` prints it as two tables (numbers, then verdicts).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field, fields
from typing import Any

import httpx

__all__ = [
    "PhaseResult",
    "Report",
    "Tally",
    "format_report",
    "millis",
    "percent",
    "percentile",
    "rounded",
    "seconds",
]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(slots=True)
class Tally:
    """Every answer of one phase, as the workers record them."""

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


def percent(n: int, of: int) -> float:
    """``n`` as a percentage of ``of``, two decimals (0 when ``of`` is 0)."""
    return round(100.0 * n / of, 2) if of else 0.0


def millis(value: float | None) -> float | None:
    """Seconds as milliseconds, one decimal."""
    return round(value * 1000, 1) if value is not None else None


def rounded(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def seconds(value: float | None) -> str:
    return f"{value:.2f} s" if value is not None else "never"


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
        f"{p.name} {seconds(p.recovered_after)}"
        for p in report.phases
        if p.recovered_after is not None
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
