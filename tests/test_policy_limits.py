"""Composition with the limits: fallback, rate limit, bulkhead, retry, breaker, timeout,
outermost to innermost, whatever order the parts come in."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from suture import (
    Bulkhead,
    CircuitBreaker,
    Fallback,
    LastGood,
    Overloaded,
    Policy,
    RateLimiter,
    Retry,
    Timeout,
    compose,
)
from suture.lastgood import last_served
from suture.testing import FakeClock


class FailsThenWorks:
    """Fails ``failures`` times with a transient error, then answers; records the
    bulkhead's occupancy at each attempt."""

    def __init__(self, failures: int, bulkhead: Bulkhead | None = None) -> None:
        self.failures = failures
        self.calls = 0
        self.bulkhead = bulkhead
        self.in_flight: list[int] = []

    def __call__(self) -> str:
        self.calls += 1
        if self.bulkhead is not None:
            self.in_flight.append(self.bulkhead.in_flight)
        if self.calls <= self.failures:
            raise ConnectionError("flaky")
        return "ok"


def limits(clock: FakeClock) -> list[Any]:
    return [
        Retry(attempts=3, initial_delay=0.1, max_delay=0.1, jitter="none", clock=clock),
        CircuitBreaker("dep", failure_threshold=5, clock=clock),
        Timeout(1.0, clock=clock),
        Fallback(lambda exc: f"fallback: {type(exc).__name__}"),
        RateLimiter(1, period=60, burst=1, max_wait=0, clock=clock),
        Bulkhead(1, clock=clock),
    ]


@pytest.mark.parametrize("order", list(itertools.permutations(range(6)))[::37])
def test_order_is_fixed_whatever_order_the_parts_come_in(order: tuple[int, ...]) -> None:
    clock = FakeClock()
    given = limits(clock)
    policy = compose(*(given[i] for i in order))
    limiter, bulkhead = given[4], given[5]
    flaky = FailsThenWorks(2, bulkhead)
    call = policy(flaky)
    # The rate limit is outside the retry: three attempts took one token.
    assert call() == "ok"
    assert flaky.calls == 3
    assert limiter.available() < 0.01  # one token spent (and 0.2 s of refill)
    # The bulkhead is outside the retry too: one slot held across the attempts.
    assert flaky.in_flight == [1, 1, 1]
    assert bulkhead.in_flight == 0
    # The fallback is outside the rate limit: a refusal is its to answer.
    assert call() == "fallback: Overloaded"
    assert flaky.calls == 3  # refused without calling
    assert repr(policy).index("fallback=") < repr(policy).index("rate_limit=")
    assert repr(policy).index("rate_limit=") < repr(policy).index("bulkhead=")
    assert repr(policy).index("bulkhead=") < repr(policy).index("retry=")


def test_overload_is_never_retried() -> None:
    clock = FakeClock()
    bulkhead = Bulkhead(1, clock=clock)
    policy = Policy(retry=Retry(attempts=5, clock=clock), bulkhead=bulkhead)
    assert bulkhead.try_acquire()  # someone else holds the only slot
    calls = []
    with pytest.raises(Overloaded):
        policy(lambda: calls.append(1))()
    assert calls == []
    assert clock.sleeps == []


def test_last_good_is_the_fallback_and_serves_a_refusal_stale() -> None:
    clock = FakeClock()
    remembered = Fallback.last_good(stale_for=60, key=lambda: "list", clock=clock)
    assert isinstance(remembered, LastGood)
    limiter = RateLimiter(1, period=60, burst=1, max_wait=0, clock=clock)
    policy = Policy(fallback=remembered, rate_limit=limiter)
    answers = iter(["first", "second"])
    load = policy(lambda: next(answers))
    assert load() == "first"
    clock.advance(2)
    assert load() == "first"  # refused by the limiter: the last good answer, stale
    served = last_served()
    assert served is not None and served.stale and served.age == 2.0
    assert isinstance(served.error, Overloaded)


async def test_async_composition() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, period=60, burst=5, clock=clock)
    bulkhead = Bulkhead(2, clock=clock)
    policy = Policy(
        rate_limit=limiter,
        bulkhead=bulkhead,
        retry=Retry(attempts=2, initial_delay=0.1, jitter="none", clock=clock),
    )
    attempts = []

    @policy
    async def work() -> int:
        attempts.append(bulkhead.in_flight)
        if len(attempts) == 1:
            raise TimeoutError
        return 42

    assert await work() == 42
    assert attempts == [1, 1]
    assert 4 <= limiter.available() < 4.01  # one token for two attempts


def test_bad_parts_name_the_parameter() -> None:
    with pytest.raises(TypeError, match=r"^rate_limit="):
        Policy(rate_limit=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^bulkhead="):
        Policy(bulkhead="db")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="two rate_limit parts"):
        compose(RateLimiter(1), RateLimiter(2))
    with pytest.raises(ValueError, match="two fallback parts"):
        compose(Fallback(lambda e: 1), LastGood())
