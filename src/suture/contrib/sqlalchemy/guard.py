"""The ORM guard: an illegal assignment of a mapped status fails at flush."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm.attributes import InstrumentedAttribute

from suture.transitions import Transitions

__all__ = ["guard"]


def guard(  # noqa: C901 - the count includes the four event handlers it defines
    attribute: Any,
    transitions: Transitions[Any],
    *,
    context: Callable[[Any], Any] | None = None,
) -> Callable[[], None]:
    """Make flushing an illegal change of a mapped status attribute raise
    :class:`~suture.errors.InvalidTransition`.

    ``attribute`` is the mapped attribute (``Task.status``). At flush, an object
    whose attribute changed from ``a`` to ``b`` is checked with
    ``transitions.check(a, b)``; a new object must hold a known state. The old
    value is loaded when the attribute is assigned (``active_history``), so the
    check sees it even if it was expired. ``context(obj)`` gives the error's
    context (default: the object's identity). Returns a function that removes
    the guard. A bug catcher: the in-memory old value can be stale under
    concurrency, which is what :func:`transition` is for.
    """
    if not isinstance(attribute, InstrumentedAttribute):
        raise TypeError(f"attribute={attribute!r}: expected a mapped attribute like Task.status")
    if not isinstance(transitions, Transitions):
        raise TypeError(f"transitions={transitions!r}: expected a suture.Transitions table")
    cls = attribute.class_
    name = attribute.key

    def ctx(obj: Any) -> Any:
        if context is not None:
            return context(obj)
        ident = sa.inspect(obj).identity
        if ident is None:
            return f"{cls.__name__}(new)"
        return f"{cls.__name__} {ident[0] if len(ident) == 1 else ident!r}"

    def on_set(target: Any, value: Any, oldvalue: Any, initiator: Any) -> Any:
        return value  # present only to turn on active_history (load the old value)

    def before_update(mapper: Any, connection: Any, obj: Any) -> None:
        hist = sa.inspect(obj).attrs[name].history
        if not hist.added or not hist.deleted:
            return
        old, new = hist.deleted[0], hist.added[0]
        if old is None:
            transitions.check(new, new, context=ctx(obj))  # a known state at least
            return
        transitions.check(old, new, context=ctx(obj))

    def before_insert(mapper: Any, connection: Any, obj: Any) -> None:
        value = getattr(obj, name)
        if value is not None:
            transitions.check(value, value, context=ctx(obj))

    event.listen(attribute, "set", on_set, active_history=True, retval=True)
    event.listen(cls, "before_update", before_update, propagate=True)
    event.listen(cls, "before_insert", before_insert, propagate=True)

    def remove() -> None:
        event.remove(attribute, "set", on_set)
        event.remove(cls, "before_update", before_update)
        event.remove(cls, "before_insert", before_insert)

    return remove
