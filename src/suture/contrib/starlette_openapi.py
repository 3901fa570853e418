"""The OpenAPI description of the answers :func:`suture.contrib.starlette.install` gives.

:func:`openapi_responses` returns, for the error statuses a route can answer,
what FastAPI's ``responses=`` takes: each status with :data:`ERROR_SCHEMA`
(``success``, ``error``, ``code``, and ``retryAfter``, ``fields``,
``status``, ``target``, ``requestId`` where they apply), an example per
``code``, and the ``X-Request-ID`` header (``Retry-After`` too on a ``503``).
A schema-driven fuzzer then checks every answer against the document.
Plain dictionaries: no third-party import; re-exported by
:mod:`suture.contrib.starlette`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ERROR_SCHEMA", "REQUEST_ID_HEADER", "openapi_responses"]

#: The request id's header: read from the request, answered on every response
#: (:func:`suture.contrib.starlette.request_id`).
REQUEST_ID_HEADER = "X-Request-ID"

#: The JSON Schema of every error body suture's handlers send.
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["success", "error", "code"],
    "properties": {
        "success": {"type": "boolean", "enum": [False]},
        "error": {"type": "string", "description": "A sentence for a person; no internals."},
        "code": {"type": "string", "description": "What went wrong, for a program."},
        "retryAfter": {
            "type": "integer",
            "minimum": 1,
            "description": "503 only: whole seconds to wait (also the Retry-After header).",
        },
        "fields": {
            "type": "array",
            "description": "422 only: each field refused, where it was and why.",
            "items": {
                "type": "object",
                "required": ["field", "in", "problem"],
                "properties": {
                    "field": {"type": "string"},
                    "in": {"type": "string"},
                    "problem": {"type": "string"},
                },
            },
        },
        "status": {"type": ["string", "null"], "description": "409 only: the record's state."},
        "target": {"type": ["string", "null"], "description": "409 only: the state refused."},
        "requestId": {"type": "string", "description": "500 only: the log line's reference."},
    },
}

_ID_HEADER = {
    REQUEST_ID_HEADER: {
        "description": "The request's id: the client's when it is sane, else a new one.",
        "schema": {"type": "string"},
    }
}
_RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Whole seconds to wait before trying again (at least 1).",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}

_EXAMPLES: dict[int, tuple[str, dict[str, dict[str, Any]]]] = {
    400: (
        "The request cannot be read, or a value is out of bounds.",
        {
            "bad_request": {
                "error": "The Content-Length header is not valid.",
                "code": "bad_request",
            },
            "bad_chaos_config": {"error": "hold=11: at most 10 here", "code": "bad_chaos_config"},
        },
    ),
    401: (
        "A manager's credential is needed (missing, unknown or expired).",
        {"unauthorized": {"error": "Please sign in.", "code": "unauthorized"}},
    ),
    403: (
        "This client may not use this address.",
        {"forbidden": {"error": "This address only answers local requests.", "code": "forbidden"}},
    ),
    404: (
        "The record (or the address) does not exist.",
        {"not_found": {"error": "This record does not exist.", "code": "not_found"}},
    ),
    409: (
        "The record's state does not allow this move.",
        {
            "invalid_transition": {
                "error": "This record is SPAM_ARCHIVED and cannot be moved to READY.",
                "code": "invalid_transition",
                "status": "SPAM_ARCHIVED",
                "target": "READY",
            }
        },
    ),
    413: (
        "The request body is too large; it was not read.",
        {"too_large": {"error": "The request body is too large.", "code": "too_large"}},
    ),
    422: (
        "A parameter or the body is not valid, or the body is not parseable JSON.",
        {
            "invalid_request": {
                "error": "The request is not valid: limit: Input should be less than or "
                "equal to 500",
                "code": "invalid_request",
                "fields": [
                    {
                        "field": "limit",
                        "in": "query",
                        "problem": "Input should be less than or equal to 500",
                    }
                ],
            },
            "invalid_json": {
                "error": "The request body is not valid JSON.",
                "code": "invalid_json",
                "fields": [],
            },
        },
    ),
    500: (
        "A bug: a generic message and a reference to the log line; no internals.",
        {
            "internal_error": {
                "error": "Something went wrong on our side. Reference: 3f2a9c1d0b7e4a55.",
                "code": "internal_error",
                "requestId": "3f2a9c1d0b7e4a55",
            }
        },
    ),
    503: (
        "Try again after Retry-After: a dependency's breaker is open, the service is "
        "shedding load, or a transient failure outlasted its retries.",
        {
            "breaker_open": {
                "error": "A service we depend on (database) is unavailable; please try "
                "again in 10 s.",
                "code": "breaker_open",
                "retryAfter": 10,
            },
            "overloaded": {
                "error": "The service is busy right now; please try again in 1 s.",
                "code": "overloaded",
                "retryAfter": 1,
            },
            "unavailable": {
                "error": "The service is temporarily unavailable; please try again in a moment.",
                "code": "unavailable",
                "retryAfter": 2,
            },
        },
    ),
}


def openapi_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of these error statuses, in the shape ``install`` answers.

    Pass it as FastAPI's ``responses=`` of a route (or the app) so the
    published document lists every status the route can answer, each with
    :data:`ERROR_SCHEMA` and an example per ``code``: 400, 403, 404, 409, 413,
    422, 500 and 503 are known (503 also documents ``Retry-After``).
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        if status not in _EXAMPLES:
            known = ", ".join(map(str, sorted(_EXAMPLES)))
            raise ValueError(f"status={status!r}: documented statuses are {known}")
        description, examples = _EXAMPLES[status]
        headers = {**_ID_HEADER, **(_RETRY_AFTER_HEADER if status == 503 else {})}
        out[status] = {
            "description": description,
            "headers": headers,
            "content": {
                "application/json": {
                    "schema": ERROR_SCHEMA,
                    "examples": {
                        code: {"value": {"success": False, **body}}
                        for code, body in examples.items()
                    },
                }
            },
        }
    return out
