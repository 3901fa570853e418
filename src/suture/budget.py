"""A retry budget: a token bucket that keeps retries from multiplying an outage.

Every success deposits ``ratio`` tokens (capped at ``capacity``); every retry
spends one. When the bucket is empty, retries are refused and the original
error propagates. A small floor (``min_per_second``) refills on its own so a
quiet service can still retry. One budget can serve many policies, threads
and tasks.

The success path costs one ``next()`` on an ``itertools.count`` (atomic in
CPython, no lock): deposits are folded into the bucket lazily when a retry
asks to spend. Capping at fold time gives the same result as capping at each
deposit, because deposits only ever add.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from suture._config import check_clock, check_fraction, check_name, check_number
from suture.clock import SYSTEM_CLOCK, Clock

__all__ = ["Budget", "BudgetStats", "RetryBudget"]

#: Tokens are sums of ``n * ratio``; ten deposits of 0.1 folded one at a time
#: add up to 0.9999999999999999. A token is there when within this of 1.
EPSILON: Final = 1e-9


@dataclass(frozen=True, slots=True)
class BudgetStats:
    """A snapshot of a budget."""

    name: str
    tokens: float  #: earned tokens available now (successes x ratio, capped)
    reserve: float  #: tokens from the time-based floor available now
    deposits: int  #: successes recorded since creation
    spent: int  #: retries allowed since creation
    refused: int  #: retries refused since creation


def check_budget(
    ratio: float, capacity: float, min_per_second: float
) -> tuple[float, float, float]:
    """Validate a budget's numbers (shared by every budget): ``(ratio, capacity, floor)``."""
    out_ratio = check_fraction("ratio", ratio)
    out_capacity = check_number("capacity", capacity)
    if out_capacity < 1:
        raise ValueError(
            f"capacity={capacity!r}: must be a number >= 1 (a bucket that cannot hold "
            "one token never allows a retry)"
        )
    return out_ratio, out_capacity, check_number("min_per_second", min_per_second)


@runtime_checkable
class Budget(Protocol):
    """What :class:`suture.Retry` accepts as ``budget=``.

    :class:`RetryBudget` (this process) and
    :class:`suture.contrib.redis.RedisRetryBudget` (shared by several workers)
    implement it. ``deposit`` is called after every success and must be cheap
    and lock-free; ``try_spend`` before every retry.
    """

    @property
    def name(self) -> str:
        """The name in events."""
        ...

    def deposit(self) -> None:
        """Record one success."""
        ...

    def try_spend(self) -> bool:
        """Take one token for a retry; ``False`` when there is none."""
        ...

    def stats(self) -> BudgetStats:
        """A snapshot."""
        ...


class RetryBudget:
    """Token bucket for retries.

    :param ratio: tokens deposited per success (0.1: at most one retry per ten successes).
    :param capacity: the most earned tokens the bucket holds.
    :param min_per_second: a floor of retries per second that refills on its own.
    """

    __slots__ = (
        "_clock",
        "_credited",
        "_folded",
        "_last_refill",
        "_lock",
        "_refused",
        "_reserve",
        "_spent",
        "_successes",
        "_tokens",
        "capacity",
        "min_per_second",
        "name",
        "ratio",
    )

    def __init__(
        self,
        *,
        ratio: float = 0.1,
        capacity: float = 100.0,
        min_per_second: float = 1.0,
        name: str = "retry-budget",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.ratio, self.capacity, self.min_per_second = check_budget(
            ratio, capacity, min_per_second
        )
        check_name("name", name)
        self.name = name
        self._clock = check_clock(clock)
        self._lock = threading.Lock()
        self._successes = itertools.count()
        self._folded = 0  # successes already folded into _tokens
        self._credited = 0  # successes added by _credit (under the lock)
        self._tokens = 0.0
        # A floor starts with one token, however slow: a fresh, quiet service can retry.
        self._reserve = 1.0 if self.min_per_second else 0.0
        self._last_refill = clock.now()
        self._spent = 0
        self._refused = 0

    def deposit(self) -> None:
        """Record a success. Lock-free."""
        next(self._successes)

    def _credit(self, successes: int) -> None:
        """Add ``successes`` deposits at once (a shared budget's local fallback does)."""
        with self._lock:
            self._credited += successes
            self._fold()

    def _fold(self) -> None:
        # Called with the lock held.
        total = self._count()
        fresh = total - self._folded
        if fresh:
            self._folded = total
            self._tokens = min(self.capacity, self._tokens + fresh * self.ratio)
        if self.min_per_second:
            now = self._clock.now()
            elapsed = now - self._last_refill
            if elapsed > 0:
                self._last_refill = now
                cap = max(1.0, self.min_per_second)
                self._reserve = min(cap, self._reserve + elapsed * self.min_per_second)

    def _count(self) -> int:
        # ``repr(count(7))`` is ``"count(7)"``: the one way to read an itertools counter
        # without advancing it that every supported Python keeps.
        return int(repr(self._successes)[6:-1]) + self._credited

    def try_spend(self) -> bool:
        """Take one token for a retry; ``False`` (and nothing taken) when the bucket is empty."""
        with self._lock:
            self._fold()
            if self._tokens >= 1.0 - EPSILON:
                self._tokens = max(0.0, self._tokens - 1.0)
            elif self._reserve >= 1.0 - EPSILON:
                self._reserve = max(0.0, self._reserve - 1.0)
            else:
                self._refused += 1
                return False
            self._spent += 1
            return True

    def stats(self) -> BudgetStats:
        with self._lock:
            self._fold()
            return BudgetStats(
                name=self.name,
                tokens=self._tokens,
                reserve=self._reserve,
                deposits=self._folded,
                spent=self._spent,
                refused=self._refused,
            )

    def __repr__(self) -> str:
        return (
            f"RetryBudget(name={self.name!r}, ratio={self.ratio}, capacity={self.capacity}, "
            f"min_per_second={self.min_per_second})"
        )
