"""The data-flow modules import each other at module level only, and without circles.

Function-local ``from atlas_kit ...`` imports are how import circles used to be worked around; in
passages, index, rerank, provenance and metrics there are none left (optional third-party
dependencies such as elasticsearch may still be imported lazily).
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "atlas_kit"
AREA = ("atlas_kit.passages", "atlas_kit.index", "atlas_kit.rerank", "atlas_kit.provenance", "atlas_kit.metrics",
        "atlas_kit.normalize", "atlas_kit.kilt_submission")


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(tree: ast.AST, top: bool = True):
    """(imported module, is module-level, line) for every atlas_kit import; TYPE_CHECKING blocks skipped."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            yield from ((a.name, top, node.lineno) for a in node.names if a.name.startswith("atlas_kit"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("atlas_kit"):
            for a in node.names:
                yield f"{node.module}.{a.name}", top, node.lineno
        else:
            yield from _imports(node, top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))


@functools.lru_cache(maxsize=1)
def _graph() -> tuple[nx.DiGraph, list[tuple[str, str, int]]]:
    mods = _modules()
    graph, local = nx.DiGraph(), []
    for name, path in mods.items():
        graph.add_node(name)
        for target, top, line in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if not top:
                local.append((name, target, line))
            elif target and target != name:
                graph.add_edge(name, target)
    return graph, local


def _in_area(name: str) -> bool:
    return any(name == a or name.startswith(a + ".") for a in AREA)


def test_no_function_local_atlas_kit_imports_in_the_data_flow_modules():
    _, local = _graph()
    assert [x for x in local if _in_area(x[0])] == []


@pytest.mark.parametrize("area", AREA)
def test_no_import_circles_through_the_data_flow_modules(area):
    graph, _ = _graph()
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1 and any(map(_in_area, c))]
    assert not [c for c in cycles if any(n == area or n.startswith(area + ".") for n in c)]
