"""suture chaos with several service workers: the format, the metrics, rows, report, a run."""

from __future__ import annotations

import asyncio
import io
import json
import pathlib
from contextlib import redirect_stdout
from typing import Any

import pytest

from suture.chaos.report import COLUMNS, plot_svg, write_report
from suture.chaos.results import RunResult, Session
from suture.chaos.scenarios import (
    SCENARIOS,
    Criterion,
    RunView,
    Scenario,
    ScenarioError,
    Step,
    Try,
    judge,
    load_scenario_file,
)
from suture.demo import load
from suture.demo.runner import Stage, _combine, _proxied_redis_url, build_rows, worker_rows

# --- the format --------------------------------------------------------------------------


def _two(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "two",
        "service_workers": 2,
        "steps": [
            {"name": "before", "seconds": 1},
            {"name": "cut", "seconds": 2, "faults": {"mode": "reset"}, "worker": 1},
            {"name": "lost", "seconds": 2, "dependency": "redis", "faults": {"mode": "blackhole"}},
        ],
        "criteria": [{"metric": "request_goodput", "step": "cut", "worker": 0, "min": 99}],
    }
    if "steps" in changes:
        data["criteria"] = []  # they name the steps above
    data.update(changes)
    return data


def test_a_multi_worker_scenario_round_trips(tmp_path: pathlib.Path) -> None:
    scenario = Scenario.from_dict(_two())
    assert scenario.service_workers == 2 and scenario.uses_redis
    assert scenario.steps[1].worker == 1
    assert scenario.steps[2].dependency == "redis"
    assert scenario.criteria[0].worker == 0
    path = tmp_path / "two.json"
    path.write_text(json.dumps(scenario.as_dict()))
    assert load_scenario_file(path) == [scenario]
    # One worker: the field is left out, as before.
    assert "service_workers" not in SCENARIOS["database-down"].as_dict()
    for name in ("redis-lost-reset", "redis-lost-blackhole", "worker-partitioned"):
        shipped = SCENARIOS[name]
        assert shipped.service_workers == 2
        assert Scenario.from_dict(json.loads(json.dumps(shipped.as_dict()))) == shipped


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"service_workers": 0}, "service_workers=0 must be within [1, 8]"),
        ({"service_workers": 9}, "service_workers=9 must be within [1, 8]"),
        ({"service_workers": True}, "service_workers=True must be within [1, 8]"),
        (
            {"service_workers": 1, "steps": [{"name": "a", "seconds": 1, "worker": 1}]},
            "step 'a': worker=1 is out of range (the scenario runs 1 service worker(s): 0..0)",
        ),
        (
            {"steps": [{"name": "a", "seconds": 1, "worker": -1}]},
            "step 'a': worker=-1 must be a worker's index",
        ),
        (
            {"steps": [{"name": "a", "seconds": 1, "worker": "0"}]},
            "step 'a': worker='0' must be a worker's index",
        ),
        (
            {"steps": [{"name": "a", "seconds": 1, "dependency": "redis", "worker": 0}]},
            "step 'a': worker=0 with dependency='redis': the workers share one Redis proxy",
        ),
        (
            {"service_workers": 1, "steps": [{"name": "a", "seconds": 1, "dependency": "redis"}]},
            "step 'a': dependency='redis' needs service_workers >= 2",
        ),
        (
            {"steps": [{"name": "a", "seconds": 1, "dependency": "cache"}]},
            "dependency='cache', expected one of database, redis",
        ),
        (
            {"criteria": [{"metric": "goodput", "worker": 2, "min": 1}]},
            "criterion 'goodput': worker=2 is out of range",
        ),
    ],
)
def test_bad_worker_settings_name_the_problem(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        Scenario.from_dict(_two(**changes))
    assert message in str(caught.value)


# --- the metrics ---------------------------------------------------------------------------


def _row(t: int, step: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS, 0)
    row.update(t=t, step=step, fault="none", breaker="closed", pool_in_use=0.0)
    row.update(req_p50_ms=None, req_p99_ms=None, p50_ms=None, p99_ms=None)
    row.update(breakers=None, worker_sent=None, worker_req_ok=None, worker_req_p99_ms=None)
    row.update(values)
    return row


BOUNDS = [("warm-up", 0, 1), ("before", 1, 2), ("lost", 2, 3)]


def _view(rows: list[dict[str, Any]], **extra: Any) -> RunView:
    values: dict[str, Any] = {
        "rows": rows,
        "step_bounds": BOUNDS,
        "first_ok_after": {},
        "lost_writes": 0,
        "duplicated_writes": 0,
        "fail_latencies": {},
    }
    values.update(extra)
    return RunView(**values)


def test_p99_delta_compares_a_step_with_the_one_before_it() -> None:
    def tries(*ms: float) -> list[Try]:
        return [Try(0.0, value, 200) for value in ms]

    view = _view(
        [],
        tries={
            "warm-up": tries(*[900.0] * 10),  # slow, and not the one compared with
            "before": tries(*[10.0] * 98, 20.0, 20.0),
            "lost": tries(*[10.0] * 98, 26.5, 26.5),
        },
    )

    def value(step: str | None) -> float | None:
        return judge(Criterion(metric="p99_delta", step=step, max=5), view).value

    assert value("lost") == pytest.approx(6.5)
    assert value("before") == pytest.approx(-880.0)
    assert value("warm-up") is None  # no step before it
    assert value(None) is None
    assert judge(Criterion(metric="p99_delta", step="lost", max=5), _view([])).value is None


def test_per_worker_criteria_read_that_workers_view() -> None:
    healthy = _view([_row(2, "lost", req_ok=19, req_503=1), _row(3, "lost", req_ok=20)])
    sick = _view(
        [_row(2, "lost", req_503=10, breaker="open"), _row(3, "lost", req_503=9, req_error=1)],
        first_ok_after={"lost": 1.5},
    )
    whole = _view([_row(2, "lost", req_ok=19, req_503=11)], workers=[sick, healthy])

    def value(metric: str, worker: int | None, **limit: float) -> tuple[float | None, bool]:
        judged = judge(Criterion(metric=metric, step="lost", worker=worker, **limit), whole)
        return judged.value, judged.held

    assert value("request_goodput", 1, min=99) == (pytest.approx(97.5), False)  # 39 of 40
    assert value("request_goodput", 0, min=99) == (0.0, False)
    assert value("request_goodput", None, min=60) == (pytest.approx(19 / 30 * 100), True)
    assert value("recovery", 0, max=3) == (1.5, True)
    assert value("request_goodput", 2, min=1) == (None, False)  # no such worker: not held
    text = Criterion(metric="request_goodput", step="lost", worker=1, min=99).describe()
    assert text == "requests (not clicks) answered 2xx (lost) (worker 1) >= 99%"


# --- rows ------------------------------------------------------------------------------------


def test_rows_of_two_workers_have_each_ones_breaker_and_requests() -> None:
    scenario = Scenario.from_dict(
        _two(steps=[{"name": "before", "seconds": 1}, _two()["steps"][1]], criteria=[])
    )
    t0 = 1000.2

    def part(sent: int, ok: int, ms: list[float]) -> dict[str, Any]:
        return {"sent": sent, "tries": {"ok": ok, "503": sent - ok}, "try_ms": ms}

    lines = {
        1000: {"sent": 4, "tries": {"ok": 4}, "workers": [part(2, 2, [5, 6]), part(2, 2, [7])]},
        1001: {"sent": 4, "tries": {"ok": 2}, "workers": [part(2, 2, [5]), part(2, 0, [1, 2])]},
    }

    def sample(calls: tuple[int, int], states: tuple[str, str]) -> dict[str, Any]:
        each = [
            {"db_calls": calls[i], "breaker": states[i], "pool_in_use": 0.1 * (i + 1)}
            for i in (0, 1)
        ]
        out = _combine(each)
        out.update(workers=each, breakers=";".join(states), redis_connections=3)
        return out

    # Read at the start of each second: a second's count is what it gained until the next.
    samples = {
        1000: sample((1, 1), ("closed", "closed")),
        1001: sample((3, 4), ("closed", "open")),
        1002: sample((5, 4), ("closed", "open")),
    }
    rows = build_rows(scenario, t0, lines, samples, end=1001.9)
    assert [r["fault"] for r in rows] == ["none", "worker 1 reset"]
    assert [r["breakers"] for r in rows] == ["closed;closed", "closed;open"]
    assert [r["breaker"] for r in rows] == ["closed", "closed"]  # worker 0's
    assert [r["db_attempts"] for r in rows] == [5, 2]  # summed over the workers
    assert [r["pool_in_use"] for r in rows] == [0.2, 0.2]  # the fullest pool
    assert [r["worker_sent"] for r in rows] == ["2;2", "2;2"]
    assert [r["worker_req_ok"] for r in rows] == ["2;2", "2;0"]
    assert rows[0]["worker_req_p99_ms"] == "6;7"
    assert [r["redis_connections"] for r in rows] == [0, 0]
    assert all(list(r) == list(COLUMNS) for r in rows)
    each = worker_rows(scenario, t0, lines, samples, end=1001.9)
    assert [[r["breaker"] for r in rows] for rows in each] == [
        ["closed", "closed"],
        ["closed", "open"],
    ]
    assert [r["req_503"] for r in each[1]] == [0, 2]
    assert [r["db_attempts"] for r in each[0]] == [2, 2]
    assert each[0][0]["breakers"] is None  # a worker's own rows: no per-worker columns


def test_a_count_some_worker_did_not_answer_is_left_out() -> None:
    combined = _combine([{"db_calls": 3, "breaker": "open"}, {"breaker": None}])
    assert combined == {"breaker": "open"}


def test_redis_urls_point_at_the_proxy() -> None:
    assert _proxied_redis_url("redis://127.0.0.1:6379/0", 7000) == "redis://127.0.0.1:7000/0"
    assert _proxied_redis_url("redis://:pw@localhost/3", 7000) == "redis://:pw@127.0.0.1:7000/3"
    assert _proxied_redis_url("redis://127.0.0.1", 7000) == "redis://127.0.0.1:7000/0"


async def test_a_step_sets_one_workers_proxy_or_redis_and_heals_the_rest() -> None:
    scenario = Scenario.from_dict(_two(criteria=[]))
    stage = Stage(scenario, "suture", "postgresql://postgres@127.0.0.1:5432/test")
    assert len(stage.proxies) == 2 and stage.redis_proxy is not None
    for proxy in stage.all_proxies:
        await proxy.start()
    try:
        modes = []
        for step in scenario.steps:
            await stage.apply(step, [])
            modes.append([p.faults.mode for p in stage.all_proxies])
        assert modes == [
            ["pass", "pass", "pass"],
            ["pass", "reset", "pass"],  # worker 1's database only
            ["pass", "pass", "blackhole"],  # Redis, every database healed
        ]
        await stage.heal([])
        assert [p.faults.mode for p in stage.all_proxies] == ["pass"] * 3
        assert stage.settings["redis_prefix"] == f"suture-chaos:{stage.schema}:"
    finally:
        for proxy in stage.all_proxies:
            await proxy.aclose()


# --- the load ---------------------------------------------------------------------------------


def test_the_load_spreads_tries_round_robin_and_reports_each_services() -> None:
    clients = load._RoundRobin(["a", "b"])
    assert [clients.next() for _ in range(3)] == [(0, "a"), (1, "b"), (0, "a")]
    recorder = load._Recorder(services=2)
    for bucket in recorder.buckets(100.5, 1):
        bucket.sent += 1
        bucket.tries["503"] += 1
        bucket.try_ms.append(2.0)
    out = io.StringIO()
    with redirect_stdout(out):
        recorder.flush(101)
    line = json.loads(out.getvalue())
    assert line["sent"] == 1
    assert [w["sent"] for w in line["workers"]] == [0, 1]
    assert line["workers"][1]["tries"]["503"] == 1
    assert line["workers"][1]["try_ms"] == [2.0]
    single = load._Recorder()
    assert len(single.buckets(100.5, 0)) == 1  # one service: no per-service part


class _Answers:
    """A real HTTP server on loopback whose answers a test scripts, one per request."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.requests: list[bytes] = []
        self.connections = 0
        self.served = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                self.requests.append(await reader.readuntil(b"\r\n\r\n"))
                answer = self.answers.pop(0)
                writer.write(answer)
                await writer.drain()
                if not self.answers:
                    self.served.set()
                if b"Connection: close" in answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _answer(status: int, body: dict[str, Any], *extra: str) -> bytes:
    data = json.dumps(body).encode()
    head = [f"HTTP/1.1 {status} X", "content-type: application/json", *extra]
    head.append(f"content-length: {len(data)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


OPEN = _answer(503, {"code": "breaker_open"}, "Retry-After: 2")


def test_the_probers_bare_client_keeps_its_connection_and_frames_answers() -> None:
    async def scenario() -> None:
        closing = _answer(503, {"code": "breaker_open"}, "Connection: close")
        unframed = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
        answers = _Answers([OPEN, OPEN, closing, _answer(200, {"tasks": []}), unframed])
        async with answers as url:
            client = load._BareGet(url, load.READ, {"Authorization": "Bearer t0k"})
            for _ in range(3):
                status, body = await client.get()
                assert (status, load._body_code(body)) == (503, "breaker_open")
            assert answers.connections == 1  # kept alive until the server said close
            status, body = await client.get()
            assert (status, json.loads(body)) == (200, {"tasks": []})
            assert answers.connections == 2
            with pytest.raises(ValueError, match="Content-Length"):
                await client.get()
            assert client.writer is None  # dropped: the next try connects afresh
        request = answers.requests[0].decode()
        assert request.startswith(f"GET {load.READ} HTTP/1.1\r\n")
        assert f"Host: {url.removeprefix('http://')}" in request
        assert "Authorization: Bearer t0k" in request

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="http://"):
        load._BareGet("https://127.0.0.1:1", load.READ, {})


def test_the_prober_asks_on_its_own_thread_until_the_breaker_lets_go() -> None:
    async def scenario() -> load._Recorder:
        answers = _Answers([OPEN, OPEN, OPEN, _answer(503, {"code": "overloaded"})])
        async with answers as url:
            recorder = load._Recorder()
            prober = load._Prober([url], {}, recorder)
            prober.start()
            try:
                prober.rejected(0)
                await asyncio.wait_for(answers.served.wait(), 10)
            finally:
                await asyncio.to_thread(prober.stop)
            assert not prober._thread.is_alive()
            assert answers.connections == 1
        return recorder

    recorder = asyncio.run(scenario())
    out = io.StringIO()
    with redirect_stdout(out):
        recorder.flush(2**40)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    # Four tries: three breaker_open, then another 503 that ends the asking; every 503
    # is a fast-fail sample, none of them a browser's try.
    assert sum(line["probes"] for line in lines) == 4
    assert sum(len(line["fail_ms"]) for line in lines) == 4
    assert sum(line["sent"] for line in lines) == 0


# --- the report ---------------------------------------------------------------------------------


def test_the_plot_has_a_breaker_band_per_worker(tmp_path: pathlib.Path) -> None:
    rows = [
        _row(0, "before", breakers="closed;closed", worker_sent="5;5"),
        _row(1, "partition", fault="worker 0 reset", breakers="open;closed"),
        _row(2, "partition", fault="worker 0 reset", breakers=";closed"),  # w0 unanswered
    ]
    svg = plot_svg(rows, title="two")
    assert ">w0</text>" in svg and ">w1</text>" in svg
    assert svg.count("fill='#ef9a9a'") == 1  # one second open, worker 0's
    assert ">breaker</text>" in plot_svg([_row(0, "a")], title="one")  # one worker: one band
    session = Session(database_url="postgresql://postgres@127.0.0.1:5432/test")
    result = RunResult(scenario=SCENARIOS["worker-partitioned"], mode="suture", rows=rows)
    result.worker_rows = [[_row(0, "before")], [_row(0, "before")]]
    session.results.append(result)
    page = write_report(session, tmp_path).read_text()
    assert "spread round robin over 2 service workers" in page
    assert "worker 0&#x27;s database: mode=reset" in page
    header = (tmp_path / "worker-partitioned-suture.csv").read_text().splitlines()[0]
    assert header.endswith("breakers,worker_sent,worker_req_ok,worker_req_p99_ms,redis_connections")
    data = json.loads((tmp_path / "report.json").read_text())
    assert len(data["runs"][0]["worker_rows"]) == 2


# --- a real run: two uvicorn workers, PostgreSQL and Redis behind proxies ------------------------


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_one_partitioned_worker_does_not_open_the_other(pg_url: str, redis_url: str) -> None:
    from suture.demo.runner import play_all

    shipped = SCENARIOS["worker-partitioned"]
    scenario = Scenario(
        name="partitioned-short",
        title=shipped.title,
        service=shipped.service,
        service_workers=2,
        steps=(
            Step(name="before", seconds=2),
            Step(name="partition", seconds=5, faults={"mode": "reset"}, worker=0),
            Step(name="after", seconds=3),
        ),
        criteria=shipped.criteria,
        grace=2,
    )
    session = Session(database_url=pg_url.replace("+psycopg", ""), redis_url=redis_url)
    asyncio.run(play_all([scenario], session, progress=lambda _: None, modes=("suture",)))
    (result,) = session.results
    assert result.error is None, result.error
    states = {row["breakers"] for row in result.rows if row["step"] == "partition"}
    assert "open;closed" in states  # worker 0 opened on its own failures...
    assert all(state.split(";")[1] == "closed" for state in states)  # ...worker 1 did not
    judged = {j.criterion.metric: j for j in result.judged}
    assert judged["request_goodput"].held, judged["request_goodput"]
    assert judged["lost_writes"].held and judged["duplicated_writes"].held
    assert judged["status_500"].held
    assert len(result.worker_rows) == 2
    assert sum(r["sent"] for r in result.worker_rows[0]) > 0
    assert result.redis_proxy["connections"] > 0  # the workers did talk through it


class _Admin:
    """Records the chaos admin bodies a worker was sent (a stand-in for its HTTP client)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def post(self, path: str, **options: Any) -> Any:
        assert path == "/api/admin/chaos"
        self.bodies.append(options["json"])
        return type("Answer", (), {"status_code": 200})()


async def test_a_step_injects_faults_in_one_workers_service_only() -> None:
    scenario = Scenario.from_dict(
        _two(steps=[{"name": "storm", "seconds": 1, "injected": {"error_rate": 1}, "worker": 0}])
    )
    stage = Stage(scenario, "suture", "postgresql://postgres@127.0.0.1:5432/test")
    for proxy in stage.all_proxies:
        await proxy.start()
    admins = [_Admin(), _Admin()]
    try:
        await stage.apply(scenario.steps[0], admins)
        await stage.heal(admins)
    finally:
        for proxy in stage.all_proxies:
            await proxy.aclose()
    assert [b.get("errorRate") for b in admins[0].bodies] == [1.0, None]
    assert admins[1].bodies == [{"target": "database", "clear": True}] * 2
