"""The chaos harness (``suture chaos``) and the demo's synthetic traffic (``--traffic``)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from demo_support import BASE_URL, manager_headers
from suture.cli import build_parser, main
from suture.demo.app import Service, Settings, create_app
from suture.demo.harness import (
    ASSISTANCE,
    PHASES,
    HarnessError,
    Report,
    Scenario,
    Traffic,
    asgi_lifespan,
    check_loopback_url,
    format_report,
    run_harness,
)

RESET = 1.0


@pytest.fixture(scope="module")
def report() -> Report:
    """One short harness run, shared by the tests that read it (about 12 s)."""
    scenario = Scenario(phase_seconds=0.8, concurrency=6, rate=120.0, reset_timeout=RESET, seed=11)
    return asyncio.run(
        run_harness(scenario=scenario, tasks=60, messages=300, rules=30, pool_size=16, seed=3)
    )


def test_the_report_has_every_phase_in_order_with_its_numbers(report: Report) -> None:
    assert [p.name for p in report.phases] == [p.name for p in PHASES]
    data = report.as_dict()
    assert json.loads(json.dumps(data)) == data  # --json prints exactly this
    assert data["settings"]["reset_timeout"] == RESET
    assert any("reset_timeout" in note for note in data["settings"]["notes"])
    for phase in data["phases"]:
        for key in (
            "requests",
            "success_pct",
            "status_503_pct",
            "other_5xx",
            "p50_ms",
            "p99_ms",
            "retries",
            "breaker_rejections",
            "retry_after_pct",
            "criterion",
            "healed",
            "measured",
        ):
            assert key in phase, (phase["name"], key)
        assert phase["requests"] > 0
        assert phase["routes"][ASSISTANCE] > 0
        assert 0.0 <= phase["success_pct"] <= 100.0


def test_no_phase_ever_answers_a_500(report: Report) -> None:
    # The product's first promise: a fault is a 503 with Retry-After, never a 500.
    for phase in report.phases:
        assert phase.other_5xx == 0, phase
        assert phase.other_errors == 0, phase
        if phase.retry_after_pct is not None:
            assert phase.retry_after_pct == 100.0, phase


def test_every_phase_healed(report: Report) -> None:
    by_name = {p.name: p for p in report.phases}
    # Verdicts that do not hang on a random draw or on the machine's load.
    for name in ("baseline", "latency", "pool-exhausted", "errors-100", "healed"):
        assert by_name[name].healed, by_name[name]
    # 30% errors: the retry absorbs them (>= 99% is the criterion; a few hundred
    # requests make one unlucky request a whole percent, so the test leaves a margin).
    flaky = by_name["errors-30"]
    assert flaky.success_pct >= 97.0, flaky
    assert flaky.retries > 0 and flaky.faults_injected > 0


def test_the_phases_did_what_they_claim(report: Report) -> None:
    by_name = {p.name: p for p in report.phases}
    assert by_name["baseline"].faults_injected == 0
    assert by_name["latency"].p50_ms is not None and by_name["latency"].p50_ms >= 300.0
    exhausted = by_name["pool-exhausted"]
    assert exhausted.pool_critical_after is not None
    assert exhausted.shed > 0 and exhausted.codes.get("overloaded", 0) > 0
    assert by_name["errors-30"].requests >= 200  # enough answers for a percentage
    dead = by_name["errors-100"]
    assert "OPEN" in dead.breaker_states
    assert dead.breaker_opened_after is not None
    assert dead.breaker_rejections > 0
    assert dead.codes.get("breaker_open", 0) > 0
    healed = by_name["healed"]
    assert healed.breaker_states[0] in ("OPEN", "HALF_OPEN")
    assert healed.breaker_states[-1] == "CLOSED"
    assert healed.first_success_after is not None
    assert healed.breaker_closed_after is not None
    assert healed.retry_after_kept is not False


def test_the_text_report_has_both_tables(report: Report) -> None:
    text = format_report(report)
    assert "p50 ms" in text and "Retry-After" in text
    assert "healed  criterion" in text
    for phase in report.phases:
        assert f"\n{phase.name} " in text
    assert text.splitlines()[-1].startswith("verdict: ")


def test_the_command_prints_the_report_and_exits_with_the_verdict(
    report: Report, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from suture.demo import harness

    seen: dict[str, Any] = {}

    async def canned(**kwargs: Any) -> Report:
        seen.update(kwargs)
        return report

    monkeypatch.setattr(harness, "run_harness", canned)
    expected = 0 if report.healed else 1
    suture_logger = logging.getLogger("suture")
    level = suture_logger.level  # the command quietens it: give it back to the other tests
    try:
        assert main(["chaos", "--json", "--quick"]) == expected
        assert json.loads(capsys.readouterr().out) == report.as_dict()
        assert seen["url"] is None and seen["scenario"].phase_seconds == 1.0
        assert seen["scenario"].reset_timeout == 2.0  # shortened in-process
        assert main(["chaos", "--url", "http://127.0.0.1:8000"]) == expected
        assert capsys.readouterr().out.strip() == format_report(report)
        assert seen["scenario"].reset_timeout == 10.0  # the demo's own default
    finally:
        suture_logger.setLevel(level)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:8000",
        "http://192.168.1.20:8000",
        "http://example.com",
        "http://[2001:db8::1]:8000",
        "ftp://127.0.0.1:8000",
        "127.0.0.1:8000",
    ],
)
def test_a_url_off_this_machine_is_refused(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="url="):
        check_loopback_url(url)
    assert main(["chaos", "--url", url]) == 2
    assert "refused" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["not a url", "nosuchdriver://x/y"])
async def test_a_database_it_cannot_use_is_a_clear_error(url: str) -> None:
    with pytest.raises(HarnessError, match=r"database_url=|cannot build the demo"):
        await run_harness(database_url=url)


async def test_run_harness_refuses_before_sending_anything() -> None:
    with pytest.raises(ValueError, match="only breaks services on this machine"):
        await run_harness(url="http://203.0.113.5:8000")


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000", "http://127.0.0.2:9000/", "http://[::1]:8000", "http://localhost"],
)
def test_loopback_urls_are_accepted(url: str) -> None:
    assert check_loopback_url(url) == url.rstrip("/")


def test_the_command_line_options() -> None:
    args = build_parser().parse_args(["chaos", "--quick", "--json", "--concurrency", "4"])
    assert (args.command, args.quick, args.json, args.concurrency) == ("chaos", True, True, 4)
    assert build_parser().parse_args(["demo", "--traffic", "5"]).traffic == 5.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--traffic", "500"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["chaos", "--url", "http://127.0.0.1:1", "--database-url", "x"])


def test_scenario_and_traffic_check_their_settings() -> None:
    with pytest.raises(ValueError, match="phase_seconds"):
        Scenario(phase_seconds=0)
    with pytest.raises(ValueError, match="concurrency"):
        Scenario(concurrency=0)
    with pytest.raises(ValueError, match="rate"):
        Traffic(object(), -1)
    with pytest.raises(ValueError, match="rate"):
        Traffic(object(), 1000)


async def test_traffic_calls_the_apps_own_api(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'traffic.db'}",
        tasks=30,
        messages=60,
        rules=10,
        background=False,
        traffic=50.0,
    )
    app = create_app(settings)
    service: Service = app.state.service
    async with asgi_lifespan(app):
        traffic: Traffic = app.state.traffic
        async with asyncio.timeout(15):
            await traffic.wait_until(lambda t: t.statuses[200] >= 10)
        assert service.telemetry.totals["db_calls"] >= 10
        # the traffic goes through the whole app: faults reach it as they would a visitor
        service.breaker.force_open()
        async with asyncio.timeout(15):
            await traffic.wait_until(lambda t: t.statuses[503] >= 3)
        service.breaker.reset()
    assert set(traffic.statuses) <= {200, 503}
    assert not traffic._in_flight  # stopped with the app


async def test_asgi_lifespan_starts_and_stops_the_app(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'life.db'}",
        tasks=5,
        messages=5,
        rules=2,
        background=False,
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        asgi_lifespan(app),
        httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, headers=manager_headers(app)
        ) as client,
    ):
        answer: Any = (await client.get(ASSISTANCE)).json()
        assert answer["success"] is True
        assert not hasattr(app.state, "traffic")  # traffic is off unless asked


async def test_the_chaos_admin_endpoint_starts_and_stops_the_traffic(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'toggle.db'}",
        tasks=10,
        messages=20,
        rules=5,
        background=False,
        chaos=True,  # with --chaos the traffic exists, paused, for the dashboard's toggle
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)  # from 127.0.0.1: the admin endpoint answers
    async with (
        asgi_lifespan(app),
        httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, headers=manager_headers(app)
        ) as client,
    ):
        traffic: Traffic = app.state.traffic
        assert (await client.get("/api/dashboard")).json()["traffic"] == 0.0
        started = await client.post("/api/admin/chaos", json={"traffic": 40})
        assert started.status_code == 200 and started.json()["traffic"] == 40.0
        async with asyncio.timeout(15):
            await traffic.wait_until(lambda t: t.statuses[200] >= 5)
        stopped = await client.post("/api/admin/chaos", json={"traffic": 0})
        assert stopped.json()["traffic"] == 0.0
        assert (await client.get("/api/dashboard")).json()["traffic"] == 0.0
        refused = await client.post("/api/admin/chaos", json={"traffic": 1000})
        assert refused.status_code == 400
        assert "rate=1000" in refused.json()["error"]
        assert traffic.rate == 0.0
