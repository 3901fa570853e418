# About 430 lines: the success path, the FIFO queue and its two waits (a thread's lock,
# a task's future) share one set of slots and must be read together.
"""A bulkhead: at most ``max_concurrent`` calls in flight, at most ``max_queue`` waiting.

One slow dependency must not take every worker thread or every connection
with it: a :class:`Bulkhead` around its calls keeps the rest of the service
afloat. A call that finds every slot taken joins a queue (first come, first
served) and waits up to ``max_wait``; when the queue is full, or the wait
runs out, it is refused with :class:`suture.Overloaded` (``source="bulkhead"``)
and a ``retry_after`` estimated from how fast the queue has been moving.
That is overload in our own process (design rule 12): shed at once as a 503,
never retried, never counted against the dependency.

The slots are items in a ``deque``: taking one is ``deque.pop()`` and giving
it back ``deque.append()``, each atomic in CPython, so a call that finds a
free slot takes no lock (about a fifth of a lock round trip). Only the queue
is guarded, by the same baton as the rate limiter's.

Cancellation is safe: a waiter cancelled (or timed out) before it was handed
a slot leaves the queue; one cancelled just after it was handed a slot gives
the slot on to the next waiter. No slot is ever lost or doubled.

Time: the ``async`` wait races the injected clock's ``asleep``, so tests
control it. A thread's wait blocks on a lock with a timeout (a thread cannot
be woken from ``clock.sleep``), so it uses real time; the clock measures the
waits that feed ``retry_after``.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol

from suture._config import Seconds, check_clock, check_int, check_name, check_seconds
from suture._decorator import Decorator
from suture.clock import SYSTEM_CLOCK, Clock
from suture.errors import Overloaded
from suture.events import RequestShed, emit, listening
from suture.limits._baton import Baton
from suture.limits._gcra import check_wait

__all__ = ["Acquire", "Bulkhead", "BulkheadStats"]

#: Weight of the newest sample in the moving average of the wait per queue place.
_SMOOTHING: Final = 0.2


@dataclass(frozen=True, slots=True)
class BulkheadStats:
    """A snapshot of a bulkhead."""

    name: str
    max_concurrent: int
    max_queue: int
    in_flight: int  #: calls holding a slot now
    queued: int  #: calls waiting for one
    rejected: int  #: calls refused (queue full or wait ran out) since creation
    wait_per_place: float | None  #: seconds a waiter spends per place ahead of it (average)


class _Waiter:
    """One caller in the queue. ``granted`` is set, under the baton, with the slot."""

    __slots__ = ("enqueued", "fut", "granted", "lock", "loop", "place")

    def __init__(self, enqueued: float, place: int) -> None:
        self.enqueued = enqueued
        self.place = place
        self.granted = False
        self.lock: threading.Lock | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.fut: asyncio.Future[None] | None = None

    def wake(self) -> None:
        if self.lock is not None:
            self.lock.release()
            return
        loop, fut = self.loop, self.fut
        assert loop is not None
        assert fut is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            if not fut.done():
                fut.set_result(None)
        else:
            loop.call_soon_threadsafe(_resolve, fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Acquire(Protocol):
    """The type of :attr:`Bulkhead.acquire`."""

    def __call__(self, *, max_wait: Seconds | None = None) -> None: ...


def _fast_path(bulkhead: Bulkhead) -> tuple[Acquire, Callable[[], None], Callable[[], bool]]:
    """``acquire``, ``release`` and ``try_acquire`` for one bulkhead: a slot is one
    ``deque.pop()`` or ``deque.append()``; the queue is left to the bulkhead's methods."""
    pop, push, waiters = bulkhead._free.pop, bulkhead._free.append, bulkhead._waiters
    slow, dispatch = bulkhead._acquire_slow, bulkhead._dispatch

    def acquire(*, max_wait: Seconds | None = None) -> None:
        try:
            pop()
        except IndexError:
            slow(max_wait)

    def release() -> None:
        push(None)
        if waiters:
            dispatch()

    def try_acquire() -> bool:
        try:
            pop()
        except IndexError:
            return False
        return True

    return acquire, release, try_acquire


class Bulkhead(Decorator):
    """At most ``max_concurrent`` calls at once; at most ``max_queue`` more waiting.

    >>> db_calls = Bulkhead(max_concurrent=10, max_queue=20, max_wait=0.5)
    >>> @db_calls                       # def or async def
    ... def query() -> None: ...
    >>> with db_calls:                  # or async with
    ...     pass

    :param max_concurrent: slots: calls allowed in flight at once (an integer >= 1).
    :param max_queue: calls allowed to wait for a slot (0: refuse at once when full).
    :param max_wait: how long a queued call waits before it is refused.
    :param retry_after: the hint given before any wait has been measured.
    :param name: names the bulkhead in events and errors.
    :param clock: measures waits (and times ``async`` waits).
    """

    _tag = "bulkhead"
    __slots__ = (
        "_baton",
        "_clock",
        "_free",
        "_per_place",
        "_rejected",
        "_waiters",
        "acquire",
        "max_concurrent",
        "max_queue",
        "max_wait",
        "name",
        "release",
        "retry_after",
        "try_acquire",
    )

    # The success path, specialised once per bulkhead (closures over the slot deque:
    # a fifth cheaper than methods reading ``self``); see :func:`_fast_path`.

    #: ``acquire(*, max_wait=None)``: take a slot, queueing for up to ``max_wait``
    #: (default: the bulkhead's); :class:`suture.Overloaded` when the queue is full
    #: or the wait runs out. Pair it with :attr:`release` (or use ``with bulkhead:``).
    acquire: Acquire
    #: ``release()``: give a slot back, to the first waiter if there is one.
    release: Callable[[], None]
    #: ``try_acquire() -> bool``: take a slot if one is free now; never waits or queues.
    try_acquire: Callable[[], bool]

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_queue: int = 0,
        max_wait: Seconds = 1.0,
        retry_after: Seconds = 1.0,
        name: str = "bulkhead",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.max_concurrent = check_int("max_concurrent", max_concurrent, minimum=1)
        self.max_queue = check_int("max_queue", max_queue, minimum=0)
        self.max_wait = check_seconds("max_wait", max_wait, allow_inf=True)
        self.retry_after = check_seconds("retry_after", retry_after)
        check_name("name", name)
        self.name = name
        self._clock = check_clock(clock)
        self._free: deque[None] = deque((None,) * self.max_concurrent)
        self._waiters: deque[_Waiter] = deque()
        self._baton: Baton[None] = Baton(None)
        self._per_place: float | None = None
        self._rejected = 0
        self.acquire, self.release, self.try_acquire = _fast_path(self)

    def __repr__(self) -> str:
        return (
            f"Bulkhead({self.max_concurrent}, max_queue={self.max_queue}, "
            f"max_wait={self.max_wait:g}, name={self.name!r})"
        )

    # --- state -----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self.max_concurrent - len(self._free)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def stats(self) -> BulkheadStats:
        return BulkheadStats(
            name=self.name,
            max_concurrent=self.max_concurrent,
            max_queue=self.max_queue,
            in_flight=self.in_flight,
            queued=self.queued,
            rejected=self._rejected,
            wait_per_place=self._per_place,
        )

    def estimate_wait(self) -> float:
        """Seconds a caller arriving now would likely wait for a slot (the ``retry_after``)."""
        per_place = self._per_place
        if per_place is None:
            return self.retry_after
        return per_place * (len(self._waiters) + 1)

    # --- the fast path ------------------------------------------------------------------------

    async def aacquire(self, *, max_wait: Seconds | None = None) -> None:
        """:meth:`acquire` for ``async`` code; cancelling the wait leaves no trace."""
        try:
            self._free.pop()
        except IndexError:
            await self._aacquire_slow(max_wait)

    # --- the queue -------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Hand free slots to waiters, first come first served."""
        baton = self._baton
        baton.hold()
        try:
            free, waiters = self._free, self._waiters
            while waiters:
                try:
                    free.pop()
                except IndexError:
                    break
                waiter = waiters.popleft()
                waiter.granted = True
                waited = self._clock.now() - waiter.enqueued
                sample = waited / waiter.place
                prev = self._per_place
                self._per_place = sample if prev is None else prev + _SMOOTHING * (sample - prev)
                waiter.wake()
        finally:
            baton.release(None)

    def _enqueue(
        self, max_wait: Seconds | None, *, asynchronous: bool
    ) -> tuple[_Waiter | None, float]:
        """Join the queue: ``(waiter, budget)``, or ``(None, 0)`` when a slot was free after all.

        Refuses (``Overloaded``) when the queue is full or the budget is 0.
        """
        budget = check_wait(max_wait, self.max_wait)  # also bounded by the request deadline
        baton = self._baton
        baton.hold()
        try:
            try:
                self._free.pop()  # freed while we came here
            except IndexError:
                pass
            else:
                return None, 0.0
            if len(self._waiters) >= self.max_queue or budget <= 0:
                full = True
            else:
                full = False
                waiter = _Waiter(self._clock.now(), len(self._waiters) + 1)
                if asynchronous:
                    waiter.loop = asyncio.get_running_loop()
                    waiter.fut = waiter.loop.create_future()
                else:
                    waiter.lock = threading.Lock()
                    waiter.lock.acquire()
                self._waiters.append(waiter)
        finally:
            baton.release(None)
        if full:
            self._refuse("queue full" if self.max_queue else "full")
        return waiter, budget

    def _refuse(self, reason: str) -> None:
        self._rejected += 1
        retry_after = self.estimate_wait()
        if listening(RequestShed):
            emit(
                RequestShed(
                    name=self.name,
                    source="bulkhead",
                    priority=None,
                    level=reason,
                    retry_after=retry_after,
                )
            )
        raise Overloaded(reason, retry_after, source="bulkhead")

    def _leave(self, waiter: _Waiter) -> bool:
        """A waiter gives up (timeout, cancellation). True when it had been granted a slot."""
        baton = self._baton
        baton.hold()
        try:
            if waiter.granted:
                return True
            self._waiters.remove(waiter)  # still queued: only dispatch dequeues, and it grants
            return False
        finally:
            baton.release(None)

    def _acquire_slow(self, max_wait: Seconds | None) -> None:
        waiter, budget = self._enqueue(max_wait, asynchronous=False)
        if waiter is None:
            return
        lock = waiter.lock
        assert lock is not None
        try:
            got = lock.acquire(timeout=-1 if math.isinf(budget) else budget)
        except BaseException:
            if self._leave(waiter):
                self.release()
            raise
        if got or self._leave(waiter):
            return
        self._refuse("wait timed out")

    async def _aacquire_slow(self, max_wait: Seconds | None) -> None:
        waiter, budget = self._enqueue(max_wait, asynchronous=True)
        if waiter is None:
            return
        fut = waiter.fut
        assert fut is not None
        timer: asyncio.Future[None] | None = None
        try:
            if math.isinf(budget):
                await fut
            else:
                timer = asyncio.ensure_future(self._clock.asleep(budget))
                await asyncio.wait((fut, timer), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            if self._leave(waiter):
                self.release()
            raise
        finally:
            if timer is not None and not timer.done():
                timer.cancel()
        if fut.done() or self._leave(waiter):
            return
        self._refuse("wait timed out")

    # --- context manager and decorator ---------------------------------------------------------

    def __enter__(self) -> Bulkhead:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    async def __aenter__(self) -> Bulkhead:
        await self.aacquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _decorate_sync(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        acquire, release = self.acquire, self.release

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            acquire()
            try:
                return fn(*args, **kwargs)
            finally:
                release()

        return wrapper

    def _decorate_async(
        self, fn: Callable[..., Coroutine[Any, Any, Any]]
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        aacquire, release = self.aacquire, self.release

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            await aacquire()
            try:
                return await fn(*args, **kwargs)
            finally:
                release()

        return wrapper
