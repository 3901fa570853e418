"""The load of a chaos run: closed-loop "browsers" in a process of their own.

    python -m suture.demo.load --url http://127.0.0.1:PORT --seconds 30 \\
        --workers 16 --rate 40 --browser suture --write-ids 1,2,3 --tag run1

Each worker clicks, waits for the outcome, clicks again, all of them at most
``--rate`` clicks per second. A click reads the manager's queue
(``GET /api/manager/assistance``) or, for a share of them, answers one waiting
task (``POST /api/manager/assistance/{id}/respond``, each id at most once: an
acknowledged answer is a write the run reconciles with the database).

The browser is one of two (``--browser``):

* ``suture``: what ``suture.js`` does by default: up to 3 tries of idempotent
  requests only, full-jitter backoff from 0.5 s, a ``Retry-After`` honoured (and
  one over 60 s ends the tries), a 30 s deadline, 10 s per try;
* ``naive``: the founding spec's browser: every failed click (5xx, timeout,
  transport error) tried 3 more times after 1 s, 2 s and 4 s, writes included.

Every second it prints one JSON line on stdout:
``{"second": <unix second>, "sent": n, "clicks": n, "outcomes": {...},
"latencies": [ms...], "acked": [[id, text]...], "tries": {...}, "try_ms": [ms...],
"fail_ms": [[t, ms]...], "ok_at": [[sent, answered]...],
"try_at": [[sent, ms, status, retry_after]...], "probes": n}``: clicks (a
browser action, its retries included) and tries (each HTTP request) by outcome
and latency; ``fail_ms``: the 503 tries (the prober's too); ``ok_at``: the 2xx
tries; ``try_at``: every try of the browsers (``status`` null when no answer
came, ``retry_after`` 1 when the answer had a valid ``Retry-After``);
``probes``: the prober's tries, and a last line ``{"done": true}``. ``--url``
given more than once spreads the tries over the services round robin (each
try, a retry included, goes to the next one, as a load balancer would) and
each line then also holds ``"workers"``: per service, in ``--url`` order, its
own ``sent``, ``tries``, ``try_ms``, ``fail_ms``, ``ok_at`` and ``try_at``.
Clicks still in flight ``--grace`` seconds (default 5) after the end count as
client timeouts (the user gave up). ``--start-at`` (a unix time) starts the
clicks on that instant, so that a run's seconds and steps line up with the
wall clock's. SIGINT or SIGTERM stops it early (the last second is still
printed). It needs httpx (the ``demo`` extra), imported when it runs.

**The prober** (``--probe``, on in ``suture chaos``): the p99 of the fast
failures needs at least 100 of them, and the browsers, honouring
``Retry-After``, send few requests while a breaker is open (16 browsers and a
2 s ``Retry-After``: about 8 a second). So once any try is answered ``503``
``breaker_open``, one more client reads the queue of that service again every
:data:`PROBE_GAP` seconds, one request at a time, for as long as the answer
is that ``503`` (with several services, only those answering it, in turn);
its tries are in ``fail_ms`` (they are fast failures a user would get) and in
``probes``, and not in ``sent``, ``tries``, ``try_at`` or ``clicks`` (they would
dilute the amplification: a rejection reaches no database). A prober try that
the breaker lets through (half-open) does reach the database, and that attempt
is counted like any other: against the service.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["BROWSERS", "OUTCOMES", "main"]

BROWSERS = ("suture", "naive")
#: A click's outcome: 2xx, 503, another 5xx, a 4xx, a client timeout, a transport error.
OUTCOMES = ("ok", "503", "500", "4xx", "timeout", "error")
READ = "/api/manager/assistance"
TRY_TIMEOUT = 10.0
SUTURE_TRIES = 3
SUTURE_BASE = 0.5
SUTURE_CAP = 8.0
SUTURE_DEADLINE = 30.0
SUTURE_MAX_RETRY_AFTER = 60.0
NAIVE_WAITS = (1.0, 2.0, 4.0)
#: Seconds between two of the prober's tries while the breaker rejects them.
PROBE_GAP = 0.01


@dataclass
class _Second:
    sent: int = 0
    clicks: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    latencies: list[float] = field(default_factory=list)
    acked: list[list[Any]] = field(default_factory=list)
    #: Every try (HTTP request) by outcome, and its latency in ms.
    tries: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    try_ms: list[float] = field(default_factory=list)
    #: The 503 tries: [unix time answered, latency in ms].
    fail_ms: list[list[float]] = field(default_factory=list)
    #: The tries answered 2xx: [unix time sent, unix time answered].
    ok_at: list[list[float]] = field(default_factory=list)
    #: Every try: [unix time sent, latency in ms, HTTP status or None, 1 with Retry-After].
    try_at: list[list[Any]] = field(default_factory=list)
    #: With several services: each one's own tries (a ``_Second`` without clicks).
    by_service: dict[int, _Second] = field(default_factory=dict)

    def service(self, index: int) -> _Second:
        bucket = self.by_service.get(index)
        if bucket is None:
            bucket = self.by_service[index] = _Second()
        return bucket

    def tries_line(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "tries": self.tries,
            "try_ms": [round(x, 2) for x in self.try_ms],
            "fail_ms": self.fail_ms,
            "ok_at": self.ok_at,
            "try_at": self.try_at,
        }

    #: The prober's tries (in ``fail_ms`` when answered 503, never in ``sent``).
    probes: int = 0


class _Recorder:
    """The seconds' buckets. The prober's thread records into them too: ``lock`` keeps a
    bucket from being made twice or written after its line was printed."""

    def __init__(self, services: int = 1) -> None:
        self.seconds: dict[int, _Second] = {}
        self.services = services
        self.lock = threading.RLock()

    def at(self, when: float) -> _Second:
        second = int(when)
        bucket = self.seconds.get(second)
        if bucket is None:
            with self.lock:
                bucket = self.seconds.get(second)
                if bucket is None:
                    bucket = self.seconds[second] = _Second()
        return bucket

    def buckets(self, when: float, service: int) -> list[_Second]:
        """The second's bucket, and with several services that service's own too."""
        bucket = self.at(when)
        return [bucket] if self.services == 1 else [bucket, bucket.service(service)]

    def flush(self, before: int) -> None:
        with self.lock:
            for second in sorted(s for s in self.seconds if s < before):
                b = self.seconds.pop(second)
                line = {
                    "second": second,
                    "sent": b.sent,
                    "clicks": b.clicks,
                    "outcomes": b.outcomes,
                    "latencies": [round(x, 2) for x in b.latencies],
                    "acked": b.acked,
                    "tries": b.tries,
                    "try_ms": [round(x, 2) for x in b.try_ms],
                    "fail_ms": b.fail_ms,
                    "ok_at": b.ok_at,
                    "try_at": b.try_at,
                    "probes": b.probes,
                }
                if self.services > 1:
                    line["workers"] = [b.service(i).tries_line() for i in range(self.services)]
                sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()


def _outcome(status: int) -> str:
    if 200 <= status < 300:
        return "ok"
    if status == 503:
        return "503"
    if status >= 500:
        return "500"
    return "4xx"


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class _RoundRobin:
    """The services' clients, each try to the next one (one service: always that one)."""

    def __init__(self, clients: Sequence[Any]) -> None:
        self.clients = list(clients)
        self.turn = 0

    def next(self) -> tuple[int, Any]:
        index = self.turn % len(self.clients)
        self.turn += 1
        return index, self.clients[index]


def _code(answer: Any) -> str | None:
    """The ``code`` of a 503's JSON body (``breaker_open``, ``overloaded``, ...)."""
    return _body_code(answer.content)


def _body_code(body: bytes) -> str | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    code = parsed.get("code") if isinstance(parsed, dict) else None
    return code if isinstance(code, str) else None


class _BareGet:
    """One keep-alive HTTP/1.1 connection that sends one prepared ``GET``: the prober's client.

    A try costs the load process a write and two reads (httpx costs it several
    milliseconds a request on a slow machine, and that time would be counted in the
    service's fast-fail latency). Answers must carry a ``Content-Length`` (the
    demo's do); anything else closes the connection and raises.
    """

    def __init__(self, url: str, path: str, headers: Mapping[str, str]) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"url={url!r}: the prober speaks plain http:// only")
        self.host = parts.hostname
        self.port = parts.port or 80
        lines = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc}", "Accept: application/json"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self) -> tuple[int, bytes]:
        """``(status, body)``; raises on a transport error or an answer it cannot frame."""
        try:
            return await self._get()
        except BaseException:
            self.close()
            raise

    async def _get(self) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length: int | None = None
        keep = True
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                keep = False
        if length is None:
            raise ValueError("an answer without Content-Length")
        body = await self.reader.readexactly(length)
        if not keep:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class _Prober:
    """One more client while a breaker is open: enough fast failures for a p99.

    It asks the services whose last answer was ``503 breaker_open`` (a browser's or
    its own), one request at a time, each in turn, and stops asking one as soon as
    it answers anything else. Not round robin: with two services and one of them
    healthy, every other try would be the healthy one's answer, which would stop
    the prober after two tries and leave the open one's p99 to the few browsers'
    tries (its half-open probes then weigh 1 in 30, not 1 in 200).

    It runs on a thread and an event loop of its own, with a bare client
    (:class:`_BareGet`): on the browsers' loop each of its answers waited for
    whatever browser step was running (several milliseconds of httpx work on a
    slow machine), and that wait was counted as the service's latency.
    """

    def __init__(
        self, urls: Sequence[str], headers: Mapping[str, str], recorder: _Recorder
    ) -> None:
        self.clients = [_BareGet(url, READ, headers) for url in urls]
        self.recorder = recorder
        #: The services (indexes) whose breaker the prober is asking about (its thread's).
        self.open: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="suture-load-prober", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with suppress(RuntimeError):  # its loop has ended already
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=TRY_TIMEOUT + 1)

    def rejected(self, index: int) -> None:
        """Service ``index`` answered ``503 breaker_open``: ask it until it answers otherwise."""
        if self._loop is not None:
            with suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._ask, index)

    def _ask(self, index: int) -> None:
        self.open.add(index)
        assert self._wake is not None
        self._wake.set()

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake, self._stop = asyncio.Event(), asyncio.Event()
        self._ready.set()
        probing = asyncio.ensure_future(self._probe(self._wake))
        try:
            await self._stop.wait()
        finally:
            probing.cancel()
            with suppress(asyncio.CancelledError):
                await probing
            for client in self.clients:
                client.close()

    async def _probe(self, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            while self.open:  # paced, not polling: each turn is one request
                for index in sorted(self.open):
                    if not await self._try(index):
                        self.open.discard(index)
                    await asyncio.sleep(PROBE_GAP)
            wake.clear()

    async def _try(self, index: int) -> bool:
        """One read of service ``index``; True while it is answered 503 ``breaker_open``."""
        started = time.time()
        try:
            async with asyncio.timeout(TRY_TIMEOUT):
                status, body = await self.clients[index].get()
        except Exception:  # refused, cut, timed out, unframed, a head over 64 KiB: not a 503
            with self.recorder.lock:
                self.recorder.at(time.time()).probes += 1
            return False
        ended = time.time()
        with self.recorder.lock:
            self.recorder.at(ended).probes += 1
            if status == 503:
                for bucket in self.recorder.buckets(ended, index):
                    bucket.fail_ms.append([round(ended, 4), round((ended - started) * 1000, 3)])
        return status == 503 and _body_code(body) == "breaker_open"


class _Browser:
    def __init__(
        self,
        clients: _RoundRobin,
        recorder: _Recorder,
        kind: str,
        rng: random.Random,
        prober: _Prober | None = None,
    ) -> None:
        self.clients = clients
        self.recorder = recorder
        self.kind = kind
        self.rng = rng
        self.prober = prober

    async def _try(self, method: str, path: str, body: Any) -> tuple[str, float | None]:
        index, client = self.clients.next()
        started = time.time()
        for bucket in self.recorder.buckets(started, index):
            bucket.sent += 1
        try:
            answer = await client.request(method, path, json=body, timeout=TRY_TIMEOUT)
        except Exception as exc:
            ended = time.time()
            outcome = "timeout" if "Timeout" in type(exc).__name__ else "error"
            for bucket in self.recorder.buckets(ended, index):
                bucket.tries[outcome] += 1
                bucket.try_ms.append((ended - started) * 1000)
                bucket.try_at.append(
                    [round(started, 4), round((ended - started) * 1000, 3), None, 0]
                )
            return outcome, None
        ended = time.time()
        outcome = _outcome(answer.status_code)
        retry_after = _retry_after(answer.headers)
        for bucket in self.recorder.buckets(ended, index):
            bucket.tries[outcome] += 1
            bucket.try_ms.append((ended - started) * 1000)
            bucket.try_at.append(
                [
                    round(started, 4),
                    round((ended - started) * 1000, 3),
                    answer.status_code,
                    int(retry_after is not None),
                ]
            )
            if outcome == "503":
                bucket.fail_ms.append([round(ended, 4), round((ended - started) * 1000, 3)])
            elif outcome == "ok":
                bucket.ok_at.append([round(started, 4), round(ended, 4)])
        if outcome == "503" and self.prober is not None and _code(answer) == "breaker_open":
            self.prober.rejected(index)
        return outcome, retry_after

    async def click(self, method: str, path: str, body: Any = None) -> str:
        if self.kind == "naive":
            outcome, _ = await self._try(method, path, body)
            for wait in NAIVE_WAITS:
                if outcome in ("ok", "4xx"):
                    break
                await asyncio.sleep(wait)
                outcome, _ = await self._try(method, path, body)
            return outcome
        started = time.monotonic()
        idempotent = method == "GET"
        outcome, retry_after = await self._try(method, path, body)
        for tried in range(1, SUTURE_TRIES):
            transient = outcome in ("503", "500", "timeout", "error")
            if not (transient and idempotent):
                break
            if retry_after is not None and retry_after > SUTURE_MAX_RETRY_AFTER:
                break
            delay = self.rng.uniform(0, min(SUTURE_CAP, SUTURE_BASE * 2 ** (tried - 1)))
            if retry_after is not None:
                delay = max(delay, retry_after)
            if time.monotonic() - started + delay > SUTURE_DEADLINE:
                break
            await asyncio.sleep(delay)
            outcome, retry_after = await self._try(method, path, body)
        return outcome


async def run(args: argparse.Namespace) -> None:  # noqa: C901, PLR0915 - pacer, workers, flusher and stop, read in order
    import httpx

    urls = list(args.url)
    recorder = _Recorder(len(urls))
    rng = random.Random(args.seed)
    write_ids = list(args.write_ids)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if args.start_at is not None:
        await asyncio.sleep(max(0.0, args.start_at - time.time()))
    interval = 1.0 / args.rate
    next_slot = time.monotonic()
    starts = args.start_at if args.start_at is not None else time.time()
    ends = time.monotonic() + max(0.0, starts + args.seconds - time.time())

    async def pace() -> bool:
        nonlocal next_slot
        now = time.monotonic()
        slot = max(now, next_slot)
        next_slot = slot + interval
        if slot > now:
            await asyncio.sleep(slot - now)
        return not stop.is_set() and time.monotonic() < ends

    limits = httpx.Limits(max_connections=args.workers, max_keepalive_connections=args.workers)
    # Only managers get in: the runner hands its run's token through the environment.
    token = os.environ.get("SUTURE_DEMO_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with AsyncExitStack() as stack:
        clients = _RoundRobin(
            [
                await stack.enter_async_context(
                    httpx.AsyncClient(base_url=url, limits=limits, headers=headers)
                )
                for url in urls
            ]
        )

        # What is alive now lives as long as the load: out of the collector's way (a full
        # collection walking it would pause every browser at once).
        gc.collect()
        gc.freeze()
        # The prober's own clients of the same services (it picks which it asks).
        prober = _Prober(urls, headers, recorder) if args.probe else None

        async def worker(index: int) -> None:
            browser = _Browser(
                clients, recorder, args.browser, random.Random(args.seed + index), prober
            )
            while await pace():
                started = time.time()
                acked = False
                try:
                    if write_ids and rng.random() < args.write_share:
                        task_id = write_ids.pop()
                        text = f"{args.tag}-{task_id}"
                        outcome = await browser.click(
                            "POST",
                            f"/api/manager/assistance/{task_id}/respond",
                            {"response": text},
                        )
                        acked = outcome == "ok"
                    else:
                        outcome = await browser.click("GET", READ)
                except asyncio.CancelledError:
                    # Still waiting when the run ended (and its grace): the user gave up.
                    ended = time.time()
                    bucket = recorder.at(ended)
                    bucket.clicks += 1
                    bucket.outcomes["timeout"] += 1
                    bucket.latencies.append((ended - started) * 1000)
                    raise
                ended = time.time()
                bucket = recorder.at(ended)
                bucket.clicks += 1
                bucket.outcomes[outcome] += 1
                bucket.latencies.append((ended - started) * 1000)
                if acked:
                    bucket.acked.append([task_id, text])

        async def flusher() -> None:
            while True:
                await asyncio.sleep(1.0 - time.time() % 1.0 + 0.01)
                recorder.flush(int(time.time()))

        flushing = loop.create_task(flusher())
        workers = [loop.create_task(worker(i)) for i in range(args.workers)]
        if prober is not None:
            prober.start()
        done_waiting: asyncio.Task[Any] = loop.create_task(stop.wait())
        pending: set[asyncio.Task[Any]] = set(workers)
        while pending and not stop.is_set():
            left = ends + args.grace - time.monotonic()
            if left <= 0:
                break
            _, pending = await asyncio.wait(
                [done_waiting, *pending], timeout=left, return_when="FIRST_COMPLETED"
            )
            pending.discard(done_waiting)
        for task in workers:
            task.cancel()
        if prober is not None:
            await asyncio.to_thread(prober.stop)
        await asyncio.gather(*workers, return_exceptions=True)
        done_waiting.cancel()
        flushing.cancel()
        with suppress(asyncio.CancelledError):
            await flushing
    recorder.flush(int(time.time()) + 2)
    sys.stdout.write(json.dumps({"done": True}) + "\n")
    sys.stdout.flush()


def _ids(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()] if text else []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suture.demo.load")
    parser.add_argument(
        "--url",
        required=True,
        action="append",
        help="a service's base URL; repeated: the tries go to each in turn (round robin)",
    )
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--browser", choices=BROWSERS, default="suture")
    parser.add_argument("--write-share", type=float, default=0.1)
    parser.add_argument("--write-ids", type=_ids, default=[])
    parser.add_argument("--tag", default="chaos")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--start-at",
        type=float,
        default=None,
        help="unix time of the first click (default: at once); --seconds count from it",
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="one more client while the breaker is open (503 breaker_open): fast-fail samples",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=5.0,
        help="seconds past --seconds for the clicks in flight; then they count as timeouts",
    )
    args = parser.parse_args(argv)
    if args.probe:
        # The prober's thread gets the interpreter within 0.5 ms of its answer
        # arriving, not after the default 5 ms a busy browser thread may hold it.
        sys.setswitchinterval(0.0005)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
