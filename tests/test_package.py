"""The package's own promises: public API, typing, no side effects at import, a pure core."""

from __future__ import annotations

import importlib
import json
import pathlib
import pkgutil
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


# --- each room's public names are exported where the docs say ------------------------

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _public_modules() -> list[str]:
    """Every module of src/suture without a private part, that can be imported here."""
    names = []
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if any(part.startswith("_") for part in parts):
            continue
        names.append(".".join(parts))
    return names


def _import_or_skip(name: str) -> object:
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # a contrib module whose extra is not installed
        if exc.name is not None and exc.name.partition(".")[0] != "suture":
            return None
        raise


@pytest.mark.parametrize("name", _public_modules())
def test_every_public_module_exports_its_all(name: str) -> None:
    module = _import_or_skip(name)
    if module is None:
        pytest.skip(f"{name}: its extra is not installed")
    exported = getattr(module, "__all__", None)
    if name == "suture.contrib":  # the extras' namespace: only the error they share
        assert exported == ["missing_extra"]
        return
    assert exported is not None, f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    missing = [item for item in exported if not hasattr(module, item)]
    assert missing == [], f"{name}.__all__ names what it does not have: {missing}"


def _documented_references() -> set[str]:
    """``suture.x.y`` written in the docs (not quoted keys such as "suture.outcome",
    not the browser client suture.js), and ``from suture.x import a, b`` as ``suture.x.a``."""
    refs: set[str] = set()
    for path in DOCS:
        text = path.read_text()
        for match in re.finditer(r"(?<![\w./\"'-])suture(?:\.[A-Za-z_]\w*)+", text):
            if match.group() != "suture.js":
                refs.add(match.group())
        pattern = r"from (suture(?:\.\w+)*) import (?:\(([^)]*)\)|([\w, ]+))"
        for match in re.finditer(pattern, text):
            for item in (match.group(2) or match.group(3)).split(","):
                name = item.split(" as ")[0].strip()
                if name:
                    refs.add(f"{match.group(1)}.{name}")
    return refs


def test_names_in_the_docs_exist_where_the_docs_say() -> None:
    broken = []
    for ref in sorted(_documented_references()):
        parts = ref.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable module prefix
            module_name = ".".join(parts[:cut])
            try:
                obj: object = _import_or_skip(module_name)
            except ImportError:
                continue
            break
        if obj is None:
            continue  # an extra that is not installed
        try:
            for attribute in parts[cut:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            broken.append(ref)
    assert broken == []


def test_root_exports_match_the_docs() -> None:
    """What the docs call ``suture.Name`` is in ``suture.__all__``, and every name of
    ``suture.__all__`` is written somewhere in the docs."""
    submodules = {info.name for info in pkgutil.iter_modules(suture.__path__)}
    documented = {
        ref.split(".")[1] for ref in _documented_references() if ref.split(".")[1] not in submodules
    }
    assert documented - set(suture.__all__) == set()
    text = "\n".join(path.read_text() for path in DOCS)
    undocumented = [n for n in suture.__all__ if not re.search(rf"\b{re.escape(n)}\b", text)]
    assert undocumented == []


def test_admission_words_are_one_object_everywhere() -> None:
    from suture import admission, limiter, pool

    assert pool.Priority is admission.Priority is suture.Priority
    assert pool.PressureLevel is admission.PressureLevel is suture.PressureLevel
    assert limiter.Priority is admission.Priority
