"""suture.chaos.proxy: every fault against a real socket server, and against PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import math
import os
import pathlib
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from suture.chaos import FaultProxy, ProxyError, ProxyFaults, ProxyStats
from suture.chaos.proxy import is_loopback, parse_address
from suture.testing import FakeClock

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"


class _Echo(socketserver.BaseRequestHandler):
    """Echoes every byte; on the client's end of stream, sends ``bye`` and closes."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        self.server.accepted += 1  # type: ignore[attr-defined]
        try:
            while data := sock.recv(65536):
                sock.sendall(data)
            sock.sendall(b"bye")
        except OSError:
            pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    accepted = 0


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = _Server(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[:2]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def echo_server(echo: tuple[str, int]) -> tuple[str, int]:
    return echo


def _connect(proxy: FaultProxy, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(proxy.address, timeout=timeout)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = sock.recv(size - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _round_trip(sock: socket.socket, payload: bytes = b"ping") -> float:
    start = time.perf_counter()
    sock.sendall(payload)
    assert _recv_exactly(sock, len(payload)) == payload
    return time.perf_counter() - start


def _is_reset(proxy: FaultProxy) -> bool:
    """True when a new connection is reset (at connect, send or receive), False when echoed."""
    try:
        with _connect(proxy) as sock:
            _round_trip(sock)
    except ConnectionResetError:
        return True
    return False


def _wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


# --- pass ---------------------------------------------------------------------------


def test_pass_forwards_both_ways_and_counts(echo: tuple[str, int]) -> None:
    with FaultProxy(echo) as proxy:
        assert proxy.port != 0
        with _connect(proxy) as sock:
            for _ in range(3):
                _round_trip(sock, b"hello")
            sock.shutdown(socket.SHUT_WR)  # half-close: the server still answers
            assert _recv_exactly(sock, 3) == b"bye"
            assert sock.recv(10) == b""
        _wait_for(lambda: proxy.stats().active == 0)
        stats = proxy.stats()
    assert stats.connections == 1
    assert stats.reached == 1
    assert stats.bytes_up == 15
    assert stats.bytes_down == 18
    assert stats.chunks_up == 3
    assert stats.refused == stats.dropped == stats.cut == stats.target_failed == 0


def test_pass_moves_a_large_stream_intact(echo: tuple[str, int]) -> None:
    payload = bytes(range(256)) * 16 * 1024  # 4 MiB, more than any socket buffer
    with FaultProxy(echo) as proxy, _connect(proxy) as sock:
        received = bytearray()

        def read() -> None:
            while len(received) < len(payload):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    return
                received.extend(chunk)

        reader = threading.Thread(target=read)
        reader.start()
        sock.sendall(payload)
        reader.join(10)
        assert bytes(received) == payload
        assert proxy.stats().bytes_up == len(payload)


async def test_runs_in_the_running_loop_too() -> None:
    async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(echo_handler, "127.0.0.1", 0)
    target = server.sockets[0].getsockname()[:2]
    async with server, FaultProxy(target) as proxy:
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"abc")
        assert await reader.readexactly(3) == b"abc"
        proxy.configure(mode="reset")  # from the loop's own thread: applied at once
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(reader.read(10), 5)
            writer.write(b"x")
            await writer.drain()
        writer.close()
        assert proxy.stats().cut == 1


# --- reset --------------------------------------------------------------------------


def test_reset_refuses_new_connections_and_cuts_open_ones(
    echo_server: tuple[str, int],
) -> None:
    with FaultProxy(echo_server) as proxy:
        open_sock = _connect(proxy)
        _round_trip(open_sock)
        proxy.configure(mode="reset")
        with pytest.raises(ConnectionResetError):
            open_sock.recv(10)
        open_sock.close()
        assert _is_reset(proxy)
        proxy.clear()
        assert not _is_reset(proxy)
        stats = proxy.stats()
    assert (stats.cut, stats.refused, stats.reached) == (1, 1, 2)


# --- blackhole ----------------------------------------------------------------------


def test_blackhole_holds_everything_then_delivers_it_in_order(echo: tuple[str, int]) -> None:
    with FaultProxy(echo) as proxy:
        open_sock = _connect(proxy, timeout=0.3)
        _round_trip(open_sock)
        proxy.configure(mode="blackhole")
        open_sock.sendall(b"one")
        with pytest.raises(TimeoutError):
            open_sock.recv(10)
        new_sock = _connect(proxy, timeout=0.3)  # accepted: the handshake is the kernel's
        new_sock.sendall(b"two")
        with pytest.raises(TimeoutError):
            new_sock.recv(10)
        assert proxy.stats().reached == 1  # the target never saw the new connection
        proxy.clear()
        open_sock.settimeout(5)
        new_sock.settimeout(5)
        assert _recv_exactly(open_sock, 3) == b"one"
        assert _recv_exactly(new_sock, 3) == b"two"
        assert proxy.stats().reached == 2
        open_sock.close()
        new_sock.close()


def test_reset_cuts_connections_held_by_a_blackhole(echo: tuple[str, int]) -> None:
    with FaultProxy(echo, faults=ProxyFaults(mode="blackhole")) as proxy:
        sock = _connect(proxy)
        sock.sendall(b"x")
        _wait_for(lambda: proxy.stats().active == 1)
        proxy.configure(mode="reset")
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
        sock.close()
        assert proxy.stats().reached == 0


# --- latency, jitter, bandwidth -----------------------------------------------------


def test_latency_is_added_to_every_round_trip(echo: tuple[str, int]) -> None:
    with FaultProxy(echo) as proxy, _connect(proxy) as sock:
        base = min(_round_trip(sock) for _ in range(5))
        proxy.configure(latency=0.15)
        slow = [_round_trip(sock) for _ in range(3)]
        proxy.configure(latency=0)
        fast = _round_trip(sock)
    assert all(0.15 <= t < 0.15 + 0.1 for t in slow), slow
    assert base < 0.05
    assert fast < 0.05


def test_jitter_draws_from_the_injected_rand(echo: tuple[str, int]) -> None:
    draws = iter([0.0, 0.999])  # latency - jitter, then about latency + jitter
    with (
        FaultProxy(echo, rand=lambda: next(draws)) as proxy,
        _connect(proxy) as sock,
    ):
        proxy.configure(latency=0.2, jitter=0.15)
        low = _round_trip(sock)
        high = _round_trip(sock)
    assert 0.05 <= low < 0.12
    assert 0.34 <= high < 0.45


def test_latency_is_waited_on_the_injected_clock(echo: tuple[str, int]) -> None:
    clock = FakeClock()
    with FaultProxy(echo, clock=clock, faults=ProxyFaults(latency=30.0)) as proxy:
        with _connect(proxy) as sock:
            assert _round_trip(sock) < 5  # nobody waited 30 s
            assert clock.sleeps == [30.0]  # the one round trip, on the fake clock


def test_bandwidth_limits_bytes_per_second(echo: tuple[str, int]) -> None:
    payload = b"x" * 100_000
    with (
        FaultProxy(echo, faults=ProxyFaults(bandwidth=250_000)) as proxy,
        _connect(proxy) as sock,
    ):
        elapsed = _round_trip(sock, payload)
        proxy.configure(bandwidth=math.inf)
        unlimited = _round_trip(sock, payload)
    # 100 kB each way through a 250 kB/s link: 0.4 s up, and down overlapping it.
    assert 0.38 <= elapsed < 1.2, elapsed
    assert unlimited < 0.1


# --- drop ---------------------------------------------------------------------------


def test_drop_resets_the_drawn_fraction_of_new_connections(echo: tuple[str, int]) -> None:
    draws = iter([0.1, 0.9, 0.4, 0.6])  # drop=0.5: dropped, kept, dropped, kept
    kept = 0
    with FaultProxy(echo, rand=lambda: next(draws), faults=ProxyFaults(drop=0.5)) as proxy:
        for _ in range(4):
            kept += not _is_reset(proxy)
        stats = proxy.stats()
    assert kept == 2
    assert (stats.dropped, stats.reached, stats.connections) == (2, 2, 4)


# --- the control endpoint -----------------------------------------------------------


def _http(
    url: str, method: str = "GET", body: Any = None, content_type: str = "application/json"
) -> tuple[int, dict[str, Any]]:
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_control_endpoint_switches_faults_and_reports_counts(echo: tuple[str, int]) -> None:
    with FaultProxy(echo, control="127.0.0.1:0") as proxy:
        url = proxy.control_url
        assert url is not None
        status, state = _http(url + "/")
        assert status == 200
        assert state["faults"] == ProxyFaults().as_dict()
        assert state["target"] == f"127.0.0.1:{echo[1]}"
        assert set(state["stats"]) == set(ProxyStats().as_dict())

        status, state = _http(url + "/faults", "POST", {"mode": "reset"})
        assert (status, state["faults"]["mode"]) == (200, "reset")
        assert proxy.faults.mode == "reset"
        assert _is_reset(proxy)

        status, state = _http(url + "/faults", "POST", {"latency": 0.05, "bandwidth": None})
        assert state["faults"]["latency"] == 0.05
        assert state["faults"]["mode"] == "reset"  # the other settings keep theirs
        status, state = _http(url + "/clear", "POST", b"")
        assert (status, state["faults"]) == (200, ProxyFaults().as_dict())
        assert state["stats"]["refused"] == 1

        assert _http(url + "/faults", "POST", {"mode": "off"})[0] == 400
        status, error = _http(url + "/faults", "POST", {"latncy": 1})
        assert status == 400
        assert "latncy" in error["error"]
        # A page in a browser may POST text/plain without a preflight: refused.
        assert _http(url + "/faults", "POST", b'{"mode":"reset"}', "text/plain")[0] == 415
        assert _http(url + "/nowhere")[0] == 404
        assert _http(url + "/clear")[0] == 405
        assert proxy.faults == ProxyFaults()


def test_control_endpoint_refuses_a_foreign_host_header(echo: tuple[str, int]) -> None:
    with FaultProxy(echo, control="127.0.0.1:0") as proxy:
        assert proxy.control_url is not None
        request = urllib.request.Request(proxy.control_url + "/", headers={"Host": "evil.test"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=5)
        assert caught.value.code == 403


# --- from another thread, and from a coroutine in another loop ----------------------


async def test_aconfigure_from_another_loop_awaits_the_change(echo: tuple[str, int]) -> None:
    with FaultProxy(echo) as proxy:  # the proxy's loop runs on its own thread
        sock = _connect(proxy)
        await asyncio.to_thread(_round_trip, sock)
        await proxy.aconfigure(mode="reset")
        assert proxy.stats().cut == 1  # applied when the await returns
        await proxy.aclear()
        assert proxy.faults == ProxyFaults()
        sock.close()


# --- bad input ----------------------------------------------------------------------


def test_a_port_in_use_is_one_clear_error(echo: tuple[str, int]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ProxyError, match=rf"cannot listen on 127\.0\.0\.1:{port}: address"):
            FaultProxy(echo, listen=("127.0.0.1", port)).start_in_thread()


def test_a_target_that_does_not_answer_is_one_clear_error() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: connections are refused
        proxy = FaultProxy(("127.0.0.1", port))
        with pytest.raises(ProxyError, match="does not answer: connection refused"):
            proxy.probe()
        with pytest.raises(ProxyError, match="does not answer: connection refused"):
            asyncio.run(proxy.aprobe())
        with proxy:
            # Each connection fails alone, with a reset: on a busy machine it can arrive
            # before the client's connect() has returned, so the connect is inside too.
            with pytest.raises((ConnectionResetError, ConnectionAbortedError)):
                with _connect(proxy) as sock:
                    sock.sendall(b"x")
                    if not sock.recv(1):
                        raise ConnectionAbortedError
            _wait_for(lambda: proxy.stats().target_failed == 1)


def test_remote_addresses_need_the_explicit_flag() -> None:
    with pytest.raises(ProxyError, match=r"target '10\.1\.2\.3' is not a loopback address"):
        FaultProxy("10.1.2.3:5432")
    with pytest.raises(ProxyError, match=r"listen '0\.0\.0\.0' is not a loopback"):
        FaultProxy("127.0.0.1:5432", listen="0.0.0.0:6432")
    with pytest.raises(ProxyError, match="control endpoint is loopback only"):
        FaultProxy("10.1.2.3:5432", allow_remote=True, control="0.0.0.0:1")
    FaultProxy("10.1.2.3:5432", allow_remote=True)  # told otherwise: accepted


def test_fault_settings_are_validated_with_their_name() -> None:
    with pytest.raises(ValueError, match="mode='off': must be one of pass, reset, blackhole"):
        ProxyFaults(mode="off")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="latency=-1"):
        ProxyFaults(latency=-1)
    with pytest.raises(ValueError, match="bandwidth=0: must be more than 0"):
        ProxyFaults(bandwidth=0)
    with pytest.raises(ValueError, match=r"drop=1\.5: must be within \[0, 1\]"):
        ProxyFaults(drop=1.5)
    with pytest.raises(ValueError, match="unknown setting"):
        ProxyFaults().changed({"speed": 1})
    assert ProxyFaults().changed({"bandwidth": None}).bandwidth == math.inf
    assert ProxyFaults(bandwidth=1e6).as_dict()["bandwidth"] == 1e6


def test_addresses_parse_and_loopback_is_recognised() -> None:
    assert parse_address("6432") == ("127.0.0.1", 6432)
    assert parse_address(":6432") == ("127.0.0.1", 6432)
    assert parse_address("localhost:5432") == ("localhost", 5432)
    assert parse_address("[::1]:5432") == ("::1", 5432)
    for bad in ("", "host:port", "::1:5432", "1.2.3.4:70000"):
        with pytest.raises(ValueError, match="address="):
            parse_address(bad)
    assert is_loopback("127.0.0.2")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("10.0.0.1")
    assert not is_loopback("example.com")


# --- the real PostgreSQL through the proxy -------------------------------------------


@pytest.mark.postgres
def test_postgres_through_the_proxy(pg_url: str) -> None:
    psycopg = pytest.importorskip("psycopg")

    def dsn(proxy: FaultProxy) -> str:
        return f"host=127.0.0.1 port={proxy.port} user=postgres dbname=test connect_timeout=1"

    with FaultProxy("127.0.0.1:5432") as proxy:
        with psycopg.connect(dsn(proxy), autocommit=True) as conn:
            started = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            base = time.perf_counter() - started

            # Latency: each round trip (one per simple query) pays it.
            proxy.configure(latency=0.2)
            started = time.perf_counter()
            for _ in range(3):
                assert conn.execute("SELECT 1").fetchone() == (1,)
            slowed = time.perf_counter() - started
            proxy.clear()
            assert 0.6 <= slowed < 0.6 + 0.3 + 3 * base, slowed

            # Blackhole: the next query hangs until its (client-side) timeout.
            proxy.configure(mode="blackhole")
            done = threading.Event()
            failures: list[BaseException] = []

            def query() -> None:
                try:
                    conn.execute("SELECT 2")
                except psycopg.Error as exc:
                    failures.append(exc)
                done.set()

            threading.Thread(target=query, daemon=True).start()
            assert not done.wait(1.0)  # still hanging after a second
            # ...and a new connection times out on connect_timeout.
            started = time.perf_counter()
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(dsn(proxy))
            assert 0.9 <= time.perf_counter() - started < 3

            # Reset: the hanging query's connection is cut, new ones fail at once.
            proxy.configure(mode="reset")
            assert done.wait(5.0)
            assert isinstance(failures[0], psycopg.OperationalError)
        started = time.perf_counter()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn(proxy))
        assert time.perf_counter() - started < 0.5

        proxy.clear()
        with psycopg.connect(dsn(proxy)) as conn:
            assert conn.execute("SELECT 3").fetchone() == (3,)
        stats = proxy.stats()
    assert stats.reached == 2  # the blackholed connect never reached PostgreSQL
    assert stats.refused == 1
    assert stats.cut >= 1


# --- suture proxy LISTEN TARGET ------------------------------------------------------


def _suture(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "suture.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["0", "10.9.8.7:5432"], "refused: target '10.9.8.7' is not a loopback address"),
        (["0.0.0.0:0", "127.0.0.1:5432"], "refused: listen '0.0.0.0' is not a loopback"),
        (["0", "127.0.0.1:nope"], "refused: address='127.0.0.1:nope': 'nope' is not a port"),
        (["0", "127.0.0.1:{closed}"], "the target 127.0.0.1:{closed} does not answer: conn"),
        (["{taken}", "127.0.0.1:5432"], "cannot listen on 127.0.0.1:{taken}: address already"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(argv: list[str], message: str) -> None:
    with socket.socket() as taken, socket.socket() as closed:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        closed.bind(("127.0.0.1", 0))
        ports = {"taken": taken.getsockname()[1], "closed": closed.getsockname()[1]}
        argv = [a.format(**ports) for a in argv]
        if "{taken}" in message:  # the target must answer for the listen error to show
            argv[1] = f"127.0.0.1:{taken.getsockname()[1]}"
        process = _suture("proxy", *argv)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"suture proxy: {message.format(**ports)}"), err


def test_cli_serves_switches_through_control_and_stops_on_ctrl_c(
    echo: tuple[str, int],
) -> None:
    process = _suture("proxy", "127.0.0.1:0", f"127.0.0.1:{echo[1]}", "--latency", "0.05")
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(6)]
    try:
        listen = parse_address(lines[1].split()[1])
        control = lines[3].split()[1]
        assert "latency=0.05" in lines[4]
        with socket.create_connection(listen, timeout=5) as sock:
            assert _round_trip(sock) >= 0.05
        status, state = _http(control + "/faults", "POST", {"mode": "reset"})
        assert (status, state["stats"]["reached"]) == (200, 1)
        with socket.create_connection(listen, timeout=5) as sock:
            with pytest.raises(ConnectionResetError):
                sock.sendall(b"x")
                sock.recv(1)
    except ConnectionResetError:  # the reset may already surface at connect
        pass
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "suture proxy: stopped; 2 connection(s), 1 reached the target" in out
    assert "Traceback" not in err
    assert "faults now {'mode': 'reset'" in err
