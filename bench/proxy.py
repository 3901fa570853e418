"""The fault proxy in pass mode: latency added per round trip, and throughput.

    .venv/bin/python bench/proxy.py [--round-trips 20000] [--megabytes 1024]

Three processes, as in a real deployment: a target server (an asyncio echo
and an asyncio sink), ``suture proxy`` in front of each (the command line, in
its own process), and this client (blocking sockets, ``TCP_NODELAY``).

* Latency: a 64-byte message echoed, round trip after round trip, directly
  and through the proxy, in interleaved blocks (so a disturbance on this
  shared machine hits both); p50 and p99 of each, and the p50 added by the
  proxy. Goal: at most 100 us at p50.
* Throughput: ``--megabytes`` sent to the sink in 256 KiB writes, directly
  and through the proxy; the sink answers its byte count at the end of the
  stream, so the time covers every byte delivered. Goal: at least 200 MB/s.
* When ``socat`` is installed, the same round trips through it (a proxy
  written in C) show what any extra process hop costs on this machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

SERVERS = r"""
import asyncio, sys

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(data)

class Sink(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.count = 0
    def data_received(self, data):
        self.count += len(data)
    def eof_received(self):
        self.transport.write(str(self.count).encode())
        self.transport.close()

async def main():
    loop = asyncio.get_running_loop()
    echo = await loop.create_server(Echo, "127.0.0.1", 0)
    sink = await loop.create_server(Sink, "127.0.0.1", 0)
    print(echo.sockets[0].getsockname()[1], sink.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC)}


def _start_proxy(target_port: int) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "suture.cli", "proxy", "127.0.0.1:0", f"127.0.0.1:{target_port}"],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert process.stdout is not None
    process.stdout.readline()  # "suture proxy"
    listen = process.stdout.readline().split()[1]
    return process, int(listen.rsplit(":", 1)[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_socat(target_port: int) -> tuple[subprocess.Popen[bytes], int] | None:
    """socat (a proxy written in C) in front of the same server: this machine's floor."""
    if shutil.which("socat") is None:
        return None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            "socat",
            f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay",
            f"TCP:127.0.0.1:{target_port},nodelay",
        ]
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.terminate()
    return None


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _round_trips(sock: socket.socket, count: int, message: bytes) -> list[float]:
    out = []
    size = len(message)
    perf = time.perf_counter_ns
    for _ in range(count):
        start = perf()
        sock.sendall(message)
        got = 0
        while got < size:
            got += len(sock.recv(size - got))
        out.append((perf() - start) / 1000)
    return out


def _throughput(port: int, megabytes: int) -> float:
    chunk = b"x" * (256 * 1024)
    total = megabytes * 1024 * 1024
    with _connect(port) as sock:
        start = time.perf_counter()
        sent = 0
        while sent < total:
            sock.sendall(chunk)
            sent += len(chunk)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while data := sock.recv(64):
            answer += data
        elapsed = time.perf_counter() - start
    assert int(answer) == sent, (answer, sent)
    return sent / elapsed / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--round-trips", type=int, default=20_000)
    parser.add_argument("--megabytes", type=int, default=1024)
    args = parser.parse_args()

    servers = subprocess.Popen(
        [sys.executable, "-c", SERVERS], stdout=subprocess.PIPE, text=True, env=_env()
    )
    assert servers.stdout is not None
    echo_port, sink_port = map(int, servers.stdout.readline().split())
    echo_proxy, echo_via = _start_proxy(echo_port)
    sink_proxy, sink_via = _start_proxy(sink_port)
    socat = _start_socat(echo_port)
    try:
        message = b"m" * 64
        direct_sock, proxied_sock = _connect(echo_port), _connect(echo_via)
        _round_trips(direct_sock, 2000, message)  # warm up both paths
        _round_trips(proxied_sock, 2000, message)
        socat_sock = _connect(socat[1]) if socat is not None else None
        if socat_sock is not None:
            _round_trips(socat_sock, 2000, message)
        direct: list[float] = []
        proxied: list[float] = []
        via_socat: list[float] = []
        block = 1000
        cpu = 0.0
        for _ in range(max(1, args.round_trips // block)):
            direct += _round_trips(direct_sock, block, message)
            before = _cpu_seconds(echo_proxy.pid)
            proxied += _round_trips(proxied_sock, block, message)
            cpu += _cpu_seconds(echo_proxy.pid) - before
            if socat_sock is not None:
                via_socat += _round_trips(socat_sock, block, message)
        direct_sock.close()
        proxied_sock.close()
        if socat_sock is not None:
            socat_sock.close()

        def pct(values: list[float], q: int) -> float:
            return statistics.quantiles(values, n=100)[q - 1]

        d50, p50 = statistics.median(direct), statistics.median(proxied)
        print(f"\nround trip of {len(message)} bytes, {len(direct)} each (microseconds)")
        print(f"  {'path':<22}{'p50':>9}{'p99':>9}")
        print(f"  {'direct':<22}{d50:>9.1f}{pct(direct, 99):>9.1f}")
        print(f"  {'through suture proxy':<22}{p50:>9.1f}{pct(proxied, 99):>9.1f}")
        if via_socat:
            s50 = statistics.median(via_socat)
            print(f"  {'through socat (C)':<22}{s50:>9.1f}{pct(via_socat, 99):>9.1f}")
            print(f"  socat adds at p50: {s50 - d50:.1f} us (a proxy in C: this machine's floor)")
        verdict = "ok" if p50 - d50 <= 100 else "MISSED"
        print(f"  added at p50: {p50 - d50:.1f} us (goal <= 100 us: {verdict})")
        print(f"  the proxy's CPU time per round trip: {cpu / len(proxied) * 1e6:.1f} us")
        print(f"  load average when done: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")

        _throughput(sink_port, 64)  # warm up
        _throughput(sink_via, 64)
        direct_rate = max(_throughput(sink_port, args.megabytes) for _ in range(2))
        proxied_rate = max(_throughput(sink_via, args.megabytes) for _ in range(2))
        print(f"\nthroughput, {args.megabytes} MiB in 256 KiB writes (MB/s, best of 2)")
        print(f"  {'direct':<22}{direct_rate:>9.0f}")
        print(f"  {'through suture proxy':<22}{proxied_rate:>9.0f}")
        verdict = "ok" if proxied_rate >= 200 else "MISSED"
        print(f"  goal >= 200 MB/s: {verdict}")
    finally:
        for process in (echo_proxy, sink_proxy, servers):
            process.terminate()
            process.wait(10)
        if socat is not None:
            socat[0].terminate()
            socat[0].wait(10)


if __name__ == "__main__":
    main()
