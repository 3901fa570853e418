"""Delay schedules as pure functions.

Exponential growth with a multiplier and a cap, and the jitter kinds from
AWS's "Exponential Backoff and Jitter": ``none``, ``full``, ``equal`` and
``decorrelated``. Randomness is injected: every function takes ``rand``, a
callable returning a float in [0, 1) (``random.random`` by default).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, Literal, get_args

from suture._config import Seconds, check_seconds

__all__ = [
    "JITTERS",
    "Backoff",
    "Jitter",
    "decorrelated_jitter",
    "equal_jitter",
    "exponential",
    "full_jitter",
]

Jitter = Literal["none", "full", "equal", "decorrelated"]
JITTERS: Final[tuple[str, ...]] = get_args(Jitter)

Rand = Callable[[], float]


def exponential(retry: int, *, initial: float, multiplier: float, cap: float) -> float:
    """``min(cap, initial * multiplier ** (retry - 1))`` for the ``retry``-th wait (1-based).

    Never overflows: a huge ``retry`` simply gives ``cap``.
    """
    if retry <= 1:
        return min(cap, initial)
    try:
        return min(cap, initial * multiplier ** (retry - 1))
    except OverflowError:
        return cap


def full_jitter(base: float, rand: Rand) -> float:
    """Uniform in ``[0, base)``."""
    return base * rand()


def equal_jitter(base: float, rand: Rand) -> float:
    """Uniform in ``[base / 2, base)``: half fixed, half random."""
    half = base / 2.0
    return half + half * rand()


def decorrelated_jitter(previous: float, *, initial: float, cap: float, rand: Rand) -> float:
    """``min(cap, uniform(initial, max(previous, initial) * 3))``, as AWS published it.

    Each wait grows from the last one; before the first wait ``previous`` is
    ``initial`` itself (pass 0 or ``initial``), so the first wait is already a
    draw in ``[initial, 3 * initial)`` and clients that failed together do not
    retry together.
    """
    high = max(initial, previous) * 3.0
    return min(cap, initial + (high - initial) * rand())


@dataclass(frozen=True, slots=True, init=False)
class Backoff:
    """A delay schedule: exponential, capped, with a jitter kind.

    >>> b = Backoff(initial=1.0, max_delay=8.0, multiplier=2.0, jitter="none")
    >>> list(b.delays(5))
    [1.0, 2.0, 4.0, 8.0, 8.0]
    """

    initial: float = 1.0
    max_delay: float = 8.0
    multiplier: float = 2.0
    jitter: Jitter = "full"

    def __init__(
        self,
        *,
        initial: Seconds = 1.0,
        max_delay: Seconds = 8.0,
        multiplier: float = 2.0,
        jitter: Jitter = "full",
    ) -> None:
        init = check_seconds("initial", initial)
        cap = check_seconds("max_delay", max_delay)
        if cap < init:
            raise ValueError(f"max_delay={max_delay!r}: must be >= initial ({init!r} seconds)")
        if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)):
            raise TypeError(f"multiplier={multiplier!r}: expected a number >= 1")
        if not multiplier >= 1:
            raise ValueError(f"multiplier={multiplier!r}: must be a number >= 1")
        if jitter not in JITTERS:
            raise ValueError(f"jitter={jitter!r}: must be one of {', '.join(map(repr, JITTERS))}")
        object.__setattr__(self, "initial", init)
        object.__setattr__(self, "max_delay", cap)
        object.__setattr__(self, "multiplier", float(multiplier))
        object.__setattr__(self, "jitter", jitter)

    def delay(self, retry: int, previous: float, rand: Rand = random.random) -> float:
        """The wait before retry number ``retry`` (1-based); ``previous`` is the last wait."""
        jitter = self.jitter
        if jitter == "decorrelated":
            return decorrelated_jitter(
                previous, initial=self.initial, cap=self.max_delay, rand=rand
            )
        base = exponential(
            retry, initial=self.initial, multiplier=self.multiplier, cap=self.max_delay
        )
        if jitter == "full":
            return full_jitter(base, rand)
        if jitter == "equal":
            return equal_jitter(base, rand)
        return base

    def delays(self, count: int, rand: Rand = random.random) -> Iterator[float]:
        """The first ``count`` waits of the schedule."""
        previous = 0.0
        for retry in range(1, count + 1):
            previous = self.delay(retry, previous, rand)
            yield previous
