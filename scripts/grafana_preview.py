"""The shipped Grafana dashboard, evaluated by a real Prometheus during an outage of the demo.

    .venv/bin/python scripts/grafana_preview.py            # writes docs/grafana-dashboard.png
    .venv/bin/python scripts/grafana_preview.py --quick --html /tmp/board.html

Grafana does not run on the machine this was built on (it is not packaged for
Debian bookworm and there is no container runtime), but Debian's ``prometheus``
is. So this script:

1. starts ``suture demo`` (SQLite in a temporary directory, the chaos admin on,
   synthetic traffic) on a free port;
2. starts a real Prometheus (temporary config and data directory, free port)
   scraping the demo's ``/metrics`` every second, with the shipped alert rules
   loaded;
3. injects faults through the demo's chaos admin endpoint, one phase after the
   other: 60% of database calls failing (retries absorb most, the retry budget
   caps them, some calls give up), every call failing (the outage), recovery,
   the pool held (pressure critical, requests shed), +300 ms per call, recovery;
4. evaluates every target of every panel of the shipped dashboard through
   Prometheus's HTTP API (``query_range``), with Grafana's variables set as
   Grafana sets them (``$breaker`` and ``$route`` all, ``$__rate_interval`` four
   scrape intervals);
5. draws the panels at their grid positions (``scripts/grafana_svg.py``) as one
   HTML page with inline SVG, and screenshots it with Chromium.

The picture is therefore the dashboard's own panels and queries on real data,
drawn by that renderer, not by Grafana. ``tests/test_grafana_preview.py`` runs
the same stack on a shorter scenario and checks that every query returns data.
It lives in ``scripts/`` because it is a tool to run by hand (and its test's
fixture), not part of the package.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from grafana_svg import Series, render_page  # noqa: E402 - the sibling module, by path

DASHBOARD = ROOT / "src" / "suture" / "contrib" / "grafana" / "suture.json"
ALERTS = ROOT / "src" / "suture" / "contrib" / "prometheus" / "alerts.yml"
SCRAPE_SECONDS = 1
# Grafana's $__rate_interval: at least four scrape intervals.
RATE_INTERVAL = f"{4 * SCRAPE_SECONDS}s"

# (label, chaos admin body, seconds): what the full run shows. --quick (and the test)
# run the same phases, shorter.
SCENARIO: tuple[tuple[str, dict[str, Any], float], ...] = (
    ("healthy", {"clear": True}, 20),
    ("flaky: 60% of database calls fail", {"errorRate": 0.6}, 20),
    ("database down: every call fails", {"errorRate": 1.0}, 30),
    ("recovered", {"clear": True}, 15),
    ("pool held: 9 of 10 connections", {"hold": 9}, 20),
    ("+300 ms per database call", {"clear": True, "then": {"latency": 0.3}}, 20),
    ("recovered", {"clear": True}, 15),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _wait_http(url: str, seconds: float, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited; its log:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(
        f"{url} did not answer within {seconds:g} s; log:\n{log.read_text()[-3000:]}"
    )


@dataclass
class Stack:
    """The demo and a Prometheus scraping it, in ``workdir``; :meth:`close` stops both."""

    workdir: Path
    traffic: int = 20
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    demo_port: int = field(default_factory=free_port)
    prom_port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def demo(self) -> str:
        return f"http://127.0.0.1:{self.demo_port}"

    @property
    def prometheus(self) -> str:
        return f"http://127.0.0.1:{self.prom_port}"

    def _start(
        self, argv: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.workdir
            )
        self.processes.append(process)
        return process

    def start(self) -> Stack:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed (Debian package 'prometheus')")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        }
        db = self.workdir / "demo.db"
        demo_log = self.workdir / "demo.log"
        demo = self._start(
            [
                sys.executable, "-m", "suture.cli", "demo",
                "--port", str(self.demo_port),
                "--database-url", f"sqlite+aiosqlite:///{db}",
                "--chaos", "--traffic", str(self.traffic), "--token", self.token,
                "--tasks", "60", "--messages", "300", "--reset-timeout", "5",
                "--log-level", "warning",
            ],
            demo_log,
            env,
        )  # fmt: skip
        _wait_http(f"{self.demo}/health", 60, demo, demo_log)
        config = self.workdir / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {
                        "scrape_interval": f"{SCRAPE_SECONDS}s",
                        "evaluation_interval": f"{SCRAPE_SECONDS}s",
                    },
                    "rule_files": [str(ALERTS)],
                    "scrape_configs": [
                        {
                            "job_name": "suture-demo",
                            "scrape_timeout": f"{SCRAPE_SECONDS}s",
                            "static_configs": [{"targets": [f"127.0.0.1:{self.demo_port}"]}],
                        }
                    ],
                }
            )
        )
        prom_log = self.workdir / "prometheus.log"
        prom = self._start(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.prom_port}",
                "--storage.tsdb.retention.time=1d",
            ],
            prom_log,
        )
        _wait_http(f"{self.prometheus}/-/ready", 60, prom, prom_log)
        return self

    def chaos(self, body: dict[str, Any]) -> None:
        """POST to the demo's chaos admin endpoint (loopback and the manager's token)."""
        request = urllib.request.Request(
            f"{self.demo}/api/admin/chaos",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                raise RuntimeError(f"chaos admin: {response.status} {response.read()!r}")

    def api(self, path: str, **params: str) -> Any:
        """GET a Prometheus HTTP API path; its ``data``."""
        url = f"{self.prometheus}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def close(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()


@contextlib.contextmanager
def running(traffic: int = 20) -> Iterator[Stack]:
    """A started :class:`Stack` in a temporary directory, stopped and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="suture-grafana-") as tmp:
        stack = Stack(Path(tmp), traffic=traffic)
        try:
            yield stack.start()
        finally:
            stack.close()


def play(stack: Stack, scale: float = 1.0) -> list[tuple[str, float, float]]:
    """Run :data:`SCENARIO` (durations times ``scale``); the phases as (label, start, end)."""
    phases = []
    for label, body, seconds in SCENARIO:
        then = body.get("then")
        stack.chaos({k: v for k, v in body.items() if k != "then"})
        if then:
            stack.chaos(then)
        start = time.time()
        time.sleep(seconds * scale)
        phases.append((label, start, time.time()))
    return phases


def expression(expr: str) -> str:
    """A panel's PromQL with Grafana's variables as Grafana sets them for "All"."""
    for name in ("breaker", "route"):
        expr = expr.replace(f"${name}", ".*")
    return expr.replace("$__rate_interval", RATE_INTERVAL).replace(
        "$__interval", f"{SCRAPE_SECONDS}s"
    )


def legend(template: str, metric: dict[str, str]) -> str:
    out = template or "{{__name__}}"
    for key, value in metric.items():
        out = out.replace("{{" + key + "}}", value)
    return out.replace("  ", " ").strip()


def evaluate(
    stack: Stack, board: dict[str, Any], start: float, end: float
) -> dict[int, list[Series]]:
    """Every panel's targets through ``query_range``: panel id -> [(legend, points)]."""
    out: dict[int, list[Series]] = {}
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            data = stack.api(
                "/api/v1/query_range",
                query=expression(target["expr"]),
                start=str(math.floor(start)),  # whole seconds: the steps fall on them
                end=str(math.floor(end)),
                step=f"{SCRAPE_SECONDS}s",
            )
            for result in data["result"]:
                points = [(float(t), float(v)) for t, v in result["values"]]
                out.setdefault(panel["id"], []).append(
                    (
                        legend(target.get("legendFormat", ""), result["metric"]),
                        _with_gaps(points, start, end),
                    )
                )
    return out


def _with_gaps(
    points: list[tuple[float, float]], start: float, end: float
) -> list[tuple[float, float | None]]:
    """Prometheus leaves out steps with no value: put a gap (None) where one is missing."""
    have = {int(t): v for t, v in points}
    steps = range(math.ceil(start), math.floor(end) + 1, SCRAPE_SECONDS)
    return [(float(t), have.get(t)) for t in steps]


def note(phases: list[tuple[str, float, float]]) -> str:
    """The header's account of what was injected, and what drew the picture."""
    faults = "; ".join(
        f"{time.strftime('%H:%M:%S', time.gmtime(a))} {label}" for label, a, _ in phases
    )
    return (
        "<b>Drawn by scripts/grafana_preview.py, not by Grafana:</b> the shipped dashboard's "
        "panels and queries, evaluated by a real Prometheus scraping <code>suture demo</code> "
        f"every 1 s.<br><b>Phases (UTC):</b> {faults}."
    )


def screenshot(page_html: str, out: Path) -> None:
    """The page, full height, as a PNG through Playwright and Debian's chromium."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        raise RuntimeError("chromium is not installed (Debian package 'chromium')")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        try:
            page = browser.new_page(viewport={"width": 1480, "height": 900})
            page.set_content(page_html)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "grafana-dashboard.png")
    parser.add_argument("--html", type=Path, help="also keep the HTML page here")
    parser.add_argument("--quick", action="store_true", help="a third of the scenario's durations")
    args = parser.parse_args(argv)
    board = json.loads(DASHBOARD.read_text())
    with running() as stack:
        start = time.time()
        phases = play(stack, scale=1 / 3 if args.quick else 1.0)
        start += int(RATE_INTERVAL[:-1])  # the first rate needs a few scrapes
        time.sleep(2 * SCRAPE_SECONDS)  # the last scrape lands
        end = time.time()
        data = evaluate(stack, board, start, end)
    variables = {"Data source": "Prometheus", "Breaker": "All", "Route": "All"}
    page = render_page(board, data, (start, end), note(phases), variables)
    if args.html:
        args.html.write_text(page)
    screenshot(page, args.out)
    print(f"wrote {args.out} ({sum(len(s) for s in data.values())} series)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
