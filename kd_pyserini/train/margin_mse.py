"""Margin-MSE: the cross-architecture knowledge-distillation loss of Hofstätter et al. (2020).

Sebastian Hofstätter, Sophia Althammer, Michael Schröder, Mete Sertkan and Allan Hanbury. "Improving Efficient
Neural Ranking Models with Cross-Architecture Knowledge Distillation". arXiv:2010.02666, 2020.

A student ranker ``s`` (here BERT_Dot: one DistilBERT encoding query and passage separately, CLS vectors, dot
product) learns from a teacher ``t`` (there an ensemble of BERT_CAT cross-encoders) whose *scores live on another
scale*. Matching the scores themselves would force the student onto the teacher's scale; Margin-MSE only asks the
student to reproduce the teacher's *margin* between a relevant and a non-relevant passage for the same query::

    L(q, p+, p-) = MSE( s(q, p+) - s(q, p-),  t(q, p+) - t(q, p-) )

averaged over the batch. The teacher margins are computed once, offline (the "teacher file").
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MarginMSELoss", "margin_mse"]


def margin_mse(student_pos: torch.Tensor, student_neg: torch.Tensor, teacher_margin: torch.Tensor) -> torch.Tensor:
    """``mean((student_pos - student_neg - teacher_margin) ** 2)``, computed in float32.

    Args:
        student_pos: ``(B,)`` student scores ``s(q_i, p_i+)``.
        student_neg: ``(B,)`` student scores ``s(q_i, p_i-)``.
        teacher_margin: ``(B,)`` teacher margins ``t(q_i, p_i+) - t(q_i, p_i-)``.
    """
    margin = student_pos.float() - student_neg.float()
    return nn.functional.mse_loss(margin, teacher_margin.float().to(margin.device))


class MarginMSELoss(nn.Module):
    """Margin-MSE loss (Hofstätter et al. 2020) over student *scores*.

    It is model-agnostic: give it the student's scores for ``(q, p+)`` and ``(q, p-)`` and the teacher margin.
    Like ``sentence_transformers.losses.MarginMSELoss``, but taking scores instead of a model, so the trainer can
    encode each unique query and passage of a batch once.

    Example::

        loss_fn = MarginMSELoss()
        loss = loss_fn((q * p_pos).sum(-1), (q * p_neg).sum(-1), teacher_pos - teacher_neg)
    """

    def forward(self, student_pos: torch.Tensor, student_neg: torch.Tensor,
                teacher_margin: torch.Tensor) -> torch.Tensor:
        return margin_mse(student_pos, student_neg, teacher_margin)
