"""The Python examples in docs/limits.md and docs/fallback.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
PAGES = ("limits.md", "fallback.md")


def blocks(name: str) -> list[str]:
    return BLOCK.findall((DOCS / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("name", "index", "code"),
    [(name, i, code) for name in PAGES for i, code in enumerate(blocks(name))],
)
def test_example_runs(name: str, index: int, code: str) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{name}_{index}"}
    exec(compile(code, f"{name}[{index}]", "exec"), namespace)


def test_there_are_examples() -> None:
    assert len(blocks("limits.md")) >= 3
    assert len(blocks("fallback.md")) >= 1
