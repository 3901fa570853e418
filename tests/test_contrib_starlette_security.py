"""SecurityHeadersMiddleware: the headers on every answer, configurable, app headers kept."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from suture.contrib import starlette as suture_web
from suture.contrib.starlette import DEFAULT_CONTENT_SECURITY_POLICY, SecurityHeadersMiddleware


async def page(request: Request) -> Response:
    return HTMLResponse("<p>hi</p>")


async def data(request: Request) -> Response:
    return JSONResponse({"n": 1})


async def cached(request: Request) -> Response:
    return JSONResponse({"n": 1}, headers={"Cache-Control": "max-age=60"})


async def problem(request: Request) -> Response:
    return Response(b"{}", media_type="application/problem+json")


async def own_policy(request: Request) -> Response:
    return PlainTextResponse("x", headers={"Content-Security-Policy": "default-src 'none'"})


def client(**options: object) -> TestClient:
    app = Starlette(
        routes=[
            Route("/", page),
            Route("/data", data),
            Route("/cached", cached),
            Route("/problem", problem),
            Route("/own", own_policy),
            Route("/docs/x", page),
        ]
    )
    app.add_middleware(SecurityHeadersMiddleware, **options)  # type: ignore[arg-type]
    return TestClient(app)


def test_the_defaults_on_a_page_and_on_json() -> None:
    c = client()
    html = c.get("/")
    assert html.headers["content-security-policy"] == DEFAULT_CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in DEFAULT_CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in DEFAULT_CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in DEFAULT_CONTENT_SECURITY_POLICY
    assert html.headers["x-content-type-options"] == "nosniff"
    assert html.headers["x-frame-options"] == "DENY"
    assert html.headers["referrer-policy"] == "no-referrer"
    assert "cache-control" not in html.headers  # a page may be cached
    assert c.get("/data").headers["cache-control"] == "no-store"
    assert c.get("/problem").headers["cache-control"] == "no-store"
    missing = c.get("/nowhere")
    assert missing.status_code == 404 and missing.headers["x-content-type-options"] == "nosniff"


def test_the_app_keeps_its_own_headers() -> None:
    c = client()
    assert c.get("/cached").headers["cache-control"] == "max-age=60"
    own = c.get("/own")
    assert own.headers.get_list("content-security-policy") == ["default-src 'none'"]


def test_the_policy_is_configurable_per_path() -> None:
    c = client(
        content_security_policy="default-src 'self' https://cdn.example",
        policies={"/docs": None},
        referrer_policy="same-origin",
        frame_options=None,
        nosniff=False,
        no_store_json=False,
    )
    home = c.get("/")
    assert home.headers["content-security-policy"] == "default-src 'self' https://cdn.example"
    assert home.headers["referrer-policy"] == "same-origin"
    assert "x-frame-options" not in home.headers
    assert "x-content-type-options" not in home.headers
    assert "content-security-policy" not in c.get("/docs/x").headers
    assert "cache-control" not in c.get("/data").headers


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"content_security_policy": ""}, "content_security_policy"),
        ({"referrer_policy": "a\nb"}, "referrer_policy"),
        ({"policies": {"docs": None}}, "starts with '/'"),
    ],
)
def test_bad_settings_are_refused_by_name(options: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        SecurityHeadersMiddleware(lambda s, r, se: None, **options)  # type: ignore[arg-type]


def test_it_is_a_public_name_of_the_starlette_contrib() -> None:
    assert "SecurityHeadersMiddleware" in suture_web.__all__
    assert suture_web.SecurityHeadersMiddleware is SecurityHeadersMiddleware
