"""Delay schedules: every jitter kind stays within its bounds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from suture.backoff import Backoff, decorrelated_jitter, equal_jitter, exponential, full_jitter

initial_s = st.floats(min_value=0.0, max_value=10.0, allow_nan=False)
extra_s = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
multiplier_s = st.floats(min_value=1.0, max_value=10.0, allow_nan=False)
rand_s = st.floats(min_value=0.0, max_value=0.999_999, allow_nan=False)
retry_s = st.integers(min_value=1, max_value=10_000)


def test_exponential_without_jitter() -> None:
    b = Backoff(initial=1.0, max_delay=8.0, multiplier=2.0, jitter="none")
    assert list(b.delays(6)) == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_exponential_never_overflows() -> None:
    assert exponential(10**6, initial=1.0, multiplier=10.0, cap=30.0) == 30.0


@given(initial_s, extra_s, multiplier_s, retry_s, rand_s)
def test_full_jitter_bounds(
    initial: float, extra: float, mult: float, retry: int, r: float
) -> None:
    b = Backoff(initial=initial, max_delay=initial + extra, multiplier=mult, jitter="full")
    base = exponential(retry, initial=initial, multiplier=mult, cap=initial + extra)
    delay = b.delay(retry, 0.0, lambda: r)
    assert 0.0 <= delay <= base <= initial + extra


@given(initial_s, extra_s, multiplier_s, retry_s, rand_s)
def test_equal_jitter_bounds(
    initial: float, extra: float, mult: float, retry: int, r: float
) -> None:
    b = Backoff(initial=initial, max_delay=initial + extra, multiplier=mult, jitter="equal")
    base = exponential(retry, initial=initial, multiplier=mult, cap=initial + extra)
    delay = b.delay(retry, 0.0, lambda: r)
    assert base / 2 <= delay <= base


@given(initial_s, extra_s, st.lists(rand_s, min_size=1, max_size=30))
def test_decorrelated_jitter_bounds(initial: float, extra: float, draws: list[float]) -> None:
    cap = initial + extra
    b = Backoff(initial=initial, max_delay=cap, jitter="decorrelated")
    it = iter(draws)
    previous = 0.0
    for retry in range(1, len(draws) + 1):
        delay = b.delay(retry, previous, lambda: next(it, 0.5))
        assert initial <= delay <= cap or delay == pytest.approx(cap)
        # The published formula: uniform(initial, max(previous, initial) * 3), the first wait too.
        assert delay <= max(initial, previous) * 3 + 1e-9
        previous = delay


def test_decorrelated_first_wait_is_drawn_as_published() -> None:
    """AWS's formula starts from ``sleep = base``: the first wait is uniform in [base, 3 base)."""
    b = Backoff(initial=1.0, max_delay=100.0, jitter="decorrelated")
    assert b.delay(1, 0.0, lambda: 0.0) == 1.0
    assert b.delay(1, 0.0, lambda: 0.5) == 2.0
    assert b.delay(1, 0.0, lambda: 0.999) == pytest.approx(2.998)
    firsts = {b.delay(1, 0.0, lambda r=r: r) for r in (0.1, 0.4, 0.7)}
    assert len(firsts) == 3  # clients failing together no longer wait together


def test_pure_functions() -> None:
    assert full_jitter(4.0, lambda: 0.5) == 2.0
    assert equal_jitter(4.0, lambda: 0.5) == 3.0
    assert decorrelated_jitter(2.0, initial=1.0, cap=100.0, rand=lambda: 0.0) == 1.0
    assert decorrelated_jitter(2.0, initial=1.0, cap=100.0, rand=lambda: 0.999999) < 6.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"initial": -1}, "initial=-1: must be 0 seconds or more"),
        ({"max_delay": -1}, "max_delay=-1"),
        ({"initial": 5, "max_delay": 1}, r"max_delay=1: must be >= initial \(5.0 seconds\)"),
        ({"multiplier": 0.5}, "multiplier=0.5: must be a number >= 1"),
        ({"jitter": "random"}, "jitter='random': must be one of 'none', 'full'"),
        ({"initial": float("nan")}, "initial=nan"),
    ],
)
def test_bad_configuration(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Backoff(**kwargs)  # type: ignore[arg-type]
