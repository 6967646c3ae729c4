"""In-batch Margin-MSE: the TAS-B term that also uses the *other* passages of a batch as negatives.

Sebastian Hofstätter, Sheng-Chieh Lin, Jheng-Hong Yang, Jimmy Lin and Allan Hanbury. "Efficiently Teaching an
Effective Dense Retriever with Balanced Topic Aware Sampling". SIGIR 2021 (arXiv:2104.06967). TAS-B trains BERT_Dot
with the pairwise Margin-MSE term of Hofstätter et al. 2020 (:mod:`kd_pyserini.train.margin_mse`) *plus* an in-batch
term ("dual supervision"): for query ``q_i`` the positives and negatives of the other triples ``j`` are negatives too,
and the student margin is fitted to the margin of a second, *in-batch* teacher (TAS-B: ColBERT) that scores any
(query, passage) pair of the batch on the fly (:mod:`kd_pyserini.train.in_batch_teacher`).

**With an in-batch teacher** ``T`` (``teacher_scores``: ``(B, P)``, ``T`` of triple ``i``'s query against every
unique batch passage) the term is exactly the paper's, as matchmaker computes it (``matchmaker/train.py``,
``in_batch_negatives`` with ``dynamic_teacher_in_batch_scoring``)::

    ib = 0.5 * ( mean_{(i,j) in J_p} ((s(q_i,p_i) - s(q_i,p_j)) - (T(q_i,p_i) - T(q_i,p_j))) ** 2
               + mean_{(i,j) in J_n} ((s(q_i,p_i) - s(q_i,n_j)) - (T(q_i,p_i) - T(q_i,n_j))) ** 2 )

Both margins are the in-batch teacher's, ``T(q_i, p_i)`` included (the pairwise term keeps the teacher file's
scores). matchmaker takes every ``j != i`` (all query texts in its batches are distinct). Here batches can hold the
same query text twice (random sampling of a teacher file with several pairs per query), so "``j != i``" is made
precise as: ``J_p`` = the pairs ``(i, j)`` where triple ``j`` has another query text than triple ``i`` and ``p_j``
is not a positive of ``q_i``'s query text anywhere in the batch (a known positive is not a negative; this also drops
``p_j == p_i``, whose margin is 0 by construction); ``J_n`` likewise with ``n_j``. A passage equal to ``q_i``'s own
negative stays (it is a negative, scored by the in-batch teacher). Without duplicates ``J_p = J_n = {j != i}`` and the
formula is matchmaker's. An empty ``J_p`` or ``J_n`` (e.g. a batch of one query) contributes 0.

**Without an in-batch teacher** teacher files have no scores for cross pairs, and this loss falls back to a
*one-sided approximation*: it assumes a passage from another query's triple is at most as relevant to ``q_i`` as
``q_i``'s own (hard, BM25-mined) negative, ``t(q_i, p_j) <= t(q_i, p_i-)``; the target margin is then at least the
pairwise one, and only a student margin *smaller* than ``t(q_i, p_i+) - t(q_i, p_i-)`` is penalised::

    L_inb = mean_{i, j in N(i)} relu( (t_i+ - t_i-) - (s(q_i, p_i+) - s(q_i, p_j)) ) ** 2

over the unique batch passages ``N(i)`` (:func:`in_batch_negative_mask`: not ``q_i``'s own passages, nor a positive
of the same query text elsewhere in the batch). It is *not* the paper's term.

The total loss is ``margin_mse + weight * in_batch`` (``--in-batch-weight``; TAS-B: 0.75).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["InBatchMarginMSELoss", "in_batch_negative_mask", "in_batch_pair_masks", "in_batch_teacher_margin_mse"]


def _positives_of_query(q_index: torch.Tensor, pos_index: torch.Tensor, num_passages: int) -> torch.Tensor:
    """``(B, P)`` bool: passage ``c`` is the positive of some triple with triple ``i``'s query text."""
    b = q_index.shape[0]
    num_queries = int(q_index.max().item()) + 1 if b else 0
    pos_of_query = torch.zeros(num_queries, num_passages, dtype=torch.bool, device=q_index.device)
    pos_of_query[q_index, pos_index] = True
    return pos_of_query[q_index]


def in_batch_negative_mask(q_index: torch.Tensor, pos_index: torch.Tensor, neg_index: torch.Tensor,
                           num_passages: int) -> torch.Tensor:
    """``(B, P)`` bool: which unique batch passages count as in-batch negatives of triple ``i`` (the one-sided
    approximation without a teacher).

    Excluded: the triple's own positive and negative, and any passage that is the positive of *any* triple with the
    same query (queries and passages are de-duplicated, so equal texts share an index).
    """
    mask = ~_positives_of_query(q_index, pos_index, num_passages)
    rows = torch.arange(q_index.shape[0], device=q_index.device)
    mask[rows, pos_index] = False
    mask[rows, neg_index] = False
    return mask


def in_batch_pair_masks(q_index: torch.Tensor, pos_index: torch.Tensor, neg_index: torch.Tensor,
                        num_passages: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(J_p, J_n)``: ``(B, B)`` bool masks of the triple pairs ``(i, j)`` whose positive / negative enters the
    teacher in-batch term of triple ``i`` (see the module docstring): triple ``j`` has another query text, and its
    passage is not a positive of ``q_i``'s query text."""
    is_pos = _positives_of_query(q_index, pos_index, num_passages)  # (B, P)
    other_query = q_index.unsqueeze(1) != q_index.unsqueeze(0)  # (B, B); False on the diagonal
    return other_query & ~is_pos[:, pos_index], other_query & ~is_pos[:, neg_index]


def _masked_mean(err: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # where, not err * mask: a masked-out entry never leaks into the sum; clamp: an empty mask gives 0 (no host sync)
    return torch.where(mask, err, torch.zeros((), dtype=err.dtype, device=err.device)).sum() / mask.sum().clamp(min=1)


def in_batch_teacher_margin_mse(scores: torch.Tensor, teacher_scores: torch.Tensor, q_index: torch.Tensor,
                                pos_index: torch.Tensor, neg_index: torch.Tensor) -> torch.Tensor:
    """The exact TAS-B in-batch term (module docstring) from student ``scores`` and in-batch teacher
    ``teacher_scores``, both ``(B, P)``: row ``i`` = triple ``i``'s query against every unique batch passage."""
    scores = scores.float()
    teacher_scores = teacher_scores.float().to(scores.device)
    rows = torch.arange(scores.shape[0], device=scores.device)
    s_own = scores[rows, pos_index].unsqueeze(1)  # s(q_i, p_i)
    t_own = teacher_scores[rows, pos_index].unsqueeze(1)  # T(q_i, p_i)
    j_p, j_n = in_batch_pair_masks(q_index, pos_index, neg_index, scores.shape[1])
    # column j of scores[:, pos_index] is s(q_i, p_j); of scores[:, neg_index], s(q_i, n_j)
    err_p = ((s_own - scores[:, pos_index]) - (t_own - teacher_scores[:, pos_index])) ** 2
    err_n = ((s_own - scores[:, neg_index]) - (t_own - teacher_scores[:, neg_index])) ** 2
    return 0.5 * (_masked_mean(err_p, j_p) + _masked_mean(err_n, j_n))


class InBatchMarginMSELoss(nn.Module):
    """In-batch Margin-MSE term (TAS-B; see the module docstring for both forms).

    Args (forward):
        scores: ``(B, P)`` student scores of each triple's query against every unique batch passage.
        q_index, pos_index, neg_index: ``(B,)`` rows of the triple's query / positive / negative.
        teacher_margin: ``(B,)`` ``t(q_i, p_i+) - t(q_i, p_i-)`` from the teacher file (the one-sided approximation).
        teacher_scores: optional ``(B, P)`` in-batch teacher scores for every (query, batch passage) pair; when
            given the loss is the exact TAS-B term (:func:`in_batch_teacher_margin_mse`) and ``teacher_margin`` is
            not used.

    Returns 0 (with a gradient path) when no triple has an in-batch negative (e.g. a batch of one query).
    """

    def forward(self, scores: torch.Tensor, q_index: torch.Tensor, pos_index: torch.Tensor, neg_index: torch.Tensor,
                teacher_margin: torch.Tensor, teacher_scores: torch.Tensor | None = None) -> torch.Tensor:
        if teacher_scores is not None:
            return in_batch_teacher_margin_mse(scores, teacher_scores, q_index, pos_index, neg_index)
        scores = scores.float()
        rows = torch.arange(scores.shape[0], device=scores.device)
        mask = in_batch_negative_mask(q_index, pos_index, neg_index, scores.shape[1])
        student_margin = scores[rows, pos_index].unsqueeze(1) - scores  # (B, P)
        target = teacher_margin.float().to(scores.device).unsqueeze(1)
        err = torch.relu(target - student_margin) ** 2
        # clamp: a batch without in-batch negatives gives 0 (no host sync needed to check for it)
        return (err * mask).sum() / mask.sum().clamp(min=1)
