"""suture.contrib.starlette: typed errors at the HTTP edge, admission, suture.js."""

from __future__ import annotations

import json
from typing import Annotated

import pytest
from fastapi import Body, FastAPI, Query
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from suture import BreakerOpen, InvalidTransition, Overloaded
from suture.contrib.sqlalchemy import RecordNotFound
from suture.contrib.starlette import (
    EXEMPT,
    REQUEST_ID_HEADER,
    AdmissionMiddleware,
    install,
    suture_js,
)
from suture.pool import PressureLevel, Priority

SECRET = "password=hunter2 at /srv/app/secret.py line 42"


def boom(exc: BaseException):  # type: ignore[no-untyped-def]
    async def endpoint(request: Request) -> JSONResponse:
        raise exc

    return endpoint


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"success": True})


def make_app(**install_kwargs: object) -> Starlette:
    app = Starlette(
        routes=[
            Route("/breaker", boom(BreakerOpen("database", 12.3))),
            Route("/overloaded", boom(Overloaded(PressureLevel.CRITICAL, 2.0))),
            Route("/transition", boom(InvalidTransition("PROMOTED", "READY", "message 7"))),
            Route("/missing", boom(RecordNotFound(None, "READY", "message 8", reason="gone"))),
            Route("/bug", boom(RuntimeError(SECRET))),
            Route("/flaky", boom(ConnectionResetError(SECRET))),
            Route("/ok", ok),
            Route("/api/batch", ok),
            Route("/api/batch/deep", ok),
            Route("/api/normal", ok),
            Route("/health", ok),
        ]
    )
    install(app, **install_kwargs)  # type: ignore[arg-type]
    return app


@pytest.fixture
def client() -> TestClient:
    return TestClient(make_app(), raise_server_exceptions=False)


def test_breaker_open_is_a_503_with_retry_after(client: TestClient) -> None:
    r = client.get("/breaker")
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "13"
    body = r.json()
    assert body["success"] is False
    assert body["retryAfter"] == 13
    assert body["code"] == "breaker_open"
    assert "13 s" in body["error"]


def test_overloaded_is_a_503_with_retry_after(client: TestClient) -> None:
    r = client.get("/overloaded")
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "2"
    assert r.json() == {
        "success": False,
        "error": "The service is busy right now; please try again in 2 s.",
        "retryAfter": 2,
        "code": "overloaded",
    }


def test_retry_after_is_never_zero() -> None:
    client = TestClient(
        Starlette(routes=[Route("/", boom(BreakerOpen("db", 0.0)))]), raise_server_exceptions=False
    )
    install(client.app)  # type: ignore[arg-type]
    r = client.get("/")
    assert r.headers["Retry-After"] == "1"


def test_invalid_transition_is_a_409_naming_the_states(client: TestClient) -> None:
    r = client.get("/transition")
    assert r.status_code == 409
    body = r.json()
    assert body["success"] is False
    assert body["code"] == "invalid_transition"
    assert body["status"] == "PROMOTED"
    assert body["target"] == "READY"
    assert "PROMOTED" in body["error"]


def test_a_missing_record_is_a_404(client: TestClient) -> None:
    r = client.get("/missing")
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"


def test_unexpected_errors_are_a_generic_500_with_a_request_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    r = client.get("/bug")
    assert r.status_code == 500
    body = r.json()
    rid = r.headers[REQUEST_ID_HEADER]
    assert body == {
        "success": False,
        "error": f"Something went wrong on our side. Reference: {rid}.",
        "code": "internal_error",
        "requestId": rid,
    }
    assert "hunter2" not in r.text
    assert "Traceback" not in r.text
    assert "RuntimeError" not in r.text
    # the details are in the log, under the same id
    assert any(rid in rec.getMessage() and rec.exc_info for rec in caplog.records)


def test_transient_errors_become_503_without_internal_text(client: TestClient) -> None:
    r = client.get("/flaky")
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "2"
    assert r.json()["code"] == "unavailable"
    assert "hunter2" not in r.text
    assert "ConnectionResetError" not in r.text


def test_a_sane_client_request_id_is_kept_and_a_bad_one_replaced(client: TestClient) -> None:
    r = client.get("/bug", headers={REQUEST_ID_HEADER: "abc-123"})
    assert r.headers[REQUEST_ID_HEADER] == "abc-123"
    r = client.get("/bug", headers={REQUEST_ID_HEADER: "<script>alert(1)</script>"})
    assert r.headers[REQUEST_ID_HEADER] != "<script>alert(1)</script>"
    assert "<script>" not in r.text


def test_no_error_body_carries_a_stack_trace(client: TestClient) -> None:
    for path in ("/breaker", "/overloaded", "/transition", "/missing", "/bug", "/flaky"):
        r = client.get(path)
        assert r.status_code >= 400
        assert "Traceback" not in r.text
        assert 'File "' not in r.text
        assert r.json()["success"] is False


class Admission:
    def __init__(self) -> None:
        self.level = PressureLevel.NORMAL
        self.seen: list[object] = []

    def admit(self, priority: Priority) -> None:
        self.seen.append(priority)
        floor = {
            PressureLevel.NORMAL: Priority.LOW,
            PressureLevel.WARNING: Priority.NORMAL,
            PressureLevel.CRITICAL: Priority.CRITICAL,
        }[self.level]
        if priority < floor:
            raise Overloaded(self.level, 4.0)


def test_admission_sheds_by_route_priority() -> None:
    adm = Admission()
    app = make_app(
        admit=adm.admit,
        priorities={"/api/batch": Priority.LOW, "/api": Priority.NORMAL, "/health": EXEMPT},
        default_priority=Priority.NORMAL,
    )
    client = TestClient(app, raise_server_exceptions=False)
    assert client.get("/api/batch").status_code == 200
    adm.level = PressureLevel.WARNING
    r = client.get("/api/batch/deep")
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "4"
    assert r.json()["code"] == "overloaded"
    assert client.get("/api/normal").status_code == 200
    adm.level = PressureLevel.CRITICAL
    assert client.get("/api/normal").status_code == 503
    assert client.get("/ok").status_code == 503  # the default priority is NORMAL
    before = len(adm.seen)
    assert client.get("/health").status_code == 200  # exempt: admit not even asked
    assert client.get("/suture.js").status_code in (200, 404)
    assert len(adm.seen) == before


def test_priority_lookup_prefers_the_longest_prefix() -> None:
    mw = AdmissionMiddleware(
        ok,  # type: ignore[arg-type]
        admit=lambda p: None,
        priorities=[("/api", 1), ("/api/manager/spam", 0), ("/api/manager/spam/capture", 5)],
        default=9,
    )
    assert mw.priority_for("/api/manager/spam/capture") == 5
    assert mw.priority_for("/api/manager/spam/7/release") == 0
    assert mw.priority_for("/api/manager/assistance") == 1
    assert mw.priority_for("/apis") == 9  # a prefix matches whole path segments only
    assert mw.priority_for("/") == 9


def test_admission_configuration_errors() -> None:
    with pytest.raises(ValueError, match="default_priority=None"):
        make_app(admit=lambda p: None)
    with pytest.raises(TypeError, match="admit="):
        AdmissionMiddleware(ok, admit=42, default=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be a path"):
        AdmissionMiddleware(ok, admit=lambda p: None, priorities={"api": 1}, default=1)  # type: ignore[arg-type]


def test_suture_js_is_served_with_an_etag(client: TestClient) -> None:
    r = client.get("/suture.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert "export async function sutureFetch" in r.text
    assert r.content == suture_js()
    etag = r.headers["ETag"]
    again = client.get("/suture.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""


def test_js_route_can_be_moved_or_left_out() -> None:
    moved = TestClient(make_app(js_path="/static/suture.js"))
    assert moved.get("/static/suture.js").status_code == 200
    assert moved.get("/suture.js").status_code == 404
    none = TestClient(make_app(js_path=None))
    assert none.get("/suture.js").status_code == 404


def test_success_responses_are_untouched(client: TestClient) -> None:
    r = client.get("/ok")
    assert r.status_code == 200
    assert json.loads(r.text) == {"success": True}


def test_health_route_reports_breakers_and_pools() -> None:
    from suture import CircuitBreaker, PoolMonitor
    from suture.contrib.starlette import health_route
    from suture.testing import FakeClock

    clock = FakeClock()
    breaker = CircuitBreaker("payments", clock=clock)
    used = [1]
    monitor = PoolMonitor(lambda: (used[0], 10), name="db", clock=clock)
    monitor.sample()
    app = Starlette(
        routes=[
            health_route(breakers=[breaker], monitors=[monitor]),
            health_route("/ready", breakers=[breaker], monitors=[monitor], degraded_status=503),
        ]
    )
    client = TestClient(app)
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["breakers"]["payments"]["state"] == "closed"
    assert body["pools"]["db"]["level"] == "NORMAL"
    assert body["pools"]["db"]["usage"]["current"] == 1
    assert client.get("/ready").status_code == 200
    breaker.force_open()
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "degraded"
    assert client.get("/ready").status_code == 503
    breaker.reset()
    used[0] = 10
    monitor.sample()
    assert client.get("/health").json()["pools"]["db"]["level"] == "CRITICAL"
    assert client.get("/ready").status_code == 503


# --- the framework's own errors, in the same shape ------------------------------------


def test_unknown_routes_and_wrong_methods_use_the_error_shape(client: TestClient) -> None:
    r = client.get("/no/such/page")
    assert r.status_code == 404
    assert r.json() == {
        "success": False,
        "error": "There is nothing at this address.",
        "code": "not_found",
    }
    assert r.headers[REQUEST_ID_HEADER]
    r = client.post("/ok")
    assert r.status_code == 405
    assert r.json()["code"] == "method_not_allowed"
    assert r.json()["success"] is False
    assert "GET" in r.headers["allow"]  # the framework's header is kept


def test_an_application_http_exception_keeps_its_own_message() -> None:
    from starlette.exceptions import HTTPException

    app = Starlette(
        routes=[
            Route("/teapot", boom(HTTPException(418, "I only brew tea."))),
            Route("/down", boom(HTTPException(503, "Maintenance."))),
            Route("/moved", boom(HTTPException(304))),
        ]
    )
    install(app)
    c = TestClient(app, raise_server_exceptions=False)
    r = c.get("/teapot")
    assert (r.status_code, r.json()) == (
        418,
        {"success": False, "error": "I only brew tea.", "code": "http_418"},
    )
    r = c.get("/down")  # every 503 carries Retry-After, in the header and the body
    assert r.status_code == 503
    assert r.headers["retry-after"] == "2"
    assert r.json()["retryAfter"] == 2
    r = c.get("/moved")
    assert r.status_code == 304
    assert r.content == b""


def test_fastapi_validation_errors_name_fields_and_never_echo_the_input() -> None:
    app = FastAPI()

    @app.post("/items/{item_id}")
    async def create(
        item_id: int,
        name: Annotated[str, Body(embed=True, max_length=10)],
        size: Annotated[int, Query(ge=1)] = 1,
    ) -> dict[str, object]:
        return {"success": True}

    install(app)
    c = TestClient(app, raise_server_exceptions=False)
    r = c.post("/items/7?size=0", json={"name": SECRET * 1000})
    assert r.status_code == 422
    body = r.json()
    assert body["success"] is False
    assert body["code"] == "invalid_request"
    assert {(f["field"], f["in"]) for f in body["fields"]} == {("name", "body"), ("size", "query")}
    assert body["error"].startswith("The request is not valid: ")
    assert "hunter2" not in r.text  # FastAPI's own answer repeats the input ("input": ...)
    assert len(r.content) < 1000
    r = c.post("/items/x", json={"name": "ok"})
    assert r.json()["fields"] == [
        {
            "field": "item_id",
            "in": "path",
            "problem": "Input should be a valid integer, unable to parse string as an integer",
        }
    ]
    # malformed JSON: no parser position or message
    r = c.post(
        "/items/7", content=b'{"name": hunter2', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["error"] == "The request body is not valid JSON."
    assert "hunter2" not in r.text
    assert "Expecting" not in r.text


def test_a_body_over_the_limit_is_a_413_before_it_is_read() -> None:
    seen: list[int] = []

    async def echo(request: Request) -> JSONResponse:
        seen.append(len(await request.body()))
        return JSONResponse({"success": True})

    app = Starlette(routes=[Route("/echo", echo, methods=["POST"])])
    install(app, max_body_bytes=1000)
    c = TestClient(app, raise_server_exceptions=False)
    assert c.post("/echo", content=b"x" * 1000).status_code == 200
    r = c.post("/echo", content=b"x" * 1001)  # declared by Content-Length
    assert r.status_code == 413
    assert r.json() == {
        "success": False,
        "error": "The request body is too large.",
        "code": "too_large",
    }
    assert seen == [1000]  # the app never ran
    r = c.post("/echo", content=iter([b"x" * 600, b"x" * 600]))  # streamed, no length
    assert r.status_code == 413
    assert r.json()["code"] == "too_large"
    r = c.post("/echo", content=b"{}", headers={"content-length": "many"})
    assert r.status_code == 400
    assert r.json()["error"] == "The Content-Length header is not valid."
    with pytest.raises(ValueError, match="max_body_bytes=-1"):
        install(Starlette(), max_body_bytes=-1)


def test_an_error_inside_a_middleware_is_a_generic_500() -> None:
    def broken_admit(priority: object) -> None:
        raise RuntimeError(SECRET)

    app = make_app(admit=broken_admit, default_priority=Priority.NORMAL)
    r = TestClient(app, raise_server_exceptions=False).get("/ok")
    assert r.status_code == 500
    assert r.json()["code"] == "internal_error"
    assert "hunter2" not in r.text


def test_a_path_in_the_log_cannot_forge_a_line(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:  # fails on every path, even one no route could match
        def __init__(self, app: object) -> None:
            pass

        async def __call__(self, scope: object, receive: object, send: object) -> None:
            raise RuntimeError("bug")

    app = Starlette()
    install(app)
    app.add_middleware(Broken)
    with caplog.at_level("ERROR", logger="suture"):
        r = TestClient(app, raise_server_exceptions=False).get("/x%0AERROR%20forged%1b[31m")
    assert r.status_code == 500
    (record,) = [rec for rec in caplog.records if "unhandled" in rec.getMessage()]
    message = record.getMessage()
    assert "\n" not in message and "\x1b" not in message
    assert "ERROR forged\\x1b[31m" in message  # (the client already drops the newline)
    from suture.contrib.starlette import _loggable

    assert _loggable("/a\nERROR b") == "/a\\x0aERROR b"
    assert _loggable("/" + "x" * 500) == "/" + "x" * 199 + "..."
