"""Connection-pool monitoring and admission by priority.

A :class:`PoolMonitor` samples one or more *sources* (the PostgreSQL server's
connection slots, a SQLAlchemy pool, any callable returning ``(current,
limit)``) on a schedule, in a background thread (:meth:`PoolMonitor.start`) or
an asyncio task (:meth:`PoolMonitor.astart`), never at import and never
overlapping. Each sample becomes a frozen :class:`Usage`; the fraction of the
tightest source sets the :class:`PressureLevel`, with hysteresis so the level
does not flap.

Admission (:meth:`PoolMonitor.admit`) reads the last sample only: one integer
comparison and one clock read, no lock and no I/O. At NORMAL everything is
admitted, at WARNING ``Priority.LOW`` is shed, at CRITICAL only
``Priority.CRITICAL`` gets through. A shed request raises
:class:`suture.Overloaded` and emits :class:`suture.events.RequestShed`.

A sample older than ``stale_after`` (three intervals by default) is stale: the
monitor cannot see the pool any more, so admission uses ``stale_level``
(WARNING by default: low-priority work is shed, everything else admitted)
until a fresh sample arrives. Before the first sample (monitor never started,
nothing sampled) everything is admitted.

Level changes emit :class:`suture.events.PressureChanged` and run the actions
registered with :meth:`PoolMonitor.on_level_change`, :meth:`PoolMonitor.while_at`
or :meth:`PoolMonitor.force_open_while` (force non-essential breakers open,
pause a background job, and undo it on recovery).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from suture._config import Seconds, check_fraction, check_int, check_seconds
from suture.clock import SYSTEM_CLOCK, Clock
from suture.errors import Overloaded
from suture.events import PressureChanged, RequestShed, emit

__all__ = [
    "CallableSource",
    "LevelChangeCallback",
    "PoolMonitor",
    "PoolSource",
    "PressureLevel",
    "Priority",
    "Reading",
    "SourceUsage",
    "Usage",
]

logger = logging.getLogger("suture")


class PressureLevel(enum.IntEnum):
    """How close the watched pool is to its limit. Ordered: ``NORMAL < WARNING < CRITICAL``."""

    NORMAL = 0
    WARNING = 1
    CRITICAL = 2


class Priority(enum.IntEnum):
    """How important a request is. Ordered: ``LOW < NORMAL < CRITICAL``.

    At WARNING pressure LOW is shed; at CRITICAL, NORMAL and LOW are shed.
    """

    LOW = 0
    NORMAL = 1
    CRITICAL = 2


# The lowest priority admitted at each pressure level (indexed by level).
_FLOOR: tuple[int, ...] = (Priority.LOW, Priority.NORMAL, Priority.CRITICAL)
_ADMIT_ALL = int(Priority.LOW)


@dataclass(frozen=True, slots=True)
class Reading:
    """What a source reports: ``current`` in use out of ``limit``, plus JSON-friendly details."""

    current: int
    limit: int
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """``current / limit``; a limit of 0 or less means nothing can be had (1.0)."""
        if self.limit <= 0:
            return 1.0
        return self.current / self.limit


@runtime_checkable
class PoolSource(Protocol):
    """Something the monitor samples: a ``name`` and a ``read()`` returning a :class:`Reading`.

    ``read`` runs on the sampler thread (or a worker thread of the asyncio
    sampler), never on the request path; it may do I/O but should bound it
    (a statement timeout, a connect timeout).
    """

    name: str

    def read(self) -> Reading: ...


class CallableSource:
    """A source from any callable returning ``(current, limit)`` or a :class:`Reading`.

    >>> src = CallableSource(lambda: (3, 10), name="workers")
    >>> src.read().fraction
    0.3
    """

    __slots__ = ("_fn", "name")

    def __init__(
        self,
        fn: Callable[[], tuple[int, int] | Reading],
        *,
        name: str = "callable",
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn={fn!r}: expected a callable returning (current, limit)")
        self._fn = fn
        self.name = name

    def read(self) -> Reading:
        out = self._fn()
        if isinstance(out, Reading):
            return out
        current, limit = out
        return Reading(int(current), int(limit))

    def __repr__(self) -> str:
        return f"CallableSource({self._fn!r}, name={self.name!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceUsage:
    """One source's part of a sample. ``error`` is set (and the numbers are 0) when it failed."""

    name: str
    current: int
    limit: int
    fraction: float
    details: Mapping[str, Any]
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "current": self.current,
            "limit": self.limit,
            "fraction": self.fraction,
            "details": dict(self.details),
            "error": self.error,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """A frozen sample of every source.

    ``current``, ``limit`` and ``fraction`` are those of the tightest source
    (the highest fraction), named by ``source``. ``sampled_at`` is the
    monitor clock's monotonic time, ``sampled_wall`` seconds since the epoch,
    ``duration`` how long the sample took.
    """

    current: int
    limit: int
    fraction: float
    source: str
    sources: tuple[SourceUsage, ...]
    sampled_at: float
    sampled_wall: float
    duration: float

    def detail(self, name: str) -> SourceUsage:
        """The part of the sample that came from the source called ``name``."""
        for item in self.sources:
            if item.name == name:
                return item
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (for ``/health`` and dashboards)."""
        return {
            "current": self.current,
            "limit": self.limit,
            "fraction": self.fraction,
            "source": self.source,
            "sources": [s.as_dict() for s in self.sources],
            "sampled_at": self.sampled_at,
            "sampled_wall": self.sampled_wall,
            "duration": self.duration,
        }


LevelChangeCallback = Callable[[PressureLevel, PressureLevel, Usage], None]
"""An action run on a level change: ``(old, new, usage)``. It must be quick and not raise
(an error is logged and the other actions still run)."""


class _Pressure:
    """The pure level state machine: thresholds with a hysteresis band and a recovery streak.

    A rise is immediate. A fall needs the fraction below the level's threshold
    minus ``hysteresis`` on ``recover_after`` consecutive samples; the level
    then steps down to the highest level those samples still supported.
    """

    __slots__ = (
        "_streak",
        "_streak_level",
        "critical",
        "hysteresis",
        "level",
        "recover_after",
        "warning",
    )

    def __init__(
        self, *, warning: float, critical: float, hysteresis: float, recover_after: int
    ) -> None:
        self.warning = warning
        self.critical = critical
        self.hysteresis = hysteresis
        self.recover_after = recover_after
        self.level = PressureLevel.NORMAL
        self._streak = 0
        self._streak_level = PressureLevel.NORMAL

    def raw(self, fraction: float) -> PressureLevel:
        if fraction >= self.critical:
            return PressureLevel.CRITICAL
        if fraction >= self.warning:
            return PressureLevel.WARNING
        return PressureLevel.NORMAL

    def _held(self, fraction: float) -> PressureLevel:
        # The level a falling fraction still holds, with the hysteresis band.
        h = self.hysteresis
        if self.level >= PressureLevel.CRITICAL and fraction >= self.critical - h:
            return PressureLevel.CRITICAL
        if fraction >= self.warning - h:
            return PressureLevel.WARNING
        return PressureLevel.NORMAL

    def update(self, fraction: float) -> PressureLevel:
        """Feed one sample's fraction; returns the (possibly new) level."""
        raw = self.raw(fraction)
        if raw >= self.level:
            self._streak = 0
            self.level = raw
            return raw
        held = self._held(fraction)
        if held >= self.level:
            self._streak = 0
            return self.level
        self._streak_level = held if self._streak == 0 else max(self._streak_level, held)
        self._streak += 1
        if self._streak >= self.recover_after:
            self.level = self._streak_level
            self._streak = 0
        return self.level


class _Threshold:
    """An action that runs ``enter`` when the level reaches ``at`` and ``leave`` when it
    falls below it again."""

    __slots__ = ("at", "enter", "entered", "leave")

    def __init__(
        self, at: PressureLevel, enter: Callable[[], object], leave: Callable[[], object]
    ) -> None:
        self.at = at
        self.enter = enter
        self.leave = leave
        self.entered = False

    def __call__(self, old: PressureLevel, new: PressureLevel, usage: Usage) -> None:
        if new >= self.at and not self.entered:
            self.entered = True
            self.enter()
        elif new < self.at and self.entered:
            self.entered = False
            self.leave()


def _default_breaker_resolver(name: str) -> object:
    # Imported lazily: the breaker registry is optional for the monitor.
    import suture

    registry = getattr(suture, "breakers", None)
    if registry is None:
        raise LookupError(f"breaker {name!r}: suture.breakers is not available; pass objects")
    # ``registry[name]`` finds without creating: a typo must not invent a new breaker.
    if hasattr(registry, "__getitem__"):
        return registry[name]
    return registry.get(name)


class PoolMonitor:
    """Samples pool sources, keeps a pressure level, admits requests by priority.

    :param sources: one source or several (:class:`PoolSource`, or a plain callable
        returning ``(current, limit)``, wrapped in :class:`CallableSource`).
    :param interval: seconds between the end of one sample and the start of the next.
    :param warning: the fraction at which the level becomes WARNING.
    :param critical: the fraction at which the level becomes CRITICAL.
    :param hysteresis: how far below a threshold the fraction must fall to step down.
    :param recover_after: consecutive samples below the band needed to step down.
    :param stale_after: a sample older than this is stale (default three intervals).
    :param stale_level: the level admission uses while the sample is stale.
    :param accept_below: the fraction :meth:`can_accept` compares with (the spec's 90%).
    :param name: used in events, logs and the sampler thread's name.
    """

    def __init__(
        self,
        sources: PoolSource | Callable[[], tuple[int, int]] | Iterable[Any],
        *,
        interval: Seconds = 5.0,
        warning: float = 0.85,
        critical: float = 0.92,
        hysteresis: float = 0.05,
        recover_after: int = 2,
        stale_after: Seconds | None = None,
        stale_level: PressureLevel = PressureLevel.WARNING,
        accept_below: float = 0.9,
        name: str = "pool",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.sources: tuple[PoolSource, ...] = _normalise_sources(sources)
        self.interval = check_seconds("interval", interval, positive=True)
        self.warning = check_fraction("warning", warning)
        self.critical = check_fraction("critical", critical)
        if self.warning >= self.critical:
            raise ValueError(
                f"warning={warning!r}: must be below critical={critical!r} (both within (0, 1])"
            )
        self.hysteresis = check_fraction("hysteresis", hysteresis, allow_zero=True)
        if self.hysteresis >= self.warning:
            raise ValueError(
                f"hysteresis={hysteresis!r}: must be 0 or more and below warning={warning!r}"
            )
        self.recover_after = check_int("recover_after", recover_after, minimum=1)
        if stale_after is None:
            self.stale_after = 3 * self.interval
        else:
            self.stale_after = check_seconds("stale_after", stale_after, positive=True)
            if self.stale_after <= self.interval:
                raise ValueError(
                    f"stale_after={stale_after!r}: must be longer than interval={interval!r}"
                )
        if not isinstance(stale_level, PressureLevel):
            raise TypeError(
                f"stale_level={stale_level!r}: expected a PressureLevel "
                "(NORMAL, WARNING or CRITICAL)"
            )
        self.stale_level = stale_level
        self.accept_below = check_fraction("accept_below", accept_below)
        self.name = name
        self._clock = clock
        self._now = clock.now
        self._pressure = _Pressure(
            warning=self.warning,
            critical=self.critical,
            hysteresis=self.hysteresis,
            recover_after=self.recover_after,
        )
        # The request path reads these three plain attributes, without a lock.
        self._floor: int = _ADMIT_ALL
        self._fresh_until = math.inf  # no sample yet and not started: admit everything
        self._fraction = 0.0
        self._usage: Usage | None = None
        self._level = PressureLevel.NORMAL
        self.last_error: BaseException | None = None
        self.retry_after = self.interval * self.recover_after
        self._sample_lock = threading.RLock()
        self._actions: tuple[LevelChangeCallback, ...] = ()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lifecycle = threading.Lock()  # start() and stop() from several threads
        self._task: asyncio.Task[None] | None = None

    # --- the request path ----------------------------------------------------------

    def admit(self, priority: Priority = Priority.NORMAL) -> None:
        """Admit a request of this priority or raise :class:`suture.Overloaded`.

        Reads the last sample only: no I/O, no lock.
        """
        if priority >= self._floor and self._now() < self._fresh_until:
            return
        self._admit_slow(priority)

    def _admit_slow(self, priority: Priority) -> None:
        if self._now() >= self._fresh_until:
            level = self.stale_level
            retry_after = self.interval
        else:
            level = self._level
            retry_after = self.retry_after
        if priority >= _FLOOR[level]:
            return
        emit(
            RequestShed(
                name=self.name,
                source="pool",
                priority=Priority(priority),
                level=level,
                retry_after=retry_after,
            )
        )
        raise Overloaded(level, retry_after, source="pool")

    def would_admit(self, priority: Priority = Priority.NORMAL) -> bool:
        """What :meth:`admit` would decide, without raising or emitting."""
        return priority >= _FLOOR[self.level]

    def can_accept(self) -> bool:
        """The spec's simple check: the last sample is below ``accept_below`` (90%).

        While the sample is stale: true only when ``stale_level`` is NORMAL.
        """
        if self._now() >= self._fresh_until:
            return self.stale_level is PressureLevel.NORMAL
        return self._fraction < self.accept_below

    @property
    def level(self) -> PressureLevel:
        """The level admission uses now (``stale_level`` while the sample is stale)."""
        if self._now() >= self._fresh_until:
            return self.stale_level
        return self._level

    @property
    def sampled_level(self) -> PressureLevel:
        """The level computed from the last sample, stale or not."""
        return self._level

    @property
    def usage(self) -> Usage | None:
        """The last sample (``None`` before the first one)."""
        return self._usage

    @property
    def stale(self) -> bool:
        """True when the monitor is running (or has sampled) and no sample is fresh."""
        return self._now() >= self._fresh_until

    @property
    def running(self) -> bool:
        """True while a sampler thread or task runs."""
        thread, task = self._thread, self._task
        return (thread is not None and thread.is_alive()) or _task_alive(task)

    def status(self) -> dict[str, Any]:
        """Level, staleness and the last sample as one JSON-friendly dict (for ``/health``)."""
        usage = self._usage
        age = None if usage is None else max(0.0, self._now() - usage.sampled_at)
        return {
            "name": self.name,
            "level": self.level.name,
            "sampled_level": self._level.name,
            "stale": self.stale,
            "age": age,
            "can_accept": self.can_accept(),
            "running": self.running,
            "usage": None if usage is None else usage.as_dict(),
            "last_error": None if self.last_error is None else _describe(self.last_error),
        }

    # --- sampling --------------------------------------------------------------------

    def sample(self) -> Usage:
        """Read every source now; update usage, level and actions. Returns the new sample.

        Samples never overlap (a lock serialises them). A source that raises is
        reported in its :class:`SourceUsage` (``error``) and left out of the
        fraction; when every source fails, the error propagates and the previous
        sample is kept (it will go stale).
        """
        with self._sample_lock:
            started = self._now()
            parts: list[SourceUsage] = []
            first_error: BaseException | None = None
            for source in self.sources:
                try:
                    reading = _as_reading(source.read())
                except Exception as exc:
                    first_error = first_error or exc
                    logger.warning("pool %s: source %s failed: %s", self.name, source.name, exc)
                    parts.append(
                        SourceUsage(
                            name=source.name,
                            current=0,
                            limit=0,
                            fraction=0.0,
                            details={},
                            error=_describe(exc),
                        )
                    )
                    continue
                parts.append(
                    SourceUsage(
                        name=source.name,
                        current=reading.current,
                        limit=reading.limit,
                        fraction=reading.fraction,
                        details=MappingProxyType(dict(reading.details)),
                    )
                )
            good = [p for p in parts if p.error is None]
            if not good:
                error = first_error or RuntimeError("no source answered")
                self.last_error = error
                raise error
            self.last_error = first_error
            tightest = max(good, key=lambda p: p.fraction)
            ended = self._now()
            usage = Usage(
                current=tightest.current,
                limit=tightest.limit,
                fraction=tightest.fraction,
                source=tightest.name,
                sources=tuple(parts),
                sampled_at=ended,
                sampled_wall=self._clock.wall(),
                duration=max(0.0, ended - started),
            )
            self._record(usage)
            return usage

    def _record(self, usage: Usage) -> None:
        old = self._level
        new = self._pressure.update(usage.fraction)
        self._usage = usage
        self._fraction = usage.fraction
        self._level = new
        self._floor = _FLOOR[new]
        self._fresh_until = usage.sampled_at + self.stale_after
        if new is not old:
            emit(
                PressureChanged(
                    name=self.name,
                    source=old,
                    target=new,
                    fraction=usage.fraction,
                    current=usage.current,
                    limit=usage.limit,
                )
            )
            for action in self._actions:
                try:
                    action(old, new, usage)
                except Exception:
                    logger.exception("pool %s: level-change action %r failed", self.name, action)

    # --- actions ------------------------------------------------------------------------

    def on_level_change(self, action: LevelChangeCallback) -> Callable[[], None]:
        """Run ``action(old, new, usage)`` on every level change; returns a remover.

        Actions run on the thread that took the sample, in registration order,
        after the :class:`~suture.events.PressureChanged` event.
        """
        with self._sample_lock:
            self._actions = (*self._actions, action)

        def remove() -> None:
            with self._sample_lock:
                items = list(self._actions)
                if action in items:
                    items.remove(action)
                    self._actions = tuple(items)

        return remove

    def while_at(
        self,
        at: PressureLevel,
        *,
        enter: Callable[[], object],
        leave: Callable[[], object],
    ) -> Callable[[], None]:
        """Call ``enter()`` when the level reaches ``at`` and ``leave()`` when it falls below.

        For example pause a background job under pressure and resume it on
        recovery. If the level is already at or above ``at``, ``enter`` runs
        now. Returns a remover.
        """
        if not isinstance(at, PressureLevel):
            raise TypeError(f"at={at!r}: expected a PressureLevel")
        action = _Threshold(at, enter, leave)
        with self._sample_lock:
            remove = self.on_level_change(action)
            if self._level >= at:
                action.entered = True
                enter()
        return remove

    def force_open_while(
        self,
        at: PressureLevel,
        *breakers: object,
        resolve: Callable[[str], object] = _default_breaker_resolver,
    ) -> Callable[[], None]:
        """Force non-essential circuit breakers open while the level is at ``at`` or above.

        Each breaker is an object with ``force_open()`` and ``reset()`` (a
        :class:`suture.CircuitBreaker` or anything shaped like one), or a name
        looked up with ``resolve`` when the level changes (by default in
        ``suture.breakers``). On recovery each is ``reset()`` to normal
        operation. Returns a remover.
        """
        if not breakers:
            raise ValueError("breakers=(): name at least one breaker to force open")
        for b in breakers:
            if not isinstance(b, str) and not callable(getattr(b, "force_open", None)):
                raise TypeError(f"breaker {b!r}: expected a name or an object with force_open()")

        def objects() -> list[Any]:
            return [resolve(b) if isinstance(b, str) else b for b in breakers]

        def enter() -> None:
            for b in objects():
                b.force_open()

        def leave() -> None:
            for b in objects():
                b.reset()

        return self.while_at(at, enter=enter, leave=leave)

    # --- the sampler (thread) -------------------------------------------------------------

    def start(self) -> Self:
        """Start sampling in a daemon thread (first sample at once). No-op when running.

        A sampler that :meth:`stop` could not wait for (stuck in a slow sample)
        still ends after that sample: ``start()`` then runs a new one beside it
        (samples never overlap: they take turns on one lock).
        """
        with self._lifecycle:
            thread = self._thread
            if thread is not None and thread.is_alive() and not self._stop.is_set():
                return self
            # Each sampler thread has its own stop event, so a thread still finishing
            # after a timed-out stop() is not revived by the new one's clear().
            self._stop = threading.Event()
            self._arm()
            thread = threading.Thread(
                target=self._run,
                args=(self._stop,),
                name=f"suture-pool-{self.name}",
                daemon=True,
            )
            self._thread = thread
            thread.start()
        return self

    def stop(self, timeout: Seconds | None = None) -> None:
        """Stop the sampler thread and wait for it (at most ``timeout`` seconds).

        A sample in progress finishes first; by default the wait is bounded by
        ``stale_after``.
        """
        with self._lifecycle:
            self._stop.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            limit = self.stale_after if timeout is None else check_seconds("timeout", timeout)
            thread.join(limit)
            if thread.is_alive():
                logger.warning("pool %s: sampler still busy after %.1fs", self.name, limit)
            else:
                with self._lifecycle:
                    if self._thread is thread:
                        self._thread = None

    def close(self) -> None:
        """Stop the sampler thread and close every source that has a ``close()``
        (a server source's dedicated connection, a pool source's listeners)."""
        self.stop()
        for source in self.sources:
            closer = getattr(source, "close", None)
            if callable(closer):
                try:
                    closer()
                except Exception:
                    logger.exception("pool %s: closing source %s failed", self.name, source.name)

    def _arm(self) -> None:
        # A started monitor is expected to produce samples: with none yet, it goes stale
        # after ``stale_after``. An old sample is not refreshed by a restart.
        if self._usage is None:
            self._fresh_until = self._now() + self.stale_after

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._sample_logged()
            # Fixed delay after the end of each sample: a slow sample delays the next.
            if stop.wait(self.interval):
                break

    def _sample_logged(self) -> None:
        try:
            self.sample()
        except Exception as exc:
            logger.warning("pool %s: sample failed: %s", self.name, _describe(exc))

    # --- the sampler (asyncio) ------------------------------------------------------------

    async def astart(self) -> Self:
        """Start sampling in an asyncio task of the running loop.

        Each sample runs in a worker thread (sources may block), one at a time;
        the wait between samples uses the monitor's clock.
        """
        loop = asyncio.get_running_loop()
        # A task left in an event loop that was closed never runs again: ``running``
        # ignores it, so a monitor started under ``asyncio.run()`` can start again.
        if self.running:
            return self
        self._arm()
        self._task = loop.create_task(self._arun(), name=f"suture-pool-{self.name}")
        return self

    async def astop(self) -> None:
        """Cancel the sampler task and wait for it to end."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    async def _arun(self) -> None:
        while True:
            await asyncio.to_thread(self._sample_logged)
            await self._clock.asleep(self.interval)

    # --- context managers -------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    def __repr__(self) -> str:
        return (
            f"PoolMonitor(name={self.name!r}, sources={[s.name for s in self.sources]!r}, "
            f"interval={self.interval}, warning={self.warning}, critical={self.critical}, "
            f"level={self._level.name})"
        )


def _task_alive(task: asyncio.Task[None] | None) -> bool:
    # A task whose loop was closed without cancelling it never runs again.
    return task is not None and not task.done() and not task.get_loop().is_closed()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _as_reading(out: object) -> Reading:
    """A source's answer as a :class:`Reading`; a ``(current, limit)`` pair is accepted.
    Anything else raises ``TypeError`` (the source is then reported as failed)."""
    if isinstance(out, Reading):
        return out
    if isinstance(out, tuple) and len(out) == 2:
        current, limit = out
        return Reading(int(current), int(limit))
    raise TypeError(f"read() returned {out!r}: expected a Reading or (current, limit)")


def _normalise_sources(
    sources: PoolSource | Callable[[], tuple[int, int]] | Iterable[Any],
) -> tuple[PoolSource, ...]:
    if isinstance(sources, (str, bytes)):
        raise TypeError(f"sources={sources!r}: expected a source or an iterable of sources")
    items: list[Any]
    if (hasattr(sources, "read") and hasattr(sources, "name")) or callable(sources):
        items = [sources]
    else:
        items = list(sources)
    if not items:
        raise ValueError("sources=[]: give at least one source")
    out: list[PoolSource] = []
    names: set[str] = set()
    for i, item in enumerate(items):
        src: PoolSource
        if hasattr(item, "read") and hasattr(item, "name"):
            src = item
        elif callable(item):
            label = getattr(item, "__name__", "")
            if not label.isidentifier():  # a lambda's "<lambda>"
                label = f"source{i}"
            src = CallableSource(item, name=label)
        else:
            raise TypeError(
                f"sources[{i}]={item!r}: expected an object with name and read(), "
                "or a callable returning (current, limit)"
            )
        if src.name in names:
            raise ValueError(f"sources[{i}]: the name {src.name!r} is used twice")
        names.add(src.name)
        out.append(src)
    return tuple(out)
