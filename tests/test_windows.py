"""Failure windows: the counters alone (against plain models) and through a breaker:
rates trip exactly at the threshold, never before ``minimum_calls``; old buckets go."""

from __future__ import annotations

import contextlib
import math
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suture import BreakerState, CircuitBreaker, CountWindow, TimeWindow
from suture.testing import FakeClock
from suture.windows import FAILURE, SLOW

OUTCOMES = st.sampled_from([0, 0, FAILURE, SLOW, FAILURE | SLOW])


# --- the counters ------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(size=st.integers(1, 8), outcomes=st.lists(OUTCOMES, max_size=40))
def test_count_window_matches_the_last_n_outcomes(size: int, outcomes: list[int]) -> None:
    counter = CountWindow(size).counter()
    model: deque[int] = deque(maxlen=size)
    for outcome in outcomes:
        if outcome == 0:
            counter.success(0.0)
        else:
            counter.record(outcome, 0.0)
        model.append(outcome)
        calls, failures, slow = counter.counts(0.0)
        assert calls == len(model)
        assert failures == sum(1 for o in model if o & FAILURE)
        assert slow == sum(1 for o in model if o & SLOW)
    counter.clear()
    assert counter.counts(0.0) == (0, 0, 0)


@settings(max_examples=100, deadline=None)
@given(
    buckets=st.integers(1, 6),
    steps=st.lists(
        st.tuples(st.sampled_from([0.0, 0.4, 1.0, 2.5, 7.0, 30.0]), OUTCOMES), max_size=40
    ),
)
def test_time_window_matches_the_recent_buckets(
    buckets: int, steps: list[tuple[float, int]]
) -> None:
    seconds = 6.0
    width = seconds / buckets
    counter = TimeWindow(seconds, buckets=buckets).counter()
    now = 100.0
    seen: list[tuple[int, int]] = []  # (bucket index, outcome)
    for advance, outcome in steps:
        now += advance
        if outcome == 0:
            counter.success(now)
        else:
            counter.record(outcome, now)
        seen.append((math.floor(now / width), outcome))
        current = math.floor(now / width)
        live = [o for b, o in seen if b > current - buckets]
        assert counter.counts(now) == (
            len(live),
            sum(1 for o in live if o & FAILURE),
            sum(1 for o in live if o & SLOW),
        )


def test_time_window_forgets_whole_buckets() -> None:
    counter = TimeWindow(10, buckets=5).counter()  # 2 s buckets
    counter.record(FAILURE, 0.5)
    counter.success(1.0)
    counter.record(FAILURE, 3.0)
    assert counter.counts(3.0) == (3, 2, 0)
    assert counter.counts(9.9) == (3, 2, 0)  # buckets [0, 2) .. [8, 10) are all live
    assert counter.counts(10.0) == (1, 1, 0)  # the [0, 2) bucket aged out
    assert counter.counts(12.0) == (0, 0, 0)
    counter.success(500.0)  # a long jump clears everything at once
    assert counter.counts(500.0) == (1, 0, 0)


# --- through a breaker -----------------------------------------------------------------


def window_breaker(clock: FakeClock, **options: object) -> CircuitBreaker:
    config: dict[str, object] = {
        "window": CountWindow(10),
        "minimum_calls": 4,
        "failure_rate_threshold": 0.5,
        "clock": clock,
    }
    config.update(options)
    return CircuitBreaker("w", **config)  # type: ignore[arg-type]


def play(breaker: CircuitBreaker, pattern: str, clock: FakeClock | None = None) -> None:
    """'o' success, 'x' failure, 's' slow success (advances the clock by 2 s inside the call)."""

    def call(step: str) -> None:
        if step == "x":
            raise ConnectionError("down")
        if step == "s" and clock is not None:
            clock.advance(2.0)

    for step in pattern:
        with contextlib.suppress(ConnectionError):
            breaker.call(call, step)


def test_failure_rate_trips_exactly_at_the_threshold() -> None:
    clock = FakeClock()
    below = window_breaker(clock)
    play(below, "oooooxxxx")  # 4/9 < 0.5
    assert below.state is BreakerState.CLOSED
    at = window_breaker(clock)
    play(at, "oooooxxxx")
    play(at, "x")  # 5/10 == 0.5
    assert at.state is BreakerState.OPEN
    assert at.stats().failure_rate == 0.5


def test_never_before_minimum_calls_then_at_once() -> None:
    clock = FakeClock()
    breaker = window_breaker(clock, minimum_calls=5)
    play(breaker, "xxxx")  # 100 % but only 4 calls
    assert breaker.state is BreakerState.CLOSED
    play(breaker, "o")  # 4/5 >= 0.5 with 5 calls: a success completes the evidence
    assert breaker.state is BreakerState.OPEN


def test_a_count_window_smaller_than_the_default_minimum_can_trip() -> None:
    # minimum_calls defaults to 10; a window of 5 never holds 10 calls, so the
    # default becomes the whole window instead of a breaker that can never trip.
    clock = FakeClock()
    breaker = CircuitBreaker("small", window=CountWindow(5), clock=clock)
    assert breaker.config.minimum_calls == 5
    play(breaker, "xxxx")
    assert breaker.state is BreakerState.CLOSED
    play(breaker, "x")
    assert breaker.state is BreakerState.OPEN


def test_armed_window_disarms_when_the_rate_drops() -> None:
    clock = FakeClock()
    breaker = window_breaker(clock, minimum_calls=6)
    play(breaker, "xooo")  # 1/4: under the rate
    play(breaker, "oo")  # 1/6
    assert breaker.state is BreakerState.CLOSED
    play(breaker, "xx")  # 3/8
    assert breaker.state is BreakerState.CLOSED


def test_slow_call_rate_trips_exactly_at_its_threshold() -> None:
    clock = FakeClock()
    options = {
        "window": CountWindow(4),
        "slow_call_duration": 1.0,
        "slow_call_rate_threshold": 0.5,
        "failure_rate_threshold": 1.0,
    }
    under = window_breaker(clock, **options)
    play(under, "osoo", clock)
    assert under.state is BreakerState.CLOSED
    assert under.stats().slow_calls == 1
    at = window_breaker(clock, **options)
    play(at, "osos", clock)
    assert at.state is BreakerState.OPEN
    assert at.stats().slow_call_rate == 0.5


def test_slow_failures_count_in_both_rates() -> None:
    clock = FakeClock()
    breaker = window_breaker(
        clock, window=CountWindow(4), slow_call_duration=1.0, failure_rate_threshold=1.0
    )

    def slow_failure() -> None:
        clock.advance(2.0)
        raise ConnectionError("slow and failed")

    with pytest.raises(ConnectionError):
        breaker.call(slow_failure)
    stats = breaker.stats()
    assert (stats.calls, stats.failures, stats.slow_calls) == (1, 1, 1)


def test_time_window_breaker_forgets_old_failures() -> None:
    clock = FakeClock()
    breaker = window_breaker(clock, window=TimeWindow(10, buckets=5), minimum_calls=3)
    play(breaker, "xx")
    clock.advance(12)
    play(breaker, "x")
    assert breaker.stats().calls == 1
    assert breaker.state is BreakerState.CLOSED
    play(breaker, "oo")  # 1/3
    assert breaker.state is BreakerState.CLOSED
    play(breaker, "x")  # 2/4
    assert breaker.state is BreakerState.OPEN


def test_window_is_cleared_when_the_breaker_closes() -> None:
    clock = FakeClock()
    breaker = window_breaker(clock, reset_timeout=5)
    play(breaker, "xxxx")
    assert breaker.state is BreakerState.OPEN
    clock.advance(5)
    play(breaker, "o")
    assert breaker.state is BreakerState.CLOSED
    stats = breaker.stats()
    assert (stats.calls, stats.failures) == (0, 0)
    play(breaker, "xxx")
    assert breaker.state is BreakerState.CLOSED  # a fresh window needs minimum_calls again


def test_window_configs_compare_and_hash() -> None:
    assert CountWindow(10) == CountWindow(10)
    assert TimeWindow(60) == TimeWindow(60.0, buckets=10)
    assert len({TimeWindow(60), TimeWindow(60.0)}) == 1
    assert repr(TimeWindow(60, buckets=12)) == "TimeWindow(seconds=60.0, buckets=12)"


async def test_slow_calls_through_the_decorators() -> None:
    clock = FakeClock()
    breaker = window_breaker(
        clock,
        window=CountWindow(4),
        minimum_calls=2,
        slow_call_duration=1.0,
        slow_call_rate_threshold=1.0,
        failure_rate_threshold=1.0,
    )

    @breaker
    def slow_sync() -> int:
        clock.advance(1.5)
        return 1

    @breaker
    async def slow_async() -> int:
        clock.advance(1.5)
        return 2

    assert slow_sync() == 1
    assert breaker.state is BreakerState.CLOSED
    assert await slow_async() == 2
    assert breaker.state is BreakerState.OPEN
    assert breaker.stats().slow_calls == 2


@pytest.mark.parametrize("style", ["call", "decorator", "async"])
async def test_time_window_places_successes_in_their_own_bucket(style: str) -> None:
    clock = FakeClock()
    breaker = window_breaker(clock, window=TimeWindow(10, buckets=5), minimum_calls=1)

    def ok() -> str:
        return "ok"

    async def aok() -> str:
        return "ok"

    wrapped, awrapped = breaker(ok), breaker(aok)

    async def success() -> None:
        if style == "call":
            breaker.call(ok)
        elif style == "decorator":
            wrapped()
        else:
            await awrapped()

    await success()
    play(breaker, "x")  # t=0: 1/2, trips? 0.5 >= 0.5: yes with minimum 1, so start over
    breaker.reset()
    play(breaker, "o")  # t=0
    clock.advance(4)
    await success()
    await success()  # t=4: two successes in the [4, 6) bucket
    clock.advance(7)  # t=11: the t=0 bucket aged out, the t=4 one did not
    play(breaker, "x")
    stats = breaker.stats()
    assert (stats.calls, stats.failures) == (3, 1)
    assert breaker.state is BreakerState.CLOSED  # 1/3 < 0.5


def test_a_success_after_old_calls_aged_out_can_trip() -> None:
    """Forgetting old successes raises the failure rate without any new failure."""
    clock = FakeClock()
    breaker = window_breaker(clock, window=TimeWindow(6, buckets=3), minimum_calls=2)
    play(breaker, "oo")  # t=0, bucket [0, 2)
    clock.advance(2)
    play(breaker, "x")  # t=2: 1/3 < 0.5
    assert breaker.state is BreakerState.CLOSED
    clock.advance(4)  # t=6: bucket [0, 2) aged out: the window holds only the failure
    play(breaker, "o")  # t=6: 1/2 >= 0.5 with 2 calls: trips on this success
    assert breaker.state is BreakerState.OPEN
