"""The package's import graph has no circle: every import counts, function-local ones too
(a local import only hides a circle from the interpreter, not from the reader)."""

from __future__ import annotations

import ast
from pathlib import Path

import mnistlab

PACKAGE = Path(mnistlab.__file__).parent


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("mnistlab", *path.relative_to(PACKAGE).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _resolve(target: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is one of our modules."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def import_graph() -> dict[str, set[str]]:
    modules = _module_names()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                mod = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
                targets = [mod, *(f"{mod}.{alias.name}" for alias in node.names)]
            else:
                continue
            for t in targets:
                hit = _resolve(t, modules)
                # a package's own __init__ and a module's parent package are not edges of a circle
                if hit and hit != name and hit != "mnistlab" and not name.startswith(hit + "."):
                    graph[name].add(hit)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_mnistlab():
    graph = import_graph()
    assert "mnistlab.models" in graph["mnistlab.config"]  # the graph is really read
    assert cycles(graph) == []


def test_the_registry_is_a_leaf():
    graph = import_graph()
    assert graph["mnistlab.models._registry"] <= {"mnistlab.checks", "mnistlab.errors"}
    assert graph["mnistlab.checks"] <= {"mnistlab.errors"}
    assert "mnistlab.train.run" not in graph["mnistlab.viz"]
