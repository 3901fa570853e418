# Over ~400 lines on purpose: one proxy (faults, counts, two paths, two life cycles, control).
"""A TCP fault proxy: the network's faults between a service and its dependency.

In-process faults (:mod:`suture.chaos.faults`) raise where the code asks for
them; a slow or partitioned database is something else: the driver waits on a
socket, the connection stays checked out, the timeouts that fire are the
driver's. :class:`FaultProxy` sits on that socket::

    service --> FaultProxy(listen 127.0.0.1:6432) --> PostgreSQL 127.0.0.1:5432

    with FaultProxy("127.0.0.1:5432") as proxy:      # a loop in a background thread
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
        proxy.configure(mode="blackhole")              # queries hang
        proxy.configure(mode="pass", latency=0.3)      # +300 ms per round trip
        proxy.clear()                                  # healthy again
        proxy.stats().reached                          # connections that reached the target

    async with FaultProxy("127.0.0.1:5432") as proxy:  # or in the running loop
        ...

The faults (:class:`ProxyFaults`), switched at run time from any thread:

* ``mode="pass"``: bytes flow (with the latency, bandwidth and drop below);
* ``mode="reset"``: every open connection is cut with a TCP reset, and every
  new one is reset as soon as it is accepted (to a client, as fast as a
  refused connection);
* ``mode="blackhole"``: connections are accepted and then nothing is
  forwarded either way (a partition: the client waits for its own timeout);
  back in ``pass``, what was held is delivered, as TCP would after a partition;
* ``latency`` (+ ``jitter``): seconds added to every round trip (each chunk
  from the client to the target is held that long, in order);
* ``bandwidth``: bytes per second in each direction, shared by every connection;
* ``drop``: the fraction of new connections reset at once.

Randomness (jitter, drop) and time are injected (``rand``, ``clock``). Only
loopback addresses are accepted unless ``allow_remote=True``. An optional
control endpoint (``control="127.0.0.1:0"``, always on loopback) answers
``GET /`` with the faults and the counts and takes ``POST /faults`` (a JSON
object of changes) and ``POST /clear``: what ``suture proxy`` serves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import json
import math
import os
import random
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, cast, get_args

from suture._config import Seconds, check_clock, check_fraction, check_seconds
from suture.clock import SYSTEM_CLOCK, Clock
from suture.events import logger

__all__ = [
    "MODES",
    "FaultProxy",
    "Mode",
    "ProxyError",
    "ProxyFaults",
    "ProxyStats",
    "is_loopback",
    "parse_address",
]

Mode = Literal["pass", "reset", "blackhole"]
MODES: tuple[Mode, ...] = get_args(Mode)

Address = tuple[str, int]

_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
# Bytes queued in one direction (latency, bandwidth, blackhole) before the
# sender is paused, and the level at which it is resumed.
_HIGH_WATER = 1 << 20
_LOW_WATER = 1 << 18
_LINGER_RESET = struct.pack("ii", 1, 0)


class ProxyError(OSError):
    """The proxy cannot run: a port in use, a target that does not answer, a refused address."""


def parse_address(text: str, *, default_host: str = "127.0.0.1") -> Address:
    """``"HOST:PORT"``, ``"[::1]:PORT"``, ``":PORT"`` or ``"PORT"`` as ``(host, port)``."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"address={text!r}: expected HOST:PORT")
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"address={text!r}: write an IPv6 address in brackets, [::1]:5432")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"address={text!r}: {port_text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"address={text!r}: the port must be between 0 and 65535")
    return host or default_host, port


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and the loopback addresses (``127.0.0.0/8``, ``::1``)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _address(name: str, value: str | Address) -> Address:
    if isinstance(value, str):
        return parse_address(value)
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
        and 0 <= value[1] <= 65535
    ):
        return value
    raise TypeError(f"{name}={value!r}: expected 'HOST:PORT' or a (host, port) tuple")


def _reason(exc: OSError) -> str:
    """``address already in use``, ``connection refused``: the errno's words, lower case."""
    text = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
    return text.lower()


def _show(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyFaults:
    """What the proxy does to the traffic. The default forwards everything untouched."""

    #: ``"pass"``, ``"reset"`` or ``"blackhole"`` (see the module's description).
    mode: Mode = "pass"
    #: Seconds added to every round trip.
    latency: float = 0.0
    #: The added latency varies uniformly within ``latency ± jitter`` (never below 0).
    jitter: float = 0.0
    #: Bytes per second in each direction, shared by every connection; ``inf``: no limit.
    bandwidth: float = math.inf
    #: Fraction in [0, 1] of new connections reset as soon as they are accepted.
    drop: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}: must be one of {', '.join(MODES)}")
        object.__setattr__(self, "latency", check_seconds("latency", self.latency))
        object.__setattr__(self, "jitter", check_seconds("jitter", self.jitter))
        bandwidth = self.bandwidth
        if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)):
            raise TypeError(f"bandwidth={bandwidth!r}: expected bytes per second as a number")
        if not bandwidth > 0:  # also NaN
            raise ValueError(f"bandwidth={bandwidth!r}: must be more than 0 bytes per second")
        object.__setattr__(self, "bandwidth", float(bandwidth))
        object.__setattr__(self, "drop", check_fraction("drop", self.drop, allow_zero=True))

    @property
    def shaped(self) -> bool:
        """True when bytes in ``pass`` mode are delayed (latency or bandwidth)."""
        return self.latency > 0 or self.bandwidth != math.inf

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: an unlimited bandwidth is ``None``."""
        return {
            "mode": self.mode,
            "latency": self.latency,
            "jitter": self.jitter,
            "bandwidth": None if self.bandwidth == math.inf else self.bandwidth,
            "drop": self.drop,
        }

    def changed(self, changes: dict[str, Any]) -> ProxyFaults:
        """A copy with ``changes`` (as :meth:`as_dict` writes them) applied; bad keys are named."""
        if not isinstance(changes, dict):
            raise TypeError(f"changes={changes!r}: expected an object of fault settings")
        known = {f.name for f in fields(ProxyFaults)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(
                f"unknown setting(s) {', '.join(map(repr, unknown))}: "
                f"expected some of {', '.join(sorted(known))}"
            )
        values = dict(changes)
        if "bandwidth" in values and values["bandwidth"] is None:
            values["bandwidth"] = math.inf
        return replace(self, **values)


_PASS = ProxyFaults()


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyStats:
    """The proxy's counts since it started. ``up`` is client to target, ``down`` the reverse."""

    #: Connections accepted from clients.
    connections: int = 0
    #: Connections open now.
    active: int = 0
    #: Connections that reached the target (the dependency saw them).
    reached: int = 0
    #: New connections reset because the mode was ``reset``.
    refused: int = 0
    #: New connections reset by ``drop``.
    dropped: int = 0
    #: Open connections cut when the mode became ``reset``.
    cut: int = 0
    #: Connections whose target did not accept them.
    target_failed: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    #: Chunks read from clients: about one per request for request/response protocols.
    chunks_up: int = 0
    chunks_down: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class _Counters:
    """The mutable counts behind :class:`ProxyStats` (same fields), touched only in the loop."""

    connections: int = 0
    active: int = 0
    reached: int = 0
    refused: int = 0
    dropped: int = 0
    cut: int = 0
    target_failed: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    chunks_up: int = 0
    chunks_down: int = 0

    def freeze(self) -> ProxyStats:
        return ProxyStats(**{f.name: getattr(self, f.name) for f in fields(ProxyStats)})


def _abort(transport: asyncio.BaseTransport | None) -> None:
    """Close with a TCP reset (not a FIN): the peer sees ``connection reset``."""
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # already gone
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    cast(asyncio.Transport, transport).abort()


class _Flow:
    """One direction of one proxied connection: the fast path writes at once, else a queue."""

    __slots__ = ("dst", "paused", "pipe", "queue", "queued", "src", "task", "up")

    _EOF = b""

    def __init__(self, pipe: _Pipe, *, up: bool) -> None:
        self.pipe = pipe
        self.up = up
        self.src: _Side | None = None
        self.dst: _Side | None = None
        # (deliver_at, data); b"" is the end of the stream (write_eof, or close).
        self.queue: deque[tuple[float, bytes]] = deque()
        self.queued = 0
        self.paused = False  # the source paused because too much is queued
        self.task: asyncio.Task[None] | None = None

    def feed(self, data: bytes) -> None:
        proxy = self.pipe.proxy
        counters = proxy._counters
        if self.up:
            counters.bytes_up += len(data)
            counters.chunks_up += 1
        else:
            counters.bytes_down += len(data)
            counters.chunks_down += 1
        if proxy._untouched and self.task is None and self.dst is not None:
            self.dst.transport.write(data)  # the pass-mode path: no task, no copy
            return
        self._enqueue(data)

    def end(self) -> None:
        """The source sent its end of stream (EOF or close): forward it in order."""
        self._enqueue(self._EOF)

    def _enqueue(self, data: bytes) -> None:
        proxy = self.pipe.proxy
        now = proxy._clock.now()
        deliver_at = now
        faults = proxy._faults
        if self.up and faults.latency > 0:
            delay = faults.latency
            if faults.jitter > 0:
                delay = max(0.0, delay + faults.jitter * (2.0 * proxy._rand() - 1.0))
            deliver_at = now + delay
        if self.queue:  # in order, whatever the jitter
            deliver_at = max(deliver_at, self.queue[-1][0])
        self.queue.append((deliver_at, data))
        self.queued += len(data)
        if self.queued > _HIGH_WATER and not self.paused and self.src is not None:
            self.paused = True
            self.src.pause_reading()
        if self.task is None:
            self.task = proxy._loop_or_raise().create_task(self._drain())

    async def _drain(self) -> None:
        proxy = self.pipe.proxy
        clock = proxy._clock
        try:
            while self.queue:
                if not proxy._flowing.is_set():
                    await proxy._flowing.wait()
                deliver_at, data = self.queue[0]
                wait = deliver_at - clock.now()
                if wait > 0:
                    await clock.asleep(wait)
                dst = self.dst
                if dst is None or dst.transport.is_closing():
                    break
                if not data:
                    self.queue.popleft()
                    dst.finish()
                    continue
                bandwidth = proxy._faults.bandwidth
                if bandwidth != math.inf:
                    # Smooth: at most 1/50 s worth of bytes at a time.
                    piece = max(1024, int(bandwidth / 50))
                    if len(data) > piece:
                        self.queue[0] = (deliver_at, data[piece:])
                        data = data[:piece]
                    else:
                        self.queue.popleft()
                    await proxy._shape(self.up, len(data))
                    if not proxy._flowing.is_set():
                        await proxy._flowing.wait()
                else:
                    self.queue.popleft()
                self.queued -= len(data)
                dst.transport.write(data)
                await dst.writable()
                if self.paused and self.queued < _LOW_WATER and self.src is not None:
                    self.paused = False
                    self.src.resume_reading()
        finally:
            self.task = None


class _Side(asyncio.Protocol):
    """One socket of a proxied connection (the client's or the target's)."""

    def __init__(self, pipe: _Pipe, *, client: bool) -> None:
        self.pipe = pipe
        self.client = client
        self.outflow = pipe.up if client else pipe.down  # where what this side sends goes
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)
        self._writable: asyncio.Event | None = None
        self._reading_paused = 0  # pauses asked (the other side's buffer, a full queue)
        self.got_eof = False
        self.sent_eof = False

    # --- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.client:
            self.pipe.proxy._accepted(self)

    def data_received(self, data: bytes) -> None:
        self.outflow.feed(data)

    def eof_received(self) -> bool:
        self.got_eof = True
        self.pipe.flow_from(self).end()
        # Keep the other direction open (half-close) until it has ended too.
        return not self.sent_eof

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe.lost(self, exc)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.Event()
        self._writable.clear()
        other = self.pipe.other(self)
        if other is not None:
            other.pause_reading()

    def resume_writing(self) -> None:
        if self._writable is not None:
            self._writable.set()
        other = self.pipe.other(self)
        if other is not None:
            other.resume_reading()

    # --- used by the flows ----------------------------------------------------------

    async def writable(self) -> None:
        if self._writable is not None and not self._writable.is_set():
            await self._writable.wait()

    def pause_reading(self) -> None:
        self._reading_paused += 1
        if self._reading_paused == 1 and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused == 0:
            return
        self._reading_paused -= 1
        if self._reading_paused == 0 and not self.transport.is_closing():
            self.transport.resume_reading()

    def finish(self) -> None:
        """The other side ended its stream: end ours the same way."""
        if self.transport.is_closing() or self.sent_eof:
            return
        self.sent_eof = True
        if self.got_eof or self.pipe.other_gone(self) or not self.transport.can_write_eof():
            self.transport.close()  # flushes what is buffered, then FIN
        else:
            self.transport.write_eof()


class _Pipe:
    """One proxied connection: the client's side, the target's side and the two flows."""

    __slots__ = ("client", "down", "proxy", "target", "up")

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.client: _Side | None = None
        self.target: _Side | None = None
        self.up = _Flow(self, up=True)
        self.down = _Flow(self, up=False)

    def flow_from(self, side: _Side) -> _Flow:
        return self.up if side.client else self.down

    def other(self, side: _Side) -> _Side | None:
        return self.target if side.client else self.client

    def other_gone(self, side: _Side) -> bool:
        other = self.other(side)
        return other is None or other.transport.is_closing()

    def attach_target(self, side: _Side) -> None:
        self.target = side
        self.up.dst = side
        self.down.src = side

    def lost(self, side: _Side, exc: Exception | None) -> None:
        other = self.other(side)
        if exc is not None:  # a reset on one side is a reset on the other
            self.abort()
            return
        if other is None or other.transport.is_closing():
            self.proxy._forget(self)
            return
        if not side.got_eof:
            self.flow_from(side).end()

    def abort(self) -> None:
        for flow in (self.up, self.down):
            flow.queue.clear()
            flow.queued = 0
            if flow.task is not None:
                flow.task.cancel()
        for side in (self.client, self.target):
            if side is not None:
                _abort(side.transport)
        self.proxy._forget(self)


class FaultProxy:
    """An asyncio TCP proxy that injects network faults; see the module's description.

    :param target: where connections go, ``"HOST:PORT"`` or ``(host, port)``.
    :param listen: where to accept them (default ``127.0.0.1`` on a free port).
    :param allow_remote: accept a listen or target address that is not loopback.
    :param control: also serve the control endpoint there (always loopback).
    :param faults: the faults from the start (default: none).
    :param rand: a float in [0, 1) per call, for jitter and drop (seed it to replay a run).
    :param clock: where latency and bandwidth waits happen.
    :param connect_timeout: seconds to reach the target for each connection.
    """

    def __init__(
        self,
        target: str | Address,
        *,
        listen: str | Address = ("127.0.0.1", 0),
        allow_remote: bool = False,
        control: str | Address | None = None,
        faults: ProxyFaults = _PASS,
        rand: Callable[[], float] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        connect_timeout: Seconds = 5.0,
    ) -> None:
        self.target = _address("target", target)
        self.listen = _address("listen", listen)
        self.control = None if control is None else _address("control", control)
        if not allow_remote:
            for name, (host, _) in (("target", self.target), ("listen", self.listen)):
                if not is_loopback(host):
                    raise ProxyError(
                        f"{name} {host!r} is not a loopback address; "
                        "pass allow_remote=True (--allow-remote) to use another host"
                    )
        if self.control is not None and not is_loopback(self.control[0]):
            raise ProxyError(f"control {self.control[0]!r}: the control endpoint is loopback only")
        if not isinstance(faults, ProxyFaults):
            raise TypeError(f"faults={faults!r}: expected a ProxyFaults")
        if rand is not None and not callable(rand):
            raise TypeError(f"rand={rand!r}: expected a callable returning a float in [0, 1)")
        self._rand: Callable[[], float] = rand if rand is not None else random.Random().random
        self._clock = check_clock(clock)
        self._connect_timeout = check_seconds("connect_timeout", connect_timeout, positive=True)
        self._faults = faults
        self._lock = threading.Lock()
        self._counters = _Counters()
        self._pipes: set[_Pipe] = set()
        self._bandwidth_next = [0.0, 0.0]  # down, up: when each direction is free again
        # Created in the proxy's loop by start().
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._flowing: asyncio.Event = cast(asyncio.Event, None)
        # True when bytes go straight through (pass, no latency, no limit): read per chunk.
        self._untouched = False
        self._server: asyncio.Server | None = None
        self._control_server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._bound: Address | None = None
        self._control_bound: Address | None = None

    # --- faults and counts: from any thread ------------------------------------------

    @property
    def faults(self) -> ProxyFaults:
        return self._faults

    def set(self, faults: ProxyFaults) -> ProxyFaults:
        """Replace every fault. Applied when this returns (open connections included)."""
        if not isinstance(faults, ProxyFaults):
            raise TypeError(f"faults={faults!r}: expected a ProxyFaults")
        with self._lock:
            old, self._faults = self._faults, faults
        if faults != old:
            logger.warning("proxy %s: faults now %s", _show(self.target), faults.as_dict())
        self._apply_everywhere()
        return faults

    def configure(
        self,
        *,
        mode: Mode | None = None,
        latency: Seconds | None = None,
        jitter: Seconds | None = None,
        bandwidth: float | None = None,
        drop: float | None = None,
    ) -> ProxyFaults:
        """Change some faults (the others keep theirs); returns the new faults.

        ``bandwidth=math.inf`` lifts the limit; a ``None`` leaves a setting as it is.
        """
        given = {
            "mode": mode,
            "latency": latency,
            "jitter": jitter,
            "bandwidth": bandwidth,
            "drop": drop,
        }
        changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        with self._lock:
            new = replace(self._faults, **changes)
        return self.set(new)

    def clear(self) -> ProxyFaults:
        """Back to ``pass`` with no latency, no limit and no drop."""
        return self.set(_PASS)

    async def aset(self, faults: ProxyFaults) -> ProxyFaults:
        """:meth:`set` for a coroutine in another event loop: awaits instead of blocking."""
        if self._loop is None or self._in_loop():
            return self.set(faults)
        if not isinstance(faults, ProxyFaults):
            raise TypeError(f"faults={faults!r}: expected a ProxyFaults")
        with self._lock:
            old, self._faults = self._faults, faults
        if faults != old:
            logger.warning("proxy %s: faults now %s", _show(self.target), faults.as_dict())
        future = asyncio.run_coroutine_threadsafe(self._aapply(), self._loop)
        await asyncio.wrap_future(future)
        return faults

    async def aconfigure(self, **changes: Any) -> ProxyFaults:
        """:meth:`configure` for a coroutine in another event loop."""
        changes = {k: v for k, v in changes.items() if v is not None}
        with self._lock:
            new = replace(self._faults, **changes)
        return await self.aset(new)

    async def aclear(self) -> ProxyFaults:
        return await self.aset(_PASS)

    def stats(self) -> ProxyStats:
        """The counts since the start (a snapshot)."""
        return self._counters.freeze()

    # --- addresses -------------------------------------------------------------------

    @property
    def address(self) -> Address:
        """Where the proxy listens (the real port once started)."""
        return self._bound if self._bound is not None else self.listen

    @property
    def host(self) -> str:
        return self.address[0]

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def control_address(self) -> Address | None:
        """Where the control endpoint listens, once started (``None`` without one)."""
        return self._control_bound

    @property
    def control_url(self) -> str | None:
        bound = self._control_bound
        return None if bound is None else f"http://{_show(bound)}"

    # --- life cycle in the running loop ----------------------------------------------

    async def start(self) -> FaultProxy:
        """Listen (and serve the control endpoint) in the running loop."""
        if self._server is not None:
            raise RuntimeError("this FaultProxy is already running")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._flowing = asyncio.Event()
        self._apply()
        self._server = await self._listen(
            self.listen, lambda: _Side(_Pipe(self), client=True), "listen on"
        )
        self._bound = self._server.sockets[0].getsockname()[:2]
        if self.control is not None:
            try:
                self._control_server = await self._listen(
                    self.control, lambda: _ControlProtocol(self), "serve the control endpoint on"
                )
            except ProxyError:
                await self.aclose()
                raise
            self._control_bound = self._control_server.sockets[0].getsockname()[:2]
        return self

    async def _listen(
        self, address: Address, factory: Callable[[], asyncio.Protocol], what: str
    ) -> asyncio.Server:
        assert self._loop is not None
        try:
            return await self._loop.create_server(
                factory, address[0], address[1], reuse_address=True, backlog=512
            )
        except OSError as exc:
            raise ProxyError(f"cannot {what} {_show(address)}: {_reason(exc)}") from exc

    # ``timeout`` bounds the connection only, as in socket.create_connection.
    async def aprobe(self, timeout: Seconds = 2.0) -> None:  # noqa: ASYNC109
        """Connect once to the target; :class:`ProxyError` naming why when it does not answer."""
        limit = check_seconds("timeout", timeout, positive=True)
        host, port = self.target
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), limit)
        except TimeoutError:
            raise ProxyError(
                f"the target {_show(self.target)} does not answer (no connection in {limit:g} s)"
            ) from None
        except OSError as exc:
            raise ProxyError(
                f"the target {_show(self.target)} does not answer: {_reason(exc)}"
            ) from exc
        writer.close()
        with contextlib.suppress(OSError):  # a target that resets at once still answered
            await writer.wait_closed()

    async def aclose(self) -> None:
        """Stop listening and cut every open connection."""
        for server in (self._server, self._control_server):
            if server is not None:
                server.close()
        for pipe in list(self._pipes):
            pipe.abort()
        for server in (self._server, self._control_server):
            if server is not None:
                await server.wait_closed()
        self._server = self._control_server = None

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- life cycle in a background thread --------------------------------------------

    def start_in_thread(self, *, timeout: float = 10.0) -> FaultProxy:
        """Run in an event loop of its own, on a daemon thread (for blocking code and tests)."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                ready.set_exception(exc)
                loop.close()
                return
            ready.set_result(None)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.aclose())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=run, name=f"suture-proxy-{self.target[1]}", daemon=True)
        thread.start()
        try:
            ready.result(timeout)
        except BaseException:
            thread.join(timeout)
            raise
        self._thread = thread
        return self

    def close(self, *, timeout: float = 10.0) -> None:
        """Stop the background thread's proxy (see :meth:`start_in_thread`)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        self._thread = None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

    def __enter__(self) -> FaultProxy:
        return self.start_in_thread()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def probe(self, timeout: Seconds = 2.0) -> None:
        """:meth:`aprobe` from blocking code."""
        limit = check_seconds("timeout", timeout, positive=True)
        try:
            socket.create_connection(self.target, timeout=limit).close()
        except TimeoutError:
            raise ProxyError(
                f"the target {_show(self.target)} does not answer (no connection in {limit:g} s)"
            ) from None
        except OSError as exc:
            raise ProxyError(
                f"the target {_show(self.target)} does not answer: {_reason(exc)}"
            ) from exc

    # --- inside the loop ----------------------------------------------------------------

    def _in_loop(self) -> bool:
        return self._loop_thread == threading.get_ident()

    def _loop_or_raise(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the FaultProxy is not started")
        return self._loop

    def _apply_everywhere(self) -> None:
        loop = self._loop
        if loop is None or self._server is None or loop.is_closed():
            return
        if self._in_loop():
            self._apply()
            return
        future = asyncio.run_coroutine_threadsafe(self._aapply(), loop)
        future.result(10.0)

    async def _aapply(self) -> None:
        self._apply()

    def _apply(self) -> None:
        """Make the open connections follow the current faults (in the loop)."""
        faults = self._faults
        if faults.mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()
        self._untouched = faults.mode == "pass" and not faults.shaped
        if faults.mode == "reset":
            pipes = list(self._pipes)
            self._counters.cut += len(pipes)
            for pipe in pipes:
                pipe.abort()

    async def _shape(self, up: bool, size: int) -> None:
        bandwidth = self._faults.bandwidth
        if bandwidth == math.inf:
            return
        now = self._clock.now()
        start = max(now, self._bandwidth_next[up])
        self._bandwidth_next[up] = start + size / bandwidth
        wait = self._bandwidth_next[up] - now
        if wait > 0:
            await self._clock.asleep(wait)

    def _accepted(self, side: _Side) -> None:
        counters = self._counters
        counters.connections += 1
        faults = self._faults
        if faults.mode == "reset":
            counters.refused += 1
            _abort(side.transport)
            return
        if faults.drop > 0 and (faults.drop >= 1.0 or self._rand() < faults.drop):
            counters.dropped += 1
            _abort(side.transport)
            return
        pipe = side.pipe
        pipe.client = side
        pipe.up.src = side
        pipe.down.dst = side
        self._pipes.add(pipe)
        counters.active += 1
        side.pause_reading()  # until the target is reached
        self._loop_or_raise().create_task(self._connect(pipe))

    async def _connect(self, pipe: _Pipe) -> None:
        client = pipe.client
        assert client is not None
        assert self._loop is not None
        if not self._flowing.is_set():  # a blackhole: hold the client, reach nothing
            await self._flowing.wait()
        if pipe not in self._pipes:  # cut meanwhile
            return
        host, port = self.target
        try:
            await asyncio.wait_for(
                self._loop.create_connection(lambda: _target_side(pipe), host, port),
                self._connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            self._counters.target_failed += 1
            logger.warning(
                "proxy %s: the target did not accept a connection: %s",
                _show(self.target),
                exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__,
            )
            pipe.abort()
            return
        if pipe not in self._pipes:  # cut while connecting
            pipe.abort()
            return
        self._counters.reached += 1
        client.resume_reading()

    def _forget(self, pipe: _Pipe) -> None:
        if pipe in self._pipes:
            self._pipes.discard(pipe)
            self._counters.active -= 1

    def __repr__(self) -> str:
        return (
            f"FaultProxy({_show(self.address)} -> {_show(self.target)}, mode={self._faults.mode!r})"
        )


def _target_side(pipe: _Pipe) -> _Side:
    side = _Side(pipe, client=False)
    pipe.attach_target(side)
    return side


# --- the control endpoint: a few lines of HTTP/1.1, loopback only ----------------------

_MAX_REQUEST = 64 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
}


class _ControlProtocol(asyncio.Protocol):
    """``GET /`` the state; ``POST /faults`` a JSON object of changes; ``POST /clear``."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _MAX_REQUEST:
            self._answer(413, {"error": "request too large"})
            return
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = bytes(self.buffer[:head_end]).decode("latin-1").split("\r\n")
        parts = head[0].split(" ")
        if len(parts) != 3:
            self._answer(400, {"error": "malformed request line"})
            return
        method, path, _ = parts
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            self._answer(400, {"error": "bad Content-Length"})
            return
        body = bytes(self.buffer[head_end + 4 :])
        if len(body) < length:
            return
        self._answer(*self._handle(method, path, headers, body[:length]))

    def _handle(  # noqa: PLR0911 - one early answer per route and per refusal, as a table
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        host = headers.get("host", "")
        bracketed = host.startswith("[")
        host_name = host[1:].partition("]")[0] if bracketed else host.partition(":")[0]
        if not is_loopback(host_name):  # a page elsewhere cannot reach it by DNS rebinding
            return 403, {"error": "the control endpoint answers only Host: 127.0.0.1 / localhost"}
        proxy = self.proxy
        if path in ("/", "/faults") and method == "GET":
            return 200, self.state()
        if path not in ("/faults", "/clear"):
            return 404, {"error": f"no {path}: GET /, POST /faults, POST /clear"}
        if method != "POST":
            return 405, {"error": f"{path} takes POST"}
        if path == "/clear":
            proxy.clear()
            return 200, self.state()
        # A page in a browser can POST text/plain without asking; JSON needs a preflight.
        if headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return 415, {"error": "send the changes as Content-Type: application/json"}
        try:
            changes = json.loads(body or b"{}")
            proxy.set(proxy.faults.changed(changes))
        except (ValueError, TypeError) as exc:
            return 400, {"error": str(exc)}
        return 200, self.state()

    def state(self) -> dict[str, Any]:
        proxy = self.proxy
        return {
            "listen": _show(proxy.address),
            "target": _show(proxy.target),
            "faults": proxy.faults.as_dict(),
            "stats": proxy.stats().as_dict(),
        }

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        body = json.dumps(payload).encode() + b"\n"
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self.transport.close()
