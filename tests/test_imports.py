"""mridip's modules import each other without a circle (DESIGN §2: imports run down the layers).

Every ``import``/``from`` statement counts, those inside functions too: a function-level import
that hides a circle from Python's import machinery is still a circle in the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mridip"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The mridip module that ``name`` refers to (a module, or the package holding a name)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    """Edges ``module → imported mridip module``; importing ``a.b.c`` counts as an edge to
    ``a.b.c`` only (a parent package's ``__init__`` is not an edge of its own)."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".")
                    base = base if is_pkg else base[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one
                names = [
                    f"{src}.{a.name}" if f"{src}.{a.name}" in modules else src for a in node.names
                ]
            for name in names:
                target = _target(name, modules) if name.split(".")[0] == "mridip" else None
                if target is not None and target != mod:
                    graph[mod].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_walker_sees_function_level_imports_and_finds_a_cycle():
    graph = import_graph()
    # mridip.cli imports its commands' modules inside the functions that run them
    assert "mridip.io.results" in graph["mridip.cli"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_mridip_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_bench_only_code_stays_out_of_the_library():
    """GIP's reference re-creation is for ``mridip bench`` alone (issue 17)."""
    graph = import_graph()
    users = {m for m, deps in graph.items() if "mridip.bench_generators" in deps}
    assert users == {"mridip.bench"}
    assert "mridip.models.benchmark" not in graph
