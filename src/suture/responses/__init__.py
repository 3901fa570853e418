"""Response validation: any HTTP response becomes one frozen :class:`Outcome`.

:func:`validate_response` reads a response (an ``httpx.Response``, read or
streamed, anything with ``status``/``headers``/``body``, or a
:class:`SimpleResponse`) and answers, without ever raising: did it succeed,
what is the data, and if not, what is a short, plain-text, one-line reason a
person can read, how long does the server ask us to wait, and is it worth
trying again.

* Success: JSON (``application/json``, any ``+json``, ``text/json``, with
  parameters; a UTF-8 byte order mark is tolerated) parsed into ``data``; 204,
  205 and 304 are ok with ``data=None``; an optional ``schema`` validates it.
* Failure: the reason comes from the body's common JSON shapes (``error``,
  ``message``, ``detail``, RFC 9457 problem details, GraphQL ``errors``), an
  HTML page's ``<title>`` or first ``<h1>`` (read by the standard library's
  HTML tokenizer, never by regular expressions), or a text body's first line;
  else a fallback naming the status ("HTTP 502 Bad Gateway").
* Only the first ``max_error_bytes`` of a failed response are read; a streamed
  response is closed without reading the rest, so a 40 MB error page costs
  what a small one does.
* No markup survives into ``error``: entities decoded, tags and scripts
  dropped, whitespace collapsed, control characters removed, at most 300
  characters.

This package imports no HTTP library: responses are read by duck typing. Its
rooms, lowest first (each imports only those above it):

* ``outcome``: the public types (:class:`Outcome`, :class:`SimpleResponse`,
  :class:`ResponseLike`, ``Expect``) and the limits;
* ``_duck``: a response's status, URL, headers, in-memory body;
* ``_html``, ``_json``: plain text from markup and bytes (:func:`clean_text`),
  the reason and ``retryAfter`` of a JSON body;
* ``reading``: the public bounded readers, sync and async, with the inflater;
* ``_plan``: the decision, no I/O;
* ``validate``: the two entry points, a few lines each.
"""

from suture.responses._html import clean_text
from suture.responses._plan import outcome_from_exception
from suture.responses.outcome import (
    ERROR_LIMIT,
    SNIPPET_LIMIT,
    Expect,
    Outcome,
    ResponseLike,
    SimpleResponse,
    with_attempts,
)
from suture.responses.reading import (
    AsyncStreamError,
    Inflater,
    aread_body,
    aread_prefix,
    read_body,
    read_prefix,
)
from suture.responses.validate import avalidate_response, validate_response

__all__ = [
    "ERROR_LIMIT",
    "SNIPPET_LIMIT",
    "AsyncStreamError",
    "Expect",
    "Inflater",
    "Outcome",
    "ResponseLike",
    "SimpleResponse",
    "aread_body",
    "aread_prefix",
    "avalidate_response",
    "clean_text",
    "outcome_from_exception",
    "read_body",
    "read_prefix",
    "validate_response",
    "with_attempts",
]
