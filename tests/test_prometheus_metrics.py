"""suture.contrib.prometheus: every metric after scripted calls on a fake clock."""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from suture import (
    AdaptiveLimiter,
    BreakerOpen,
    CircuitBreaker,
    CountWindow,
    Priority,
    Retry,
    RetryBudget,
)
from suture.contrib.prometheus import PrometheusListener, check_namespace
from suture.contrib.starlette_metrics import UNMATCHED, RequestMetricsMiddleware
from suture.events import RetryBudgetExhausted, RetryGaveUp, RetryScheduled, emit
from suture.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, **kwargs: object) -> PrometheusListener:
    return PrometheusListener(
        registry=CollectorRegistry(),
        clock=clock,
        registry_breakers=False,
        **kwargs,  # type: ignore[arg-type]
    )


def sample(lst: PrometheusListener, metric: str, /, **labels: str) -> float | None:
    return lst.registry.get_sample_value(metric, labels)


def boom() -> None:
    raise ConnectionError("down")


def test_breaker_calls_by_outcome_one_hot_state_opens_and_time_in_state(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        "pay", failure_threshold=2, reset_timeout=10, ignore=(KeyError,), clock=clock
    )
    lst = make(clock, breakers=[breaker])
    try:
        for _ in range(3):
            breaker.call(lambda: 1)

        def ignored() -> None:
            raise KeyError("x")

        with pytest.raises(KeyError):
            breaker.call(ignored)
        clock.advance(5)
        assert sample(lst, "suture_breaker_state_seconds", name="pay") == 5
        for _ in range(2):
            with pytest.raises(ConnectionError):
                breaker.call(boom)
        for _ in range(4):
            with pytest.raises(BreakerOpen):
                breaker.call(lambda: 1)
        clock.advance(3)
        for outcome, want in (("successful", 3), ("failed", 2), ("ignored", 1), ("rejected", 4)):
            got = sample(lst, "suture_breaker_calls_total", name="pay", outcome=outcome)
            assert got == want, outcome
        states = {
            s: sample(lst, "suture_breaker_state", name="pay", state=s)
            for s in ("closed", "open", "half_open")
        }
        assert states == {"closed": 0, "open": 1, "half_open": 0}
        assert sample(lst, "suture_breaker_opens_total", name="pay") == 1
        assert sample(lst, "suture_breaker_state_seconds", name="pay") == 3
        assert (
            sample(
                lst, "suture_breaker_transitions_total", name="pay", source="CLOSED", target="OPEN"
            )
            == 1
        )
        assert sample(lst, "suture_breaker_rejections_total", name="pay") == 4
        clock.advance(10)  # the reset timeout: half-open when read
        assert sample(lst, "suture_breaker_state", name="pay", state="half_open") == 1
        assert sample(lst, "suture_breaker_state", name="pay", state="open") == 0
    finally:
        lst.close()


def test_slow_calls_an_outcome_of_their_own_and_a_dimension(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        "slowpay",
        window=CountWindow(100),
        slow_call_duration=0.5,
        failure_rate_threshold=1.0,
        clock=clock,
    )
    lst = make(clock, breakers=[breaker])

    def took(seconds: float, fail: bool) -> Callable[[], int]:
        def run() -> int:
            clock.advance(seconds)
            if fail:
                raise ConnectionError("down")
            return 1

        return run

    for seconds, fail in ((0.1, False), (1.0, False), (1.0, False), (1.0, True), (0.1, True)):
        with contextlib.suppress(ConnectionError):
            breaker.call(took(seconds, fail))
    want = {"successful": 1, "slow": 2, "failed": 2, "ignored": 0, "rejected": 0}
    for outcome, n in want.items():
        assert sample(lst, "suture_breaker_calls_total", name="slowpay", outcome=outcome) == n
    assert sample(lst, "suture_breaker_slow_calls_total", name="slowpay", outcome="successful") == 2
    assert sample(lst, "suture_breaker_slow_calls_total", name="slowpay", outcome="failed") == 1
    assert sample(lst, "suture_breaker_slow_call_ratio", name="slowpay") == 3 / 5


def test_retries_by_reason_attempts_histogram_and_deadline(clock: FakeClock) -> None:
    lst = make(clock)
    try:
        policy = Retry(attempts=3, initial_delay=0.1, jitter="none", clock=clock, name="db")
        calls = {"n": 0}

        def flaky() -> int:
            calls["n"] += 1
            if calls["n"] % 2:
                raise TimeoutError("slow")
            return 1

        policy(flaky)()  # 2 attempts
        with pytest.raises(ConnectionError):
            policy(boom)()  # 3 attempts, gives up
        policy(lambda: 1)()  # 1 attempt: never retried, not in the histogram
        assert sample(lst, "suture_retries_total", name="db", reason="TimeoutError") == 1
        assert sample(lst, "suture_retries_total", name="db", reason="ConnectionError") == 2
        assert sample(lst, "suture_retry_gave_up_total", name="db", reason="attempts") == 1
        assert sample(lst, "suture_retry_attempts_count", name="db") == 2
        assert sample(lst, "suture_retry_attempts_sum", name="db") == 5
        assert sample(lst, "suture_retry_attempts_bucket", name="db", le="1.0") == 0
        assert sample(lst, "suture_retry_attempts_bucket", name="db", le="2.0") == 1
        assert sample(lst, "suture_retry_attempts_bucket", name="db", le="3.0") == 2
        assert sample(lst, "suture_retry_attempts_bucket", name="db", le="+Inf") == 2
        err = TimeoutError()
        emit(RetryGaveUp(name="db", attempts=2, elapsed=9.9, reason="deadline", error=err))
        emit(RetryBudgetExhausted(name="db", budget="shared", error=err))
        assert sample(lst, "suture_retry_deadline_exceeded_total", name="db") == 1
        assert sample(lst, "suture_retry_budget_exhausted_total", name="db", budget="shared") == 1
    finally:
        lst.close()


def test_budget_and_limiter_read_at_scrape_time(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0.5, capacity=10, min_per_second=0, name="shared", clock=clock)
    limiter = AdaptiveLimiter(initial=4, name="edge", clock=clock)
    lst = make(clock, budgets=[budget], limiters=[limiter])
    try:
        for _ in range(4):
            budget.deposit()
        assert budget.try_spend()
        assert sample(lst, "suture_retry_budget_tokens", name="shared") == pytest.approx(1.0)
        assert sample(lst, "suture_retry_budget_spent_total", name="shared") == 1
        permit = limiter.acquire(Priority.NORMAL)
        assert sample(lst, "suture_limiter_limit", name="edge") == 4
        assert sample(lst, "suture_limiter_inflight", name="edge") == 1
        permit.dropped()
        assert sample(lst, "suture_limiter_inflight", name="edge") == 0
        assert sample(lst, "suture_limiter_drops_total", name="edge") == 1
    finally:
        lst.close()


class FakeSource:
    """The attributes of ``SQLAlchemyPoolSource`` the scrape reads."""

    name = "db-pool"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waits: deque[tuple[float, float]] = deque()
        self._waiting = 0
        self._counts = {"timeouts": 0}


def test_pool_waiters_timeouts_and_checkout_wait_histogram(clock: FakeClock) -> None:
    source = FakeSource()
    lst = make(clock, pool_sources=[source])
    try:
        source._waits.extend([(1.0, 0.003), (2.0, 0.2)])
        source._waiting = 3
        source._counts["timeouts"] = 2
        assert sample(lst, "suture_pool_waiters", name="db-pool") == 3
        assert sample(lst, "suture_pool_checkout_timeouts_total", name="db-pool") == 2
        assert sample(lst, "suture_pool_checkout_wait_seconds_count", name="db-pool") == 2
        # A second scrape counts only the waits that ended since the first.
        source._waits.append((3.0, 1.5))
        assert sample(lst, "suture_pool_checkout_wait_seconds_count", name="db-pool") == 3
        le = {"name": "db-pool"}
        assert sample(lst, "suture_pool_checkout_wait_seconds_bucket", **le, le="0.005") == 1
        assert sample(lst, "suture_pool_checkout_wait_seconds_bucket", **le, le="0.25") == 2
        assert sample(lst, "suture_pool_checkout_wait_seconds_bucket", **le, le="2.5") == 3
        assert sample(lst, "suture_pool_checkout_wait_seconds_sum", **le) == pytest.approx(1.703)
    finally:
        lst.close()


def test_call_duration_histogram_buckets_sync_and_async(clock: FakeClock) -> None:
    lst = make(clock)

    @lst.timed("search")
    def slow() -> int:
        clock.advance(0.3)
        return 1

    @lst.timed("search")
    async def fast() -> int:
        clock.advance(0.004)
        return 2

    import asyncio

    assert slow() == 1
    assert asyncio.run(fast()) == 2
    le = {"name": "search"}
    assert sample(lst, "suture_call_duration_seconds_bucket", **le, le="0.005") == 1
    assert sample(lst, "suture_call_duration_seconds_bucket", **le, le="0.25") == 1
    assert sample(lst, "suture_call_duration_seconds_bucket", **le, le="0.5") == 2
    assert sample(lst, "suture_call_duration_seconds_count", **le) == 2
    assert sample(lst, "suture_call_duration_seconds_sum", **le) == pytest.approx(0.304)


def test_no_created_series_and_valid_exposition(clock: FakeClock) -> None:
    breaker = CircuitBreaker("x", clock=clock)
    lst = make(clock, breakers=[breaker])
    try:
        emit(RetryScheduled(name="r", attempt=1, attempts=3, delay=0.1, error=OSError(), elapsed=0))
        text = lst.render().decode()
        assert "_created" not in text
        families = {f.name: f.type for f in text_string_to_metric_families(text)}
        assert families["suture_breaker_calls"] == "counter"
        assert families["suture_retry_attempts"] == "histogram"
        assert families["suture_http_request_duration_seconds"] == "histogram"
    finally:
        lst.close()


@pytest.mark.parametrize("bad", ["my-app", "1suture", "", "a b", 3])
def test_bad_namespace_is_a_clear_error(bad: object) -> None:
    with pytest.raises(ValueError, match=r"namespace=.*Prometheus metric name prefix"):
        check_namespace(bad)
    with pytest.raises(ValueError, match="namespace="):
        PrometheusListener(namespace=bad, subscribe_now=False)  # type: ignore[arg-type]


def test_a_namespace_prefixes_every_metric(clock: FakeClock) -> None:
    lst = make(clock, namespace="shop")
    text = lst.render().decode()
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert names and all(n.startswith("shop_") for n in names)


def edge_app(lst: PrometheusListener) -> Starlette:
    async def task(request: Request) -> JSONResponse:
        status = int(request.query_params.get("status", "200"))
        return JSONResponse({"id": request.path_params["task_id"]}, status_code=status)

    async def inner(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def fail(request: Request) -> PlainTextResponse:
        raise RuntimeError("bug")

    app = Starlette(
        routes=[
            Route("/api/tasks/{task_id}", task, methods=["GET", "POST"]),
            Route("/fail", fail),
            Mount("/admin", routes=[Route("/users/{uid}", inner)]),
        ]
    )
    app.add_middleware(RequestMetricsMiddleware, listener=lst)
    return app


def test_http_edge_by_route_template_method_and_status_class(clock: FakeClock) -> None:
    lst = make(clock)
    client = TestClient(edge_app(lst), raise_server_exceptions=False)
    client.get("/api/tasks/1")
    client.get("/api/tasks/2?status=503")
    client.post("/api/tasks/3?status=409")
    client.get("/admin/users/7")
    client.get("/nowhere/at/all")
    client.get("/fail")
    labels = {"route": "/api/tasks/{task_id}", "method": "GET"}
    assert sample(lst, "suture_http_requests_total", **labels, status_class="2xx") == 1
    assert sample(lst, "suture_http_requests_total", **labels, status_class="5xx") == 1
    post = {"route": "/api/tasks/{task_id}", "method": "POST", "status_class": "4xx"}
    assert sample(lst, "suture_http_requests_total", **post) == 1
    mount = {"route": "/admin/users/{uid}", "method": "GET", "status_class": "2xx"}
    assert sample(lst, "suture_http_requests_total", **mount) == 1
    lost = {"route": UNMATCHED, "method": "GET", "status_class": "4xx"}
    assert sample(lst, "suture_http_requests_total", **lost) == 1
    assert (
        sample(lst, "suture_http_requests_total", route="/fail", method="GET", status_class="5xx")
        == 1
    )
    assert sample(lst, "suture_http_request_duration_seconds_count", **labels) == 2


def test_cardinality_is_bounded_under_10000_distinct_paths(clock: FakeClock) -> None:
    lst = make(clock)
    app = edge_app(lst)

    async def drive() -> None:
        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: object) -> None:
            return None

        for i in range(10_000):
            path = f"/api/tasks/{i}" if i % 2 else f"/scan/{i}/wp-admin.php"
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET" if i % 3 else "PROPFIND",
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "root_path": "",
                "query_string": b"",
                "headers": [],
                "server": ("test", 80),
                "client": ("test", 1),
            }
            await app(scope, receive, send)

    import asyncio

    asyncio.run(drive())
    text = lst.render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = families["suture_http_requests"].samples
    series = {tuple(sorted(s.labels.items())) for s in requests}
    assert len(series) == 4, series  # (template | <unmatched>) x (GET | OTHER)
    durations = families["suture_http_request_duration_seconds"].samples
    assert len({(s.labels["route"], s.labels["method"]) for s in durations}) == 4
    assert "wp-admin" not in text and "PROPFIND" not in text
    assert sum(s.value for s in requests) == 10_000


def test_middleware_needs_a_listener() -> None:
    with pytest.raises(TypeError, match="listener="):
        RequestMetricsMiddleware(Starlette(), listener=object())  # type: ignore[arg-type]


@pytest.fixture
def registered() -> Iterator[CircuitBreaker]:
    from suture.breaker import breakers

    breaker = breakers.get("prom-registry-test")
    yield breaker
    breakers.remove("prom-registry-test")


def test_registry_breakers_are_read_by_default(registered: CircuitBreaker) -> None:
    lst = PrometheusListener(registry=CollectorRegistry(), subscribe_now=False)
    registered.call(lambda: 1)
    got = sample(lst, "suture_breaker_calls_total", name="prom-registry-test", outcome="successful")
    assert got == 1


def test_render_text_is_generate_latest_byte_for_byte(clock: FakeClock) -> None:
    from prometheus_client import Counter, Gauge, Histogram, Info
    from prometheus_client.exposition import generate_latest

    from suture.contrib.prometheus import render_text

    breaker = CircuitBreaker('quote"back\\slash\nnl', clock=clock)
    lst = make(clock, breakers=[breaker])
    try:
        r = lst.registry
        Counter("plain_hits", "Hits with a \\ and a\nnewline", ["path"], registry=r).labels(
            'a"b'
        ).inc(3)
        Gauge("big", "Big numbers", ["k"], registry=r).labels("x").set(12_345_678.0)
        Gauge("neg", "Negative and special", ["k"], registry=r).labels("y").set(float("-inf"))
        Histogram("lat_seconds", "Latency", registry=r).observe(0.2)
        Info("build", "Build info", registry=r).info({"version": "1.2"})
        lst.observe_request("/x/{id}", "GET", 503, 1e-7)
        emit(RetryScheduled(name="r", attempt=1, attempts=3, delay=0.1, error=OSError(), elapsed=0))
        assert render_text(r) == generate_latest(r)
    finally:
        lst.close()


def test_render_text_falls_back_for_utf8_names() -> None:
    from prometheus_client import Gauge
    from prometheus_client.exposition import generate_latest

    from suture.contrib.prometheus import render_text

    r = CollectorRegistry()
    Gauge("température", "UTF-8 name", registry=r).set(1)
    assert render_text(r) == generate_latest(r)


def test_rate_limit_pauses_and_stale_answers(clock: FakeClock) -> None:
    from suture.events import LimitPaused, StaleServed

    lst = make(clock)
    try:
        emit(LimitPaused(name="upstream", seconds=2.0))
        emit(StaleServed(name="assistance", key="user-42", age=3.0, error=TimeoutError()))
        assert sample(lst, "suture_rate_limit_paused_total", name="upstream") == 1
        assert sample(lst, "suture_stale_served_total", name="assistance") == 1
        assert "user-42" not in lst.render().decode()
    finally:
        lst.close()
