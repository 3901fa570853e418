"""What a JSON body says: the human reason in its common error shapes, its
``retryAfter``, and a schema failure in one line. No I/O, no sibling imports."""

from __future__ import annotations

import json
import math
from typing import Any

from suture.classify import MAX_RETRY_AFTER

__all__ = [
    "apply_schema",
    "body_retry_after",
    "json_reason",
    "message_from_json",
    "message_from_list",
    "schema_reason",
]


def json_reason(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc) or type(exc).__name__


def _str(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    return None


def message_from_json(data: object, depth: int = 0) -> str | None:  # noqa: C901, PLR0911, PLR0912 - one return per JSON error shape we recognise
    """The human reason in a JSON error body, from its common shapes."""
    if depth > 3:
        return None
    if isinstance(data, str):
        return _str(data)
    if isinstance(data, list):
        return message_from_list(data, depth)
    if not isinstance(data, dict):
        return None
    title, detail = _str(data.get("title")), data.get("detail")
    if title is not None and (detail is None or isinstance(detail, str)):
        # RFC 9457 problem details: "title: detail"
        detail_text = _str(detail)
        return f"{title}: {detail_text}" if detail_text and detail_text != title else title
    error = data.get("error")
    if isinstance(error, str) and error.strip():
        description = _str(data.get("error_description"))  # OAuth 2
        return f"{error}: {description}" if description else error
    if isinstance(error, (dict, list)):
        nested = message_from_json(error, depth + 1)
        if nested:
            return nested
    message = _str(data.get("message")) or _str(data.get("msg"))
    if message:
        return message
    if detail is not None:
        nested = message_from_json(detail, depth + 1)
        if nested:
            return nested
    errors = data.get("errors")
    if errors is not None:
        nested = message_from_json(errors, depth + 1)
        if nested:
            return nested
    return _str(data.get("reason")) or _str(data.get("description"))


def message_from_list(items: list[Any], depth: int) -> str | None:
    """FastAPI's ``detail`` list (``loc`` + ``msg``) or GraphQL's ``errors``."""
    parts: list[str] = []
    for item in items[:3]:
        if isinstance(item, dict):
            msg = _str(item.get("msg")) or _str(item.get("message"))
            if msg is None:
                msg = message_from_json(item, depth + 1)
            if msg is None:
                continue
            loc = item.get("loc")
            if isinstance(loc, (list, tuple)) and loc:
                where = ".".join(str(p) for p in loc if p != "body") or str(loc[-1])
                msg = f"{where}: {msg}"
            parts.append(msg)
        elif isinstance(item, str) and item.strip():
            parts.append(item)
    if not parts:
        return None
    more = len(items) - len(parts)
    text = "; ".join(parts)
    return f"{text} (and {more} more)" if more > 0 and len(items) > 3 else text


def body_retry_after(data: object) -> float | None:
    if not isinstance(data, dict):
        return None
    for key in ("retryAfter", "retry_after"):
        value = data.get(key)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            try:
                number = float(value)
            except OverflowError:  # an integer of hundreds of digits: ignored, as 1e400
                continue  # is (and as a browser's JSON.parse, which reads it as Infinity)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                continue
        else:
            continue
        if math.isfinite(number):
            return min(max(0.0, number), MAX_RETRY_AFTER)
    return None


def apply_schema(schema: Any, data: Any) -> Any:
    validate = getattr(schema, "model_validate", None)
    if callable(validate):
        return validate(data)
    return schema(data)


def schema_reason(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic's ValidationError
        try:
            items = errors()
        except Exception:
            items = None
        if isinstance(items, list):
            message = message_from_list(items, 0)
            if message:
                return message
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
