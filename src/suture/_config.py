"""Validation helpers shared by every configuration: one message shape everywhere.

A bad value raises ``ValueError`` (or ``TypeError``) naming the parameter, the
value and what is allowed.
"""

from __future__ import annotations

import math
from datetime import timedelta

from suture.clock import Clock

__all__ = [
    "Seconds",
    "check_clock",
    "check_fraction",
    "check_int",
    "check_name",
    "check_number",
    "check_seconds",
    "seconds",
]

Seconds = float | int | timedelta
"""A duration: seconds as a number, or a ``timedelta``."""


def seconds(name: str, value: Seconds) -> float:
    """Normalise a duration to float seconds; reject non-numbers, NaN and infinities."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name}={value!r}: expected seconds as a number or a timedelta, "
            f"got {type(value).__name__}"
        )
    out = float(value)
    if math.isnan(out):
        raise ValueError(f"{name}={value!r}: must be a number of seconds, not NaN")
    return out


def check_seconds(
    name: str,
    value: Seconds,
    *,
    positive: bool = False,
    allow_inf: bool = False,
) -> float:
    """A duration that is >= 0 (or > 0 with ``positive``)."""
    out = seconds(name, value)
    if math.isinf(out) and not allow_inf:
        raise ValueError(f"{name}={value!r}: must be a finite number of seconds")
    if positive and out <= 0:
        raise ValueError(f"{name}={value!r}: must be greater than 0 seconds")
    if out < 0:
        raise ValueError(f"{name}={value!r}: must be 0 seconds or more")
    return out


def check_int(name: str, value: int, *, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}={value!r}: expected an integer, got {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        allowed = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name}={value!r}: must be an integer {allowed}")
    return value


def check_number(name: str, value: float, *, positive: bool = False) -> float:
    """A finite number that is >= 0 (or > 0 with ``positive``): counts, rates, capacities."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}={value!r}: expected a number, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name}={value!r}: must be a finite number")
    if positive and out <= 0:
        raise ValueError(f"{name}={value!r}: must be a number greater than 0")
    if out < 0:
        raise ValueError(f"{name}={value!r}: must be a number >= 0")
    return out


def check_fraction(name: str, value: float, *, allow_zero: bool = False) -> float:
    """A fraction in (0, 1] (or [0, 1] with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}={value!r}: expected a number, got {type(value).__name__}")
    out = float(value)
    low_ok = out >= 0 if allow_zero else out > 0
    if not (low_ok and out <= 1) or math.isnan(out):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name}={value!r}: must be within {interval}")
    return out


def check_clock(value: object, name: str = "clock") -> Clock:
    """A :class:`suture.Clock`: ``now()``, ``wall()``, ``sleep()`` and ``asleep()``."""
    if not isinstance(value, Clock):
        raise TypeError(
            f"{name}={value!r}: expected a suture.Clock (now, wall, sleep, asleep), "
            "such as suture.SYSTEM_CLOCK or suture.testing.FakeClock()"
        )
    return value


def check_name(name: str, value: object, *, optional: bool = False) -> None:
    """A name for events and errors: a string (or ``None`` when ``optional``)."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        allowed = "a string or None" if optional else "a string"
        raise TypeError(f"{name}={value!r}: expected {allowed}, got {type(value).__name__}")
