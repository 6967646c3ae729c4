"""The static import graph of the tree, and its cycles (``python tools/import_graph.py``).

Every ``import`` statement counts, also those inside functions: a lazy import still ties two modules together, and a
cycle through one is a sign that a job sits in the wrong room. Modules are the ``.py`` files under the given roots
(``kd_pyserini`` and ``tools``); ``tools/benchmarks/x.py`` is module ``benchmarks.x`` (it is run with ``tools`` on the path).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

__all__ = ["module_names", "import_graph", "find_cycles"]


def module_names(root: Path, tops: list[str]) -> dict[str, Path]:
    """``{dotted module name: file}`` for the packages/folders ``tops`` under ``root``."""
    out: dict[str, Path] = {}
    for top in tops:
        base = root / top
        strip = root if top == "kd_pyserini" else base  # tools/... are imported relative to tools/
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(strip).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts:
                out[".".join(parts)] = path
    return out


def _targets(node: ast.AST, module: str, is_pkg: bool, known: dict[str, Path]) -> set[str]:
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            pkg = module.split(".") if is_pkg else module.split(".")[:-1]
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join([*pkg, base] if base else pkg)
        names = [base, *(f"{base}.{a.name}" for a in node.names)]
    found = set()
    for name in names:
        while name and name not in known:  # 'a.b.c' -> the deepest known module
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def import_graph(root: Path, tops: list[str]) -> dict[str, set[str]]:
    """``{module: modules it imports}`` within the tree (third-party imports are left out)."""
    known = module_names(root, tops)
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_pkg = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _targets(node, module, is_pkg, known)
        # importing a.b also runs a/__init__: that edge is implied, not a cycle of its own
        graph[module] = {e for e in edges if e != module and not module.startswith(e + ".")}
    return graph


def find_cycles(root: Path, tops: list[str]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each sorted; empty when acyclic."""
    graph = import_graph(root, tops)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


if __name__ == "__main__":
    here = Path(__file__).resolve().parent.parent
    cycles = find_cycles(here, ["kd_pyserini", "tools"])
    for c in cycles:
        print(" <-> ".join(c))
    print(f"{len(cycles)} import cycle(s)")
    sys.exit(1 if cycles else 0)
