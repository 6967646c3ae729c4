"""Margin-MSE training throughput (triples/s) at batch 32 with a TAS-B-sized student (DistilBERT 6x768, random
weights), on MS MARCO training triples (``kd-samples/triples.train.small.head100.tsv``, teacher scores made up:
the speed does not depend on them).

kd_pyserini side: :class:`kd_pyserini.train.trainer.MarginMSETrainer` (fp32 and bf16 autocast), timed between
optimizer steps (the first step is a warm-up). Pyserini has no trainer, so the comparison column is a plain
PyTorch + Hugging Face Margin-MSE step written the common way (three forward passes, query / positive / negative,
each padded to its longest; fp32; AdamW). The peer is sentence-transformers' own trainer with ``MarginMSELoss``
(:mod:`tools.benchmarks.st_train`) at the same precision, on the same batches in the same order: triples/s as a ratio,
and both trainers' per-step losses side by side. The in-batch teacher's cost: kd's step with TAS-B's dynamic
in-batch teacher (all-MiniLM-L6-v2, weight 0.75) against the plain step.
"""

from __future__ import annotations

import random
import tempfile
from typing import Any

from .ceiling import encoder_flops, fraction_of_ceiling, useful_gflops
from .common import Result, Settings, Skip, bf16_worth_running, mib, need_data, tasb_model
from .memprobe import probe
from .st_train import st_trainer
from .train_steps import Triples, kd_trainer, reference_step

ST = "sentence-transformers"


def _triples(s: Settings, n: int) -> list[Any]:
    from kd_pyserini.train.batches import Triple

    path = need_data(s, "kd-samples", "triples.train.small.head100.tsv")
    rng = random.Random(s.seed)
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 3:
                out.append(Triple(parts[0], parts[1], parts[2], rng.uniform(5, 10), rng.uniform(0, 5)))
    while len(out) < n:
        out = out + out
    return out[:n]


def bench_training(s: Settings) -> Result:
    try:
        import kd_pyserini.train.trainer  # noqa: F401
    except ImportError as e:
        raise Skip(f"kd_pyserini.train is not ready ({e})") from e
    r = Result("training")
    model = str(tasb_model(s))
    steps = s.train_steps
    data = Triples(_triples(s, 32 * (steps + 1)))
    res: dict[str, dict[str, Any]] = {}
    res["reference"] = reference_step(model, list(data), steps)
    precs = ("fp32", "bf16") if bf16_worth_running(s) else ("fp32",)
    if len(precs) == 1:
        r.notes.append(f"bf16 not timed: this CPU's bf16 GEMM is emulated ({s.ceilings.get('bf16')} GFLOP/s)")
    for prec in precs:  # kd then ST at each precision, back to back (a step is too long to interleave)
        with tempfile.TemporaryDirectory(dir=s.cache_dir) as out:
            res[prec] = kd_trainer(s, model, data, prec, steps, out)
        try:
            res[f"st {prec}"] = st_trainer(model, list(data), res[prec]["order"], prec, steps,
                                           lr=res[prec]["lr"], weight_decay=res[prec]["weight_decay"],
                                           seed=res[prec]["seed"], out=str(s.cache_dir))
        except Skip as e:
            r.notes.append(f"sentence-transformers trainer skipped: {e}")
        except Exception as e:  # noqa: BLE001  (the peer failing must not lose kd's figures)
            r.notes.append(f"sentence-transformers trainer failed: {type(e).__name__}: {e}")
    ref = res["reference"]
    per_triple = _train_flops(model, list(data))
    for prec in precs:
        st = res.get(f"st {prec}")
        tps = res[prec]["triples_per_s"]
        r.add(f"Margin-MSE triples/s, batch 32, kd trainer {prec}", tps, ref["triples_per_s"], "triples/s",
              ours_label=f"kd {prec}", peers={ST: st["triples_per_s"] if st else None},
              ceiling=fraction_of_ceiling(tps, per_triple, (s.ceilings or {}).get(prec)),
              gflops=useful_gflops(tps, per_triple), precision=prec)
        if st:
            kd_l, st_l = res[prec]["losses"], st["losses"]
            n = min(len(kd_l), len(st_l))
            r.agreement[f"loss per step, kd {prec} vs ST {prec}"] = {
                "kd": [round(x, 4) for x in kd_l[:n]], "st": [round(x, 4) for x in st_l[:n]],
                "max_rel_diff": max((abs(a - b) / max(abs(b), 1e-9) for a, b in zip(kd_l, st_l)), default=None)}
    _aligned_losses(s, r, model, data)
    _in_batch_teacher_cost(s, r, model, data, steps, res)
    # memory: each variant alone in a fresh process (model + optimizer state + activations)
    payload = [[t.query, t.pos, t.neg, t.pos_score, t.neg_score] for t in data[:64]]
    mem = {} if s.quick else {v: probe("train", v, model, payload)
                              for v in ("reference", *(f"kd {p}" for p in precs))}
    r.extra["memory_probe"] = mem
    for prec in precs if mem else ():
        if "error" not in mem[f"kd {prec}"] and "error" not in mem["reference"]:
            r.add(f"training peak RSS (model + optimizer + 1 step), kd trainer {prec}",
                  mib(mem[f"kd {prec}"]["peak_above_loaded"]), mib(mem["reference"]["peak_above_loaded"]), "MiB",
                  higher_is_better=False, ours_label=f"kd {prec}")
    r.extra["steps"] = {k: {kk: (mib(vv) if kk == "peak_rss" else vv) for kk, vv in v.items() if kk != "order"}
                        for k, v in res.items()}
    r.notes.append(f"{steps} timed steps after 1 warm-up step, batch 32 (64 passages, 200 tokens max; queries 30), "
                   f"{'tiny model (quick)' if s.quick else 'DistilBERT 6x768 random weights'}; Pyserini has no "
                   "trainer: its column is a plain PyTorch/HF Margin-MSE step (3 forwards, fp32). Variants run one "
                   "after the other (a step is too long to interleave). x sentence-transformers: its "
                   "SentenceTransformerTrainer + MarginMSELoss at the same precision (bf16: the Trainer's autocast), "
                   "same student folder, same batches in kd's order, same lr/weight decay/no warm-up/no clipping; "
                   "loss curves: both trainers' first steps (dropout masks differ: equal within noise, not exact). "
                   "ceiling: "
                   "useful training FLOPs (3x the unpadded forward) over the GEMM ceiling at that precision.")
    return r


def _train_flops(model: str, triples: list[Any]) -> float:
    """Useful FLOPs of one training triple: 3x the forward of its query (30 tokens max) and two passages (200 max),
    unpadded (a backward pass costs about twice the forward)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    q = [len(x) for x in tok([t.query for t in triples], truncation=True, max_length=30)["input_ids"]]
    p = [len(x) for x in tok([t.pos for t in triples] + [t.neg for t in triples], truncation=True,
                             max_length=200)["input_ids"]]
    return 3 * (encoder_flops(model, q) + encoder_flops(model, p)) / len(triples)


def _aligned_losses(s: Settings, r: Result, model: str, data: Any, steps: int = 2) -> None:
    """Both trainers' first ``steps + 1`` losses with dropout off (a copy of the student whose config sets dropout 0):
    the one thing the two cannot share is the dropout RNG stream, so without it the curves must agree to float
    rounding if the data order, loss, optimizer and schedule are the same."""
    import json
    import shutil

    steps = min(steps, len(data) // 32 - 1)  # within kd's first epoch (its next epoch is reshuffled)
    try:
        with tempfile.TemporaryDirectory(dir=s.cache_dir) as tmp:
            nodrop = shutil.copytree(model, f"{tmp}/student-no-dropout")
            cfg_path = f"{nodrop}/config.json"
            with open(cfg_path) as f:
                cfg = json.load(f)
            for key in ("dropout", "attention_dropout", "hidden_dropout_prob", "attention_probs_dropout_prob"):
                if key in cfg:
                    cfg[key] = 0.0
            with open(cfg_path, "w") as f:
                json.dump(cfg, f)
            kd = kd_trainer(s, nodrop, data, "fp32", steps, f"{tmp}/kd")
            st = st_trainer(nodrop, list(data), kd["order"], "fp32", steps, out=tmp)
    except Exception as e:  # noqa: BLE001
        r.notes.append(f"dropout-off loss alignment not run: {type(e).__name__}: {e}")
        return
    n = min(len(kd["losses"]), len(st["losses"]))
    r.agreement["loss per step, dropout off, kd fp32 vs ST fp32"] = {
        "kd": [round(x, 5) for x in kd["losses"][:n]], "st": [round(x, 5) for x in st["losses"][:n]],
        "max_rel_diff": max(abs(a - b) / max(abs(b), 1e-9) for a, b in zip(kd["losses"][:n], st["losses"][:n]))}


def _in_batch_teacher_cost(s: Settings, r: Result, model: str, data: Any, steps: int,
                           res: dict[str, dict[str, Any]]) -> None:
    """kd's bf16 step with the dynamic in-batch teacher (MiniLM bi-encoder, weight 0.75) vs the plain bf16 step."""
    if s.quick or "bf16" not in res:
        return
    try:
        with tempfile.TemporaryDirectory(dir=s.cache_dir) as out:
            res["bf16 + in-batch teacher"] = kd_trainer(s, model, data, "bf16", steps, out,
                                                        in_batch_teacher="all-minilm-l6-v2", in_batch_weight=0.75)
    except Exception as e:  # noqa: BLE001  (kd_pyserini.train is being edited by others; report, do not crash)
        r.notes.append(f"in-batch teacher run failed: {type(e).__name__}: {e}")
        return
    with_t = res["bf16 + in-batch teacher"]
    r.add("seconds a step, kd bf16 + in-batch teacher (MiniLM) vs kd bf16 without", with_t["step_s"],
          res["bf16"]["step_s"], "s/step", higher_is_better=False, ours_label="kd bf16 + in-batch teacher",
          note="ratio < 1: the teacher's cost; 1 - ratio of the time goes to it")
