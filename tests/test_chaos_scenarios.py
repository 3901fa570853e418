"""suture chaos network scenarios: data, judging, rows, the report, and the command line."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from suture import cli
from suture.chaos.report import COLUMNS, summary, write_report
from suture.chaos.results import RunResult, Session
from suture.chaos.scenarios import (
    SCENARIOS,
    Criterion,
    RunView,
    Scenario,
    ScenarioError,
    Step,
    judge,
    load_scenario_file,
    quick_scenarios,
)
from suture.demo.runner import build_rows

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src"

# --- scenarios as data ----------------------------------------------------------------


def test_a_scenario_file_round_trips(tmp_path: pathlib.Path) -> None:
    shipped = list(SCENARIOS.values())
    path = tmp_path / "scenarios.json"
    path.write_text(json.dumps([s.as_dict() for s in shipped]))
    assert load_scenario_file(path) == shipped
    one = tmp_path / "one.json"
    one.write_text(json.dumps(shipped[0].as_dict()))
    assert load_scenario_file(one) == [shipped[0]]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON"),
        ('{"name": "x"}', "needs a name and steps"),
        ('{"name": "x", "steps": [], "colour": 1}', "unknown scenario field(s): colour"),
        ('{"name": "x", "steps": []}', "no steps"),
        (
            '{"name": "x", "steps": [{"name": "a", "seconds": 1, "faults": {"mode": "off"}}]}',
            "step 'a': faults: mode='off'",
        ),
        (
            '{"name": "x", "steps": [{"name": "a", "seconds": -1}]}',
            "seconds=-1 must be within",
        ),
        (
            '{"name": "x", "steps": [{"name": "a", "seconds": 1}], '
            '"criteria": [{"metric": "goodput", "step": "b", "min": 99}]}',
            "names step 'b'",
        ),
        (
            '{"name": "x", "steps": [{"name": "a", "seconds": 1}], '
            '"criteria": [{"metric": "speed", "max": 1}]}',
            "metric='speed'",
        ),
        (
            '{"name": "x", "steps": [{"name": "a", "seconds": 1, "dependency": "redis"}]}',
            "dependency='redis'",
        ),
        (
            '{"name": "x", "steps": [{"name": "a", "seconds": 1, "injected": {"held": 3}}]}',
            "step 'a': injected: unknown held",
        ),
        (
            '{"name": "x", "steps": [{"name": "a", "seconds": 1, '
            '"injected": {"error_rate": 1.5}}]}',
            "injected error_rate=1.5 must be within [0, 1]",
        ),
        (
            '{"name": "x", "steps": [{"name": "a", "seconds": 1, "slow_clients": -1}]}',
            "step 'a': slow_clients=-1 must be a whole number within [0, 500]",
        ),
        (
            '{"name": "x", "steps": [{"name": "a", "seconds": 1, "slow_clients": 2.5}]}',
            "step 'a': slow_clients=2.5 must be a whole number within [0, 500]",
        ),
        (
            '{"name": "x", "steps": [{"name": "a", "seconds": 1, "slow_clients": 501}]}',
            "step 'a': slow_clients=501 must be a whole number within [0, 500]",
        ),
        (
            '{"name": "x", "steps": [{"name": "a", "seconds": 1, "slow_clients": true}]}',
            "step 'a': slow_clients=True must be a whole number within [0, 500]",
        ),
    ],
)
def test_a_malformed_scenario_file_names_its_problem(
    tmp_path: pathlib.Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ScenarioError, match=re.escape(message)):
        load_scenario_file(path)


def test_an_error_storm_is_injected_through_the_admin_endpoint() -> None:
    storm = SCENARIOS["errors-30"]
    assert storm.injects
    assert not SCENARIOS["database-down"].injects
    by_name = {s.name: s for s in storm.steps}
    assert by_name["storm"].admin_body() == {
        "target": "database",
        "errorRate": 0.3,
        "latency": 0.0,
        "hold": 0,
    }
    assert by_name["after"].admin_body()["errorRate"] == 0.0  # each step sets all of them
    assert by_name["storm"].proxy_faults().mode == "pass"  # the network stays healthy


def test_the_quick_set_fits_in_a_minute() -> None:
    quick = quick_scenarios()
    assert {s.name for s in quick} == {"database-down", "database-hanging"}
    assert not SCENARIOS["database-slow"].quick
    # Two runs each; each run's service boots before the first run (about 5 s for all),
    # and each run may take its grace past its steps.
    assert sum(2 * (s.seconds + s.grace) for s in quick) + 5 <= 60


# --- judging ------------------------------------------------------------------------------


def _row(t: int, step: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS, 0)
    row.update(t=t, step=step, fault="none", breaker="closed", pool_in_use=0.0)
    row.update(req_p50_ms=None, req_p99_ms=None, p50_ms=None, p99_ms=None)
    row.update(values)
    return row


def test_each_metric_measures_what_it_says() -> None:
    rows = [
        _row(0, "before", sent=10, clicks=10, ok=10, db_attempts=10),
        _row(1, "outage", sent=10, clicks=10, ok=0, status_503=10, db_attempts=6, breaker="open"),
        _row(2, "outage", sent=10, clicks=10, status_503=10, db_attempts=0, breaker="open"),
        _row(3, "after", sent=10, clicks=10, ok=9, status_500=1, db_attempts=10),
    ]
    # two sent at 1.x s (before the breaker was seen open a full second), 100 at 2.x s
    fails = [(1.5, 900.0), (1.6, 900.0), *((2.0 + i / 100, 2.0 + i / 99) for i in range(100))]
    view = RunView(
        rows=rows,
        step_bounds=[("before", 0, 1), ("outage", 1, 3), ("after", 3, 4)],
        first_ok_after={"before": 0.0, "outage": 2.4, "after": None},
        lost_writes=1,
        duplicated_writes=0,
        fail_latencies={"outage": fails},
    )

    def value(metric: str, step: str | None = None, **limit: float) -> tuple[float | None, bool]:
        judged = judge(Criterion(metric=metric, step=step, **limit), view)
        return judged.value, judged.held

    assert value("amplification", "outage", max=1.1) == (0.3, True)  # 6 attempts / 20 sent
    assert value("goodput", max=100) == (pytest.approx(47.5), True)  # 19 of 40 clicks
    assert value("fast_fail_p99", "outage", max=5) == (pytest.approx(2 + 98 / 99), True)  # not 900
    assert value("recovery", "outage", max=3) == (2.4, True)
    assert value("p99_503", "outage", max=5) == (900.0, False)  # every 503, the slow ones too
    assert value("status_500", max=0) == (1.0, False)
    assert value("lost_writes", max=0) == (1.0, False)
    assert value("duplicated_writes", max=0) == (0.0, True)
    assert value("recovery", "after", max=3) == (None, False)  # not measured: not held


def test_fast_fail_starts_at_the_opening_and_needs_100_samples() -> None:
    rows = [_row(0, "outage", breaker="closed"), _row(1, "outage", breaker="open")]

    def fast_fail(fails: list[tuple[float, float]], opened: float | None) -> float | None:
        view = RunView(
            rows=rows,
            step_bounds=[("outage", 0, 2)],
            first_ok_after={},
            lost_writes=0,
            duplicated_writes=0,
            fail_latencies={"outage": fails},
            opened={"outage": opened},
        )
        return judge(Criterion(metric="fast_fail_p99", step="outage", max=5), view).value

    # The service's own opening time (0.5 s) starts the samples: the 503s sent before it
    # (waiting on the failing attempts that opened it) are not fast failures.
    slow_then_fast = [(0.4, 800.0), *((0.5 + i / 200, 1.0) for i in range(120))]
    assert fast_fail(slow_then_fast, opened=0.5) == 1.0
    # 99 samples: a p99 would be their maximum, so it is not measured (and fails).
    assert fast_fail([(0.6, 1.0)] * 99, opened=0.5) is None
    # Unknown opening: from the second after the rows first show it OPEN (t=1 -> 2).
    assert fast_fail([(2.0 + i / 200, 3.0) for i in range(100)], opened=None) == 3.0
    # Two slow ones in 200 are 1%: the p99 is fast; three are over 1%: it is slow.
    assert fast_fail([(0.6, 2.0)] * 198 + [(0.7, 40.0)] * 2, opened=0.5) == 2.0
    assert fast_fail([(0.6, 2.0)] * 197 + [(0.7, 40.0)] * 3, opened=0.5) == 40.0


# --- rows ---------------------------------------------------------------------------------


def test_rows_are_one_per_second_with_deltas_and_the_step() -> None:
    scenario = Scenario(
        name="s",
        title="s",
        steps=(
            Step(name="before", seconds=1),
            Step(name="outage", seconds=2, faults={"mode": "reset"}),
        ),
    )
    t0 = 1000.2
    lines = {
        1000: {"sent": 3, "clicks": 3, "outcomes": {"ok": 3}, "latencies": [1, 2, 3]},
        1001: {
            "sent": 4,
            "clicks": 2,
            "outcomes": {"503": 2},
            "tries": {"503": 4},
            "try_ms": [1, 1, 2, 9],
        },
    }
    # Each sample is read at the start of its second: a second's count is what the
    # counters gained until the next one (they used to land a second late).
    samples = {
        1000: {"db_calls": 5, "retries": 0, "shed": 0, "proxy_connections": 1, "breaker": "closed"},
        1001: {"db_calls": 8, "retries": 1, "shed": 0, "proxy_connections": 2, "breaker": "closed"},
        1002: {"db_calls": 9, "retries": 4, "shed": 0, "proxy_connections": 7, "breaker": "open"},
        1003: {"db_calls": 9, "retries": 4, "shed": 2, "proxy_connections": 7, "breaker": "open"},
    }
    rows = build_rows(scenario, t0, lines, samples, end=1002.9)
    assert [r["t"] for r in rows] == [0, 1, 2]
    assert [r["step"] for r in rows] == ["before", "outage", "outage"]
    assert [r["fault"] for r in rows] == ["none", "reset", "reset"]
    assert [r["db_attempts"] for r in rows] == [3, 1, 0]
    assert [r["retries"] for r in rows] == [1, 3, 0]
    assert [r["shed"] for r in rows] == [0, 0, 2]
    assert [r["breaker"] for r in rows] == ["closed", "closed", "open"]
    # A missing sample: the earlier second takes the whole gap, the next one is empty.
    del samples[1001]
    rows = build_rows(scenario, t0, lines, samples, end=1002.9)
    assert [r["db_attempts"] for r in rows] == [4, None, 0]
    assert rows[1]["req_503"] == 4
    assert rows[1]["req_p99_ms"] == 9
    assert rows[0]["p50_ms"] == 2
    assert all(list(r) == list(COLUMNS) for r in rows)


# --- the report -------------------------------------------------------------------------

#: The CSV's columns are a public format: this list changes only by adding at the end.
STABLE_COLUMNS = (
    "t",
    "step",
    "fault",
    "sent",
    "req_ok",
    "req_503",
    "req_500",
    "req_4xx",
    "req_timeout",
    "req_error",
    "req_p50_ms",
    "req_p99_ms",
    "clicks",
    "ok",
    "status_503",
    "status_500",
    "status_4xx",
    "timeout",
    "error",
    "p50_ms",
    "p99_ms",
    "db_attempts",
    "proxy_connections",
    "proxy_chunks_up",
    "breaker",
    "pool_in_use",
    "retries",
    "shed",
    "breaker_opens",
    "breakers",
    "worker_sent",
    "worker_req_ok",
    "worker_req_p99_ms",
    "redis_connections",
)


def test_csv_columns_are_stable_and_documented() -> None:
    assert COLUMNS == STABLE_COLUMNS
    docs = (ROOT / "docs" / "chaos.md").read_text()
    for column in COLUMNS:
        assert f"| `{column}` |" in docs, column


def _session() -> Session:
    session = Session(database_url="postgresql://postgres@127.0.0.1:5432/test")
    scenario = SCENARIOS["database-down"]
    for mode, opened in (("suture", 0.3), ("naive", None)):
        result = RunResult(scenario=scenario, mode=mode)
        step_of = ["before"] * 4 + ["outage"] * 8 + ["after"] * 7
        result.rows = [
            _row(
                t,
                step,
                sent=20,
                req_ok=0 if step == "outage" else 20,
                req_503=20 if step == "outage" else 0,
                req_p50_ms=2.0,
                req_p99_ms=9.0 if t % 5 else None,
                clicks=20,
                ok=0 if step == "outage" else 20,
                status_503=20 if step == "outage" else 0,
                db_attempts=1 if step == "outage" else 20,
                breaker="open" if step == "outage" else "closed",
                fault="reset" if step == "outage" else "none",
            )
            for t, step in enumerate(step_of)
        ]
        view = RunView(
            rows=result.rows,
            step_bounds=[(s.name, a, b) for s, a, b in scenario.step_bounds()],
            first_ok_after={"outage": opened},
            lost_writes=0,
            duplicated_writes=0,
            fail_latencies={"outage": [(6.0, 1.0), *((7.0, 2.0),) * 99]},
        )
        result.judged = [judge(c, view) for c in scenario.criteria]
        session.results.append(result)
    return session


def test_summary_fits_100_columns_and_prints_each_criterion_with_its_value() -> None:
    text = summary(_session())
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[2].startswith("database-down        HELD")
    assert "0.05x / 0.05x" in lines[2]  # amplification with / without
    assert "ok database attempts per request during the outage <= 1.1x: 0.05x" in text
    assert "(without: -)" in text  # the naive run never recovered
    assert lines[-1] == "verdict: every criterion held with suture"


def test_a_run_stopped_before_its_first_second_still_has_a_report(tmp_path: pathlib.Path) -> None:
    session = _session()
    session.results[1].rows = []  # Ctrl-C while the load was starting
    session.results[1].partial = True
    session.interrupted = True
    page = write_report(session, tmp_path / "out")
    assert page.read_text().count("class='plot'") == 2


@pytest.mark.browser
def test_the_report_opens_in_chromium_with_one_plot_per_run(
    tmp_path: pathlib.Path, browser: Any
) -> None:
    session = _session()
    page_path = write_report(session, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["held"] is True
    assert data["columns"] == list(COLUMNS)
    assert [r["csv"] for r in data["runs"]] == [
        "database-down-suture.csv",
        "database-down-naive.csv",
    ]
    with (tmp_path / "out" / "database-down-naive.csv").open() as f:
        reader = csv.reader(f)
        assert next(reader) == list(COLUMNS)
        assert len(list(reader)) == 19
    html = page_path.read_text()
    assert "<script" not in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # nothing fetched
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: errors.append(r.url) if not r.url.startswith("file:") else None)
    page.goto(page_path.as_uri())
    assert page.locator("svg.plot").count() == 2  # one per run
    assert page.locator("h2").count() == 1  # one per scenario
    assert page.locator("svg.plot").first.bounding_box()["width"] > 400
    assert errors == []
    page.close()


# --- the command line -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scenario", "nope"], "suture chaos: unknown scenario 'nope'; shipped: database-down"),
        (["--scenario-file", "{missing}"], "suture chaos: cannot read"),
        (["--scenario-file", "{bad}"], "suture chaos: {bad}: not JSON"),
        (["--all", "--database-url", "sqlite:///x.db"], "suture chaos: the network scenarios need"),
        (["--all", "--url", "http://127.0.0.1:1"], "suture chaos: --url drives the in-process"),
    ],
)
def test_chaos_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    paths = {"missing": str(tmp_path / "missing.json"), "bad": str(bad)}
    argv = [a.format(**paths) for a in argv]
    assert cli.main(["chaos", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(message.format(**paths)), err


def test_list_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["chaos", "--list-scenarios"]) == 0
    out = capsys.readouterr().out
    assert "database-down" in out
    assert "database-hanging" in out


def _schemas(pg_dsn: str, tag: str) -> list[str]:
    import psycopg

    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name = %s", (tag,)
        ).fetchall()
    return [r[0] for r in rows]


def _running(text: str, *, parent: int | None = None) -> list[str]:
    """Processes whose command line holds ``text`` (children of ``parent`` only, if given).

    Other work on the machine may run ``suture chaos`` too: a test looks for its own
    processes, the children of the command it started.
    """
    found = []
    for cmdline in pathlib.Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() not in cmdline.read_bytes():
                continue
            if parent is not None:
                stat = (cmdline.parent / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) != parent:
                    continue
            found.append(cmdline.parent.name)
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.browser
def test_a_quick_scenario_end_to_end(pg_url: str, tmp_path: pathlib.Path, browser: Any) -> None:
    out = tmp_path / "report"
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "suture.cli",
            "chaos",
            "--scenario",
            "database-down",
            "--quick",
            "--report",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        check=False,
    )
    assert process.returncode in (0, 1), process.stderr  # 1: a criterion did not hold
    assert "Traceback" not in process.stderr
    data = json.loads((out / "report.json").read_text())
    runs = {r["mode"]: r for r in data["runs"]}
    assert set(runs) == {"suture", "naive"}
    with_ = {c["metric"]: c for c in runs["suture"]["criteria"]}
    # What this machine always shows: no 500, no lost write, recovery within reset + 1 s.
    assert with_["status_500"]["held"]
    assert with_["lost_writes"]["held"]
    assert with_["duplicated_writes"]["held"]
    assert with_["recovery"]["held"], with_["recovery"]
    assert runs["suture"]["acked_writes"] > 0
    # Without suture the breaker stays open 30 s: no success after the outage in the run.
    naive = {c["metric"]: c for c in runs["naive"]["criteria"]}
    assert naive["recovery"]["value"] is None
    steps = {row["step"] for row in runs["suture"]["rows"]}
    assert steps == {"before", "outage", "after"}
    assert any(row["breaker"] == "open" for row in runs["suture"]["rows"])
    for mode in ("suture", "naive"):
        schema = runs[mode]["service"]["schema"]
        assert _schemas(pg_url.replace("+psycopg", ""), schema) == []  # dropped
    assert "verdict:" in process.stdout
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto((out / "report.html").as_uri())
    assert page.locator("svg.plot").count() == 2
    assert errors == []
    shot = os.environ.get("SUTURE_REPORT_SCREENSHOT")
    if shot:  # the docs' picture: SUTURE_REPORT_SCREENSHOT=docs/chaos-report.png
        page.screenshot(path=shot, full_page=True)
    page.close()


@pytest.mark.slow
@pytest.mark.postgres
def test_ctrl_c_restores_stops_and_still_writes_a_partial_report(
    pg_url: str, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "report"
    process = subprocess.Popen(
        [sys.executable, "-m", "suture.cli", "chaos", "--quick", "--report", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    deadline = time.monotonic() + 60
    while not _running("suture.demo.load", parent=process.pid):
        assert time.monotonic() < deadline, "the first run did not start"
        assert process.poll() is None
        time.sleep(0.2)
    time.sleep(3.0)  # into the first run's outage
    started = _running("suture.demo.", parent=process.pid)  # every service, and the load
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    data = json.loads((out / "report.json").read_text())
    assert data["interrupted"] is True
    assert data["runs"][0]["partial"] is True
    assert data["runs"][0]["rows"], "what was measured is kept"
    assert "verdict: interrupted (partial report)" in stdout
    # Every process it started is stopped (the services of the runs not played yet too).
    assert set(_running("suture.demo.")) & set(started) == set()
    for run in data["runs"]:
        assert _schemas(pg_url.replace("+psycopg", ""), run["service"]["schema"]) == []
