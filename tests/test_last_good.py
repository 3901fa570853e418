"""LastGood: last-known-good answers served stale, with their age, within bounds."""

from __future__ import annotations

import asyncio
import math

import pytest

from suture import BreakerOpen, Overloaded
from suture.lastgood import LastGood, Served, last_served
from suture.testing import FakeClock


class Flaky:
    """Returns its next answer, or raises its next error."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: BaseException | None = None
        self.value = 0

    def __call__(self, key: str) -> int:
        self.calls += 1
        if self.error is not None:
            raise self.error
        self.value += 1
        return self.value


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"ttl": -1}, "ttl"),
        ({"ttl": math.nan}, "ttl"),
        ({"ttl": math.inf}, "ttl"),
        ({"stale_for": 0}, "stale_for"),
        ({"stale_for": -5}, "stale_for"),
        ({"stale_for": math.inf}, "stale_for"),
        ({"max_entries": 0}, "max_entries"),
        ({"key": "list"}, "key"),
        ({"on": 3}, "on"),
        ({"clock": None}, "clock"),
    ],
)
def test_bad_configuration_names_the_parameter(kwargs: dict[str, object], param: str) -> None:
    with pytest.raises((ValueError, TypeError), match=rf"^{param}="):
        LastGood(**kwargs)  # type: ignore[arg-type]


def test_a_key_that_is_not_a_string_is_an_error() -> None:
    lg = LastGood(key=lambda x: x)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match=r"returned 3 \(int\): expected a string"):
        lg.call(lambda x: x, 3)
    with pytest.raises(TypeError, match=r"^key=4"):
        lg.remember(4, "x")  # type: ignore[arg-type]
    plain = LastGood()
    with pytest.raises(TypeError, match="pass key="):
        plain.call(lambda x: x, object())


def test_serves_the_last_good_answer_marked_stale_with_its_age() -> None:
    clock = FakeClock()
    lg = LastGood(stale_for=60, clock=clock)
    flaky = Flaky()
    load = lg(flaky)
    assert load("a") == 1
    assert last_served() == Served(1, "'a'", stale=False, age=0.0)
    clock.advance(12.5)
    flaky.error = ConnectionError("database is down")
    assert load("a") == 1
    served = last_served()
    assert served is not None
    assert served.stale and served.age == 12.5
    assert isinstance(served.error, ConnectionError)
    assert served.as_dict() == {
        "key": "'a'",
        "stale": True,
        "age": 12.5,
        "error": "ConnectionError",
    }
    # another key has nothing to stand in: the error propagates
    with pytest.raises(ConnectionError):
        load("b")


def test_expires_after_ttl_plus_stale_for() -> None:
    clock = FakeClock()
    lg = LastGood(stale_for=10, clock=clock)
    flaky = Flaky()
    lg.call(flaky, "k")
    flaky.error = TimeoutError()
    clock.advance(10)
    assert lg.call(flaky, "k").stale
    clock.advance(0.001)
    with pytest.raises(TimeoutError):
        lg.call(flaky, "k")
    assert len(lg) == 0  # forgotten, not just hidden


def test_only_the_failures_it_handles() -> None:
    lg = LastGood(clock=FakeClock())
    flaky = Flaky()
    lg.call(flaky, "k")
    flaky.error = ValueError("a bug, not an outage")
    with pytest.raises(ValueError, match="a bug"):
        lg.call(flaky, "k")
    for error in (BreakerOpen("db", 3.0), Overloaded("full", 1.0), ConnectionResetError()):
        flaky.error = error
        assert lg.call(flaky, "k").error is error
    only_timeouts = LastGood(on=TimeoutError, clock=FakeClock())
    only_timeouts.remember("'k'", 5)
    flaky.error = ConnectionError()
    with pytest.raises(ConnectionError):
        only_timeouts.call(flaky, "k")


def test_ttl_serves_fresh_from_memory_without_calling() -> None:
    clock = FakeClock()
    lg = LastGood(ttl=5, stale_for=30, clock=clock)
    flaky = Flaky()
    assert lg.call(flaky, "k").value == 1
    clock.advance(4)
    served = lg.call(flaky, "k")
    assert (served.value, served.stale, served.age, flaky.calls) == (1, False, 4.0, 1)
    clock.advance(2)
    assert lg.call(flaky, "k").value == 2
    assert flaky.calls == 2


def test_memory_is_bounded() -> None:
    lg = LastGood(max_entries=100, clock=FakeClock())
    for i in range(10_000):
        lg.call(str, i)
    assert len(lg) == 100
    assert lg.lookup("9999") is not None
    assert lg.lookup("0") is None


def test_cancellation_is_not_served_from_memory() -> None:
    lg = LastGood(on=BaseException, clock=FakeClock())
    lg.remember("'k'", 1)

    def interrupted(key: str) -> int:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lg.call(interrupted, "k")


async def test_async_and_the_context_of_each_task() -> None:
    clock = FakeClock()
    lg = LastGood(stale_for=60, key=lambda name: name, clock=clock)
    down = False

    @lg
    async def fetch(name: str) -> str:
        await asyncio.sleep(0)
        if down:
            raise ConnectionError
        return f"{name}@{clock.now()}"

    assert await fetch("x") == "x@0.0"
    clock.advance(3)
    down = True

    async def read(name: str) -> tuple[str, Served[object] | None]:
        value = await fetch(name)
        return value, last_served()

    (value, served), (_, other) = await asyncio.gather(read("x"), read("x"))
    assert value == "x@0.0"
    assert served is not None and served.stale and served.age == 3.0
    assert other is not None and other.stale
    with pytest.raises(ConnectionError):
        await fetch("y")

    async def broken(name: str) -> str:
        raise ConnectionError(name)

    served2 = await lg.acall(broken, "x")  # the same memory, through acall
    assert served2.stale and served2.value == "x@0.0"


def test_a_stale_answer_is_an_event() -> None:
    from suture.events import StaleServed
    from suture.testing import capture_events

    clock = FakeClock()
    lg = LastGood(name="orders", key=lambda k: k, clock=clock)
    flaky = Flaky()
    lg.call(flaky, "k")
    clock.advance(5)
    flaky.error = TimeoutError()
    with capture_events() as events:
        lg.call(flaky, "k")
    (event,) = events.of(StaleServed)
    assert (event.name, event.key, event.age) == ("orders", "k", 5.0)
    assert "served 'k' from 5.0s ago instead of TimeoutError" in event.message()
