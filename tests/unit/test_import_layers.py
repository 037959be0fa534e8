"""The package's import graph: no cycle (imports inside functions and for type hints count too), and the
layers import in one direction only: models never import geoseg.data, inference never geoseg.engine.log."""

from __future__ import annotations

import ast
from pathlib import Path

import geoseg

PACKAGE = Path(geoseg.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """The geoseg modules ``name`` imports anywhere in its source (``from geoseg.x import y`` is
    ``geoseg.x.y`` when that is a module, else ``geoseg.x``)."""
    found: set[str] = set()
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "geoseg"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .y import z
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                ).strip(".")
            if base.split(".")[0] != "geoseg":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a cycle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_the_package_and_its_imports():
    assert {"geoseg.engine.fit", "geoseg.data.build", "geoseg.commands"} <= set(GRAPH)
    assert "geoseg.engine.state" in GRAPH["geoseg.engine.fit"] and "geoseg.io" in GRAPH["geoseg.engine.log"]


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_geoseg_takes_part_in_an_import_cycle():
    assert cycles(GRAPH) == []


def test_models_never_import_the_data_layer_and_inference_never_the_training_log():
    models = {
        m: sorted(i for i in GRAPH[m] if i.startswith("geoseg.data"))
        for m in GRAPH
        if m.startswith("geoseg.models")
    }
    assert not any(models.values()), models
    inference = {m for m in GRAPH if m.startswith("geoseg.inference") and "geoseg.engine.log" in GRAPH[m]}
    assert not inference


def test_engine_state_imports_nothing_else_from_the_engine():
    assert not {m for m in GRAPH["geoseg.engine.state"] if m.startswith("geoseg.engine")}
