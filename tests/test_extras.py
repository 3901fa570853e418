"""Every extra installs and imports alone, in a fresh virtual environment.

The dev extra pulls in every other one, so the rest of the suite cannot see an
extra that forgot a dependency (``sql`` once lacked greenlet, which SQLAlchemy
2.1's asyncio module needs). Here the package is built once as a wheel and
installed with one extra at a time into its own new virtual environment, which
then imports that extra's contrib modules; the bare package (no extra) must
refuse each contrib module with an ImportError that names the extra.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

EXTRAS: dict[str, tuple[str, ...]] = {
    "http": ("suture.contrib.httpx",),
    "sql": ("suture.contrib.sqlalchemy", "suture.contrib.sqlalchemy_pool"),
    "redis": ("suture.contrib.redis",),
    "web": ("suture.contrib.starlette",),
    "metrics": ("suture.contrib.prometheus",),
    "otel": ("suture.contrib.otel",),
}

pytestmark = pytest.mark.slow


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, ROOT)
    assert built.returncode == 0, built.stderr[-2000:]
    (found,) = out.glob("suture-*.whl")
    return found


def _fresh_venv(where: Path, wheel: Path, extra: str | None) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(where)
    python = where / "bin" / "python"
    spec = f"suture[{extra}] @ {wheel.as_uri()}" if extra else f"suture @ {wheel.as_uri()}"
    installed = _run(python, "-m", "pip", "install", "-q", spec)
    assert installed.returncode == 0, installed.stderr[-2000:]
    return python


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_each_extra_installs_and_imports_alone(extra: str, wheel: Path, tmp_path: Path) -> None:
    python = _fresh_venv(tmp_path / "venv", wheel, extra)
    modules = EXTRAS[extra]
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\n"
    imported = _run(python, "-c", code, *modules, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr[-3000:]


def test_the_bare_package_names_the_extra_each_contrib_module_needs(
    wheel: Path, tmp_path: Path
) -> None:
    python = _fresh_venv(tmp_path / "venv", wheel, None)
    code = (
        "import importlib, sys\n"
        "module, extra = sys.argv[1:]\n"
        "try:\n"
        "    importlib.import_module(module)\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit(module + ' imported without its extra')\n"
    )
    core = _run(python, "-c", "import suture; suture.retry; print('ok')", cwd=tmp_path)
    assert core.stdout.strip() == "ok", core.stderr[-2000:]
    for extra, modules in EXTRAS.items():
        for module in modules:
            refused = _run(python, "-c", code, module, extra, cwd=tmp_path)
            assert refused.returncode == 0, refused.stdout + refused.stderr[-2000:]
            message = refused.stdout.strip()
            assert f"needs the {extra!r} extra" in message, message
            assert f"pip install 'suture[{extra}]'" in message, message
