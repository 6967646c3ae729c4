"""The training objective of one batch: Margin-MSE over the student's scores, plus the optional in-batch term."""

from __future__ import annotations

import torch

from kd_pyserini.train.batches import Batch
from kd_pyserini.train.in_batch_margin_mse import InBatchMarginMSELoss
from kd_pyserini.train.margin_mse import MarginMSELoss
from kd_pyserini.train.model import BertDotStudent

__all__ = ["batch_loss"]


def batch_loss(student: BertDotStudent | torch.nn.Module, batch: Batch, in_batch_weight: float = 0.0,
               margin_loss: MarginMSELoss | None = None,
               in_batch_loss: InBatchMarginMSELoss | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loss of one batch: Margin-MSE (+ ``in_batch_weight`` × in-batch Margin-MSE).

    ``student`` is called once with all unique queries and passages (so a DDP wrapper sees one forward). Returns
    ``(loss, parts)`` with the un-weighted terms in ``parts``.
    """
    margin_loss = margin_loss or MarginMSELoss()
    q, p = student(batch.q_ids, batch.q_mask, batch.p_ids, batch.p_mask)
    qv = q[batch.q_index]
    s_pos = (qv * p[batch.pos_index]).sum(-1)
    s_neg = (qv * p[batch.neg_index]).sum(-1)
    margin = batch.teacher_margin
    loss = margin_loss(s_pos, s_neg, margin)
    parts = {"margin_mse": loss.detach()}
    if in_batch_weight > 0:
        in_batch_loss = in_batch_loss or InBatchMarginMSELoss()
        inb = in_batch_loss(qv @ p.T, batch.q_index, batch.pos_index, batch.neg_index, margin)
        parts["in_batch"] = inb.detach()
        loss = loss + in_batch_weight * inb
    return loss, parts
