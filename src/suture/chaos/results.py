"""The outcome of a chaos session: one :class:`RunResult` per run, in a :class:`Session`.

Plain data (standard library only), written by the runner
(:mod:`suture.demo.runner`, which needs the ``demo`` extra) and read by the
report (:mod:`suture.chaos.report`). :data:`COLUMNS` are a run's per-second
columns, in CSV order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from suture.chaos.scenarios import Judged, Scenario

__all__ = ["COLUMNS", "MODES", "RunResult", "Session"]

#: The two runs of every scenario.
MODES = ("suture", "naive")

#: The per-second columns, in CSV order (documented in docs/chaos.md; only ever added to).
COLUMNS: tuple[str, ...] = (
    "t",  # seconds since the load started
    "step",  # the scenario's step
    "fault",  # the fault in that step ("none", "reset", "+300 ms", "redis reset", "worker 0 reset")
    "sent",  # HTTP requests sent (the browsers' retries included)
    "req_ok",  # HTTP requests answered 2xx in that second
    "req_503",  # ... answered 503
    "req_500",  # ... answered another 5xx
    "req_4xx",  # ... answered 4xx
    "req_timeout",  # ... that hit the client's timeout (10 s)
    "req_error",  # ... that ended in a transport error
    "req_p50_ms",  # HTTP request latency, median
    "req_p99_ms",  # HTTP request latency, 99th percentile
    "clicks",  # clicks that ended in that second (a browser action, its retries included)
    "ok",  # clicks answered 2xx in the end
    "status_503",  # clicks answered 503 in the end
    "status_500",  # clicks answered another 5xx in the end
    "status_4xx",  # clicks answered 4xx in the end
    "timeout",  # clicks that hit the client's timeout, or still waiting when the run ended
    "error",  # clicks that ended in a transport error
    "p50_ms",  # click latency (what the user waited, retries included), median
    "p99_ms",  # click latency, 99th percentile
    "db_attempts",  # database attempts the service made (its retries included)
    "proxy_connections",  # connections that reached the proxy (before any fault)
    "proxy_chunks_up",  # reads from the service to the database (about one per query)
    "breaker",  # the service's database breaker: closed, open, half_open
    "pool_in_use",  # the fraction of the pool's connections in use
    "retries",  # retries the service scheduled
    "shed",  # requests the service shed (overload)
    "breaker_opens",  # times the service's database breaker moved to open
    # With several service workers (empty with one); ";"-separated, one value per worker:
    "breakers",  # each worker's database breaker (``breaker`` above is worker 0's)
    "worker_sent",  # HTTP requests sent to each worker (round robin)
    "worker_req_ok",  # ... answered 2xx by each worker
    "worker_req_p99_ms",  # each worker's request latency, 99th percentile
    "redis_connections",  # connections that reached the Redis proxy the workers share
)


@dataclass
class RunResult:
    """One run: a scenario in one mode, its rows, its criteria."""

    scenario: Scenario
    mode: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    judged: list[Judged] = field(default_factory=list)
    acked_writes: int = 0
    lost_writes: int = 0
    duplicated_writes: int = 0
    partial: bool = False
    error: str | None = None
    seconds: float = 0.0
    service: dict[str, Any] = field(default_factory=dict)
    #: The database proxy's counts at the end (summed over the workers' proxies).
    proxy: dict[str, int] = field(default_factory=dict)
    #: The Redis proxy's counts at the end (several service workers only).
    redis_proxy: dict[str, int] = field(default_factory=dict)
    #: Each service worker's own rows (several workers only): its requests, its breaker.
    worker_rows: list[list[dict[str, Any]]] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return self.error is None and not self.partial and all(j.held for j in self.judged)

    def value(self, metric: str) -> float | None:
        for j in self.judged:
            if j.criterion.metric == metric:
                return j.value
        return None

    def goodput(self) -> float | None:
        clicks = sum(r["clicks"] for r in self.rows)
        return None if not clicks else 100.0 * sum(r["ok"] for r in self.rows) / clicks

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "mode": self.mode,
            "held": self.held,
            "partial": self.partial,
            "error": self.error,
            "seconds": round(self.seconds, 2),
            "goodput": self.goodput(),
            "acked_writes": self.acked_writes,
            "lost_writes": self.lost_writes,
            "duplicated_writes": self.duplicated_writes,
            "service": self.service,
            "proxy": self.proxy,
            **({"redis_proxy": self.redis_proxy} if self.redis_proxy else {}),
            "criteria": [j.as_dict() for j in self.judged],
            "rows": self.rows,
            **({"worker_rows": self.worker_rows} if self.worker_rows else {}),
        }


@dataclass
class Session:
    """Every run so far (the report reads it, also after Ctrl-C)."""

    database_url: str
    results: list[RunResult] = field(default_factory=list)
    interrupted: bool = False
    #: The Redis the multi-worker scenarios share (None: the runner's default).
    redis_url: str | None = None

    @property
    def held(self) -> bool:
        runs = [r for r in self.results if r.mode == "suture"]
        return bool(runs) and not self.interrupted and all(r.held for r in runs)
