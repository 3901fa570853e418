"""Spam rules compiled once per rule set into one matcher per brand.

The founding spec tried every rule on every message, one by one. Here a rule
set is compiled once (:meth:`SpamMatcher.compile`) into, per brand, a single
regular expression: the literal rules (``CONTAINS`` and ``WORD``) become a
trie-shaped alternation, so the regex engine walks a message once instead of
once per rule, and the ``REGEX`` rules join the same alternation;
``EXACT`` rules are a dictionary lookup. Rules without a brand apply to every
brand; a rule with a brand only to that brand's messages.

Text and patterns are compared after :func:`normalize` (lower case, runs of
white space collapsed to one space, trimmed). ``WORD`` matches the pattern
between non-word characters (or the ends of the text); ``REGEX`` is searched in
the normalised text, ignoring case.

:func:`reference_matches` is the plain way (every rule on every message), kept
as the oracle the tests compare against.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Rule",
    "RuleMode",
    "SpamMatcher",
    "fingerprint",
    "normalize",
    "normalize_brand",
    "reference_matches",
]


class RuleMode(enum.StrEnum):
    """How a rule's pattern is compared with a message."""

    CONTAINS = "CONTAINS"
    WORD = "WORD"
    REGEX = "REGEX"
    EXACT = "EXACT"


_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower case, white space collapsed, trimmed: how texts and patterns are compared."""
    return _SPACES.sub(" ", text.lower()).strip()


def normalize_brand(brand: str | None) -> str | None:
    """Brands compare case-insensitively; an empty brand means "every brand"."""
    if brand is None:
        return None
    out = brand.strip().lower()
    return out or None


@dataclass(frozen=True, slots=True)
class Rule:
    """One enabled spam rule, as the matcher sees it."""

    id: int
    pattern: str
    mode: RuleMode
    brand: str | None = None
    normalized: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        mode = RuleMode(self.mode)
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "brand", normalize_brand(self.brand))
        norm = self.pattern.strip() if mode is RuleMode.REGEX else normalize(self.pattern)
        if not norm:
            raise ValueError(f"pattern={self.pattern!r}: a spam rule needs a non-empty pattern")
        if mode is RuleMode.REGEX:
            try:
                re.compile(norm, re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"pattern={self.pattern!r}: not a valid regex ({exc})") from None
        object.__setattr__(self, "normalized", norm)


def fingerprint(rules: Iterable[Rule]) -> str:
    """A key identifying a rule set (order-independent): the matcher cache's key."""
    h = hashlib.sha256()
    for rule in sorted(rules, key=lambda r: r.id):
        h.update(f"{rule.id}\0{rule.mode}\0{rule.brand or ''}\0{rule.normalized}\n".encode())
    return h.hexdigest()


# --- the plain way: the oracle -----------------------------------------------------

_WORD_CHAR = re.compile(r"\w")


def _is_word(ch: str) -> bool:
    return bool(_WORD_CHAR.match(ch))


def _word_in(needle: str, text: str) -> bool:
    start = text.find(needle)
    while start >= 0:
        end = start + len(needle)
        before_ok = start == 0 or not _is_word(text[start - 1])
        after_ok = end == len(text) or not _is_word(text[end])
        if before_ok and after_ok:
            return True
        start = text.find(needle, start + 1)
    return False


def reference_matches(rules: Iterable[Rule], brand: str | None, text: str) -> set[int]:
    """The ids of every rule matching ``text`` of ``brand``, trying each rule in turn."""
    b = normalize_brand(brand)
    t = normalize(text)
    out: set[int] = set()
    for rule in rules:
        if rule.brand is not None and rule.brand != b:
            continue
        p = rule.normalized
        if rule.mode is RuleMode.CONTAINS:
            hit = p in t
        elif rule.mode is RuleMode.WORD:
            hit = _word_in(p, t)
        elif rule.mode is RuleMode.EXACT:
            hit = p == t
        else:
            hit = re.search(p, t, re.IGNORECASE) is not None
        if hit:
            out.add(rule.id)
    return out


# --- the compiled way --------------------------------------------------------------


def _trie_pattern(words: Iterable[str]) -> str:
    """One regex matching any of ``words``, shaped as a trie (shared prefixes once)."""
    trie: dict[str, dict] = {}  # type: ignore[type-arg]  # recursive
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:  # type: ignore[type-arg]
        end = "" in node
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if end:
            body = f"(?:{body})?"
        return body

    return build(trie)


@dataclass(slots=True)
class _Scope:
    """The compiled rules that apply to one brand."""

    regex: re.Pattern[str] | None
    contains: dict[str, tuple[int, ...]]
    words: dict[str, tuple[int, ...]]
    regex_groups: dict[str, int]  # group name -> rule id
    exact: dict[str, tuple[int, ...]]
    separate: tuple[tuple[re.Pattern[str], int], ...]  # regex rules that cannot be combined


def _group_by_text(rules: Iterable[Rule]) -> dict[str, tuple[int, ...]]:
    out: dict[str, list[int]] = {}
    for rule in rules:
        out.setdefault(rule.normalized, []).append(rule.id)
    return {k: tuple(v) for k, v in out.items()}


def _compile_scope(rules: Sequence[Rule]) -> _Scope:
    contains = _group_by_text(r for r in rules if r.mode is RuleMode.CONTAINS)
    words = _group_by_text(r for r in rules if r.mode is RuleMode.WORD)
    exact = _group_by_text(r for r in rules if r.mode is RuleMode.EXACT)
    parts: list[str] = []
    if contains:
        parts.append(f"(?P<c>{_trie_pattern(contains)})")
    if words:
        parts.append(rf"(?<!\w)(?P<w>{_trie_pattern(words)})(?!\w)")
    regex_groups: dict[str, int] = {}
    separate: list[tuple[re.Pattern[str], int]] = []
    for rule in rules:
        if rule.mode is not RuleMode.REGEX:
            continue
        alone = re.compile(rule.normalized, re.IGNORECASE)
        name = f"r{len(regex_groups)}"
        candidate = f"(?P<{name}>(?i:{rule.normalized}))"
        # A rule with its own groups (back references, names) or global inline
        # flags cannot join the alternation safely: it is searched on its own.
        ok = alone.groups == 0
        if ok:
            try:
                re.compile(candidate)
            except re.error:
                ok = False
        if ok:
            parts.append(candidate)
            regex_groups[name] = rule.id
        else:
            separate.append((alone, rule.id))
    regex = re.compile("|".join(parts)) if parts else None
    return _Scope(regex, contains, words, regex_groups, exact, tuple(separate))


class SpamMatcher:
    """Every enabled rule of a rule set, compiled once; :meth:`match` per message.

    Thread-safe to share: compiled scopes are cached per brand on first use.
    """

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.fingerprint = fingerprint(self.rules)
        self._global = [r for r in self.rules if r.brand is None]
        self._by_brand: dict[str, list[Rule]] = {}
        for rule in self.rules:
            if rule.brand is not None:
                self._by_brand.setdefault(rule.brand, []).append(rule)
        self._scopes: dict[str | None, _Scope] = {None: _compile_scope(self._global)}

    @classmethod
    def compile(cls, rules: Iterable[Rule]) -> SpamMatcher:
        return cls(rules)

    def _scope(self, brand: str | None) -> _Scope:
        b = normalize_brand(brand)
        if b not in self._by_brand:
            return self._scopes[None]
        scope = self._scopes.get(b)
        if scope is None:
            scope = _compile_scope([*self._global, *self._by_brand[b]])
            self._scopes[b] = scope
        return scope

    def match(self, brand: str | None, text: str) -> tuple[int, ...]:
        """The ids of the rules that caught ``text`` (empty when it is not spam).

        Every rule found in one left-to-right scan is reported (at each place
        where several rules match, the one the scan meets first): enough to
        show a reviewer why a message was caught, at the cost of one pass.
        """
        scope = self._scope(brand)
        t = normalize(text)
        found: list[int] = []
        ids = scope.exact.get(t)
        if ids:
            found.extend(ids)
        regex = scope.regex
        if regex is not None:
            for m in regex.finditer(t):
                group = m.lastgroup
                if group == "c":
                    found.extend(scope.contains[m.group("c")])
                elif group == "w":
                    found.extend(scope.words[m.group("w")])
                elif group is not None:
                    found.append(scope.regex_groups[group])
        for alone, rule_id in scope.separate:
            if alone.search(t) is not None:
                found.append(rule_id)
        return tuple(dict.fromkeys(found))

    def is_spam(self, brand: str | None, text: str) -> bool:
        scope = self._scope(brand)
        t = normalize(text)
        if t in scope.exact:
            return True
        if scope.regex is not None and scope.regex.search(t) is not None:
            return True
        return any(alone.search(t) is not None for alone, _ in scope.separate)

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"SpamMatcher(rules={len(self.rules)}, brands={sorted(self._by_brand)})"
