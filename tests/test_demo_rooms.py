"""The reference service's rooms: who imports whom, what is exported where, phase judges."""

from __future__ import annotations

import ast
import dataclasses
from collections import Counter
from importlib import resources
from typing import Any

import pytest

from suture.demo import app, config, harness, phases, report, routes, targets, traffic
from suture.demo.phases import (
    PHASES,
    BreakerOpens,
    Heals,
    Measurement,
    PoolCritical,
    Served,
    judge_phase,
)
from suture.demo.report import Tally

DEMO = "suture.demo"


def _demo_modules() -> dict[str, str]:
    """Every module of suture.demo (short name -> source)."""
    root = resources.files(DEMO)
    return {
        item.name.removesuffix(".py"): item.read_text("utf-8")
        for item in root.iterdir()
        if item.name.endswith(".py") and item.name != "__init__.py"
    }


def _imports(source: str) -> set[str]:
    """The suture.demo modules a source imports, at any level (functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == DEMO:
                found.update(alias.name for alias in node.names)
            elif node.module.startswith(DEMO + "."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(DEMO + "."):
                    found.add(alias.name.split(".")[2])
    return found


def test_the_app_and_the_harness_do_not_import_each_other() -> None:
    sources = _demo_modules()
    assert "harness" not in _imports(sources["app"])
    assert "app" not in _imports(sources["harness"])


def test_the_demo_rooms_import_without_a_cycle() -> None:
    graph = {name: _imports(src) & set(_demo_modules()) for name, src in _demo_modules().items()}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join((*path, name))
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, (*path, name))
        done.add(name)

    for name in sorted(graph):
        visit(name, ())


def test_only_the_wiring_and_the_database_edge_read_the_database_url() -> None:
    readers = {name for name, src in _demo_modules().items() if "database_url" in src}
    # config defines it, app passes it once to db.make_engine; the domain, the routes
    # and the dashboard receive an engine or a Database, never the URL.
    assert "config" in readers and "db" in readers
    assert not readers & {"queue", "capture", "dashboard", "routes", "shared", "telemetry"}
    assert _demo_modules()["app"].count("database_url") == 1


@pytest.mark.parametrize("module", [app, harness])
def test_the_old_homes_still_export_every_public_name(module: Any) -> None:
    for name in module.__all__:
        assert hasattr(module, name), (module.__name__, name)


def test_the_names_that_moved_are_the_same_objects() -> None:
    assert harness.Traffic is traffic.Traffic
    assert harness.ASSISTANCE == traffic.ASSISTANCE and harness.MAX_TRAFFIC == traffic.MAX_TRAFFIC
    assert harness.Phase is phases.Phase and harness.Scenario is phases.Scenario
    assert harness.Report is report.Report and harness.format_report is report.format_report
    assert harness.HarnessError is targets.HarnessError
    assert harness.in_process is targets.in_process
    assert app.Settings is config.Settings and app.async_url is config.async_url
    assert routes.MAX_ID == 2**63 - 1


def _measure(**changes: Any) -> Measurement:
    tally = Tally(started=0.0)
    tally.statuses = Counter({200: 100})
    tally.first_success = 0.1
    values: dict[str, Any] = {
        "tally": tally,
        "requests": 100,
        "success_pct": 100.0,
        "status_503": 0,
        "other_5xx": 0,
        "no_500": True,
        "retry_after_pct": None,
        "p50_503": None,
        "delta": {"retries": 3, "shed": 0, "faults": 3, "breaker_rejections": 0},
        "pool_levels": ["NORMAL"],
        "pool_critical_after": None,
        "breaker_opened_after": None,
        "breaker_closed_after": 0.5,
        "reset_timeout": 2.0,
    }
    values.update(changes)
    return Measurement(**values)


def test_a_phase_is_judged_by_its_judge_not_its_name() -> None:
    m = _measure()
    for phase in PHASES:
        renamed = dataclasses.replace(phase, name="renamed-" + phase.name)
        assert judge_phase(renamed, m) == judge_phase(phase, m)


def test_each_phase_carries_a_judge_and_its_criterion() -> None:
    kinds = {p.name: type(p.judge) for p in PHASES}
    assert kinds == {
        "baseline": Served,
        "errors-30": Served,
        "latency": Served,
        "pool-exhausted": PoolCritical,
        "errors-100": BreakerOpens,
        "healed": Heals,
    }
    assert all(p.criterion for p in PHASES)
    assert [p.name for p in PHASES if p.until_closed] == ["healed"]


def test_served_counts_success_and_names_the_retries_when_asked() -> None:
    assert Served()(_measure(success_pct=99.0)).healed
    assert not Served()(_measure(success_pct=98.99)).healed
    assert not Served()(_measure(no_500=False)).healed
    assert Served(show_retries=True)(_measure()).measured == "100.0% success, 3 retries"
    assert Served()(_measure()).measured == "100.0% success"


def test_breaker_opens_wants_fast_503s_with_retry_after() -> None:
    tally = Tally(started=0.0)
    tally.with_retry_after = 95
    fast = _measure(tally=tally, breaker_opened_after=0.2, p50_503=0.001)
    assert BreakerOpens()(fast).healed
    assert not BreakerOpens()(dataclasses.replace(fast, p50_503=0.2)).healed
    assert not BreakerOpens()(dataclasses.replace(fast, breaker_opened_after=None)).healed
    assert BreakerOpens()(fast).measured == (
        "opened after 0.20 s, 95.0% 503 + Retry-After, 503 p50 1.0 ms"
    )


def test_heals_checks_the_promise_of_the_first_503() -> None:
    tally = Tally(started=0.0)
    tally.first_promise = (0.1, 1.0)  # a 503 at 0.1 s said: come back in 1 s
    tally.first_success = 2.0  # ... and the first success came at 2.0 s: too late
    verdict = Heals()(_measure(tally=tally, reset_timeout=1.5))
    assert verdict.retry_after_kept is False and not verdict.healed
    assert verdict.measured.endswith("Retry-After 1 s NOT kept")
    tally.first_success = 1.2
    verdict = Heals()(_measure(tally=tally, reset_timeout=1.5))
    assert verdict.retry_after_kept is True and verdict.healed
    assert verdict.breaker_closed_after == 0.5


def test_pool_critical_wants_the_monitor_to_see_it() -> None:
    seen = _measure(pool_levels=["NORMAL", "CRITICAL"], pool_critical_after=0.4)
    assert PoolCritical()(seen).healed
    assert not PoolCritical()(dataclasses.replace(seen, pool_levels=["NORMAL"])).healed
    assert not PoolCritical()(dataclasses.replace(seen, retry_after_pct=50.0)).healed


def test_a_500_is_named_whatever_the_phase() -> None:
    tally = Tally(started=0.0)
    tally.transport_errors = 1
    m = _measure(tally=tally, no_500=False, other_5xx=2)
    for phase in PHASES:
        verdict = judge_phase(phase, m)
        assert not verdict.healed
        assert verdict.measured.endswith("; 2 other 5xx, 1 transport errors")
