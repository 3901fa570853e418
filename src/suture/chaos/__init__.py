"""Fault injection: prove that a service heals by breaking its dependencies on purpose.

Two ways to break a dependency, one room each:

* :mod:`suture.chaos.faults`: in-process faults per named target
  (:class:`Chaos`: errors, added latency, pool exhaustion), injected by the code
  right before the call to the dependency;
* :mod:`suture.chaos.proxy`: network faults (:class:`FaultProxy`: reset,
  blackhole, latency per round trip, bandwidth, dropped connections) from a TCP
  proxy put between the service and its database or Redis, so the faults are
  the network's and the service's own drivers meet them.
"""

from __future__ import annotations

from suture.chaos.faults import (
    AsyncConnectionHog,
    Chaos,
    ConnectionHog,
    FaultConfig,
    Holder,
    InjectedFault,
)
from suture.chaos.proxy import FaultProxy, ProxyError, ProxyFaults, ProxyStats

__all__ = [
    "AsyncConnectionHog",
    "Chaos",
    "ConnectionHog",
    "FaultConfig",
    "FaultProxy",
    "Holder",
    "InjectedFault",
    "ProxyError",
    "ProxyFaults",
    "ProxyStats",
]
