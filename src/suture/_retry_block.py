"""The block form of a retry: ``for attempt in policy.attempts(): with attempt: ...``.

For code that is not a function. The decisions are :class:`suture._retry_state.CallState`'s,
as for the decorator; this module only iterates, sleeps and swallows what is retried.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from suture._retry_state import CallState
from suture.clock import _WAITS

if TYPE_CHECKING:
    from suture.retrying import Retry

__all__ = ["Attempt", "AttemptManager"]


class Attempt:
    """One try in the block form: use it as ``with attempt:``."""

    __slots__ = ("_manager", "number")

    def __init__(self, manager: AttemptManager, number: int) -> None:
        self._manager = manager
        self.number = number  #: 1-based

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return self._manager._exit(exc)

    def __repr__(self) -> str:
        return f"<Attempt {self.number}>"


class AttemptManager:
    """Iterates attempts for code that is not a function.

    >>> for attempt in policy.attempts():    # doctest: +SKIP
    ...     with attempt:
    ...         do_something()

    ``async for attempt in policy.attempts():`` works the same in async code.
    A transient error inside ``with attempt`` is swallowed and the loop goes
    on after the wait; when the policy gives up, the error propagates out of
    the ``with`` block unchanged.
    """

    __slots__ = ("_delay", "_done", "_number", "_policy", "_start", "_state", "name")

    def __init__(self, policy: Retry, name: str) -> None:
        self._policy = policy
        self.name = name
        self._start = policy.clock.now()
        self._number = 0
        self._delay: float | None = None
        self._done = False
        self._state: CallState | None = None

    def _exit(self, exc: BaseException | None) -> bool:
        if exc is None:
            self._done = True
            if self._policy.budget is not None:
                self._policy.budget.deposit()
            return False
        if self._state is None:
            self._state = CallState(self._policy, self.name, self._start, self._number)
        delay = self._state.next_delay(exc)
        if delay is None:
            self._done = True
            return False
        self._delay = delay
        return True

    def _advance(self) -> bool:
        """True when another attempt should run (and the wait, if any, is owed)."""
        if self._done:
            return False
        if self._number and self._delay is None:
            # The previous attempt was not entered, or finished without an error.
            self._done = True
            return False
        return True

    def __iter__(self) -> Iterator[Attempt]:
        return self

    def __next__(self) -> Attempt:
        if not self._advance():
            raise StopIteration
        delay, self._delay = self._delay, None
        if delay and not _WAITS.skip:
            self._policy.clock.sleep(delay)
        self._number += 1
        return Attempt(self, self._number)

    def __aiter__(self) -> AsyncIterator[Attempt]:
        return self

    async def __anext__(self) -> Attempt:
        if not self._advance():
            raise StopAsyncIteration
        delay, self._delay = self._delay, None
        if delay and not _WAITS.skip:
            await self._policy.clock.asleep(delay)
        self._number += 1
        return Attempt(self, self._number)
