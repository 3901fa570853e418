"""suture.timeout: async attempts are cancelled; sync attempts that return late
become TimeoutError when they return (Python cannot stop a running call)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

import suture
from suture import BreakerState, CircuitBreaker, Timeout, is_transient, timeout
from suture.testing import FakeClock


async def test_async_attempt_is_cancelled_at_the_limit() -> None:
    cancelled = False

    @timeout(0.01)
    async def hangs() -> int:
        nonlocal cancelled
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled = True
            raise
        return 1

    with pytest.raises(TimeoutError) as info:
        await hangs()
    assert cancelled
    assert is_transient(info.value)
    assert any("cancelled after 0.01s" in note for note in info.value.__notes__)


async def test_a_timeout_error_of_the_call_itself_gets_no_note() -> None:
    @timeout(30)
    async def own() -> None:
        raise TimeoutError("the server's own timeout")

    with pytest.raises(TimeoutError, match="the server's own timeout") as info:
        await own()
    assert not getattr(info.value, "__notes__", [])  # it was not cancelled by suture


async def test_async_attempt_within_the_limit_returns() -> None:
    @timeout(timedelta(seconds=5))
    async def quick(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    assert await quick(21) == 42
    assert quick.__suture_timeout__ == Timeout(5)  # type: ignore[attr-defined]


def test_sync_attempt_past_the_limit_fails_when_it_returns() -> None:
    clock = FakeClock()
    done: list[str] = []

    @timeout(1.0, clock=clock)
    def slow(advance: float) -> str:
        clock.advance(advance)
        done.append("finished")
        return "result"

    assert slow(1.0) == "result"  # exactly at the limit is in time
    with pytest.raises(TimeoutError, match=r"took 1.500s, past its 1s timeout") as info:
        slow(1.5)
    assert done == ["finished", "finished"], "the late call ran to the end"
    assert "result was discarded" in str(info.value)
    assert is_transient(info.value)


def test_sync_errors_pass_through_unchanged() -> None:
    clock = FakeClock()

    @timeout(1.0, clock=clock)
    def broken() -> None:
        clock.advance(5)
        raise KeyError("original")

    with pytest.raises(KeyError, match="original"):
        broken()


def test_a_breaker_counts_late_sync_calls_as_failures() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("slow", failure_threshold=2, clock=clock)

    @breaker
    @timeout(0.5, clock=clock)
    def slow() -> None:
        clock.advance(1.0)

    for _ in range(2):
        with pytest.raises(TimeoutError):
            slow()
    assert breaker.state is BreakerState.OPEN


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (-1, ValueError, r"seconds=-1: must be greater than 0"),
        (0, ValueError, r"seconds=0: must be greater than 0"),
        (float("inf"), ValueError, r"seconds=inf: must be a finite"),
        ("5", TypeError, r"seconds='5': expected seconds"),
    ],
)
def test_bad_timeouts(value: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        suture.timeout(value)  # type: ignore[arg-type]


def test_timeout_is_immutable_and_comparable() -> None:
    t = Timeout(2)
    with pytest.raises(AttributeError):
        t.seconds = 3  # type: ignore[misc]
    assert t == Timeout(2.0)
    assert hash(t) == hash(Timeout(2.0))
    assert repr(t) == "Timeout(2.0)"
    with pytest.raises(TypeError, match="expected a function"):
        t(3)  # type: ignore[call-overload]


async def test_an_async_attempt_tells_how_long_it_has_left() -> None:
    from suture.timeouts import attempt_remaining

    seen: list[float | None] = []

    @timeout(30)
    async def outer() -> None:
        seen.append(attempt_remaining())
        await inner()
        seen.append(attempt_remaining())

    @timeout(5)
    async def inner() -> None:
        seen.append(attempt_remaining())

    assert attempt_remaining() is None
    await outer()
    assert attempt_remaining() is None
    first, nested, after = seen
    assert first is not None and 5 < first <= 30
    assert nested is not None and 0 < nested <= 5  # the innermost attempt's
    assert after is not None and 5 < after <= 30
