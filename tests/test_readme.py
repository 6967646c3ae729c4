"""README.md's commands run as written (those that need no network): the first code block's main job is
tests/test_demo.py's; here the quick start (index SciFact, search it, evaluate) and the Python snippet."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import readme_block

PUBLISHED_MINILM_SCIFACT = 0.6451  # nDCG@10, Pyserini's BEIR 2CR (the encoder card records it too)


def _argv(line: str, data_dir: Path, index: Path, out: Path) -> list[str]:
    argv = [a.replace("$KD_PYSERINI_DATA", str(data_dir)) for a in shlex.split(line.split("  #")[0])]
    return [str(index) if a == "indexes/scifact-minilm" else str(out) if a == "run.scifact.txt" else a
            for a in argv]


@pytest.mark.slow
def test_readme_quick_start_reproduces_the_published_minilm_scifact(data_dir, scifact_minilm_index, tmp_path):
    from kd_pyserini.cli.eval import main as kd_eval
    from kd_pyserini.cli.search import main as kd_search

    lines = readme_block("Quick start")
    assert [ln.split()[0] for ln in lines] == ["kd-index", "kd-search", "kd-eval"]  # the index is the fixture's
    run = tmp_path / "run.scifact.txt"
    r = CliRunner().invoke(kd_search, [*_argv(lines[1], data_dir, scifact_minilm_index, run)[1:], "--no-progress"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(kd_eval, [*_argv(lines[2], data_dir, scifact_minilm_index, run)[1:], "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[str(run)]["nDCG@10"] == pytest.approx(PUBLISHED_MINILM_SCIFACT, abs=5e-5)
    assert "0.6451" in lines[2]  # what the README says it prints


@pytest.mark.slow
def test_readme_python_snippet_runs(data_dir, scifact_minilm_index, monkeypatch):
    code = "\n".join(readme_block("Quick start", "python")).replace("indexes/scifact-minilm", str(scifact_minilm_index))
    monkeypatch.setenv("KD_PYSERINI_DATA", str(data_dir))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    printed = out.getvalue().splitlines()
    values = eval(printed[0], {"np": __import__("numpy")})  # {'nDCG@10': ..., 'R@100': ...}
    assert values["nDCG@10"] == pytest.approx(PUBLISHED_MINILM_SCIFACT, abs=5e-5)
    assert printed[1] == "(384,)"


def test_the_family_table_and_figure_are_those_of_the_stored_results():
    """README's model-family table is tools/experiments/results/family.json (the figures are not typed by hand), and
    the figure beside it exists (drawn from the same file by family_distill.py --from-json)."""
    import re

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    result = json.loads((root / "tools" / "experiments" / "results" / "family.json").read_text(encoding="utf-8"))
    names = {"bert-dot": "BERT_Dot", "colbert": "ColBERT", "prettr": "PreTTR", "bert-cat": "BERT_CAT"}
    for arch, r in result["architectures"].items():
        before, after = (f"{r[k]['nDCG@10']:.4f}"[1:] for k in ("before", "after"))
        assert re.search(rf"\| {names[arch]} \| {re.escape(before)} → {re.escape(after)} \|", readme), arch
    bm25 = f"{result['bm25']['nDCG@10']:.4f}"[1:]  # ".5058"
    assert f"BM25's own order ({bm25})" in readme
    assert (root / "docs" / "figures" / "model-family.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](docs/figures/model-family.png)" in readme
