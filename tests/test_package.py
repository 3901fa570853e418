"""The package's own promises: public API, typing, no side effects at import, a pure core."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest

import suture

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "suture"


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical.
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return kind, name


def test_all_is_sorted_and_unique() -> None:
    assert list(suture.__all__) == sorted(suture.__all__, key=_isort_key)
    assert len(set(suture.__all__)) == len(suture.__all__)


def test_all_is_complete() -> None:
    public = {
        name
        for name, value in vars(suture).items()
        if not name.startswith("_") and not isinstance(value, type(sys))  # skip submodules
    }
    assert public == set(suture.__all__)
    for name in suture.__all__:
        assert hasattr(suture, name), name


def test_py_typed_is_shipped() -> None:
    assert (SRC / "py.typed").exists()


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return out.stdout


def test_import_has_no_side_effects_and_core_is_pure() -> None:
    code = """
import json, sys, threading
before = set(sys.modules)
threads_before = threading.active_count()
import suture, suture.testing, suture.classify, suture.backoff, suture.budget
new = sorted(set(sys.modules) - before)
print(json.dumps({"modules": new, "threads": threading.active_count() - threads_before}))
"""
    data = json.loads(_run(code))
    assert data["threads"] == 0
    stdlib = set(sys.stdlib_module_names)
    third_party = sorted(
        {m.split(".")[0] for m in data["modules"]} - stdlib - {"suture"} - {"_distutils_hack"}
    )
    assert third_party == [], f"the core imported third-party packages: {third_party}"


def test_core_modules_do_not_import_third_party_packages() -> None:
    stdlib = set(sys.stdlib_module_names)
    offenders = []
    for path in SRC.glob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")) and not stripped.startswith("from ."):
                module = stripped.split()[1].split(".")[0]
                if module not in stdlib and module not in {"suture", "__future__"}:
                    offenders.append(f"{path.name}: {stripped}")
    assert offenders == []


def test_no_print_in_the_library() -> None:
    for path in SRC.rglob("*.py"):
        if path.name == "cli.py":  # the command line prints to its terminal on purpose
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            assert not re.search(r"(?<![\w.])print\(", code), f"{path.relative_to(ROOT)}:{number}"


@pytest.mark.slow
def test_typing_of_decorated_functions() -> None:
    """mypy --strict keeps the wrapped signatures (assert_type in tests/typing_retry.py)."""
    target = pathlib.Path(__file__).with_name("typing_retry.py")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(target)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
