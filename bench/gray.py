"""Gray failures: the reference service on PostgreSQL with every statement slower.

    .venv/bin/python bench/gray.py [--url postgresql+psycopg://postgres@127.0.0.1/test]

Starts ``suture demo`` (real uvicorn with the slow-client settings, the
adaptive limiter, a 3 s deadline per request) in a subprocess on its own
PostgreSQL schema, and drives ``GET /api/messages?limit=20`` over HTTP:

1. capacity C: with ``statement_latency`` 0.3 s (inside the connection, so a
   slow statement holds its pooled connection), a closed loop with as many
   clients as the pool has connections; C is its throughput;
2. open loop at 3 x C for 30 s: goodput (>= 0.9 x C), 500s (0), the breaker
   (never opens), every rejection a 503 with Retry-After (answered < 5 ms at
   p99), p99 of the successes (within the 3 s deadline);
3. ``statement_latency`` 2 s, open loop at C for 10 s: every answer within its
   deadline + 50 ms;
4. latency removed, open loop at 3 x C: how long until a 250 ms window is
   served in full.

Prints the figures and whether each target holds. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass, field

import httpx
import sqlalchemy as sa

PATH = "/api/messages?limit=20"  # one transaction: the page and the total
DEADLINE = 3.0
POOL = 10
TOKEN = secrets.token_urlsafe(24)  # the manager's token of the service this run starts


@dataclass
class Answer:
    sent: float
    latency: float
    status: int
    code: str | None
    retry_after: str | None


@dataclass
class Run:
    answers: list[Answer] = field(default_factory=list)
    breaker_states: set[str] = field(default_factory=set)


SERVER = textwrap.dedent(
    """
    import sys, uvicorn
    from suture.demo.app import Settings, create_app
    from suture.demo.guard import server_options
    from suture.demo.serve import freeze_after_startup
    url, schema, port = sys.argv[1], sys.argv[2], int(sys.argv[3])  # argv[4]: the token
    settings = Settings(database_url=url, schema=schema, chaos=True, pool_size={pool},
                        tasks=300, messages=500, rules=20, token=sys.argv[4])
    uvicorn.run(freeze_after_startup(create_app(settings)), host="127.0.0.1", port=port,
                log_level="error", proxy_headers=False, **server_options())
    """
)

# The floor under the 503 figure: the same uvicorn settings and the same client against
# an app that answers every request 503 at once. What the service adds is the difference.
FLOOR = textwrap.dedent(
    """
    import sys, uvicorn
    from suture.demo.guard import server_options
    BODY = b'{"success":false,"code":"overloaded"}'
    HEAD = [(b"content-type", b"application/json"), (b"retry-after", b"1")]
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 503, "headers": HEAD})
        await send({"type": "http.response.body", "body": BODY})
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error",
                proxy_headers=False, **server_options())
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _get(base: tuple[str, int], path: str) -> tuple[int, dict[str, str], bytes]:
    """One ``GET`` on a fresh connection, by hand: an open loop of hundreds of requests in
    flight costs httpx's pool more CPU than the server spends on them, on a 2-core machine."""
    reader, writer = await asyncio.open_connection(*base)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


async def _one(client: tuple[str, int], run: Run, start: float) -> None:
    sent = time.perf_counter()
    try:
        status, headers, body = await _get(client, PATH)
        code = None
        if status != 200:
            try:
                code = json.loads(body).get("code")
            except ValueError:
                code = None
        answer = Answer(
            sent - start, time.perf_counter() - sent, status, code, headers.get("retry-after")
        )
    except OSError as exc:
        answer = Answer(sent - start, time.perf_counter() - sent, 0, type(exc).__name__, None)
    run.answers.append(answer)


async def _watch_breaker(client: tuple[str, int], run: Run, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            health = json.loads((await _get(client, "/health"))[2])
            for b in health.get("breakers", {}).values():
                run.breaker_states.add(str(b.get("state")))
        except (OSError, ValueError):
            run.breaker_states.add("unreadable")
        await asyncio.sleep(0.25)


async def closed_loop(client: tuple[str, int], clients: int, seconds: float) -> Run:
    run = Run()
    start = time.perf_counter()

    async def worker() -> None:
        while time.perf_counter() - start < seconds:
            await _one(client, run, start)

    await asyncio.gather(*(worker() for _ in range(clients)))
    return run


async def open_loop(
    client: tuple[str, int], rate: float, seconds: float, *, watch: bool = True
) -> Run:
    run = Run()
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_breaker(client, run, stop) if watch else stop.wait())
    start = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    n = 0
    while True:
        due = start + n / rate
        if due - start >= seconds:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(client, run, start)))
        n += 1
    await asyncio.gather(*tasks)
    stop.set()
    await watcher
    return run


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def chaos(client: tuple[str, int], **body: object) -> None:
    url = f"http://{client[0]}:{client[1]}/api/admin/chaos"
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        r = await http.post(url, json={"target": "database", **body})
        r.raise_for_status()


def verdict(ok: bool) -> str:
    return "holds" if ok else "MISSED"


async def _wait_up(base: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            try:
                await http.get(base + "/health", timeout=1.0)
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
    raise SystemExit(f"{base} did not start")


async def floor(port: int, rate: float) -> list[float]:
    """503 latencies (ms) of the bare server (:data:`FLOOR`) at ``rate`` for 10 s."""
    await _wait_up(f"http://127.0.0.1:{port}")
    run = await open_loop(("127.0.0.1", port), rate, 10.0, watch=False)
    return [a.latency * 1000 for a in run.answers if a.status == 503]


async def bench(client: tuple[str, int], floor_port: int) -> None:
    for _ in (1,):  # one run
        await closed_loop(client, POOL, 2.0)  # warm up: connections, caches
        await chaos(client, statementLatency=0.3)
        cap = await closed_loop(client, POOL, 10.0)
        ok = [a for a in cap.answers if a.status == 200]
        capacity = len(ok) / 10.0
        if not ok:
            seen = {(a.status, a.code) for a in cap.answers}
            raise SystemExit(f"no request succeeded: {sorted(seen, key=str)}")
        print(f"statement latency 0.3 s, pool {POOL}")
        print(f"  capacity C (closed loop, {POOL} clients, 10 s): {capacity:.1f} requests/s")
        print(f"    (p50 {pct([a.latency for a in ok], 0.5) * 1000:.0f} ms per request)")

        rate = 3 * capacity
        run = await open_loop(client, rate, 30.0)
        ok = [a for a in run.answers if a.status == 200]
        shed = [a for a in run.answers if a.status == 503]
        other = [a for a in run.answers if a.status not in (200, 503)]
        goodput = len(ok) / 30.0
        shed_ra = all(a.retry_after for a in shed)
        shed_p99 = pct([a.latency for a in shed], 0.99)
        ok_p99 = pct([a.latency for a in ok], 0.99)
        codes: dict[str, int] = {}
        for a in shed:
            codes[str(a.code)] = codes.get(str(a.code), 0) + 1
        print(f"\n  open loop at 3 x C = {rate:.1f}/s for 30 s: {len(run.answers)} requests")
        print(
            f"    goodput {goodput:.1f}/s = {goodput / capacity:.2f} x C (>= 0.9: "
            f"{verdict(goodput >= 0.9 * capacity)})"
        )
        print(f"    500s: {sum(a.status == 500 for a in run.answers)}; other: {len(other)}")
        states = sorted(run.breaker_states)
        print(f"    breaker states seen: {states} ({verdict(states == ['closed'])})")
        print(f"    503s: {len(shed)} {codes}; all with Retry-After: {verdict(shed_ra)}")
        shed_ms = [a.latency * 1000 for a in shed]
        print(
            f"    503 p50 {pct(shed_ms, 0.5):.1f} ms, p90 {pct(shed_ms, 0.9):.1f} ms, "
            f"p99 {shed_p99 * 1000:.1f} ms (< 5 ms: {verdict(shed_p99 < 0.005)})"
        )
        bare = await floor(floor_port, rate)
        print(
            f"      floor: uvicorn answering 503 at once, same client and rate: p50 "
            f"{pct(bare, 0.5):.1f} ms, p90 {pct(bare, 0.9):.1f} ms, p99 {pct(bare, 0.99):.1f} ms"
            f" (the service adds {shed_p99 * 1000 - pct(bare, 0.99):+.1f} ms at p99)"
        )
        print(
            f"    successes p99 {ok_p99 * 1000:.0f} ms (<= {DEADLINE:g} s: "
            f"{verdict(ok_p99 <= DEADLINE)})"
        )

        await chaos(client, statementLatency=2.0)
        run = await open_loop(client, capacity, 10.0)
        worst = max(a.latency for a in run.answers)
        statuses: dict[int, int] = {}
        for a in run.answers:
            statuses[a.status] = statuses.get(a.status, 0) + 1
        print(f"\nstatement latency 2 s, open loop at C for 10 s: {statuses}")
        print(
            f"    slowest answer {worst * 1000:.0f} ms (<= deadline + 50 ms = "
            f"{(DEADLINE + 0.05) * 1000:.0f}: {verdict(worst <= DEADLINE + 0.05)})"
        )

        await chaos(client, clear=True)
        run = await open_loop(client, rate, 5.0)
        healed = None
        window = 0.25
        for i in range(int(5.0 / window)):
            lo, hi = i * window, (i + 1) * window
            inside = [a for a in run.answers if lo <= a.sent < hi]
            if inside and all(a.status == 200 for a in inside):
                healed = hi
                break
        shown = "never" if healed is None else f"{healed:.2f} s"
        print(
            f"\nlatency removed, open loop at 3 x C: every request served from {shown} "
            f"(<= 2 s: {verdict(healed is not None and healed <= 2.0)})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get(
            "SUTURE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    schema = f"bench_gray_{uuid.uuid4().hex[:8]}"
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER.format(pool=POOL), args.url, schema, str(port), TOKEN],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    base = f"http://127.0.0.1:{port}"
    floor_port = _free_port()
    bare = subprocess.Popen([sys.executable, "-c", FLOOR, str(floor_port)])
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/health", timeout=1.0).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise SystemExit("the demo did not start")
        asyncio.run(bench(("127.0.0.1", port), floor_port))
    finally:
        bare.terminate()
        bare.wait(10)
        server.terminate()
        server.wait(10)
        engine = sa.create_engine(args.url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


if __name__ == "__main__":
    main()
