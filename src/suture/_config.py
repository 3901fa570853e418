"""Validation helpers shared by every configuration: one message shape everywhere.

A bad value raises ``ValueError`` (or ``TypeError``) naming the parameter, the
value and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import Field, fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from suture.clock import Clock

__all__ = [
    "ExceptionClassifier",
    "ExceptionSpec",
    "Option",
    "Seconds",
    "check_clock",
    "check_fraction",
    "check_int",
    "check_name",
    "check_number",
    "check_seconds",
    "exception_classifier",
    "normalise_options",
    "seconds",
]

In = TypeVar("In")
Out = TypeVar("Out")

Seconds = float | int | timedelta
"""A duration: seconds as a number, or a ``timedelta``."""

ExceptionClassifier = Callable[[BaseException], bool]
"""Answers a question about an error: worth retrying? a failure? handled here?"""

ExceptionSpec = ExceptionClassifier | type[BaseException] | tuple[type[BaseException], ...]
"""What an ``on=`` option takes: a classifier, an exception type, or a tuple of them."""


def exception_classifier(value: ExceptionSpec, name: str = "on") -> ExceptionClassifier:
    """The one normaliser of ``on=`` and friends: types become an ``isinstance`` check.

    A classifier is returned as it is; an exception type or a tuple of them
    becomes a classifier named after them. Anything else is a ``TypeError``
    naming the parameter, the value and what is allowed.
    """
    if isinstance(value, type):
        if not issubclass(value, BaseException):
            raise TypeError(f"{name}={value!r}: expected a classifier or exception type(s)")
        types: tuple[type[BaseException], ...] = (value,)
    elif isinstance(value, tuple):
        for item in value:
            if not (isinstance(item, type) and issubclass(item, BaseException)):
                raise TypeError(
                    f"{name}={value!r}: every item must be an exception type, got {item!r}"
                )
        types = value
    elif callable(value):
        return value
    else:
        raise TypeError(
            f"{name}={value!r}: expected a classifier (exc -> bool) or exception type(s)"
        )

    def classify(exc: BaseException) -> bool:
        return isinstance(exc, types)

    classify.__qualname__ = f"{name}{types!r}"
    return classify


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


class Option(Generic[In, Out]):
    """A field of a frozen options dataclass that is taken as ``In`` and kept as ``Out``.

    ``deadline: Option[Seconds | None, float | None] = Option(None, check_deadline)``:
    the constructor accepts any ``In`` (a ``timedelta``, an exception type...),
    and :func:`normalise_options` (called from ``__post_init__``) replaces it once
    by ``normalise(name, value)``. A type checker sees ``In`` in the constructor
    and ``Out`` on the instance. The option registers itself on its class
    (``__suture_options__``), so a slotted dataclass, whose slots replace the
    descriptors, reads its options at the speed of a slot.
    """

    __slots__ = ("default", "normalise")

    def __init__(self, default: In, normalise: Callable[[str, In], Out]) -> None:
        self.default = default
        self.normalise = normalise

    def __set_name__(self, owner: type, name: str) -> None:
        registry = owner.__dict__.get("__suture_options__")
        if registry is None:
            registry = {}
            setattr(owner, "__suture_options__", registry)  # noqa: B010 - a dunder name
        registry[name] = self

    @overload
    def __get__(self, obj: None, owner: object) -> In: ...

    @overload
    def __get__(self, obj: object, owner: object) -> Out: ...

    def __get__(self, obj: object | None, owner: object) -> In | Out:
        if obj is None:  # the dataclass machinery asking for the default
            return self.default
        raise AttributeError("an Option field is read before normalise_options() ran")

    if TYPE_CHECKING:  # the constructor's parameter type; at run time the value lands in a slot

        def __set__(self, obj: object, value: In) -> None: ...


def normalise_options(obj: Any) -> dict[str, Any]:
    """Normalise every :class:`Option` field of the frozen dataclass ``obj``, in field order.

    Returns the values as given, by name, for error messages that quote them.
    """
    options: dict[str, Option[Any, Any]] = getattr(type(obj), "__suture_options__", {})
    given: dict[str, Any] = {}
    field: Field[Any]
    for field in fields(obj):
        option = options.get(field.name)
        if option is not None:
            given[field.name] = value = getattr(obj, field.name)
            object.__setattr__(obj, field.name, option.normalise(field.name, value))
    return given
