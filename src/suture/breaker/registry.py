"""Named breakers: one registry per process (``suture.breakers``), more for tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Final, Unpack

from suture.breaker.breaker import BreakerStats, CircuitBreaker
from suture.breaker.config import BreakerConfig, BreakerOptions

__all__ = ["BreakerRegistry", "breakers"]


class BreakerRegistry:
    """Named breakers: get or create by name, iterate, snapshot, reset.

    >>> registry = BreakerRegistry()
    >>> db = registry.get("db", failure_threshold=3)
    >>> registry.get("db") is db
    True
    >>> registry.get("db", failure_threshold=4)
    Traceback (most recent call last):
    ...
    ValueError: breaker 'db' already exists with another configuration (failure_threshold: 3 != 4)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, name: str, /, **options: Unpack[BreakerOptions]) -> CircuitBreaker:
        """The breaker called ``name``, created with ``options`` the first time.

        Asking again with no options returns it; asking with options that
        differ from its configuration raises ``ValueError``.
        """
        existing = self._breakers.get(name)
        if existing is not None and not options:
            return existing
        config = BreakerConfig.build(**options)
        with self._lock:
            existing = self._breakers.get(name)
            if existing is None:
                breaker = CircuitBreaker.from_config(name, config)
                self._breakers[name] = breaker
                return breaker
        if existing.config != config:
            diff = ", ".join(
                f"{key}: {getattr(existing.config, key)!r} != {getattr(config, key)!r}"
                for key in BreakerConfig.__dataclass_fields__
                if getattr(existing.config, key) != getattr(config, key)
            )
            raise ValueError(f"breaker {name!r} already exists with another configuration ({diff})")
        return existing

    def add(self, breaker: CircuitBreaker) -> CircuitBreaker:
        """Register a breaker made elsewhere; a different breaker with its name is an error."""
        with self._lock:
            existing = self._breakers.setdefault(breaker.name, breaker)
        if existing is not breaker:
            raise ValueError(f"a different breaker named {breaker.name!r} is already registered")
        return breaker

    def remove(self, name: str) -> CircuitBreaker | None:
        """Forget one breaker (it keeps working for whoever holds it)."""
        with self._lock:
            return self._breakers.pop(name, None)

    def clear(self) -> None:
        """Forget every breaker (for tests)."""
        with self._lock:
            self._breakers.clear()

    def reset_all(self) -> None:
        """:meth:`CircuitBreaker.reset` every breaker (for tests)."""
        for breaker in list(self._breakers.values()):
            breaker.reset()

    def snapshot(self) -> dict[str, BreakerStats]:
        """Every breaker's stats, by name."""
        return {name: b.stats() for name, b in list(self._breakers.items())}

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def __len__(self) -> int:
        return len(self._breakers)

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __getitem__(self, name: str) -> CircuitBreaker:
        return self._breakers[name]

    def __repr__(self) -> str:
        return f"BreakerRegistry({sorted(self._breakers)!r})"


breakers: Final = BreakerRegistry()
"""The process-wide registry: ``suture.breakers.get("payments", failure_threshold=5)``."""
