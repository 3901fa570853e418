"""Plain text from markup and bytes: the HTML error-page reader and :func:`clean_text`.

Read by the standard library's tokenizer (``html.parser``), never by regular
expressions, and bounded however hostile the page: see ``docs/responses.md``,
"Bounded reads". No I/O; imports only :mod:`suture.responses.outcome` (the limits).
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from html.parser import HTMLParser
from typing import Final

from suture.responses.outcome import ERROR_LIMIT, SNIPPET_LIMIT

__all__ = [
    "CHUNK",
    "MAX_TAGS",
    "MAX_TAIL",
    "ErrorPage",
    "TextOnly",
    "clean_text",
    "decode",
    "first_line",
    "plain_line",
    "text_snippet",
]

_SKIPPED_TAGS: Final = frozenset({"script", "style", "template", "noscript", "svg", "math"})


# --- bytes to text ------------------------------------------------------------------


def _charset(params: str) -> str:
    for part in params.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset":
            name = value.strip().strip("\"'")
            try:
                return codecs.lookup(name).name
            except LookupError:
                return "utf-8"
    return "utf-8"


def decode(body: bytes, params: str) -> str:
    charset = _charset(params) if params else "utf-8"
    if charset == "utf-8" and body.startswith(codecs.BOM_UTF8):
        body = body[3:]
    try:
        return body.decode(charset, errors="replace")
    except Exception:  # a codec that does not take errors=, or a broken one
        return body.decode("utf-8", errors="replace")


def text_snippet(body: bytes, params: str) -> str:
    if not body:
        return ""
    return clean_text(decode(body[: SNIPPET_LIMIT * 4], params), limit=SNIPPET_LIMIT)


def first_line(text: str) -> str:
    for line in text[: ERROR_LIMIT * 8].splitlines():
        if line.strip():
            return line
    return ""


# --- the error page ----------------------------------------------------------------


CHUNK: Final = 2048
# The most unparsed text the tokenizer may hold: an unterminated tag, comment or
# script longer than _MAX_PENDING ends the reading, and one longer than MAX_TAIL
# left at the end is dropped rather than re-read character by character by close().
_MAX_PENDING: Final = 32768
# A real error page says what it has to say long before this many tags; a page of
# nothing but tags (say ``<title>`` repeated) stops here instead of costing ~20 ms.
MAX_TAGS: Final = 2048
MAX_TAIL: Final = 256
# Where tokenizing resumes after a skip: the tags we look for, and every construct
# whose content is not markup (so a "<h1" inside it is never mistaken for a tag).
_RESUME_AT: Final = (
    "<h1",
    "<title",
    "<script",
    "<style",
    "<!",
    "<template",
    "<noscript",
    "<svg",
    "<math",
    "<textarea",
    "<xmp",
    "<iframe",
    "<noembed",
    "<noframes",
    "<plaintext",
)


class _Stop(Exception):
    """Raised inside the parser when it has read enough."""


class ErrorPage(HTMLParser):
    """Reads an HTML error page: its ``<title>``, its first ``<h1>``, and the start
    of its visible text. Scripts, styles and templates are dropped; entities are
    decoded by the tokenizer. Stops as soon as it has what it needs."""

    def __init__(self, snippet_limit: int = SNIPPET_LIMIT) -> None:
        super().__init__(convert_charrefs=True)
        self.title: list[str] = []
        self.h1: list[str] = []
        self.text: list[str] = []
        self._text_len = 0
        self._snippet_limit = snippet_limit
        self._skip = 0
        self._in_title = False
        self._in_h1 = False
        self._title_done = False
        self._h1_done = False
        self._tags = 0

    def _count_tag(self) -> None:
        self._tags += 1
        if self._tags > MAX_TAGS:
            raise _Stop

    @classmethod
    def read(cls, markup: str) -> ErrorPage:
        page = cls()
        try:
            page._run(markup)
        except _Stop:
            pass
        except Exception:  # the tokenizer is lenient, but be sure: keep what was read
            pass
        return page

    def _run(self, markup: str) -> None:
        """Tokenize ``markup`` in chunks. Once the snippet is full, text that can hold
        neither a title nor an h1 is skipped: the tokenizer resumes at the next tag
        that matters (``<h1``, ``<title``) or that changes how text is read
        (scripts, styles, comments, ``<svg>``...), so a long page without a title
        costs no more than a short one."""
        lowered: str | None = None
        pos, end = 0, len(markup)
        while pos < end:
            nxt = min(pos + CHUNK, end)
            self.feed(markup[pos:nxt])
            pos = nxt
            if (
                pos < end
                and self._text_len >= self._snippet_limit
                and not (self._skip or self._in_title or self._in_h1)
                and self.rawdata in ("", "<")  # nothing pending, or a "<" cut by the chunk
                and self.cdata_elem is None
            ):
                if lowered is None:
                    lowered = markup.lower()
                start = pos - len(self.rawdata)
                hits = [i for m in _RESUME_AT if (i := lowered.find(m, start)) >= 0]
                if not hits:
                    raise _Stop
                self.rawdata = ""
                pos = min(hits)
            pending = self.rawdata
            if len(pending) > _MAX_PENDING:
                break  # an unterminated construct this long is not a page worth reading
            if (
                pos < end
                and len(pending) > 1
                and pending[0] == "<"
                and pending[1].isalpha()
                and self.cdata_elem is None
                and markup.find(">", pos) < 0
            ):
                break  # an open tag that nothing ahead can close: no tag can follow it
        if len(self.rawdata) > MAX_TAIL:
            # close() hands an unterminated tag or comment to the tokenizer again one
            # character at a time, which costs the square of its length: drop it.
            self.rawdata = ""
        self.close()

    @property
    def message(self) -> str:
        """The title, else the first h1, as one line of text: tags met inside them were
        dropped by the tokenizer, entities decoded; what the decoding made is text
        and stays, in look-alikes (:func:`plain_line`), never read as markup again."""
        for parts in (self.title, self.h1):
            line = plain_line("".join(parts))
            if line:
                return line
        return ""

    @property
    def snippet(self) -> str:
        return plain_line(" ".join(self.text), limit=SNIPPET_LIMIT)

    def _enough(self) -> bool:
        return (self._title_done or self._h1_done) and self._text_len >= self._snippet_limit

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._count_tag()
        if tag in _SKIPPED_TAGS:
            self._skip += 1
        elif tag == "title" and not self._title_done:
            self._in_title = True
        elif tag == "h1" and not self._h1_done:
            self._in_h1 = True

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._count_tag()  # <br/>, <script/>: nothing opens

    def handle_endtag(self, tag: str) -> None:
        self._count_tag()
        if tag in _SKIPPED_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag == "title" and self._in_title:
            self._in_title = False
            self._title_done = bool("".join(self.title).strip())
        elif tag == "h1" and self._in_h1:
            self._in_h1 = False
            self._h1_done = bool("".join(self.h1).strip())
        if self._enough():
            raise _Stop

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_title:
            self.title.append(data)
        elif self._in_h1:
            self.h1.append(data)
        if self._text_len < self._snippet_limit and not self._in_title:
            stripped = data.strip()
            if stripped:
                self.text.append(stripped)
                self._text_len += len(stripped) + 1


class TextOnly(HTMLParser):
    """Text of a fragment with every tag, script and style removed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip += 1
        self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip = max(0, self._skip - 1)
        self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _strip_tags(text: str) -> str:
    parser = TextOnly()
    try:
        parser.feed(text)
        if len(parser.rawdata) > MAX_TAIL:
            parser.rawdata = ""  # as in ErrorPage._run: close() would cost its square
        parser.close()
    except Exception:
        pass
    return "".join(parser.parts)


_DROPPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

# What would open a tag, a comment or a declaration: "<" and an ASCII letter, "/",
# "!" or "?" (the HTML tokenizer's rule). The same pattern is in suture.js.
_TAG_START: Final = re.compile(r"<[A-Za-z/!?]")
# Such a "<" and what follows it up to the ">" that would close it, if any.
_TAG_LIKE: Final = re.compile(r"<([A-Za-z/!?][^<>]*)(>?)")
_LOOK_ALIKE_OPEN: Final = "\u2039"  # ‹ SINGLE LEFT-POINTING ANGLE QUOTATION MARK
_LOOK_ALIKE_CLOSE: Final = "\u203a"  # › SINGLE RIGHT-POINTING ANGLE QUOTATION MARK


def clean_text(text: str, *, limit: int = ERROR_LIMIT) -> str:
    """Markup (or text) in, one line of plain text out: at most ``limit`` characters.

    Read once by the HTML tokenizer: tags, scripts and styles dropped, entities
    decoded. Then the text is never read as markup again: it goes through
    :func:`plain_line`, so ``"Tom &amp; Jerry&#39;s &lt;API&gt; is down"``
    becomes ``"Tom & Jerry's \u2039API\u203a is down"``: the words kept, no markup.
    """
    if not text:
        return ""
    text = text[: limit * 8]
    if "&" in text or _TAG_START.search(text):
        text = _strip_tags(_drop_controls(text))
    return plain_line(text, limit=limit)


def plain_line(text: str, *, limit: int = ERROR_LIMIT) -> str:
    """Text in (already decoded: a page's title, a tokenizer's text), one line out.

    Control and format characters removed, whitespace collapsed, at most
    ``limit`` characters (a longer text ends with "…"). Nothing is dropped as
    markup: a "<" that would open a tag becomes "\u2039" and the ">" that would
    close it "\u203a", look-alikes no HTML parser reads as a tag, so the words
    stay and no sink (``innerHTML``, a template, a log viewer) sees markup.
    """
    if not text:
        return ""
    text = " ".join(_drop_controls(text[: limit * 8]).split())
    if "<" in text:
        text = _TAG_LIKE.sub(_look_alike, text)
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def _look_alike(match: re.Match[str]) -> str:
    return _LOOK_ALIKE_OPEN + match[1] + (_LOOK_ALIKE_CLOSE if match[2] else "")


def _drop_controls(text: str) -> str:
    if text.isascii() and text.isprintable():
        return text
    return "".join(
        " " if ch.isspace() else ("" if unicodedata.category(ch) in _DROPPED_CATEGORIES else ch)
        for ch in text
    )
