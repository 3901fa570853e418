"""Every example runs as its docstring says, and the README's promise about it holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_the_example_runs_as_its_docstring_says(example: Path) -> None:
    command = f".venv/bin/python examples/{example.name}"
    assert command in example.read_text(), f"{example.name}: its docstring must say {command!r}"
    # sys.executable is the .venv's interpreter under scripts/test
    done = subprocess.run(
        [sys.executable, str(example)], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() or done.stderr.strip(), "an example says what happened"


def test_the_readme_names_a_runnable_example() -> None:
    readme = (ROOT / "README.md").read_text()
    assert any(f"examples/{p.name}" in readme for p in EXAMPLES)
