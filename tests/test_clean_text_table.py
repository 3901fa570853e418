"""No lost words, no markup: the shared table (tests/data/clean_text_cases.json).

Every row runs through Python (``clean_text``, ``validate_response``) and through
``suture.js`` in Chromium (``cleanText``, ``validateResponse``, ``renderError``);
both must give the row's text.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from suture import SimpleResponse, validate_response
from suture.responses import clean_text

TABLE = json.loads((Path(__file__).parent / "data" / "clean_text_cases.json").read_text())
FRAGMENTS: list[dict[str, str]] = TABLE["fragments"]
PAGES: list[dict[str, str]] = TABLE["pages"]
TAG = re.compile(r"<[A-Za-z/!?]")


def error_of(page: dict[str, str]) -> str | None:
    response = SimpleResponse(500, {"content-type": page["type"]}, page["body"].encode())
    return validate_response(response, emit_events=False).error


@pytest.mark.parametrize("row", FRAGMENTS, ids=[r["name"] for r in FRAGMENTS])
def test_clean_text(row: dict[str, str]) -> None:
    assert clean_text(row["input"]) == row["expected"]


@pytest.mark.parametrize("row", PAGES, ids=[r["name"] for r in PAGES])
def test_error_pages(row: dict[str, str]) -> None:
    assert error_of(row) == row["expected"]


def test_the_expected_texts_carry_no_markup() -> None:
    for row in [*FRAGMENTS, *PAGES]:
        assert not TAG.search(row["expected"]), row["name"]
        # cleaning a clean line again changes nothing (no second decoding of clean text)
        assert clean_text(row["expected"]) == row["expected"] or "&" in row["expected"]


# --- suture.js in Chromium ------------------------------------------------------------

ORIGIN = "http://suture.test"
SUTURE_JS = importlib.resources.files("suture").joinpath("static/suture.js").read_bytes()
PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>clean</title></head>
<body><p id="out"></p><script type="module">
  import * as suture from "/static/suture.js";
  window.suture = suture;
  window.pwned = 0;
</script></body></html>"""


@pytest.fixture(scope="module")
def js_page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def serve(route: Any) -> None:
        if route.request.url.endswith("/static/suture.js"):
            route.fulfill(status=200, content_type="text/javascript", body=SUTURE_JS)
        else:
            route.fulfill(status=200, content_type="text/html", body=PAGE)

    page.route(f"{ORIGIN}/**", serve)
    page.goto(f"{ORIGIN}/page.html")
    page.wait_for_function("window.suture !== undefined")
    yield page
    assert errors == []
    context.close()


@pytest.mark.browser
def test_browser_clean_text(js_page: Any) -> None:
    got = js_page.evaluate("(rows) => rows.map((r) => window.suture.cleanText(r.input))", FRAGMENTS)
    assert dict(zip([r["name"] for r in FRAGMENTS], got, strict=True)) == {
        r["name"]: r["expected"] for r in FRAGMENTS
    }


@pytest.mark.browser
def test_browser_error_pages_rendered_as_text(js_page: Any) -> None:
    got = js_page.evaluate(
        """async (rows) => {
            const out = [];
            const el = document.getElementById("out");
            for (const r of rows) {
                const outcome = await window.suture.validateResponse(
                    new Response(r.body, {status: 500, headers: {"content-type": r.type}}));
                window.suture.renderError(el, outcome, {hint: false});
                out.push({error: outcome.error, shown: el.textContent,
                          children: el.children.length});
            }
            await new Promise((r) => setTimeout(r, 50));  // let any onerror fire
            return {out, pwned: window.pwned};
        }""",
        PAGES,
    )
    assert got["pwned"] == 0
    for row, result in zip(PAGES, got["out"], strict=True):
        assert result == {"error": row["expected"], "shown": row["expected"], "children": 0}, row[
            "name"
        ]
