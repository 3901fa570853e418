"""The success path with suture's metrics installed, as a ratio to the bare policy.

Shared by ``bench/breaker.py`` and ``bench/retry.py`` (``... metrics`` runs only
this part). Both collectors read the policies' own counters when scraped or
collected, so installing them should add nothing to a successful call; the
figures check it (goal: <= 1.5x the bare policy), and time a Prometheus scrape
of 100 breakers (goal: < 5 ms).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from _harness import per_call_ns
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry

import suture
from suture.contrib.otel import OtelInstruments
from suture.contrib.prometheus import PrometheusListener, render_text

ROUNDS = 15


def with_collectors(make: Callable[[], tuple[Any, Callable[[], Any]]]) -> dict[str, float]:
    """``make()`` returns ``(policy, wrapped)``: ns per call bare, with Prometheus, with OTel.

    The three are timed in turn, best of ``ROUNDS`` rounds, so a busy moment
    on a shared machine does not land on one of them only.
    """
    _, bare = make()
    prom_policy, prom = make()
    otel_policy, otel = make()
    breakers = [p for p in (prom_policy,) if isinstance(p, suture.CircuitBreaker)]
    listener = PrometheusListener(registry=CollectorRegistry(), breakers=breakers)
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    obreakers = [p for p in (otel_policy,) if isinstance(p, suture.CircuitBreaker)]
    instruments = OtelInstruments(meter=provider.get_meter("bench"), breakers=obreakers)
    rows = {"bare": float("inf"), "prometheus": float("inf"), "otel": float("inf")}
    try:
        for _ in range(ROUNDS):
            rows["bare"] = min(rows["bare"], per_call_ns(bare, repeat=1))
            rows["prometheus"] = min(rows["prometheus"], per_call_ns(prom, repeat=1))
            rows["otel"] = min(rows["otel"], per_call_ns(otel, repeat=1))
    finally:
        listener.close()
        instruments.close()
        provider.shutdown()
    return rows


def scrape_ms(breakers: int = 100) -> float:
    """Best time of one Prometheus scrape with ``breakers`` breakers tracked, in ms."""
    tracked = []
    for i in range(breakers):
        b = suture.CircuitBreaker(f"bench-scrape-{i}")
        for _ in range(10):
            b.call(int)
        tracked.append(b)
    listener = PrometheusListener(
        registry=CollectorRegistry(), breakers=tracked, registry_breakers=False
    )
    try:
        best = float("inf")
        for _ in range(20):
            t0 = time.perf_counter_ns()
            render_text(listener.registry)
            best = min(best, (time.perf_counter_ns() - t0) / 1e6)
        return best
    finally:
        listener.close()


def report(title: str, rows: dict[str, float]) -> None:
    print(f"\n{title}: the success path with suture's metrics installed (goal <= 1.5x)")
    for name in ("bare", "prometheus", "otel"):
        ratio = rows[name] / rows["bare"]
        added = rows[name] - rows["bare"]
        print(f"  {name:<12}{rows[name]:>8.0f} ns/call  {added:>+6.0f} ns  {ratio:.2f}x")
