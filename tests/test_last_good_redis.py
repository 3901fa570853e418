"""LastGood shared through Redis: one worker's good answer serves another's failure."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from redis_support import CountingRedis
from suture.contrib.redis_lastgood import RedisLastGoodStore
from suture.lastgood import LastGood
from suture.testing import FakeClock

pytestmark = pytest.mark.redis


@pytest.fixture
def prefix(redis_url: str, unique_name: str) -> Iterator[str]:
    prefix = f"suture-test:lastgood:{unique_name}:"
    yield prefix
    cleanup = redis.Redis.from_url(redis_url)
    for key in cleanup.scan_iter(f"{prefix}*"):
        cleanup.delete(key)
    cleanup.close()


def worker(redis_url: str, prefix: str, clock: FakeClock) -> tuple[LastGood, RedisLastGoodStore]:
    c = CountingRedis.from_url(redis_url, socket_timeout=1.0)
    store = RedisLastGoodStore(c, prefix=prefix, background=False)
    return LastGood(stale_for=60, store=store, clock=clock), store


def test_another_workers_answer_serves_a_failure(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    a, store_a = worker(redis_url, prefix, clock)
    b, _ = worker(redis_url, prefix, clock)
    commands = store_a._client.commands  # type: ignore[attr-defined]
    assert a.call(lambda k: {"rows": [1, 2]}, "list").value == {"rows": [1, 2]}
    assert store_a._client.commands == commands  # type: ignore[attr-defined]  # not yet
    store_a.flush()
    clock.advance(4)

    def down(k: str) -> object:
        raise ConnectionError("database unavailable")

    served = b.call(down, "list")
    assert served.stale and served.value == {"rows": [1, 2]}
    assert served.age == pytest.approx(4.0)


def test_the_newer_answer_wins_and_unshareable_values_stay_local(
    redis_url: str, prefix: str
) -> None:
    clock = FakeClock()
    a, store_a = worker(redis_url, prefix, clock)
    b, store_b = worker(redis_url, prefix, clock)
    b.call(lambda k: "b's old answer", "k")
    store_b.flush()
    clock.advance(10)
    a.call(lambda k: "a's newer answer", "k")
    store_a.flush()
    clock.advance(1)

    def down(k: str) -> str:
        raise TimeoutError

    assert b.call(down, "k").value == "a's newer answer"
    a.call(lambda k: object(), "odd")  # JSON cannot encode it: memory only
    store_a.flush()
    with pytest.raises(TimeoutError):
        b.call(down, "odd")


def test_redis_down_leaves_memory_serving_and_keeps_the_queue(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    a, store = worker(redis_url, prefix, clock)
    client: CountingRedis = store._client  # type: ignore[assignment]
    client.down = True
    a.call(lambda k: 1, "k")
    store.flush()  # fails: kept for the next flush

    def down(k: str) -> int:
        raise ConnectionError

    assert a.call(down, "k").value == 1  # own memory; load() answered None
    client.down = False
    store.flush()
    other, _ = worker(redis_url, prefix, clock)
    assert other.call(down, "k").value == 1


def test_background_writer_and_bad_store(redis_url: str, prefix: str) -> None:
    store = RedisLastGoodStore(redis_url, prefix=prefix, flush_interval=0.01)
    lg = LastGood(store=store, key=lambda k: k)
    lg.call(lambda k: [1], "k")
    store.close()  # stops the writer and writes what is left
    assert redis.Redis.from_url(redis_url).get(f"{prefix}k") is not None
    with pytest.raises(TypeError, match=r"^store="):
        LastGood(store=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^client="):
        RedisLastGoodStore(3)  # type: ignore[arg-type]
