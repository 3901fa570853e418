"""The pool monitor: samples sources, keeps a pressure level, admits requests by priority.

See :mod:`suture.pool` for the whole story. The request path (:meth:`PoolMonitor.admit`)
reads three plain attributes; sampling, levels and actions live here, the
sampler's thread and task in :mod:`suture.pool._sampler`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable, Iterable
from types import MappingProxyType
from typing import Any

from suture._config import Seconds, check_fraction, check_int, check_seconds
from suture.admission import PressureLevel, Priority
from suture.clock import SYSTEM_CLOCK, Clock
from suture.errors import Overloaded
from suture.events import PressureChanged, RequestShed, emit
from suture.pool._pressure import ADMIT_ALL, FLOOR, _Pressure, _Threshold
from suture.pool._sampler import Sampler
from suture.pool.sources import (
    PoolSource,
    SourceUsage,
    Usage,
    as_reading,
    describe,
    normalise_sources,
)

__all__ = ["LevelChangeCallback", "PoolMonitor"]

logger = logging.getLogger("suture")

LevelChangeCallback = Callable[[PressureLevel, PressureLevel, Usage], None]
"""An action run on a level change: ``(old, new, usage)``. It must be quick and not raise
(an error is logged and the other actions still run)."""


def _default_breaker_resolver(name: str) -> object:
    # Imported when first used: the monitor does not need the breaker room otherwise.
    from suture.breaker import breakers

    # ``breakers[name]`` finds without creating: a typo must not invent a new breaker.
    return breakers[name]


class PoolMonitor(Sampler):
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

    def __init__(  # noqa: PLR0913 - keyword-only options of the monitor
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
        self.sources: tuple[PoolSource, ...] = normalise_sources(sources)
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
        self._floor: int = ADMIT_ALL
        self._fresh_until = math.inf  # no sample yet and not started: admit everything
        self._fraction = 0.0
        self._usage: Usage | None = None
        self._level = PressureLevel.NORMAL
        self._pushed_level = PressureLevel.NORMAL
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
            # A rise a watched source reported while a sample was being taken counts
            # until the next sample is recorded.
            level = max(self._level, self._pushed_level)
            retry_after = self.retry_after
        if priority >= FLOOR[level]:
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
        return priority >= FLOOR[self.level]

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
            "last_error": None if self.last_error is None else describe(self.last_error),
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
            return self._take(self.sources)

    def _take(self, sources: tuple[PoolSource, ...]) -> Usage:
        # Reads ``sources`` (the lock held); a source left out keeps its part of the last
        # sample (a pushed reading re-reads only the source that pushed it).
        started = self._now()
        fresh: dict[str, SourceUsage] = {}
        first_error: BaseException | None = None
        for source in sources:
            try:
                reading = as_reading(source.read())
            except Exception as exc:
                first_error = first_error or exc
                logger.warning("pool %s: source %s failed: %s", self.name, source.name, exc)
                fresh[source.name] = SourceUsage(
                    name=source.name,
                    current=0,
                    limit=0,
                    fraction=0.0,
                    details={},
                    error=describe(exc),
                )
                continue
            fresh[source.name] = SourceUsage(
                name=source.name,
                current=reading.current,
                limit=reading.limit,
                fraction=reading.fraction,
                details=MappingProxyType(dict(reading.details)),
            )
        kept = {} if self._usage is None else {p.name: p for p in self._usage.sources}
        parts = [fresh.get(s.name) or kept.get(s.name) for s in self.sources]
        present = [p for p in parts if p is not None]
        good = [p for p in present if p.error is None]
        if not good:
            error = first_error or RuntimeError("no source answered")
            self.last_error = error
            raise error
        if len(sources) == len(self.sources):
            self.last_error = first_error
        tightest = max(good, key=lambda p: p.fraction)
        ended = self._now()
        usage = Usage(
            current=tightest.current,
            limit=tightest.limit,
            fraction=tightest.fraction,
            source=tightest.name,
            sources=tuple(present),
            sampled_at=ended,
            sampled_wall=self._clock.wall(),
            duration=max(0.0, ended - started),
        )
        self._record(usage)
        return usage

    def _pushed(self, source: PoolSource, fraction: float) -> None:
        """A watched source's use rose to ``fraction``: a rise of the level is taken at once.

        Called on the thread that changed the source (a pool checkout), so it is cheap
        when nothing rises (one comparison). A fall still waits for the sampler (the
        hysteresis and the recovery streak are counted in samples). When a sample is
        being taken (perhaps with I/O on another source) this does not wait for it:
        admission sheds at the new level's floor at once and the sample settles it.
        """
        rise = self._pressure.raw(fraction)
        if rise <= self._level:
            return
        if not self._sample_lock.acquire(blocking=False):
            self._pushed_level = max(self._pushed_level, rise)
            self._floor = max(self._floor, FLOOR[rise])
            return
        try:
            self._take((source,))
        except Exception as exc:
            logger.warning("pool %s: pushed sample failed: %s", self.name, describe(exc))
        finally:
            self._sample_lock.release()

    def _record(self, usage: Usage) -> None:
        old = self._level
        new = self._pressure.update(usage.fraction)
        self._usage = usage
        self._fraction = usage.fraction
        self._level = new
        self._pushed_level = PressureLevel.NORMAL
        self._floor = FLOOR[new]
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

    def __repr__(self) -> str:
        return (
            f"PoolMonitor(name={self.name!r}, sources={[s.name for s in self.sources]!r}, "
            f"interval={self.interval}, warning={self.warning}, critical={self.critical}, "
            f"level={self._level.name})"
        )
