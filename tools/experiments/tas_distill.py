#!/usr/bin/env python
"""TAS-balanced + in-batch-teacher distillation vs plain Margin-MSE on real weights, measured on a CPU (issue 12).

Every number this script reports is measured by it; every step is cached in ``--work`` and resumed on a rerun.

1. **Training data**, no relevance labels: the 6,980 MS MARCO dev-small queries' BM25 top-K (30; k1 0.9, b 0.4)
   from the 28,606 pool passages (``kd-index bm25`` + :class:`~kd_pyserini.search.bm25.Bm25Searcher`);
   ``--with-dl20`` adds DL20's BM25 top-100 (by default DL20 stays out of training and picks the learning rate).
2. **Teacher** all-MiniLM-L6-v2 (real weights; mean, cosine, max length 256) encodes each unique passage and query
   once (:class:`~kd_pyserini.encoding.TextEncoder`, cached in chunks); score = 10 x cosine. Pairs per query as in
   ``tools/experiments/distill_demo.py`` (teacher top-10 vs any, and uniform pairs). Written as ``teacher.ids.tsv`` (Hofstätter's
   ``pos<TAB>neg<TAB>qid<TAB>pid<TAB>pid`` + ``collection.tsv`` + ``queries.tsv``, what kd-train reads: queries keyed
   by qid for the TAS clusters) and, same rows, ``teacher.text.tsv`` (``pos<TAB>neg<TAB>query<TAB>pos<TAB>neg``).
3. **Student**: all-MiniLM-L6-v2 cut to its 2nd/4th/6th layers, CLS, dot, 30/200 (``--student-layers 3``).
4. **Rows at equal steps, batch and learning rate**: untrained; plain Margin-MSE (random sampling); TAS-balanced +
   in-batch teacher (``--sampling tas-balanced --clusters K --cluster-encoder all-minilm-l6-v2 --in-batch-teacher
   all-minilm-l6-v2 --in-batch-teacher-scale 10 --in-batch-weight 0.75``). The learning rate is the ``--lr-probe``
   value with the best plain DL20 nDCG@10 (never DL19). Test: re-rank the held-out DL19 BM25 top-100 (43 queries),
   nDCG@10 and RR(rel=2)@10, beside BM25 and the teacher; paired tests; student vs teacher query latency.

Usage::

    KD_PYSERINI_DATA=/work/shared/data python tools/experiments/tas_distill.py --work /work/tas-exp
    python tools/experiments/tas_distill.py --work /tmp/tas-quick --quick     # 200 queries, 50 steps of 8 (a slow test)

Writes ``WORK/summary.json`` and ``WORK/table.md`` (``WORK/quick/`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import copy
import csv
import gzip
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import kd_pyserini  # noqa: F401  (installs the JVM hook before pyserini is imported)
from kd_pyserini.atomic import atomic_write
from kd_pyserini.candidates import read_top1000
from kd_pyserini.cards import EncoderCard, get_card, write_card
from kd_pyserini.evaluation import evaluate, evaluate_per_query
from kd_pyserini.teacher.pairs import choose_pairs
from kd_pyserini.trec_io import read_qrels, read_run, read_topics, write_run

MEASURES = ["nDCG@10", "RR(rel=2)@10"]
TEACHER_CARD = "all-minilm-l6-v2"
KEEP_EXPECTED = [1, 3, 5]  # 6 -> 3 layers: the 2nd, 4th and 6th (the cut)


def _log(msg: str) -> None:
    print(f"[tas-distill {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _key_ok(path: Path, key) -> bool:
    k = path.with_name(path.name + ".key.json")
    return path.exists() and k.is_file() and json.loads(k.read_text()) == json.loads(json.dumps(key))


def _mark(path: Path, key) -> None:
    with atomic_write(path.with_name(path.name + ".key.json")) as f:
        json.dump(key, f)


def _write_json(path: Path, obj) -> None:
    with atomic_write(path) as f:
        f.write(json.dumps(obj, indent=2) + "\n")


def _sh(cmd: list[str], log_file: Path) -> float:
    """Run a command, its output appended to ``log_file``; its wall time in seconds."""
    t0 = time.time()
    with open(log_file, "a", encoding="utf-8") as lf:
        lf.write(f"\n$ {shlex.join(cmd)}\n")
        lf.flush()
        p = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT)
    if p.returncode:
        tail = log_file.read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"command failed (exit {p.returncode}), see {log_file}:\n" + "\n".join(tail))
    return time.time() - t0


def _shown(cmd: list[str]) -> str:
    """``python -m kd_pyserini.train margin-mse ...`` shown as ``kd-train margin-mse ...``."""
    names = {"kd_pyserini.train": "kd-train", "kd_pyserini.index": "kd-index", "kd_pyserini.cli.eval": "kd-eval"}
    if len(cmd) > 2 and cmd[1] == "-m" and cmd[2] in names:
        return names[cmd[2]] + " " + shlex.join(cmd[3:])
    return shlex.join(cmd)


def _tsv(text: str) -> str:
    return " ".join(text.replace("\t", " ").split("\n"))


def _read_candidates(path: Path) -> dict[str, tuple[str, list[str]]]:
    """``{qid: (query, [pid...])}`` in BM25 rank order (the package's top1000 reader)."""
    top = read_top1000(path)
    return {q: (top.queries[q], list(pids)) for q, pids in top.lists.items()}


# ------------------------------------------------------------------------------------------------------ data ----

def prepare_training_data(cfg: dict, data: Path, work: Path, base: Path, threads: int) -> dict:
    """Collection, BM25 index + run, training groups, queries file. Returns the groups and their provenance."""
    pool = data / "msmarco-dl" / "passages.dl19-dl20-pool.tsv.gz"
    collection = base / "collection.tsv"  # the pool, uncompressed: kd-train reads an id teacher file through it
    if not collection.is_file():
        with gzip.open(pool, "rt", encoding="utf-8") as src, atomic_write(collection) as dst:
            for line in src:
                dst.write(line)
    passages = {}
    with open(collection, encoding="utf-8") as f:
        for line in f:
            pid, text = line.rstrip("\n").split("\t", 1)
            passages[pid] = text
    index = base / "bm25-pool"
    index_cmd = [sys.executable, "-m", "kd_pyserini.index", "bm25", "--corpus", str(pool), "--output", str(index),
                 "--threads", "1", "--no-progress"]
    if not any(index.glob("segments_*")):
        _log("BM25 index: " + _shown(index_cmd))
        _sh(index_cmd, base / "kd-index.log")
    dev = read_topics(data / "topics-and-qrels" / "topics.msmarco-passage.dev-subset.txt")
    dev_qids = list(dev)[:cfg["dev_queries"]]
    run_path = work / f"bm25.dev-small.top{cfg['bm25_k']}.trec"
    run_key = {"qids": len(dev_qids), "k": cfg["bm25_k"], "k1": 0.9, "b": 0.4}
    t0 = time.time()
    if _key_ok(run_path, run_key):
        run = read_run(run_path)
    else:
        from kd_pyserini.search.bm25 import Bm25Searcher

        searcher = Bm25Searcher(index, k1=0.9, b=0.4, threads=threads)
        run = searcher.search_batch({q: dev[q] for q in dev_qids}, cfg["bm25_k"], progress=False)
        write_run(run, run_path, tag="bm25-pool")
        _mark(run_path, run_key)
    _log(f"BM25 top-{cfg['bm25_k']} of {len(dev_qids)} dev-small queries over the pool ({time.time() - t0:.0f}s)")
    groups: list[tuple[str, str, list[str]]] = []
    short = 0
    for q in dev_qids:
        pids = [p for p, _ in sorted(run.get(q, {}).items(), key=lambda kv: (-kv[1], kv[0]))][:cfg["bm25_k"]]
        if len(pids) < 2:
            short += 1
            continue
        groups.append((q, dev[q], pids))
    if cfg["with_dl20"]:
        dl20 = _read_candidates(data / "msmarco-dl" / "candidates.dl20.bm25-top100.tsv.gz")
        clash = set(dl20) & {g[0] for g in groups}
        if clash:
            raise SystemExit(f"DL20 and dev-small share qids {sorted(clash)[:3]}: cannot key queries by qid")
        groups += [(q, t, pids) for q, (t, pids) in sorted(dl20.items(), key=lambda kv: int(kv[0]))]
    missing = {p for _, _, ps in groups for p in ps} - passages.keys()
    if missing:
        raise SystemExit(f"{len(missing)} candidate passages are not in {pool.name} (e.g. {sorted(missing)[:3]})")
    queries = work / "queries.tsv"

    with atomic_write(queries) as f:
        for q, t, _ in groups:
            f.write(f"{q}\t{_tsv(t)}\n")
    return {"groups": groups, "passages": passages, "collection": collection, "queries": queries,
            "bm25_index_command": _shown(index_cmd), "dev_queries_searched": len(dev_qids),
            "dev_queries_under_2_hits": short}


def teacher_vectors(texts: list[str], max_length: int, out_dir: Path, tag: str, threads: int,
                    chunk: int = 2048) -> np.ndarray:
    """Teacher vectors of ``texts``, encoded in cached chunks (a rerun after an interruption resumes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1("\n".join(texts).encode("utf-8") + str(max_length).encode()).hexdigest()[:12]
    parts = []
    enc = None
    t0 = time.time()
    for i, s in enumerate(range(0, len(texts), chunk)):
        path = out_dir / f"{tag}-{digest}-{i:04d}.npy"
        if path.is_file():
            parts.append(np.load(path))
            continue
        if enc is None:
            from kd_pyserini.encoding import TextEncoder

            enc = TextEncoder(TEACHER_CARD, device="cpu", batch_size=32, threads=threads)
        vec = enc.embed(texts[s:s + chunk], max_length)
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, vec)
        os.replace(tmp, path)
        parts.append(vec)
        _log(f"teacher {tag}: {min(s + chunk, len(texts))}/{len(texts)} encoded ({time.time() - t0:.0f}s)")
    return np.concatenate(parts) if parts else np.zeros((0, 384), np.float32)


def write_teacher_files(prep: dict, cfg: dict, work: Path, threads: int, seed: int) -> dict:
    groups, passages = prep["groups"], prep["passages"]
    card = get_card(TEACHER_CARD)
    ids_file, text_file = work / "teacher.ids.tsv", work / "teacher.text.tsv"
    key = {"groups": len(groups), "cands": sum(len(g[2]) for g in groups), "pairs": cfg["pairs_per_query"],
           "scale": cfg["scale"], "seed": seed, "qml": card.query_max_length, "pml": card.passage_max_length,
           "queries_sha1": hashlib.sha1(prep["queries"].read_bytes()).hexdigest()}
    info_path = work / "teacher.info.json"
    if _key_ok(ids_file, key) and text_file.is_file() and info_path.is_file():
        _log(f"teacher files cached: {ids_file}")
        return json.loads(info_path.read_text())
    pids = sorted({p for _, _, ps in groups for p in ps})
    t0 = time.time()
    pvec = teacher_vectors([passages[p] for p in pids], card.passage_max_length, work / "teacher-vectors", "p",
                           threads)
    qvec = teacher_vectors([t for _, t, _ in groups], card.query_max_length, work / "teacher-vectors", "q", threads)
    enc_s = time.time() - t0
    row = {p: i for i, p in enumerate(pids)}
    rng = np.random.default_rng(seed)
    n = 0
    used: set[str] = set()
    margins = []
    with atomic_write(ids_file) as fi, atomic_write(text_file) as ft:
        for gi, (qid, query, ps) in enumerate(groups):
            s = pvec[[row[p] for p in ps]] @ qvec[gi]
            for a, b in choose_pairs(s, cfg["pairs_per_query"], rng):
                sa, sb = cfg["scale"] * float(s[a]), cfg["scale"] * float(s[b])
                fi.write(f"{sa:.5f}\t{sb:.5f}\t{qid}\t{ps[a]}\t{ps[b]}\n")
                ft.write(f"{sa:.5f}\t{sb:.5f}\t{_tsv(query)}\t{passages[ps[a]]}\t{passages[ps[b]]}\n")
                used.update((ps[a], ps[b]))
                margins.append(sa - sb)
                n += 1
    info = {"triples": n, "queries": len(groups), "unique_passages_encoded": len(pids),
            "unique_passages_in_triples": len(used), "teacher_encode_seconds": round(enc_s, 1),
            "teacher_max_length": [card.query_max_length, card.passage_max_length], "scale": cfg["scale"],
            "margin_mean": float(np.mean(margins)), "margin_p50": float(np.median(margins)),
            "pids_in_triples_sha1": hashlib.sha1("\n".join(sorted(used)).encode()).hexdigest()}
    with atomic_write(work / "pids-in-triples.txt") as f:
        f.write("\n".join(sorted(used)) + "\n")
    _write_json(info_path, info)
    _mark(ids_file, key)
    _log(f"teacher files: {n} triples from {len(groups)} queries ({len(used)} passages)")
    return info


def overlap_with_eval(work: Path, data: Path, prep: dict) -> dict:
    """What the training data shares with DL19 (the held-out test) and DL20 (the learning-rate selection set)."""
    used = set((work / "pids-in-triples.txt").read_text().split())
    train_q = {q for q, _, _ in prep["groups"]}
    train_text = {" ".join(t.lower().split()) for _, t, _ in prep["groups"]}
    out = {}
    for name, qrels in (("dl19", "qrels.dl19-passage.txt"), ("dl20", "qrels.dl20-passage.txt")):
        cands = _read_candidates(data / "msmarco-dl" / f"candidates.{name}.bm25-top100.tsv.gz")
        qr = read_qrels(data / "topics-and-qrels" / qrels)
        sets = {"candidate": {p for _, ps in cands.values() for p in ps},
                "judged": {p for q in cands for p in qr.get(q, {})},
                "rel>=2": {p for q in cands for p, g in qr.get(q, {}).items() if g >= 2}}
        out[name] = {f"{k}_passages_in_training_triples": f"{len(v & used)} of {len(v)}" for k, v in sets.items()}
        out[name]["queries_in_training (qid or text)"] = len(set(cands) & train_q) + len(
            {" ".join(t.lower().split()) for t, _ in cands.values()} & train_text)
    # how on-topic the pool is for the training queries (reported only: training uses no labels)
    dev = read_qrels(data / "topics-and-qrels" / "qrels.msmarco-passage.dev-subset.txt")
    pool = set(prep["passages"])
    out["dev-small"] = {"training queries with a judged-relevant passage in the pool": sum(
        1 for q in train_q if any(p in pool for p in dev.get(q, {}))), "training queries": len(train_q)}
    return out


# ------------------------------------------------------------------------------------------------ models ----

def make_students(work: Path) -> dict:
    """The untrained students, CLS, dot, 30/200: ``student-init``, the 3-layer cut exactly as ``kd-train
    --student-layers 3`` makes it (``keep_layers``: the 2nd, 4th and 6th layers), and, for reference,
    ``student-first3``, MiniLM's first three layers. Each written under a temporary name, then renamed."""
    from kd_pyserini.atomic import replace_dir, temp_dir_for
    from kd_pyserini.encoding import load_model
    from kd_pyserini.train.model import keep_layers

    tok, model = load_model(get_card(TEACHER_CARD))
    first3 = copy.deepcopy(model)
    first3.encoder.layer, first3.config.num_hidden_layers = first3.encoder.layer[:3], 3
    kept = [int(i) for i in keep_layers(model, 3)]
    if kept != KEEP_EXPECTED:
        raise SystemExit(f"the 6 -> 3 cut kept layers {kept}, expected {KEEP_EXPECTED}")
    for out, m in ((work / "student-init", model), (work / "student-first3", first3)):
        if not (out / "config.json").is_file():
            tmp = temp_dir_for(out)
            m.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            card = EncoderCard(name=out.name, model_id=str(out), pooling="cls", similarity="dot", query_max_length=30,
                               passage_max_length=200, dimension=384, architecture="bert")
            write_card(card, tmp)
            replace_dir(tmp, out)
    return {"kept_layers_0_based": kept, "cut_by": "kd_pyserini.train.model.keep_layers(model, 3)"}


class Evaluator:
    """Re-rank DL19 (test) and DL20 (learning-rate selection) BM25 top-100 and evaluate; runs written to files."""

    def __init__(self, data: Path, max_queries: int | None):
        from kd_pyserini.train.validation import RerankValidator

        self.sets = {}
        for name, year, qrels in (("dl19", 19, "qrels.dl19-passage.txt"), ("dl20", 20, "qrels.dl20-passage.txt")):
            self.sets[name] = RerankValidator(data / "msmarco-dl" / f"candidates.dl{year}.bm25-top100.tsv.gz",
                                              data / "topics-and-qrels" / qrels, measures=MEASURES,
                                              max_queries=max_queries)
        self.data = data

    def model(self, model: str | Path, runs_dir: Path, name: str, key=None) -> dict:
        from kd_pyserini.train.model import BertDotStudent, resolve_student_card

        cache = runs_dir / f"{name}.eval.json"
        key = {"model": str(model), "queries": [len(v.qids) for v in self.sets.values()], "key": key}
        if cache.is_file() and json.loads(cache.read_text()).get("key") == key:
            return json.loads(cache.read_text())
        card = resolve_student_card(str(model))
        student, tok = BertDotStudent.from_card(card)
        out, t0 = {}, time.time()
        with torch.inference_mode():
            for s, v in self.sets.items():
                v.prepare(tok, card.query_max_length, card.passage_max_length)
                run = v.run(student.eval(), "cpu", batch_size=64)
                path = write_run(run, runs_dir / f"{name}.{s}.trec", tag=name)
                out[s] = {**evaluate(run, v.qrels, MEASURES), "queries": len(v.qids), "run": str(path)}
        out["eval_seconds"] = round(time.time() - t0, 1)
        out["key"] = key
        _write_json(cache, out)
        _log(f"{name}: " + ", ".join(f"{s} nDCG@10 {out[s]['nDCG@10']:.4f}" for s in self.sets))
        return out

    def paired(self, runs: Path, a: str, b: str, which: str, seed: int, permutations: int = 20000) -> dict:
        """Per-query nDCG@10 on ``which`` (dl19/dl20) of run ``a`` minus run ``b``: mean, wins/ties/losses, paired
        t-test and two-sided randomisation (sign-flip) test p-values."""
        from scipy import stats

        v = self.sets[which]
        pa, pb = (evaluate_per_query(read_run(runs / f"{x}.{which}.trec"), v.qrels, ["nDCG@10"])["nDCG@10"]
                  for x in (a, b))
        d = np.array([pa[q] - pb[q] for q in v.qids])
        rng = np.random.default_rng(seed)
        flips = rng.choice([-1.0, 1.0], size=(permutations, len(d)))
        p_rand = float((np.abs((flips * d).mean(1)) >= abs(d.mean()) - 1e-12).mean())
        return {"measure": "nDCG@10", "queries": len(d), "mean_difference": float(d.mean()),
                "wins": int((d > 0).sum()), "ties": int((d == 0).sum()), "losses": int((d < 0).sum()),
                "p_paired_t": float(stats.ttest_rel([pa[q] for q in v.qids], [pb[q] for q in v.qids]).pvalue),
                "p_randomisation": p_rand, "permutations": permutations}

    def bm25(self, runs_dir: Path) -> dict:
        out = {}
        for s, v in self.sets.items():
            run = {q: {p: -float(r) for r, p in enumerate(v.candidates[q])} for q in v.qids}
            path = write_run(run, runs_dir / f"bm25.{s}.trec", tag="bm25")
            out[s] = {**evaluate(run, v.qrels, MEASURES), "queries": len(v.qids), "run": str(path)}
        return out


def query_latency(student_dir: Path, data: Path, threads: int, rounds: int, max_queries: int | None) -> dict:
    """ms/query of student vs teacher encoding DL19's queries one at a time (``TextEncoder.embed_one``), CPU,
    fp32, interleaved rounds in one process (order alternating); the ratio is per round, its median reported."""
    from kd_pyserini.encoding import TextEncoder

    queries = list(read_topics(data / "topics-and-qrels" / "topics.dl19-passage.txt").values())[:max_queries]
    enc = {"student": TextEncoder(str(student_dir), device="cpu"), "teacher": TextEncoder(TEACHER_CARD, device="cpu")}
    per: dict[str, list[float]] = {"student": [], "teacher": []}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for r in range(-1, rounds):  # round -1: warm-up, not counted
            for name in (["student", "teacher"] if r % 2 == 0 else ["teacher", "student"]):
                e, t0 = enc[name], time.perf_counter()
                for q in queries[:5] if r < 0 else queries:
                    e.embed_one(q, e.card.query_max_length)
                if r >= 0:
                    per[name].append(1000 * (time.perf_counter() - t0) / len(queries))
    finally:
        torch.set_num_threads(before)
    ratios = [t / s for s, t in zip(per["student"], per["teacher"])]
    return {"model": str(student_dir), "queries": len(queries), "threads": threads, "rounds": rounds,
            "student_ms_per_query_median": float(np.median(per["student"])),
            "teacher_ms_per_query_median": float(np.median(per["teacher"])),
            "teacher_over_student_median": float(np.median(ratios)),
            "student_ms_each_round": [round(x, 2) for x in per["student"]],
            "teacher_ms_each_round": [round(x, 2) for x in per["teacher"]]}


# ------------------------------------------------------------------------------------------------ training ----

def train_row(name: str, extra: list[str], common: list[str], runs: Path) -> dict:
    """One ``kd-train margin-mse`` run (cached; an interrupted one resumes from its latest checkpoint)."""
    out = runs / name
    record = runs / f"{name}.train.json"
    cmd = [sys.executable, "-m", "kd_pyserini.train", "margin-mse", *common, *extra, "--output", str(out)]
    if record.is_file():
        rec = json.loads(record.read_text())
        if rec["command"] == _shown(cmd):
            return rec
        _log(f"{name}: settings changed since {record.name}; training again")
        record.unlink()
        (runs / f"{name}.eval.json").unlink(missing_ok=True)
        partial = []
    else:
        partial = sorted(out.glob("checkpoint-*")) if out.is_dir() else []
    run_cmd = cmd + (["--resume", "latest"] if partial else ["--overwrite"] if out.exists() else [])
    _log(f"training {name}: {_shown(run_cmd)}")
    secs = _sh(run_cmd, runs / f"{name}.log")
    with open(out / "train_log.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("loss")]
    rec = {"name": name, "command": _shown(cmd), "train_wall_seconds": round(secs, 1),
           "resumed_from": partial[-1].name if partial else None,
           "steps_logged": int(rows[-1]["step"]) if rows else None,
           "loss_first": float(rows[0]["loss"]) if rows else None,
           "loss_last_mean_of_5_logs": float(np.mean([float(r["loss"]) for r in rows[-5:]])) if rows else None,
           "triples_per_s_median": float(np.median([float(r["triples_per_s"]) for r in rows[1:] or rows]))
           if rows else None,
           "elapsed_s_logged": float(rows[-1]["elapsed_s"]) if rows and rows[-1].get("elapsed_s") else None}
    _write_json(record, rec)
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("KD_PYSERINI_DATA", "../shared/data")))
    ap.add_argument("--work", type=Path, required=True, help="work folder (caches, runs, summary.json, table.md)")
    add = ap.add_argument
    add("--quick", action="store_true", help="WORK/quick: 200 queries, top-10, 50 steps of 8 at the last probe lr, "
        "10 eval queries")
    add("--steps", type=int, default=100, help="optimizer steps of every trained row (~10 min plain, 1 thread)")
    add("--batch-size", type=int, default=32)
    add("--lr-probe", default="7e-6,3e-5,1e-4", help="plain Margin-MSE learning rates; the best on DL20 is chosen")
    add("--lr", type=float, default=None, help="use this learning rate (no probe)")
    add("--tas-top", type=int, default=2, help="run the TAS row at the N best probe learning rates (on DL20)")
    add("--bm25-k", type=int, default=30, help="BM25 candidates per training query")
    add("--with-dl20", action="store_true", help="also train on DL20's BM25 top-100 (DL20 then no fair lr pick)")
    add("--pairs-per-query", type=int, default=20)
    add("--scale", type=float, default=10.0, help="teacher score = scale x cosine")
    add("--clusters", type=int, default=200, help="TAS query clusters (~35 queries each)")
    add("--rows", default="plain,tas", help="trained rows: plain, tas (none: data and untrained rows only)")
    add("--threads", type=int, default=1, help="torch CPU threads (1 measured 2-3x faster than 2 on the busy box)")
    add("--latency-threads", default="1,2", help="thread counts of the query-latency comparison")
    add("--latency-rounds", type=int, default=5)
    add("--save-every", type=int, default=50, help="kd-train checkpoints (resume)")
    add("--seed", type=int, default=13)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    t_start = time.time()
    data, base = args.data.resolve(), args.work.resolve()
    work = base / "quick" if args.quick else base
    runs = work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    q = args.quick
    cfg = {"dev_queries": 200 if q else None, "bm25_k": 10 if q else args.bm25_k, "with_dl20": args.with_dl20 and not q,
           "pairs_per_query": 10 if q else args.pairs_per_query, "scale": args.scale, "steps": 50 if q else args.steps,
           "batch_size": 8 if q else args.batch_size, "clusters": 8 if q else args.clusters,
           "eval_queries": 10 if q else None}
    lrs = [float(x) for x in ([args.lr] if args.lr else args.lr_probe.split(","))][-1 if args.quick else 0:]

    prep = prepare_training_data(cfg, data, work, base, args.threads)
    teacher = write_teacher_files(prep, cfg, work, args.threads, args.seed)
    overlap = overlap_with_eval(work, data, prep)
    cut = make_students(work)
    ev = Evaluator(data, cfg["eval_queries"])
    results = {"bm25": ev.bm25(runs), "teacher": ev.model(TEACHER_CARD, runs, "teacher"),
               "before": ev.model(work / "student-init", runs, "before"),
               "first3": ev.model(work / "student-first3", runs, "first3")}

    common = ["--teacher", str(work / "teacher.ids.tsv"), "--collection", str(prep["collection"]), "--queries",
              str(prep["queries"]), "--format", "ids", "--student", TEACHER_CARD, "--student-layers", "3",
              "--pooling", "cls", "--similarity", "dot",
              "--query-max-length", "30", "--passage-max-length", "200", "--batch-size", str(cfg["batch_size"]),
              "--max-steps", str(cfg["steps"]), "--seed", str(args.seed), "--save-every", str(args.save_every),
              "--log-every", "10", "--cpu-threads", str(args.threads), "--no-progress"]
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    trained: dict[str, dict] = {}
    if "plain" in rows:
        for lr in lrs:
            name = f"plain-lr{lr:g}"
            trained[name] = {"train": train_row(name, ["--lr", f"{lr:g}"], common, runs), "lr": lr}
            trained[name]["eval"] = ev.model(runs / name, runs, name, trained[name]["train"]["command"])
    ranked = [v["lr"] for v in sorted((v for k, v in trained.items() if k.startswith("plain-")),
                                      key=lambda r: -r["eval"]["dl20"]["nDCG@10"])] or lrs
    lr = args.lr or ranked[0]
    for t_lr in ([lr] if args.lr else ranked[:args.tas_top]) if "tas" in rows else []:
        name = f"tas-lr{t_lr:g}"
        extra = ["--lr", f"{t_lr:g}", "--sampling", "tas-balanced", "--clusters", str(cfg["clusters"]),
                 "--cluster-encoder", TEACHER_CARD, "--in-batch-teacher", TEACHER_CARD,
                 "--in-batch-teacher-scale", f"{args.scale:g}", "--in-batch-weight", "0.75"]
        trained[name] = {"train": train_row(name, extra, common, runs), "lr": t_lr}
        trained[name]["eval"] = ev.model(runs / name, runs, name, trained[name]["train"]["command"])

    lat_model = next((runs / k for k in trained), work / "student-init")
    lat_path = work / "latency.json"
    lat_threads = [int(x) for x in args.latency_threads.split(",")]
    latency = json.loads(lat_path.read_text()) if lat_path.is_file() else []
    if [(x["threads"], x.get("model")) for x in latency] != [(t, str(lat_model)) for t in lat_threads]:
        latency = [query_latency(lat_model, data, t, 2 if args.quick else args.latency_rounds, cfg["eval_queries"])
                   for t in lat_threads]
        _write_json(lat_path, latency)

    # paired per-query tests: every trained row vs before, TAS vs plain at the same lr; on DL19 and on DL20
    first = f"plain-lr{lr:g}"
    pairs = [(k, "before") for k in trained] + [(k, "plain-" + k[4:]) for k in trained
                                                if k.startswith("tas-") and "plain-" + k[4:] in trained]
    tests = {w: {f"{a} vs {b}": ev.paired(runs, a, b, w, args.seed) for a, b in pairs} for w in ("dl19", "dl20")}
    # kd-eval's table with its paired t-test markers against the FIRST run (plain at the chosen lr); only when all
    # judged DL19 queries were re-ranked (kd-eval counts a missing query as 0)
    sig = None
    order = ([first] if first in trained else []) + [k for k in trained if k != first]
    if order and not cfg["eval_queries"]:
        qrels = data / "topics-and-qrels" / "qrels.dl19-passage.txt"
        cmd = [sys.executable, "-m", "kd_pyserini.cli.eval", "--qrels", str(qrels), "-m", ",".join(MEASURES),
               "--format", "markdown", *[str(runs / f"{k}.dl19.trec") for k in order + ["before", "teacher", "bm25"]]]
        p = subprocess.run(cmd, capture_output=True, text=True)
        sig = {"command": _shown(cmd), "output": p.stdout if p.returncode == 0 else (p.stdout + p.stderr)[-2000:]}

    summary = {
        "issue": 12, "variant": "quick" if args.quick else "full", "config": cfg, "lr_chosen": lr,
        "lr_chosen_by": "--lr" if args.lr else "plain Margin-MSE DL20 nDCG@10 over --lr-probe (DL19 never used)",
        "batch_size": cfg["batch_size"], "threads": args.threads, "seed": args.seed,
        "training_data": {
            "queries": len(prep["groups"]), "dev_small_queries_searched": prep["dev_queries_searched"],
            "dev_queries_dropped_under_2_bm25_hits": prep["dev_queries_under_2_hits"],
            "dl20_in_training": cfg["with_dl20"], "bm25": f"kd-index bm25 of the 28,606-passage pool, k1 0.9 b 0.4, "
            f"top-{cfg['bm25_k']} per query", "bm25_index_command": prep["bm25_index_command"], **teacher,
            "files": {k: str(work / f) for k, f in (("teacher_ids", "teacher.ids.tsv"), ("teacher_text",
                      "teacher.text.tsv"), ("queries", "queries.tsv"))} | {"collection": str(prep["collection"])},
            "relevance_labels_used": False},
        "shared_with_evaluation": overlap, "student_cut": cut,
        "results": results | {k: v["eval"] for k, v in trained.items()},
        "training": {k: v["train"] for k, v in trained.items()},
        "latency": latency, "latency_student_model": str(lat_model), "paired_tests": tests, "kd_eval": sig,
        "total_seconds_this_invocation": round(time.time() - t_start, 1),
        "command": "python tools/experiments/tas_distill.py " + shlex.join(sys.argv[1:] if argv is None else argv),
    }
    _write_json(work / "summary.json", summary)
    (work / "table.md").write_text(render_table(summary), encoding="utf-8")
    print(render_table(summary))
    return 0


def render_table(s: dict) -> str:
    r, tr, t, n = s["results"], s["training"], s["training_data"], s["config"]["steps"]
    lines = ["| row | steps x batch (triples) | lr | train wall (step loop) | DL19 nDCG@10 | DL19 RR(rel=2)@10 | "
             "DL20 nDCG@10 (lr pick) |", "|---|---|---|---|---|---|---|"]
    labels = {"bm25": "BM25 (k1 0.9, b 0.4; the candidates' order)",
              "teacher": "teacher all-MiniLM-L6-v2 (6 layers, mean, cosine)",
              "before": "student: 3-layer cut (2nd/4th/6th), CLS, dot, untrained",
              "first3": "(reference: MiniLM's first three layers, CLS, dot, untrained)"}
    for k in list(labels) + list(tr):
        cols = ["-", "-", "-"]
        if k in tr:
            lr = float(k.split("lr")[1])
            labels[k] = ("student after TAS-balanced + in-batch teacher (0.75)" if k.startswith("tas") else
                         "student after plain Margin-MSE (random)" + (" **(chosen lr)**" if lr == s["lr_chosen"]
                                                                       else ""))
            cols = [f"{n} x {s['batch_size']} ({n * s['batch_size']:,})", f"{lr:g}",
                    f"{tr[k]['train_wall_seconds'] / 60:.1f} min ({tr[k]['elapsed_s_logged'] / 60:.1f})"
                    + (" resumed: time after the restart" if tr[k]["resumed_from"] else "")]
        e = r[k]
        lines.append(f"| {labels[k]} | {' | '.join(cols)} | {e['dl19']['nDCG@10']:.4f} | "
                     f"{e['dl19']['RR(rel=2)@10']:.4f} | {e['dl20']['nDCG@10']:.4f} |")
    out = lines + ["", f"Training data: {t['queries']:,} queries, {t['triples']:,} teacher triples ({t['bm25']}; no "
                   f"relevance labels). Test: DL19, {r['before']['dl19']['queries']} queries (held out); DL20, "
                   f"{r['before']['dl20']['queries']} queries, picks the learning rate.", "",
                   "Query latency (CPU, fp32, one DL19 query at a time, median of interleaved rounds):", ""]
    out += [f"- {x['threads']} thread(s): student {x['student_ms_per_query_median']:.2f} ms, teacher "
            f"{x['teacher_ms_per_query_median']:.2f} ms per query; teacher/student "
            f"{x['teacher_over_student_median']:.2f}x ({x['queries']} queries, {x['rounds']} rounds)"
            for x in s["latency"]]
    out += ["", "Paired per-query tests, nDCG@10 (difference, wins/ties/losses, p paired t / randomisation):", ""]
    out += [f"- {w.upper()} {k}: {v['mean_difference']:+.4f}, {v['wins']}/{v['ties']}/{v['losses']}, p = "
            f"{v['p_paired_t']:.3f} / {v['p_randomisation']:.3f}" for w, d in s["paired_tests"].items()
            for k, v in d.items()]
    out += ["", "Shared with the evaluation (the training triples come from the same 28,606-passage pool):", ""]
    out += [f"- {k.upper()}: " + "; ".join(f"{m.replace('_', ' ')}: {v}" for m, v in o.items())
            for k, o in s["shared_with_evaluation"].items()]
    out += ["", "Commands:", "", "```", s["command"], t["bm25_index_command"], *[v["command"] for v in tr.values()]]
    if s.get("kd_eval"):
        out += [s["kd_eval"]["command"], "```", "", s["kd_eval"]["output"].strip()]
    else:
        out.append("```")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
