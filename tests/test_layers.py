"""The layers of ``src/lmforge`` (ARCHITECTURE.md): imports point down only, no circles, no
module much over 500 lines. Imports are read from the source (every ``import``, also inside
functions and ``TYPE_CHECKING`` blocks), so a lazy import cannot hide a dependency."""

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


NEVER = {  # layer -> what it must not import (ARCHITECTURE.md, "Never")
    "data": ("lmforge.tasks", "lmforge.evaluation", "lmforge.start", "lmforge.objectives", "lmforge.cli"),
    "objectives": ("lmforge.data", "lmforge.models", "lmforge.tasks"),
    "models": ("lightning", "tokenizers", "lmforge.data", "lmforge.tasks", "lmforge.tokenizer", "lmforge.objectives"),
    "tasks": ("lmforge.evaluation", "lmforge.cli"),
    "evaluation": ("lmforge.cli",),
    "start": ("lmforge.tasks", "lmforge.evaluation", "lmforge.cli"),
}


@pytest.mark.parametrize("layer", list(NEVER))
def test_imports_point_down(layer: str) -> None:
    wrong = sorted(
        f"{module} imports {dep}"
        for module, deps in GRAPH.items() if unit(module) == layer
        for dep in deps if dep.startswith(NEVER[layer])
    )
    assert wrong == []


MAX_LINES = 520  # "about 500": one job per file; T5's network file (518) is the largest


def test_no_module_much_over_500_lines() -> None:
    sizes = {module_name(p): len(p.read_text(encoding="utf-8").splitlines()) for p in MODULES}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}
