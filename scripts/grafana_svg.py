"""Draw a Grafana dashboard's panels as one self-contained HTML page with inline SVG.

Not Grafana: a small renderer for ``scripts/grafana_preview.py``, which has no
Grafana to run (none is packaged for this machine). It follows the dashboard
JSON where it can: panels at their ``gridPos`` (24 columns, 30 px rows), rows
as section titles, the panel's title, unit (``reqps``, ``ops``, ``s``,
``percentunit``, ``short``), ``min``/``max``, value mappings and threshold
colours for a state timeline, colour overrides by name or regular expression,
legends from ``legendFormat``; time on the x axis as time of day (UTC). Series
are ``(legend, [(unix seconds, value or None), ...])``; ``None`` is a gap.
"""

from __future__ import annotations

import html
import math
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

Point = tuple[float, float | None]
Series = tuple[str, list[Point]]

PAGE_WIDTH = 1480
PAD = 16
ROW_PX = 30  # Grafana's grid row height
GAP = 8
HEADER_PX = 92
# Grafana's classic palette, and the colour names the dashboard's overrides use.
PALETTE = ("#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9")
NAMED = {
    "green": "#73BF69",
    "yellow": "#FADE2A",
    "orange": "#FF9830",
    "red": "#F2495C",
    "purple": "#B877D9",
    "blue": "#5794F2",
    "text": "#CCCCDC",
}
CSS = """
body { margin: 0; background: #111217; color: #ccccdc;
       font: 13px Inter, "Helvetica Neue", Arial, sans-serif; }
.page { position: relative; width: %(width)dpx; }
.top { padding: 12px %(pad)dpx 0; height: %(header)dpx; box-sizing: border-box; }
.top h1 { display: inline-block; margin: 0 20px 0 0; font-size: 18px; font-weight: 500;
          color: #d8d9da; vertical-align: middle; }
.vars { display: inline-block; vertical-align: middle; }
.vars span { display: inline-block; margin-right: 8px; padding: 2px 8px; border: 1px solid #34373d;
             border-radius: 2px; background: #181b1f; font-size: 12px; }
.vars b { color: #8e8e8e; font-weight: 400; margin-right: 6px; }
.note { margin-top: 8px; color: #9fa7b3; font-size: 12px; line-height: 1.45; }
.note b { color: #ccccdc; font-weight: 500; }
.panel { position: absolute; box-sizing: border-box; background: #181b1f;
         border: 1px solid #2b2e33; border-radius: 2px; }
.panel h2 { margin: 0; padding: 6px 8px 0; font-size: 13px; font-weight: 500; color: #ccccdc;
            white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.row { position: absolute; font-size: 15px; font-weight: 500; color: #d8d9da; }
.legend { position: absolute; left: 8px; right: 8px; bottom: 4px; font-size: 11px;
          line-height: 15px; overflow: hidden; }
.legend i { display: inline-block; width: 14px; height: 3px; margin: 0 4px 3px 0;
            vertical-align: middle; }
.legend span { margin-right: 12px; white-space: nowrap; }
svg text { fill: #9fa7b3; font-size: 10.5px; }
"""


def color_for(panel: dict[str, Any], legend: str, index: int) -> str:
    """The override colour for ``legend`` (byName, byRegexp), else the palette's next."""
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        matcher = override.get("matcher", {})
        kind, option = matcher.get("id"), str(matcher.get("options", ""))
        hit = legend == option if kind == "byName" else bool(re.fullmatch(option, legend))
        if kind in {"byName", "byRegexp"} and hit:
            for prop in override.get("properties", []):
                if prop.get("id") == "color":
                    fixed = prop["value"].get("fixedColor", "")
                    return NAMED.get(fixed, fixed)
    return PALETTE[index % len(PALETTE)]


def fmt(value: float, unit: str) -> str:
    """A tick label in the panel's unit."""
    if unit == "percentunit":
        return f"{value * 100:.0f}%"
    if unit == "s":
        if value == 0:
            return "0 s"
        if abs(value) < 1e-3:
            return f"{value * 1e6:.0f} µs"
        if abs(value) < 1:
            return f"{value * 1e3:.0f} ms"
        return f"{value:.3g} s"
    text = f"{value / 1000:.3g}K" if abs(value) >= 1000 else f"{value:.3g}"
    return {"reqps": f"{text} req/s", "ops": f"{text} ops/s"}.get(unit, text)


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """0 and round steps up to at least ``top``."""
    if top <= 0 or not math.isfinite(top):
        top = 1.0
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t))


def _time_axis(x0: float, x1: float, t0: float, t1: float, y: float, top: float) -> list[str]:
    out = []
    span = max(t1 - t0, 1.0)
    step = next(s for s in (5, 10, 15, 20, 30, 60, 120, 300, 600) if span / s <= 7)
    t = math.ceil(t0 / step) * step
    while t <= t1:
        x = x0 + (t - t0) / span * (x1 - x0)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{y}" stroke="#25282d"/>')
        if x + 24 <= x1 + 8:  # a label that would run off the panel is left out
            out.append(f'<text x="{x:.1f}" y="{y + 13}" text-anchor="middle">{_clock(t)}</text>')
        t += step
    return out


def _runs(points: Sequence[Point]) -> Iterable[list[tuple[float, float]]]:
    """The points split at gaps (``None``, NaN) into drawable runs."""
    run: list[tuple[float, float]] = []
    for t, v in points:
        if v is None or not math.isfinite(v):
            if run:
                yield run
            run = []
        else:
            run.append((t, v))
    if run:
        yield run


def timeseries(panel: dict[str, Any], series: list[Series], w: float, h: float, span: Any) -> str:
    """An SVG time-series chart: y ticks in the panel's unit, one line per series."""
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit = str(defaults.get("unit", "short"))
    t0, t1 = span
    values = [v for _, pts in series for _, v in pts if v is not None and math.isfinite(v)]
    top = max(values, default=0.0)
    if "max" in defaults:  # a hard max, as Grafana draws it
        top = float(defaults["max"])
    ticks = nice_ticks(top)
    ymax = ticks[-1]
    left, right, up, down = 64.0, w - 10.0, 8.0, h - 18.0
    parts = [f'<svg width="{w:.0f}" height="{h:.0f}" xmlns="http://www.w3.org/2000/svg">']
    for tick in ticks:
        y = down - tick / ymax * (down - up)
        parts.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#25282d"/>')
        label = html.escape(fmt(tick, unit))
        parts.append(f'<text x="{left - 6}" y="{y + 3.5:.1f}" text-anchor="end">{label}</text>')
    parts += _time_axis(left, right, t0, t1, down, up)
    for index, (legend, points) in enumerate(series):
        color = color_for(panel, legend, index)
        for run in _runs(points):
            xy = " ".join(
                f"{left + (t - t0) / max(t1 - t0, 1) * (right - left):.1f},"
                f"{down - min(v, ymax) / ymax * (down - up):.1f}"
                for t, v in run
            )
            parts.append(
                f'<polyline points="{xy}" fill="none" stroke="{color}" stroke-width="1.6" '
                'stroke-linejoin="round"/>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _mapping(panel: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Value -> (text, colour) from the panel's value mappings."""
    out: dict[str, tuple[str, str]] = {}
    for mapping in panel.get("fieldConfig", {}).get("defaults", {}).get("mappings", []):
        for value, option in mapping.get("options", {}).items():
            color = str(option.get("color", "text"))
            out[str(value)] = (str(option.get("text", value)), NAMED.get(color, color))
    return out


def state_timeline(
    panel: dict[str, Any], series: list[Series], w: float, h: float, span: Any
) -> str:
    """One band per series, coloured by the panel's value mappings, with the state named."""
    mapping = _mapping(panel)
    t0, t1 = span
    left, right, up, down = 110.0, w - 10.0, 6.0, h - 18.0
    band = (down - up) / max(len(series), 1)
    parts = [f'<svg width="{w:.0f}" height="{h:.0f}" xmlns="http://www.w3.org/2000/svg">']
    parts += _time_axis(left, right, t0, t1, down, up)

    def x(t: float) -> float:
        return left + (t - t0) / max(t1 - t0, 1) * (right - left)

    for row, (legend, points) in enumerate(series):
        y = up + row * band + 2
        parts.append(
            f'<text x="{left - 8}" y="{y + band / 2 + 2:.1f}" text-anchor="end" '
            f'style="font-size:12px;fill:#ccccdc">{html.escape(legend)}</text>'
        )
        known = [(t, v) for t, v in points if v is not None and math.isfinite(v)]
        for i, (t, v) in enumerate(known):
            if i and known[i - 1][1] == v:
                continue  # drawn as part of the run that starts earlier
            j = i
            while j + 1 < len(known) and known[j + 1][1] == v:
                j += 1
            end = known[j + 1][0] if j + 1 < len(known) else t1
            text, color = mapping.get(f"{v:g}", (f"{v:g}", "#5794F2"))
            xa, xb = x(t), x(end)
            parts.append(
                f'<rect x="{xa:.1f}" y="{y:.1f}" width="{max(xb - xa, 1):.1f}" '
                f'height="{band - 4:.1f}" fill="{color}" fill-opacity="0.85"/>'
            )
            if xb - xa > 8 * len(text) + 8:
                parts.append(
                    f'<text x="{(xa + xb) / 2:.1f}" y="{y + band / 2 + 2:.1f}" '
                    'text-anchor="middle" style="font-size:12px;fill:#111217;font-weight:600">'
                    f"{html.escape(text)}</text>"
                )
    parts.append("</svg>")
    return "".join(parts)


def _legend(panel: dict[str, Any], series: list[Series]) -> str:
    if panel["type"] == "state-timeline":
        items = [(text, color) for text, color in _mapping(panel).values()]
    else:
        items = [(legend, color_for(panel, legend, i)) for i, (legend, _) in enumerate(series)]
    spans = "".join(
        f'<span><i style="background:{c}"></i>{html.escape(t)}</span>' for t, c in items
    )
    return f'<div class="legend">{spans or "<span>No data</span>"}</div>'


def render_page(
    board: dict[str, Any],
    data: dict[int, list[Series]],
    span: tuple[float, float],
    note: str,
    variables: dict[str, str],
) -> str:
    """The whole dashboard as HTML: header, rows and panels at their grid positions."""
    cell = (PAGE_WIDTH - 2 * PAD + GAP) / 24
    out = []
    bottom = 0.0
    for panel in board["panels"]:
        pos = panel["gridPos"]
        left = PAD + pos["x"] * cell
        top = HEADER_PX + pos["y"] * ROW_PX
        width = pos["w"] * cell - GAP
        height = pos["h"] * ROW_PX - GAP
        bottom = max(bottom, top + height)
        title = html.escape(panel["title"])
        if panel["type"] == "row":
            out.append(
                f'<div class="row" style="left:{left:.0f}px;top:{top + 4:.0f}px">⌄ {title}</div>'
            )
            continue
        series = data.get(panel["id"], [])
        legend_lines = (
            1 if panel["type"] == "state-timeline" else max(1, math.ceil(len(series) / 4))
        )
        chart_h = height - 30 - 15 * legend_lines - 4
        draw = state_timeline if panel["type"] == "state-timeline" else timeseries
        svg = draw(panel, series, width - 2, chart_h, span)
        out.append(
            f'<section class="panel" style="left:{left:.0f}px;top:{top:.0f}px;'
            f'width:{width:.0f}px;height:{height:.0f}px"><h2>{title}</h2>'
            f'<div style="margin-top:4px">{svg}</div>{_legend(panel, series)}</section>'
        )
    pills = "".join(
        f"<span><b>{html.escape(k)}</b>{html.escape(v)}</span>" for k, v in variables.items()
    )
    head = (
        f'<div class="top"><h1>{html.escape(board["title"])}</h1><div class="vars">{pills}</div>'
        f'<div class="note">{note}</div></div>'
    )
    style = CSS % {"width": PAGE_WIDTH, "pad": PAD, "header": HEADER_PX}
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(board['title'])}</title><style>{style}</style></head><body>"
        f'<div class="page" style="height:{bottom + PAD:.0f}px">{head}{"".join(out)}</div>'
        "</body></html>"
    )
