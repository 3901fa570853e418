"""Connection-pool monitoring and admission by priority.

A :class:`PoolMonitor` samples one or more *sources* (the PostgreSQL server's
connection slots, a SQLAlchemy pool, any callable returning ``(current,
limit)``) on a schedule, in a background thread (:meth:`PoolMonitor.start`) or
an asyncio task (:meth:`PoolMonitor.astart`), never at import and never
overlapping. Each sample becomes a frozen :class:`Usage`; the fraction of the
tightest source sets the :class:`PressureLevel`, with hysteresis so the level
does not flap.

Admission (:meth:`PoolMonitor.admit`) reads the last sample only: one integer
comparison and one clock read, no lock and no I/O. At NORMAL everything is
admitted, at WARNING ``Priority.LOW`` is shed, at CRITICAL only
``Priority.CRITICAL`` gets through. A shed request raises
:class:`suture.Overloaded` and emits :class:`suture.events.RequestShed`.

A sample older than ``stale_after`` (three intervals by default) is stale: the
monitor cannot see the pool any more, so admission uses ``stale_level``
(WARNING by default: low-priority work is shed, everything else admitted)
until a fresh sample arrives. Before the first sample (monitor never started,
nothing sampled) everything is admitted.

Level changes emit :class:`suture.events.PressureChanged` and run the actions
registered with :meth:`PoolMonitor.on_level_change`, :meth:`PoolMonitor.while_at`
or :meth:`PoolMonitor.force_open_while` (force non-essential breakers open,
pause a background job, and undo it on recovery).
"""

from suture.admission import PressureLevel, Priority
from suture.pool.monitor import LevelChangeCallback, PoolMonitor
from suture.pool.sources import CallableSource, PoolSource, Reading, SourceUsage, Usage

__all__ = [
    "CallableSource",
    "LevelChangeCallback",
    "PoolMonitor",
    "PoolSource",
    "PressureLevel",
    "Priority",
    "Reading",
    "SourceUsage",
    "Usage",
]
