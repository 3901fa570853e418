"""What the rate limiters share: their option checks and constants (GCRA's arithmetic
is in each limiter's own hot path)."""

from __future__ import annotations

import math
from typing import Final

from suture._config import Seconds, check_int, check_number, check_seconds
from suture.deadline import remaining as deadline_remaining

__all__ = ["DEFAULT_MAX_WAIT", "SLACK", "check_cost", "check_rate", "check_wait"]

#: How long :meth:`RateLimiter.acquire` waits for a slot unless told otherwise.
DEFAULT_MAX_WAIT: Final = 10.0

#: Float slack on the admission test, as a fraction of one interval: ``0.1 + 0.2``
#: is not ``0.3``, and a call exactly on its slot must not be refused for it.
SLACK: Final = 1e-9


def check_rate(rate: float, period: Seconds, burst: int | None) -> tuple[float, float, int]:
    """``(interval, period, burst)`` from a limiter's options, or an error naming the option."""
    rate_f = check_number("rate", rate, positive=True)
    period_f = check_seconds("period", period, positive=True)
    if burst is None:
        burst = max(1, math.ceil(rate_f))
    check_int("burst", burst, minimum=1)
    interval = period_f / rate_f
    if not (math.isfinite(interval) and interval > 0):
        raise ValueError(
            f"rate={rate!r}, period={period!r}: one call every {interval!r}s is not a usable "
            "interval (must be a finite number of seconds greater than 0)"
        )
    return interval, period_f, burst


def check_cost(cost: int, burst: int) -> int:
    check_int("cost", cost, minimum=1)
    if cost > burst:
        raise ValueError(
            f"cost={cost!r}: must be at most burst={burst} (a call that needs more tokens "
            "than the limiter ever holds could never be admitted)"
        )
    return cost


def check_wait(max_wait: Seconds | None, default: float) -> float:
    """How long a caller may wait: ``max_wait`` (else ``default``), lowered to what
    remains of the request's deadline (:mod:`suture.deadline`), never below 0: a
    wait that would end past the deadline is refused at once, like one past
    ``max_wait``."""
    budget = default if max_wait is None else check_seconds("max_wait", max_wait, allow_inf=True)
    left = deadline_remaining()
    if left is not None and left < budget:
        return max(left, 0.0)
    return budget
