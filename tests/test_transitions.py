"""The transition table: construction checks, queries, errors, events, diagram."""

from __future__ import annotations

import enum
import itertools
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import suture
from suture import InvalidTransition, TransitionRejected, TransitionResult, Transitions
from suture.testing import capture_events


class Msg(enum.StrEnum):
    READY = "ready"
    SPAM_REVIEW = "spam_review"
    PROMOTED = "promoted"
    SPAM_ARCHIVED = "spam_archived"


class Num(enum.Enum):
    ONE = 1
    TWO = 2


# The founding spec's table.
SPEC = Transitions(
    {
        Msg.READY: {Msg.SPAM_REVIEW, Msg.PROMOTED},
        Msg.SPAM_REVIEW: {Msg.READY, Msg.SPAM_ARCHIVED},
    },
    name="raw_message",
    initial=Msg.READY,
)


def test_exported_from_the_package() -> None:
    assert suture.Transitions is Transitions
    assert suture.TransitionResult is TransitionResult
    assert "Transitions" in suture.__all__
    assert "TransitionResult" in suture.__all__


def test_spec_table_queries() -> None:
    assert SPEC.states == (Msg.READY, Msg.SPAM_REVIEW, Msg.PROMOTED, Msg.SPAM_ARCHIVED)
    assert SPEC.terminal == {Msg.PROMOTED, Msg.SPAM_ARCHIVED}
    assert SPEC.sources_of(Msg.SPAM_REVIEW) == {Msg.READY}
    assert SPEC.sources_of(Msg.READY) == {Msg.SPAM_REVIEW}
    assert SPEC.sources_of(Msg.SPAM_ARCHIVED) == {Msg.SPAM_REVIEW}
    assert SPEC.targets_of(Msg.READY) == {Msg.SPAM_REVIEW, Msg.PROMOTED}
    assert SPEC.targets_of(Msg.PROMOTED) == frozenset()
    assert (Msg.READY, Msg.PROMOTED) in SPEC
    assert (Msg.PROMOTED, Msg.READY) not in SPEC
    assert list(SPEC) == [
        (Msg.READY, Msg.SPAM_REVIEW),
        (Msg.READY, Msg.PROMOTED),
        (Msg.SPAM_REVIEW, Msg.READY),
        (Msg.SPAM_REVIEW, Msg.SPAM_ARCHIVED),
    ]
    assert len(SPEC.edges) == 4
    assert "raw_message" in repr(SPEC)


def test_can() -> None:
    assert SPEC.can(Msg.READY, Msg.SPAM_REVIEW)
    assert SPEC.can(Msg.SPAM_REVIEW, Msg.SPAM_ARCHIVED)
    assert not SPEC.can(Msg.READY, Msg.SPAM_ARCHIVED)
    assert not SPEC.can(Msg.PROMOTED, Msg.READY)
    assert not SPEC.can(Msg.SPAM_ARCHIVED, Msg.SPAM_REVIEW)
    # values and names as read from a database column are accepted
    assert SPEC.can("ready", "promoted")
    assert SPEC.can("READY", "PROMOTED")
    assert not SPEC.can("ready", "nonsense")


def test_same_state_is_valid_and_changes_nothing() -> None:
    for state in Msg:
        result = SPEC.validate(state, state)
        assert result.valid
        assert result
        assert not result.changes
        assert SPEC.can(state, state)
        SPEC.check(state, state)  # does not raise, even for a terminal state
    assert SPEC.validate(Msg.READY, Msg.PROMOTED).changes


def test_validate_returns_a_frozen_result() -> None:
    ok = SPEC.validate(Msg.READY, Msg.PROMOTED, context=7)
    assert ok == TransitionResult(True, Msg.READY, Msg.PROMOTED, None, 7)
    bad = SPEC.validate(Msg.PROMOTED, Msg.READY, context="task 7")
    assert not bad.valid
    assert not bad
    assert bad.error is not None
    assert "PROMOTED -> READY" in bad.error
    assert "terminal" in bad.error
    with pytest.raises(AttributeError):
        bad.valid = True  # type: ignore[misc]
    other = SPEC.validate(Msg.READY, Msg.SPAM_ARCHIVED)
    assert other.error is not None
    assert "READY may only move to SPAM_REVIEW, PROMOTED" in other.error
    unknown = SPEC.validate("nope", Msg.READY)
    assert not unknown.valid
    assert unknown.error == "unknown source state 'nope'"
    unknown_target = SPEC.validate(Msg.READY, "nope")
    assert unknown_target.error == "unknown target state 'nope'"


def test_check_raises_with_source_target_context_and_emits() -> None:
    with capture_events() as events, pytest.raises(InvalidTransition) as info:
        SPEC.check(Msg.SPAM_ARCHIVED, Msg.SPAM_REVIEW, context={"actor": "bob"})
    err = info.value
    assert err.source is Msg.SPAM_ARCHIVED
    assert err.target is Msg.SPAM_REVIEW
    assert err.context == {"actor": "bob"}
    assert not err.transient
    assert "SPAM_ARCHIVED -> SPAM_REVIEW" in str(err)
    rejected = events.of(TransitionRejected)
    assert len(rejected) == 1
    assert rejected[0].entity == "raw_message"
    assert rejected[0].source is Msg.SPAM_ARCHIVED
    assert rejected[0].context == {"actor": "bob"}
    # the error survives pickling (it crosses process boundaries in workers)
    again = pickle.loads(pickle.dumps(err))
    assert again.source == err.source
    assert again.target == err.target
    assert str(again) == str(err)


def test_check_returns_the_result_when_valid() -> None:
    with capture_events() as events:
        result = SPEC.check("ready", "spam_review")
    assert result.source is Msg.READY
    assert result.target is Msg.SPAM_REVIEW
    assert events.of(TransitionRejected) == []


def test_raise_for_error() -> None:
    SPEC.validate(Msg.READY, Msg.PROMOTED).raise_for_error()
    with pytest.raises(InvalidTransition):
        SPEC.validate(Msg.PROMOTED, Msg.READY).raise_for_error()


def test_enum_members_without_entry_are_terminal() -> None:
    table = Transitions({Num.ONE: [Num.TWO]})
    assert table.states == (Num.ONE, Num.TWO)
    assert table.terminal == {Num.TWO}
    assert table.state(1) is Num.ONE
    assert table.state("TWO") is Num.TWO
    assert not table.can(3, 1)


def test_plain_strings() -> None:
    table = Transitions({"open": {"in_progress", "done"}, "in_progress": ("done", "open")})
    assert set(table.states) == {"open", "in_progress", "done"}
    assert table.terminal == {"done"}
    assert table.sources_of("done") == {"open", "in_progress"}
    assert table.can("open", "done")
    assert not table.can("done", "open")
    assert not table.can("done", "unknown")
    assert not table.can(["unhashable"], "done")  # type: ignore[arg-type]
    with pytest.raises(InvalidTransition):
        table.check("done", "open")


def test_plain_strings_with_declared_states() -> None:
    table = Transitions({"a": {"b"}}, states=["a", "b", "c"])
    assert table.terminal == {"b", "c"}
    with pytest.raises(ValueError, match="'x' is not in states"):
        Transitions({"a": {"x"}}, states=["a", "b"])


def test_self_loops_are_implicit() -> None:
    table = Transitions({"a": {"a", "b"}})
    assert table.targets_of("a") == {"b"}
    assert table.sources_of("a") == frozenset()
    assert ("a", "a") not in table


def test_construction_errors_name_the_problem() -> None:
    with pytest.raises(TypeError, match="expected a collection of target states"):
        Transitions({"a": "b"})
    with pytest.raises(TypeError, match="expected a mapping"):
        Transitions([("a", "b")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a member of Msg"):
        Transitions({Msg.READY: {Num.ONE}})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="one type"):
        Transitions({"a": {1}})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="one type"):
        Transitions({"a": {"b"}}, states=["a", "b", Msg.READY])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="initial='z'"):
        Transitions({"a": {"b"}}, initial="z")
    with pytest.raises(TypeError, match="name="):
        Transitions({"a": {"b"}}, name="")
    with pytest.raises(ValueError, match="is not a state of raw_message"):
        SPEC.targets_of("nope")  # type: ignore[arg-type]


def test_enum_class_given_as_states() -> None:
    table = Transitions({}, states=Msg)
    assert table.terminal == set(Msg)
    assert table.edges == frozenset()


def test_mermaid() -> None:
    assert SPEC.mermaid() == (
        "stateDiagram-v2\n"
        "    [*] --> READY\n"
        "    READY --> SPAM_REVIEW\n"
        "    READY --> PROMOTED\n"
        "    SPAM_REVIEW --> READY\n"
        "    SPAM_REVIEW --> SPAM_ARCHIVED\n"
        "    PROMOTED --> [*]\n"
        "    SPAM_ARCHIVED --> [*]\n"
    )
    odd = Transitions({"in progress": {"1done"}, "in-progress": {"1done"}})
    text = odd.mermaid()
    assert 'state "in progress" as in_progress' in text
    assert 'state "in-progress" as in_progress_2' in text
    assert 'state "1done" as s_1done' in text
    assert "in_progress --> s_1done" in text


# --- properties ----------------------------------------------------------------------

STATES = [f"s{i}" for i in range(6)]


@st.composite
def tables(draw: st.DrawFn) -> tuple[dict[str, set[str]], list[str]]:
    states = draw(st.lists(st.sampled_from(STATES), min_size=1, max_size=6, unique=True))
    table = {
        s: draw(st.sets(st.sampled_from(states), max_size=len(states)))
        for s in draw(st.lists(st.sampled_from(states), unique=True))
    }
    return table, states


@settings(max_examples=200, deadline=None)
@given(data=tables(), requests=st.lists(st.sampled_from([*STATES, "zz"]), max_size=30))
def test_random_sequences_never_take_a_path_the_table_forbids(
    data: tuple[dict[str, set[str]], list[str]], requests: list[str]
) -> None:
    table_map, states = data
    table = Transitions(table_map, states=states)
    state = states[0]
    path = [state]
    for target in requests:
        if not table.can(state, target):
            with pytest.raises(InvalidTransition) as info:
                table.check(state, target)
            assert info.value.source == state
            assert info.value.target == target
            continue
        result = table.check(state, target)
        assert result.valid
        state = target
        path.append(state)
    for a, b in itertools.pairwise(path):
        assert a == b or b in table_map.get(a, set())
    # the derived views agree with the declaration
    for s in table.states:
        assert (s in table.terminal) == (not (table_map.get(s, set()) - {s}))
        for t in table.states:
            assert (s in table.sources_of(t)) == (s != t and t in table_map.get(s, set()))
            assert table.can(s, t) == (s == t or t in table_map.get(s, set()))


def test_mermaid_escapes_labels_and_avoids_its_keywords() -> None:
    odd = Transitions({'say "hi" #1': {"end", "two\nlines"}, "end": {"state"}})
    text = odd.mermaid()
    assert 'state "say #quot;hi#quot; #35;1" as say__hi___1' in text
    assert 'state "two lines" as two_lines' in text  # a label stays on one line
    assert 'state "end" as s_end' in text
    assert 'state "state" as s_state' in text
    assert "s_end --> s_state" in text
    for line in text.splitlines()[1:]:
        assert line.startswith("    ")
        assert line.count('"') in (0, 2)
