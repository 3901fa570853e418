"""The entry points: :func:`validate_response` and :func:`avalidate_response`.

Each is the same few lines around one :class:`~suture.responses._plan.Plan`
(which decides, with no I/O) and the bounded readers of
:mod:`suture.responses.reading`; they differ only in how the body is read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from suture.clock import SYSTEM_CLOCK, Clock
from suture.responses._plan import NO_CONTENT, Plan
from suture.responses.outcome import Expect, Outcome
from suture.responses.reading import (
    aclose_quietly,
    aread_body,
    aread_prefix,
    close_quietly,
    read_body,
    read_prefix,
)

__all__ = ["avalidate_response", "validate_response"]


def validate_response(
    response: object,
    *,
    expect: Expect = "json",
    schema: Any = None,
    max_error_bytes: int = 65536,
    classifier: Callable[[int], bool] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    emit_events: bool = True,
) -> Outcome:
    """Validate ``response`` and return its :class:`Outcome`. Never raises on a response.

    :param response: an ``httpx.Response`` (read, or streamed from a sync
        client), anything with ``status``/``headers``/``body``
        (:class:`ResponseLike`), a ``requests`` response, or a file-like
        response with ``read(n)`` (``urllib``).
    :param expect: ``"json"`` (default), ``"text"``, ``"bytes"`` or ``"auto"``.
    :param schema: a pydantic model (anything with ``model_validate``) or a
        callable applied to the data; a failure makes the outcome not ok.
    :param max_error_bytes: at most this many bytes of a failed response are read.
    :param classifier: ``status -> transient?``; default ``suture.is_transient``'s statuses.
    :param clock: for HTTP-date ``Retry-After`` values.
    :param emit_events: emit :class:`suture.events.ResponseRejected` for failures.
    """
    plan = Plan.start(response, expect, schema, max_error_bytes, classifier, clock)
    if plan.outcome is None:
        try:
            if plan.wants_full_body:
                body = read_body(response)
            else:
                body = read_prefix(response, plan.limit)
        except Exception as exc:
            plan.read_failed(exc)
        else:
            plan.finish(body)
    elif plan.status in NO_CONTENT:
        close_quietly(response)
    return plan.result(emit_events)


async def avalidate_response(
    response: object,
    *,
    expect: Expect = "json",
    schema: Any = None,
    max_error_bytes: int = 65536,
    classifier: Callable[[int], bool] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    emit_events: bool = True,
) -> Outcome:
    """:func:`validate_response` for responses streamed from an async client.

    Reads with ``aiter_bytes``/``aread`` (httpx) or an awaitable ``read``
    (aiohttp-style); anything already in memory is handled as in the sync
    version.
    """
    plan = Plan.start(response, expect, schema, max_error_bytes, classifier, clock)
    if plan.outcome is None:
        try:
            if plan.wants_full_body:
                body = await aread_body(response)
            else:
                body = await aread_prefix(response, plan.limit)
        except Exception as exc:
            plan.read_failed(exc)
        else:
            plan.finish(body)
    elif plan.status in NO_CONTENT:
        await aclose_quietly(response)  # an async httpx stream refuses the sync close()
        close_quietly(response)  # a sync response handed in here (once closed, a no-op)
    return plan.result(emit_events)
