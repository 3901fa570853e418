"""Synthetic traffic: the demo's own API called at a fixed rate, in-process.

:class:`Traffic` is the background load of ``suture demo --traffic N`` (and,
paused, of ``--chaos``): it calls the app's own API through
:class:`httpx.ASGITransport`, so the dashboard moves when somebody clicks the
chaos buttons. :class:`Pacer` hands out request slots at a bounded rate; the
chaos harness paces its workers with it too.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from suture._config import check_fraction, check_int
from suture.clock import SYSTEM_CLOCK, Clock

__all__ = ["ASSISTANCE", "CAPTURE", "MAX_TRAFFIC", "TRAFFIC_READS", "Pacer", "Traffic"]

#: The routes the synthetic clients call most: the assistance queue, and spam capture.
ASSISTANCE = "/api/manager/assistance"
CAPTURE = "/api/manager/spam/capture"
#: Traffic's ceiling in requests per second (``suture demo --traffic``).
MAX_TRAFFIC = 200.0


class Pacer:
    """Hands out request slots no faster than ``rate`` per second."""

    def __init__(self, rate: float, clock: Clock) -> None:
        self.interval = 1.0 / rate
        self.clock = clock
        self.next = clock.now()

    async def wait(self) -> float:
        now = self.clock.now()
        slot = max(now, self.next)
        self.next = slot + self.interval
        if slot > now:
            await self.clock.asleep(slot - now)
        return slot


#: What :class:`Traffic` reads, with weights: what a manager's page loads.
TRAFFIC_READS: tuple[tuple[str, dict[str, Any], int], ...] = (
    (ASSISTANCE, {}, 8),
    ("/api/manager/spam", {"limit": 50}, 1),
    ("/api/messages", {"status": "READY", "limit": 20}, 1),
)


class Traffic:
    """Calls an ASGI app's own API at ``rate`` requests per second, in-process, until cancelled.

    Reads only by default (the assistance queue mostly, the spam review queue
    and the inbox), so a visitor's own clicks still find the data as seeded;
    ``spam_share`` adds spam captures (low priority: the first to be shed).
    Open loop (a request starts every ``1/rate`` s whatever the previous ones
    do), with at most ``max_in_flight`` requests waiting at once: when the
    service is slow the surplus is skipped and counted, not queued. A rate of
    0 pauses it; :meth:`set_rate` changes the rate while it runs (the demo's
    dashboard toggle).
    """

    def __init__(
        self,
        app: Any,
        rate: float,
        *,
        spam_share: float = 0.0,
        max_in_flight: int = 32,
        clock: Clock = SYSTEM_CLOCK,
        rand: Callable[[], float] | None = None,
    ) -> None:
        check_fraction("spam_share", spam_share, allow_zero=True)
        check_int("max_in_flight", max_in_flight, minimum=1)
        self.app = app
        self.rate = self._check_rate(rate)
        self.spam_share = spam_share
        self.max_in_flight = max_in_flight
        self.clock = clock
        self._rand = rand or random.Random().random
        self.sent = 0
        self.skipped = 0
        self.statuses: Counter[int] = Counter()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._capturing = False
        self._answered: asyncio.Event | None = None
        self._resumed: asyncio.Event | None = None
        self._pacer: Pacer | None = None

    @staticmethod
    def _check_rate(rate: float) -> float:
        if isinstance(rate, bool) or not (
            isinstance(rate, int | float) and 0 <= rate <= MAX_TRAFFIC
        ):
            raise ValueError(f"rate={rate!r}: must be from 0 (paused) to {MAX_TRAFFIC:g}")
        return float(rate)

    def set_rate(self, rate: float) -> None:
        """Requests per second from now on (0 pauses); call it from the event loop's thread."""
        self.rate = self._check_rate(rate)
        if self.rate > 0:
            if self._pacer is not None:
                self._pacer.interval = 1.0 / self.rate
                self._pacer.next = min(self._pacer.next, self.clock.now() + self._pacer.interval)
            if self._resumed is not None:
                self._resumed.set()

    async def wait_until(self, predicate: Callable[[Traffic], bool]) -> None:
        """Wait until ``predicate(self)`` holds, checked after every answer (wrap in a timeout)."""
        while not predicate(self):
            self._answered = answered = asyncio.Event()
            await answered.wait()

    async def run(self) -> None:
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        # Its own credential (Service.traffic_token), on a loopback Host the app answers.
        token = getattr(getattr(self.app.state, "service", None), "traffic_token", None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", timeout=30.0, headers=headers
        ) as client:
            try:
                while True:
                    if self.rate <= 0:  # paused until set_rate
                        self._pacer = None
                        self._resumed = resumed = asyncio.Event()
                        await resumed.wait()
                        continue
                    if self._pacer is None:
                        self._pacer = Pacer(self.rate, self.clock)
                    await self._pacer.wait()
                    if self.rate <= 0:
                        continue
                    if len(self._in_flight) >= self.max_in_flight:
                        self.skipped += 1
                        continue
                    task = asyncio.ensure_future(self._one(client))
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)
            finally:
                pending = list(self._in_flight)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    async def _one(self, client: httpx.AsyncClient) -> None:
        capture = self.spam_share > 0 and not self._capturing and self._rand() < self.spam_share
        self.sent += 1
        try:
            if capture:
                self._capturing = True
                response = await client.post(CAPTURE, params={"batchSize": 500})
            else:
                path, params = self._pick()
                response = await client.get(path, params=params)
            self.statuses[response.status_code] += 1
        except httpx.HTTPError:
            self.statuses[0] += 1
        finally:
            if capture:
                self._capturing = False
            if self._answered is not None:
                self._answered.set()

    def _pick(self) -> tuple[str, dict[str, Any]]:
        total = sum(weight for _, _, weight in TRAFFIC_READS)
        point = self._rand() * total
        for path, params, weight in TRAFFIC_READS:
            if point < weight:
                return path, params
            point -= weight
        return ASSISTANCE, {}
