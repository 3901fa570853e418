"""What the pool monitor samples: sources and the frozen samples made of their readings.

A source has a ``name`` and a ``read()`` returning a :class:`Reading`
(``current`` in use out of ``limit``); :class:`CallableSource` makes one from
any callable returning ``(current, limit)``. One sample of every source is a
:class:`Usage`, each source's part of it a :class:`SourceUsage`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["CallableSource", "PoolSource", "Reading", "SourceUsage", "Usage"]


@dataclass(frozen=True, slots=True)
class Reading:
    """What a source reports: ``current`` in use out of ``limit``, plus JSON-friendly details."""

    current: int
    limit: int
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """``current / limit``; a limit of 0 or less means nothing can be had (1.0)."""
        if self.limit <= 0:
            return 1.0
        return self.current / self.limit


@runtime_checkable
class PoolSource(Protocol):
    """Something the monitor samples: a ``name`` and a ``read()`` returning a :class:`Reading`.

    ``read`` runs on the sampler thread (or a worker thread of the asyncio
    sampler), never on the request path; it may do I/O but should bound it
    (a statement timeout, a connect timeout).
    """

    name: str

    def read(self) -> Reading: ...


class CallableSource:
    """A source from any callable returning ``(current, limit)`` or a :class:`Reading`.

    >>> src = CallableSource(lambda: (3, 10), name="workers")
    >>> src.read().fraction
    0.3
    """

    __slots__ = ("_fn", "name")

    def __init__(
        self,
        fn: Callable[[], tuple[int, int] | Reading],
        *,
        name: str = "callable",
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn={fn!r}: expected a callable returning (current, limit)")
        self._fn = fn
        self.name = name

    def read(self) -> Reading:
        out = self._fn()
        if isinstance(out, Reading):
            return out
        current, limit = out
        return Reading(int(current), int(limit))

    def __repr__(self) -> str:
        return f"CallableSource({self._fn!r}, name={self.name!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceUsage:
    """One source's part of a sample. ``error`` is set (and the numbers are 0) when it failed."""

    name: str
    current: int
    limit: int
    fraction: float
    details: Mapping[str, Any]
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "current": self.current,
            "limit": self.limit,
            "fraction": self.fraction,
            "details": dict(self.details),
            "error": self.error,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """A frozen sample of every source.

    ``current``, ``limit`` and ``fraction`` are those of the tightest source
    (the highest fraction), named by ``source``. ``sampled_at`` is the
    monitor clock's monotonic time, ``sampled_wall`` seconds since the epoch,
    ``duration`` how long the sample took.
    """

    current: int
    limit: int
    fraction: float
    source: str
    sources: tuple[SourceUsage, ...]
    sampled_at: float
    sampled_wall: float
    duration: float

    def detail(self, name: str) -> SourceUsage:
        """The part of the sample that came from the source called ``name``."""
        for item in self.sources:
            if item.name == name:
                return item
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (for ``/health`` and dashboards)."""
        return {
            "current": self.current,
            "limit": self.limit,
            "fraction": self.fraction,
            "source": self.source,
            "sources": [s.as_dict() for s in self.sources],
            "sampled_at": self.sampled_at,
            "sampled_wall": self.sampled_wall,
            "duration": self.duration,
        }


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def as_reading(out: object) -> Reading:
    """A source's answer as a :class:`Reading`; a ``(current, limit)`` pair is accepted.
    Anything else raises ``TypeError`` (the source is then reported as failed)."""
    if isinstance(out, Reading):
        return out
    if isinstance(out, tuple) and len(out) == 2:
        current, limit = out
        return Reading(int(current), int(limit))
    raise TypeError(f"read() returned {out!r}: expected a Reading or (current, limit)")


def normalise_sources(
    sources: PoolSource | Callable[[], tuple[int, int]] | Iterable[Any],
) -> tuple[PoolSource, ...]:
    if isinstance(sources, (str, bytes)):
        raise TypeError(f"sources={sources!r}: expected a source or an iterable of sources")
    items: list[Any]
    if (hasattr(sources, "read") and hasattr(sources, "name")) or callable(sources):
        items = [sources]
    else:
        items = list(sources)
    if not items:
        raise ValueError("sources=[]: give at least one source")
    out: list[PoolSource] = []
    names: set[str] = set()
    for i, item in enumerate(items):
        src: PoolSource
        if hasattr(item, "read") and hasattr(item, "name"):
            src = item
        elif callable(item):
            label = getattr(item, "__name__", "")
            if not label.isidentifier():  # a lambda's "<lambda>"
                label = f"source{i}"
            src = CallableSource(item, name=label)
        else:
            raise TypeError(
                f"sources[{i}]={item!r}: expected an object with name and read(), "
                "or a callable returning (current, limit)"
            )
        if src.name in names:
            raise ValueError(f"sources[{i}]: the name {src.name!r} is used twice")
        names.add(src.name)
        out.append(src)
    return tuple(out)
