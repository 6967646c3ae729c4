"""The layer contract holds (tools/layers.py): imports only go down the layers, teacher/ and train/ never import each
other, only the cli layer imports click, and no module of the package names a cli module to importlib."""

from __future__ import annotations

import ast
import importlib.util
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _layers():
    spec = importlib.util.spec_from_file_location("kd_layers", ROOT / "tools" / "layers.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["kd_layers"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_the_layer_contract_holds():
    bad = _layers().violations()
    assert not bad, "\n".join(map(str, bad))


def test_every_room_of_the_package_has_a_layer():
    layers = _layers()
    rooms = {p.stem if p.is_file() else p.name for p in (ROOT / "kd_pyserini").iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").is_file())}
    missing = sorted(r for r in rooms if layers.layer_of(f"kd_pyserini.{r}") is None)
    assert not missing, f"rooms without a layer in tools/layers.py: {missing}"


def test_the_checker_sees_lazy_and_importlib_imports(tmp_path):
    """The contract is not just read from top-level statements: a lazy import inside a function and a module name
    handed to importlib are both caught (a fake tree with one of each)."""
    layers = _layers()
    pkg = tmp_path / "kd_pyserini"
    (pkg / "trec_io").mkdir(parents=True)
    (pkg / "cli").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "cli" / "__init__.py").write_text("")
    (pkg / "trec_io" / "__init__.py").write_text(textwrap.dedent("""
        import importlib
        def later():
            from kd_pyserini.cli import x
            import click
            return importlib.import_module("kd_pyserini.cli.search")
    """))
    found = layers.violations(tmp_path)
    lines = sorted(v.line for v in found if v.module == "kd_pyserini.trec_io")
    assert lines == [4, 5, 6], [str(v) for v in found]
    assert any("click" in v.why for v in found)
    assert ast.parse((ROOT / "tools" / "layers.py").read_text())  # the tool itself parses


def test_experiment_scripts_import_the_package_not_each_other():
    """tools/experiments/ holds scripts: what one script needs from another lives in the package (e.g. the pair
    chooser in kd_pyserini.teacher.pairs, the query groups in kd_pyserini.teacher.groups), so no script imports a
    sibling script or puts its folder on sys.path."""
    import ast

    folder = Path(__file__).resolve().parent.parent / "tools" / "experiments"
    scripts = {p.stem: p for p in folder.glob("*.py")}
    assert {"distill_demo", "family_distill", "tas_distill"} <= set(scripts)
    for name, path in scripts.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & (set(scripts) - {name}), f"{path.name} imports a sibling script"
        assert "sys.path.insert" not in path.read_text(encoding="utf-8"), f"{path.name} edits sys.path"
