"""Contention simulation: which jitter makes N clients finish with the fewest calls?

The model of AWS's "Exponential Backoff and Jitter" study: N clients each want
to write once to one resource under optimistic concurrency. A call reads the
version when it starts and commits ``call_time`` later; it succeeds only if no
other commit landed in between, else the client backs off and tries again.
All clients start at the same instant (the moment they failed together).

Every schedule is suture's own ``Backoff.delays`` (the code a retry uses);
"decorrelated (first wait = initial)" is the schedule suture had before it
followed the published formula, kept here to show what that cost.

Printed per jitter kind: calls (the work the resource saw) and the time until
the last client finished, as the mean over many seeded runs, and each one's
ratio to full jitter. The published ordering by work is
full ~ decorrelated < equal << none.
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
from collections.abc import Callable, Iterator

from suture.backoff import Backoff, Jitter

Schedule = Callable[[random.Random], Iterator[float]]


def suture_schedule(jitter: Jitter, *, initial: float, cap: float) -> Schedule:
    backoff = Backoff(initial=initial, max_delay=cap, multiplier=2.0, jitter=jitter)
    return lambda rng: backoff.delays(10_000, rng.random)


def old_decorrelated(*, initial: float, cap: float) -> Schedule:
    """suture before issue 17: the first wait exactly ``initial``, then as published."""

    def delays(rng: random.Random) -> Iterator[float]:
        previous = initial
        yield previous
        while True:
            previous = min(cap, initial + (previous * 3 - initial) * rng.random())
            yield previous

    return delays


def simulate(schedule: Schedule, *, clients: int, call_time: float, seed: int) -> tuple[int, float]:
    """(calls made, time the last client finished) for one run."""
    rng = random.Random(seed)
    waits = [schedule(rng) for _ in range(clients)]
    # Events: (commit time, start time, client). Every client starts at 0.
    events = [(call_time, 0.0, c) for c in range(clients)]
    heapq.heapify(events)
    last_commit = -1.0
    calls = clients
    finished = 0.0
    while events:
        end, start, client = heapq.heappop(events)
        if last_commit <= start:  # nobody committed since this call read the version
            last_commit = end
            finished = end
            continue
        retry_at = end + next(waits[client])
        calls += 1
        heapq.heappush(events, (retry_at + call_time, retry_at, client))
    return calls, finished


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    initial, cap, call_time = 1.0, 1_000.0, 1.0
    kinds: list[tuple[str, Schedule]] = [
        (kind, suture_schedule(kind, initial=initial, cap=cap))
        for kind in ("full", "decorrelated", "equal", "none")
    ]
    kinds.insert(2, ("decorrelated (first = initial)", old_decorrelated(initial=initial, cap=cap)))
    print(
        f"{args.clients} clients, one optimistic-concurrency resource, call {call_time:g} ms, "
        f"backoff initial {initial:g} ms cap {cap:g} ms; mean of {args.runs} seeded runs"
    )
    print(f"{'jitter':32} {'calls':>9} {'x full':>7} {'time ms':>9} {'x full':>7}")
    results: dict[str, tuple[float, float]] = {}
    for name, schedule in kinds:
        runs = [
            simulate(schedule, clients=args.clients, call_time=call_time, seed=seed)
            for seed in range(args.runs)
        ]
        results[name] = (
            statistics.fmean(c for c, _ in runs),
            statistics.fmean(t for _, t in runs),
        )
    full_calls, full_time = results["full"]
    for name, (calls, took) in results.items():
        work, slower = calls / full_calls, took / full_time
        print(f"{name:32} {calls:9.0f} {work:6.2f}x {took:9.0f} {slower:6.2f}x")
    new, old = results["decorrelated"][0], results["decorrelated (first = initial)"][0]
    print("published ordering by work: full ~ decorrelated < equal << none")
    print(f"decorrelated as published vs first wait = initial: {old / new:.2f}x fewer calls")


if __name__ == "__main__":
    main()
