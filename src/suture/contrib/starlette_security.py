"""Security headers for a Starlette or FastAPI service: :class:`SecurityHeadersMiddleware`.

Re-exported by :mod:`suture.contrib.starlette` (import it from there). Every
answer gets the headers a service speaking the 503 contract to a browser
wants: a ``Content-Security-Policy`` (``default-src 'self'``, no inline script
or style, ``frame-ancestors 'none'``), ``X-Content-Type-Options: nosniff``,
``X-Frame-Options: DENY`` (for browsers without ``frame-ancestors``) and
``Referrer-Policy: no-referrer``; a JSON answer also gets
``Cache-Control: no-store`` unless the app set its own ``Cache-Control``. A
header the app already set is kept as it is.

The headers are encoded once, at construction: per answer the middleware
scans the response's headers once and appends a prepared list.

Needs the ``web`` extra (``starlette``).
"""

from __future__ import annotations

from collections.abc import Mapping

from suture.contrib import missing_extra

try:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra(__name__, "web", _exc) from _exc

__all__ = ["DEFAULT_CONTENT_SECURITY_POLICY", "SecurityHeadersMiddleware"]

#: Scripts, styles, images, fonts and connections from this origin only; no inline
#: script or style (no ``'unsafe-inline'``); no plugins; never framed; forms post here.
#: ``data:`` images are allowed (an empty favicon, small icons).
DEFAULT_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

_CSP = b"content-security-policy"
_CACHE = b"cache-control"
_TYPE = b"content-type"


def _policy_bytes(value: str, name: str) -> bytes:
    if not isinstance(value, str) or not value.strip() or "\n" in value or "\r" in value:
        raise ValueError(f"{name}={value!r}: expected a non-empty header value on one line")
    return value.encode("latin-1")


class SecurityHeadersMiddleware:
    """Adds the security headers to every HTTP answer of ``app``.

    :param content_security_policy: the policy of every answer
        (:data:`DEFAULT_CONTENT_SECURITY_POLICY`); ``None`` sends none.
    :param policies: path prefix -> policy for the paths that need another one
        (the longest matching prefix wins; ``None`` sends none there), for
        example a third-party API explorer that needs inline script.
    :param referrer_policy: ``Referrer-Policy`` (``None``: not sent).
    :param frame_options: ``X-Frame-Options`` (``None``: not sent).
    :param nosniff: send ``X-Content-Type-Options: nosniff``.
    :param no_store_json: answers whose media type is JSON get
        ``Cache-Control: no-store`` (unless the app set a ``Cache-Control``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        content_security_policy: str | None = DEFAULT_CONTENT_SECURITY_POLICY,
        policies: Mapping[str, str | None] | None = None,
        referrer_policy: str | None = "no-referrer",
        frame_options: str | None = "DENY",
        nosniff: bool = True,
        no_store_json: bool = True,
    ) -> None:
        self.app = app
        common: list[tuple[bytes, bytes]] = []
        if nosniff:
            common.append((b"x-content-type-options", b"nosniff"))
        if frame_options is not None:
            common.append((b"x-frame-options", _policy_bytes(frame_options, "frame_options")))
        if referrer_policy is not None:
            common.append((b"referrer-policy", _policy_bytes(referrer_policy, "referrer_policy")))
        self._common = tuple(common)
        self._csp = (
            None
            if content_security_policy is None
            else _policy_bytes(content_security_policy, "content_security_policy")
        )
        table = []
        for prefix, policy in (policies or {}).items():
            if not prefix.startswith("/"):
                raise ValueError(f"policies: {prefix!r}: a path prefix starts with '/'")
            table.append(
                (prefix, None if policy is None else _policy_bytes(policy, f"policies[{prefix!r}]"))
            )
        # Longest prefix first: the first match wins.
        self._policies = tuple(sorted(table, key=lambda item: -len(item[0])))
        self._no_store_json = no_store_json

    def policy_for(self, path: str) -> bytes | None:
        """The encoded ``Content-Security-Policy`` that answers on ``path`` carry."""
        for prefix, policy in self._policies:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return policy
        return self._csp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = self.policy_for(scope["path"]) if self._policies else self._csp

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = self._headers(list(message.get("headers", ())), csp)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _headers(
        self, headers: list[tuple[bytes, bytes]], csp: bytes | None
    ) -> list[tuple[bytes, bytes]]:
        present = {name.lower() for name, _ in headers}
        for name, value in self._common:
            if name not in present:
                headers.append((name, value))
        if csp is not None and _CSP not in present:
            headers.append((_CSP, csp))
        if self._no_store_json and _CACHE not in present:
            for name, value in headers:
                if name.lower() == _TYPE:
                    media = value.split(b";", 1)[0].strip().lower()
                    if media == b"application/json" or media.endswith(b"+json"):
                        headers.append((_CACHE, b"no-store"))
                    break
        return headers
