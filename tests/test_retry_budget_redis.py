"""RedisRetryBudget against the real Redis: two "workers" (two budgets, two clients)
share one bucket; successes stay local until folded; an outage degrades to a local
budget without raising, and heals back."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

import suture
from redis_support import CountingRedis, together
from suture import Retry, RetryBudget, RetryBudgetExhausted
from suture.contrib.redis import RedisRetryBudget
from suture.testing import FakeClock, capture_events

pytestmark = pytest.mark.redis


def client(redis_url: str) -> CountingRedis:
    return CountingRedis.from_url(redis_url, socket_timeout=1.0)  # type: ignore[return-value]


@pytest.fixture
def key(redis_url: str, unique_name: str) -> Iterator[str]:
    key = f"suture-test:budget:{unique_name}"
    yield key
    cleanup = redis.Redis.from_url(redis_url)
    cleanup.delete(key)
    cleanup.close()


def budget(redis_url: str, key: str, **options: Any) -> RedisRetryBudget:
    options.setdefault("background", False)
    options.setdefault("min_per_second", 0)
    return RedisRetryBudget(client(redis_url), key=key, **options)


class Flaky:
    """Fails ``failures`` times with a transient error, then returns "ok"."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("flaky")
        return "ok"


def test_two_workers_drain_and_refill_one_bucket(redis_url: str, key: str) -> None:
    a = budget(redis_url, key, ratio=0.5, capacity=2)
    b = budget(redis_url, key, ratio=0.5, capacity=2)
    assert not a.try_spend() and not b.try_spend()  # empty, no floor
    for _ in range(6):
        a.deposit()  # 3 tokens earned, capped at 2
    a.flush()
    assert b.stats().tokens == 2.0
    assert [b.try_spend(), a.try_spend(), b.try_spend(), a.try_spend()] == [
        True,
        True,
        False,
        False,
    ]
    b.deposit()
    b.deposit()  # folded by the same script that takes the token
    assert b.try_spend()
    assert not a.try_spend()
    stats = a.stats()
    assert (stats.deposits, stats.spent, stats.refused) == (8, 3, 5)
    assert stats.name == key


def test_deposits_of_one_worker_let_the_other_retry(redis_url: str, key: str) -> None:
    worker_a = budget(redis_url, key, ratio=0.1, capacity=10)
    worker_b = budget(redis_url, key, ratio=0.1, capacity=10)
    policy_a = Retry(attempts=3, initial_delay=0, jitter="none", budget=worker_a)
    policy_b = Retry(attempts=3, initial_delay=0, jitter="none", budget=worker_b)

    flaky = Flaky(failures=1)
    with capture_events() as events, pytest.raises(ConnectionError):
        policy_b.call(flaky)  # the shared bucket is empty: no retry
    assert flaky.calls == 1
    assert len(events.of(RetryBudgetExhausted)) == 1

    for _ in range(10):
        assert policy_a.call(lambda: "fine") == "fine"
    worker_a.flush()  # worker A's ten successes reach Redis: one token
    flaky = Flaky(failures=1)
    assert policy_b.call(flaky) == "ok"
    assert flaky.calls == 2
    assert worker_b.stats().tokens == pytest.approx(0.1)  # the retried success deposited


@settings(max_examples=25, deadline=None)
@given(
    ratio=st.sampled_from([0.1, 0.25, 0.3, 1.0]),
    capacity=st.sampled_from([1.0, 2.5, 10.0]),
    steps=st.lists(
        st.tuples(st.sampled_from(["deposit", "deposit", "spend", "flush"]), st.integers(0, 1)),
        max_size=60,
    ),
)
def test_two_workers_behave_as_one_local_budget(
    redis_url: str, ratio: float, capacity: float, steps: list[tuple[str, int]]
) -> None:
    """The shared bucket answers exactly as one local RetryBudget would, given that a
    worker's successes reach it when that worker spends or flushes."""
    key = f"suture-test:budget:model:{uuid.uuid4().hex[:12]}"
    workers = [budget(redis_url, key, ratio=ratio, capacity=capacity) for _ in range(2)]
    model = RetryBudget(ratio=ratio, capacity=capacity, min_per_second=0, clock=FakeClock())
    pending = [0, 0]
    try:
        for op, w in steps:
            if op == "deposit":
                workers[w].deposit()
                pending[w] += 1
                continue
            model._credit(pending[w])
            pending[w] = 0
            if op == "spend":
                assert workers[w].try_spend() == model.try_spend()
            else:
                workers[w].flush()
        shared = workers[0].stats()  # folds worker 0's pending successes...
        model._credit(pending[0])  # ...so the model does too
        local = model.stats()
        assert shared.tokens == pytest.approx(local.tokens, abs=1e-9)
        assert (shared.spent, shared.refused) == (local.spent, local.refused)
    finally:
        cleanup = redis.Redis.from_url(redis_url)
        cleanup.delete(key)
        cleanup.close()
        for worker in workers:
            worker._client.close()


def test_the_success_path_sends_no_redis_command(redis_url: str, key: str) -> None:
    shared = budget(redis_url, key)
    policy = Retry(attempts=3, budget=shared)

    @policy
    def ok() -> int:
        return 1

    async def aok() -> int:
        return 2

    before = shared._client.commands  # type: ignore[attr-defined]
    for _ in range(200):
        assert ok() == 1
    assert shared._client.commands == before  # type: ignore[attr-defined]
    shared.flush()  # one script call folds the 200 successes
    assert shared._client.commands == before + 1  # type: ignore[attr-defined]
    shared.flush()  # nothing new: nothing sent
    assert shared._client.commands == before + 1  # type: ignore[attr-defined]
    assert shared.stats().deposits == 200


async def test_async_policy_shares_the_bucket(redis_url: str, key: str) -> None:
    a = budget(redis_url, key, ratio=1.0, capacity=5)
    b = budget(redis_url, key, ratio=1.0, capacity=5)
    policy = Retry(attempts=2, initial_delay=0, jitter="none", budget=b)
    a.deposit()
    a.flush()
    calls = 0

    @policy
    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TimeoutError("slow")
        return "ok"

    assert await flaky() == "ok"
    assert a.stats().spent == 1


def test_the_floor_refills_by_redis_time(redis_url: str, key: str) -> None:
    # One token per 10,000 s: the reserve starts with one, and only Redis TIME refills it.
    shared = budget(redis_url, key, min_per_second=0.0001)
    assert shared.try_spend()
    assert not shared.try_spend()
    raw = redis.Redis.from_url(redis_url)
    at = float(raw.hget(key, "at"))  # type: ignore[arg-type]
    raw.hset(key, "at", repr(at - 20_000))  # as if 20,000 s had passed
    raw.close()
    assert shared.try_spend()  # refilled (capped at one token)
    assert not shared.try_spend()


def test_no_token_is_spent_twice_under_threads(redis_url: str, key: str) -> None:
    workers = [budget(redis_url, key, ratio=1.0, capacity=100) for _ in range(2)]
    for _ in range(100):
        workers[0].deposit()
    workers[0].flush()
    granted: list[int] = []

    def spend(worker: RedisRetryBudget) -> None:
        granted.append(sum(worker.try_spend() for _ in range(40)))

    threads = [threading.Thread(target=spend, args=(workers[i % 2],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 100  # 240 asks, exactly the 100 tokens granted
    stats = workers[1].stats()
    assert (stats.spent, stats.refused) == (100, 140)


def test_redis_down_degrades_to_a_local_budget(caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens on port 1: every connection is refused at once.
    down = RedisRetryBudget(
        "redis://127.0.0.1:1/0", key="unreachable", ratio=0.5, min_per_second=1, background=False
    )
    with caplog.at_level(logging.WARNING, logger="suture"):
        assert down.try_spend()  # the local floor's first token
        assert down.degraded
        assert not down.try_spend()
        for _ in range(4):
            down.deposit()
        assert down.try_spend() and down.try_spend()  # local deposits count
        assert not down.try_spend()
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1  # one warning per outage, not one per call
    stats = down.stats()
    assert (stats.deposits, stats.spent) == (4, 3)
    policy = Retry(attempts=2, initial_delay=0, jitter="none", budget=down)
    flaky = Flaky(failures=1)
    with pytest.raises(ConnectionError):
        policy.call(flaky)  # refused by the local budget, the original error raised
    down.close()


def test_threads_that_find_redis_down_together_warn_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Request threads that find Redis down at the same moment log one warning per outage.
    down = RedisRetryBudget(
        "redis://127.0.0.1:1/0", key="together", ratio=0.5, min_per_second=1, background=False
    )

    class Slow(logging.Handler):  # a slow log sink widens the window between check and set
        def emit(self, record: logging.LogRecord) -> None:
            time.sleep(0.05)

    slow = Slow()
    logging.getLogger("suture").addHandler(slow)
    try:
        with caplog.at_level(logging.WARNING, logger="suture"):
            together(down.try_spend)
    finally:
        logging.getLogger("suture").removeHandler(slow)
    assert down.degraded
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    down.close()


def test_an_outage_degrades_and_heals_back(redis_url: str, key: str) -> None:
    clock = FakeClock()
    shared = budget(redis_url, key, ratio=1.0, capacity=10, reconnect_after=5, clock=clock)
    other = budget(redis_url, key, ratio=1.0, capacity=10)
    conn: CountingRedis = shared._client  # type: ignore[assignment]
    for _ in range(3):
        other.deposit()
    other.flush()  # three shared tokens

    conn.down = True
    shared.deposit()
    assert shared.stats().tokens == pytest.approx(1.0)  # local: 1 token (its deposit), not 3
    assert shared.degraded
    assert shared.try_spend()
    assert not shared.try_spend()
    sent = conn.commands
    for _ in range(5):
        shared.try_spend()
    assert conn.commands == sent  # within reconnect_after: Redis is not even tried

    conn.down = False
    clock.advance(5)
    assert shared.try_spend()  # back on the shared bucket
    assert not shared.degraded
    assert other.stats().tokens == pytest.approx(2.0)


def test_close_folds_what_is_pending_and_stops_the_thread(redis_url: str, key: str) -> None:
    shared = RedisRetryBudget(redis_url, key=key, flush_interval=60, min_per_second=0)
    assert shared._thread is not None and shared._thread.is_alive()
    for _ in range(7):
        shared.deposit()
    shared.close()
    assert not shared._thread.is_alive()
    reader = budget(redis_url, key)
    assert reader.stats().deposits == 7


def test_the_background_flush_folds_successes(redis_url: str, key: str) -> None:
    # A worker that only succeeds still feeds the shared bucket: its flusher folds
    # the local count every flush_interval (here 10 ms), without any retry asking.
    shared = RedisRetryBudget(client(redis_url), key=key, flush_interval=0.01, min_per_second=0)
    reader = redis.Redis.from_url(redis_url)
    try:
        for _ in range(5):
            shared.deposit()
        tick = threading.Event()
        for _ in range(1000):  # up to 10 s on a loaded machine; usually one tick
            if reader.hget(key, "deposits") == b"5":
                break
            tick.wait(0.01)
        assert reader.hget(key, "deposits") == b"5"
        sent = shared._client.commands  # type: ignore[attr-defined]
        tick.wait(0.05)  # several more ticks with nothing new...
        assert shared._client.commands == sent  # type: ignore[attr-defined]  # ...send nothing
    finally:
        shared.close()
        reader.close()


def test_bad_configuration(redis_url: str) -> None:
    with pytest.raises(ValueError, match="key=''"):
        RedisRetryBudget(redis_url, key="", background=False)
    with pytest.raises(ValueError, match=r"capacity=0\.5: must be a number >= 1"):
        RedisRetryBudget(redis_url, key="k", capacity=0.5, background=False)
    with pytest.raises(ValueError, match=r"ratio=2: must be within \(0, 1\]"):
        RedisRetryBudget(redis_url, key="k", ratio=2, background=False)
    with pytest.raises(ValueError, match="flush_interval=0"):
        RedisRetryBudget(redis_url, key="k", flush_interval=0, background=False)
    with pytest.raises(TypeError, match="client=42"):
        RedisRetryBudget(42, key="k", background=False)  # type: ignore[arg-type]


def test_it_is_a_budget() -> None:
    shared = RedisRetryBudget("redis://127.0.0.1:1/0", key="k", background=False)
    assert isinstance(shared, suture.Budget)
    assert "RedisRetryBudget(key='k'" in repr(shared)
