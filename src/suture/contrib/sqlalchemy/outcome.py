"""What a guarded transition returns, and the error of a missing record."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from suture.errors import InvalidTransition

__all__ = ["RecordNotFound", "SameState", "TransitionOutcome"]

S = TypeVar("S", bound=Hashable)

SameState = Literal["ok", "reject"]
"""What a single row already in the target state means: a no-op (``"ok"``) or an error."""


class RecordNotFound(InvalidTransition, LookupError):
    """A single-row transition found no row with that key (``source`` is ``None``)."""


@dataclass(frozen=True, slots=True)
class TransitionOutcome(Generic[S]):
    """What a guarded transition changed.

    ``keys`` are the primary keys of the rows moved to ``target`` (scalars, or
    tuples for a composite key), in the order the database returned them.
    ``sources`` maps each of them to the state it really had, when known (always
    on PostgreSQL and when audited; otherwise ``None``). ``requested`` is the
    number of keys asked for (``None`` for a ``where=`` condition alone).
    Truthy when something changed; ``len()`` is ``count``.
    """

    entity: str
    target: S
    keys: tuple[Any, ...]
    sources: Mapping[Any, S] | None = None
    requested: int | None = None
    count: int = field(default=-1)

    def __post_init__(self) -> None:
        if self.count < 0:
            object.__setattr__(self, "count", len(self.keys))

    @property
    def missed(self) -> int | None:
        """How many requested keys were not changed (missing, or in another state)."""
        return None if self.requested is None else self.requested - self.count

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0
