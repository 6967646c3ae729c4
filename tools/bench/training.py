"""Margin-MSE training throughput (triples/s) at batch 32 with a TAS-B-sized student (DistilBERT 6x768, random
weights), on MS MARCO training triples (``kd-samples/triples.train.small.head100.tsv``, teacher scores made up:
the speed does not depend on them).

kd_pyserini side: :class:`kd_pyserini.train.trainer.MarginMSETrainer` (fp32 and bf16 autocast), timed between
optimizer steps (the first step is a warm-up). Pyserini has no trainer, so the comparison column is a plain
PyTorch + Hugging Face Margin-MSE step written the common way (three forward passes, query / positive / negative,
each padded to its longest; fp32; AdamW).
"""

from __future__ import annotations

import random
import tempfile
from typing import Any

from .common import Result, Settings, Skip, mib, need_data, tasb_model
from .memprobe import probe
from .train_steps import Triples, kd_trainer, reference_step


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
    for prec in ("fp32", "bf16"):
        with tempfile.TemporaryDirectory(dir=s.cache_dir) as out:
            res[prec] = kd_trainer(s, model, data, prec, steps, out)
    ref = res["reference"]
    for prec in ("fp32", "bf16"):
        r.add(f"Margin-MSE triples/s, batch 32, kd trainer {prec}", res[prec]["triples_per_s"],
              ref["triples_per_s"], "triples/s", ours_label=f"kd {prec}")
    # memory: each variant alone in a fresh process (model + optimizer state + activations)
    payload = [[t.query, t.pos, t.neg, t.pos_score, t.neg_score] for t in data[:64]]
    mem = {} if s.quick else {v: probe("train", v, model, payload) for v in ("reference", "kd fp32", "kd bf16")}
    r.extra["memory_probe"] = mem
    for prec in ("fp32", "bf16") if mem else ():
        if "error" not in mem[f"kd {prec}"] and "error" not in mem["reference"]:
            r.add(f"training peak RSS (model + optimizer + 1 step), kd trainer {prec}",
                  mib(mem[f"kd {prec}"]["peak_above_loaded"]), mib(mem["reference"]["peak_above_loaded"]), "MiB",
                  higher_is_better=False, ours_label=f"kd {prec}")
    r.extra["steps"] = {k: {kk: (mib(vv) if kk == "peak_rss" else vv) for kk, vv in v.items()} for k, v in res.items()}
    r.notes.append(f"{steps} timed steps after 1 warm-up step, batch 32 (64 passages, 200 tokens max; queries 30), "
                   f"{'tiny model (quick)' if s.quick else 'DistilBERT 6x768 random weights'}; Pyserini has no "
                   "trainer: its column is a plain PyTorch/HF Margin-MSE step (3 forwards, fp32). Variants run one "
                   "after the other (a step is too long to interleave).")
    return r
