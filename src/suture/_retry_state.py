"""The decisions of one retried call, with no I/O: "wait this long" or "give up".

:class:`CallState` is driven by the sync and async loops of :mod:`suture.retrying`
and by the block form (:mod:`suture._retry_block`); it only does arithmetic,
emits events and calls the ``on_retry`` hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from suture.classify import retry_after
from suture.deadline import get_current
from suture.errors import BreakerOpen, DeadlineExceeded, Overloaded
from suture.events import RetryBudgetExhausted, RetryGaveUp, RetryScheduled, emit

if TYPE_CHECKING:
    from suture.retrying import Retry

__all__ = ["NEVER_RETRIED", "CallState", "Gate"]

Gate = Callable[[float], bool]
"""``gate(delay)``: True when an attempt made after a wait of ``delay`` seconds would
surely be refused (the breaker inside a :class:`suture.Policy`'s retry)."""

# Waiting is the breaker's and the shedder's job: whatever ``on`` says, a retry
# never hammers an open breaker or a service that just shed the request, and
# never retries once the request's own deadline is spent.
NEVER_RETRIED = (BreakerOpen, Overloaded, DeadlineExceeded)

_REASONS = {
    "attempts": "all attempts used",
    "deadline": "the next wait would end at or past the deadline",
    "request deadline": "the next wait would end at or past the request's deadline",
    "budget": "the retry budget is empty",
    "retry_after": "the server asked for a longer wait than max_delay",
}


class CallState:
    """The decisions of one retried call. No I/O: only arithmetic, events and hooks.

    ``start`` is the clock reading the elapsed time counts from: the start of
    the first attempt when the policy has a deadline, else the end of the first
    failed attempt (``None``: read now), so that a call that succeeds reads no clock.
    ``gate`` is asked before each wait whether the attempt after it would be refused;
    if so the wait is skipped (see :meth:`next_delay`).
    """

    __slots__ = ("attempt", "gate", "name", "policy", "previous", "start")

    def __init__(
        self,
        policy: Retry,
        name: str,
        start: float | None = None,
        attempt: int = 1,
        *,
        gate: Gate | None = None,
    ) -> None:
        self.policy = policy
        self.gate = gate
        self.name = name
        self.start = policy.clock.now() if start is None else start
        self.attempt = attempt  # the attempt that just failed
        self.previous = 0.0

    def next_delay(self, exc: BaseException) -> float | None:
        """The wait before the next attempt, or ``None``: give up and raise ``exc``.

        When the gate says the attempt after the wait would be refused (the
        breaker opened, and stays open past the wait), the answer is 0: the
        next attempt is made at once, so the breaker refuses it now, as it would
        have after the wait (its :class:`BreakerOpen`, or its fallback's result,
        is what the caller gets); no budget is spent, no retry is announced.
        """
        policy = self.policy
        if not isinstance(exc, Exception):
            return None  # cancellation, KeyboardInterrupt, SystemExit: left untouched
        if isinstance(exc, NEVER_RETRIED) or policy.overload(exc) or not policy.on(exc):
            if self.attempt > 1:
                self._note(exc, "the error is not retryable")
            return None
        elapsed = policy.clock.now() - self.start
        delay, stop = self._plan(exc, elapsed)
        if stop is not None:
            return self._give_up(exc, elapsed, stop)
        if self.gate is not None and self.gate(delay):
            self.attempt += 1
            return 0.0
        budget = policy.budget
        if budget is not None and not budget.try_spend():
            emit(RetryBudgetExhausted(name=self.name, budget=budget.name, error=exc))
            return self._give_up(exc, elapsed, "budget")
        self.previous = delay
        event = RetryScheduled(
            name=self.name,
            attempt=self.attempt,
            attempts=policy._attempts,
            delay=delay,
            error=exc,
            elapsed=elapsed,
        )
        emit(event)
        if policy.on_retry is not None:
            policy.on_retry(event)
        self.attempt += 1
        return delay

    def _plan(self, exc: Exception, elapsed: float) -> tuple[float, str | None]:
        """The next wait, and the reason to stop instead (``None``: go on)."""
        policy = self.policy
        if self.attempt >= policy._attempts:
            return 0.0, "attempts"
        delay = policy._backoff.delay(self.attempt, self.previous, policy.rand)
        hinted = retry_after(exc, now=policy.clock.wall())
        if hinted is not None:
            # Retry-After wins: never knock earlier than the server asked. A wait
            # longer than the policy allows ends the retries (the error keeps it).
            if hinted > policy.max_delay:
                return hinted, "retry_after"
            delay = hinted
        # A wait that ends at the deadline would start an attempt with no time left
        # (in async code, cancelled at once, its TimeoutError replacing the real error).
        return delay, self._past_deadline(elapsed, delay)

    def _past_deadline(self, elapsed: float, delay: float) -> str | None:
        """The deadline a wait of ``delay`` would end at or past: the policy's, the request's."""
        deadline = self.policy.deadline
        if deadline is not None and elapsed + delay >= deadline:
            return "deadline"
        request = get_current()  # suture.deadline(...) around the call, if any
        if request is not None and request.remaining() - delay <= 0:
            return "request deadline"
        return None

    def _note(self, exc: BaseException, reason: str, elapsed: float | None = None) -> None:
        if elapsed is None:
            elapsed = self.policy.clock.now() - self.start
        exc.add_note(
            f"suture.retry: gave up on {self.name} after {self.attempt} attempt(s) "
            f"over {elapsed:.3f}s ({reason})"
        )

    def _give_up(self, exc: BaseException, elapsed: float, reason: str) -> float | None:
        self._note(exc, _REASONS[reason], elapsed)
        emit(
            RetryGaveUp(
                name=self.name, attempts=self.attempt, elapsed=elapsed, reason=reason, error=exc
            )
        )
        return None
