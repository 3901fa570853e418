"""The import graph of the package: no cycles, and nothing imports the package root.

The graph is read from the source (the AST), not from ``sys.modules``: a
module's edges are the imports that run when it is imported (its top level,
``if`` and ``try`` blocks and class bodies), without ``if TYPE_CHECKING:``
blocks and without imports inside functions (those run later, once
everything is loaded). ``from suture.x import y`` points at ``suture.x.y``
when that is a module, else at ``suture.x``. A contrib module (or the demo)
whose third-party imports are not installed is left out, as it cannot be
imported anyway.

The package root (``suture/__init__.py``) re-exports every room, so a module
that imports it (``import suture``, ``from suture import name``), even inside a
function, depends on everything: the rooms import each other directly.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import sys
from collections.abc import Iterator

ROOT = pathlib.Path(__file__).resolve().parent.parent / "src"
PACKAGE = ROOT / "suture"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, pathlib.Path] = {
    _module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))
}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_nodes(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_nodes(node.body)
            yield from _import_time_nodes(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _import_time_nodes(block)
            for handler in node.handlers:
                yield from _import_time_nodes(handler.body)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from _import_time_nodes(node.body)


def _all_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, wherever it is (functions and TYPE_CHECKING included)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The modules one import statement names: ``suture.x.y`` or a third-party root."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:  # relative: resolved against the importing module's package
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        yield candidate if candidate in MODULES else base


def _tree(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))


def _importable(module: str) -> bool:
    """False when the module needs a third-party package that is not installed."""
    for node in _import_time_nodes(_tree(module).body):
        for target in _targets(module, node):
            top = target.partition(".")[0]
            if top in {"suture", "__future__"} or top in sys.stdlib_module_names:
                continue
            if importlib.util.find_spec(top) is None:
                return False
    return True


def import_graph() -> dict[str, set[str]]:
    """Module -> the suture modules it imports when it is imported."""
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        if not _importable(module):
            continue
        edges = graph.setdefault(module, set())
        for node in _import_time_nodes(_tree(module).body):
            edges.update(t for t in _targets(module, node) if t in MODULES and t != module)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module, as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                group.append(item)
                if item == node:
                    break
            if len(group) > 1:
                groups.append(_closed_path(graph, sorted(group)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _closed_path(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """One cycle through the group's first module, for the message: a -> b -> a."""
    members = set(group)
    start = group[0]
    paths = [[start]]
    seen = {start}
    while paths:
        path = paths.pop(0)
        for nxt in sorted(graph[path[-1]] & members):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                paths.append([*path, nxt])
    return [*group, group[0]]  # unreachable for a strongly connected group


def test_the_graph_sees_the_rooms() -> None:
    graph = import_graph()
    assert "suture.retrying" in graph
    assert "suture.admission" in graph["suture.limiter"]
    assert "suture.pool" not in graph["suture.limiter"]
    assert "suture._retry_state" in graph["suture.retrying"]
    # A TYPE_CHECKING import is no edge: the decisions point back at the policy only for typing.
    assert "suture.retrying" not in graph["suture._retry_state"]


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_find_cycles_names_the_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_the_package_root() -> None:
    offenders = []
    for module, path in MODULES.items():
        if module == "suture":
            continue
        for node in _all_imports(_tree(module)):
            if "suture" in set(_targets(module, node)):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []


def test_the_core_imports_only_the_standard_library() -> None:
    """Every module outside contrib and the demo, in subpackages too (``suture.pool.*``):
    any import, even inside a function, is the standard library or suture."""
    offenders = []
    for module, path in MODULES.items():
        if module.startswith(("suture.contrib", "suture.demo")):
            continue
        for node in _all_imports(_tree(module)):
            for target in _targets(module, node):
                top = target.partition(".")[0]
                if top not in {"suture", "__future__"} and top not in sys.stdlib_module_names:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {target}")
    assert offenders == []
