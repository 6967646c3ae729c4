"""In-batch Margin-MSE: the TAS-B style extra term that also uses the *other* passages of a batch as negatives.

Sebastian Hofstätter, Sheng-Chieh Lin, Jheng-Hong Yang, Jimmy Lin and Allan Hanbury. "Efficiently Teaching an
Effective Dense Retriever with Balanced Topic Aware Sampling". SIGIR 2021 (arXiv:2104.06967). TAS-B trains BERT_Dot
with the pairwise Margin-MSE term of Hofstätter et al. 2020 (:mod:`kd_pyserini.train.margin_mse`) *plus* an in-batch
term: for query ``q_i`` every passage ``p_j`` of the batch that is not its own is a negative, and the student margin
``s(q_i, p_i+) - s(q_i, p_j)`` is fitted to a teacher margin. TAS-B takes those in-batch teacher scores from a second
teacher (ColBERT), which can score any (query, passage) pair cheaply.

Teacher files have no scores for such cross pairs. Unless a full in-batch teacher score matrix is given, this loss
therefore assumes that a passage from *another* query's triple is at most as relevant to ``q_i`` as ``q_i``'s own
(hard, BM25-mined) negative: ``t(q_i, p_j) <= t(q_i, p_i-)``. The target margin is then at least the pairwise one,
and the term is one-sided: only a student margin *smaller* than ``t(q_i, p_i+) - t(q_i, p_i-)`` is penalised::

    L_inb = mean_{i, j in N(i)} relu( (t_i+ - t_i-) - (s(q_i, p_i+) - s(q_i, p_j)) ) ** 2

With ``teacher_scores`` (``(B, P)``, the teacher's score of every query against every batch passage) it is the exact
TAS-B form: ``mean (s_i+ - s_ij - (t_i+ - t_ij)) ** 2`` over the in-batch negatives.

``N(i)`` excludes ``q_i``'s own passages and every passage that is a positive of the same query text elsewhere in the
batch. The total loss is ``margin_mse + weight * in_batch`` (``--in-batch-weight``).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["InBatchMarginMSELoss", "in_batch_negative_mask"]


def in_batch_negative_mask(q_index: torch.Tensor, pos_index: torch.Tensor, neg_index: torch.Tensor,
                           num_passages: int) -> torch.Tensor:
    """``(B, P)`` bool: which batch passages count as in-batch negatives of triple ``i``.

    Excluded: the triple's own positive and negative, and any passage that is the positive of *any* triple with the
    same query (queries and passages are de-duplicated, so equal texts share an index).
    """
    b = q_index.shape[0]
    num_queries = int(q_index.max().item()) + 1 if b else 0
    pos_of_query = torch.zeros(num_queries, num_passages, dtype=torch.bool, device=q_index.device)
    pos_of_query[q_index, pos_index] = True
    mask = ~pos_of_query[q_index]
    rows = torch.arange(b, device=q_index.device)
    mask[rows, pos_index] = False
    mask[rows, neg_index] = False
    return mask


class InBatchMarginMSELoss(nn.Module):
    """In-batch Margin-MSE term (TAS-B style; see the module docstring for the approximation it makes).

    Args (forward):
        scores: ``(B, P)`` student scores of each triple's query against every unique batch passage.
        q_index, pos_index, neg_index: ``(B,)`` rows of the triple's query / positive / negative.
        teacher_margin: ``(B,)`` ``t(q_i, p_i+) - t(q_i, p_i-)``.
        teacher_scores: optional ``(B, P)`` teacher scores for every (query, batch passage) pair; when given the
            loss is the exact two-sided TAS-B form, and ``teacher_margin`` is ignored.

    Returns 0 (with a gradient path) when no triple has an in-batch negative (e.g. a batch of one query).
    """

    def forward(self, scores: torch.Tensor, q_index: torch.Tensor, pos_index: torch.Tensor, neg_index: torch.Tensor,
                teacher_margin: torch.Tensor, teacher_scores: torch.Tensor | None = None) -> torch.Tensor:
        scores = scores.float()
        rows = torch.arange(scores.shape[0], device=scores.device)
        mask = in_batch_negative_mask(q_index, pos_index, neg_index, scores.shape[1])
        student_margin = scores[rows, pos_index].unsqueeze(1) - scores  # (B, P)
        if teacher_scores is not None:
            teacher_scores = teacher_scores.float().to(scores.device)
            target = teacher_scores[rows, pos_index].unsqueeze(1) - teacher_scores
            err = (student_margin - target) ** 2
        else:
            target = teacher_margin.float().to(scores.device).unsqueeze(1)
            err = torch.relu(target - student_margin) ** 2
        # clamp: a batch without in-batch negatives gives 0 (no host sync needed to check for it)
        return (err * mask).sum() / mask.sum().clamp(min=1)
