"""The limits' mutual exclusion: one atomic ``deque.pop`` and one ``deque.append``."""

from __future__ import annotations

import time
from collections import deque

__all__ = ["Baton"]


class Baton:
    """Mutual exclusion from one atomic ``deque.pop`` and one ``deque.append``.

    On this kind of machine a ``threading.Lock`` round trip costs about twice a
    whole pass-through call (the limiter's whole budget); taking the one item
    out of a deque and putting it back costs a fraction of that, and each of
    the two is atomic in CPython. The holder never waits, sleeps or awaits
    while holding it, so a thread that finds it taken yields the interpreter
    (``time.sleep(0)``: a yield, not a wait; no clock is read) until the
    holder, preempted a few bytecodes into its turn, puts it back.

    Hot paths inline ``take`` / ``give`` and call :meth:`wait` only when
    ``take`` found the baton gone.
    """

    __slots__ = ("give", "take")

    def __init__(self) -> None:
        slot: deque[None] = deque((None,))
        self.take = slot.pop
        self.give = slot.append

    def wait(self) -> None:
        """Spin (yielding) until the baton is ours."""
        take = self.take
        while True:
            time.sleep(0)
            try:
                take()
            except IndexError:
                continue
            return

    def hold(self) -> None:
        try:
            self.take()
        except IndexError:
            self.wait()

    def release(self) -> None:
        self.give(None)
