"""suture.js in headless Chromium (Debian's ``chromium``, driven by Python Playwright).

A local server on 127.0.0.1 serves suture.js, a test page and hostile answers.
Where Chromium is missing these tests skip, except in CI (``CI=true``), where
they fail.
"""

from __future__ import annotations

import importlib.resources
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from suture import validate_response

pytestmark = pytest.mark.browser

SUTURE_JS = importlib.resources.files("suture").joinpath("static/suture.js").read_bytes()

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>suture.js test page</title></head>
<body>
<p id="status"></p>
<div id="out"></div>
<script type="module">
  import * as suture from "/static/suture.js";
  window.suture = suture;
  window.pwned = 0;
</script>
</body></html>
"""

NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
XSS_HTML = (
    b"<html><head><title><img src=x onerror='window.pwned=1'>Broken &lt;b&gt;"
    b"<script>window.pwned=2</script></title></head><body><h1>x</h1></body></html>"
)
XSS_JSON = json.dumps(
    {"error": "<img src=x onerror='window.pwned=3'>bad <b>input</b><script>window.pwned=4</script>"}
).encode()
FASTAPI_422 = json.dumps(
    {"detail": [{"type": "missing", "loc": ["body", "name"], "msg": "Field required"}]}
).encode()

# path -> (status, content type, body, extra headers)
ROUTES: dict[str, tuple[int, str, bytes, dict[str, str]]] = {
    "/api/ok": (200, "application/json", b'{"items": [1, 2]}', {}),
    "/api/bom": (200, "application/vnd.api+json; charset=utf-8", b'\xef\xbb\xbf{"a": 1}', {}),
    "/api/empty": (204, "", b"", {}),
    "/api/nginx": (502, "text/html", NGINX_502, {}),
    "/api/always503": (503, "application/json", b'{"success": false, "error": "Overloaded"}', {}),
    "/api/busy": (
        503,
        "application/json",
        b'{"success": false, "error": "Service busy", "retryAfter": 30}',
        {"Retry-After": "1"},
    ),
    "/api/long-wait": (503, "text/plain", b"come back later", {"Retry-After": "120"}),
    "/api/garbage-retry-after": (503, "text/plain", b"busy", {"Retry-After": "soon"}),
    "/api/xss-html": (500, "text/html", XSS_HTML, {}),
    "/api/xss-json": (400, "application/json", XSS_JSON, {}),
    "/api/422": (422, "application/json", FASTAPI_422, {}),
    "/api/problem": (
        404,
        "application/problem+json",
        b'{"title": "Not Found", "detail": "no ticket 7"}',
        {},
    ),
    "/api/truncated": (502, "application/json", b'{"error": "upstr', {}),
    "/api/html200": (200, "text/html", b"<html><title>Login</title></html>", {}),
    "/api/latin1": (500, "text/plain; charset=iso-8859-1", b"Erreur: base \xe9teinte", {}),
}


class State:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.big_sent = 0
        self.lock = threading.Lock()


def make_handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, ctype: str, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            if ctype:
                self.send_header("Content-Type", ctype)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Cache-Control", "no-store")
            if status not in (204, 304):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if status not in (204, 304):
                self.wfile.write(body)

        def _route(self) -> None:
            path = urlsplit(self.path).path
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            key = f"{self.command} {path}"
            with state.lock:
                state.hits[key] += 1
                hits = state.hits[key]
            if path == "/static/suture.js":
                return self._send(200, "text/javascript", SUTURE_JS, {})
            if path == "/page.html":
                return self._send(200, "text/html; charset=utf-8", PAGE, {})
            if path.startswith("/api/flaky/"):  # 503 twice, then 200
                if hits <= 2:
                    return self._send(503, "application/json", b'{"error": "warming up"}', {})
                return self._send(200, "application/json", b'{"done": true}', {})
            if path == "/api/slow":
                time.sleep(1.0)
                return self._send(200, "application/json", b"{}", {})
            if path == "/api/big":
                return self._big()
            if path in ROUTES:
                return self._send(*ROUTES[path])
            return self._send(404, "text/plain", b"no such route", {})

        def _big(self) -> None:
            chunk = b"<p>" + b"x" * 16380 + b"</p>"
            self.send_response(500)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(27 + 40 * 1024 * 1024))
            self.end_headers()
            try:
                self.wfile.write(b"<title>Huge failure</title>")
                for _ in range(40 * 1024 * 1024 // len(chunk)):
                    self.wfile.write(chunk)
                    state.big_sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _serve(self) -> None:
            try:
                self._route()
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
                self.close_connection = True

        do_GET = _serve
        do_POST = _serve
        do_PUT = _serve
        do_DELETE = _serve

    return Handler


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, State]]:
    state = State()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def loaded_page(browser: Any, server: tuple[str, State]) -> Iterator[tuple[Any, list[str]]]:
    base, _ = server
    context = browser.new_context()
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(f"{base}/page.html")
    pg.wait_for_function("window.suture !== undefined")
    yield pg, errors
    context.close()


@pytest.fixture
def page(loaded_page: tuple[Any, list[str]]) -> Iterator[Any]:
    """One page for the module (loading a page costs a second here); reset per test."""
    pg, errors = loaded_page
    pg.evaluate(
        """() => { window.pwned = 0;
                   document.getElementById("out").textContent = "";
                   document.getElementById("status").textContent = ""; }"""
    )
    yield pg
    assert errors == []


def fetch(page: Any, path: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """sutureFetch(path, options) in the page, with onRetry recording its messages."""
    script = """async ([path, options]) => {
        const retries = [];
        const outcome = await window.suture.sutureFetch(path, {
            baseDelay: 10, maxDelay: 40, ...options,
            onRetry: (info) => {
                retries.push({message: window.suture.retryMessage(info), delay: info.delay,
                              status: info.outcome.status});
                document.getElementById("status").textContent = window.suture.retryMessage(info);
            },
        });
        return {outcome, retries};
    }"""
    result: dict[str, Any] = page.evaluate(script, [path, options or {}])
    return result


OUTCOME_KEYS = {
    "ok",
    "status",
    "data",
    "error",
    "retryAfter",
    "transient",
    "snippet",
    "contentType",
    "url",
    "attempts",
}


@pytest.mark.parametrize(
    "path",
    [
        "/api/ok",
        "/api/bom",
        "/api/empty",
        "/api/nginx",
        "/api/422",
        "/api/problem",
        "/api/truncated",
        "/api/html200",
        "/api/latin1",
        "/api/xss-json",
        "/api/xss-html",
        "/api/garbage-retry-after",
    ],
)
def test_same_outcome_as_python(page: Any, server: tuple[str, State], path: str) -> None:
    base, _ = server
    got = fetch(page, path, {"attempts": 1})["outcome"]
    assert set(got) == OUTCOME_KEYS
    expected = validate_response(httpx.get(base + path), emit_events=False).as_dict()
    for key in ("ok", "status", "data", "error", "retryAfter", "transient", "contentType"):
        assert got[key] == expected[key], (key, got, expected)
    assert got["url"] == base + path
    assert got["attempts"] == 1


def test_retry_cap_and_on_retry_messages(page: Any, server: tuple[str, State]) -> None:
    _, state = server
    result = fetch(page, "/api/always503")
    outcome = result["outcome"]
    assert (outcome["ok"], outcome["status"], outcome["error"]) == (False, 503, "Overloaded")
    assert outcome["attempts"] == 3
    assert state.hits["GET /api/always503"] == 3
    assert [r["message"] for r in result["retries"]] == [
        "Loading... (retry 1/3)",
        "Loading... (retry 2/3)",
    ]
    assert all(0 <= r["delay"] <= 40 for r in result["retries"])  # full jitter under the cap
    assert page.text_content("#status") == "Loading... (retry 2/3)"


def test_attempts_never_exceed_the_hard_cap(page: Any, server: tuple[str, State]) -> None:
    _, state = server
    before = state.hits["GET /api/always503"]
    outcome = fetch(page, "/api/always503", {"attempts": 1000, "baseDelay": 0})["outcome"]
    assert outcome["attempts"] == 10
    assert state.hits["GET /api/always503"] - before == 10


def test_transient_then_success(page: Any, server: tuple[str, State]) -> None:
    result = fetch(page, "/api/flaky/a")
    assert result["outcome"]["ok"] is True
    assert result["outcome"]["data"] == {"done": True}
    assert result["outcome"]["attempts"] == 3
    assert len(result["retries"]) == 2


def test_retry_after_header_sets_the_delay(page: Any, server: tuple[str, State]) -> None:
    _, state = server
    # maxDelay 1000 ms: a Retry-After longer than maxDelay would end the retries instead
    result = fetch(page, "/api/busy", {"attempts": 2, "maxDelay": 1000})
    assert [r["delay"] for r in result["retries"]] == [1000]  # the header, not the body's 30
    outcome = result["outcome"]
    assert (outcome["error"], outcome["retryAfter"], outcome["attempts"]) == ("Service busy", 1, 2)
    assert state.hits["GET /api/busy"] == 2


def test_retry_after_beyond_the_limit_ends_retries(page: Any, server: tuple[str, State]) -> None:
    result = fetch(page, "/api/long-wait")
    assert result["retries"] == []
    assert result["outcome"]["retryAfter"] == 120
    assert result["outcome"]["attempts"] == 1


def test_deadline_stops_before_a_wait_that_would_pass_it(page: Any) -> None:
    result = fetch(page, "/api/busy", {"deadline": 500})
    assert result["retries"] == []
    assert result["outcome"]["attempts"] == 1


def test_client_errors_are_not_retried(page: Any, server: tuple[str, State]) -> None:
    _, state = server
    before = state.hits["GET /api/422"]
    outcome = fetch(page, "/api/422")["outcome"]
    assert outcome["error"] == "name: Field required"
    assert (outcome["transient"], outcome["attempts"]) == (False, 1)
    assert state.hits["GET /api/422"] - before == 1


def test_post_is_retried_only_with_an_idempotency_key(page: Any, server: tuple[str, State]) -> None:
    _, state = server
    outcome = fetch(page, "/api/flaky/post", {"method": "POST", "body": "{}"})["outcome"]
    assert (outcome["status"], outcome["attempts"]) == (503, 1)
    keyed = fetch(
        page,
        "/api/flaky/post-keyed",
        {"method": "POST", "body": "{}", "headers": {"Idempotency-Key": "k1"}},
    )["outcome"]
    assert (keyed["ok"], keyed["attempts"]) == (True, 3)
    assert state.hits["POST /api/flaky/post"] == 1
    assert state.hits["POST /api/flaky/post-keyed"] == 3


def test_per_attempt_timeout(page: Any, server: tuple[str, State]) -> None:
    result = fetch(page, "/api/slow", {"timeout": 150, "attempts": 2})
    outcome = result["outcome"]
    assert outcome["ok"] is False
    assert outcome["status"] is None
    assert outcome["transient"] is True
    assert outcome["error"] == "The request timed out after 150 ms."
    assert outcome["attempts"] == 2


def test_network_error(page: Any) -> None:
    outcome = fetch(page, "http://127.0.0.1:9/nothing", {"attempts": 2})["outcome"]
    assert (outcome["ok"], outcome["status"], outcome["transient"]) == (False, None, True)
    assert outcome["error"] == "Network error: the server could not be reached."
    assert outcome["attempts"] == 2


def test_big_error_page_is_cut_short(page: Any) -> None:
    outcome = fetch(page, "/api/big", {"attempts": 1})["outcome"]
    assert outcome["error"] == "Huge failure"
    assert outcome["status"] == 500


@pytest.mark.parametrize("path", ["/api/xss-html", "/api/xss-json"])
def test_no_html_injection(page: Any, path: str) -> None:
    text = page.evaluate(
        """async (path) => {
            const outcome = await window.suture.sutureFetch(path, {attempts: 1});
            const out = document.getElementById("out");
            window.suture.renderError(out, outcome);
            await new Promise((r) => setTimeout(r, 50));  // let any onerror fire
            return {text: out.textContent, children: out.children.length, pwned: window.pwned};
        }""",
        path,
    )
    assert text["children"] == 0
    assert text["pwned"] == 0
    assert "<img" not in text["text"] and "<script" not in text["text"]
    # the escaped "&lt;b&gt;" of the title keeps its word, as a look-alike (issue 17)
    assert text["text"] in ("Broken \u2039b\u203a", "bad input")


def test_render_error_hint_and_fallback(page: Any) -> None:
    texts = page.evaluate(
        """() => {
            const el = document.createElement("p");
            const a = window.suture.renderError(el, {error: "Busy", retryAfter: 2.2}).textContent;
            const b = window.suture.renderError(el, {error: ""}).textContent;
            const c = window.suture.renderError(el, "<b>plain</b>").textContent;
            return [a, b, c];
        }"""
    )
    assert texts == ["Busy Please try again in 3 s.", "Something went wrong.", "plain"]


def test_parse_retry_after(page: Any) -> None:
    values = page.evaluate(
        """() => {
            const now = Date.parse("Tue, 14 Nov 2023 22:13:20 GMT");
            const p = window.suture.parseRetryAfter;
            return [p("5", now), p(" 2.5 ", now), p("Tue, 14 Nov 2023 22:13:50 GMT", now),
                    p("Tue, 14 Nov 2023 22:00:00 GMT", now), p("soon", now), p("-1", now),
                    p("99999999", now), p(null, now), p("", now)];
        }"""
    )
    assert values == [5, 2.5, 30, 0, None, None, 86400, None, None]


def test_share_backoff_holds_back_other_tabs(
    loaded_page: tuple[Any, list[str]], server: tuple[str, State]
) -> None:
    base, state = server
    first, _ = loaded_page
    context = first.context
    other = context.new_page()  # another tab of the same origin
    try:
        other.goto(f"{base}/page.html")
        other.wait_for_function("window.suture !== undefined")
        busy = fetch(first, "/api/busy", {"attempts": 1, "shareBackoff": True})["outcome"]
        assert busy["retryAfter"] == 1
        before = state.hits["GET /api/ok"]
        held = fetch(other, "/api/ok", {"shareBackoff": True, "deadline": 300})["outcome"]
        assert (held["ok"], held["attempts"], held["transient"]) == (False, 0, True)
        assert held["error"] == "The server is busy; please try again shortly."
        assert state.hits["GET /api/ok"] == before  # the server was not asked
        waited = fetch(other, "/api/ok", {"shareBackoff": True})["outcome"]
        assert (waited["ok"], waited["attempts"]) == (True, 1)
        unshared = fetch(other, "/api/ok")["outcome"]  # without the option: no waiting
        assert unshared["ok"] is True
    finally:
        other.evaluate("() => localStorage.clear()")
        other.close()


def test_parse_retry_after_agrees_with_python(page: Any) -> None:
    # Number() takes "1e3", "0x10", "0b1", "+5": suture.classify does not, nor should the
    # browser (a hex "Retry-After: 0x10" once made it wait 16 s).
    from suture.classify import parse_retry_after

    values = ["0x10", "1e3", "+5", "0b1", "0o7", "5e-1", "1_000", "Infinity", ".5", "5.", "00012"]
    got = page.evaluate("(vs) => vs.map((v) => window.suture.parseRetryAfter(v))", values)
    assert got == [parse_retry_after(v) for v in values]
    assert got[-3:] == [0.5, 5, 12]


def test_an_aborted_signal_ends_a_shared_pause_at_once(page: Any) -> None:
    # An "abort" that happened before the wait never fires again: the wait used to run
    # its full length, then knock on the server anyway (attempts 1, calls 1).
    result = page.evaluate(
        """async () => {
            const key = "suture:pause:" + location.origin;
            localStorage.setItem(key, String(Date.now() + 20000));
            const controller = new AbortController();
            controller.abort();
            let calls = 0;
            try {
                const outcome = await window.suture.sutureFetch("/api/ok", {
                    shareBackoff: true, deadline: 60000, signal: controller.signal,
                    fetch: () => { calls += 1; return Promise.reject(new Error("no")); },
                });
                return {error: outcome.error, attempts: outcome.attempts, calls};
            } finally {
                localStorage.removeItem(key);
            }
        }"""
    )
    assert result == {
        "error": "The request was cancelled.",
        "attempts": 0,
        "calls": 0,
    }


def test_no_html_sink_anywhere_in_the_source() -> None:
    # Server text reaches the page only as text: no HTML sink in the code at all
    # (comments may name them to warn against them).
    import re

    code = re.sub(rb"/\*.*?\*/", b"", SUTURE_JS, flags=re.S)
    code = b"\n".join(line.split(b"//")[0] for line in code.splitlines())
    for sink in (b"innerHTML", b"outerHTML", b"insertAdjacentHTML", b"document.write", b"eval("):
        assert sink not in code, sink
    assert b"new Function" not in code


def test_body_retry_after_agrees_with_python(page: Any) -> None:
    from suture import SimpleResponse

    values = ['"0x10"', '"0b1"', '"1e3"', '" 7 "', '"-3"', "12.5", "1" + "0" * 400, "-1e400"]
    bodies = ['{"error": "busy", "retryAfter": ' + v + "}" for v in values]
    got = page.evaluate(
        """async (bodies) => Promise.all(bodies.map(async (b) => (
            await window.suture.validateResponse(new Response(b, {
                status: 503, headers: {"content-type": "application/json"}}))).retryAfter))""",
        bodies,
    )
    expected = [
        validate_response(
            SimpleResponse(503, {"content-type": "application/json"}, b.encode()),
            emit_events=False,
        ).retry_after
        for b in bodies
    ]
    assert got == expected
    assert expected == [None, None, 1000, 7, 0, 12.5, None, None]


def test_attempts_are_the_calls_made_in_every_path(page: Any) -> None:
    # Each path of sutureFetch with a counting fetch: `attempts` must equal the calls made.
    result = page.evaluate(
        """async () => {
            const json = {"content-type": "application/json"};
            const paths = {
                ok: [() => new Response("{}", {status: 200, headers: json})],
                retried: [() => new Response("{}", {status: 503, headers: json}),
                          () => new Response("{}", {status: 200, headers: json})],
                exhausted: [() => new Response("{}", {status: 503, headers: json})],
                network: [() => Promise.reject(new TypeError("Failed to fetch"))],
                notRetried: [() => new Response("{}", {status: 404, headers: json})],
                longRetryAfter: [() => new Response("{}", {status: 503,
                                  headers: {...json, "retry-after": "3600"}})],
            };
            const out = {};
            for (const [name, answers] of Object.entries(paths)) {
                let calls = 0;
                const outcome = await window.suture.sutureFetch("/api/x", {
                    baseDelay: 1, maxDelay: 2,
                    fetch: () => answers[Math.min(calls++, answers.length - 1)](),
                });
                out[name] = [outcome.attempts, calls];
            }
            const cancelled = new AbortController();
            cancelled.abort();
            let calls = 0;
            const outcome = await window.suture.sutureFetch("/api/x", {
                signal: cancelled.signal, fetch: () => { calls += 1; return Promise.reject(); },
            });
            out.cancelledBefore = [outcome.attempts, calls];
            return out;
        }"""
    )
    assert result == {
        "ok": [1, 1],
        "retried": [2, 2],
        "exhausted": [3, 3],
        "network": [3, 3],
        "notRetried": [1, 1],
        "longRetryAfter": [1, 1],
        "cancelledBefore": [0, 0],
    }
