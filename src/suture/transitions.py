"""The table of allowed status changes: ``can``, ``validate``, ``check``, ``mermaid``.

A :class:`Transitions` table is declared once from a mapping ``{source: {targets}}``
over an :class:`enum.Enum` (or plain strings) and checked at construction::

    class Msg(enum.StrEnum):
        READY = "ready"
        SPAM_REVIEW = "spam_review"
        PROMOTED = "promoted"
        SPAM_ARCHIVED = "spam_archived"

    MESSAGES = Transitions(
        {
            Msg.READY: {Msg.SPAM_REVIEW, Msg.PROMOTED},
            Msg.SPAM_REVIEW: {Msg.READY, Msg.SPAM_ARCHIVED},
        },
        name="raw_message",
    )
    MESSAGES.can(Msg.READY, Msg.PROMOTED)          # True
    MESSAGES.validate(Msg.PROMOTED, Msg.READY)     # TransitionResult(valid=False, ...)
    MESSAGES.check(Msg.PROMOTED, Msg.READY)        # raises InvalidTransition
    MESSAGES.terminal                              # {Msg.PROMOTED, Msg.SPAM_ARCHIVED}
    MESSAGES.sources_of(Msg.READY)                 # {Msg.SPAM_REVIEW}

Staying in the same state is always valid and changes nothing. An enum
member that the mapping never names as a source is terminal.

The table alone decides nothing about a database row: a check in Python and a
write later are two steps that two workers can interleave. ``suture.contrib.
sqlalchemy.transition`` makes the database enforce the same table in one
``UPDATE ... WHERE status IN (sources_of(target))`` statement.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from suture.errors import InvalidTransition
from suture.events import TransitionRejected, emit

__all__ = ["TransitionResult", "Transitions"]

S = TypeVar("S", bound=Hashable)

# Words a Mermaid state diagram reads as syntax: never used as a state's identifier.
_MERMAID_WORDS = frozenset(
    {"as", "class", "classdef", "click", "direction", "end", "left", "note", "of", "right"}
    | {"state", "statediagram", "statediagram-v2", "style"}
)


@dataclass(frozen=True, slots=True)
class TransitionResult(Generic[S]):
    """The answer of :meth:`Transitions.validate`: ``valid`` and, when not, ``error``.

    ``changes`` is False when ``source == target`` (valid, nothing to write).
    The result is truthy exactly when it is valid.
    """

    valid: bool
    source: S | None
    target: S | None
    error: str | None = None
    context: Any = None

    @property
    def changes(self) -> bool:
        """Whether applying this (valid) transition changes the state."""
        return self.valid and self.source != self.target

    def __bool__(self) -> bool:
        return self.valid

    def raise_for_error(self) -> None:
        """Raise :class:`~suture.errors.InvalidTransition` when the result is not valid."""
        if not self.valid:
            raise InvalidTransition(self.source, self.target, self.context, reason=self.error)


class Transitions(Generic[S]):
    """An explicit table of legal ``(source, target)`` status changes.

    ``table`` maps each source state to the collection of states it may move
    to. States are the members of one :class:`enum.Enum` (every member is a
    state; those without an entry are terminal), or hashable plain values
    (strings, usually): then the states are every source and target named, plus
    any listed in ``states``. ``name`` names the entity in events and errors.

    Raises ``TypeError``/``ValueError`` at construction for a malformed table:
    targets given as a bare string, states of mixed types, states outside the
    enum or outside ``states``.
    """

    __slots__ = (
        "_edges",
        "_enum",
        "_sources",
        "_states",
        "_targets",
        "_terminal",
        "initial",
        "name",
    )

    def __init__(  # noqa: C901, PLR0912 - validates every entry of the table with its own message
        self,
        table: Mapping[S, Iterable[S]],
        *,
        states: Iterable[S] | type[enum.Enum] | None = None,
        initial: S | None = None,
        name: str = "record",
    ) -> None:
        if not isinstance(table, Mapping):
            raise TypeError(
                f"table={table!r}: expected a mapping {{source: {{targets}}}}, "
                f"got {type(table).__name__}"
            )
        if not isinstance(name, str) or not name:
            raise TypeError(f"name={name!r}: expected a non-empty string")
        self.name = name
        targets: dict[S, frozenset[S]] = {}
        for source, outs in table.items():
            if isinstance(outs, (str, bytes)) or not isinstance(outs, Iterable):
                raise TypeError(
                    f"table[{source!r}]={outs!r}: expected a collection of target states "
                    f"(a set, list or tuple), got {type(outs).__name__}"
                )
            targets[source] = frozenset(outs)
        named: list[S] = list(targets)
        for outs_set in targets.values():
            named.extend(outs_set)

        enum_cls: type[enum.Enum] | None = None
        if isinstance(states, type) and issubclass(states, enum.Enum):
            enum_cls = states
        elif named and isinstance(named[0], enum.Enum):
            enum_cls = type(named[0])
        self._enum = enum_cls

        if enum_cls is not None:
            all_states: list[Any] = list(enum_cls)  # S is this enum
            for state in named:
                if not isinstance(state, enum_cls):
                    raise ValueError(
                        f"table: state {state!r} is not a member of {enum_cls.__name__} "
                        f"(allowed: {', '.join(m.name for m in enum_cls)})"
                    )
        else:
            declared: list[Any] | None = None if states is None else list(states)
            if declared is not None:
                for state in named:
                    if state not in declared:
                        raise ValueError(f"table: state {state!r} is not in states={declared!r}")
                all_states = list(declared)
            else:
                all_states = list(dict.fromkeys(named))
            kinds = {type(s) for s in all_states}
            if len(kinds) > 1:
                raise TypeError(
                    f"table: states must all have one type, got {sorted(k.__name__ for k in kinds)}"
                )
        if initial is not None and initial not in all_states:
            raise ValueError(f"initial={initial!r}: not one of the states {all_states!r}")
        self.initial = initial
        self._states: tuple[S, ...] = tuple(dict.fromkeys(all_states))
        # Self-loops are implicit (same state is always valid, and changes nothing).
        self._targets: dict[S, frozenset[S]] = {
            s: frozenset(t for t in targets.get(s, frozenset()) if t != s) for s in self._states
        }
        sources: dict[S, set[S]] = {s: set() for s in self._states}
        for s, outs_set in self._targets.items():
            for t in outs_set:
                sources[t].add(s)
        self._sources: dict[S, frozenset[S]] = {t: frozenset(v) for t, v in sources.items()}
        self._terminal = frozenset(s for s in self._states if not self._targets[s])
        self._edges = frozenset((s, t) for s, outs_set in self._targets.items() for t in outs_set)

    # --- queries ---------------------------------------------------------------------

    @property
    def states(self) -> tuple[S, ...]:
        """Every state, in declaration (or enum) order."""
        return self._states

    @property
    def terminal(self) -> frozenset[S]:
        """The states with no way out."""
        return self._terminal

    @property
    def edges(self) -> frozenset[tuple[S, S]]:
        """Every allowed ``(source, target)`` pair with ``source != target``."""
        return self._edges

    def __iter__(self) -> Iterator[tuple[S, S]]:
        """The allowed changes, in state order."""
        for s in self._states:
            for t in self._states:
                if t in self._targets[s]:
                    yield (s, t)

    def __contains__(self, pair: object) -> bool:
        return pair in self._edges

    def state(self, value: object) -> S:
        """``value`` as one of this table's states: the state itself, or for an enum
        table a member's value or name (as read back from a database column).

        Raises ``ValueError`` for anything else.
        """
        if self._enum is not None:
            # A StrEnum member equals its value, so test the type before membership.
            if isinstance(value, self._enum):
                return value  # type: ignore[return-value]  # S is this enum
            if not isinstance(value, enum.Enum):
                try:
                    return self._enum(value)  # type: ignore[return-value]
                except ValueError:
                    pass
                if isinstance(value, str) and value in self._enum.__members__:
                    return self._enum[value]  # type: ignore[return-value]
        else:
            try:
                if value in self._targets:
                    return value  # a state by membership (narrowed by `in`)
            except TypeError:  # unhashable
                pass
        raise ValueError(f"{value!r} is not a state of {self.name} (states: {self._label_list()})")

    def targets_of(self, source: S) -> frozenset[S]:
        """The states ``source`` may move to (the same state not included)."""
        return self._targets[self.state(source)]

    def sources_of(self, target: S) -> frozenset[S]:
        """The states that may move to ``target`` (``target`` itself not included)."""
        return self._sources[self.state(target)]

    def can(self, source: S, target: S) -> bool:
        """Whether ``source -> target`` is allowed (same state: always, if it is a state)."""
        try:
            src, tgt = self.state(source), self.state(target)
        except ValueError:
            return False
        return src == tgt or tgt in self._targets[src]

    def validate(self, source: S, target: S, context: Any = None) -> TransitionResult[S]:
        """A frozen :class:`TransitionResult` saying whether ``source -> target`` is allowed."""
        try:
            src = self.state(source)
        except ValueError:
            return TransitionResult(
                False, source, target, f"unknown source state {source!r}", context
            )
        try:
            tgt = self.state(target)
        except ValueError:
            return TransitionResult(False, src, target, f"unknown target state {target!r}", context)
        if src == tgt or tgt in self._targets[src]:
            return TransitionResult(True, src, tgt, None, context)
        if src in self._terminal:
            why = f"{self._label(src)} is terminal"
        else:
            allowed = ", ".join(self._label(t) for t in self._states if t in self._targets[src])
            why = f"{self._label(src)} may only move to {allowed}"
        return TransitionResult(
            False,
            src,
            tgt,
            f"{self.name}: transition {self._label(src)} -> {self._label(tgt)} is not allowed "
            f"({why})",
            context,
        )

    def check(self, source: S, target: S, context: Any = None) -> TransitionResult[S]:
        """Like :meth:`validate`, but raise :class:`~suture.errors.InvalidTransition`
        (carrying source, target and context) when not allowed, and emit
        :class:`~suture.events.TransitionRejected`."""
        result = self.validate(source, target, context)
        if not result.valid:
            emit(
                TransitionRejected(
                    entity=self.name,
                    source=result.source,
                    target=result.target,
                    reason=result.error or "not allowed",
                    context=context,
                )
            )
            result.raise_for_error()
        return result

    # --- rendering -------------------------------------------------------------------

    def mermaid(self) -> str:
        """A Mermaid ``stateDiagram-v2`` of the table (terminal states lead to ``[*]``)."""
        lines = ["stateDiagram-v2"]
        ids: dict[S, str] = {}
        used: set[str] = set()
        for s in self._states:
            label = " ".join(self._label(s).split())  # a label is one line
            ident = re.sub(r"\W", "_", label, flags=re.ASCII) or "state"
            if ident[0].isdigit() or ident.lower() in _MERMAID_WORDS:
                ident = f"s_{ident}"
            base, n = ident, 2
            while ident in used:
                ident, n = f"{base}_{n}", n + 1
            used.add(ident)
            ids[s] = ident
            if ident != label:
                text = label.replace("#", "#35;").replace('"', "#quot;")
                lines.append(f'    state "{text}" as {ident}')
        if self.initial is not None:
            lines.append(f"    [*] --> {ids[self.initial]}")
        for s, t in self:
            lines.append(f"    {ids[s]} --> {ids[t]}")
        for s in self._states:
            if s in self._terminal:
                lines.append(f"    {ids[s]} --> [*]")
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return (
            f"Transitions(name={self.name!r}, states={len(self._states)}, edges={len(self._edges)})"
        )

    def _label(self, state: S) -> str:
        if isinstance(state, enum.Enum):
            return state.name
        return str(state)

    def _label_list(self) -> str:
        return ", ".join(self._label(s) for s in self._states)
