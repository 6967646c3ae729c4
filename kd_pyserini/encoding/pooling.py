"""Batch tensors around the transformer: padding token ids into a batch, and pooling token vectors into one vector."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["pool", "pad_batch"]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token vectors ``(batch, seq, dim)`` into one vector per text: ``cls`` (first token) or masked ``mean``."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    raise ValueError(f"unknown pooling {pooling!r}; expected 'cls' or 'mean'")


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int, pin: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists → ``(input_ids, attention_mask)``, both ``int64`` ``(len(ids), longest)`` tensors.

    Each row is padded with ``pad_id`` to the longest list of the batch (not to a maximum length); the mask is 1 on
    real tokens and 0 on padding. ``pin=True`` puts both in pinned host memory (for asynchronous copies to a GPU).
    """
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = x
        mask[i, : len(x)] = 1
    input_t, mask_t = torch.from_numpy(input_ids), torch.from_numpy(mask)
    if pin:
        input_t, mask_t = input_t.pin_memory(), mask_t.pin_memory()
    return input_t, mask_t
