"""The breaker against a plain reference model (hypothesis RuleBasedStateMachine),
in the consecutive mode, the count-window mode and the time-window mode."""

from __future__ import annotations

import math
from collections import deque

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from suture import BreakerOpen, BreakerState, CircuitBreaker, CountWindow, ResponseError, TimeWindow
from suture.testing import FakeClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
RESET, FACTOR, CAP = 10.0, 2.0, 45.0
SPAN, BUCKETS = 6.0, 3  # the time window: 3 buckets of 2 s


class Model:
    """What the breaker should do, written as plainly as possible."""

    def __init__(
        self,
        threshold: int,
        successes_needed: int,
        window: int | None,
        minimum: int,
        rate: float,
        *,
        timed: bool = False,
    ) -> None:
        self.timed = timed
        self.recorded: list[tuple[int, int]] = []  # time mode: (bucket index, failed)
        self.threshold = threshold
        self.successes_needed = successes_needed
        self.window_size = window
        self.minimum = minimum
        self.rate = rate
        self.state = CLOSED
        self.consecutive = 0
        self.window: deque[int] = deque(maxlen=window or 1)
        self.retry_at = 0.0
        self.open_count = 0
        self.forced = False
        self.probe_successes = 0

    def tick(self, now: float) -> None:
        if self.state is OPEN and not self.forced and now >= self.retry_at:
            self.state = HALF_OPEN
            self.probe_successes = 0

    def open(self, now: float, *, grow: bool, forced: bool = False) -> None:
        self.open_count = self.open_count + 1 if grow else max(self.open_count, 1)
        self.state = OPEN
        self.forced = forced
        self.retry_at = now + min(RESET * FACTOR ** (self.open_count - 1), CAP)

    def close(self) -> None:
        self.state = CLOSED
        self.forced = False
        self.open_count = 0
        self.consecutive = 0
        self.window.clear()
        self.recorded.clear()

    def live(self, now: float) -> list[int]:
        """The outcomes the window holds at ``now`` (1 = failed)."""
        if not self.timed:
            return list(self.window)
        current = math.floor(now / (SPAN / BUCKETS))
        return [failed for bucket, failed in self.recorded if bucket > current - BUCKETS]

    def call(self, kind: str, now: float) -> str:
        """``kind``: "ok", "fail", "ignored" or "notfound" (a non-transient error)."""
        self.tick(now)
        if self.state is OPEN:
            return "rejected"
        outcome = {"ok": "ok", "notfound": "ok", "fail": "fail", "ignored": "ignored"}[kind]
        if self.state is HALF_OPEN:
            if outcome == "fail":
                self.open(now, grow=True)
            elif outcome == "ok":
                self.probe_successes += 1
                if self.probe_successes >= self.successes_needed:
                    self.close()
            return kind
        if outcome == "ignored":
            return kind
        failed = outcome == "fail"
        self.consecutive = self.consecutive + 1 if failed else 0
        if self.window_size is None:
            if self.consecutive >= self.threshold:
                self.open(now, grow=False)
        else:
            self.window.append(int(failed))
            self.recorded.append((math.floor(now / (SPAN / BUCKETS)), int(failed)))
            live = self.live(now)
            calls, failures = len(live), sum(live)
            if calls >= self.minimum and failures / calls >= self.rate:
                self.open(now, grow=False)
        return kind


class BreakerMachine(RuleBasedStateMachine):
    window: int | None = None
    timed = False

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.model: Model | None = None
        self.breaker: CircuitBreaker | None = None
        self.ran = 0

    @initialize(
        threshold=st.integers(1, 4),
        successes=st.integers(1, 3),
        minimum=st.integers(1, 6),
        rate=st.sampled_from([0.25, 0.5, 0.75, 1.0]),
    )
    def configure(self, threshold: int, successes: int, minimum: int, rate: float) -> None:
        window: CountWindow | TimeWindow | None = None
        if self.timed:
            window = TimeWindow(SPAN, buckets=BUCKETS)
        elif self.window:
            window = CountWindow(self.window)
        self.breaker = CircuitBreaker(
            "model",
            failure_threshold=threshold,
            reset_timeout=RESET,
            success_threshold=successes,
            window=window,
            minimum_calls=minimum,
            failure_rate_threshold=rate,
            open_factor=FACTOR,
            max_reset_timeout=CAP,
            ignore=(KeyError,),
            clock=self.clock,
        )
        self.model = Model(threshold, successes, self.window, minimum, rate, timed=self.timed)

    @rule(kind=st.sampled_from(["ok", "ok", "fail", "fail", "ignored", "notfound"]))
    def call(self, kind: str) -> None:
        if self.breaker is None or self.model is None:
            return
        expected = self.model.call(kind, self.clock.now())
        errors = {
            "fail": ConnectionError("down"),
            "ignored": KeyError("ignored"),
            "notfound": ResponseError("Not Found", status=404),
        }

        def dependency() -> str:
            self.ran += 1
            if kind in errors:
                raise errors[kind]
            return "ok"

        before = self.ran
        try:
            got = self.breaker.call(dependency)
        except BreakerOpen:
            got = "rejected"
        except (ConnectionError, KeyError, ResponseError):
            got = kind
        assert got == expected
        assert self.ran == before + (0 if expected == "rejected" else 1)

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 45.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def force_open(self) -> None:
        if self.breaker is None or self.model is None:
            return
        self.breaker.force_open()
        self.model.open(self.clock.now(), grow=False, forced=True)

    @rule()
    def force_closed(self) -> None:
        if self.breaker is None or self.model is None:
            return
        self.breaker.force_closed()
        self.model.close()

    @rule()
    def reset(self) -> None:
        if self.breaker is None or self.model is None:
            return
        self.breaker.reset()
        self.model.close()

    @invariant()
    def same_state(self) -> None:
        if self.breaker is None or self.model is None:
            return
        now = self.clock.now()
        self.model.tick(now)
        stats = self.breaker.stats()
        assert stats.state is self.model.state
        assert stats.open_count == self.model.open_count
        assert stats.forced is (self.model.state is OPEN and self.model.forced)
        if self.model.state is OPEN and self.model.forced:
            assert stats.retry_after is None
        elif self.model.state is OPEN:
            assert stats.retry_after == pytest.approx(self.model.retry_at - now)
        if self.model.state is CLOSED and self.model.window_size is None:
            assert stats.consecutive_failures == self.model.consecutive
        if self.model.state is CLOSED and self.model.window_size is not None:
            live = self.model.live(now)
            assert stats.calls == len(live)
            assert stats.failures == sum(live)


class ConsecutiveMachine(BreakerMachine):
    window = None


class WindowMachine(BreakerMachine):
    window = 5


class TimeWindowMachine(BreakerMachine):
    window = 1  # any number: the model keeps the window by time
    timed = True


RUN = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestConsecutive = ConsecutiveMachine.TestCase
TestConsecutive.settings = RUN
TestWindow = WindowMachine.TestCase
TestWindow.settings = RUN
TestTimeWindow = TimeWindowMachine.TestCase
# Aging bugs need a longer run to show (old successes forgotten, then one more call).
TestTimeWindow.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
