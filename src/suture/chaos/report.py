# Over ~400 lines on purpose: terminal, files and HTML (its SVG) share one run model.
"""What a chaos run leaves: a terminal summary, ``report.html``, ``report.json``, CSVs.

Standard library only. The HTML is one self-contained file: inline CSS and
hand-written SVG, no script and nothing fetched, so it opens anywhere, also
offline. Each scenario shows its criteria (each with the value measured with
suture, and without) and one plot per run, with and without suture side by
side, on one time axis: requests by outcome, latency, dependency attempts and
the breaker's state as a band (one band per service worker when there are
several), the fault steps shaded.

The CSV of a run has one row per second and the columns of :data:`COLUMNS`,
in that order (documented in ``docs/chaos.md``; a new column is only ever
added at the end).
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from suture.chaos.results import COLUMNS, RunResult, Session

__all__ = ["COLUMNS", "csv_name", "summary", "write_report"]

OUTCOME_COLORS = (
    ("req_ok", "#2e7d32", "2xx"),
    ("req_4xx", "#1565c0", "4xx"),
    ("req_503", "#ef6c00", "503"),
    ("req_500", "#c62828", "500"),
    ("req_timeout", "#6a1b9a", "client timeout"),
    ("req_error", "#616161", "transport error"),
)
BREAKER_COLORS = {"closed": "#a5d6a7", "half_open": "#fff59d", "open": "#ef9a9a"}


def csv_name(result: RunResult) -> str:
    return f"{result.scenario.name}-{result.mode}.csv"


# --- the terminal ------------------------------------------------------------------


def _fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}{unit}"


def _pairs(session: Session) -> list[tuple[RunResult, RunResult | None]]:
    out: list[tuple[RunResult, RunResult | None]] = []
    for result in session.results:
        if result.mode != "suture":
            continue
        naive = next(
            (
                r
                for r in session.results
                if r.mode == "naive" and r.scenario.name == result.scenario.name
            ),
            None,
        )
        out.append((result, naive))
    return out


def _verdict(result: RunResult) -> str:
    if result.error:
        return "ERROR"
    if result.partial:
        return "PARTIAL"
    return "HELD" if result.held else "FAILED"


def summary(session: Session, *, width: int = 100) -> str:
    """One line per scenario (with vs without), then each criterion: within ``width`` columns."""
    lines = [
        f"{'scenario':<20} {'verdict':<8} {'goodput with/without':<22}"
        f"{'amplification':<16}{'recovery':<14}",
        "-" * min(width, 80),
    ]

    def both(
        with_: RunResult, without: RunResult | None, metric: str, unit: str, digits: int = 1
    ) -> str:
        a = with_.value(metric)
        b = without.value(metric) if without is not None else None
        return f"{_fmt(a, unit, digits)} / {_fmt(b, unit, digits)}"

    for with_, without in _pairs(session):
        good = (
            f"{_fmt(with_.goodput(), '%')} / "
            f"{_fmt(without.goodput() if without is not None else None, '%')}"
        )
        lines.append(
            f"{with_.scenario.name[:20]:<20} {_verdict(with_):<8} {good:<22}"
            f"{both(with_, without, 'amplification', 'x', 2):<16}"
            f"{both(with_, without, 'recovery', ' s'):<14}"
        )
    lines.append("")
    for with_, without in _pairs(session):
        lines.append(f"{with_.scenario.name}: {with_.scenario.title}"[:width])
        if with_.error:
            lines.append(f"  error: {with_.error}"[:width])
        for judged in with_.judged:
            other = None
            if without is not None:
                other = next((j for j in without.judged if j.criterion == judged.criterion), None)
            unit = _unit(judged.criterion.metric)
            value = f"{_fmt(judged.value, unit, 2)}"
            naive = f" (without: {_fmt(other.value if other else None, unit, 2)})"
            mark = "ok " if judged.held else "NO "
            text = judged.criterion.describe()
            room = width - len(mark) - 2 - len(value) - len(naive) - 2
            lines.append(f"  {mark}{text[:room]}: {value}{naive}"[:width])
    held = session.held
    lines.append(
        "verdict: every criterion held with suture"
        if held
        else "verdict: interrupted (partial report)"
        if session.interrupted
        else "verdict: a criterion did not hold with suture"
    )
    return "\n".join(line[:width] for line in lines)


def _unit(metric: str) -> str:
    from suture.chaos.scenarios import METRICS

    unit = METRICS[metric].unit
    return unit


# --- the files ---------------------------------------------------------------------


def write_report(session: Session, directory: str | Path) -> Path:
    """``report.html``, ``report.json`` and one CSV per run in ``directory``; the HTML's path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for result in session.results:
        with (out / csv_name(result)).open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            for row in result.rows:
                writer.writerow({k: "" if row[k] is None else row[k] for k in COLUMNS})
    data = {
        "held": session.held,
        "interrupted": session.interrupted,
        "columns": list(COLUMNS),
        "runs": [
            {**r.as_dict(), "csv": csv_name(r), "definition": r.scenario.as_dict()}
            for r in session.results
        ],
    }
    (out / "report.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    page = out / "report.html"
    page.write_text(render_html(session), encoding="utf-8")
    return page


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1220px;color:#212121;
padding:0 12px}h1{font-size:22px}h2{font-size:18px;margin-top:36px;border-top:1px solid #ddd;
padding-top:16px}table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;
border-bottom:1px solid #eee;text-align:left}td.n{text-align:right;font-variant-numeric:
tabular-nums}.held{color:#2e7d32;font-weight:600}.failed{color:#c62828;font-weight:600}
.runs{display:flex;flex-wrap:wrap;gap:16px}.run{flex:1 1 580px}.run h3{font-size:15px;
margin:8px 0}.note{color:#616161}.legend span{display:inline-block;margin-right:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
"""


def render_html(session: Session) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        "<title>suture chaos report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>suture chaos report</h1>",
        f"<p class='{'held' if session.held else 'failed'}'>",
        e(
            "Every criterion held with suture."
            if session.held
            else "Interrupted: a partial report."
            if session.interrupted
            else "A criterion did not hold with suture."
        ),
        "</p><p class='note'>Each scenario ran twice against the same reference service "
        "(a real uvicorn process, PostgreSQL behind suture's fault proxy) with the same load "
        "(closed-loop browsers in another process): <b>with suture</b>'s policies, and "
        "<b>without</b>: the founding spec's design (3 attempts 1 s then 2 s apart without "
        "jitter, a breaker of 5 consecutive failures with an unbounded half-open and a 30 s "
        "open time, the browser retrying 3 times on top). Criteria are judged on the run with "
        "suture; the value without is shown beside each.</p>",
        "<pre>",
        e(summary(session)),
        "</pre>",
        _legend(),
    ]
    for with_, without in _pairs(session):
        s = with_.scenario
        parts.append(f"<h2 id='{e(s.name)}'>{e(s.name)}: {e(s.title)}</h2>")
        steps = ", ".join(
            f"{st.name} {st.seconds:g} s ({_where(st)}{_step_fault({**st.faults, **st.injected})})"
            for st in s.steps
        )
        parts.append(
            f"<p class='note'>Steps: {e(steps)}. Load: {s.workers} browsers, at most "
            f"{s.rate:g} clicks/s, {s.write_share:.0%} writes{e(_spread(s))}. Service: "
            f"{e(', '.join(f'{k}={v}' for k, v in sorted(s.service.items())))}.</p>"
        )
        parts.append(
            "<table><tr><th>criterion</th><th>limit</th><th>with suture</th><th></th>"
            "<th>without</th></tr>"
        )
        for judged in with_.judged:
            other = None
            if without is not None:
                other = next((j for j in without.judged if j.criterion == judged.criterion), None)
            unit = _unit(judged.criterion.metric)
            parts.append(
                f"<tr><td>{e(judged.criterion.describe())}</td>"
                f"<td>{e(judged.criterion.limit_text())}</td>"
                f"<td class='n'>{e(_fmt(judged.value, unit, 2))}</td>"
                f"<td class='{'held' if judged.held else 'failed'}'>"
                f"{'held' if judged.held else 'not held'}</td>"
                f"<td class='n'>{e(_fmt(other.value if other else None, unit, 2))}</td></tr>"
            )
        parts.append("</table><div class='runs'>")
        for run in (with_, without):
            if run is None:
                continue
            label = "with suture" if run.mode == "suture" else "without (naive)"
            extra = f" ({_verdict(run).lower()})" if run.partial or run.error else ""
            parts.append(
                f"<div class='run'><h3>{e(label)}{e(extra)}: goodput "
                f"{e(_fmt(run.goodput(), '%'))}, {run.acked_writes} acknowledged writes, "
                f"{run.lost_writes} lost, {run.duplicated_writes} duplicated</h3>"
            )
            parts.append(plot_svg(run.rows, title=f"{s.name} {label}"))
            parts.append(f"<p class='note'>Per-second data: <code>{e(csv_name(run))}</code></p>")
            parts.append("</div>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)


def _where(step: Any) -> str:
    """Which proxy a step with faults sets, when it is not every worker's database."""
    if not step.faults and not step.injected:
        return ""
    if step.dependency == "redis":
        return "Redis: "
    return "" if step.worker is None else f"worker {step.worker}'s database: "


def _spread(s: Any) -> str:
    if s.service_workers == 1:
        return ""
    return (
        f", spread round robin over {s.service_workers} service workers (each its own "
        "process and database proxy, sharing their breaker through Redis behind one more proxy)"
    )


def _step_fault(faults: Mapping[str, Any]) -> str:
    if not faults:
        return "healthy"
    return ", ".join(f"{k}={v}" for k, v in faults.items())


def _legend() -> str:
    items = [
        f"<span><i style='background:{c}'></i>{label}</span>" for _, c, label in OUTCOME_COLORS
    ]
    items += [
        f"<span><i style='background:{c}'></i>breaker {name.replace('_', '-')}</span>"
        for name, c in BREAKER_COLORS.items()
    ]
    items.append("<span><i style='background:#e0e0e0'></i>fault step</span>")
    return f"<p class='legend'>{''.join(items)}</p>"


def _steps(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, int, int]]:
    """(step, fault, first t, last t) runs of consecutive rows."""
    out: list[tuple[str, str, int, int]] = []
    for row in rows:
        if out and out[-1][0] == row["step"]:
            name, fault, start, _ = out[-1]
            out[-1] = (name, fault, start, int(row["t"]))
        else:
            out.append((row["step"], row["fault"], int(row["t"]), int(row["t"])))
    return out


def plot_svg(  # noqa: C901 - four panels drawn in turn on one time axis
    rows: Sequence[Mapping[str, Any]], *, title: str
) -> str:
    """One run on one time axis: requests by outcome, latency, attempts, breaker band."""
    e = html.escape
    width, left, right = 580, 52, 10
    panels = (
        ("requests / s by outcome", 120),
        ("request latency ms (log)", 90),
        ("per second", 80),
        ("", 16 * len(_bands(rows))),
    )
    gap, top = 14, 8
    height = top + sum(h for _, h in panels) + gap * (len(panels) - 1) + 24
    n = max(1, len(rows))
    plot_w = width - left - right
    bar = plot_w / n

    def x(i: float) -> float:
        return left + i * bar

    svg = [
        f"<svg xmlns='http://www.w3.org/2000/svg' role='img' class='plot' width='{width}' "
        f"height='{height}' viewBox='0 0 {width} {height}' font-size='10' "
        f"font-family='system-ui,sans-serif'><title>{e(title)}</title>"
    ]
    total_h = sum(h for _, h in panels) + gap * (len(panels) - 1)
    index = {int(r["t"]): i for i, r in enumerate(rows)}
    for _, fault, start, stop in _steps(rows):
        if fault in ("none", "pass"):
            continue
        i0, i1 = index[start], index[stop] + 1
        svg.append(
            f"<rect x='{x(i0):.1f}' y='{top}' width='{(i1 - i0) * bar:.1f}' height='{total_h}' "
            f"fill='#e0e0e0' opacity='0.6'/><text x='{x(i0) + 3:.1f}' y='{top + 22}' "
            f"fill='#424242'>{e(fault)}</text>"
        )
    y0 = top
    # 1. clicks by outcome, stacked
    label, h = panels[0]
    peak = max([sum(r[k] for k, _, _ in OUTCOME_COLORS) for r in rows] + [1])
    svg.append(_axis(left, y0, plot_w, h, label, peak))
    for i, r in enumerate(rows):
        base = y0 + h
        for key, color, _ in OUTCOME_COLORS:
            value = r[key]
            if not value:
                continue
            hh = h * value / peak
            base -= hh
            svg.append(
                f"<rect x='{x(i) + 0.5:.1f}' y='{base:.1f}' width='{max(bar - 1, 0.5):.1f}' "
                f"height='{hh:.1f}' fill='{color}'/>"
            )
    y0 += h + gap
    # 2. latency p50 / p99, log scale from 1 ms
    label, h = panels[1]
    highest = max([r["req_p99_ms"] or 0 for r in rows] + [10.0])
    decades = max(1, math.ceil(math.log10(highest)))
    svg.append(_axis(left, y0, plot_w, h, label, 10.0**decades, log=True))
    for key, color in (("req_p50_ms", "#1565c0"), ("req_p99_ms", "#c62828")):
        for points in _segments(
            rows,
            key,
            lambda i, v: (x(i + 0.5), y0 + h - h * math.log10(max(v, 1.0)) / decades),
        ):
            svg.append(_line(points, color))
    svg.append(
        f"<text x='{left + plot_w - 4}' y='{y0 + 10}' text-anchor='end'>"
        "<tspan fill='#1565c0'>p50</tspan> <tspan fill='#c62828'>p99</tspan></text>"
    )
    y0 += h + gap
    # 3. dependency attempts (and the requests sent, for scale)
    label, h = panels[2]
    peak = max([r["db_attempts"] or 0 for r in rows] + [r["sent"] for r in rows] + [1])
    svg.append(_axis(left, y0, plot_w, h, label, peak))
    for key, color, dash in (("sent", "#9e9e9e", True), ("db_attempts", "#4e342e", False)):
        for points in _segments(rows, key, lambda i, v: (x(i + 0.5), y0 + h - h * v / peak)):
            svg.append(_line(points, color, dashed=dash))
    svg.append(
        f"<text x='{left + plot_w - 4}' y='{y0 + 10}' text-anchor='end'>"
        "<tspan fill='#4e342e'>database attempts</tspan> "
        "<tspan fill='#757575'>requests sent</tspan></text>"
    )
    y0 += h + gap
    # 4. the breaker's state as a band, one per service worker (labelled w0, w1, ...)
    for label, states in _bands(rows):
        svg.append(f"<text x='{left - 4}' y='{y0 + 11}' text-anchor='end'>{e(label)}</text>")
        for i, state in enumerate(states):
            color = BREAKER_COLORS.get(str(state), "#ffffff")
            svg.append(
                f"<rect x='{x(i):.1f}' y='{y0}' width='{bar + 0.2:.1f}' height='15' "
                f"fill='{color}'/>"
            )
        y0 += 16
    # the time axis
    step = max(1, round(n / 10))
    for i in range(0, len(rows), step):  # none when a run was cut before its first second
        svg.append(
            f"<text x='{x(i + 0.5):.1f}' y='{y0 + 14}' text-anchor='middle'>{rows[i]['t']}</text>"
        )
    svg.append(f"<text x='{left + plot_w}' y='{y0 + 14}' text-anchor='end'>s</text>")
    svg.append("</svg>")
    return "".join(svg)


def _bands(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[str | None]]]:
    """(label, state per row) of each breaker band: "breaker", or "w0", "w1", ... per worker."""
    split = [str(r.get("breakers") or "").split(";") if r.get("breakers") else [] for r in rows]
    workers = max((len(parts) for parts in split), default=0)
    if workers < 2:
        return [("breaker", [r["breaker"] for r in rows])]
    return [
        (
            f"w{w}",  # the legend names the colours; the margin fits a short label
            [parts[w] if w < len(parts) and parts[w] else None for parts in split],
        )
        for w in range(workers)
    ]


def _segments(
    rows: Sequence[Mapping[str, Any]], key: str, at: Any
) -> list[list[tuple[float, float]]]:
    """The points of ``key``, split where a second has no value (no line across a gap)."""
    out: list[list[tuple[float, float]]] = [[]]
    for i, r in enumerate(rows):
        value = r[key]
        if value is None:
            if out[-1]:
                out.append([])
            continue
        out[-1].append(at(i, float(value)))
    return [points for points in out if points]


def _line(points: Sequence[tuple[float, float]], color: str, *, dashed: bool = False) -> str:
    if len(points) == 1:
        px, py = points[0]
        return f"<circle cx='{px:.1f}' cy='{py:.1f}' r='1.8' fill='{color}'/>"
    dash = " stroke-dasharray='3 2'" if dashed else ""
    coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
    return f"<polyline fill='none' stroke='{color}' stroke-width='1.5'{dash} points='{coords}'/>"


def _axis(
    left: float, y: float, w: float, h: float, label: str, peak: float, *, log: bool = False
) -> str:
    e = html.escape
    top_label = f"{peak:g}"
    bottom_label = "1" if log else "0"
    return (
        f"<rect x='{left}' y='{y}' width='{w}' height='{h}' fill='none' stroke='#bdbdbd'/>"
        f"<text x='{left - 4}' y='{y + 8}' text-anchor='end'>{e(top_label)}</text>"
        f"<text x='{left - 4}' y='{y + h}' text-anchor='end'>{bottom_label}</text>"
        f"<text x='{left + 4}' y='{y + 10}' fill='#616161'>{e(label)}</text>"
    )
