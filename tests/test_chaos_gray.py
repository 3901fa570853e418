"""suture chaos: the slow-database and slow-client scenarios (issue 13 with issue 11's figures).

Their data and metrics on synthetic runs, and one short real run of each (with
suture only: the naive run is the same machinery).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
from typing import Any

import pytest

from suture.chaos.results import COLUMNS, Session
from suture.chaos.scenarios import (
    SCENARIOS,
    Criterion,
    RunView,
    Scenario,
    Step,
    Try,
    judge,
    load_scenario_file,
)
from suture.demo.runner import build_rows

# --- the shipped scenarios --------------------------------------------------------------


def test_the_slow_scenarios_and_slow_clients_are_shipped_as_data(tmp_path: pathlib.Path) -> None:
    clients = SCENARIOS["slow-clients"]
    step = {s.name: s for s in clients.steps}["slow-clients"]
    assert step.slow_clients == 60
    assert step.proxy_faults().mode == "pass"  # the database stays healthy
    assert clients.as_dict()["steps"][1]["slow_clients"] == 60
    assert "slow_clients" not in clients.as_dict()["steps"][0]  # 0 is left out
    path = tmp_path / "s.json"
    path.write_text(json.dumps(clients.as_dict()))
    assert load_scenario_file(path) == [clients]
    for name, latency in (("database-slow", 0.3), ("database-slow-2s", 2.0)):
        slow = SCENARIOS[name]
        faults = {s.name: s.proxy_faults() for s in slow.steps}
        assert faults["slow"].latency == latency
        # The limits of the deadline criteria are the service's own deadline.
        deadline_ms = 1000 * slow.service["request_deadline"]
        limits = {c.metric: c.max for c in slow.criteria}
        assert limits["breaker_opens"] == 0
        assert limits.get("p99_ok", deadline_ms) == deadline_ms
        assert limits.get("slowest_ms", deadline_ms + 50) == deadline_ms + 50


def test_the_slow_client_criterion_is_the_servers_header_timeout() -> None:
    from suture.demo.guard import HEADER_TIMEOUT

    limit = {c.metric: c.max for c in SCENARIOS["slow-clients"].criteria}["slow_client_open_s"]
    assert limit == HEADER_TIMEOUT + 1.0


# --- the metrics --------------------------------------------------------------------------


def _row(t: int, step: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS, 0)
    row.update(t=t, step=step, fault="none", breaker="closed", pool_in_use=0.0)
    row.update(values)
    return row


def _view(**fields: Any) -> RunView:
    base: dict[str, Any] = {
        "rows": [
            _row(0, "before"),
            _row(1, "slow", breaker_opens=1),
            _row(2, "slow", breaker_opens=2),
            _row(3, "after"),
        ],
        "step_bounds": [("before", 0.0, 1.0), ("slow", 1.0, 3.0), ("after", 3.0, 4.0)],
        "first_ok_after": {},
        "lost_writes": 0,
        "duplicated_writes": 0,
        "fail_latencies": {},
    }
    return RunView(**{**base, **fields})


def _value(view: RunView, metric: str, step: str | None = "slow") -> float | None:
    return judge(Criterion(metric=metric, step=step, max=1e9), view).value


def test_the_gray_failure_metrics_measure_what_they_say() -> None:
    tries = {
        "before": [Try(0.5, 800.0, 200)],  # 0.3 s of it inside the slow step
        "slow": [
            Try(1.0, 1000.0, 200),
            Try(1.2, 1200.0, 200),
            Try(1.5, 2.0, 503, retry_after=True),
            Try(1.6, 3.0, 503),  # no Retry-After
            Try(2.0, 3040.0, 503, retry_after=True),  # a deadline, answered late
            Try(2.5, 10000.0, None),  # a client timeout: no answer
            Try(2.6, 1.0, 500),
        ],
        "after": [Try(3.1, 20.0, 200)],
    }
    view = _view(tries=tries, slots=2)
    assert _value(view, "breaker_opens") == 3
    assert _value(view, "p99_ok") == 1200.0  # 2xx only
    assert _value(view, "slowest_ms") == 3040.0  # answered ones, whatever the status
    assert _value(view, "unanswered") == 1
    assert _value(view, "without_retry_after") == 1
    # 2xx time within the step: 0.3 + 1.0 + 1.2 = 2.5 slot-seconds of 2 slots x 2 s.
    assert _value(view, "capacity_use") == pytest.approx(62.5)
    assert _value(view, "p99_ok", None) == 1200.0  # the whole run
    # The last failed request sent after the slow step: none (the 200 at 3.1 s).
    assert _value(view, "settled") == 0.0
    late = {**tries, "after": [Try(3.1, 2.0, 503, True), Try(3.6, 9.0, None), Try(3.8, 5.0, 200)]}
    assert _value(_view(tries=late), "settled") == pytest.approx(0.6)
    # Not measurable: no slots known, no tries, no slow clients.
    assert _value(_view(tries=tries), "capacity_use") is None
    assert _value(_view(), "unanswered") is None
    assert _value(_view(), "slow_client_open_s") is None
    assert not judge(Criterion(metric="unanswered", step="slow", max=0), _view()).held


def test_slow_clients_are_judged_on_the_longest_one() -> None:
    view = _view(slow_clients={"slow": [5.01, 5.2, 0.0, 5.1]})
    judged = judge(Criterion(metric="slow_client_open_s", step="slow", max=6.0), view)
    assert (judged.value, judged.held) == (5.2, True)
    kept = _view(slow_clients={"slow": [5.0, 8.0]})  # one left open the whole step
    assert not judge(Criterion(metric="slow_client_open_s", step="slow", max=6.0), kept).held


def test_rows_count_the_breakers_opens_and_name_the_slow_clients() -> None:
    scenario = Scenario(
        name="s",
        title="s",
        steps=(Step(name="before", seconds=1), Step(name="trickle", seconds=2, slow_clients=7)),
    )
    samples = {
        second: {"breaker_opens": opens, "breaker": "closed"}
        for second, opens in ((1000, 4), (1001, 4), (1002, 6), (1003, 6))  # at each start
    }
    rows = build_rows(scenario, 1000.2, {}, samples, 1002.9)
    assert [r["breaker_opens"] for r in rows] == [0, 2, 0]
    assert [r["fault"] for r in rows] == ["none", "7 slow clients", "7 slow clients"]


# --- one short real run of each -------------------------------------------------------------


def _short(scenario: Scenario, seconds: dict[str, float]) -> Scenario:
    steps = tuple(dataclasses.replace(s, seconds=seconds[s.name]) for s in scenario.steps)
    return dataclasses.replace(scenario, steps=steps, grace=1.0)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize(
    ("name", "seconds"),
    [
        ("database-slow", {"before": 1.0, "slow": 5.0, "after": 2.0}),
        ("database-slow-2s", {"before": 1.0, "slow": 5.0, "after": 2.0}),
        # The slow clients need the header timeout (5 s) and a little more.
        ("slow-clients", {"before": 1.0, "slow-clients": 7.0, "after": 1.0}),
    ],
)
def test_a_short_real_run(name: str, seconds: dict[str, float], pg_url: str) -> None:
    from suture.demo.runner import play_all

    scenario = _short(SCENARIOS[name], seconds)
    session = Session(database_url=pg_url.replace("+psycopg", ""))
    asyncio.run(play_all([scenario], session, progress=lambda _: None, modes=("suture",)))
    (result,) = session.results
    assert result.error is None
    judged = {j.criterion.metric: j for j in result.judged}
    # What holds on any machine, however loaded: no 500, no write lost, every 503 with
    # Retry-After, every request answered (timings are the report's, not this test's).
    for metric in ("status_500", "lost_writes", "duplicated_writes"):
        assert judged[metric].held, judged[metric]
    if name == "slow-clients":
        # Each slow client was closed by the server, before the step's end closed it.
        assert judged["slow_client_open_s"].value is not None
        assert judged["slow_client_open_s"].value < seconds["slow-clients"]
        assert any(r["fault"] == "60 slow clients" for r in result.rows)
        return
    assert judged["without_retry_after"].held, judged["without_retry_after"]
    assert judged["breaker_opens"].held, judged["breaker_opens"]  # slow is not failing
    if name == "database-slow-2s":
        assert judged["unanswered"].held, judged["unanswered"]
    else:
        assert judged["p99_ok"].value is not None  # some requests were served
