"""suture: a self-healing toolkit for Python services.

Retry with backoff, circuit breakers, response validation, connection-pool
monitoring with load shedding, and guarded status transitions; composable,
observable and proven under injected faults.
"""

from suture._version import __version__ as __version__
from suture.admission import PressureLevel, Priority
from suture.backoff import Backoff
from suture.breaker import (
    BreakerRegistry,
    BreakerState,
    BreakerStats,
    BreakerStore,
    CircuitBreaker,
    MemoryBreakerStore,
    breakers,
)
from suture.budget import Budget, RetryBudget
from suture.chaos import Chaos, FaultConfig, InjectedFault
from suture.classify import Classifier, is_overload, is_transient, is_transient_status, retry_after
from suture.clock import SYSTEM_CLOCK, Clock, SystemClock
from suture.deadline import Deadline, deadline, remaining
from suture.errors import (
    BreakerOpen,
    DeadlineExceeded,
    InvalidTransition,
    Overloaded,
    ResponseError,
    SutureError,
)
from suture.events import (
    BreakerRejected,
    BreakerStateChanged,
    Event,
    PressureChanged,
    RequestShed,
    RetryBudgetExhausted,
    RetryGaveUp,
    RetryScheduled,
    TransitionApplied,
    TransitionRejected,
    subscribe,
)
from suture.lastgood import LastGood, Served, last_served
from suture.limiter import AdaptiveLimiter
from suture.limits import Bulkhead, KeyedRateLimiter, RateLimiter
from suture.policy import Fallback, Policy, compose
from suture.pool import CallableSource, PoolMonitor, Usage
from suture.responses import Outcome, SimpleResponse, avalidate_response, validate_response
from suture.retrying import Attempt, Retry, retry
from suture.timeouts import Timeout, timeout
from suture.transitions import TransitionResult, Transitions
from suture.windows import CountWindow, TimeWindow

__all__ = [
    "SYSTEM_CLOCK",
    "AdaptiveLimiter",
    "Attempt",
    "Backoff",
    "BreakerOpen",
    "BreakerRegistry",
    "BreakerRejected",
    "BreakerState",
    "BreakerStateChanged",
    "BreakerStats",
    "BreakerStore",
    "Budget",
    "Bulkhead",
    "CallableSource",
    "Chaos",
    "CircuitBreaker",
    "Classifier",
    "Clock",
    "CountWindow",
    "Deadline",
    "DeadlineExceeded",
    "Event",
    "Fallback",
    "FaultConfig",
    "InjectedFault",
    "InvalidTransition",
    "KeyedRateLimiter",
    "LastGood",
    "MemoryBreakerStore",
    "Outcome",
    "Overloaded",
    "Policy",
    "PoolMonitor",
    "PressureChanged",
    "PressureLevel",
    "Priority",
    "RateLimiter",
    "RequestShed",
    "ResponseError",
    "Retry",
    "RetryBudget",
    "RetryBudgetExhausted",
    "RetryGaveUp",
    "RetryScheduled",
    "Served",
    "SimpleResponse",
    "SutureError",
    "SystemClock",
    "TimeWindow",
    "Timeout",
    "TransitionApplied",
    "TransitionRejected",
    "TransitionResult",
    "Transitions",
    "Usage",
    "avalidate_response",
    "breakers",
    "compose",
    "deadline",
    "is_overload",
    "is_transient",
    "is_transient_status",
    "last_served",
    "remaining",
    "retry",
    "retry_after",
    "subscribe",
    "timeout",
    "validate_response",
]
