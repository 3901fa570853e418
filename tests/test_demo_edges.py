"""Bad input at the reference service's edge (issue 15): one regression test per defect.

Each of these answered a 500, a 400 where a 422 is documented, a 200 for a
wrong body, or a response without its request id before.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from starlette.testclient import TestClient

from suture.contrib import starlette as suture_web
from suture.demo.app import Settings, create_app
from suture.testing import FakeClock

SMALL = {"tasks": 20, "messages": 60, "rules": 20}
JSON = {"content-type": "application/json"}


def signed_in(app: Any, **kwargs: Any) -> TestClient:
    """A client of the demo ``app``; with the manager's bearer token once the demo has one
    (a demo that signs managers in answers others 401), on a loopback Host."""
    token = getattr(app.state.service, "console_token", None)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return TestClient(app, headers=headers, base_url="http://localhost", **kwargs)


def settings_for(request: pytest.FixtureRequest, tmp_path: Any, kind: str) -> dict[str, Any]:
    if kind == "sqlite":
        return {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"}
    return {
        "database_url": request.getfixturevalue("pg_url"),
        "schema": request.getfixturevalue("unique_name"),
    }


def serve(database: dict[str, Any], **overrides: Any) -> TestClient:
    options: dict[str, Any] = {
        **SMALL,
        "background": False,
        "chaos": True,
        "admin_hosts": ("testclient",),
        "clock": FakeClock(),
        "rand": random.Random(3),
        **database,
        **overrides,
    }
    return signed_in(create_app(Settings(**options)), raise_server_exceptions=False)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[TestClient]:
    database = settings_for(request, tmp_path, request.param)
    try:
        with serve(database) as c:
            yield c
    finally:
        if "schema" in database:
            engine = sa.create_engine(database["database_url"])
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{database["schema"]}" CASCADE'))
            engine.dispose()


@pytest.fixture
def client(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[TestClient]:
    with serve(settings_for(request, tmp_path, "sqlite")) as c:
        yield c


def error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["success"] is False
    assert body["code"] == code, body
    assert r.headers["X-Request-ID"]
    return body


# --- ids the database can hold ------------------------------------------------------


@pytest.mark.parametrize("big", [2**31, 2**31 + 1, 2**53 + 1, 2**63 - 1])
def test_ids_past_32_bits_are_a_404_not_a_500(any_db: TestClient, big: int) -> None:
    for path in (
        f"/api/messages/{big}/promote",
        f"/api/manager/spam/{big}/release",
        f"/api/manager/spam/{big}/archive",
    ):
        error(any_db.post(path), 404, "not_found")
    r = any_db.post(f"/api/manager/assistance/{big}/respond", json={"response": "ok"})
    error(r, 404, "not_found")
    # and the connection is still good: the next request on it is answered
    assert any_db.get("/api/messages").status_code == 200


# --- text a column can hold -----------------------------------------------------------


def test_a_nul_in_a_response_is_a_422_naming_the_field(any_db: TestClient) -> None:
    task = any_db.get("/api/manager/assistance").json()["requests"][0]["id"]
    r = any_db.post(f"/api/manager/assistance/{task}/respond", json={"response": "ok\u0000no"})
    body = error(r, 422, "invalid_request")
    assert body["fields"][0]["field"] == "response"
    assert "NUL" in body["fields"][0]["problem"]
    # nothing was written, and the same task still takes a good answer on PostgreSQL too
    ok = any_db.post(f"/api/manager/assistance/{task}/respond", json={"response": "ok"})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    "raw", [b'{"response": "a\\ud800b"}', b'{"response": "\\udfff"}', b'{"response": "\\ud83d"}']
)
def test_a_lone_surrogate_is_a_422_naming_the_field(client: TestClient, raw: bytes) -> None:
    r = client.post("/api/manager/assistance/1/respond", content=raw, headers=JSON)
    body = error(r, 422, "invalid_request")
    assert body["fields"][0]["field"] == "response"


def test_a_response_of_white_space_only_is_refused_as_documented(client: TestClient) -> None:
    for text in (" ", "\t\n", "\x1c\x1d"):  # str.strip() and the document's pattern agree
        r = client.post("/api/manager/assistance/1/respond", json={"response": text})
        assert error(r, 422, "invalid_request")["fields"][0]["field"] == "response"


def test_a_nul_in_the_chaos_target_is_a_422_naming_it(client: TestClient) -> None:
    r = client.post("/api/admin/chaos", json={"target": "data\u0000base", "errorRate": 0.1})
    assert error(r, 422, "invalid_request")["fields"][0]["field"] == "target"


# --- bodies that are not JSON, or not an object ---------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"response": "caf\xe9"}', id="invalid-utf8"),
        pytest.param(b"[" * 32_000 + b"]" * 32_000, id="32k-deep"),
        pytest.param(b'{"response": ' + b"7" * 50_000 + b"}", id="50k-digit-integer"),
        pytest.param(b'{"response": "cut', id="truncated"),
    ],
)
def test_an_unparseable_body_is_a_422_invalid_json(client: TestClient, raw: bytes) -> None:
    r = client.post("/api/manager/assistance/1/respond", content=raw, headers=JSON)
    body = error(r, 422, "invalid_json")
    assert body["error"] == "The request body is not valid JSON."
    assert body["fields"] == []
    r = client.post("/api/admin/chaos", content=raw, headers=JSON)
    error(r, 422, "invalid_json")


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b"[1, 2]", "application/json"),
        (b'"Approved."', "application/json"),
        (b"true", "application/json"),
        (b"response=Approved.", "application/x-www-form-urlencoded"),
        (b"Approved.", "text/plain"),
    ],
)
def test_a_body_that_is_not_an_object_says_so(
    client: TestClient, raw: bytes, content_type: str
) -> None:
    for path in ("/api/manager/assistance/1/respond", "/api/admin/chaos"):
        r = client.post(path, content=raw, headers={"content-type": content_type})
        body = error(r, 422, "invalid_request")
        assert body["fields"] == [
            {"field": "body", "in": "body", "problem": "the request body must be a JSON object"}
        ], body
        assert "Field required" not in r.text


# --- the chaos admin takes what it documents ------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"errorRate": "0.5"}, "errorRate"),
        ({"latency": "1"}, "latency"),
        ({"hold": 2.0}, "hold"),
        ({"hold": True}, "hold"),
        ({"clear": 1}, "clear"),
        ({"clear": "yes"}, "clear"),
        ({"traffic": "5"}, "traffic"),
        ({"errorRate": 0.1, "eror_rate": 1.0}, "eror_rate"),
        ({"error_rate": 0.1}, "error_rate"),  # the alias is the only name
    ],
)
def test_the_chaos_admin_takes_strict_types_and_no_unknown_keys(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    r = client.post("/api/admin/chaos", json=body)
    assert error(r, 422, "invalid_request")["fields"][0]["field"] == field
    assert (
        client.get("/api/admin/chaos").json()["chaos"].get("database", {}).get("error_rate", 0.0)
        == 0.0
    )


@pytest.mark.parametrize("raw", [b'{"errorRate": NaN}', b'{"latency": Infinity}'])
def test_the_chaos_admin_refuses_non_finite_numbers(client: TestClient, raw: bytes) -> None:
    error(client.post("/api/admin/chaos", content=raw, headers=JSON), 422, "invalid_request")


def test_the_chaos_admin_still_takes_what_it_did(client: TestClient) -> None:
    r = client.post("/api/admin/chaos", json={"errorRate": 1, "latency": 0, "hold": 0})
    assert r.status_code == 200, r.text  # a JSON integer is a number
    assert r.json()["chaos"]["database"]["error_rate"] == 1.0
    assert client.post("/api/admin/chaos").status_code == 200  # no body: nothing changes
    assert client.post("/api/admin/chaos", json={"clear": True}).status_code == 200


# --- the request id, and what a 404 says ----------------------------------------------


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    answers = [
        client.get("/api/messages"),  # 200 from a route
        client.get("/health"),
        client.get("/"),  # a page
        client.get("/suture.js"),
        client.get("/static/app.css"),
        client.get("/openapi.json"),
        client.get("/nope"),  # 404 from the router
        client.post("/api/messages/999999/promote"),  # 404 from the handler
        client.put("/api/messages"),  # 405
        client.post("/api/manager/assistance/1/respond", content=b"x" * 70_000, headers=JSON),
    ]
    seen = set()
    for r in answers:
        rid = r.headers.get("X-Request-ID")
        assert rid, (r.request.url, r.status_code)
        assert r.headers.get_list("X-Request-ID") == [rid]  # once, not twice
        seen.add(rid)
    assert len(seen) == len(answers)
    # the door's refusal too (no credential; answered before the app, no lifespan needed)
    refused = TestClient(client.app, base_url="http://localhost").get("/api/messages")
    if refused.status_code == 401:
        assert len(refused.headers.get_list("X-Request-ID")) == 1
    mine = client.get("/api/messages", headers={"X-Request-ID": "trace-42"})
    assert mine.headers["X-Request-ID"] == "trace-42"
    forged = client.get("/api/messages", headers={"X-Request-ID": "a\tb" + "x" * 100})
    assert forged.headers["X-Request-ID"] != "a\tb" + "x" * 100


def test_a_404_carries_no_target(client: TestClient) -> None:
    body = error(client.post("/api/messages/999999/promote"), 404, "not_found")
    assert set(body) == {"success", "error", "code"}


# --- /api/docs works offline ----------------------------------------------------------


def test_the_api_docs_load_nothing_from_another_host(client: TestClient) -> None:
    page = client.get("/api/docs")
    assert page.status_code == 200
    assert "https://" not in page.text and "http://" not in page.text
    assert "cdn" not in page.text.lower()
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/api/docs/assets/{asset}" in page.text
        r = client.get(f"/api/docs/assets/{asset}")
        assert r.status_code == 200
        assert len(r.content) > 10_000
    assert "SwaggerUIBundle" in client.get("/api/docs/assets/swagger-ui-bundle.js").text
    # the page in the manager's menu is the one that works
    assert 'href="/api/docs"' in client.get("/").text


# --- the OpenAPI document lists every answer ------------------------------------------

EXPECTED = {
    ("get", "/api/manager/assistance"): {200, 401, 500, 503},
    ("post", "/api/manager/assistance/{task_id}/respond"): {200, 401, 404, 409, 413, 422, 500, 503},
    ("post", "/api/manager/spam/capture"): {200, 401, 422, 500, 503},
    ("get", "/api/manager/spam"): {200, 401, 422, 500, 503},
    ("get", "/api/messages"): {200, 401, 422, 500, 503},
    ("post", "/api/manager/spam/{message_id}/release"): {200, 401, 404, 409, 413, 422, 500, 503},
    ("post", "/api/manager/spam/{message_id}/archive"): {200, 401, 404, 409, 413, 422, 500, 503},
    ("post", "/api/messages/{message_id}/promote"): {200, 401, 404, 409, 413, 422, 500, 503},
    ("get", "/health"): {200, 401, 500},
    ("get", "/api/dashboard"): {200, 401, 500},
    ("get", "/api/admin/chaos"): {200, 401, 403, 500},
    ("post", "/api/admin/chaos"): {200, 401, 400, 403, 413, 422, 500},
}


def test_the_document_lists_every_status_with_its_body_and_examples(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    listed = {
        (method, path): {int(status) for status in operation["responses"]}
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    assert listed == EXPECTED
    for (method, path), statuses in EXPECTED.items():
        responses = document["paths"][path][method]["responses"]
        for status in statuses - {200}:
            answer = responses[str(status)]
            content = answer["content"]["application/json"]
            assert content["schema"]["required"] == ["success", "error", "code"]
            assert set(content["schema"]["properties"]) >= {"code", "error", "retryAfter", "fields"}
            examples = [e["value"] for e in content["examples"].values()]
            assert examples and all(e["success"] is False and e["code"] for e in examples)
            assert "X-Request-ID" in answer["headers"]
            if status == 503:
                assert "Retry-After" in answer["headers"]
                assert all(e["retryAfter"] >= 1 for e in examples)
            if status == 422:
                assert {e["code"] for e in examples} == {"invalid_request", "invalid_json"}
                assert any(e["fields"] for e in examples)


def test_the_document_describes_each_success_body(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    shapes = {
        ("get", "/api/manager/assistance"): "AssistanceList",
        ("post", "/api/manager/assistance/{task_id}/respond"): "Responded",
        ("post", "/api/manager/spam/capture"): "CaptureResult",
        ("get", "/api/manager/spam"): "MessagesPage",
        ("get", "/api/messages"): "MessagesPage",
        ("post", "/api/manager/spam/{message_id}/release"): "Moved",
        ("post", "/api/manager/spam/{message_id}/archive"): "Moved",
        ("post", "/api/messages/{message_id}/promote"): "Moved",
    }
    for (method, path), name in shapes.items():
        ok = document["paths"][path][method]["responses"]["200"]
        assert ok["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{name}"
        }
    message = document["components"]["schemas"]["Message"]
    assert set(message["required"]) >= {"id", "status", "matchedPatterns", "releasedPatterns"}
    # and an answer matches its shape (the fuzzer checks every one)
    from suture.demo.schemas import MessagesPage

    MessagesPage.model_validate(client.get("/api/messages").json())


def test_openapi_responses_refuses_a_status_it_cannot_describe() -> None:
    with pytest.raises(ValueError, match="status=418"):
        suture_web.openapi_responses(418)


# --- the same edges in any FastAPI app that installs suture ---------------------------


def test_install_answers_unparseable_bodies_and_ids_every_response() -> None:
    app = FastAPI()

    @app.post("/items")
    async def items(payload: dict[str, int]) -> dict[str, bool]:
        return {"success": True}

    suture_web.install(app)
    c = TestClient(app, raise_server_exceptions=False)
    ok = c.post("/items", json={"a": 1})
    assert ok.status_code == 200 and ok.headers["X-Request-ID"]
    r = c.post("/items", content=b'{"a": ' + b"9" * 5000 + b"}", headers=JSON)
    assert r.status_code == 422 and r.json()["code"] == "invalid_json"
    assert r.headers["X-Request-ID"]
