"""Retry: one table of scenarios, run on both sync and async; plus the edges."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

import suture
from suture import Retry, RetryBudget, RetryGaveUp, RetryScheduled
from suture.testing import FakeClock, capture_events, no_wait


def http_error(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "https://api.example/items")
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError(f"HTTP {status}", request=request, response=response)


class Script:
    """A callable that plays a list of outcomes: exceptions are raised, values returned."""

    def __init__(self, outcomes: Sequence[object]) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def step(self) -> object:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def run(mode: str, policy: Retry, script: Script) -> object:
    """Run ``script`` under ``policy`` as a decorated def or async def."""
    if mode == "sync":

        @policy
        def call() -> object:
            return script.step()

        return call()

    @policy
    async def acall() -> object:
        return script.step()

    return asyncio.run(acall())


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Case:
    id: str
    outcomes: list[object]
    policy: dict[str, Any]
    result: object = None
    raises: type[BaseException] | None = None
    calls: int = 1
    sleeps: list[float] | None = None


NO_JITTER = {"jitter": "none", "initial_delay": 1.0, "max_delay": 8.0}

CASES = [
    Case("first try", ["ok"], {}, result="ok", calls=1, sleeps=[]),
    Case(
        "heals on third",
        [ConnectionError(), TimeoutError(), "ok"],
        NO_JITTER,
        result="ok",
        calls=3,
        sleeps=[1.0, 2.0],
    ),
    Case(
        "exhausted",
        [ConnectionError()] * 5,
        {**NO_JITTER, "attempts": 4},
        raises=ConnectionError,
        calls=4,
        sleeps=[1.0, 2.0, 4.0],
    ),
    Case("400 not retried", [http_error(400)], NO_JITTER, raises=httpx.HTTPStatusError, calls=1),
    Case("422 not retried", [http_error(422)], NO_JITTER, raises=httpx.HTTPStatusError, calls=1),
    Case("500 retried", [http_error(500), "ok"], NO_JITTER, result="ok", calls=2, sleeps=[1.0]),
    Case("503 retried", [http_error(503), "ok"], NO_JITTER, result="ok", calls=2, sleeps=[1.0]),
    Case("408 retried", [http_error(408), "ok"], NO_JITTER, result="ok", calls=2, sleeps=[1.0]),
    Case("429 retried", [http_error(429), "ok"], NO_JITTER, result="ok", calls=2, sleeps=[1.0]),
    Case(
        "Retry-After seconds wins",
        [http_error(503, {"Retry-After": "5"}), "ok"],
        NO_JITTER,
        result="ok",
        calls=2,
        sleeps=[5.0],
    ),
    Case(
        "Retry-After longer than max_delay gives up at once",
        [http_error(429, {"Retry-After": "120"}), "ok"],
        NO_JITTER,
        raises=httpx.HTTPStatusError,
        calls=1,
        sleeps=[],
    ),
    Case(
        "Retry-After equal to max_delay is waited",
        [http_error(429, {"Retry-After": "8"}), "ok"],
        NO_JITTER,
        result="ok",
        calls=2,
        sleeps=[8.0],
    ),
    Case(
        "Retry-After past deadline gives up at once",
        [http_error(503, {"Retry-After": "6"}), "ok"],
        {**NO_JITTER, "deadline": 5.0},
        raises=httpx.HTTPStatusError,
        calls=1,
        sleeps=[],
    ),
    Case(
        "deadline stops before a wait that would end past it",
        [ConnectionError()] * 10,
        {**NO_JITTER, "attempts": 10, "deadline": 5.0},
        raises=ConnectionError,
        calls=3,
        sleeps=[1.0, 2.0],  # 1 + 2 = 3; the next wait (4) would end at 7 > 5
    ),
    Case(
        "no attempt starts exactly at the deadline",
        [ConnectionError()] * 10,
        {**NO_JITTER, "attempts": 10, "deadline": 3.0},
        raises=ConnectionError,
        calls=2,
        sleeps=[1.0],  # after 1 s, a 2 s wait would end at the deadline: give up now
    ),
    Case(
        "non-transient after transient propagates",
        [ConnectionError(), KeyError("k")],
        NO_JITTER,
        raises=KeyError,
        calls=2,
        sleeps=[1.0],
    ),
    Case(
        "on= exception types",
        [ValueError(), "ok"],
        {**NO_JITTER, "on": ValueError},
        result="ok",
        calls=2,
    ),
    Case(
        "on= tuple excludes others",
        [ConnectionError()],
        {**NO_JITTER, "on": (ValueError, KeyError)},
        raises=ConnectionError,
        calls=1,
    ),
    Case(
        "BreakerOpen is never retried",
        [suture.BreakerOpen("db", 1.0), "ok"],
        NO_JITTER,
        raises=suture.BreakerOpen,
        calls=1,
    ),
    Case(
        "BreakerOpen is never retried, even when on= says Exception",
        [suture.BreakerOpen("db", 1.0), "ok"],
        {**NO_JITTER, "on": Exception},
        raises=suture.BreakerOpen,
        calls=1,
    ),
    Case(
        "Overloaded is never retried",
        [suture.Overloaded("CRITICAL", 2.0), "ok"],
        {**NO_JITTER, "on": Exception},
        raises=suture.Overloaded,
        calls=1,
    ),
    Case(
        "timedelta delays",
        [ConnectionError(), "ok"],
        {"jitter": "none", "initial_delay": timedelta(milliseconds=250)},
        result="ok",
        calls=2,
        sleeps=[0.25],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_table(case: Case, mode: str) -> None:
    clock = FakeClock()
    policy = Retry(clock=clock, **case.policy)
    script = Script(case.outcomes)
    if case.raises is not None:
        with pytest.raises(case.raises):
            run(mode, policy, script)
    else:
        assert run(mode, policy, script) == case.result
    assert script.calls == case.calls
    if case.sleeps is not None:
        assert clock.sleeps == pytest.approx(case.sleeps)


def test_retry_after_http_date(mode: str) -> None:
    clock = FakeClock(wall_start=1_700_000_000.0)
    date = "Tue, 14 Nov 2023 22:13:27 GMT"  # 7 s after the clock's wall time
    policy = Retry(clock=clock, jitter="none", max_delay=30)
    script = Script([http_error(503, {"Retry-After": date}), "ok"])
    assert run(mode, policy, script) == "ok"
    assert clock.sleeps == pytest.approx([7.0])


def test_original_exception_reraised_with_note(mode: str) -> None:
    clock = FakeClock()
    error = ConnectionResetError("peer reset")
    policy = Retry(clock=clock, attempts=3, jitter="none")
    with pytest.raises(ConnectionResetError) as info:
        run(mode, policy, Script([error]))
    assert info.value is error
    notes = getattr(info.value, "__notes__", [])
    assert len(notes) == 1
    assert "after 3 attempt(s) over 3.000s" in notes[0]
    assert "all attempts used" in notes[0]


def test_non_transient_first_error_has_no_note(mode: str) -> None:
    error = http_error(404)
    with pytest.raises(httpx.HTTPStatusError) as info:
        run(mode, Retry(clock=FakeClock()), Script([error]))
    assert info.value is error
    assert not getattr(info.value, "__notes__", [])


def test_no_wait_after_last_attempt_and_no_event_about_it(mode: str) -> None:
    clock = FakeClock()
    with capture_events() as events, pytest.raises(ConnectionError):
        run(mode, Retry(clock=clock, attempts=2, jitter="none"), Script([ConnectionError()]))
    scheduled = events.of(RetryScheduled)
    assert [e.attempt for e in scheduled] == [1]
    assert clock.sleeps == [1.0]
    gave_up = events.of(RetryGaveUp)
    assert len(gave_up) == 1
    assert gave_up[0].reason == "attempts"
    assert gave_up[0].attempts == 2


def test_events_carry_name_attempt_delay_error_elapsed(mode: str) -> None:
    clock = FakeClock()
    err = ConnectionError("down")
    with capture_events() as events:
        run(mode, Retry(clock=clock, jitter="none", name="fetch"), Script([err, err, "ok"]))
    first, second = events.of(RetryScheduled)
    assert (first.name, first.attempt, first.delay, first.error, first.elapsed) == (
        "fetch",
        1,
        1.0,
        err,
        0.0,
    )
    assert (second.attempt, second.delay, second.elapsed) == (2, 2.0, 1.0)


def test_event_name_defaults_to_qualname() -> None:
    clock = FakeClock()
    script = Script([ConnectionError(), "ok"])

    @suture.retry(clock=clock)
    def fetch_items() -> object:
        return script.step()

    with capture_events() as events:
        fetch_items()
    assert events.of(RetryScheduled)[0].name.endswith("fetch_items")


def test_on_retry_hook_receives_the_event(mode: str) -> None:
    seen: list[RetryScheduled] = []
    policy = Retry(clock=FakeClock(), on_retry=seen.append, jitter="none")
    run(mode, policy, Script([TimeoutError(), "ok"]))
    assert len(seen) == 1
    assert seen[0].delay == 1.0


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(1), GeneratorExit()])
def test_cancellation_like_errors_are_never_retried(error: BaseException) -> None:
    script = Script([error, "ok"])
    with pytest.raises(type(error)):
        run("sync", Retry(clock=FakeClock()), script)
    assert script.calls == 1


async def test_asyncio_cancellation_is_not_retried_or_swallowed() -> None:
    calls = 0
    started = asyncio.Event()

    @suture.retry(clock=FakeClock(), attempts=5)
    async def slow() -> None:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(slow())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1


async def test_async_deadline_cuts_an_attempt_that_runs_past_it() -> None:
    # Real loop time, but tiny: the attempt sleeps "forever", the deadline is 50 ms.
    calls = 0

    @suture.retry(deadline=0.05, attempts=5)
    async def hang() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(3600)

    with pytest.raises(TimeoutError) as info:
        await hang()
    assert calls == 1
    assert "deadline" in info.value.__notes__[0]


def test_methods_and_bare_decorator() -> None:
    class Client:
        def __init__(self) -> None:
            self.script = Script([ConnectionError(), "ok"])

        @suture.retry
        def get(self) -> object:
            return self.script.step()

        @suture.retry(attempts=2)
        async def aget(self) -> object:
            return self.script.step()

    c = Client()
    with no_wait():
        assert c.get() == "ok"
        c.script = Script([ConnectionError(), "ok"])
        assert asyncio.run(c.aget()) == "ok"
    assert Client.get.__name__ == "get"


def test_no_wait_skips_waits_but_counts_attempts() -> None:
    clock = FakeClock()
    script = Script([ConnectionError()] * 4)
    with no_wait(), pytest.raises(ConnectionError):
        run("sync", Retry(clock=clock, attempts=4), script)
    assert script.calls == 4
    assert clock.sleeps == []


def test_call_and_acall(mode: str) -> None:
    policy = Retry(clock=FakeClock(), jitter="none")
    script = Script([ConnectionError(), "ok"])
    if mode == "sync":
        assert policy.call(script.step) == "ok"
        return

    async def step() -> object:
        return script.step()

    assert asyncio.run(policy.acall(step)) == "ok"


# --- block form ---------------------------------------------------------------------


def run_block(mode: str, policy: Retry, body: Any) -> None:
    """``for attempt in policy.attempts(): with attempt: body(attempt)``, or with ``async for``."""
    if mode == "sync":
        for attempt in policy.attempts():
            with attempt:
                body(attempt)
        return

    async def main() -> None:
        async for attempt in policy.attempts():
            with attempt:
                body(attempt)

    asyncio.run(main())


def test_block_form(mode: str) -> None:
    clock = FakeClock()
    policy = Retry(clock=clock, jitter="none", attempts=4)
    script = Script([ConnectionError(), ConnectionError(), "ok"])
    results = []
    numbers = []

    def body(attempt: suture.Attempt) -> None:
        numbers.append(attempt.number)
        results.append(script.step())

    run_block(mode, policy, body)
    assert results == ["ok"]
    assert numbers == [1, 2, 3]
    assert clock.sleeps == [1.0, 2.0]


def test_block_form_gives_up_with_the_original_error() -> None:
    policy = Retry(clock=FakeClock(), attempts=2)
    error = TimeoutError("slow")
    with pytest.raises(TimeoutError) as info:
        for attempt in policy.attempts():
            with attempt:
                raise error
    assert info.value is error
    assert "2 attempt(s)" in info.value.__notes__[0]


def test_block_form_non_transient_propagates_at_once() -> None:
    runs = 0
    with pytest.raises(ValueError, match="bad"):
        for attempt in Retry(clock=FakeClock()).attempts():
            with attempt:
                runs += 1
                raise ValueError("bad")
    assert runs == 1


async def test_block_form_cancellation_propagates_untouched() -> None:
    clock = FakeClock()
    script = Script([ConnectionError(), asyncio.CancelledError(), "ok"])
    with pytest.raises(asyncio.CancelledError) as info:
        async for attempt in Retry(clock=clock, jitter="none").attempts():
            with attempt:
                script.step()
    assert script.calls == 2  # not retried
    assert not getattr(info.value, "__notes__", [])  # and not annotated either


def test_attempts_is_a_number_too() -> None:
    policy = Retry(attempts=7)
    assert policy.attempts == 7
    assert int(policy.attempts) + 1 == 8
    assert repr(policy.attempts) == "7"


# --- budget -------------------------------------------------------------------------


def test_budget_refuses_retries_when_drained_and_refills_on_successes() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, capacity=10, min_per_second=0, clock=clock)
    policy = Retry(clock=clock, budget=budget, attempts=3, jitter="none")

    failing = Script([ConnectionError()])
    with capture_events() as events, pytest.raises(ConnectionError) as info:
        run("sync", policy, failing)
    assert failing.calls == 1  # empty bucket: not a single retry
    assert "retry budget is empty" in info.value.__notes__[0]
    assert len(events.of(suture.RetryBudgetExhausted)) == 1

    for _ in range(4):  # 4 successes x 0.5 = 2 tokens
        run("sync", policy, Script(["ok"]))
    flaky = Script([ConnectionError(), ConnectionError(), "ok"])
    assert run("sync", policy, flaky) == "ok"
    assert flaky.calls == 3
    stats = budget.stats()
    assert (stats.spent, stats.refused, stats.deposits) == (2, 1, 5)


def test_budget_floor_refills_with_time() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.1, min_per_second=2, clock=clock)
    assert budget.try_spend()  # the reserve starts with one token
    assert not budget.try_spend()
    clock.advance(0.5)  # +1 token at 2/s
    assert budget.try_spend()
    assert not budget.try_spend()


def test_budget_ten_deposits_of_a_tenth_make_a_token() -> None:
    # Folded one at a time, 0.1 ten times sums to 0.9999999999999999 in floats.
    budget = RetryBudget(ratio=0.1, min_per_second=0, clock=FakeClock())
    for _ in range(9):
        budget.deposit()
        assert not budget.try_spend()
    budget.deposit()
    assert budget.try_spend()


def test_budget_slow_floor_starts_with_one_token() -> None:
    clock = FakeClock()
    budget = RetryBudget(min_per_second=0.1, clock=clock)  # one retry per 10 s
    assert budget.try_spend()  # a fresh, quiet service can retry at once
    assert not budget.try_spend()
    clock.advance(10)
    assert budget.try_spend()


def test_any_budget_protocol_is_accepted() -> None:
    class Ledger:
        """A user's own budget: only the four members of suture.Budget."""

        name = "ledger"

        def __init__(self) -> None:
            self.deposits = 0
            self.asks = 0

        def deposit(self) -> None:
            self.deposits += 1

        def try_spend(self) -> bool:
            self.asks += 1
            return self.asks == 1

        def stats(self) -> suture.budget.BudgetStats:
            return suture.budget.BudgetStats(
                name=self.name,
                tokens=0.0,
                reserve=0.0,
                deposits=self.deposits,
                spent=1,
                refused=self.asks - 1,
            )

    ledger = Ledger()
    assert isinstance(ledger, suture.Budget)
    policy = Retry(clock=FakeClock(), budget=ledger, attempts=5, jitter="none")
    flaky = Script([ConnectionError(), ConnectionError(), "ok"])
    with capture_events() as events, pytest.raises(ConnectionError):
        run("sync", policy, flaky)
    assert (flaky.calls, ledger.asks, ledger.deposits) == (2, 2, 0)
    assert events.of(suture.RetryBudgetExhausted)[0].budget == "ledger"
    assert run("sync", policy, Script(["ok"])) == "ok"
    assert ledger.deposits == 1


def test_budget_is_capped() -> None:
    budget = RetryBudget(ratio=1.0, capacity=3, min_per_second=0, clock=FakeClock())
    for _ in range(100):
        budget.deposit()
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]


def test_budget_is_thread_safe() -> None:
    budget = RetryBudget(ratio=0.5, capacity=1_000_000, min_per_second=0, clock=FakeClock())

    def deposit() -> None:
        for _ in range(20_000):
            budget.deposit()

    threads = [threading.Thread(target=deposit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert budget.stats().deposits == 160_000
    granted = 0

    def spend() -> None:
        nonlocal granted
        local = 0
        for _ in range(20_000):
            local += budget.try_spend()
        with lock:
            granted += local

    lock = threading.Lock()
    threads = [threading.Thread(target=spend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert granted == 80_000  # exactly the tokens deposited, no more, none lost


# --- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"attempts": 0}, ValueError, "attempts=0: must be an integer >= 1"),
        ({"attempts": 2.5}, TypeError, "attempts=2.5: expected an integer"),
        ({"initial_delay": -1}, ValueError, "initial_delay=-1: must be 0 seconds or more"),
        ({"max_delay": -0.5}, ValueError, "max_delay=-0.5"),
        ({"initial_delay": 10, "max_delay": 5}, ValueError, "max_delay=5: must be >= "),
        ({"multiplier": 0.9}, ValueError, "multiplier=0.9: must be a number >= 1"),
        ({"jitter": "wild"}, ValueError, "jitter='wild': must be one of"),
        ({"deadline": 0}, ValueError, "deadline=0: must be greater than 0"),
        ({"deadline": -3}, ValueError, "deadline=-3: must be greater than 0"),
        ({"on": 42}, TypeError, "on=42"),
        ({"on": (ValueError, 3)}, TypeError, "every item must be an exception type"),
        ({"budget": object()}, TypeError, "budget="),
        ({"rand": 3}, TypeError, r"rand=3: expected a callable returning a float in \[0, 1\)"),
        ({"name": 3}, TypeError, "name=3: expected a string or None, got int"),
        ({"clock": 3}, TypeError, "clock=3: expected a suture.Clock"),
    ],
)
def test_bad_configuration(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Retry(**kwargs)


def test_budget_bad_configuration() -> None:
    with pytest.raises(ValueError, match=r"ratio=0: must be within \(0, 1\]"):
        RetryBudget(ratio=0)
    with pytest.raises(ValueError, match="capacity=0: must be a number >= 1"):
        RetryBudget(capacity=0)
    with pytest.raises(ValueError, match=r"capacity=0\.5: must be a number >= 1"):
        RetryBudget(capacity=0.5)  # could never hold one token
    with pytest.raises(ValueError, match="capacity=inf: must be a finite number"):
        RetryBudget(capacity=float("inf"))
    with pytest.raises(ValueError, match="min_per_second=-1: must be a number >= 0"):
        RetryBudget(min_per_second=-1)
    with pytest.raises(TypeError, match="capacity='10': expected a number, got str"):
        RetryBudget(capacity="10")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name=3: expected a string, got int"):
        RetryBudget(name=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"clock=None: expected a suture\.Clock"):
        RetryBudget(clock=None)  # type: ignore[arg-type]


def test_policy_is_immutable_and_replaceable() -> None:
    policy = Retry(attempts=3)
    with pytest.raises(AttributeError, match="immutable"):
        policy.max_delay = 3.0  # type: ignore[misc]
    other = policy.replace(attempts=5)
    assert other.attempts == 5
    assert policy.attempts == 3
    assert policy == Retry(attempts=3, rand=policy.rand)
    assert "attempts=3" in repr(policy)


def test_decorating_a_non_callable_is_an_error() -> None:
    with pytest.raises(TypeError, match="expected a function"):
        Retry()(42)  # type: ignore[call-overload]


def test_event_messages_name_an_error_without_text() -> None:
    event = RetryScheduled(
        name="f", attempt=1, attempts=3, delay=1.0, error=TimeoutError(), elapsed=0.0
    )
    assert "failed with TimeoutError; next attempt in 1.000s" in event.message()
    event2 = RetryScheduled(
        name="f", attempt=1, attempts=3, delay=1.0, error=ConnectionError("refused"), elapsed=0.0
    )
    assert "failed with ConnectionError: refused;" in event2.message()


# --- the option list and the clock --------------------------------------------------


def test_retry_options_are_the_dataclass_fields() -> None:
    from suture.retrying import RetryOptions

    fields = [f.name for f in dataclasses.fields(Retry) if f.init]
    assert list(RetryOptions.__annotations__) == fields
    assert Retry().replace(attempts=5, deadline=timedelta(seconds=3)) == Retry(
        attempts=5, deadline=3.0
    )


def test_options_are_normalised_once() -> None:
    policy = Retry(initial_delay=timedelta(milliseconds=500), deadline=timedelta(seconds=2))
    assert (policy.initial_delay, policy.deadline) == (0.5, 2.0)
    assert policy.on(ConnectionError()) and not policy.on(ValueError())
    assert Retry(on=KeyError).on(KeyError()) and not Retry(on=KeyError).on(ValueError())
    assert policy == Retry(initial_delay=0.5, deadline=2)
    assert hash(policy) == hash(Retry(initial_delay=0.5, deadline=2))
    with pytest.raises(AttributeError, match="immutable"):
        del policy.name


class CountingClock(FakeClock):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def now(self) -> float:
        self.reads += 1
        return super().now()


def test_the_success_path_reads_no_clock_without_a_deadline(mode: str) -> None:
    clock = CountingClock()
    assert run(mode, Retry(clock=clock), Script(["ok"])) == "ok"
    assert clock.reads == 0
    assert run(mode, Retry(clock=clock, budget=RetryBudget()), Script(["ok"])) == "ok"
    assert clock.reads == 0
    assert run(mode, Retry(clock=clock, deadline=5), Script(["ok"])) == "ok"
    assert clock.reads == 1


class SlowFirst(Script):
    """Fails after ``took`` seconds of the fake clock, then succeeds."""

    def __init__(self, clock: FakeClock, took: float) -> None:
        super().__init__([ConnectionError("slow failure"), "ok"])
        self.clock = clock
        self.took = took

    def step(self) -> object:
        if self.calls == 0:
            self.clock.advance(self.took)
        return super().step()


def test_elapsed_counts_from_the_first_attempt_with_a_deadline(mode: str) -> None:
    clock = FakeClock()
    policy = Retry(clock=clock, jitter="none", deadline=10)
    with capture_events() as events:
        assert run(mode, policy, SlowFirst(clock, 3.0)) == "ok"
    assert [e.elapsed for e in events.of(RetryScheduled)] == [3.0]


def test_the_deadline_counts_the_first_attempt(mode: str) -> None:
    clock = FakeClock()
    policy = Retry(clock=clock, jitter="none", deadline=4)
    script = SlowFirst(clock, 3.0)
    with pytest.raises(ConnectionError) as info:
        run(mode, policy, script)  # 3 s gone + a 1 s wait would end at the deadline
    assert script.calls == 1
    assert "over 3.000s" in info.value.__notes__[0]


def test_elapsed_counts_from_the_first_failure_without_a_deadline(mode: str) -> None:
    clock = FakeClock()
    with capture_events() as events:
        assert run(mode, Retry(clock=clock, jitter="none"), SlowFirst(clock, 3.0)) == "ok"
    assert [e.elapsed for e in events.of(RetryScheduled)] == [0.0]
