"""The HTTP routes: thin; each reads its input, calls the service, shapes the answer.

The routes know the service only through :class:`Backend` (what they call),
so this module imports no other room of the demo but its settings, models,
the API's shapes (:mod:`~suture.demo.schemas`) and the database target's name.
The chaos admin endpoint exists only with ``Settings.chaos`` and answers only
local requests that no proxy relayed.
"""

from __future__ import annotations

import asyncio
import ipaddress
from contextlib import suppress
from importlib import resources
from typing import Annotated, Any, Protocol

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from suture.chaos import Chaos
from suture.contrib import starlette as suture_web
from suture.contrib.prometheus import PrometheusListener, metrics_response
from suture.demo.config import DEFAULT_CAPTURE_BATCH, Settings
from suture.demo.models import MessageStatus
from suture.demo.queue import stale_json
from suture.demo.schemas import (
    MAX_RESPONSE,
    AssistanceList,
    CaptureResult,
    ChaosBody,
    MessagesPage,
    Moved,
    RespondBody,
    Responded,
)
from suture.lastgood import last_served

__all__ = [
    "DEFAULT_BATCH",
    "MAX_BATCH",
    "MAX_CHAOS_LATENCY",
    "MAX_ID",
    "MAX_RESPONSE",
    "Backend",
    "accepts_stale",
    "install_routes",
]

MAX_BATCH = 10_000
#: The batch size of a capture that names none: one guarded UPDATE per this many matches.
DEFAULT_BATCH = DEFAULT_CAPTURE_BATCH
#: Ids are 64-bit integers in both databases: a larger one in a URL is a 422, not a 500.
MAX_ID = 2**63 - 1
#: The chaos admin endpoint's ceiling on added latency, in seconds.
MAX_CHAOS_LATENCY = 60.0
#: Headers that mean a proxy relayed the request: the chaos admin then refuses it,
#: since the real client is not the loopback peer.
_FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-host")

Id = Annotated[int, PathParam(ge=1, le=MAX_ID)]


# What each route can answer besides its 200 (suture.contrib.starlette's shapes): every
# /api route may be shed or meet an open breaker (503) or a bug (500); ids may be missing
# (404) or in the wrong state (409); parameters and bodies may be refused (422, 413).
# Every route answers 401 without a manager's credential (suture.demo.auth).
_READ = suture_web.openapi_responses(401, 500, 503)
_QUERY = suture_web.openapi_responses(401, 422, 500, 503)
_MOVE = suture_web.openapi_responses(401, 404, 409, 413, 422, 500, 503)


def _link(operation_id: str, parameter: str, pointer: str) -> dict[str, Any]:
    """An OpenAPI link: the id at ``pointer`` of this answer feeds ``operation_id``."""
    return {
        operation_id: {
            "operationId": operation_id,
            "parameters": {parameter: f"$response.body#{pointer}"},
        }
    }


def _ok(
    model: type[BaseModel], responses: dict[int | str, dict[str, Any]], **links: Any
) -> dict[int | str, Any]:
    """``responses`` plus the 200's body (``model``, documentation only: the route returns
    its dict as before) and its ``links`` (what the fuzzer's stateful phase follows)."""
    ok: dict[str, Any] = {"model": model, "description": "Successful Response"}
    merged: dict[str, Any] = {}
    for link in links.values():
        merged.update(link)
    if merged:
        ok["links"] = merged
    return {**responses, 200: ok}


class Backend(Protocol):
    """What the routes call (:class:`suture.demo.app.Service` is one)."""

    settings: Settings
    chaos: Chaos
    chaos_targets: frozenset[str]
    prometheus: PrometheusListener

    def chaos_limits(self) -> dict[str, float]: ...
    async def assistance_queue(self, limit: int = 200) -> list[dict[str, Any]]: ...
    async def respond(self, task_id: int, response: str, actor: str | None) -> dict[str, Any]: ...
    async def capture_spam(self, batch_size: int = DEFAULT_BATCH) -> dict[str, Any]: ...
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
    _docs(app)
    _assistance_routes(app, service)
    _message_routes(app, service)
    _status_routes(app, service)
    if service.settings.chaos:
        _chaos_routes(app, service)


def _static_text(name: str) -> str:
    return resources.files("suture.demo").joinpath("static", name).read_text("utf-8")


#: The pinned PyPI package whose Swagger UI assets ``/api/docs`` serves (the ``demo`` extra).
DOCS_ASSETS_PACKAGE = "fastapi_offline"
DOCS_PATH = "/api/docs"


def _docs(app: FastAPI) -> None:
    """``/api/docs``: Swagger UI with its script and style served by the app, not a CDN.

    The assets come from the ``fastapi-offline`` package (pinned in the ``demo``
    extra); without it there is no ``/api/docs`` (a 404), never a blank page.
    """
    try:
        assets = resources.files(DOCS_ASSETS_PACKAGE).joinpath("static")
    except ModuleNotFoundError:
        return
    app.mount(f"{DOCS_PATH}/assets", StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs_page() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title}: API",
            swagger_js_url=f"{DOCS_PATH}/assets/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_PATH}/assets/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_PATH}/assets/favicon.png",
        )


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
    @app.get(
        "/api/manager/assistance",
        operation_id="assistance",
        response_model=None,
        responses=_ok(AssistanceList, _READ, respond=_link("respond", "task_id", "/requests/0/id")),
    )
    async def assistance(request: Request) -> JSONResponse:
        requests = await service.assistance_queue()
        body: dict[str, Any] = {"success": True, "requests": requests, "count": len(requests)}
        served = last_served()  # how the queue's LastGood served this very list
        if served is not None and served.value is requests and served.stale:
            if not accepts_stale(request.headers.get("cache-control"), served.age):
                assert served.error is not None
                raise served.error  # this client wants the outage told, not an old list
            body["stale"] = stale_json(served)
        return JSONResponse(body)  # JSON-ready already: FastAPI's encoder walk is skipped

    @app.post(
        "/api/manager/assistance/{task_id}/respond",
        response_model=None,
        operation_id="respond",
        responses=_ok(Responded, _MOVE),
    )
    async def respond(
        request: Request, task_id: Id, body: RespondBody
    ) -> dict[str, Any] | JSONResponse:
        text = body.response.strip()
        if not text:  # the pattern needs a non-space character: a guard, not a path
            return _invalid("response", "String should have at least 1 character besides spaces")
        task = await service.respond(task_id, text, _actor(request))
        return {"success": True, "task": task}


def _message_routes(app: FastAPI, service: Backend) -> None:
    @app.post(
        "/api/manager/spam/capture",
        operation_id="capture",
        response_model=None,
        responses=_ok(CaptureResult, _QUERY),
    )
    async def capture(
        batch_size: Annotated[int, Query(alias="batchSize", ge=1, le=MAX_BATCH)] = DEFAULT_BATCH,
    ) -> dict[str, Any]:
        return await service.capture_spam(batch_size)

    @app.get(
        "/api/manager/spam",
        operation_id="spam_queue",
        response_model=None,
        responses=_ok(
            MessagesPage,
            _QUERY,
            release=_link("release", "message_id", "/messages/0/id"),
            archive=_link("archive", "message_id", "/messages/0/id"),
        ),
    )
    async def spam_queue(limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        items, total = await service.messages(MessageStatus.SPAM_REVIEW, limit)
        return {"success": True, "messages": items, "total": total}

    @app.get(
        "/api/messages",
        operation_id="messages",
        response_model=None,
        responses=_ok(
            MessagesPage, _QUERY, promote=_link("promote", "message_id", "/messages/0/id")
        ),
    )
    async def messages(
        status: Annotated[MessageStatus, Query()] = MessageStatus.READY,
        limit: Annotated[int, Query(ge=1, le=500)] = 20,
    ) -> JSONResponse:
        items, total = await service.messages(status, limit)
        return JSONResponse({"success": True, "messages": items, "total": total})

    async def moved(
        request: Request, message_id: int, target: MessageStatus, context: str
    ) -> dict[str, Any]:
        message = await service.move_message(message_id, target, context, _actor(request))
        return {"success": True, "message": message}

    @app.post(
        "/api/manager/spam/{message_id}/release",
        operation_id="release",
        response_model=None,
        responses=_ok(Moved, _MOVE),
    )
    async def release(request: Request, message_id: Id) -> dict[str, Any]:
        return await moved(request, message_id, MessageStatus.READY, "spam-release")

    @app.post(
        "/api/manager/spam/{message_id}/archive",
        operation_id="archive",
        response_model=None,
        responses=_ok(Moved, _MOVE),
    )
    async def archive(request: Request, message_id: Id) -> dict[str, Any]:
        return await moved(request, message_id, MessageStatus.SPAM_ARCHIVED, "spam-archive")

    @app.post(
        "/api/messages/{message_id}/promote",
        operation_id="promote",
        response_model=None,
        responses=_ok(Moved, _MOVE),
    )
    async def promote(request: Request, message_id: Id) -> dict[str, Any]:
        return await moved(request, message_id, MessageStatus.PROMOTED, "promote")


def _status_routes(app: FastAPI, service: Backend) -> None:
    @app.get("/health", operation_id="health", responses=suture_web.openapi_responses(401, 500))
    async def health() -> dict[str, Any]:
        return service.health()

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        response: Response = metrics_response(service.prometheus.registry)
        return response

    @app.get(
        "/api/dashboard", operation_id="dashboard", responses=suture_web.openapi_responses(401, 500)
    )
    async def dashboard() -> dict[str, Any]:
        data = service.dashboard()
        data["traffic"] = _traffic_rate(app)
        return data


def _chaos_routes(app: FastAPI, service: Backend) -> None:
    settings = service.settings

    @app.get(
        "/api/admin/chaos",
        operation_id="chaos_state",
        responses=suture_web.openapi_responses(401, 403, 500),
    )
    async def chaos_state(request: Request) -> Response:
        if not _local(request, settings):
            return _forbidden()
        return JSONResponse({"success": True, "chaos": service.chaos.snapshot()})

    @app.post(
        "/api/admin/chaos",
        operation_id="chaos_set",
        responses=suture_web.openapi_responses(400, 401, 403, 413, 422, 500),
    )
    async def chaos_set(request: Request, body: ChaosBody | None = None) -> Response:
        if not _local(request, settings):
            return _forbidden()
        body = body or ChaosBody()
        target, error_rate, latency = body.target, body.error_rate, body.latency
        hold, clear, traffic = body.hold, body.clear, body.traffic
        statement_latency = body.statement_latency
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
