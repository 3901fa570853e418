"""A small thread-safe histogram and counter table, rendered by the collector.

prometheus-client's own ``Counter`` and ``Histogram`` add a ``_created``
series beside every child (unless disabled process-wide); these keep plain
numbers under one lock and the collector renders them as metric families
without it.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence

__all__ = ["ATTEMPT_BUCKETS", "DURATION_BUCKETS", "Counts", "Histogram", "HistogramTable"]

DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Seconds: the Prometheus client's default buckets."""

ATTEMPT_BUCKETS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10)
"""Attempts per call."""


class Histogram:
    """Bucket counts (not cumulative), a sum and a count."""

    __slots__ = ("bounds", "counts", "sum", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        """``[(le, count), ...]`` in the exposition's form, ``+Inf`` last."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((_le(bound), float(running)))
        out.append(("+Inf", float(self.total)))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


class HistogramTable:
    """Histograms by label values, behind one lock."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self._lock = threading.Lock()
        self._items: dict[tuple[str, ...], Histogram] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        with self._lock:
            hist = self._items.get(labels)
            if hist is None:
                hist = self._items[labels] = Histogram(self.bounds)
            hist.observe(value)

    def items(self) -> Iterator[tuple[tuple[str, ...], list[tuple[str, float]], float]]:
        """``(labels, cumulative buckets, sum)`` for each child, a copy taken under the lock."""
        with self._lock:
            snapshot = [(k, h.cumulative(), h.sum) for k, h in self._items.items()]
        yield from snapshot

    def __len__(self) -> int:
        return len(self._items)


class Counts:
    """Counters by (metric, label values), behind one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[str, ...], float]] = {}

    def inc(self, metric: str, labels: tuple[str, ...], amount: float = 1.0) -> None:
        with self._lock:
            table = self._values.setdefault(metric, {})
            table[labels] = table.get(labels, 0.0) + amount

    def get(self, metric: str) -> list[tuple[tuple[str, ...], float]]:
        with self._lock:
            return list(self._values.get(metric, {}).items())

    def value(self, metric: str, labels: tuple[str, ...]) -> float:
        with self._lock:
            return self._values.get(metric, {}).get(labels, 0.0)
