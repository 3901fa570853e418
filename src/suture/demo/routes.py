"""The HTTP routes: thin; each reads its input, calls the service, shapes the answer.

The routes know the service only through :class:`Backend` (what they call),
so this module imports no other room of the demo but its settings, models and
the database target's name.
The chaos admin endpoint exists only with ``Settings.chaos`` and answers only
local requests that no proxy relayed.
"""

from __future__ import annotations

import asyncio
import ipaddress
from contextlib import suppress
from importlib import resources
from typing import Annotated, Any, Protocol

from fastapi import Body, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response

from suture.chaos import Chaos
from suture.contrib import starlette as suture_web
from suture.contrib.prometheus import PrometheusListener, metrics_response
from suture.demo.config import Settings
from suture.demo.db import DB
from suture.demo.models import MessageStatus
from suture.demo.queue import stale_json
from suture.lastgood import last_served

__all__ = [
    "MAX_BATCH",
    "MAX_CHAOS_LATENCY",
    "MAX_ID",
    "MAX_RESPONSE",
    "Backend",
    "accepts_stale",
    "install_routes",
]

MAX_BATCH = 10_000
#: Ids are 64-bit integers in both databases: a larger one in a URL is a 422, not a 500.
MAX_ID = 2**63 - 1
#: The longest manager response, in characters.
MAX_RESPONSE = 4000
#: The chaos admin endpoint's ceiling on added latency, in seconds.
MAX_CHAOS_LATENCY = 60.0
#: Headers that mean a proxy relayed the request: the chaos admin then refuses it,
#: since the real client is not the loopback peer.
_FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-host")

Id = Annotated[int, PathParam(ge=1, le=MAX_ID)]


class Backend(Protocol):
    """What the routes call (:class:`suture.demo.app.Service` is one)."""

    settings: Settings
    chaos: Chaos
    chaos_targets: frozenset[str]
    prometheus: PrometheusListener

    def chaos_limits(self) -> dict[str, float]: ...
    async def assistance_queue(self, limit: int = 200) -> list[dict[str, Any]]: ...
    async def respond(self, task_id: int, response: str, actor: str | None) -> dict[str, Any]: ...
    async def capture_spam(self, batch_size: int = 100) -> dict[str, Any]: ...
    async def messages(
        self, status: MessageStatus, limit: int
    ) -> tuple[list[dict[str, Any]], int]: ...
    async def move_message(
        self, message_id: int, target: MessageStatus, context: str, actor: str | None
    ) -> dict[str, Any]: ...
    def health(self) -> dict[str, Any]: ...
    def dashboard(self) -> dict[str, Any]: ...


def install_routes(app: FastAPI, service: Backend) -> None:
    """Every route of the demo on ``app``; the chaos admin only with ``settings.chaos``."""
    _pages(app)
    _assistance_routes(app, service)
    _message_routes(app, service)
    _status_routes(app, service)
    if service.settings.chaos:
        _chaos_routes(app, service)


def _static_text(name: str) -> str:
    return resources.files("suture.demo").joinpath("static", name).read_text("utf-8")


def _pages(app: FastAPI) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def manager_page() -> HTMLResponse:
        return HTMLResponse(_static_text("index.html"))

    @app.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard_page() -> HTMLResponse:
        return HTMLResponse(_static_text("dashboard.html"))


def _actor(request: Request) -> str | None:
    """The manager :class:`suture.demo.auth.AuthMiddleware` let in (the audit's actor)."""
    manager = getattr(request.state, "manager", None)
    return manager if isinstance(manager, str) else None


def _invalid(field: str, problem: str) -> JSONResponse:
    """A ``422`` in the shape of :func:`suture.contrib.starlette.validation_error_handler`."""
    return JSONResponse(
        suture_web.error_body(
            f"The request is not valid: {field}: {problem}",
            code="invalid_request",
            fields=[{"field": field, "in": "body", "problem": problem}],
        ),
        status_code=422,
    )


def accepts_stale(cache_control: str | None, age: float) -> bool:
    """RFC 5861's ``stale-if-error`` request directive: the client takes a stale answer
    (at most ``N`` seconds old with ``stale-if-error=N``) when a fresh one fails."""
    for directive in (cache_control or "").split(","):
        name, _, value = directive.strip().partition("=")
        if name.strip().lower() != "stale-if-error":
            continue
        if not value.strip():
            return True
        try:
            return age <= float(value.strip().strip('"'))
        except ValueError:
            return False
    return False


def _assistance_routes(app: FastAPI, service: Backend) -> None:
    @app.get("/api/manager/assistance")
    async def assistance(request: Request) -> dict[str, Any]:
        requests = await service.assistance_queue()
        body: dict[str, Any] = {"success": True, "requests": requests, "count": len(requests)}
        served = last_served()  # how the queue's LastGood served this very list
        if served is not None and served.value is requests and served.stale:
            if not accepts_stale(request.headers.get("cache-control"), served.age):
                assert served.error is not None
                raise served.error  # this client wants the outage told, not an old list
            body["stale"] = stale_json(served)
        return body

    @app.post("/api/manager/assistance/{task_id}/respond", response_model=None)
    async def respond(
        request: Request,
        task_id: Id,
        response: Annotated[str, Body(embed=True, min_length=1, max_length=MAX_RESPONSE)],
    ) -> dict[str, Any] | JSONResponse:
        text = response.strip()
        if not text:
            return _invalid("response", "String should have at least 1 character besides spaces")
        task = await service.respond(task_id, text, _actor(request))
        return {"success": True, "task": task}


def _message_routes(app: FastAPI, service: Backend) -> None:
    @app.post("/api/manager/spam/capture")
    async def capture(
        batch_size: Annotated[int, Query(alias="batchSize", ge=1, le=MAX_BATCH)] = 100,
    ) -> dict[str, Any]:
        return await service.capture_spam(batch_size)

    @app.get("/api/manager/spam")
    async def spam_queue(limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        items, total = await service.messages(MessageStatus.SPAM_REVIEW, limit)
        return {"success": True, "messages": items, "total": total}

    @app.get("/api/messages")
    async def messages(
        status: Annotated[MessageStatus, Query()] = MessageStatus.READY,
        limit: Annotated[int, Query(ge=1, le=500)] = 20,
    ) -> dict[str, Any]:
        items, total = await service.messages(status, limit)
        return {"success": True, "messages": items, "total": total}

    async def moved(
        request: Request, message_id: int, target: MessageStatus, context: str
    ) -> dict[str, Any]:
        message = await service.move_message(message_id, target, context, _actor(request))
        return {"success": True, "message": message}

    @app.post("/api/manager/spam/{message_id}/release")
    async def release(request: Request, message_id: Id) -> dict[str, Any]:
        return await moved(request, message_id, MessageStatus.READY, "spam-release")

    @app.post("/api/manager/spam/{message_id}/archive")
    async def archive(request: Request, message_id: Id) -> dict[str, Any]:
        return await moved(request, message_id, MessageStatus.SPAM_ARCHIVED, "spam-archive")

    @app.post("/api/messages/{message_id}/promote")
    async def promote(request: Request, message_id: Id) -> dict[str, Any]:
        return await moved(request, message_id, MessageStatus.PROMOTED, "promote")


def _status_routes(app: FastAPI, service: Backend) -> None:
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return service.health()

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        response: Response = metrics_response(service.prometheus.registry)
        return response

    @app.get("/api/dashboard")
    async def dashboard() -> dict[str, Any]:
        data = service.dashboard()
        data["traffic"] = _traffic_rate(app)
        return data


def _chaos_routes(app: FastAPI, service: Backend) -> None:
    settings = service.settings

    @app.get("/api/admin/chaos")
    async def chaos_state(request: Request) -> Response:
        if not _local(request, settings):
            return _forbidden()
        return JSONResponse({"success": True, "chaos": service.chaos.snapshot()})

    @app.post("/api/admin/chaos")
    async def chaos_set(
        request: Request,
        target: Annotated[str, Body(embed=True)] = DB,
        error_rate: Annotated[float | None, Body(alias="errorRate", embed=True)] = None,
        latency: Annotated[float | None, Body(embed=True)] = None,
        statement_latency: Annotated[
            float | None, Body(alias="statementLatency", embed=True)
        ] = None,
        hold: Annotated[int | None, Body(embed=True)] = None,
        clear: Annotated[bool, Body(embed=True)] = False,
        traffic: Annotated[float | None, Body(embed=True)] = None,
    ) -> Response:
        if not _local(request, settings):
            return _forbidden()
        refused = _out_of_bounds(
            service, target, latency=latency, hold=hold, statement_latency=statement_latency
        )
        if refused is None:
            try:
                if traffic is not None:  # synthetic requests per second (0 pauses)
                    app.state.traffic.set_rate(traffic)
                if clear:
                    service.chaos.clear(target)
                else:
                    service.chaos.configure(
                        target,
                        error_rate=error_rate,
                        latency=latency,
                        hold=hold,
                        statement_latency=statement_latency,
                    )
            except (TypeError, ValueError) as exc:
                refused = str(exc)
        if refused is not None:
            return JSONResponse(
                suture_web.error_body(refused, code="bad_chaos_config"), status_code=400
            )
        await asyncio.sleep(0)
        return JSONResponse(
            {"success": True, "chaos": service.chaos.snapshot(), "traffic": _traffic_rate(app)}
        )


def _out_of_bounds(
    service: Backend,
    target: str,
    *,
    latency: float | None,
    hold: int | None,
    statement_latency: float | None = None,
) -> str | None:
    """Why the chaos admin refuses this target or these values; None when it does not."""
    if target not in service.chaos_targets:
        known = ", ".join(sorted(service.chaos_targets))
        return f"target: unknown; this service injects faults on: {known}"
    limits = service.chaos_limits()
    asked = (("latency", latency), ("hold", hold), ("statement_latency", statement_latency))
    for name, value in asked:
        if value is not None and value > limits.get(name, limits["latency"]):
            return f"{name}={value!r}: at most {limits.get(name, limits['latency']):g} here"
    return None


def _traffic_rate(app: FastAPI) -> float | None:
    """Synthetic requests per second (``--traffic``; 0 paused), None when it is not running."""
    traffic = getattr(app.state, "traffic", None)
    return float(traffic.rate) if traffic is not None else None


def _local(request: Request, settings: Settings) -> bool:
    """True for a request from this machine that no proxy relayed.

    The peer address is the TCP peer's (``suture demo`` runs uvicorn without
    proxy headers); a request carrying forwarding headers came through a proxy,
    so its real client is somewhere else, and is refused too.
    """
    if any(name in request.headers for name in _FORWARDING_HEADERS):
        return False
    host = request.client.host if request.client is not None else ""
    with suppress(ValueError):  # a dual-stack socket shows 127.0.0.1 as ::ffff:127.0.0.1
        mapped = ipaddress.ip_address(host)
        if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None:
            host = str(mapped.ipv4_mapped)
    return host in settings.admin_hosts


def _forbidden() -> JSONResponse:
    return JSONResponse(
        suture_web.error_body(
            "The chaos admin endpoint only answers local requests.", code="forbidden"
        ),
        status_code=403,
    )
