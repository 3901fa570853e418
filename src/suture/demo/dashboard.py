"""What ``/health`` and the dashboard show: the breaker, the pool, telemetry, chaos.

:class:`Dashboard` reads the parts it is given (it owns none of them) and
samples the pool's usage into the telemetry once a second while the app runs.
"""

from __future__ import annotations

from typing import Any

from suture.breaker import CircuitBreaker
from suture.chaos import Chaos
from suture.clock import Clock
from suture.contrib import starlette as suture_web
from suture.demo.shared import SharedState
from suture.demo.telemetry import Telemetry
from suture.pool import PoolMonitor

__all__ = ["Dashboard"]


class Dashboard:
    """The health report and the dashboard's data, from the parts of one running demo.

    ``show_chaos``: include the chaos snapshot even while no fault is active
    (the demo runs with ``--chaos``).
    """

    def __init__(
        self,
        *,
        breaker: CircuitBreaker,
        monitor: PoolMonitor,
        telemetry: Telemetry,
        chaos: Chaos,
        shared: SharedState,
        clock: Clock,
        show_chaos: bool,
    ) -> None:
        self.breaker = breaker
        self.monitor = monitor
        self.telemetry = telemetry
        self.chaos = chaos
        self.shared = shared
        self.clock = clock
        self.show_chaos = show_chaos

    def chaos_view(self) -> dict[str, Any] | None:
        if self.show_chaos or self.chaos.active:
            return self.chaos.snapshot()
        return None

    def health(self) -> dict[str, Any]:
        report = suture_web.health_report(breakers=[self.breaker], monitors=[self.monitor])
        report["pool"] = report["pools"][self.monitor.name]
        report["chaos"] = self.chaos_view()
        report["stateStore"] = self.shared.describe()
        # With Redis: this worker, the live workers and each one's view of the breaker.
        report["workers"] = self.shared.cluster()
        # The counters a poller needs each second, without the dashboard's series.
        report["totals"] = dict(self.telemetry.totals)
        return report

    def sample(self) -> None:
        """Record the pool's usage and the breaker's state in this second's bucket."""
        usage = self.monitor.usage
        if usage is not None:
            self.telemetry.pool_sample(usage.fraction)
        self.telemetry.breaker_sample(self.breaker.state.value)

    async def sample_forever(self) -> None:
        while True:
            self.sample()
            await self.clock.asleep(1.0)

    def data(self) -> dict[str, Any]:
        """What ``/api/dashboard`` answers (but the traffic rate, which the app knows).

        Everything comes from memory (the breaker, the monitor's last sample, the
        telemetry): no database call, so it answers while the database is down.
        """
        self.sample()
        stats = self.breaker.stats()
        usage = self.monitor.usage
        return {
            "success": True,
            "at": self.clock.wall(),
            "breakers": [stats.as_dict()],
            "pool": {
                "level": self.monitor.level.name,
                "fraction": usage.fraction if usage is not None else None,
                "current": usage.current if usage is not None else None,
                "limit": usage.limit if usage is not None else None,
                "stale": self.monitor.stale,
            },
            "rates": self.telemetry.rates(),
            "totals": dict(self.telemetry.totals),
            "series": self.telemetry.series(300),
            "recent": list(self.telemetry.recent)[:30],
            "events": self.telemetry.event_groups(30),
            "pinned": list(self.telemetry.pinned),
            "chaos": self.chaos_view(),
            "stateStore": self.shared.describe(),
            "workers": self.shared.cluster(),
        }
