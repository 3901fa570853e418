"""The shipped Grafana dashboard against a real Prometheus scraping the demo during an outage.

``scripts/grafana_preview.py`` starts ``suture demo`` and Prometheus (Debian
package ``prometheus``, which ``.ci/run`` installs), plays its fault scenario at
0.4 of its length (about 50 s: long enough that a loaded machine still sees
every phase), and this checks that every target of every panel returns data,
that the shipped alert rules evaluate without error, and that the renderer
draws every panel (the page goes to ``test-artifacts/``).
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import require

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [pytest.mark.slow]


def _load(name: str) -> Any:
    path = ROOT / "scripts" / f"{name}.py"
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


preview = _load("grafana_preview")


@pytest.fixture(scope="module")
def outage() -> Iterator[tuple[Any, dict[int, Any], tuple[float, float], list[Any]]]:
    """The stack after the scenario: (stack, data by panel id, time span, phases)."""
    require(shutil.which("prometheus") is not None, "prometheus is not installed (Debian package)")
    board = json.loads(preview.DASHBOARD.read_text())
    with preview.running(traffic=20) as stack:
        start = time.time()
        phases = preview.play(stack, scale=0.4)
        time.sleep(2)
        end = time.time()
        yield stack, preview.evaluate(stack, board, start, end), (start, end), phases


def _finite(points: list[tuple[float, float | None]]) -> bool:
    return any(v is not None and math.isfinite(v) for _, v in points)


def test_every_panel_query_returns_data_from_a_real_scrape(outage: Any) -> None:
    stack, _, (start, end), _ = outage
    board = json.loads(preview.DASHBOARD.read_text())
    empty = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            data = stack.api(
                "/api/v1/query_range",
                query=preview.expression(target["expr"]),
                start=f"{start:.3f}",
                end=f"{end:.3f}",
                step="1s",
            )
            values = [
                (float(t), float(v)) for result in data["result"] for t, v in result["values"]
            ]
            if not _finite(values):
                empty.append((panel["title"], target["refId"], target["expr"]))
    assert not empty, empty


def test_the_outage_shows_where_the_dashboard_says_it_does(outage: Any) -> None:
    _, data, _, _ = outage
    board = json.loads(preview.DASHBOARD.read_text())
    by_title = {p["title"]: data.get(p["id"], []) for p in board["panels"]}

    def peak(title: str, legend: str) -> float:
        points = [v for name, pts in by_title[title] if name == legend for _, v in pts]
        return max((v for v in points if v is not None and math.isfinite(v)), default=0.0)

    assert peak("Breaker state", "database") == 2  # open, on the band
    assert peak("HTTP requests by status class", "5xx") > 1
    assert peak("Calls by outcome", "database rejected") > 1
    assert peak("Error ratio and slow-call ratio", "database errors") > 0.9
    assert peak("Shed requests by priority", "pool NORMAL") > 0
    assert peak("Call latency p50 / p99", "database p99") >= 0.25  # the +300 ms phase


def test_the_shipped_alert_rules_evaluate_without_error(outage: Any) -> None:
    stack = outage[0]
    groups = stack.api("/api/v1/rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == 7
    assert all(rule["health"] == "ok" for rule in rules), [
        (r["name"], r.get("lastError")) for r in rules
    ]


@pytest.mark.browser
def test_the_renderer_draws_every_panel(outage: Any, browser: Any) -> None:
    _, data, span, phases = outage
    board = json.loads(preview.DASHBOARD.read_text())
    page_html = preview.render_page(
        board, data, span, preview.note(phases), {"Breaker": "All", "Route": "All"}
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1480, "height": 900})
    try:
        page.set_content(page_html)
        panels = [p for p in board["panels"] if p["type"] != "row"]
        assert page.locator("section.panel").count() == len(panels)
        drawn = page.locator("section.panel").evaluate_all(
            "els => els.map(e => e.querySelectorAll('polyline, rect').length)"
        )
        assert all(n > 0 for n in drawn), list(
            zip([p["title"] for p in panels], drawn, strict=True)
        )
        page.screenshot(path=str(ARTIFACTS / "grafana-preview.png"), full_page=True)
    finally:
        page.close()
