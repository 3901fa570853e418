"""A breaker's options: the keyword arguments, and the frozen config that checks them.

:class:`BreakerConfig` validates and normalises itself when it is built, so
every default is written once, on its field, and a config that exists is a
good one. :meth:`BreakerConfig.build` adds only what keyword options need: the
check for unknown names, and the one default that depends on whether it was said.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypedDict, Unpack, cast

from suture._config import (
    ExceptionClassifier,
    ExceptionSpec,
    Seconds,
    check_clock,
    check_fraction,
    check_int,
    check_seconds,
    exception_classifier,
)
from suture.breaker.store import BreakerStore
from suture.classify import is_overload, is_transient
from suture.clock import SYSTEM_CLOCK, Clock
from suture.errors import BreakerOpen
from suture.windows import CountWindow, TimeWindow

__all__ = ["BreakerConfig", "BreakerFallback", "BreakerOptions"]

BreakerFallback = Callable[[BreakerOpen], Any]
"""Called with the rejection instead of raising it: ``fallback(exc) -> result`` (or awaitable)."""


class BreakerOptions(TypedDict, total=False):
    """The keyword arguments of :class:`CircuitBreaker` and :meth:`BreakerRegistry.get`."""

    failure_threshold: int
    reset_timeout: Seconds
    half_open_max_calls: int
    success_threshold: int
    window: CountWindow | TimeWindow | None
    minimum_calls: int
    failure_rate_threshold: float
    slow_call_duration: Seconds | None
    slow_call_rate_threshold: float
    open_factor: float
    max_reset_timeout: Seconds | None
    on: ExceptionSpec
    overload: ExceptionSpec
    ignore: tuple[type[BaseException], ...]
    fallback: BreakerFallback | None
    clock: Clock
    store: BreakerStore | None


_STORE_METHODS = ("load", "swap", "subscribe", "delete")


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    """A breaker's validated configuration; two breakers with equal configs behave alike.

    Built directly, every value is taken as given (durations may be numbers or
    ``timedelta``, ``on`` exception types: they are normalised); a bad value
    raises ``TypeError`` or ``ValueError`` naming the parameter, the value and
    the rule. See :class:`suture.CircuitBreaker` for what each option means.
    """

    failure_threshold: int = 5
    reset_timeout: float = 30.0
    half_open_max_calls: int = 1
    success_threshold: int = 1
    window: CountWindow | TimeWindow | None = None
    minimum_calls: int = 10
    failure_rate_threshold: float = 0.5
    slow_call_duration: float | None = None
    slow_call_rate_threshold: float = 1.0
    open_factor: float = 1.0
    max_reset_timeout: float | None = None
    on: ExceptionClassifier = is_transient
    overload: ExceptionClassifier = is_overload
    ignore: tuple[type[BaseException], ...] = ()
    fallback: BreakerFallback | None = None
    clock: Clock = SYSTEM_CLOCK
    store: BreakerStore | None = None

    @classmethod
    def build(cls, **options: Unpack[BreakerOptions]) -> BreakerConfig:
        """Validate and normalise keyword options; unknown names raise ``TypeError``.

        One default depends on what was said: without ``minimum_calls``, a
        ``CountWindow`` smaller than the default uses its whole size (a window
        that never holds ``minimum_calls`` calls would never trip; an explicit
        larger value is kept: a breaker that only counts is a choice).
        """
        allowed = cls.__dataclass_fields__
        for key in options:
            if key not in allowed:
                raise TypeError(
                    f"CircuitBreaker: unknown option {key!r}; the options are {', '.join(allowed)}"
                )
        given = cast(dict[str, Any], options)
        window = given.get("window")
        if "minimum_calls" not in given and isinstance(window, CountWindow):
            given = {**given, "minimum_calls": min(_default("minimum_calls"), window.size)}
        return cls(**given)

    def __post_init__(self) -> None:
        """Check every field in the order of the fields; normalise in place."""
        put = object.__setattr__
        put(self, "failure_threshold", check_int("failure_threshold", self.failure_threshold))
        put(
            self, "reset_timeout", check_seconds("reset_timeout", self.reset_timeout, positive=True)
        )
        put(
            self,
            "half_open_max_calls",
            check_int("half_open_max_calls", self.half_open_max_calls),
        )
        put(self, "success_threshold", check_int("success_threshold", self.success_threshold))
        window = self.window
        if window is not None and not isinstance(window, (CountWindow, TimeWindow)):
            raise TypeError(
                f"window={window!r}: expected None (consecutive failures), "
                "suture.CountWindow(size) or suture.TimeWindow(seconds)"
            )
        put(self, "minimum_calls", check_int("minimum_calls", self.minimum_calls))
        put(
            self,
            "failure_rate_threshold",
            check_fraction("failure_rate_threshold", self.failure_rate_threshold),
        )
        slow = self.slow_call_duration
        if slow is not None:
            slow = check_seconds("slow_call_duration", slow, positive=True)
            if window is None:
                raise ValueError(
                    f"slow_call_duration={slow!r}: a slow-call rate needs a window "
                    "(window=CountWindow(...) or TimeWindow(...)); got window=None"
                )
            put(self, "slow_call_duration", slow)
        put(
            self,
            "slow_call_rate_threshold",
            check_fraction("slow_call_rate_threshold", self.slow_call_rate_threshold),
        )
        factor: object = self.open_factor
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            raise TypeError(f"open_factor={factor!r}: expected a number >= 1")
        if not (factor >= 1 and math.isfinite(factor)):
            raise ValueError(f"open_factor={factor!r}: must be a finite number >= 1")
        put(self, "open_factor", float(factor))
        cap = self.max_reset_timeout
        if cap is not None:
            cap = check_seconds("max_reset_timeout", cap, positive=True)
            if cap < self.reset_timeout:
                raise ValueError(
                    f"max_reset_timeout={cap!r}: must be >= reset_timeout "
                    f"({self.reset_timeout!r}), or None for no cap"
                )
            put(self, "max_reset_timeout", cap)
        put(self, "on", exception_classifier(self.on))
        put(self, "overload", exception_classifier(self.overload, "overload"))
        put(self, "ignore", _exception_types(self.ignore))
        fallback = self.fallback
        if fallback is not None and not callable(fallback):
            raise TypeError(f"fallback={fallback!r}: expected a callable (exc) -> result, or None")
        put(self, "clock", check_clock(self.clock))
        store = self.store
        if store is not None and not all(
            callable(getattr(store, method, None)) for method in _STORE_METHODS
        ):
            raise TypeError(
                f"store={store!r}: expected None or a suture.BreakerStore "
                "(load, swap, subscribe, delete), such as MemoryBreakerStore()"
            )


def _default(name: str) -> Any:
    """The default written on a field of :class:`BreakerConfig`."""
    return next(f.default for f in fields(BreakerConfig) if f.name == name)


def _exception_types(value: object) -> tuple[type[BaseException], ...]:
    """``ignore=``: one exception type or a tuple of them."""
    if isinstance(value, type):
        value = (value,)
    if not isinstance(value, tuple) or not all(
        isinstance(t, type) and issubclass(t, BaseException) for t in value
    ):
        raise TypeError(f"ignore={value!r}: expected a tuple of exception types")
    return value
