"""The words of admission: how loaded a resource is, and how important a request is.

A low room with no imports of its own: the pool monitor, the adaptive limiter
and the HTTP edge (``suture.contrib.starlette``) all speak these two enums, so
they live below all three (``suture.pool`` re-exports them).
"""

from __future__ import annotations

import enum

__all__ = ["PressureLevel", "Priority"]


class PressureLevel(enum.IntEnum):
    """How close the watched pool is to its limit. Ordered: ``NORMAL < WARNING < CRITICAL``."""

    NORMAL = 0
    WARNING = 1
    CRITICAL = 2


class Priority(enum.IntEnum):
    """How important a request is. Ordered: ``LOW < NORMAL < CRITICAL``.

    At WARNING pressure LOW is shed; at CRITICAL, NORMAL and LOW are shed.
    """

    LOW = 0
    NORMAL = 1
    CRITICAL = 2
