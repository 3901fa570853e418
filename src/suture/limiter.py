"""An adaptive concurrency limit: how many requests may be in flight, learnt from latency.

:class:`AdaptiveLimiter` admits a request while the number in flight is below
its limit (scaled by the request's :class:`~suture.admission.Priority`: LOW gets a
smaller share, CRITICAL may go a little past it) and raises
:class:`suture.Overloaded` (``source="limiter"``) otherwise. Each completion
reports its latency and whether it was a *drop* (an error the classifier calls
transient, such as a timeout, or a latency past ``timeout``); the limit moves:

* ``mode="aimd"`` (the default), as in Netflix's concurrency-limits AIMD and
  TCP: a drop multiplies the limit by ``backoff_ratio`` (once per round trip:
  only requests that started after the last decrease can decrease it again);
  a success while the limit is in use adds ``1 / limit``, about one per
  round trip.
* ``mode="gradient"``, in the manner of Envoy's adaptive concurrency filter
  and Netflix's gradient limit: the no-load latency (``min_rtt``) is measured
  with the concurrency pinned low (``probe_limit``), at first and every
  ``probe_interval`` seconds; in between, every ``window`` the median latency of
  the window gives ``gradient = min_rtt * (1 + buffer) / latency`` (clamped to
  [0.5, 2]) and ``limit = limit * gradient + sqrt(limit)``, smoothed. Past the
  service's knee latency grows, the gradient falls below 1 and the limit
  settles just past the knee. Drops back off multiplicatively as in AIMD.

The logic is one pure state machine (``Aimd``, ``Gradient`` in :mod:`suture._limits`) under
a lock; a :class:`Permit` is the sync and async context manager around a call.
Time comes from the injected clock.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal, Self

from suture._config import Seconds, check_fraction, check_int, check_seconds
from suture._limits import Aimd, Gradient
from suture.admission import Priority
from suture.classify import ExceptionClassifier, is_transient
from suture.clock import SYSTEM_CLOCK, Clock
from suture.errors import Overloaded
from suture.events import LimitChanged, RequestShed, emit

__all__ = ["AdaptiveLimiter", "Permit"]

Mode = Literal["aimd", "gradient"]

_DEFAULT_SHARES: Mapping[Priority, float] = {
    Priority.LOW: 0.75,
    Priority.NORMAL: 1.0,
    Priority.CRITICAL: 1.25,
}


class AdaptiveLimiter:
    """A concurrency limit adapted from observed latency and drops.

    :param mode: ``"aimd"`` (default) or ``"gradient"``.
    :param initial: the starting limit.
    :param min_limit: the limit never goes below this.
    :param max_limit: nor above this.
    :param timeout: a completion slower than this counts as a drop.
    :param backoff_ratio: the factor a drop multiplies the limit by.
    :param buffer: gradient: the latency over ``min_rtt`` still considered no-load (0.1: 10%).
    :param smoothing: gradient: how far each window moves the limit toward its target.
    :param window: gradient: seconds of completions per update.
    :param probe_interval: gradient: seconds between no-load latency measurements.
    :param probe_limit: gradient: the concurrency while measuring the no-load latency.
    :param probe_samples: gradient: completions per measurement.
    :param shares: fraction of the limit each priority may fill (LOW 0.75, NORMAL 1,
        CRITICAL 1.25 by default).
    :param drop_on: which exceptions count as drops (default :func:`suture.is_transient`);
        others release the slot without teaching the limiter anything.
    :param retry_after: the hint, in seconds, carried by :class:`suture.Overloaded`.
    """

    def __init__(  # noqa: PLR0913 - keyword-only options of both limit algorithms
        self,
        *,
        mode: Mode = "aimd",
        initial: int = 20,
        min_limit: int = 1,
        max_limit: int = 1000,
        timeout: Seconds = 1.0,
        backoff_ratio: float = 0.9,
        buffer: float = 0.1,
        smoothing: float = 0.2,
        window: Seconds = 0.1,
        probe_interval: Seconds = 60.0,
        probe_limit: int = 3,
        probe_samples: int = 20,
        shares: Mapping[Priority, float] = _DEFAULT_SHARES,
        drop_on: ExceptionClassifier = is_transient,
        retry_after: Seconds = 1.0,
        name: str = "limiter",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if mode not in ("aimd", "gradient"):
            raise ValueError(f"mode={mode!r}: must be 'aimd' or 'gradient'")
        self.mode: Mode = mode
        self.min_limit = check_int("min_limit", min_limit, minimum=1)
        self.max_limit = check_int("max_limit", max_limit, minimum=1)
        if self.max_limit < self.min_limit:
            raise ValueError(f"max_limit={max_limit!r}: must be at least min_limit={min_limit!r}")
        self.initial = check_int("initial", initial, minimum=self.min_limit, maximum=self.max_limit)
        self.timeout = check_seconds("timeout", timeout, positive=True)
        self.backoff_ratio = check_fraction("backoff_ratio", backoff_ratio)
        if self.backoff_ratio >= 1.0:
            raise ValueError(f"backoff_ratio={backoff_ratio!r}: must be within (0, 1)")
        self.buffer = check_seconds("buffer", buffer)
        self.smoothing = check_fraction("smoothing", smoothing)
        self.window = check_seconds("window", window, positive=True)
        self.probe_interval = check_seconds("probe_interval", probe_interval, positive=True)
        self.probe_limit = check_int("probe_limit", probe_limit, minimum=1)
        self.probe_samples = check_int("probe_samples", probe_samples, minimum=1)
        self.shares = _check_shares(shares)
        self._share = tuple(self.shares[p] for p in sorted(Priority))
        if not callable(drop_on):
            raise TypeError(f"drop_on={drop_on!r}: expected a callable (exception) -> bool")
        self.drop_on = drop_on
        self.retry_after = check_seconds("retry_after", retry_after)
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._estimate = float(self.initial)
        self._inflight = 0
        self._algorithm: Aimd | Gradient
        if mode == "aimd":
            self._algorithm = Aimd(self.backoff_ratio)
        else:
            self._algorithm = Gradient(
                backoff_ratio=self.backoff_ratio,
                buffer=self.buffer,
                smoothing=self.smoothing,
                window=self.window,
                probe_interval=self.probe_interval,
                probe_samples=self.probe_samples,
            )
            self._algorithm.resume_limit = self._estimate
        self._limit = self._current_limit()
        self.shed = 0
        self.drops = 0

    # --- state --------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        """The concurrency admitted now (for NORMAL priority)."""
        return self._limit

    def _current_limit(self) -> int:
        alg = self._algorithm
        if isinstance(alg, Gradient) and alg.probing:
            return max(self.min_limit, min(self.probe_limit, self.max_limit))
        return max(self.min_limit, int(self._estimate))

    @property
    def estimate(self) -> float:
        """The limit as the algorithm holds it (a float)."""
        return self._estimate

    @property
    def inflight(self) -> int:
        """Requests admitted and not yet released."""
        return self._inflight

    @property
    def min_rtt(self) -> float | None:
        """Gradient mode: the measured no-load latency (``None`` before the first probe)."""
        alg = self._algorithm
        return alg.min_rtt if isinstance(alg, Gradient) else None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly snapshot."""
        return {
            "name": self.name,
            "mode": self.mode,
            "limit": self.limit,
            "estimate": self._estimate,
            "inflight": self._inflight,
            "min_rtt": self.min_rtt,
            "shed": self.shed,
            "drops": self.drops,
        }

    # --- admission ----------------------------------------------------------------------

    def try_acquire(self, priority: Priority = Priority.NORMAL) -> Permit | None:
        """A permit, or ``None`` when this priority's share of the limit is full."""
        with self._lock:
            inflight = self._inflight
            if inflight >= self._limit * self._share[priority]:
                self.shed += 1
                return None
            self._inflight = inflight + 1
        return Permit(self, self._clock.now(), inflight + 1)

    def acquire(self, priority: Priority = Priority.NORMAL) -> Permit:
        """A permit, or :class:`suture.Overloaded` when over the limit.

        Use the permit as a context manager (``with limiter.acquire(p):`` or
        ``async with``) or call one of its ``success()``, ``dropped()``,
        ``ignore()`` exactly once.
        """
        permit = self.try_acquire(priority)
        if permit is None:
            emit(
                RequestShed(
                    name=self.name,
                    source="limiter",
                    priority=Priority(priority),
                    level=self.limit,
                    retry_after=self.retry_after,
                )
            )
            raise Overloaded(f"limit {self.limit}", self.retry_after, source="limiter")
        return permit

    __call__ = acquire

    def _release(self, started: float, inflight: int, outcome: str) -> None:
        now = self._clock.now()
        with self._lock:
            self._inflight -= 1
            if outcome == "ignore":
                return
            rtt = max(0.0, now - started)
            drop = outcome == "drop" or rtt > self.timeout
            if drop:
                self.drops += 1
            old_limit = self._limit
            new, reason = self._algorithm.on_sample(
                self._estimate, now=now, started=started, rtt=rtt, inflight=inflight, drop=drop
            )
            if not reason:
                return  # nothing learnt: the common case when the limit is not in use
            self._estimate = max(float(self.min_limit), min(float(self.max_limit), new))
            self._limit = new_limit = self._current_limit()
        if new_limit != old_limit:
            emit(
                LimitChanged(
                    name=self.name, old=float(old_limit), new=float(new_limit), reason=reason
                )
            )

    def __repr__(self) -> str:
        return (
            f"AdaptiveLimiter(name={self.name!r}, mode={self.mode!r}, limit={self.limit}, "
            f"inflight={self._inflight}, min_limit={self.min_limit}, max_limit={self.max_limit})"
        )


class Permit:
    """One admitted request. Release it once: as a context manager, or by hand."""

    __slots__ = ("_done", "_inflight", "_limiter", "started")

    def __init__(self, limiter: AdaptiveLimiter, started: float, inflight: int) -> None:
        self._limiter = limiter
        self.started = started
        self._inflight = inflight
        self._done = False

    def _finish(self, outcome: str) -> None:
        if self._done:
            return
        self._done = True
        self._limiter._release(self.started, self._inflight, outcome)

    def success(self) -> None:
        """The call completed: its latency teaches the limiter."""
        self._finish("ok")

    def dropped(self) -> None:
        """The call was dropped (timed out, rejected downstream): the limit backs off."""
        self._finish("drop")

    def ignore(self) -> None:
        """Release the slot without teaching the limiter (the call failed for its own reasons)."""
        self._finish("ignore")

    def release(self, exc: BaseException | None = None) -> None:
        """Release by the outcome: ``None`` is a success, an error the limiter's
        ``drop_on`` accepts (a timeout, a transient error) a drop; any other
        error, a cancellation included, releases the slot untaught.

        What ``with``/``async with`` do on exit; for the acquire/release step by
        hand (``permit = limiter.acquire(p)`` ... ``permit.release(error)``).
        Only the first release of a permit counts.
        """
        self._exit(exc)

    def _exit(self, exc: BaseException | None) -> None:
        if exc is None:
            self.success()
        elif isinstance(exc, Exception) and self._limiter.drop_on(exc):
            self.dropped()
        else:
            self.ignore()  # a bug, a 4xx or a cancellation says nothing about capacity

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc)


def _check_shares(shares: Mapping[Priority, float]) -> dict[Priority, float]:
    if not isinstance(shares, Mapping):
        raise TypeError(f"shares={shares!r}: expected a mapping of Priority to a fraction")
    out = dict(_DEFAULT_SHARES)
    for key, value in shares.items():
        if not isinstance(key, Priority):
            raise TypeError(f"shares: key {key!r} is not a Priority")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"shares[{key.name}]={value!r}: must be a number greater than 0")
        out[key] = float(value)
    if not out[Priority.LOW] <= out[Priority.NORMAL] <= out[Priority.CRITICAL]:
        raise ValueError(
            f"shares={shares!r}: must not decrease with priority (LOW <= NORMAL <= CRITICAL)"
        )
    return out
