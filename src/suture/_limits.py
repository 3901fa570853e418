"""The pure limit algorithms of :class:`suture.AdaptiveLimiter`: no lock, no clock, no I/O.

Each takes one completed request (its start, round-trip time, the number in
flight, whether it was a drop) and the current limit, and answers the new
limit and why it moved (``""``: it did not).
"""

from __future__ import annotations

import math

__all__ = ["Aimd", "Gradient", "median"]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


class Aimd:
    """Additive increase, multiplicative decrease; pure."""

    __slots__ = ("backoff_ratio", "last_decrease")

    def __init__(self, backoff_ratio: float) -> None:
        self.backoff_ratio = backoff_ratio
        self.last_decrease = -math.inf

    def on_sample(
        self, limit: float, *, now: float, started: float, rtt: float, inflight: int, drop: bool
    ) -> tuple[float, str]:
        if drop:
            if started < self.last_decrease:
                return limit, ""  # this round already backed off
            self.last_decrease = now
            return limit * self.backoff_ratio, "drop"
        if inflight * 2 >= limit:  # not application-limited: the limit was in use
            return limit + 1.0 / max(limit, 1.0), "increase"
        return limit, ""


class Gradient:
    """Latency gradient against a measured no-load latency; pure."""

    __slots__ = (
        "aimd",
        "buffer",
        "min_rtt",
        "next_probe",
        "probe_interval",
        "probe_rtts",
        "probe_samples",
        "probe_started",
        "probing",
        "resume_limit",
        "smoothing",
        "window",
        "window_inflight",
        "window_rtts",
        "window_start",
    )

    def __init__(
        self,
        *,
        backoff_ratio: float,
        buffer: float,
        smoothing: float,
        window: float,
        probe_interval: float,
        probe_samples: int,
    ) -> None:
        self.aimd = Aimd(backoff_ratio)
        self.buffer = buffer
        self.smoothing = smoothing
        self.window = window
        self.probe_interval = probe_interval
        self.probe_samples = probe_samples
        self.min_rtt: float | None = None
        self.probing = True  # the first thing to learn is the no-load latency
        self.probe_rtts: list[float] = []
        self.probe_started = -math.inf
        self.resume_limit = 0.0
        self.next_probe = math.inf
        self.window_start = -math.inf
        self.window_rtts: list[float] = []
        self.window_inflight = 0

    def on_sample(  # noqa: PLR0911 - the gradient rule's cases read as one table of early returns
        self, limit: float, *, now: float, started: float, rtt: float, inflight: int, drop: bool
    ) -> tuple[float, str]:
        if drop:
            return self.aimd.on_sample(
                limit, now=now, started=started, rtt=rtt, inflight=inflight, drop=True
            )
        if self.probing:
            if started < self.probe_started:
                return limit, ""  # ran at the old concurrency: not a no-load latency
            self.probe_rtts.append(rtt)
            if len(self.probe_rtts) >= self.probe_samples:
                self.min_rtt = median(self.probe_rtts)
                self.probe_rtts = []
                self.probing = False
                self.next_probe = now + self.probe_interval
                self.window_start = now
                self.window_rtts = []
                self.window_inflight = 0
                return max(limit, self.resume_limit), "min_rtt measured"
            return limit, ""
        if now >= self.next_probe:
            self.probing = True
            self.probe_started = now
            self.resume_limit = limit
            return limit, "probe"
        self.window_rtts.append(rtt)
        self.window_inflight = max(self.window_inflight, inflight)
        if now - self.window_start < self.window or len(self.window_rtts) < 3:
            return limit, ""
        sample = median(self.window_rtts)
        busy = self.window_inflight * 2 >= limit
        self.window_rtts = []
        self.window_inflight = 0
        self.window_start = now
        base = sample if self.min_rtt is None else self.min_rtt
        # No measurable latency at all (0/0): nothing is queueing, the gradient is high.
        gradient = 2.0 if sample <= 0.0 else max(0.5, min(2.0, base * (1.0 + self.buffer) / sample))
        if gradient >= 1.0 and not busy:
            return limit, ""  # application-limited: no evidence the limit can grow
        target = limit * gradient + math.sqrt(limit)
        new = limit * (1.0 - self.smoothing) + target * self.smoothing
        return new, "gradient"
