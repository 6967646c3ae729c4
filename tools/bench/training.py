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
import time
from typing import Any

from .common import PeakRSS, Result, Settings, Skip, mib, need_data, tasb_model


def _triples(s: Settings, n: int) -> list[Any]:
    from kd_pyserini.train.data import Triple

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


class _Data(list):
    """A list of triples with the ``describe()`` the trainer records."""

    def describe(self) -> dict[str, Any]:
        return {"kind": "benchmark triples", "count": len(self)}


def _kd_trainer(s: Settings, model: str, data: _Data, precision: str, steps: int, out: str) -> dict[str, Any]:
    from kd_pyserini.train.trainer import MarginMSETrainer, TrainConfig

    stamps: list[float] = []
    cfg = TrainConfig(teacher="<in memory>", output=out, student=model, batch_size=32, max_steps=steps + 1,
                      precision=precision, save_every=0, progress=False, log_every=1, device="cpu",
                      cpu_threads=s.threads, warmup_steps=1)
    trainer = MarginMSETrainer(cfg, data=data, on_step=lambda t: stamps.append(time.perf_counter()))
    with PeakRSS() as m:
        trainer.train()
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"triples_per_s": 32 * len(gaps) / sum(gaps), "step_s": sum(gaps) / len(gaps), "peak_rss": m.delta}


def _reference_step(model: str, data: list[Any], steps: int) -> dict[str, Any]:
    """The common hand-written Margin-MSE step: three forwards (q, pos, neg), padding='longest', fp32, AdamW."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    net = AutoModel.from_pretrained(model).train()
    opt = torch.optim.AdamW(net.parameters(), lr=7e-6)

    def enc(texts: list[str], max_length: int) -> torch.Tensor:
        b = tok(texts, truncation=True, max_length=max_length, padding="longest", return_tensors="pt")
        return net(**b).last_hidden_state[:, 0]

    times = []
    with PeakRSS() as m:
        for i in range(steps + 1):
            batch = data[i * 32:(i + 1) * 32]
            t0 = time.perf_counter()
            q = enc([t.query for t in batch], 30)
            p = enc([t.pos for t in batch], 200)
            n = enc([t.neg for t in batch], 200)
            margin = torch.tensor([t.pos_score - t.neg_score for t in batch])
            loss = torch.nn.functional.mse_loss((q * p).sum(-1) - (q * n).sum(-1), margin)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
    gaps = times[1:]
    return {"triples_per_s": 32 * len(gaps) / sum(gaps), "step_s": sum(gaps) / len(gaps), "peak_rss": m.delta}


def bench_training(s: Settings) -> Result:
    try:
        import kd_pyserini.train.trainer  # noqa: F401
    except ImportError as e:
        raise Skip(f"kd_pyserini.train is not ready ({e})") from e
    r = Result("training")
    model = str(tasb_model(s))
    steps = s.train_steps
    data = _Data(_triples(s, 32 * (steps + 1)))
    res: dict[str, dict[str, Any]] = {}
    res["reference"] = _reference_step(model, list(data), steps)
    for prec in ("fp32", "bf16"):
        with tempfile.TemporaryDirectory(dir=s.cache_dir) as out:
            res[prec] = _kd_trainer(s, model, data, prec, steps, out)
    ref = res["reference"]
    for prec in ("fp32", "bf16"):
        r.add(f"Margin-MSE triples/s, batch 32, kd trainer {prec}", res[prec]["triples_per_s"],
              ref["triples_per_s"], "triples/s", ours_label=f"kd {prec}")
    # memory: each variant alone in a fresh process (model + optimizer state + activations)
    from .memprobe import probe

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
