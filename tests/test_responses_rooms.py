"""The rooms of suture.responses: public names where the docs say, imports that point down."""

from __future__ import annotations

import ast
import gzip
import inspect
import pathlib
import sys

import httpx
import pytest

import suture
import suture.responses
from suture.responses import reading

SRC = pathlib.Path(__file__).resolve().parent.parent / "src" / "suture"
ROOMS = SRC / "responses"

# Lowest first: each room may import only the rooms before it.
ORDER = ["outcome", "_duck", "_html", "_json", "reading", "_plan", "validate"]

# Every public name of the single module this package replaced, and the readers.
OLD_NAMES = [
    "ERROR_LIMIT",
    "SNIPPET_LIMIT",
    "Expect",
    "Outcome",
    "ResponseLike",
    "SimpleResponse",
    "avalidate_response",
    "clean_text",
    "outcome_from_exception",
    "validate_response",
    "with_attempts",
]
READERS = [
    "AsyncStreamError",
    "Inflater",
    "aread_body",
    "aread_prefix",
    "read_body",
    "read_prefix",
]


def _isort_key(name: str) -> tuple[int, str]:
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return kind, name


def _imports(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports, TYPE_CHECKING blocks and function bodies included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("name", OLD_NAMES + READERS)
def test_public_names_are_exported_from_the_package(name: str) -> None:
    assert name in suture.responses.__all__
    assert getattr(suture.responses, name) is not None


@pytest.mark.parametrize("name", READERS)
def test_the_readers_live_in_suture_responses_reading(name: str) -> None:
    # docs/responses.md, "The readers": suture.responses.reading, re-exported by the package
    assert name in reading.__all__
    assert getattr(reading, name) is getattr(suture.responses, name)
    assert getattr(reading, name).__doc__


def test_all_is_sorted_and_complete() -> None:
    names = suture.responses.__all__
    assert list(names) == sorted(names, key=_isort_key)
    assert set(OLD_NAMES + READERS) == set(names)
    for name in ("Outcome", "SimpleResponse", "validate_response", "avalidate_response"):
        assert getattr(suture, name) is getattr(suture.responses, name)


def test_every_room_is_listed_and_imports_only_lower_rooms() -> None:
    assert sorted(p.stem for p in ROOMS.glob("*.py") if p.stem != "__init__") == sorted(ORDER)
    for index, room in enumerate(ORDER):
        siblings = {
            module.rsplit(".", 1)[-1]
            for module in _imports(ROOMS / f"{room}.py")
            if module.startswith("suture.responses")
        }
        assert siblings <= set(ORDER[:index]), f"{room} imports {siblings - set(ORDER[:index])}"


def test_rooms_import_no_third_party_package() -> None:
    allowed = set(sys.stdlib_module_names) | {"suture", "__future__"}
    for path in ROOMS.glob("*.py"):
        outside = {m.split(".")[0] for m in _imports(path)} - allowed
        assert outside == set(), f"{path.name} imports {outside}"


def test_errors_does_not_import_responses() -> None:
    # errors is the lower room: ResponseError holds an Outcome without importing its type
    assert not any(m.startswith("suture.responses") for m in _imports(SRC / "errors.py"))


def test_contrib_httpx_imports_no_private_name_of_responses() -> None:
    tree = ast.parse((SRC / "contrib" / "httpx.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("suture.responses"):
            assert not any(part.startswith("_") for part in (node.module or "").split("."))
            assert not [a.name for a in node.names if a.name.startswith("_")]


def test_read_prefix_reads_a_bounded_prefix_and_closes() -> None:
    body = b"<title>Down</title>" + b"x" * 100_000
    streamed = httpx.Response(500, stream=httpx.ByteStream(body))
    assert reading.read_prefix(streamed, 100) == body[:100]
    assert streamed.is_closed
    with pytest.raises(ValueError, match="limit=-1"):
        reading.read_prefix(streamed, -1)


async def test_aread_prefix_inflates_only_up_to_the_limit() -> None:
    zipped = gzip.compress(b"<title>Down</title>" + b"\0" * 10_000_000)
    response = httpx.Response(
        500, headers={"content-encoding": "gzip"}, stream=httpx.ByteStream(zipped)
    )
    assert await reading.aread_prefix(response, 19) == b"<title>Down</title>"
    assert response.is_closed
    assert await reading.aread_body(httpx.Response(200, content=b"all")) == b"all"


def test_inflater_for_encoding() -> None:
    assert reading.Inflater.for_encoding("br", 10) is None
    inflater = reading.Inflater.for_encoding(" GZIP ", 4)
    assert inflater is not None
    assert inflater.feed(gzip.compress(b"abcdef"))
    assert inflater.result() == b"abcd"


def test_the_entry_points_take_the_same_options() -> None:
    # Both public signatures are written out (help() and type checkers read them);
    # this keeps their options and defaults from drifting apart.
    sync = inspect.signature(suture.responses.validate_response)
    asynchronous = inspect.signature(suture.responses.avalidate_response)
    assert sync.parameters == asynchronous.parameters
    assert inspect.iscoroutinefunction(suture.responses.avalidate_response)
