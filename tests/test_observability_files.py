"""The shipped Grafana dashboard and alert rules name only metrics suture exports."""

from __future__ import annotations

import importlib.resources
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from suture.contrib.prometheus import PrometheusListener

_PACKAGE = importlib.resources.files("suture.contrib")
ALERTS = Path(str(_PACKAGE.joinpath("prometheus/alerts.yml")))
DASHBOARD = Path(str(_PACKAGE.joinpath("grafana/suture.json")))

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
_KEYWORDS |= {"unless", "bool", "offset", "le", "inf", "nan"}


def exported_series() -> set[str]:
    """Every sample name the listener can write, from its ``# TYPE`` lines."""
    lst = PrometheusListener(registry=CollectorRegistry(), subscribe_now=False)
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    for family in lst.registry.collect():  # every family, those without samples yet too
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+", "", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group()
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def alert_expressions() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(re.sub(r"label_values\((\w+),.*\)", r"\1", var["definition"]))
    return exprs


def test_the_name_extraction_itself() -> None:
    expr = 'sum by (name) (rate(a_total{x="b c"}[5m])) / on (name) b and c_bucket > 2'
    assert metric_names(expr) == {"a_total", "b", "c_bucket"}


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_expression_names_only_exported_metrics(source: str) -> None:
    exprs = alert_expressions() if source == "alerts" else dashboard_expressions()
    assert len(exprs) >= 6
    exported = exported_series()
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        assert names <= exported, (expr, names - exported)


def test_the_rules_cover_what_the_issue_asks() -> None:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    alerts = {rule["alert"] for rule in rules}
    assert {
        "SutureBreakerOpen",
        "SutureRetryBudgetExhausted",
        "SuturePoolCritical",
        "SutureSheddingHigh",
    } <= alerts
    assert all(rule["annotations"]["summary"] for rule in rules)


def test_the_dashboard_has_the_panels_a_user_needs() -> None:
    board = json.loads(DASHBOARD.read_text())
    titles = [p["title"] for p in board["panels"]]
    assert titles[1] == "HTTP requests by status class"  # after the first row
    kinds = {p["type"] for p in board["panels"]}
    assert "state-timeline" in kinds
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for p in board["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_check_rules() -> None:
    out = subprocess.run(
        ["promtool", "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 7 rules found" in out.stdout
