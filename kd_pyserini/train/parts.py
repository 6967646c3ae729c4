"""The pieces a training run is built from: device, optimizer, learning-rate schedule, autocast, validator."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from kd_pyserini.train.config import TrainConfig
from kd_pyserini.train.distributed import Dist

__all__ = ["pick_device", "make_optimizer", "WarmupLinearDecay", "autocast", "make_validator"]


def pick_device(cfg: TrainConfig, dist: Dist) -> torch.device:
    """``cfg.device`` (default: CUDA when available); under torchrun each process takes its local GPU."""
    from kd_pyserini.encoding import resolve_device

    if dist.enabled and torch.cuda.is_available() and not cfg.device:
        return torch.device("cuda", dist.local_rank)
    dev = resolve_device(cfg.device)
    if dist.enabled and dev.type == "cuda":
        return torch.device("cuda", dist.local_rank)
    return dev


def make_optimizer(student: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norms; fused (one kernel for the whole update) on CUDA and on CPU.

    On the CPU the fused kernel (torch >= 2.4) is ~7x faster than the default multi-tensor one for a 66M-parameter
    DistilBERT (76 vs 576 ms a step, 2 cores; the same weights to 1.5e-8 after 6 steps: PERFORMANCE.md,
    "Training"), where the optimizer step had been ~half of a batch-32 training step. Where the kernel is missing
    (an older torch, an unusual device), the default is used."""
    decay, no_decay = [], []
    for name, p in student.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if device.type in ("cuda", "cpu"):
        try:
            return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)
        except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device / torch
            pass
    return torch.optim.AdamW(groups, lr=cfg.lr)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, keeping the optimizer's own ``fused`` choice: a checkpoint saved before
    kd-train fused AdamW on the CPU records ``fused=None`` in its groups, which loading would otherwise restore."""
    fused = optimizer.defaults.get("fused")
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        group["fused"] = fused


class WarmupLinearDecay:
    """Learning-rate factor: linear warm-up to the peak over ``warmup_steps``, then linear decay to 0."""

    def __init__(self, warmup_steps: int, total_steps: int):
        self.warmup_steps, self.total_steps = warmup_steps, total_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return max(0.0, (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps))


def autocast(precision: str, device: torch.device):
    """The autocast context of ``precision`` (``fp32``: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def make_validator(cfg: TrainConfig, tokenizer: Any, query_max_length: int, passage_max_length: int):
    """The :class:`~kd_pyserini.train.validation.RerankValidator` of ``cfg`` (``None`` without candidates)."""
    if not cfg.validation_candidates:
        if cfg.eval_every or cfg.early_stopping_patience:
            raise ValueError("--eval-every / --early-stopping-patience need --validation-candidates")
        return None
    from kd_pyserini.train.validation import RerankValidator

    qrels = cfg.validation_qrels or cfg.validation_topics
    if qrels is None:
        raise ValueError("validation needs qrels: give --validation-qrels (a name such as dl19-passage, or a "
                         "path), or --validation-topics with a known topic-set name")
    v = RerankValidator(cfg.validation_candidates, qrels, cfg.validation_topics, cfg.validation_measures,
                        cfg.validation_max_queries)
    v.prepare(tokenizer, query_max_length, passage_max_length)
    return v
