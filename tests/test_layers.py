"""The layers of ``src/lmforge`` (ARCHITECTURE.md): imports point down only, no circles, no
module over 450 lines (a network file under models/ 550), no function over 60 lines. Imports are
read from the source (every ``import``, also inside functions and ``TYPE_CHECKING`` blocks), so a
lazy import cannot hide a dependency."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import ROOT

SRC = ROOT / "src"
PACKAGE = SRC / "lmforge"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "template" not in p.parts)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The modules ``path`` imports (absolute names; ``from x import y`` counts ``x`` and ``x.y``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


GRAPH = {module_name(p): imports(p) for p in MODULES}
NAMES = set(GRAPH)


def internal(graph_of: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: {i for i in deps if i in NAMES and i != m} for m, deps in graph_of.items()}


def unit(module: str) -> str:
    """The layer a module belongs to: its subpackage (``data``, ``tasks`` ...) or top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "lmforge"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_the_imports_it_must() -> None:
    graph = internal(GRAPH)
    assert "lmforge.start" in graph["lmforge.tasks.base"] and "lmforge.start.hf" in graph["lmforge.start.starting_point"]
    assert "lmforge.tokenizer" in graph["lmforge.data.tokenizer"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_between_modules_or_layers() -> None:
    graph = internal(GRAPH)
    assert cycles(graph) == []
    layers: dict[str, set[str]] = defaultdict(set)
    for module, deps in graph.items():
        layers[unit(module)].update(unit(d) for d in deps if unit(d) != unit(module))
    assert cycles(dict(layers)) == []


# layer -> what it must not import (ARCHITECTURE.md, "Never"); commands import everything, nothing imports them
NEVER = {
    "data": ("lmforge.tasks", "lmforge.evaluation", "lmforge.start", "lmforge.objectives", "lmforge.cli",
             "lmforge.commands"),
    "objectives": ("lmforge.data", "lmforge.models", "lmforge.tasks"),
    "models": ("lightning", "tokenizers", "lmforge.data", "lmforge.tasks", "lmforge.tokenizer", "lmforge.objectives"),
    "tasks": ("lmforge.evaluation", "lmforge.cli", "lmforge.commands"),
    "evaluation": ("lmforge.cli", "lmforge.commands"),
    "start": ("lmforge.tasks", "lmforge.evaluation", "lmforge.cli", "lmforge.commands"),
}


@pytest.mark.parametrize("layer", list(NEVER))
def test_imports_point_down(layer: str) -> None:
    wrong = sorted(
        f"{module} imports {dep}"
        for module, deps in GRAPH.items() if unit(module) == layer
        for dep in deps if dep.startswith(NEVER[layer])
    )
    assert wrong == []


def test_nothing_but_the_cli_imports_commands() -> None:
    wrong = sorted(
        f"{module} imports {dep}"
        for module, deps in GRAPH.items() if unit(module) not in ("commands", "cli", "__main__")
        for dep in deps if dep == "lmforge.commands" or dep.startswith("lmforge.commands.")
    )
    assert wrong == []


MAX_LINES = 450  # one job per file
MAX_NETWORK_LINES = 550  # a network file under models/ (one family's config and modules) may be longer
MAX_FUNCTION_LINES = 60


def is_network_file(module: str) -> bool:
    """A family's network file: a module of ``lmforge.models`` other than the package and its shared blocks."""
    return unit(module) == "models" and module not in ("lmforge.models", "lmforge.models.layers")


def test_no_module_over_450_lines() -> None:
    sizes = {module_name(p): len(p.read_text(encoding="utf-8").splitlines()) for p in MODULES}
    too_long = {m: n for m, n in sizes.items() if n > (MAX_NETWORK_LINES if is_network_file(m) else MAX_LINES)}
    assert too_long == {}


def function_lengths(source: str) -> dict[str, int]:
    """``{qualified name: lines}`` of every function and method in ``source``, from its ``def``
    line to its last line (docstring included, decorators not)."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths[prefix + child.name] = child.end_lineno - child.lineno + 1
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return lengths


def test_the_function_walk_measures_methods_and_nested_functions() -> None:
    source = "class A:\n    @property\n    def f(self):\n        def g():\n            pass\n        return g\n\n\n" \
             "if True:\n    async def h():\n        pass\n"
    assert function_lengths(source) == {"A.f": 4, "A.f.g": 2, "h": 2}


def test_no_function_over_60_lines() -> None:
    too_long = {f"{module_name(p)}.{name}": n for p in MODULES
                for name, n in function_lengths(p.read_text(encoding="utf-8")).items() if n > MAX_FUNCTION_LINES}
    assert too_long == {}
