"""HTTP-edge metrics for Starlette and FastAPI (extras ``web`` and ``metrics``).

:class:`RequestMetricsMiddleware` records every request in a
:class:`~suture.contrib.prometheus.PrometheusListener`:

* ``suture_http_requests_total{route,method,status_class}``
* ``suture_http_request_duration_seconds{route,method}`` (histogram)

``route`` is the matched route's *template* (``/api/tasks/{task_id}``), never
the path: a request that matched no route is ``<unmatched>``. ``method`` is
one of the HTTP methods (anything else is ``OTHER``), ``status_class`` is
``2xx`` .. ``5xx``. So the number of series is bounded by the app's routes,
whatever paths clients send.

    app.add_middleware(RequestMetricsMiddleware, listener=listener)

Add it last (outermost), so shed and rejected requests (``503``) are counted too.
"""

from __future__ import annotations

from suture.contrib import missing_extra

try:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra(__name__, "web", _exc) from _exc

from suture.contrib.prometheus import PrometheusListener

__all__ = ["METHODS", "UNMATCHED", "RequestMetricsMiddleware", "route_template"]

UNMATCHED = "<unmatched>"
"""The ``route`` label of a request no route matched (404s, scanners)."""

METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


def route_template(scope: Scope, root_path: str = "") -> str:
    """The matched route's path template, after the router ran (``<unmatched>`` if none).

    Under a ``Mount`` the mount's prefix (as routed, from ``root_path``) is put
    before the inner route's template.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    prefix = str(scope.get("root_path", ""))[len(root_path) :]
    return prefix + path if prefix and not path.startswith(prefix) else path


class RequestMetricsMiddleware:
    """Counts and times every HTTP request by route template, method and status class.

    :param app: the ASGI app.
    :param listener: where the metrics go.
    """

    def __init__(self, app: ASGIApp, *, listener: PrometheusListener) -> None:
        if not isinstance(listener, PrometheusListener):
            raise TypeError(f"listener={listener!r}: expected a PrometheusListener")
        self.app = app
        self.listener = listener
        self._now = listener.clock.now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root_path = str(scope.get("root_path", ""))
        status = 500
        start = self._now()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = str(scope.get("method", "OTHER"))
            self.listener.observe_request(
                route_template(scope, root_path),
                method if method in METHODS else "OTHER",
                status,
                self._now() - start,
            )
