"""The training objective of one batch: Margin-MSE over the student's scores, plus the optional in-batch term.

Margin-MSE: Hofstätter et al., "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
Distillation" (arXiv:2010.02666). The in-batch term with an in-batch teacher ("dual supervision") is TAS-B's:
Hofstätter et al., "Efficiently Teaching an Effective Dense Retriever with Balanced Topic Aware Sampling", SIGIR 2021
(see :mod:`kd_pyserini.train.in_batch_margin_mse`).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from kd_pyserini.train.batches import Batch
from kd_pyserini.train.in_batch_margin_mse import InBatchMarginMSELoss
from kd_pyserini.train.margin_mse import MarginMSELoss
from kd_pyserini.train.model import BertDotStudent

__all__ = ["batch_loss", "ScoresBatch", "pair_scores", "is_pair_student", "architecture"]


def architecture(student: torch.nn.Module) -> str:
    """``bert-dot`` for a bi-encoder student, else the pair student's architecture (through a DDP wrapper too)."""
    return str(getattr(getattr(student, "module", student), "architecture", "bert-dot"))


def is_pair_student(student: torch.nn.Module) -> bool:
    """Whether ``student`` (or the module a DDP wrapper holds) scores pairs instead of encoding vectors."""
    return architecture(student) != "bert-dot"


def pair_scores(student: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """A pair student's scores ``(s(q, p+), s(q, p-))`` of a batch's triples, from one forward call."""
    rows = torch.cat([batch.q_index, batch.q_index])
    cols = torch.cat([batch.pos_index, batch.neg_index])
    s = student(batch.q_ids, batch.q_mask, batch.p_ids, batch.p_mask, rows, cols)
    n = int(batch.q_index.shape[0])
    return s[:n], s[n:]


class ScoresBatch(Protocol):
    """What :func:`batch_loss` needs of an in-batch teacher (:class:`~kd_pyserini.train.in_batch_teacher.
    InBatchTeacher`): ``(B, P)`` float32 scores of each triple's query against every unique batch passage."""

    def scores(self, batch: Batch) -> torch.Tensor: ...


def batch_loss(student: BertDotStudent | torch.nn.Module, batch: Batch, in_batch_weight: float = 0.0,
               margin_loss: MarginMSELoss | None = None, in_batch_loss: InBatchMarginMSELoss | None = None,
               in_batch_teacher: ScoresBatch | Any | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loss of one batch: Margin-MSE (+ ``in_batch_weight`` × in-batch Margin-MSE).

    ``student`` is called once with all unique queries and passages (so a DDP wrapper sees one forward). With
    ``in_batch_teacher`` (and ``in_batch_weight > 0``) the in-batch term is TAS-B's exact two-sided one on the
    teacher's ``scores(batch)``; without it, the one-sided approximation from the teacher file's margins. The teacher
    is not called when ``in_batch_weight`` is 0. Returns ``(loss, parts)`` with the un-weighted terms in ``parts``.

    A pair-scoring student (BERT_CAT, ColBERT, PreTTR: :mod:`kd_pyserini.train.pair_students`) scores each triple's
    ``(q, p+)`` and ``(q, p-)`` in one forward (:func:`pair_scores`); only the Margin-MSE term applies to it.
    """
    margin_loss = margin_loss or MarginMSELoss()
    if is_pair_student(student):
        if in_batch_weight > 0:
            raise ValueError(f"a {architecture(student)} student scores (query, passage) pairs: it has no in-batch "
                             "term (in_batch_weight must be 0)")
        s_pos, s_neg = pair_scores(student, batch)
        loss = margin_loss(s_pos, s_neg, batch.teacher_margin)
        return loss, {"margin_mse": loss.detach()}
    q, p = student(batch.q_ids, batch.q_mask, batch.p_ids, batch.p_mask)
    qv = q[batch.q_index]
    s_pos = (qv * p[batch.pos_index]).sum(-1)
    s_neg = (qv * p[batch.neg_index]).sum(-1)
    margin = batch.teacher_margin
    loss = margin_loss(s_pos, s_neg, margin)
    parts = {"margin_mse": loss.detach()}
    if in_batch_weight > 0:
        in_batch_loss = in_batch_loss or InBatchMarginMSELoss()
        teacher = in_batch_teacher.scores(batch) if in_batch_teacher is not None else None
        inb = in_batch_loss(qv @ p.T, batch.q_index, batch.pos_index, batch.neg_index, margin,
                            teacher_scores=teacher)
        parts["in_batch"] = inb.detach()
        loss = loss + in_batch_weight * inb
    return loss, parts
