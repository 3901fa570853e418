# Over ~400 lines on purpose: one fault injector and the two pool holders it drives.
"""In-process faults: errors, added latency and pool exhaustion per named target.

A :class:`Chaos` holds one :class:`FaultConfig` per named target (``"database"``,
``"payments"``...). Every fault is off by default. The code that talks to a
dependency asks for its faults right before the real call::

    chaos = Chaos()
    chaos.configure("database", error_rate=0.3, latency=0.05)

    async def load_tasks() -> list[Task]:
        await chaos.ainject("database")   # may wait, may raise InjectedFault
        return await session.scalars(...)

Three kinds of fault:

* **errors**: with probability ``error_rate`` the call raises
  :class:`InjectedFault`, a :class:`ConnectionError` that every suture policy
  sees as transient (so retries and breakers react as they would to a real
  outage);
* **latency**: ``latency`` seconds added before the call (through the injected
  clock, so tests never wait); ``statement_latency`` seconds added to every
  statement *while the connection is held*, as a slow database does (through
  an integration that calls :meth:`Chaos.statement_delay`, such as
  :func:`suture.contrib.sqlalchemy_chaos.slow_statements`): a slow database
  fills the pool, latency before the call does not;
* **pool exhaustion**: ``hold`` connections taken from the target's pool and
  kept, through a holder registered with :meth:`Chaos.register_holder`
  (:class:`ConnectionHog` for a blocking pool, :class:`AsyncConnectionHog` for
  an asyncio one).

Randomness and time are injected (``rand``, ``clock``); configuration changes
are thread-safe and take effect on the next call; each injected fault is a
:class:`suture.events.FaultInjected` event.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import random
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass, replace
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from suture._config import Seconds, check_fraction, check_int, check_seconds
from suture.clock import _WAITS, SYSTEM_CLOCK, Clock
from suture.events import FaultInjected, emit, logger

__all__ = [
    "AsyncConnectionHog",
    "Chaos",
    "ConnectionHog",
    "FaultConfig",
    "Holder",
    "InjectedFault",
]

P = ParamSpec("P")
T = TypeVar("T")
C = TypeVar("C")


class InjectedFault(ConnectionError):
    """An error raised on purpose by :class:`Chaos`. Transient, like a dropped connection."""

    #: Read by ``suture.classify``: retries retry it and breakers count it.
    transient = True

    def __init__(self, target: str, kind: str = "error") -> None:
        self.target = target
        self.kind = kind
        super().__init__(f"injected fault on {target!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.target, self.kind))


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultConfig:
    """The faults of one target. The default injects nothing."""

    #: Probability in [0, 1] that a call raises :class:`InjectedFault`.
    error_rate: float = 0.0
    #: Seconds added before every call.
    latency: float = 0.0
    #: Connections held out of the target's pool (needs a registered holder).
    hold: int = 0
    #: Seconds added to every statement while its connection is held (needs an integration).
    statement_latency: float = 0.0

    def __post_init__(self) -> None:
        check_fraction("error_rate", self.error_rate, allow_zero=True)
        check_seconds("latency", self.latency)
        check_int("hold", self.hold, minimum=0)
        check_seconds("statement_latency", self.statement_latency)

    @property
    def active(self) -> bool:
        """True when any fault is on."""
        return (
            self.error_rate > 0 or self.latency > 0 or self.hold > 0 or self.statement_latency > 0
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "error_rate": self.error_rate,
            "latency": self.latency,
            "hold": self.hold,
            "statement_latency": self.statement_latency,
        }


_OFF = FaultConfig()


class Holder(Protocol):
    """Something that keeps ``n`` connections of a pool checked out (see :class:`ConnectionHog`)."""

    def set_held(self, count: int) -> None: ...

    @property
    def held(self) -> int: ...


class Chaos:
    """Fault injection per named target; every fault off until :meth:`configure` turns it on.

    :param rand: returns a float in [0, 1); seed it (``random.Random(7).random``)
        for reproducible runs.
    :param clock: where the added latency is waited.
    """

    def __init__(
        self,
        *,
        rand: Callable[[], float] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if rand is not None and not callable(rand):
            raise TypeError(f"rand={rand!r}: expected a callable returning a float in [0, 1)")
        self._rand = rand if rand is not None else random.Random().random
        self.clock = clock
        self._lock = threading.Lock()
        # Copy-on-write: readers take the dict without a lock.
        self._configs: dict[str, FaultConfig] = {}
        self._holders: dict[str, Holder] = {}
        self._counts: dict[tuple[str, str], int] = {}

    # --- configuration -----------------------------------------------------------

    def configure(
        self,
        target: str,
        *,
        error_rate: float | None = None,
        latency: Seconds | None = None,
        hold: int | None = None,
        statement_latency: Seconds | None = None,
    ) -> FaultConfig:
        """Change some faults of ``target`` (the others keep theirs); returns the new config."""
        if not isinstance(target, str) or not target:
            raise ValueError(f"target={target!r}: expected a non-empty name")
        changes: dict[str, Any] = {}
        if error_rate is not None:
            changes["error_rate"] = check_fraction("error_rate", error_rate, allow_zero=True)
        if latency is not None:
            changes["latency"] = check_seconds("latency", latency)
        if hold is not None:
            changes["hold"] = check_int("hold", hold, minimum=0)
        if statement_latency is not None:
            changes["statement_latency"] = check_seconds("statement_latency", statement_latency)
        with self._lock:
            old = self._configs.get(target, _OFF)
            new = replace(old, **changes)
            configs = dict(self._configs)
            if new.active:
                configs[target] = new
            else:
                configs.pop(target, None)
            self._configs = configs
            holder = self._holders.get(target)
        if holder is not None and new.hold != old.hold:
            holder.set_held(new.hold)
        if new != old:
            logger.warning("chaos %s: faults now %s", target, new.as_dict())
        return new

    def clear(self, target: str | None = None) -> None:
        """Turn every fault off (of one target, or of all)."""
        targets = [target] if target is not None else list(self._configs)
        for name in targets:
            self.configure(name, error_rate=0.0, latency=0.0, hold=0, statement_latency=0.0)

    def config(self, target: str) -> FaultConfig:
        """The faults currently set for ``target``."""
        return self._configs.get(target, _OFF)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every target with a fault on, and its counts of injected faults."""
        configs = self._configs
        counts = dict(self._counts)
        out: dict[str, dict[str, Any]] = {}
        for name in sorted(set(configs) | {t for t, _ in counts} | set(self._holders)):
            cfg = configs.get(name, _OFF).as_dict()
            holder = self._holders.get(name)
            cfg["held"] = holder.held if holder is not None else 0
            cfg["injected"] = {k: n for (t, k), n in counts.items() if t == name}
            out[name] = cfg
        return out

    @property
    def active(self) -> bool:
        """True when any target has a fault on."""
        return bool(self._configs)

    def register_holder(self, target: str, holder: Holder) -> None:
        """Let ``configure(target, hold=n)`` take ``n`` connections through ``holder``."""
        if not callable(getattr(holder, "set_held", None)):
            raise TypeError(f"holder={holder!r}: expected an object with set_held(count)")
        with self._lock:
            self._holders[target] = holder
        want = self.config(target).hold
        if want:
            holder.set_held(want)

    # --- injection ---------------------------------------------------------------

    def decide(self, target: str) -> tuple[float, bool]:
        """The faults for one call, without acting on them: ``(latency, raise_error)``."""
        cfg = self._configs.get(target)
        if cfg is None:
            return 0.0, False
        fail = cfg.error_rate > 0 and (cfg.error_rate >= 1.0 or self._rand() < cfg.error_rate)
        return cfg.latency, fail

    def statement_delay(self, target: str) -> float:
        """Seconds to add to one statement of ``target`` while its connection is held.

        For integrations that run inside the connection (a SQLAlchemy event, a
        proxy per round trip); records the fault when there is one.
        """
        cfg = self._configs.get(target)
        if cfg is None or cfg.statement_latency <= 0:
            return 0.0
        delay = cfg.statement_latency
        self._record(target, "statement_latency", f"{delay:.3f}s", {"seconds": delay})
        return 0.0 if _WAITS.skip else delay

    def _record(self, target: str, kind: str, detail: str, extra: dict[str, Any]) -> None:
        key = (target, kind)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
        emit(FaultInjected(target=target, kind=kind, detail=detail, extra=extra))

    def inject(self, target: str) -> None:
        """Apply ``target``'s faults to one blocking call: wait the latency, maybe raise."""
        if target not in self._configs:  # the healthy path: one dict lookup
            return
        latency, fail = self.decide(target)
        if latency > 0:
            self._record(target, "latency", f"{latency:.3f}s", {"seconds": latency})
            if not _WAITS.skip:
                self.clock.sleep(latency)
        if fail:
            self._record(target, "error", "InjectedFault", {})
            raise InjectedFault(target)

    async def ainject(self, target: str) -> None:
        """Apply ``target``'s faults to one asyncio call: await the latency, maybe raise."""
        if target not in self._configs:
            return
        latency, fail = self.decide(target)
        if latency > 0:
            self._record(target, "latency", f"{latency:.3f}s", {"seconds": latency})
            if not _WAITS.skip:
                await self.clock.asleep(latency)
        if fail:
            self._record(target, "error", "InjectedFault", {})
            raise InjectedFault(target)

    def wrap(self, target: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """A decorator injecting ``target``'s faults before each call (``def`` or ``async def``)."""

        def decorate(fn: Callable[P, T]) -> Callable[P, T]:
            if inspect.iscoroutinefunction(fn):
                afn: Callable[P, Awaitable[Any]] = fn

                @functools.wraps(fn)
                async def awrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                    await self.ainject(target)
                    return await afn(*args, **kwargs)

                return awrapper  # type: ignore[return-value]  # same signature as fn

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                self.inject(target)
                return fn(*args, **kwargs)

            return wrapper

        return decorate

    def __repr__(self) -> str:
        return f"Chaos(targets={sorted(self._configs)!r})"


class ConnectionHog(Generic[C]):
    """Holds connections of a blocking pool: ``acquire()`` takes one, ``release(c)`` returns it.

    Acquiring happens on a daemon thread, because an exhausted pool blocks the
    caller; releasing happens at once. ``set_held(0)`` gives everything back.
    """

    def __init__(self, acquire: Callable[[], C], release: Callable[[C], None]) -> None:
        self._acquire = acquire
        self._release = release
        self._lock = threading.Condition()
        self._held: list[C] = []
        self._want = 0

    @property
    def held(self) -> int:
        return len(self._held)

    def set_held(self, count: int) -> None:
        check_int("count", count, minimum=0)
        with self._lock:
            self._want = count
            extra = self._held[count:]
            del self._held[count:]
            missing = count - len(self._held)
        for conn in extra:
            self._release(conn)
        if missing > 0:
            threading.Thread(target=self._fill, name="suture-chaos-hog", daemon=True).start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until as many connections are held as asked (True), or ``timeout`` passes."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._held) >= self._want, timeout)

    def _fill(self) -> None:
        while True:
            with self._lock:
                if len(self._held) >= self._want:
                    return
            try:
                conn = self._acquire()
            except Exception as exc:
                # Expected when the pool is already exhausted: one line, no traceback.
                logger.warning(
                    "chaos: could not take a connection to hold: %s: %s",
                    type(exc).__name__,
                    exc,
                )
                return
            with self._lock:
                keep = len(self._held) < self._want
                if keep:
                    self._held.append(conn)
                    self._lock.notify_all()
            if not keep:
                self._release(conn)


class AsyncConnectionHog:
    """Holds connections of an asyncio pool: ``connect()`` returns an async context manager.

    For SQLAlchemy: ``AsyncConnectionHog(engine.connect)``. Each held connection
    is one task that waits inside the context manager; ``set_held`` must be
    called from the event loop's thread (or use :meth:`aset_held`).
    """

    def __init__(self, connect: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
        self._connect = connect
        self._tasks: list[asyncio.Task[None]] = []
        self._held = 0
        self._changed: asyncio.Event | None = None

    @property
    def held(self) -> int:
        return self._held

    def set_held(self, count: int) -> None:
        check_int("count", count, minimum=0)
        self._tasks = [t for t in self._tasks if not t.done()]
        while len(self._tasks) > count:
            self._tasks.pop().cancel()
        while len(self._tasks) < count:
            self._tasks.append(asyncio.get_running_loop().create_task(self._hold()))
        self._notify()

    async def aset_held(self, count: int) -> None:
        self.set_held(count)
        await asyncio.sleep(0)

    async def wait(self) -> None:
        """Wait until as many connections are held as asked (wrap in a timeout)."""
        while self._held != len([t for t in self._tasks if not t.done()]):
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()
            self._changed = None

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def _hold(self) -> None:
        try:
            async with self._connect():
                self._held += 1
                self._notify()
                try:
                    await asyncio.Event().wait()  # until cancelled
                finally:
                    self._held -= 1
                    self._notify()
        except asyncio.CancelledError:
            self._notify()
            raise
        except Exception as exc:
            # Expected when the pool is already exhausted (its timeout): one line, no traceback.
            logger.warning(
                "chaos: could not take a connection to hold: %s: %s",
                type(exc).__name__,
                exc,
            )
            self._notify()

    async def aclose(self) -> None:
        """Release every held connection and wait until they are back."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
