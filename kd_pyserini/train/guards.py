"""Checks that keep non-finite numbers out of everything a training run saves.

* :func:`weights_finite` after every optimizer step: one reduction per weight tensor (on CUDA a fused
  multi-tensor ``torch._foreach_norm``) and a single host sync;
* :func:`vectors_finite` before a checkpoint is written: finite weights can still encode NaN (activations that
  overflow), so the weights must encode the step's batch to finite fp32 vectors (eval mode: no dropout, no RNG
  drawn, so an exact resume is not disturbed);
* :func:`stop_message`: the one-line error naming the step and the last good checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from kd_pyserini.train.batches import Batch
from kd_pyserini.train.distributed import Dist

__all__ = ["weights_finite", "vectors_finite", "stop_message"]


@torch.no_grad()
def weights_finite(params: Sequence[torch.Tensor], dist: Dist) -> bool:
    """Whether every element of every tensor is finite (on every rank).

    CUDA: one max-abs per tensor in a fused multi-tensor kernel (NaN propagates, nothing overflows). CPU (where that
    kernel is slow): one sum per tensor; a finite sum proves every element finite, and a non-finite one (a NaN/inf,
    or huge finite values summing past float32) is settled by the exact element-wise check.
    """
    if not params:
        return True
    if params[0].is_cuda:
        return dist.all_true(torch.stack(torch._foreach_norm(list(params), float("inf"))).isfinite().all())
    if dist.all_true(torch.stack([p.sum() for p in params]).isfinite().all()):
        return True
    return dist.all_true(torch.stack([torch.isfinite(p).all() for p in params]).all())


@torch.no_grad()
def vectors_finite(student: torch.nn.Module, batch: Batch, dist: Dist) -> bool:
    """Whether ``student`` (not autocast: fp32, as an index is built) encodes ``batch`` to finite vectors (a pair
    student: scores the batch's pairs to finite scores)."""
    from kd_pyserini.train.objective import is_pair_student, pair_scores

    was = student.training
    student.eval()
    try:
        if is_pair_student(student):  # BERT_CAT, ColBERT, PreTTR: the batch's pair scores
            q, p = pair_scores(student, batch)
        else:
            q, p = student(batch.q_ids, batch.q_mask, batch.p_ids, batch.p_mask)
    finally:
        student.train(was)
    return dist.all_true(torch.isfinite(q).all() & torch.isfinite(p).all())


def stop_message(what: str, step: int, epoch: int, batch: int, good: Path | None, lr: float) -> str:
    """``"<what> at step N (epoch e, batch b); training stopped ...; last good checkpoint: ..."``."""
    where = (f"last good checkpoint: {good} (step {good.name.removeprefix('checkpoint-')})" if good else
             "no good checkpoint had been written (use --save-every N to keep one)")
    return (f"{what} at step {step} (epoch {epoch}, batch {batch}); training stopped and these weights were not "
            f"saved; {where}. Likely causes: a learning rate too high (now {lr:g}), fp16 overflow (try --precision "
            "bf16 or fp32), or exploding gradients (try --max-grad-norm 1.0)")
