"""What every model kind does around its forward passes: the precision context, the model's placement, and
length-sorted batches filled up to a token budget.

Shared by the bi-encoder (:class:`~kd_pyserini.encoding.text_encoder.TextEncoder`), the cross-encoder
(:class:`~kd_pyserini.encoding.cross_encoder.CrossEncoder`) and the ColBERT / PreTTR re-rankers
(:class:`~kd_pyserini.encoding.interaction.TokenInteractionReranker`), so the three take the same fast paths:

* :func:`autocast`: ``bf16`` on the CPU runs under CPU autocast; everywhere else autocast is off (on CUDA the weights
  themselves are cast, by :func:`place_model`);
* :func:`place_model`: on CUDA at ``fp16``/``bf16`` the weights are cast once; on the CPU the linear layers run
  oneDNN's matmul on prepacked weights (bf16 weights for ``bf16``; :mod:`kd_pyserini.encoding.fast_linear`);
* :func:`length_batches`: items sorted by token length, longest first (stable), so each batch is padded only to its
  own longest item; either ``batch_size`` items per batch, or (``token_budget``, what the CUDA paths use) as many as
  fit in ``token_budget`` padded tokens, so short texts go in larger batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from kd_pyserini.encoding.fast_linear import use_fast_linear

__all__ = ["autocast", "place_model", "length_batches"]


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of a forward pass: CPU autocast to bf16 for ``precision="bf16"`` on the CPU, else off."""
    if precision == "bf16" and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def place_model(model: torch.nn.Module, device: torch.device, precision: str) -> torch.nn.Module:
    """``model`` ready to run on ``device`` at ``precision`` (``fp32``, ``fp16``, ``bf16``): half weights on CUDA,
    oneDNN linear layers on the CPU. int8 quantisation (bi-encoder queries only) is the caller's, before this."""
    if device.type == "cuda" and precision in ("fp16", "bf16"):
        model = model.to(torch.float16 if precision == "fp16" else torch.bfloat16)
    elif device.type == "cpu" and precision != "int8":
        use_fast_linear(model, torch.bfloat16 if precision == "bf16" else torch.float32)
    return model.to(device)


def length_batches(lengths: Sequence[int] | np.ndarray, batch_size: int,
                   token_budget: int | None = None) -> list[np.ndarray]:
    """Indices of length-sorted batches (longest first; ties keep the input order).

    Args:
        lengths: the token length of each item (a text, or a pair).
        batch_size: items per batch when ``token_budget`` is ``None``.
        token_budget: padded tokens per batch (``batch_size * max length``, say): a batch takes as many items as fit
            when padded to its first (longest) item, at least one.

    Returns:
        One index array per batch, covering every item once.
    """
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    if token_budget is None:
        return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    budget, out, start = max(int(token_budget), 1), [], 0
    while start < len(order):
        size = max(1, min(budget // max(int(lengths[order[start]]), 1), len(order) - start))
        out.append(order[start:start + size])
        start += size
    return out
