"""The pressure level as a pure state machine, and the actions tied to a level.

No I/O and no clock: :class:`_Pressure` turns each sample's fraction into a
:class:`~suture.admission.PressureLevel` (a rise at once, a fall only after a
recovery streak below the hysteresis band); :data:`FLOOR` is the lowest
:class:`~suture.admission.Priority` admitted at each level.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from suture.admission import PressureLevel, Priority

if TYPE_CHECKING:
    from suture.pool.sources import Usage

__all__ = ["ADMIT_ALL", "FLOOR"]

# The lowest priority admitted at each pressure level (indexed by level).
FLOOR: tuple[int, ...] = (Priority.LOW, Priority.NORMAL, Priority.CRITICAL)
ADMIT_ALL = int(Priority.LOW)


class _Pressure:
    """The pure level state machine: thresholds with a hysteresis band and a recovery streak.

    A rise is immediate. A fall needs the fraction below the level's threshold
    minus ``hysteresis`` on ``recover_after`` consecutive samples; the level
    then steps down to the highest level those samples still supported.
    """

    __slots__ = (
        "_streak",
        "_streak_level",
        "critical",
        "hysteresis",
        "level",
        "recover_after",
        "warning",
    )

    def __init__(
        self, *, warning: float, critical: float, hysteresis: float, recover_after: int
    ) -> None:
        self.warning = warning
        self.critical = critical
        self.hysteresis = hysteresis
        self.recover_after = recover_after
        self.level = PressureLevel.NORMAL
        self._streak = 0
        self._streak_level = PressureLevel.NORMAL

    def raw(self, fraction: float) -> PressureLevel:
        if fraction >= self.critical:
            return PressureLevel.CRITICAL
        if fraction >= self.warning:
            return PressureLevel.WARNING
        return PressureLevel.NORMAL

    def _held(self, fraction: float) -> PressureLevel:
        # The level a falling fraction still holds, with the hysteresis band.
        h = self.hysteresis
        if self.level >= PressureLevel.CRITICAL and fraction >= self.critical - h:
            return PressureLevel.CRITICAL
        if fraction >= self.warning - h:
            return PressureLevel.WARNING
        return PressureLevel.NORMAL

    def update(self, fraction: float) -> PressureLevel:
        """Feed one sample's fraction; returns the (possibly new) level."""
        raw = self.raw(fraction)
        if raw >= self.level:
            self._streak = 0
            self.level = raw
            return raw
        held = self._held(fraction)
        if held >= self.level:
            self._streak = 0
            return self.level
        self._streak_level = held if self._streak == 0 else max(self._streak_level, held)
        self._streak += 1
        if self._streak >= self.recover_after:
            self.level = self._streak_level
            self._streak = 0
        return self.level


class _Threshold:
    """An action that runs ``enter`` when the level reaches ``at`` and ``leave`` when it
    falls below it again."""

    __slots__ = ("at", "enter", "entered", "leave")

    def __init__(
        self, at: PressureLevel, enter: Callable[[], object], leave: Callable[[], object]
    ) -> None:
        self.at = at
        self.enter = enter
        self.leave = leave
        self.entered = False

    def __call__(self, old: PressureLevel, new: PressureLevel, usage: Usage) -> None:
        if new >= self.at and not self.entered:
            self.entered = True
            self.enter()
        elif new < self.at and self.entered:
            self.entered = False
            self.leave()
