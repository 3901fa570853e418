"""Retry heals a flaky call, and says what happened.

    .venv/bin/python examples/retry_heals_a_flaky_call.py

(the virtual environment that ``scripts/test`` or ``scripts/demo`` made; or any
environment where ``pip install suture`` was run).

A fake upstream fails its first two calls (a refused connection, then a 503
with Retry-After: 0.2), then answers. A 404 is not retried. A retry budget
stops a storm when the upstream stays down.
"""

from __future__ import annotations

import contextlib
import logging
import time

import suture
from suture import RetryBudget, RetryGaveUp, RetryScheduled


class UpstreamError(Exception):
    """What an HTTP client raises: it carries a status and the response headers."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = headers or {}


class FlakyUpstream:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls = 0

    def get(self, path: str) -> dict[str, str]:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return {"path": path, "status": "fresh"}


def show(event: suture.Event) -> None:
    if isinstance(event, RetryScheduled):
        print(
            f"  attempt {event.attempt}/{event.attempts} failed ({event.error!r}); "
            f"retrying in {event.delay:.2f}s"
        )
    elif isinstance(event, RetryGaveUp):
        print(f"  gave up after {event.attempts} attempt(s): {event.reason}")


def main() -> None:
    logging.getLogger("suture").setLevel(logging.CRITICAL)  # this script prints instead
    suture.subscribe(show)

    print("1. a flaky upstream: refused, then 503 + Retry-After, then OK")
    upstream = FlakyUpstream(
        [ConnectionRefusedError("connection refused"), UpstreamError(503, {"Retry-After": "0.2"})]
    )
    fetch = suture.retry(attempts=4, initial_delay=0.1, max_delay=1.0, deadline=5.0)(upstream.get)
    started = time.monotonic()
    result = fetch("/orders")
    print(f"  healed: {result} after {upstream.calls} calls in {time.monotonic() - started:.2f}s")

    print("2. a 404 is not worth retrying: it propagates on the first call")
    missing = FlakyUpstream([UpstreamError(404)])
    try:
        suture.retry(initial_delay=0.1)(missing.get)("/nope")
    except UpstreamError as exc:
        print(f"  {exc} after {missing.calls} call(s): not retried")

    print("3. a dead upstream and a retry budget: retries stop instead of multiplying load")
    budget = RetryBudget(ratio=0.1, min_per_second=1.0)
    dead = FlakyUpstream([ConnectionResetError("reset")] * 1000)
    guarded = suture.retry(attempts=3, initial_delay=0.01, max_delay=0.02, budget=budget)(dead.get)
    for _ in range(10):
        with contextlib.suppress(ConnectionResetError):
            guarded("/down")
    stats = budget.stats()
    print(
        f"  10 requests made {dead.calls} calls (not 30): "
        f"{stats.spent} retries allowed, {stats.refused} refused"
    )


if __name__ == "__main__":
    main()
