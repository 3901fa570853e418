"""When the pool monitor samples: a daemon thread or an asyncio task, never overlapping.

:class:`Sampler` is the lifecycle half of :class:`suture.pool.PoolMonitor`
(start, stop, close, the asyncio twins and the context managers); what a
sample means (levels, admission, actions) is the monitor's own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from suture._config import Seconds, check_seconds
from suture.clock import Clock
from suture.pool.sources import PoolSource, describe

__all__ = ["Sampler"]

logger = logging.getLogger("suture")


class Sampler:
    """Runs ``sample()`` every ``interval`` seconds in a thread (:meth:`start`) or a task
    (:meth:`astart`). The monitor sets the attributes below in its ``__init__``."""

    name: str
    interval: float
    stale_after: float
    sources: tuple[PoolSource, ...]
    _clock: Clock
    _now: Callable[[], float]
    _usage: Any
    _fresh_until: float
    _thread: threading.Thread | None
    _stop: threading.Event
    _lifecycle: threading.Lock
    _task: asyncio.Task[None] | None
    _unwatchers: tuple[Callable[[], object], ...] = ()

    def sample(self) -> object:
        raise NotImplementedError

    def _pushed(self, source: PoolSource, fraction: float) -> None:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """True while a sampler thread or task runs."""
        thread, task = self._thread, self._task
        return (thread is not None and thread.is_alive()) or _task_alive(task)

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
        self._unwatch()
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
        self._watch()

    def _watch(self) -> None:
        # A source with ``watch(callback)`` (a SQLAlchemy pool's, which sees every
        # checkout) reports a rise between samples: the pool exhausted is shed at once,
        # not an interval later. Only while sampling: a fall needs the sampler.
        if self._unwatchers:
            return
        unwatchers = []
        for source in self.sources:
            watch = getattr(source, "watch", None)
            if callable(watch):
                unwatchers.append(watch(functools.partial(self._pushed, source)))
        self._unwatchers = tuple(unwatchers)

    def _unwatch(self) -> None:
        unwatchers, self._unwatchers = self._unwatchers, ()
        for unwatch in unwatchers:
            try:
                unwatch()
            except Exception:
                logger.exception("pool %s: removing a source's watch failed", self.name)

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
            logger.warning("pool %s: sample failed: %s", self.name, describe(exc))

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
        self._unwatch()
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


def _task_alive(task: asyncio.Task[None] | None) -> bool:
    # A task whose loop was closed without cancelling it never runs again.
    return task is not None and not task.done() and not task.get_loop().is_closed()
