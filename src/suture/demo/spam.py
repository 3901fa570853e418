# Over ~400 lines on purpose: one algorithm (compile a rule set, scan batches) and its oracle.
"""Spam rules compiled once per rule set into one matcher per brand.

The founding spec tried every rule on every message, one by one. Here a rule
set is compiled once (:meth:`SpamMatcher.compile`) into one matcher per brand:
the literal rules (``CONTAINS`` and ``WORD``) become a single trie-shaped
regular expression, so the regex engine walks a message once instead of once
per rule; a ``REGEX`` rule is searched only in texts that contain the literals
every match of it needs (:func:`required_literals`); ``EXACT`` rules are a
dictionary lookup. :meth:`SpamMatcher.match_batch` scans a whole batch of one
brand in one call. Rules without a brand apply to every brand; a rule with a
brand only to that brand's messages.

Text and patterns are compared after :func:`normalize` (lower case, runs of
white space collapsed to one space, trimmed). ``WORD`` matches the pattern
between non-word characters (or the ends of the text); ``REGEX`` is searched in
the normalised text, ignoring case.

:func:`reference_matches` is the plain way (every rule on every message), kept
as the oracle the tests compare against.
"""

from __future__ import annotations

import bisect
import enum
import functools
import hashlib
import importlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Rule",
    "RuleMode",
    "SpamMatcher",
    "fingerprint",
    "normalize",
    "normalize_brand",
    "reference_matches",
    "required_literals",
]


class RuleMode(enum.StrEnum):
    """How a rule's pattern is compared with a message."""

    CONTAINS = "CONTAINS"
    WORD = "WORD"
    REGEX = "REGEX"
    EXACT = "EXACT"


def normalize(text: str) -> str:
    """Lower case, white space collapsed, trimmed: how texts and patterns are compared."""
    # str.split() splits where re's \s matches (both ask Py_UNICODE_ISSPACE), in C.
    return " ".join(text.lower().split())


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
        if "\n" in norm or "\r" in norm:  # only a REGEX keeps its line breaks
            raise ValueError(f"pattern={self.pattern!r}: a spam rule is a single line")
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


try:  # the regex parser, to find the literals a REGEX rule cannot match without
    _PARSER: Any = importlib.import_module("re._parser")
except ImportError:  # pragma: no cover - a Python without it: no prefilter, still correct
    _PARSER = None


Clause = tuple[str, ...]
"""Alternatives: every match of a pattern contains at least one of them."""


def _clauses(items: Any) -> list[Clause]:
    """The literal clauses of a parsed pattern sequence (all of them required)."""
    out: list[Clause] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            out.append(("".join(current),))
            current.clear()

    for op, av in items:
        name = str(op)
        if name == "LITERAL" and av < 128:
            current.append(chr(av).lower())
            continue
        if name in ("MAX_REPEAT", "MIN_REPEAT") and av[0] >= 1:
            low, high, body = av
            body = list(body)
            if len(body) == 1 and str(body[0][0]) == "LITERAL" and body[0][1] < 128:
                char = chr(body[0][1]).lower()
                current.extend([char] * low)  # "ab{2,}c" needs "abb", then "bbc"
                if low != high:
                    flush()
                    current.extend([char] * low)
                continue
            flush()
            out.extend(_clauses(body))  # the body matches at least once
            continue
        flush()
        if name == "SUBPATTERN":
            out.extend(_clauses(av[3]))  # a group in a required position is required
        elif name == "BRANCH":
            best: list[str] = []
            for alternative in av[1]:
                inner = [c[0] for c in _clauses(alternative) if len(c) == 1]
                if not inner:
                    break  # one alternative needs no literal: nothing is required
                best.append(max(inner, key=len))
            else:
                out.append(tuple(dict.fromkeys(best)))
    flush()
    return out


def required_literals(pattern: str) -> tuple[Clause, ...]:
    """What every match of ``pattern`` contains, as clauses of ASCII alternatives (lower case).

    ``\\bwin+er\\b`` gives ``(("er",), ("win",))``; ``(?:free|cheap) pills`` gives
    ``(("free", "cheap"), (" pills",))``. A REGEX rule is only searched in an
    ASCII text that satisfies its most selective clauses: the regex engine
    cannot skip ahead on such patterns, but ``"win" in text`` is one fast C
    call. (In a non-ASCII text case folding has exceptions, such as "ſ"
    matching "s", so such texts are always searched.)
    """
    if _PARSER is None:
        return ()
    try:
        parsed = _PARSER.parse(pattern, re.IGNORECASE)
    except Exception:  # the rule was validated with re.compile; this is only a shortcut
        return ()
    clauses = set(_clauses(parsed))
    # The most selective first: the one whose shortest alternative is longest.
    ranked = sorted(clauses, key=lambda c: (-min(map(len, c)), len(c), c))
    strong = [c for c in ranked if min(map(len, c)) >= 2]
    return tuple(strong[:3] or ranked[:1])


def _satisfies(text: str, clauses: tuple[Clause, ...]) -> bool:
    for clause in clauses:
        for literal in clause:
            if literal in text:
                break
        else:
            return False
    return True


Prefix = tuple[int, tuple[int, ...], tuple[int, ...]]
"""A literal rule text that a longer one starts with: (length, CONTAINS ids, WORD ids)."""


@dataclass(slots=True)
class _Scope:
    """The compiled rules that apply to one brand."""

    #: Every CONTAINS and WORD literal in one trie-shaped regex: it finds, at the
    #: leftmost position where any literal starts, the longest one starting there.
    literals: re.Pattern[str] | None
    #: For each literal the regex can return: every rule literal it starts with.
    prefixes: dict[str, tuple[Prefix, ...]]
    exact: dict[str, tuple[int, ...]]
    #: REGEX rules, each with the literal clauses a match needs (maybe none).
    regexes: tuple[tuple[tuple[Clause, ...], re.Pattern[str], int], ...]


def _group_by_text(rules: Iterable[Rule]) -> dict[str, tuple[int, ...]]:
    out: dict[str, list[int]] = {}
    for rule in rules:
        out.setdefault(rule.normalized, []).append(rule.id)
    return {k: tuple(v) for k, v in out.items()}


def _compile_scope(rules: Sequence[Rule]) -> _Scope:
    contains = _group_by_text(r for r in rules if r.mode is RuleMode.CONTAINS)
    words = _group_by_text(r for r in rules if r.mode is RuleMode.WORD)
    exact = _group_by_text(r for r in rules if r.mode is RuleMode.EXACT)
    texts = sorted(set(contains) | set(words))
    prefixes: dict[str, tuple[Prefix, ...]] = {}
    for text in texts:
        prefixes[text] = tuple(
            (k, contains.get(text[:k], ()), words.get(text[:k], ()))
            for k in range(1, len(text) + 1)
            if text[:k] in contains or text[:k] in words
        )
    # No groups and no look-arounds: the pattern is a plain alternation of
    # literals, so the regex engine skips ahead on the possible first characters.
    literals = re.compile(_trie_pattern(texts)) if texts else None
    regexes = tuple(
        (required_literals(r.normalized), re.compile(r.normalized, re.IGNORECASE), r.id)
        for r in rules
        if r.mode is RuleMode.REGEX
    )
    return _Scope(literals, prefixes, exact, regexes)


def _scan_literals(
    scope: _Scope, text: str, on_hit: Callable[[int, tuple[int, ...]], None]
) -> None:
    """Every occurrence of every CONTAINS and WORD rule in ``text``: ``on_hit(position, ids)``.

    The regex finds the longest literal at the leftmost position; every rule
    literal starting there is a prefix of it. The scan then resumes one
    character later, so overlapping occurrences are found too.
    """
    regex = scope.literals
    if regex is None:
        return
    search = regex.search
    prefixes = scope.prefixes
    end = len(text)
    pos = 0
    while (m := search(text, pos)) is not None:
        start = m.start()
        for length, contains_ids, word_ids in prefixes[m.group()]:
            if contains_ids:
                on_hit(start, contains_ids)
            if word_ids:
                after = start + length
                if (start == 0 or not _is_word(text[start - 1])) and (
                    after == end or not _is_word(text[after])
                ):
                    on_hit(start, word_ids)
        pos = start + 1


def _batch_hit(
    found: list[list[int]], indexes: list[int], starts: list[int], pos: int, ids: tuple[int, ...]
) -> None:
    """Credit a hit at ``pos`` of a joined batch to the text it falls in."""
    found[indexes[bisect.bisect_right(starts, pos) - 1]].extend(ids)


def _candidates(joined: str, starts: list[int], clauses: tuple[Clause, ...]) -> set[int]:
    """Indexes of the texts (joined with newlines, starting at ``starts``) that satisfy
    every clause: each literal is found with ``str.find`` over the whole batch at once."""
    result: set[int] | None = None
    end = len(joined)
    count = len(starts)
    for clause in clauses:
        hits: set[int] = set()
        for literal in clause:
            pos = joined.find(literal)
            while pos != -1:
                i = bisect.bisect_right(starts, pos) - 1
                hits.add(i)
                pos = joined.find(literal, starts[i + 1] if i + 1 < count else end)
        result = hits if result is None else result & hits
        if not result:
            return set()
    return result if result is not None else set(range(count))


class SpamMatcher:
    """Every enabled rule of a rule set, compiled once; :meth:`match` per message,
    :meth:`match_batch` for many at once.

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

    def _scope_key(self, brand: str | None) -> str | None:
        b = normalize_brand(brand)
        return b if b in self._by_brand else None

    def _scope(self, brand: str | None) -> _Scope:
        key = self._scope_key(brand)
        scope = self._scopes.get(key)
        if scope is None:
            assert key is not None
            scope = _compile_scope([*self._global, *self._by_brand[key]])
            self._scopes[key] = scope
        return scope

    def match(self, brand: str | None, text: str) -> tuple[int, ...]:
        """The ids of the rules that caught ``text`` (empty when it is not spam).

        Every matching rule is reported, each once, in the order found.
        """
        scope = self._scope(brand)
        t = normalize(text)
        found: list[int] = list(scope.exact.get(t, ()))
        _scan_literals(scope, t, lambda _pos, ids: found.extend(ids))
        if scope.regexes:
            ascii_text = t.isascii()
            for clauses, regex, rule_id in scope.regexes:
                if ascii_text and not _satisfies(t, clauses):
                    continue
                if regex.search(t) is not None:
                    found.append(rule_id)
        return tuple(dict.fromkeys(found))

    def match_batch(self, items: Sequence[tuple[str | None, str]]) -> list[tuple[int, ...]]:
        """:meth:`match` for many ``(brand, text)`` pairs; the same answers, faster.

        The texts of one brand are normalised and joined with newlines (which a
        normalised text never contains and no literal rule matches), so the
        literal scan is one regex call per brand and batch, and each REGEX
        rule's required literals are looked up with one ``str.find`` sweep;
        the regex itself runs only on the texts that contain them.
        """
        found: list[list[int]] = [[] for _ in items]
        groups: dict[str | None, list[int]] = {}
        for index, (brand, _) in enumerate(items):
            groups.setdefault(self._scope_key(brand), []).append(index)
        for key, indexes in groups.items():
            scope = self._scope(key)
            texts = [normalize(items[i][1]) for i in indexes]
            for text, i in zip(texts, indexes, strict=True):
                ids = scope.exact.get(text)
                if ids:
                    found[i].extend(ids)
            starts: list[int] = []
            offset = 0
            for text in texts:
                starts.append(offset)
                offset += len(text) + 1
            joined = "\n".join(texts)

            _scan_literals(scope, joined, functools.partial(_batch_hit, found, indexes, starts))
            if scope.regexes:
                non_ascii = (
                    set()
                    if joined.isascii()
                    else {j for j, t in enumerate(texts) if not t.isascii()}
                )
                for clauses, regex, rule_id in scope.regexes:
                    candidates = _candidates(joined, starts, clauses) | non_ascii
                    for local in sorted(candidates):
                        if regex.search(texts[local]) is not None:
                            found[indexes[local]].append(rule_id)
        return [tuple(dict.fromkeys(ids)) for ids in found]

    def is_spam(self, brand: str | None, text: str) -> bool:
        """Whether any rule matches ``text`` (stops at the first)."""
        scope = self._scope(brand)
        t = normalize(text)
        if t in scope.exact:
            return True
        hits: list[int] = []
        _scan_literals(scope, t, lambda _pos, ids: hits.extend(ids))
        if hits:
            return True
        ascii_text = t.isascii()
        return any(
            (not ascii_text or _satisfies(t, clauses)) and regex.search(t) is not None
            for clauses, regex, _ in scope.regexes
        )

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"SpamMatcher(rules={len(self.rules)}, brands={sorted(self._by_brand)})"
