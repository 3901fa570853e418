"""The compiled spam matcher agrees with the plain one (every rule on every message)."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from suture.demo.seed import generate
from suture.demo.spam import (
    Rule,
    RuleMode,
    SpamMatcher,
    fingerprint,
    normalize,
    reference_matches,
    required_literals,
)

ALPHABET = "abc xy-!.$1\n\u017f\u0131"  # newlines and non-ASCII case-folding traps
BRANDS = [None, "acme", "Globex"]


def test_normalize() -> None:
    assert normalize("  FREE\tMoney\n\nNOW ") == "free money now"


@pytest.mark.parametrize(
    ("mode", "pattern", "text", "hit"),
    [
        (RuleMode.CONTAINS, "Free Money", "get FREE   money now", True),
        (RuleMode.CONTAINS, "free money", "freemoney", False),
        (RuleMode.WORD, "win", "you win!", True),
        (RuleMode.WORD, "win", "a winner", False),
        (RuleMode.WORD, "win", "win", True),
        (RuleMode.WORD, "$$$", "earn $$$ fast", True),
        (RuleMode.EXACT, "hello", "  HELLO ", True),
        (RuleMode.EXACT, "hello", "hello there", False),
        (RuleMode.REGEX, r"\bv[i1]agra\b", "cheap V1AGRA here", True),
        (RuleMode.REGEX, r"^\d{3}$", "123", True),
        (RuleMode.REGEX, r"(a)\1", "xaax", True),  # a group and a back reference
        (RuleMode.REGEX, r"(?s)a.b", "a b", True),  # a global inline flag
    ],
)
def test_modes(mode: RuleMode, pattern: str, text: str, hit: bool) -> None:
    rule = Rule(1, pattern, mode)
    matcher = SpamMatcher([rule])
    assert bool(matcher.match(None, text)) is hit
    assert matcher.is_spam(None, text) is hit
    assert bool(reference_matches([rule], None, text)) is hit


def test_brand_scoping() -> None:
    rules = [
        Rule(1, "global", RuleMode.CONTAINS),
        Rule(2, "acme only", RuleMode.CONTAINS, brand="ACME"),
    ]
    matcher = SpamMatcher(rules)
    assert matcher.match("acme", "acme only and global") == (2, 1)
    assert matcher.match("globex", "acme only") == ()
    assert matcher.match(None, "global") == (1,)
    assert matcher.match(" Acme ", "ACME ONLY") == (2,)


def test_rules_sharing_a_pattern_are_all_reported() -> None:
    rules = [Rule(1, "spam", RuleMode.CONTAINS), Rule(2, "SPAM", RuleMode.CONTAINS)]
    assert SpamMatcher(rules).match(None, "pure spam") == (1, 2)


def test_overlapping_and_nested_literals_are_all_found() -> None:
    rules = [
        Rule(1, "abc", RuleMode.WORD),  # fails: "abcd" goes on
        Rule(2, "bcd", RuleMode.CONTAINS),  # starts inside the longer literal's match
        Rule(3, "ab", RuleMode.CONTAINS),  # a prefix of another literal
        Rule(4, "abcd", RuleMode.WORD),
    ]
    assert SpamMatcher(rules).match(None, "abcd") == (3, 4, 2)
    assert SpamMatcher(rules).match_batch([(None, "abcd"), (None, "x abc")]) == [
        (3, 4, 2),
        (3, 1),
    ]


def test_invalid_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="non-empty pattern"):
        Rule(1, "   ", RuleMode.CONTAINS)
    with pytest.raises(ValueError, match="not a valid regex"):
        Rule(1, "(unclosed", RuleMode.REGEX)
    with pytest.raises(ValueError, match="single line"):
        Rule(1, "free\nmoney", RuleMode.REGEX)
    with pytest.raises(ValueError, match="'FUZZY'"):
        Rule(1, "x", "FUZZY")  # type: ignore[arg-type]


def test_fingerprint_ignores_order_and_sees_changes() -> None:
    a = [Rule(1, "x", RuleMode.CONTAINS), Rule(2, "y", RuleMode.WORD)]
    assert fingerprint(a) == fingerprint(reversed(a))
    assert fingerprint(a) != fingerprint([a[0], Rule(2, "y", RuleMode.CONTAINS)])
    assert SpamMatcher(a).fingerprint == fingerprint(a)


def test_seeded_rules_and_messages_agree_with_the_reference() -> None:
    data = generate(tasks=0, messages=1500, rules=200, seed=11)
    rules = [
        Rule(i + 1, r["pattern"], r["mode"], r["brand"])
        for i, r in enumerate(data.rules)
        if r["enabled"]
    ]
    matcher = SpamMatcher(rules)
    batch = matcher.match_batch([(m["brand"], m["text"]) for m in data.messages])
    spam = 0
    for msg, in_batch in zip(data.messages, batch, strict=True):
        expected = reference_matches(rules, msg["brand"], msg["text"])
        got = matcher.match(msg["brand"], msg["text"])
        assert in_batch == got
        assert bool(got) == bool(expected), msg
        assert set(got) == expected
        spam += bool(got)
    assert 100 < spam < 600  # about 15% of the messages are spam


literal = st.text(ALPHABET, min_size=1, max_size=5).filter(lambda s: normalize(s) != "")
regex = st.sampled_from(
    [
        r"a+b",
        r"x.y",
        r"^ab",
        r"c$",
        r"\d",
        r"(a|b)c",
        r"(x)\1",
        r"[!.]{2}",
        r"b?c-",
        r"(?i)A",
        r"ab{2,}c",
        r"(a|)b",
        r"x(?:ab|c)+y",
        r"!{2}",
        r"a.?b",
        r"\bab\b",
        r"(?:yx|c a)1",
    ]
)


@st.composite
def rules_strategy(draw: st.DrawFn) -> list[Rule]:
    count = draw(st.integers(min_value=1, max_value=12))
    out = []
    for i in range(count):
        mode = draw(st.sampled_from(list(RuleMode)))
        pattern = draw(regex) if mode is RuleMode.REGEX else draw(literal)
        out.append(Rule(i + 1, pattern, mode, draw(st.sampled_from(BRANDS))))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rules=rules_strategy(),
    messages=st.lists(
        st.tuples(st.sampled_from(BRANDS), st.text(ALPHABET, max_size=20)), max_size=15
    ),
)
def test_compiled_matcher_agrees_with_the_plain_matcher(
    rules: list[Rule], messages: list[tuple[str | None, str]]
) -> None:
    matcher = SpamMatcher(rules)
    batch = matcher.match_batch(messages)
    for (brand, text), in_batch in zip(messages, batch, strict=True):
        expected = reference_matches(rules, brand, text)
        got = matcher.match(brand, text)
        assert in_batch == got
        assert bool(got) == bool(expected)
        assert matcher.is_spam(brand, text) == bool(expected)
        # exactly the rules that match, none reported twice
        assert set(got) == expected
        assert len(got) == len(set(got))


def test_regex_rules_are_matched_case_insensitively() -> None:
    rule = Rule(1, "[A-Z]{3}", RuleMode.REGEX)
    assert SpamMatcher([rule]).match(None, "abc") == (1,)
    assert re.search("[A-Z]{3}", "abc") is None  # the raw pattern would not


@settings(max_examples=200, deadline=None)
@given(pattern=regex, text=st.text(ALPHABET + "ABXY", max_size=25))
def test_required_literals_are_really_required(pattern: str, text: str) -> None:
    t = normalize(text)
    clauses = required_literals(pattern)
    if re.search(pattern, t, re.IGNORECASE) is not None:
        for clause in clauses:
            assert any(literal in t for literal in clause), (pattern, t, clause)


def test_required_literals_examples() -> None:
    assert required_literals(r"\bwin+er\b") == (("ner",), ("win",))
    assert required_literals(r"(?:free|cheap) pills") == ((" pills",), ("free", "cheap"))
    assert required_literals(r"(?:!){3,}") == (("!!!",),)
    assert required_literals(r"(a|)b") == (("b",),)
    assert required_literals(r"\d+") == ()


def test_batch_edges() -> None:
    matcher = SpamMatcher([Rule(1, "ab", RuleMode.WORD), Rule(2, r"b\sa", RuleMode.REGEX)])
    # a match never spans two messages of a batch
    assert matcher.match_batch([(None, "x ab"), (None, "ab y"), (None, "b"), (None, "a")]) == [
        (1,),
        (1,),
        (),
        (),
    ]
    assert matcher.match_batch([]) == []
