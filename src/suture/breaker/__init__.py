"""The circuit breaker, one room per concern.

==================  =================================================================
``config.py``       :class:`BreakerOptions` and :class:`BreakerConfig`, the frozen,
                    self-validating configuration (each default written once)
``store.py``        :class:`BreakerState`, :class:`BreakerRecord`, the
                    :class:`BreakerStore` protocol and :class:`MemoryBreakerStore`
``_machine.py``     the state logic with no loop: admission, counting, the
                    :data:`TRANSITIONS` table, state changes through the store
``breaker.py``      :class:`CircuitBreaker`: the decorator edge (one skeleton made
                    into the sync and async paths) and :class:`BreakerStats`
``registry.py``     :class:`BreakerRegistry` and the process-wide ``breakers``
==================  =================================================================
"""

from suture.breaker._machine import TRANSITIONS
from suture.breaker.breaker import BreakerStats, CircuitBreaker
from suture.breaker.config import BreakerConfig, BreakerFallback, BreakerOptions
from suture.breaker.registry import BreakerRegistry, breakers
from suture.breaker.store import (
    BreakerRecord,
    BreakerState,
    BreakerStore,
    MemoryBreakerStore,
    RecordListener,
)

__all__ = [
    "TRANSITIONS",
    "BreakerConfig",
    "BreakerFallback",
    "BreakerOptions",
    "BreakerRecord",
    "BreakerRegistry",
    "BreakerState",
    "BreakerStats",
    "BreakerStore",
    "CircuitBreaker",
    "MemoryBreakerStore",
    "RecordListener",
    "breakers",
]
