"""One Retry-After rule in every client: the shared table (tests/data/retry_after_cases.json).

Each row is run against ``suture.Retry`` (header rows: an ``httpx.HTTPStatusError``),
``contrib.httpx``'s sync and async ``fetch()``, and ``suture.js`` in Chromium;
each must give the row's answer, so all agree. Time is fake everywhere: a
``FakeClock`` in Python, Playwright's clock in the browser.
"""

from __future__ import annotations

import importlib.resources
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from suture import Retry, RetryGaveUp, RetryScheduled, retry_after
from suture.contrib.httpx import AsyncResilientClient, ResilientClient
from suture.testing import FakeClock, capture_events

TABLE = json.loads((Path(__file__).parent / "data" / "retry_after_cases.json").read_text())
NOW: float = TABLE["now"]
DEFAULTS: dict[str, float] = TABLE["defaults"]
CASES: list[dict[str, Any]] = TABLE["cases"]
IDS = [case["name"] for case in CASES]
HEADER_CASES = [case for case in CASES if "body" not in case]


def option(case: dict[str, Any], name: str) -> float:
    return float(case.get(name, DEFAULTS[name]))


def expected(case: dict[str, Any]) -> dict[str, Any]:
    """What every client must report for ``case``."""
    if case["expect"] == "stop":
        return {"calls": 1, "waits": [], "ok": False, "retry_after": case["retry_after"]}
    wait = case["wait"] if case["expect"] == "retry" else DEFAULTS["backoff_wait"]
    return {"calls": 2, "waits": [wait], "ok": True, "retry_after": None}


def policy(case: dict[str, Any], clock: FakeClock, waits: list[float]) -> Retry:
    return Retry(
        attempts=2,
        initial_delay=1.0,
        max_delay=option(case, "max_delay"),
        deadline=option(case, "deadline"),
        jitter="full",
        rand=lambda: 0.5,
        clock=clock,
        on_retry=lambda event: waits.append(event.delay),
    )


def busy(case: dict[str, Any]) -> httpx.Response:
    headers = {"Retry-After": case["header"]} if "header" in case else {}
    body: dict[str, Any] = {"success": False, "error": "busy"}
    if "body" in case:
        body["retryAfter"] = case["body"]
    return httpx.Response(503, headers=headers, json=body)


class Server:
    """503 with the row's Retry-After, then 200."""

    def __init__(self, case: dict[str, Any]) -> None:
        self.case = case
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return busy(self.case) if self.calls == 1 else httpx.Response(200, json={"done": True})


def approx(report: dict[str, Any]) -> dict[str, Any]:
    return {**report, "waits": pytest.approx(report["waits"])}


@pytest.mark.parametrize("case", HEADER_CASES, ids=[c["name"] for c in HEADER_CASES])
def test_retry_decorator(case: dict[str, Any]) -> None:
    clock = FakeClock(wall_start=NOW)
    waits: list[float] = []
    server = Server(case)
    request = httpx.Request("GET", "http://api.test/")

    def call() -> str:
        response = server(request)
        response.request = request
        response.raise_for_status()
        return "ok"

    report: dict[str, Any] = {"retry_after": None, "ok": True}
    with capture_events() as events:
        try:
            policy(case, clock, waits).call(call)
        except httpx.HTTPStatusError as exc:
            report = {"retry_after": retry_after(exc, now=NOW), "ok": False}
    report.update(calls=server.calls, waits=waits)
    assert approx(report) == expected(case)
    if case["expect"] == "stop" and case.get("deadline") is None:
        assert [e.reason for e in events.of(RetryGaveUp)] == ["retry_after"]
    assert all(e.delay == w for e, w in zip(events.of(RetryScheduled), waits, strict=True))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_sync_client(case: dict[str, Any]) -> None:
    clock = FakeClock(wall_start=NOW)
    waits: list[float] = []
    server = Server(case)
    with ResilientClient(
        inner=httpx.MockTransport(server),
        retry=policy(case, clock, waits),
        breaker=None,
        clock=clock,
    ) as client:
        outcome = client.fetch("GET", "http://api.test/")
    report = {
        "calls": server.calls,
        "waits": waits,
        "ok": outcome.ok,
        "retry_after": outcome.retry_after,
    }
    assert approx(report) == expected(case)
    assert outcome.attempts == server.calls


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_async_client(case: dict[str, Any]) -> None:
    clock = FakeClock(wall_start=NOW)
    waits: list[float] = []
    server = Server(case)
    async with AsyncResilientClient(
        inner=httpx.MockTransport(server),
        retry=policy(case, clock, waits),
        breaker=None,
        clock=clock,
    ) as client:
        outcome = await client.fetch("GET", "http://api.test/")
    report = {
        "calls": server.calls,
        "waits": waits,
        "ok": outcome.ok,
        "retry_after": outcome.retry_after,
    }
    assert approx(report) == expected(case)
    assert outcome.attempts == server.calls


# --- suture.js in Chromium ------------------------------------------------------------

ORIGIN = "http://suture.test"
SUTURE_JS = importlib.resources.files("suture").joinpath("static/suture.js").read_bytes()
PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>table</title></head>
<body><script type="module">
  import * as suture from "/static/suture.js";
  window.suture = suture;
</script></body></html>"""

# Starts sutureFetch with the row's answers and resolves as soon as it either ends or
# schedules its one wait (onRetry runs just before the wait's timer is set).
START = """(c) => {
    const calls = [];
    const waits = [];
    let scheduled;
    const decided = new Promise((resolve) => { scheduled = resolve; });
    const ok = {"content-type": "application/json"};
    const headers = {...ok};
    if ("header" in c.row) headers["retry-after"] = c.row.header;
    const body = {success: false, error: "busy"};
    if ("body" in c.row) body.retryAfter = c.row.body;
    window.row = window.suture.sutureFetch(c.origin + "/api", {
        attempts: 2, baseDelay: 1000, maxDelay: c.maxDelay * 1000,
        deadline: c.deadline * 1000, random: () => 0.5,
        fetch: async () => {
            calls.push(Date.now());
            return calls.length === 1
                ? new Response(JSON.stringify(body), {status: 503, headers})
                : new Response('{"done": true}', {status: 200, headers: ok});
        },
        onRetry: (info) => { waits.push(info.delay / 1000); scheduled(info.delay); },
    }).then((outcome) => ({outcome, waits, calls: calls.length}));
    return Promise.race([window.row.then(() => null), decided]);
}"""


@pytest.fixture(scope="module")
def js_page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def serve(route: Any) -> None:
        if route.request.url.endswith("/static/suture.js"):
            route.fulfill(status=200, content_type="text/javascript", body=SUTURE_JS)
        else:
            route.fulfill(status=200, content_type="text/html", body=PAGE)

    page.route(f"{ORIGIN}/**", serve)
    page.clock.install(time=NOW)  # seconds in the Python API
    page.goto(f"{ORIGIN}/page.html")
    page.wait_for_function("window.suture !== undefined")
    page.clock.pause_at(NOW + 1)  # time moves only when run_for() moves it
    yield page
    assert errors == []
    context.close()


def run_in_browser(page: Any, case: dict[str, Any]) -> dict[str, Any]:
    page.clock.set_system_time(NOW)
    args = {
        "row": case,
        "origin": ORIGIN,
        "maxDelay": option(case, "max_delay"),
        "deadline": option(case, "deadline"),
    }
    delay = page.evaluate(START, args)
    if delay is not None:
        page.clock.run_for(math.ceil(delay) + 1)  # the wait, on the fake clock
    result: dict[str, Any] = page.evaluate("() => window.row")
    return result


@pytest.mark.browser
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_browser_client(js_page: Any, case: dict[str, Any]) -> None:
    result = run_in_browser(js_page, case)
    outcome = result["outcome"]
    report = {
        "calls": result["calls"],
        "waits": result["waits"],
        "ok": outcome["ok"],
        "retry_after": outcome["retryAfter"],
    }
    assert approx(report) == expected(case)
    assert outcome["attempts"] == result["calls"]


def test_the_table_covers_the_bad_inputs_the_issue_names() -> None:
    names = " ".join(IDS)
    for word in ("huge", "negative", "fractional", "in the past", "far in the future"):
        assert word in names, word
    for word in ("garbage", "equal to max_delay", "past the deadline"):
        assert word in names, word
    assert {case["expect"] for case in CASES} == {"retry", "stop", "ignore"}
