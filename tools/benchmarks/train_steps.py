"""The Margin-MSE training steps the benchmarks time and the memory probe measures: kd_pyserini's trainer
(:func:`kd_trainer`) and the common hand-written PyTorch + Hugging Face step (:func:`reference_step`).

Shared by :mod:`tools.benchmarks.training` (throughput) and :mod:`tools.benchmarks.memprobe` (peak memory in a fresh
process), so neither imports the other's internals.
"""

from __future__ import annotations

import time
from typing import Any

from .common import PeakRSS, Settings

__all__ = ["Triples", "kd_trainer", "reference_step"]


class Triples(list):
    """A list of triples with the ``describe()`` the trainer records."""

    def describe(self) -> dict[str, Any]:
        return {"kind": "benchmark triples", "count": len(self)}


def kd_trainer(s: Settings, model: str, data: Triples, precision: str, steps: int, out: str,
               device: str = "cpu", **options: Any) -> dict[str, Any]:
    """kd_pyserini's MarginMSETrainer for ``steps + 1`` optimizer steps (the first is the warm-up, not timed).

    Returns triples/s and seconds a step (between ``on_step`` stamps), the peak RSS growth, the per-step losses and
    the data order of the first epoch (lists of triple indices, what the sentence-transformers run replays).
    No learning-rate warm-up (so the first steps' losses can be compared with another trainer's at the same rate);
    ``options`` go to :class:`TrainConfig` (e.g. the in-batch teacher).
    """
    from kd_pyserini.train.config import TrainConfig
    from kd_pyserini.train.trainer import MarginMSETrainer

    stamps: list[float] = []
    cfg = TrainConfig(teacher="<in memory>", output=out, student=model, batch_size=32, max_steps=steps + 1,
                      precision=precision, save_every=0, progress=False, log_every=1, device=device,
                      cpu_threads=s.threads, warmup_steps=0, query_max_length=30, passage_max_length=200,
                      **options)
    trainer = MarginMSETrainer(cfg, data=data, on_step=lambda t: stamps.append(time.perf_counter()))
    order = [[int(i) for i in b] for b in trainer.sampler.epoch_batches(0, cfg.seed, 0, 1)]
    with PeakRSS() as m:
        trainer.train()
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"triples_per_s": 32 * len(gaps) / sum(gaps), "step_s": sum(gaps) / len(gaps), "peak_rss": m.delta,
            "losses": [float(r["loss"]) for r in trainer.history if "loss" in r], "order": order,
            "lr": cfg.lr, "weight_decay": cfg.weight_decay, "seed": cfg.seed,
            "optimizer": _optimizer_desc(trainer.optimizer)}


def _optimizer_desc(opt: Any) -> str:
    d = opt.defaults
    return f"{type(opt).__name__}(fused={d.get('fused')}, foreach={d.get('foreach')})"


def reference_step(model: str, data: list[Any], steps: int) -> dict[str, Any]:
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
