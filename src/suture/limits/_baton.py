"""The limits' mutual exclusion: one atomic ``deque.pop`` and one ``deque.append``."""

from __future__ import annotations

import time
from collections import deque
from typing import Generic, TypeVar

__all__ = ["Baton"]

V = TypeVar("V")


class Baton(Generic[V]):
    """Mutual exclusion from one atomic ``deque.pop`` and one ``deque.append``, and the
    state it guards carried with it.

    On this kind of machine a ``threading.Lock`` round trip costs about twice a
    whole pass-through call (the rate limiter's whole budget); taking the one
    item out of a deque and putting it back costs a fraction of that, and each
    of the two is atomic in CPython. The item *is* the guarded value (the rate
    limiter's theoretical arrival time; ``None`` when only the exclusion is
    wanted): whoever took it holds the baton, and gives it back with the new
    value, so the hot path reads and writes its state in the same two steps.

    The holder never waits, sleeps or awaits while holding it, so a thread that
    finds it taken yields the interpreter (``time.sleep(0)``: a yield, not a
    wait; no clock is read) until the holder, preempted a few bytecodes into
    its turn, gives it back.

    Hot paths inline ``take`` / ``give`` and call :meth:`wait` only when
    ``take`` found the baton gone.
    """

    __slots__ = ("_slot", "give", "take")

    def __init__(self, value: V) -> None:
        self._slot: deque[V] = deque((value,))
        self.take = self._slot.pop
        self.give = self._slot.append

    def wait(self) -> V:
        """Spin (yielding) until the baton is ours; its value."""
        take = self.take
        while True:
            time.sleep(0)
            try:
                return take()
            except IndexError:
                continue

    def hold(self) -> V:
        """Take the baton (waiting for it if needed); its value."""
        try:
            return self.take()
        except IndexError:
            return self.wait()

    def release(self, value: V) -> None:
        """Give the baton back, with the (new) value."""
        self.give(value)

    def peek(self) -> V:
        """The value, without holding the baton (a snapshot, for reports)."""
        value = self.hold()
        self.give(value)
        return value
