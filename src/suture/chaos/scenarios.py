# Over ~400 lines on purpose: format, checks, metrics and shipped scenarios: one vocabulary.
"""Chaos scenarios as data: timed steps of network faults, the load, and the criteria.

A :class:`Scenario` is what ``suture chaos --scenario NAME`` plays: a list of
:class:`Step` (how long, which :class:`~suture.chaos.proxy.ProxyFaults` on
which dependency), the load, a few settings of the reference service, and its
:class:`Criterion` list. Each criterion names a metric of :data:`METRICS`, the
step it is measured over and a limit; the runner measures, this module judges.
A scenario file is the JSON of :meth:`Scenario.as_dict`
(:func:`load_scenario_file` reads one and names what is wrong in it).

Standard library only: the runner (:mod:`suture.demo.runner`) does the I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from suture.chaos.proxy import ProxyFaults

__all__ = [
    "DEPENDENCIES",
    "MAX_SLOW_CLIENTS",
    "METRICS",
    "SCENARIOS",
    "SLOW_CLIENT_INTERVAL",
    "Criterion",
    "Judged",
    "RunView",
    "Scenario",
    "ScenarioError",
    "Step",
    "Try",
    "judge",
    "load_scenario_file",
    "quick_scenarios",
]

#: What a step may break (each sits behind its own proxy): every worker's database has
#: its own proxy (a step may name one ``worker``), and the workers of a scenario with
#: more than one share Redis (their breaker and retry budget) behind one proxy.
DEPENDENCIES = ("database", "redis")
#: The most service workers a scenario may run (each a real process on a 2-core machine).
MAX_SERVICE_WORKERS = 8
#: In-process faults a step may inject, and their ceilings (the admin endpoint's too).
_INJECTED = {"error_rate": 1.0, "latency": 60.0, "hold": 1000.0}
#: Slow clients a step may open at most (the reference service closes connections past
#: 1000, its cap; this stays below it so what is measured is the read timeouts).
MAX_SLOW_CLIENTS = 500
#: Seconds between the bytes of a slow client's request head.
SLOW_CLIENT_INTERVAL = 2.0


class ScenarioError(ValueError):
    """A scenario (or a scenario file) that cannot be played; the message names the problem."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ScenarioError(message)


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """``seconds`` of one state of the network (and, optionally, of the service's own faults)."""

    name: str
    seconds: float
    #: The proxy's faults during the step (:meth:`ProxyFaults.as_dict` keys); {} is healthy.
    faults: Mapping[str, Any] = field(default_factory=dict)
    dependency: str = "database"
    #: In-process faults on the service's database target during the step (``error_rate``,
    #: ``latency`` in seconds), set through its chaos admin endpoint: an error storm is the
    #: database answering errors, which no proxy can forge.
    injected: Mapping[str, float] = field(default_factory=dict)
    #: Connections the runner opens to the service at the step's start, each sending its
    #: request head one byte every :data:`SLOW_CLIENT_INTERVAL` seconds, while the load
    #: goes on; each is timed until the server closes it (or the step ends).
    slow_clients: int = 0
    #: The one service worker (0-based) whose database proxy (and in-process faults) the
    #: step sets; ``None``: every worker's. Redis has one proxy for all: no worker there.
    worker: int | None = None

    def __post_init__(self) -> None:
        _require(bool(self.name) and isinstance(self.name, str), f"step name={self.name!r}")
        _require(
            self.worker is None or _is_index(self.worker),
            f"step {self.name!r}: worker={self.worker!r} must be a worker's index (0, 1, ...) "
            "or null for every worker",
        )
        _require(
            self.worker is None or self.dependency != "redis",
            f"step {self.name!r}: worker={self.worker!r} with dependency='redis': the workers "
            "share one Redis proxy (leave worker out)",
        )
        _require(
            isinstance(self.seconds, int | float) and 0 < self.seconds <= 3600,
            f"step {self.name!r}: seconds={self.seconds!r} must be within (0, 3600]",
        )
        _require(
            self.dependency in DEPENDENCIES,
            f"step {self.name!r}: dependency={self.dependency!r}, expected one of "
            f"{', '.join(DEPENDENCIES)}",
        )
        try:
            self.proxy_faults()
        except (TypeError, ValueError) as exc:
            raise ScenarioError(f"step {self.name!r}: faults: {exc}") from None
        unknown = sorted(set(self.injected) - set(_INJECTED))
        _require(
            not unknown,
            f"step {self.name!r}: injected: unknown {', '.join(unknown)}; expected some of "
            f"{', '.join(_INJECTED)}",
        )
        for key, value in self.injected.items():
            _require(
                isinstance(value, int | float) and 0 <= value <= _INJECTED[key],
                f"step {self.name!r}: injected {key}={value!r} must be within "
                f"[0, {_INJECTED[key]:g}]",
            )
        _require(
            isinstance(self.slow_clients, int)
            and not isinstance(self.slow_clients, bool)
            and 0 <= self.slow_clients <= MAX_SLOW_CLIENTS,
            f"step {self.name!r}: slow_clients={self.slow_clients!r} must be a whole number "
            f"within [0, {MAX_SLOW_CLIENTS}]",
        )

    def admin_body(self) -> dict[str, Any]:
        """What the service's ``POST /api/admin/chaos`` takes for this step's injected faults."""
        body: dict[str, Any] = {
            "target": "database",
            "errorRate": float(self.injected.get("error_rate", 0.0)),
            "latency": float(self.injected.get("latency", 0.0)),
            "hold": int(self.injected.get("hold", 0)),
        }
        return body

    def proxy_faults(self) -> ProxyFaults:
        return ProxyFaults().changed(dict(self.faults))


@dataclass(frozen=True, slots=True, kw_only=True)
class Criterion:
    """``metric`` measured over ``step`` (the whole run when ``None``) within ``max`` / ``min``."""

    metric: str
    step: str | None = None
    max: float | None = None
    min: float | None = None
    #: Judged on the run with suture only (the naive run shows its value beside it).
    text: str = ""
    #: Measured on one service worker's requests only (0-based); ``None``: all of them.
    worker: int | None = None

    def __post_init__(self) -> None:
        _require(
            self.metric in METRICS,
            f"criterion metric={self.metric!r}: expected one of {', '.join(sorted(METRICS))}",
        )
        _require(
            (self.max is None) != (self.min is None),
            f"criterion {self.metric!r}: give exactly one of max and min",
        )

    def limit_text(self) -> str:
        unit = METRICS[self.metric].unit
        if self.max is not None:
            return f"<= {self.max:g}{unit}"
        return f">= {self.min:g}{unit}"

    def describe(self) -> str:
        where = f" ({self.step})" if self.step else ""
        if self.worker is not None:
            where += f" (worker {self.worker})"
        return self.text or f"{METRICS[self.metric].title}{where} {self.limit_text()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    title: str
    steps: tuple[Step, ...]
    criteria: tuple[Criterion, ...] = ()
    #: Part of the CI-sized set (``--quick``).
    quick: bool = False
    #: Closed-loop browsers, and the ceiling on their clicks per second in all.
    workers: int = 16
    rate: float = 40.0
    #: Share of clicks that answer a task (a write reconciled afterwards).
    write_share: float = 0.1
    #: Settings of the reference service in both runs (``naive`` is set by the runner).
    service: Mapping[str, Any] = field(default_factory=dict)
    #: Seconds the clicks in flight at the end may still take (then: client timeouts).
    grace: float = 5.0
    #: Processes of the reference service, each with its own database proxy, the load
    #: spread over them round robin; more than one share their breaker and retry budget
    #: through Redis (behind one proxy, which ``dependency="redis"`` steps set).
    service_workers: int = 1

    def __post_init__(self) -> None:
        _require(bool(self.name) and isinstance(self.name, str), f"name={self.name!r}")
        _require(len(self.steps) > 0, f"scenario {self.name!r}: no steps")
        names = [s.name for s in self.steps]
        _require(len(set(names)) == len(names), f"scenario {self.name!r}: step names repeat")
        for c in self.criteria:
            _require(
                c.step is None or c.step in names,
                f"scenario {self.name!r}: criterion {c.metric!r} names step {c.step!r}, "
                f"not one of {', '.join(names)}",
            )
        _require(
            isinstance(self.workers, int) and 1 <= self.workers <= 256,
            f"scenario {self.name!r}: workers={self.workers!r} must be within [1, 256]",
        )
        _require(
            isinstance(self.rate, int | float) and 0 < self.rate <= 500,
            f"scenario {self.name!r}: rate={self.rate!r} must be within (0, 500]",
        )
        _require(
            isinstance(self.grace, int | float) and 0 <= self.grace <= 600,
            f"scenario {self.name!r}: grace={self.grace!r} must be within [0, 600]",
        )
        _require(
            isinstance(self.write_share, int | float) and 0 <= self.write_share <= 1,
            f"scenario {self.name!r}: write_share={self.write_share!r} must be within [0, 1]",
        )
        self._check_workers()

    def _check_workers(self) -> None:
        n = self.service_workers
        _require(
            isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_SERVICE_WORKERS,
            f"scenario {self.name!r}: service_workers={n!r} must be within "
            f"[1, {MAX_SERVICE_WORKERS}]",
        )
        where = f"(the scenario runs {n} service worker(s): 0..{n - 1})"
        for step in self.steps:
            _require(
                step.worker is None or step.worker < n,
                f"scenario {self.name!r}: step {step.name!r}: worker={step.worker} is out of "
                f"range {where}",
            )
            _require(
                step.dependency != "redis" or self.uses_redis,
                f"scenario {self.name!r}: step {step.name!r}: dependency='redis' needs "
                "service_workers >= 2 (one worker keeps its breaker in memory, without Redis)",
            )
        for c in self.criteria:
            _require(
                c.worker is None or (_is_index(c.worker) and c.worker < n),
                f"scenario {self.name!r}: criterion {c.metric!r}: worker={c.worker!r} is out of "
                f"range {where}",
            )

    @property
    def uses_redis(self) -> bool:
        """True when the service workers share state through Redis (more than one)."""
        return self.service_workers > 1

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    @property
    def injects(self) -> bool:
        """True when a step injects in-process faults (the service's chaos admin is needed)."""
        return any(s.injected for s in self.steps)

    def step_bounds(self) -> list[tuple[Step, float, float]]:
        """Each step with its start and end, in seconds from the start of the load."""
        out = []
        at = 0.0
        for step in self.steps:
            out.append((step, at, at + step.seconds))
            at += step.seconds
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "quick": self.quick,
            "workers": self.workers,
            "rate": self.rate,
            "write_share": self.write_share,
            "grace": self.grace,
            "service": dict(self.service),
            **({"service_workers": self.service_workers} if self.service_workers != 1 else {}),
            "steps": [
                {
                    "name": s.name,
                    "seconds": s.seconds,
                    "dependency": s.dependency,
                    "faults": dict(s.faults),
                    **({"injected": dict(s.injected)} if s.injected else {}),
                    **({"slow_clients": s.slow_clients} if s.slow_clients else {}),
                    **({"worker": s.worker} if s.worker is not None else {}),
                }
                for s in self.steps
            ],
            "criteria": [
                {
                    k: v
                    for k, v in (
                        ("metric", c.metric),
                        ("step", c.step),
                        ("max", c.max),
                        ("min", c.min),
                        ("text", c.text),
                        ("worker", c.worker),
                    )
                    if v not in (None, "")
                }
                for c in self.criteria
            ],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Scenario:
        """The inverse of :meth:`as_dict`; anything wrong is a :class:`ScenarioError`."""
        _require(isinstance(data, dict), "a scenario is a JSON object")
        known = {
            "name",
            "title",
            "quick",
            "workers",
            "rate",
            "write_share",
            "grace",
            "service",
            "service_workers",
            "steps",
            "criteria",
        }
        unknown = sorted(set(data) - known)
        _require(not unknown, f"unknown scenario field(s): {', '.join(unknown)}")
        _require("name" in data and "steps" in data, "a scenario needs a name and steps")
        try:
            steps = tuple(Step(**s) for s in data["steps"])
            criteria = tuple(Criterion(**c) for c in data.get("criteria", ()))
            values = {k: v for k, v in data.items() if k not in ("steps", "criteria")}
            values.setdefault("title", values["name"])
            return cls(steps=steps, criteria=criteria, **values)
        except TypeError as exc:
            raise ScenarioError(f"scenario {data.get('name')!r}: {exc}") from None


def load_scenario_file(path: str | Path) -> list[Scenario]:
    """One scenario (a JSON object) or several (a list) from a file."""
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"{path}: not JSON: {exc.msg} (line {exc.lineno})") from None
    items = data if isinstance(data, list) else [data]
    return [Scenario.from_dict(item) for item in items]


# --- measuring and judging -----------------------------------------------------------


class Try(NamedTuple):
    """One HTTP request of the load: when it was sent and how it ended."""

    #: Seconds from the start of the load to the request's sending.
    sent: float
    #: Milliseconds until its answer (or until the client gave up).
    ms: float
    #: The HTTP status; ``None`` when no answer came (a client timeout, a transport error).
    status: int | None
    #: The answer carried a valid ``Retry-After`` (seconds, whole or fractional).
    retry_after: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RunView:
    """What the metrics read: one run's per-second rows and its reconciliation.

    Each row is a dict of the CSV columns (:data:`suture.chaos.report.COLUMNS`);
    ``t`` is seconds from the start of the load, ``step`` the step's name.
    """

    rows: Sequence[Mapping[str, Any]]
    step_bounds: Sequence[tuple[str, float, float]]
    #: Seconds from each step's end to the first success of a request sent after it.
    first_ok_after: Mapping[str, float | None]
    lost_writes: int
    duplicated_writes: int
    #: The 503 tries of each step: (seconds from the start, latency in ms), for fast-fail.
    fail_latencies: Mapping[str, Sequence[tuple[float, float]]]
    #: Every HTTP request sent during each step (by the time it was sent).
    tries: Mapping[str, Sequence[Try]] = field(default_factory=dict)
    #: Requests the service lets work on the database at once (its limiter's ceiling):
    #: the slots of :func:`capacity use <_capacity_use>`; ``None`` when unknown.
    slots: int | None = None
    #: Seconds each slow client of a step stayed open (closed by the server, or by the
    #: runner when the step ended: then the whole step).
    slow_clients: Mapping[str, Sequence[float]] = field(default_factory=dict)
    #: With several service workers: the same view of each worker's own requests (its rows:
    #: the requests it answered, its breaker, its database attempts; no clicks: a click's
    #: retries may go to another worker). A criterion with ``worker`` is measured there.
    workers: Sequence[RunView] = ()
    #: When the breaker first opened in each step (seconds from the start), if known.
    opened: Mapping[str, float | None] = field(default_factory=dict)

    def in_step(self, step: str | None) -> list[Mapping[str, Any]]:
        if step is None:
            return list(self.rows)
        return [r for r in self.rows if r["step"] == step]


def _sum(rows: Sequence[Mapping[str, Any]], key: str) -> float:
    return float(sum(r[key] or 0 for r in rows))


def _amplification(view: RunView, step: str | None) -> float | None:
    """Database attempts per HTTP request sent (the browsers' retries are requests too)."""
    rows = view.in_step(step)
    sent = _sum(rows, "sent")
    return None if not sent else _sum(rows, "db_attempts") / sent


def _goodput(view: RunView, step: str | None) -> float | None:
    rows = view.in_step(step)
    clicks = _sum(rows, "clicks")
    return None if not clicks else 100.0 * _sum(rows, "ok") / clicks


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


#: A p99 of fewer samples would be their maximum: the fast-fail p99 needs this many.
FAST_FAIL_SAMPLES = 100


def _fast_fail(view: RunView, step: str | None) -> float | None:
    """p99 of the 503 tries sent once the breaker first opened in the step.

    The opening's time is the service's own when known (``view.opened``), else
    the second after the rows first show the breaker OPEN. Not measured (None)
    with fewer than :data:`FAST_FAIL_SAMPLES` tries.
    """
    if step is None:
        return None
    since = view.opened.get(step)
    if since is None:
        seen = [r["t"] for r in view.in_step(step) if r["breaker"] == "open"]
        if not seen:
            return None
        since = min(seen) + 1
    values = [ms for t, ms in view.fail_latencies.get(step, ()) if t >= since]
    if len(values) < FAST_FAIL_SAMPLES:
        return None
    return _percentile(values, 99)


def _p99_503(view: RunView, step: str | None) -> float | None:
    """p99 of every 503 try sent during the step (the breaker's state aside)."""
    if step is None:
        return None
    return _percentile([ms for _, ms in view.fail_latencies.get(step, ())], 99)


def _p99_delta(view: RunView, step: str | None) -> float | None:
    """p99 of the requests sent during ``step`` minus that of the step before it."""
    names = [name for name, _, _ in view.step_bounds]
    if step is None or step not in names or names.index(step) == 0:
        return None
    previous = names[names.index(step) - 1]
    now = _percentile([t.ms for t in _tries(view, step)], 99)
    before = _percentile([t.ms for t in _tries(view, previous)], 99)
    return None if now is None or before is None else now - before


_TRIES = ("req_ok", "req_503", "req_500", "req_4xx", "req_timeout", "req_error")


def _request_goodput(view: RunView, step: str | None) -> float | None:
    """Share of the HTTP requests (tries, not clicks) answered 2xx."""
    rows = view.in_step(step)
    answered = sum(_sum(rows, key) for key in _TRIES)
    return None if not answered else 100.0 * _sum(rows, "req_ok") / answered


def _recovery(view: RunView, step: str | None) -> float | None:
    if step is None:
        return None
    return view.first_ok_after.get(step)


def _tries(view: RunView, step: str | None) -> list[Try]:
    if step is None:
        return [t for tries in view.tries.values() for t in tries]
    return list(view.tries.get(step, ()))


def _p99_ok(view: RunView, step: str | None) -> float | None:
    """p99 of the requests answered 2xx (each try, not each click)."""
    return _percentile([t.ms for t in _tries(view, step) if t.status and t.status < 300], 99)


def _slowest(view: RunView, step: str | None) -> float | None:
    """The slowest request that got an answer, whatever its status."""
    answered = [t.ms for t in _tries(view, step) if t.status is not None]
    return max(answered) if answered else None


def _unanswered(view: RunView, step: str | None) -> float | None:
    """Requests that got no answer: the client's timeout (10 s) or a transport error."""
    tries = _tries(view, step)
    return float(sum(1 for t in tries if t.status is None)) if tries else None


def _without_retry_after(view: RunView, step: str | None) -> float | None:
    tries = _tries(view, step)
    return float(sum(1 for t in tries if t.status == 503 and not t.retry_after)) if tries else None


def _capacity_use(view: RunView, step: str | None) -> float | None:
    """Share of the service's database slots busy with requests that succeeded (Little's law).

    Requests served per second times their latency is the count of successful requests
    in flight on average; over the slots the service allows, it is the goodput of the
    step against the capacity of the database as it is (slow or not): a closed loop
    that offers more than that gets the excess shed, and this says whether what was
    not shed was served. Each 2xx request's time is counted within the step only.
    """
    bounds = {name: (start, stop) for name, start, stop in view.step_bounds}
    if step is None or view.slots is None or step not in bounds:
        return None
    start, stop = bounds[step]
    busy = 0.0
    for tries in view.tries.values():  # a request sent before the step may end in it
        for t in tries:
            if t.status and t.status < 300:
                ended = t.sent + t.ms / 1000
                busy += max(0.0, min(ended, stop) - max(t.sent, start))
    return 100.0 * busy / ((stop - start) * view.slots)


def _settled(view: RunView, step: str | None) -> float | None:
    """Seconds from the step's end to the sending of the last request that failed after it.

    Failed: a ``5xx`` or no answer. 0 when every request sent after the step succeeded:
    the service served fully again at once (``recovery`` is its first success only).
    """
    bounds = {name: stop for name, _, stop in view.step_bounds}
    if step is None or step not in bounds or not view.tries:
        return None
    stop = bounds[step]
    failed = [
        t.sent
        for tries in view.tries.values()
        for t in tries
        if t.sent >= stop and (t.status is None or t.status >= 500)
    ]
    return max(failed) - stop if failed else 0.0


def _slow_client_open(view: RunView, step: str | None) -> float | None:
    """The longest a slow client of the step stayed open."""
    if step is None:
        return None
    seconds = view.slow_clients.get(step, ())
    return max(seconds) if seconds else None


def _count(key: str) -> Callable[[RunView, str | None], float | None]:
    def measure(view: RunView, step: str | None) -> float | None:
        return _sum(view.in_step(step), key)

    return measure


@dataclass(frozen=True, slots=True)
class Metric:
    title: str
    unit: str
    measure: Callable[[RunView, str | None], float | None]


METRICS: dict[str, Metric] = {
    "amplification": Metric("database attempts per request sent", "x", _amplification),
    "goodput": Metric("clicks answered 2xx", "%", _goodput),
    "fast_fail_p99": Metric("p99 of the 503 answers once the breaker is open", " ms", _fast_fail),
    "p99_503": Metric("p99 of the 503 answers", " ms", _p99_503),
    "recovery": Metric("first success of a request sent after the step ends", " s", _recovery),
    "settled": Metric("last failed request sent after the step ends", " s", _settled),
    "p99_delta": Metric("p99 of the requests, minus the step before's", " ms", _p99_delta),
    "request_goodput": Metric("requests (not clicks) answered 2xx", "%", _request_goodput),
    "status_500": Metric("500 answers", "", _count("status_500")),
    "breaker_opens": Metric("times the breaker opened", "", _count("breaker_opens")),
    "p99_ok": Metric("p99 of the requests answered 2xx", " ms", _p99_ok),
    "slowest_ms": Metric("the slowest answered request", " ms", _slowest),
    "unanswered": Metric("requests without an answer", "", _unanswered),
    "without_retry_after": Metric("503 answers without Retry-After", "", _without_retry_after),
    "capacity_use": Metric("database slots busy with requests served", "%", _capacity_use),
    "slow_client_open_s": Metric("the longest a slow client stayed open", " s", _slow_client_open),
    "lost_writes": Metric("acknowledged writes lost", "", lambda v, s: float(v.lost_writes)),
    "duplicated_writes": Metric(
        "acknowledged writes duplicated", "", lambda v, s: float(v.duplicated_writes)
    ),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Judged:
    criterion: Criterion
    value: float | None
    held: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion.describe(),
            "metric": self.criterion.metric,
            "step": self.criterion.step,
            "worker": self.criterion.worker,
            "limit": self.criterion.limit_text(),
            "value": self.value,
            "held": self.held,
        }


def judge(criterion: Criterion, view: RunView) -> Judged:
    """Measure ``criterion``'s metric on ``view``; a value that cannot be measured fails.

    A criterion naming a ``worker`` is measured on that worker's view (``view.workers``).
    """
    if criterion.worker is not None:
        if not 0 <= criterion.worker < len(view.workers):
            return Judged(criterion=criterion, value=None, held=False)
        view = view.workers[criterion.worker]
    value = METRICS[criterion.metric].measure(view, criterion.step)
    if value is None:
        return Judged(criterion=criterion, value=None, held=False)
    if criterion.max is not None:
        held = value <= criterion.max
    else:
        assert criterion.min is not None
        held = value >= criterion.min
    return Judged(criterion=criterion, value=value, held=held)


# --- the shipped scenarios -----------------------------------------------------------

_ALWAYS = (
    Criterion(metric="status_500", max=0, text="no 500 answers"),
    Criterion(metric="lost_writes", max=0, text="0 acknowledged writes lost"),
    Criterion(metric="duplicated_writes", max=0, text="0 acknowledged writes duplicated"),
)

#: The reference service in both runs: a 2 s breaker open time so healing shows in a
#: short run, 1 s per database attempt and per pool checkout (a hanging database costs
#: 1 s per attempt, not 5), and a small seed so it starts fast.
_SERVICE: dict[str, Any] = {
    "reset_timeout": 2.0,
    "db_timeout": 1.0,
    "pool_timeout": 1.0,
    "pool_size": 10,
    "tasks": 400,
    "messages": 50,
    "rules": 5,
    "monitor_interval": 0.5,
}


def _outage(name: str, title: str, mode: str, seconds: tuple[float, float, float]) -> Scenario:
    before, during, after = seconds
    return Scenario(
        name=name,
        title=title,
        quick=True,
        service=_SERVICE,
        steps=(
            Step(name="before", seconds=before),
            Step(name="outage", seconds=during, faults={"mode": mode}),
            Step(name="after", seconds=after),
        ),
        criteria=(
            Criterion(
                metric="amplification",
                step="outage",
                max=1.1,
                text="database attempts per request during the outage <= 1.1x",
            ),
            Criterion(
                metric="fast_fail_p99",
                step="outage",
                max=5.0,
                text="p99 of the 503 answers once the breaker is open < 5 ms",
            ),
            Criterion(
                metric="recovery",
                step="outage",
                max=_SERVICE["reset_timeout"] + 1.0,
                text="first success <= reset timeout (2 s) + 1 s after the outage",
            ),
            *_ALWAYS,
        ),
    )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        _outage(
            "database-down",
            "the database refuses and cuts every connection (reset)",
            "reset",
            (4.0, 8.0, 7.0),
        ),
        _outage(
            "database-hanging",
            "the database accepts connections and never answers (blackhole)",
            "blackhole",
            (4.0, 8.0, 7.0),
        ),
    )
}


#: A slow database in both runs: the service as ``suture demo`` ships it, an attempt
#: timeout (5 s) bounded by the request's 3 s deadline. The outages' 1 s per attempt
#: would turn every transaction of a database 300 ms slower per round trip (four round
#: trips: 1.2 s) into a timeout, a failure, and open the breaker on a healthy database.
_SLOW_SERVICE: dict[str, Any] = {**_SERVICE, "db_timeout": 5.0, "request_deadline": 3.0}
_DEADLINE_MS = 1000 * _SLOW_SERVICE["request_deadline"]


def _slow(name: str, title: str, latency: float, criteria: Sequence[Criterion]) -> Scenario:
    return Scenario(
        name=name,
        title=title,
        service=_SLOW_SERVICE,
        steps=(
            Step(name="before", seconds=4.0),
            Step(name="slow", seconds=8.0, faults={"latency": latency}),
            Step(name="after", seconds=5.0),
        ),
        criteria=(
            Criterion(
                metric="breaker_opens",
                step="slow",
                max=0,
                text="breaker opens while slow (overload, not failure) = 0",
            ),
            *criteria,
            Criterion(
                metric="without_retry_after",
                step="slow",
                max=0,
                text="503s without Retry-After while slow = 0",
            ),
            Criterion(
                metric="recovery",
                step="slow",
                max=2.0,
                text="first success <= 2 s after the latency is removed",
            ),
            Criterion(
                metric="settled",
                step="slow",
                max=2.0,
                text="every request served from 2 s after the latency is removed",
            ),
            *_ALWAYS,
        ),
    )


SCENARIOS["database-slow"] = _slow(
    "database-slow",
    "every round trip to the database 300 ms slower",
    0.3,
    (
        Criterion(
            metric="capacity_use",
            step="slow",
            min=90.0,
            text="database slots busy serving >= 90% (the rest shed)",
        ),
        Criterion(
            metric="p99_503",
            step="slow",
            max=5.0,
            text="p99 of the 503s while slow < 5 ms (shed, not queued)",
        ),
        Criterion(
            metric="p99_ok",
            step="slow",
            max=_DEADLINE_MS,
            text="p99 of the 2xx while slow <= the 3 s deadline",
        ),
    ),
)
SCENARIOS["database-slow-2s"] = _slow(
    "database-slow-2s",
    "every round trip to the database 2 s slower (no transaction fits the 3 s deadline)",
    2.0,
    (
        Criterion(
            metric="slowest_ms",
            step="slow",
            max=_DEADLINE_MS + 50,
            text="slowest answer <= the 3 s deadline + 50 ms",
        ),
        Criterion(
            metric="unanswered",
            step="slow",
            max=0,
            text="requests without an answer while slow = 0",
        ),
    ),
)

#: The reference service's header read timeout (``suture.demo.guard``, with suture only).
_HEADER_TIMEOUT = 5.0

SCENARIOS["slow-clients"] = Scenario(
    name="slow-clients",
    title="60 clients send their request one byte every 2 s, beside the normal load",
    service=_SERVICE,
    steps=(
        Step(name="before", seconds=4.0),
        Step(name="slow-clients", seconds=8.0, slow_clients=60),
        Step(name="after", seconds=4.0),
    ),
    criteria=(
        Criterion(
            metric="slow_client_open_s",
            step="slow-clients",
            max=_HEADER_TIMEOUT + 1.0,
            text="slow clients closed <= header timeout (5 s) + 1 s",
        ),
        Criterion(
            metric="goodput",
            step="slow-clients",
            min=99.0,
            text="clicks answered 2xx beside them >= 99%",
        ),
        Criterion(
            metric="p99_ok",
            step="slow-clients",
            max=250.0,
            text="p99 of the 2xx beside them <= 250 ms",
        ),
        *_ALWAYS,
    ),
)


def _storm(name: str, title: str, rate: float, criteria: Sequence[Criterion]) -> Scenario:
    return Scenario(
        name=name,
        title=title,
        service=_SERVICE,
        steps=(
            Step(name="before", seconds=4.0),
            Step(name="storm", seconds=8.0, injected={"error_rate": rate}),
            Step(name="after", seconds=5.0),
        ),
        criteria=(*criteria, *_ALWAYS),
    )


SCENARIOS["errors-30"] = _storm(
    "errors-30",
    "30% of the database attempts fail (injected in the service)",
    0.3,
    (
        Criterion(
            metric="goodput",
            step="storm",
            min=99.0,
            text="clicks answered 2xx during the storm >= 99% (retries absorb it)",
        ),
    ),
)
SCENARIOS["errors-100"] = _storm(
    "errors-100",
    "every database attempt fails (injected in the service)",
    1.0,
    (
        Criterion(
            metric="amplification",
            step="storm",
            max=1.1,
            text="database attempts per request during the storm <= 1.1x",
        ),
        Criterion(
            metric="fast_fail_p99",
            step="storm",
            max=5.0,
            text="p99 of the 503 answers once the breaker is open < 5 ms",
        ),
        Criterion(
            metric="recovery",
            step="storm",
            max=_SERVICE["reset_timeout"] + 1.0,
            text="first success <= reset timeout (2 s) + 1 s after the storm",
        ),
    ),
)


SCENARIOS["pool-exhausted"] = Scenario(
    name="pool-exhausted",
    title="every connection of the service's pool held (injected in the service)",
    service=_SERVICE,
    steps=(
        Step(name="before", seconds=4.0),
        Step(name="held", seconds=8.0, injected={"hold": _SERVICE["pool_size"]}),
        Step(name="after", seconds=5.0),
    ),
    criteria=(
        Criterion(
            metric="p99_503",
            step="held",
            max=50.0,
            text="p99 of the 503 answers while the pool is held < 50 ms (shed, not queued)",
        ),
        Criterion(
            metric="recovery",
            step="held",
            max=3.0,
            text="first success <= 3 s after the connections are given back",
        ),
        *_ALWAYS,
    ),
)


def _redis_lost(name: str, title: str, mode: str) -> Scenario:
    return Scenario(
        name=name,
        title=title,
        service=_SERVICE,
        service_workers=2,
        steps=(
            # Not compared: the first seconds of a run are slower on this machine, with or
            # without faults (the load's own start, caches, connections).
            Step(name="warm-up", seconds=4.0),
            Step(name="before", seconds=6.0),
            Step(name="redis-lost", seconds=8.0, dependency="redis", faults={"mode": mode}),
            Step(name="after", seconds=4.0),
        ),
        criteria=(
            Criterion(
                metric="p99_delta",
                step="redis-lost",
                max=5.0,
                text="p99 of the requests while Redis is lost <= p99 before + 5 ms",
            ),
            Criterion(
                metric="goodput",
                step="redis-lost",
                min=99.0,
                text="clicks answered 2xx while Redis is lost >= 99%",
            ),
            *_ALWAYS,
        ),
    )


SCENARIOS["redis-lost-reset"] = _redis_lost(
    "redis-lost-reset",
    "two workers; the Redis they share refuses and cuts every connection (reset)",
    "reset",
)
SCENARIOS["redis-lost-blackhole"] = _redis_lost(
    "redis-lost-blackhole",
    "two workers; the Redis they share accepts connections and never answers (blackhole)",
    "blackhole",
)
SCENARIOS["worker-partitioned"] = Scenario(
    name="worker-partitioned",
    title="two workers; worker 0 loses its own path to the database (reset), worker 1 does not",
    service=_SERVICE,
    service_workers=2,
    steps=(
        Step(name="before", seconds=4.0),
        Step(name="partition", seconds=8.0, faults={"mode": "reset"}, worker=0),
        Step(name="after", seconds=5.0),
    ),
    criteria=(
        Criterion(
            metric="request_goodput",
            step="partition",
            worker=1,
            min=99.0,
            text="the healthy worker 1 answers >= 99% of its requests 2xx (no following "
            "worker 0's OPEN)",
        ),
        Criterion(
            metric="fast_fail_p99",
            step="partition",
            worker=0,
            max=5.0,
            text="p99 of worker 0's 503s once its breaker is open < 5 ms",
        ),
        Criterion(
            metric="recovery",
            step="partition",
            worker=0,
            max=_SERVICE["reset_timeout"] + 1.0,
            text="worker 0's first success <= reset timeout (2 s) + 1 s after the partition",
        ),
        *_ALWAYS,
    ),
)


def quick_scenarios() -> list[Scenario]:
    """The CI-sized set: the quick scenarios with every step shortened (under 60 s in all)."""
    out = []
    for s in SCENARIOS.values():
        if not s.quick:
            continue
        steps = tuple(
            Step(
                name=st.name,
                seconds=max(2.0, math.floor(st.seconds / 2)),
                faults=st.faults,
                dependency=st.dependency,
                injected=st.injected,
                slow_clients=st.slow_clients,
                worker=st.worker,
            )
            for st in s.steps
        )
        out.append(
            Scenario(
                name=s.name,
                title=s.title,
                steps=steps,
                criteria=s.criteria,
                quick=True,
                workers=s.workers,
                rate=s.rate,
                write_share=s.write_share,
                service=s.service,
                grace=2.0,
                service_workers=s.service_workers,
            )
        )
    return out
