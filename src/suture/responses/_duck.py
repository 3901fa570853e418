"""A response's parts by duck typing: status, URL, headers and a body already in memory.

httpx, requests, urllib and aiohttp responses, a :class:`SimpleResponse` or
anything alike; no HTTP library is imported. Every accessor answers ``None``
(or ``""``) rather than raise. No I/O.
"""

from __future__ import annotations

__all__ = ["as_bytes", "header", "in_memory", "status_of", "url_of"]


def status_of(response: object) -> int | None:
    """``status_code``, ``status`` or ``code``: the first that is an integer."""
    for attr in ("status_code", "status", "code"):
        try:
            value = getattr(response, attr, None)
        except Exception:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def url_of(response: object) -> str:
    """The request's URL as text, or ``""``."""
    try:
        url = getattr(response, "url", None)
    except Exception:  # httpx raises when the response has no request
        return ""
    if url is None or callable(url):
        return ""
    try:
        return str(url)
    except Exception:
        return ""


def header(headers: object, name: str) -> str | None:
    """A header value, case-insensitively, from a mapping or anything with ``get``.

    ``name`` must be lowercase.
    """
    if headers is None:
        return None
    try:
        value = headers.get(name) if hasattr(headers, "get") else None
        # httpx, requests, aiohttp and urllib headers look up case-insensitively
        # already; only a plain dict (or a list of pairs) needs a scan.
        if value is None and isinstance(headers, dict):
            for key, val in headers.items():
                if isinstance(key, (str, bytes)) and _lower(key) == name:
                    value = val
                    break
        elif value is None and isinstance(headers, (list, tuple)):
            for pair in headers:
                if len(pair) == 2 and _lower(pair[0]) == name:
                    value = pair[1]
                    break
    except Exception:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value if isinstance(value, str) else None


def _lower(key: object) -> str:
    if isinstance(key, bytes):
        return key.decode("latin-1").lower()
    return str(key).lower()


def as_bytes(value: object) -> bytes | None:
    """``value`` as ``bytes`` when it is bytes-like, else ``None``."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return None


def in_memory(response: object) -> bytes | None:
    """The body when it is already in memory (``body``, or a read ``content``)."""
    body = as_bytes(getattr(response, "body", None))
    if body is not None:
        return body
    if hasattr(response, "iter_bytes") or hasattr(response, "aiter_bytes"):
        try:  # httpx: ``content`` raises ResponseNotRead on an unread stream
            return as_bytes(response.content)  # type: ignore[attr-defined]
        except Exception:
            return None
    return None
