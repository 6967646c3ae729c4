"""The README's main-job command: the offline demo on the bundled toy corpus."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from kd_pyserini import toy
from kd_pyserini.cli.demo import main
from kd_pyserini.demo import MEASURES, run_demo
from kd_pyserini.trec_io import read_run


def test_toy_corpus_is_consistent():
    from kd_pyserini.corpus import read_corpus
    from kd_pyserini.resources import get_qrels, get_topics

    ids = {p.id for p in read_corpus(toy.CORPUS)}
    qrels = get_qrels(toy.QRELS)
    assert len(ids) == 40 and set(get_topics(toy.TOPICS)) == set(qrels)
    assert all(d in ids for docs in qrels.values() for d in docs)


def test_demo_end_to_end(tmp_path):
    results = run_demo(workdir=tmp_path)
    assert set(results) == {"bm25", "dense", "rerank", "hybrid-rrf", "hybrid-interp"}
    # MiniLM (real weights) understands paraphrased queries that BM25 misses on this corpus.
    assert results["dense"]["nDCG@10"] > results["bm25"]["nDCG@10"]
    assert results["hybrid-interp"]["nDCG@10"] > results["bm25"]["nDCG@10"]
    assert min(r["nDCG@10"] for r in results.values()) > 0.8
    run = read_run(tmp_path / "run.dense.txt")
    assert len(run) == 12 and all(len(docs) == 40 for docs in run.values())
    # existing indexes are reused: the CLI on the same workdir prints the same table
    out = CliRunner().invoke(main, ["--workdir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "hybrid-interp" in out.output and f"{results['dense']['nDCG@10']:.4f}" in out.output


def test_python_m_demo_stdout_is_only_the_table(tmp_path):
    """``python -m kd_pyserini.demo`` prints the table on stdout and nothing else: Anserini's log (indexing and
    search) goes to stderr."""
    r = subprocess.run([sys.executable, "-m", "kd_pyserini.demo", "--workdir", str(tmp_path / "w"), "--no-progress"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["mode", *MEASURES, "ms/query"]
    assert [line.split()[0] for line in lines[1:]] == ["bm25", "dense", "rerank", "hybrid-rrf", "hybrid-interp"]
    assert not any(" INFO " in line or " WARN " in line for line in lines), r.stdout
