"""The layer contract of ``kd_pyserini`` and its check (``python tools/layers.py``; tests/test_layers.py runs it).

An import may go down the table below, or sideways inside one room; never up. Lazy imports inside functions count,
and so do module names handed to ``importlib`` (``import_module("kd_pyserini.cli.search")``) and ``__import__``:

==========  ===========================================================================================================
layer       rooms (module prefixes under ``kd_pyserini``)
==========  ===========================================================================================================
cli         ``cli`` (click commands), ``demo`` (README's main job), every ``__main__`` module, ``toy`` (the demo's data)
apps        ``reproduce`` (the matrix, leaderboard, plot), ``serve`` (the REST layer over Pyserini's server)
pipelines   ``search``, ``teacher``, ``train`` -- ``teacher`` and ``train`` never import each other
stages      ``index``, ``fusion``/``fusion_files``, ``evaluation``/``eval_*``
adapters    ``jvm``, ``pyserini_compat``, ``encoders`` (Pyserini's encoder classes), ``pyserini`` (the wrapper)
models      ``cards``/``card_kinds``, ``encoding`` (one module per model kind, weights fingerprints, teacher scorers),
            ``index_meta`` (the read side of an index folder: its metadata, ids and the encoder check)
io          ``trec_io``, ``corpus``, ``candidates``, ``resources``, ``offsets`` (byte-offset readers)
base        ``errors``, ``progress``, ``atomic``, ``locks`` (the one file lock), ``lazy`` (lazy package exports)
==========  ===========================================================================================================

Only the cli layer imports ``click``. :data:`KNOWN_EXCEPTIONS` lists the upward imports that remain, each with its
reason; the check fails on any other, and on an exception that no longer occurs (so the list only shrinks).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LAYERS", "KNOWN_EXCEPTIONS", "Violation", "layer_of", "violations"]

ROOT = Path(__file__).resolve().parent.parent

#: top (index 0) to bottom; each room is a module name under kd_pyserini or a prefix of one.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("cli", ("cli", "demo", "toy")),
    ("apps", ("reproduce", "serve")),
    ("pipelines", ("search", "teacher", "train")),
    ("stages", ("index", "fusion", "fusion_files", "evaluation", "eval_measures", "eval_significance",
                "eval_report")),
    ("adapters", ("jvm", "pyserini_compat", "encoders", "pyserini")),
    ("models", ("cards", "card_kinds", "encoding", "index_meta")),
    ("io", ("trec_io", "corpus", "candidates", "resources", "offsets")),
    ("base", ("errors", "progress", "atomic", "locks", "lazy")),
]
#: rooms of one layer that must not import each other
APART = {frozenset({"teacher", "train"})}

#: (importer room, imported room) -> why the upward import is still there (remove an entry when it is fixed).
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("resources", "pyserini_compat"): "topics and qrels are looked up in Pyserini's cache, whose place depends on the "
                                      "Pyserini line; pyserini_compat.local_files is the one module that knows it "
                                      "(it imports nothing from Pyserini itself)",
}


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: imports {self.imported}: {self.why}"


def room_of(module: str) -> str | None:
    """``kd_pyserini.search.dense`` -> ``search``; ``kd_pyserini`` itself -> ``None`` (the package's lazy front)."""
    parts = module.split(".")
    if parts[0] != "kd_pyserini" or len(parts) == 1:
        return None
    return parts[1]


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of ``module``'s layer (``__main__`` modules are cli), ``None`` when unlisted."""
    if module.endswith(".__main__") or module == "kd_pyserini":  # the package's lazy public front counts as top
        return 0
    room = room_of(module)
    for i, (_, rooms) in enumerate(LAYERS):
        if room in rooms:
            return i
    return None


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(tree: ast.AST, module: str, is_pkg: bool) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of every import in ``tree``: statements (also inside functions), ``importlib.
    import_module("...")`` / ``__import__("...")`` calls with a constant name, and ``"kd_pyserini.x:attr"`` /
    ``"kd_pyserini.x.y"`` strings that name a module to load later (entry-point style)."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in ("import_module", "__import__"):
                out.append((node.lineno, node.args[0].value))
    return out


def violations(root: Path = ROOT) -> list[Violation]:
    """Every import in ``kd_pyserini`` that breaks the contract, plus known exceptions that no longer occur."""
    found: list[Violation] = []
    seen_exceptions: set[tuple[str, str]] = set()
    for path in sorted((root / "kd_pyserini").rglob("*.py")):
        module = _module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        mine, my_room = layer_of(module), room_of(module)
        reported: set[tuple[int, str | None]] = set()
        for line, name in _imports(tree, module, path.name == "__init__.py"):
            top = name.split(".")[0]
            if top == "click" and mine != 0:
                found.append(Violation(module, line, name, "only the cli layer imports click"))
                continue
            if top != "kd_pyserini" or name == "kd_pyserini":
                continue
            theirs, their_room = layer_of(name), room_of(name)
            name = ".".join(name.split(".")[:3])  # kd_pyserini.room.module is enough to find it
            if mine is None or theirs is None:
                found.append(Violation(module, line, name, "a room missing from tools/layers.py's LAYERS"))
                continue
            if my_room == their_room and not name.endswith(".__main__"):
                continue
            if theirs < mine or frozenset({my_room, their_room}) in APART:
                key = (my_room or "", their_room or "")
                if key in KNOWN_EXCEPTIONS:
                    seen_exceptions.add(key)
                    continue
                if (line, their_room) in reported:
                    continue
                reported.add((line, their_room))
                why = (f"{my_room} and {their_room} share through a lower layer, not through each other"
                       if theirs >= mine else f"{LAYERS[mine][0]} ({my_room}) may not import {LAYERS[theirs][0]} "
                                              f"({their_room})")
                found.append(Violation(module, line, name, why))
    for key in sorted(set(KNOWN_EXCEPTIONS) - seen_exceptions):
        found.append(Violation("tools/layers.py", 0, f"{key[0]} -> {key[1]}",
                               "listed in KNOWN_EXCEPTIONS but no longer imported: remove the entry"))
    return found


def main() -> int:
    bad = violations()
    for v in bad:
        print(v)
    print(f"{len(bad)} layer violation(s)" if bad else "layers hold")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
