"""The breaker's state logic: admission, the counting of outcomes, the state changes.

(Over 400 lines: one lock guards all these fields, so the methods that keep them stay together.)

:class:`BreakerCore` holds every decision and no loop: what a call that finds
the breaker not CLOSED is allowed (``_admit``, ``_quick_reject``), how a
finished call counts (``_closed_ok``, ``_closed_error``, ``_probe_done``),
and the moves between states (``_move`` by the :data:`TRANSITIONS` table,
``_set`` for manual control and the store, ``_apply`` for a stored record).
It calls no user function and reads time only from the injected clock; its
one way out is the injected store's ``swap`` when the state changes (as
httpx's ``BaseClient`` holds the logic its ``Client`` and ``AsyncClient`` drive).
:class:`suture.breaker.CircuitBreaker` adds the decorator edge.

The closed hot path takes no lock: it reads ``_closed``, advances an atomic
counter and (in consecutive mode) clears the failure run. Everything else
takes ``_lock``; events are emitted after it is released.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from typing import Final

from suture._config import ExceptionClassifier
from suture.breaker.config import BreakerConfig, BreakerFallback
from suture.breaker.store import (
    BreakerRecord,
    BreakerState,
    BreakerStore,
    MemoryBreakerStore,
    SharedPermits,
)
from suture.clock import Clock
from suture.errors import BreakerOpen, DeadlineExceeded, InvalidTransition
from suture.events import BreakerRejected, BreakerStateChanged, Event, emit, listening, logger
from suture.windows import FAILURE, SLOW, TimeWindow, WindowCounter, count_value

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "TRANSITIONS", "BreakerCore"]

CLOSED: Final = BreakerState.CLOSED
OPEN: Final = BreakerState.OPEN
HALF_OPEN: Final = BreakerState.HALF_OPEN

#: The moves the breaker makes by itself; manual control and the store may make any move.
TRANSITIONS: Final = frozenset(
    {(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (HALF_OPEN, CLOSED)}
)

# How a finished call counts.
SUCCESS: Final = 0
FAILED: Final = FAILURE
IGNORED: Final = -1

_rejecting = BreakerOpen.rejecting


class BreakerCore:
    """A breaker's state and every decision about it; no user code runs here."""

    # Slots: the hot path reads three of these on every call, and a slot is the
    # quickest attribute there is.
    __slots__ = (
        "_armed",
        "_baseline",
        "_clock",
        "_closed",
        "_consecutive",
        "_count_rejection",
        "_failures",
        "_fallback",
        "_forced",
        "_forced_wait",
        "_generation",
        "_half_open_deadline",
        "_ignore",
        "_ignored",
        "_lock",
        "_mark",
        "_needs_time",
        "_now",
        "_on",
        "_open_count",
        "_opened_at",
        "_opened_wall",
        "_origin",
        "_overload",
        "_pending",
        "_pending_lock",
        "_permits",
        "_probe_successes",
        "_rejections",
        "_retry_at",
        "_shared_permit",
        "_slow_failures",
        "_slow_successes",
        "_state",
        "_store",
        "_successes",
        "_timed",
        "_tokens",
        "_total_opens",
        "_unsubscribe",
        "_version",
        "_window",
        "config",
        "name",
    )

    def _setup(self, name: str, config: BreakerConfig) -> None:
        self.name: str = name
        self.config: BreakerConfig = config
        self._clock: Clock = config.clock
        self._store: BreakerStore = (
            config.store if config.store is not None else MemoryBreakerStore()
        )
        # Unique across threads, processes (forked workers included) and hosts: a
        # breaker ignores the store records it wrote itself, and only those.
        self._origin = f"{name}#{uuid.uuid4().hex[:16]}"
        self._lock = threading.Lock()
        self._on: ExceptionClassifier = config.on
        self._fallback: BreakerFallback | None = config.fallback
        self._timed = config.slow_call_duration is not None
        self._now = self._clock.now
        self._forced_wait = config.reset_timeout
        self._needs_time = isinstance(config.window, TimeWindow)
        self._ignore: tuple[type[BaseException], ...] = (
            BreakerOpen,
            DeadlineExceeded,
            *config.ignore,
        )
        self._overload: ExceptionClassifier = config.overload
        self._window: WindowCounter | None = (
            config.window.counter() if config.window is not None else None
        )
        # State. ``_closed`` is the one attribute the hot path reads: True only
        # while CLOSED with nothing pending from the store.
        self._state = CLOSED
        self._closed = True
        self._generation = 0
        self._version = 0
        self._forced = False
        self._opened_at: float | None = None  # monotonic
        self._opened_wall: float | None = None
        self._retry_at = 0.0  # monotonic: when OPEN admits a probe
        self._half_open_deadline = 0.0
        self._open_count = 0
        self._total_opens = 0
        self._permits = 0
        # Cluster-wide half-open permits, when the store has them (see store.SharedPermits).
        self._shared_permit: SharedPermits | None = (
            self._store if isinstance(self._store, SharedPermits) else None
        )
        self._tokens: list[str] = []  # the shared permits this breaker's probes hold
        self._probe_successes = 0
        self._consecutive = 0
        self._armed = False  # window mode: the rate is over a threshold, waiting for minimum_calls
        self._pending: BreakerRecord | None = None
        self._pending_lock = threading.Lock()
        # Totals: atomic counters for the lock-free paths, ints under the lock.
        self._successes = itertools.count()
        self._ignored = itertools.count()
        self._rejections = itertools.count()
        self._count_rejection = self._rejections.__next__
        self._failures = 0
        # Slow calls (window mode with slow_call_duration): counted under the lock,
        # on the paths that take it anyway, so a fast success pays nothing for them.
        self._slow_successes = 0
        self._slow_failures = 0
        # successes, ignored, rejections, failures, slow successes, slow failures at reset()
        self._baseline = (0, 0, 0, 0, 0, 0)
        self._mark = (0, 0, 0)  # successes, rejections, failures at the last state change
        record = self._store.load(name)
        if record is not None:
            self._apply(record, self._clock.now(), announce=False)
        self._unsubscribe = self._store.subscribe(name, self._on_record)

    # --- the closed path ---------------------------------------------------------------

    def _closed_ok(self, start: float, end: float) -> None:
        """A success while CLOSED (lock-free unless it is slow or the window is armed)."""
        next(self._successes)
        window = self._window
        if window is None:
            if self._consecutive:
                self._consecutive = 0
            return
        if not self._timed:  # untimed callers pass 0.0: a time window needs the time
            end = self._clock.now() if self._needs_time else 0.0
        slow = self.config.slow_call_duration
        if slow is not None and end - start > slow:
            with self._lock:
                self._slow_successes += 1
                window.record(SLOW, end)
                event = self._evaluate(end, self._generation)
        elif window.success(end) or self._armed:
            # The window forgot old calls, or a rate is over its threshold and
            # only minimum_calls was missing: decide now, as after a failure.
            with self._lock:
                event = self._evaluate(self._clock.now(), self._generation)
        else:
            return
        if event is not None:
            emit(event)

    def _outcome(self, exc: BaseException) -> int:
        if not isinstance(exc, Exception) or isinstance(exc, self._ignore):
            return IGNORED  # cancellation, KeyboardInterrupt, SystemExit, ignored types
        try:
            if self._overload(exc):
                return IGNORED  # our own queue was full: nothing learnt about the dependency
            return FAILED if self._on(exc) else SUCCESS
        except Exception:
            logger.exception("suture: breaker %s: classifier failed on %r", self.name, exc)
            return FAILED

    def _closed_error(self, exc: BaseException, gen: int, duration: float) -> None:
        """An error from a call admitted while CLOSED."""
        outcome = self._outcome(exc)
        if outcome == IGNORED:
            next(self._ignored)
            return
        if outcome == SUCCESS:
            now = self._clock.now()
            self._closed_ok(now - duration, now)
            return
        event: BreakerStateChanged | None = None
        slow = self._is_slow(duration)
        with self._lock:
            self._failures += 1
            self._slow_failures += slow
            if gen != self._generation or self._state is not CLOSED:
                return  # the breaker moved on while this call ran: it no longer counts
            now = self._clock.now()
            window = self._window
            self._consecutive += 1
            if window is None:
                if self._consecutive >= self.config.failure_threshold:
                    reason = f"{self._consecutive} consecutive failures"
                    event = self._move(OPEN, reason, now, grow=False)
            else:
                window.record(FAILURE | (SLOW if slow else 0), now)
                event = self._evaluate(now, gen)
        if event is not None:
            emit(event)

    def _is_slow(self, duration: float) -> bool:
        """Whether a call of ``duration`` seconds is slow (never without ``slow_call_duration``)."""
        slow = self.config.slow_call_duration
        return slow is not None and duration > slow

    def _evaluate(self, now: float, gen: int) -> BreakerStateChanged | None:
        """Window mode: trip when a rate reaches its threshold with enough calls. Locked."""
        if self._state is not CLOSED or gen != self._generation or self._window is None:
            return None
        cfg = self.config
        calls, failures, slow = self._window.counts(now, evaluate=True)
        if not calls:
            self._armed = False
            return None
        reason = ""
        if failures / calls >= cfg.failure_rate_threshold:
            reason = f"failure rate {failures}/{calls} >= {cfg.failure_rate_threshold:g}"
        elif cfg.slow_call_duration is not None and slow / calls >= cfg.slow_call_rate_threshold:
            reason = f"slow-call rate {slow}/{calls} >= {cfg.slow_call_rate_threshold:g}"
        if not reason:
            self._armed = False
            return None
        if calls < cfg.minimum_calls:
            self._armed = True
            return None
        self._armed = False
        return self._move(OPEN, reason, now, grow=False)

    # --- open and half-open --------------------------------------------------------------

    def _quick_reject(self) -> BreakerOpen | None:
        """OPEN, before its timeout, nothing newer in the store: reject without the lock.

        Rejections come at the rate of the calls, so this is written for speed:
        no lock, and the event built only when someone would see it.
        """
        now = self._now()
        retry_at = self._retry_at
        forced = self._forced
        if now >= retry_at and not forced:
            return None
        pending = self._pending
        if pending is not None and pending.version > self._version:
            return None
        self._count_rejection()
        name = self.name
        wait = self._forced_wait if forced else retry_at - now
        if listening(BreakerRejected):
            emit(BreakerRejected(name=name, retry_after=wait))
        return _rejecting(name, wait)

    def _rejects_within(self, delay: float) -> bool:
        """Whether a call made ``delay`` seconds from now would surely be rejected.

        True only while OPEN with its probe time after ``delay`` (or forced open)
        and nothing newer in the store. A question with no side effect: nothing is
        counted or announced, no half-open permit is taken (a HALF_OPEN breaker
        answers False: its probes may close it meanwhile). A retry asks it before
        waiting (:class:`suture.Policy`): a wait that ends in a rejection is skipped.
        """
        if self._closed or self._state is not OPEN:
            return False
        if not self._forced and self._now() + delay >= self._retry_at:
            return False
        return not self._newer_pending()

    def _admit(self) -> tuple[int, BreakerState, BreakerOpen | None]:
        """Decide a call that found the breaker not CLOSED; emits what happened.

        Returns the generation and state the call was admitted in, and the
        rejection (or ``None``), already announced.
        """
        events: list[Event] = []
        with self._lock:
            now = self._clock.now()
            self._sync(now, events)
            gen, state = self._generation, self._state
            error = None if state is CLOSED else self._admit_probe(now, events)
            if error is not None:
                gen, state = self._generation, self._state
        if error is not None and listening(BreakerRejected):
            events.append(BreakerRejected(name=self.name, retry_after=error.retry_after))
        for event in events:
            emit(event)
        return gen, state, error

    def _admit_probe(self, now: float, events: list[Event]) -> BreakerOpen | None:
        """OPEN or HALF_OPEN: take a probe permit, or the rejection. Locked."""
        if self._state is HALF_OPEN:
            limit = self.config.half_open_max_calls
            token = None
            if self._permits < limit and self._shared_permit is not None:
                token = self._shared_permit.try_permit(self.name, limit, self.config.reset_timeout)
            if self._permits < limit and token != "":
                self._permits += 1
                if token:
                    self._tokens.append(token)
                return None
            if token == "":
                # Another worker holds the cluster's permits, or ours is on its way.
                next(self._rejections)
                return BreakerOpen(self.name, min(0.05, self.config.reset_timeout))
            if now >= self._half_open_deadline:
                reason = "a probe did not finish within the reset timeout"
                events.append(self._move(OPEN, reason, now, grow=True))
                wait = self._retry_at - now
            else:
                # Probes are running: their outcome decides within a moment.
                wait = min(1.0, self._half_open_deadline - now)
        elif self._forced:
            wait = self.config.reset_timeout
        else:
            wait = self._retry_at - now
        next(self._rejections)
        return BreakerOpen(self.name, wait)

    def _finish(self, admitted: BreakerState, gen: int, start: float, error: object) -> None:
        """A call admitted by :meth:`_admit` ended (``error`` is ``None`` on success)."""
        end = self._clock.now()
        if admitted is CLOSED:
            if isinstance(error, BaseException):
                self._closed_error(error, gen, end - start)
            else:
                self._closed_ok(start, end)
            return
        outcome = self._outcome(error) if isinstance(error, BaseException) else SUCCESS
        self._probe_done(gen, outcome, end - start)

    def _probe_done(self, gen: int, outcome: int, duration: float) -> None:
        """A half-open probe finished: give the permit back and count it."""
        if outcome == IGNORED:
            next(self._ignored)
        elif outcome == SUCCESS:
            next(self._successes)
        event: BreakerStateChanged | None = None
        slow = self._is_slow(duration)
        with self._lock:
            if outcome == FAILED:
                self._failures += 1
                self._slow_failures += slow
            elif outcome == SUCCESS:
                self._slow_successes += slow
            if gen != self._generation or self._state is not HALF_OPEN:
                return  # a late probe of an earlier half-open period: it no longer counts
            self._permits -= 1
            if self._tokens:
                self._give_back(self._tokens.pop())
            if outcome == IGNORED:
                return
            now = self._clock.now()
            if outcome == FAILED:
                event = self._move(OPEN, "a probe failed", now, grow=True)
            elif slow:
                event = self._move(OPEN, f"a probe took {duration:.3f}s (slow)", now, grow=True)
            else:
                self._probe_successes += 1
                if self._probe_successes >= self.config.success_threshold:
                    reason = f"{self._probe_successes} probe(s) succeeded"
                    event = self._move(CLOSED, reason, now, grow=False)
        if event is not None:
            emit(event)

    # --- state changes -------------------------------------------------------------------

    def _sync(self, now: float, events: list[Event]) -> None:
        """Apply a newer store record and an elapsed open timeout. Locked."""
        pending = self._pending
        if pending is not None and pending.version > self._version:
            if pending.state is HALF_OPEN and self._state is HALF_OPEN and not pending.forced:
                # Another worker's record of the same half-open period: the probes
                # running here (and their shared permits) stay as they are.
                self._version = pending.version
            else:
                event = self._apply(pending, now, announce=True)
                if event is not None:
                    events.append(event)
        if self._state is OPEN and not self._forced and now >= self._retry_at:
            events.append(self._move(HALF_OPEN, "reset timeout elapsed", now, grow=False))
        self._reopen_fast_path()

    def _reopen_fast_path(self) -> None:
        """Let the hot path run again when CLOSED and nothing newer is pending. Locked.

        The store's listener writes ``_pending`` then clears ``_closed``; reading
        ``_pending`` again after setting ``_closed`` means no record is missed.
        """
        if self._state is not CLOSED or self._newer_pending():
            return
        self._closed = True
        if self._newer_pending():
            self._closed = False

    def _newer_pending(self) -> bool:
        pending = self._pending
        return pending is not None and pending.version > self._version

    def _move(
        self, target: BreakerState, reason: str, now: float, *, grow: bool
    ) -> BreakerStateChanged:
        """Change state by the breaker's own rules. Locked; returns the event to emit."""
        source = self._state
        if (source, target) not in TRANSITIONS:
            raise InvalidTransition(source, target, self.name)
        return self._set(target, reason, now, grow=grow, forced=False)

    def _set(
        self, target: BreakerState, reason: str, now: float, *, grow: bool, forced: bool
    ) -> BreakerStateChanged:
        """Write the new state through the store and apply it locally. Locked."""
        cfg = self.config
        wall = self._clock.wall()
        open_count = self._open_count
        opened_at: float | None = None
        retry_at: float | None = None
        if target is OPEN:
            open_count = open_count + 1 if grow else max(open_count, 1)
            duration = cfg.reset_timeout * cfg.open_factor ** (open_count - 1)
            if cfg.max_reset_timeout is not None:
                duration = min(duration, cfg.max_reset_timeout)
            opened_at = wall
            retry_at = wall + duration
        elif target is CLOSED:
            open_count = 0
        else:
            opened_at = self._opened_wall
        record = BreakerRecord(
            state=target,
            version=self._version + 1,
            opened_at=opened_at,
            retry_at=retry_at,
            open_count=open_count,
            forced=forced,
            reason=reason,
            origin=self._origin,
        )
        stored = self._store.swap(self.name, self._version, record)
        source = self._state
        self._apply(stored, now, announce=False)
        return BreakerStateChanged(
            name=self.name, source=source, target=stored.state, reason=stored.reason
        )

    def _apply(
        self, record: BreakerRecord, now: float, *, announce: bool
    ) -> BreakerStateChanged | None:
        """Make a stored record the local state. Locked (or during construction)."""
        source = self._state
        self._closed = False  # the hot path takes the slow path while this changes
        self._version = record.version
        self._generation += 1
        self._state = record.state
        self._forced = record.forced
        self._open_count = record.open_count
        self._permits = 0
        while self._tokens:  # the half-open period is over: its permits go back
            self._give_back(self._tokens.pop())
        self._probe_successes = 0
        self._consecutive = 0
        self._armed = False
        self._mark = (count_value(self._successes), count_value(self._rejections), self._failures)
        wall = self._clock.wall()
        if record.state is CLOSED:
            self._opened_at = None
            self._opened_wall = None
            if self._window is not None:
                self._window.clear()
        elif record.state is OPEN:
            if source is not OPEN:
                self._total_opens += 1
            self._opened_wall = record.opened_at
            self._opened_at = now - (wall - record.opened_at) if record.opened_at else now
            retry_wall = record.retry_at if record.retry_at is not None else wall
            self._retry_at = now + (retry_wall - wall)
        else:  # HALF_OPEN
            self._half_open_deadline = now + self.config.reset_timeout
        self._reopen_fast_path()
        if announce and source is not record.state:
            return BreakerStateChanged(
                name=self.name,
                source=source,
                target=record.state,
                reason=f"shared store: {record.reason}",
            )
        return None

    def _give_back(self, token: str) -> None:
        """Release one shared permit (the store queues it; never waits on I/O)."""
        if self._shared_permit is not None:
            self._shared_permit.release_permit(self.name, token)

    def _on_record(self, record: BreakerRecord) -> None:
        """The store's listener: only note the record; the next call applies it."""
        if record.origin == self._origin:
            return
        # Stores deliver outside their own lock, so two records may arrive at once
        # from two threads: keep the newer one. (Never the breaker's lock here: a
        # breaker changing state holds it while its store notifies other breakers.)
        with self._pending_lock:
            pending = self._pending
            if pending is None or record.version > pending.version:
                self._pending = record
        self._closed = False

    def _manual(self, target: BreakerState, reason: str, *, forced: bool) -> None:
        events: list[Event] = []
        with self._lock:
            now = self._clock.now()
            self._sync(now, events)
            source = self._state
            event = self._set(target, reason, now, grow=False, forced=forced)
        if source is not target or forced:
            events.append(event)
        for item in events:
            emit(item)
