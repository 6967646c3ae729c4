"""Training data for Margin-MSE distillation: one training example, its deterministic order, tokenised batches.

The data order is a pure function of ``(seed, epoch, rank, world_size)`` (:func:`epoch_order`), which is what lets
``--resume`` continue an interrupted run exactly. Teacher files are read by :mod:`kd_pyserini.train.teacher_files`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Triple", "Batch", "epoch_order", "num_batches", "Collator"]


@dataclass(frozen=True)
class Triple:
    """One training example: a query, a positive and a negative passage, and the teacher's two scores."""

    query: str
    pos: str
    neg: str
    pos_score: float
    neg_score: float

    @property
    def margin(self) -> float:
        """The teacher margin ``t(q, p+) - t(q, p-)`` that Margin-MSE makes the student reproduce."""
        return self.pos_score - self.neg_score


def epoch_order(n: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """The triple indices this rank reads in ``epoch``: a seeded permutation, cut to a multiple of ``world_size``
    (so every rank gets as many) and dealt round-robin (rank ``r`` gets positions ``r, r + W, ...``)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    usable = (n // world_size) * world_size
    return perm[:usable][rank::world_size]


def num_batches(n: int, batch_size: int, world_size: int = 1) -> int:
    """Batches per epoch per rank (the last one may be short)."""
    return math.ceil((n // world_size) / batch_size)


@dataclass
class Batch:
    """A tokenised batch. Queries and passages are de-duplicated: ``q_index[i]`` / ``pos_index[i]`` /
    ``neg_index[i]`` point triple ``i`` at rows of the query / passage vectors.

    Passages are sorted by token length and cut into ``len(p_ids)`` buckets, each padded to its own longest
    passage (rows are numbered across the buckets in order); queries form one bucket padded to the longest query.

    ``q_texts`` / ``p_texts`` are the unique query / passage texts in that same row order (``p_texts[pos_index[i]]``
    is triple ``i``'s positive), for an in-batch teacher that tokenises them its own way
    (:mod:`kd_pyserini.train.in_batch_teacher`). They are tuples, so :meth:`to` and :meth:`pin_memory` pass them on.
    """

    q_ids: Any
    q_mask: Any
    p_ids: list[Any]
    p_mask: list[Any]
    q_index: Any
    pos_index: Any
    neg_index: Any
    pos_scores: Any
    neg_scores: Any
    size: int
    q_texts: tuple[str, ...] = ()
    p_texts: tuple[str, ...] = ()

    def _map(self, fn) -> "Batch":
        out = {}
        for k, v in self.__dict__.items():
            if isinstance(v, list):
                out[k] = [fn(x) for x in v]
            elif hasattr(v, "to"):
                out[k] = fn(v)
            else:
                out[k] = v
        return Batch(**out)

    def to(self, device, non_blocking: bool = True) -> "Batch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        return self._map(lambda t: t.pin_memory())

    @property
    def teacher_margin(self):
        return self.pos_scores - self.neg_scores

    @property
    def padded_tokens(self) -> int:
        """Token positions the encoder processes (real + padding), for efficiency statistics."""
        return int(self.q_ids.numel()) + sum(int(x.numel()) for x in self.p_ids)


def _pad(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """``(input_ids, attention_mask)``: int64 tensors padded to the longest text (see ``encoding.pad_batch``)."""
    from kd_pyserini.encoding.pooling import pad_batch  # imports torch: on first batch, not with this module

    return pad_batch(ids, pad_id)


class Collator:
    """Tokenise a list of triples once: unique queries (max ``query_max_length``) and unique passages (max
    ``passage_max_length``), padded to the longest text, not to the maximum length.

    ``passage_buckets`` > 1 sorts the unique passages by length and pads each of that many groups separately: with
    MS MARCO's passage lengths (median 78, 99th percentile 191 word pieces) two buckets cut the padded passage tokens
    of a 32-triple batch by ~30%, four by ~40%.
    """

    def __init__(self, tokenizer: Any, query_max_length: int = 30, passage_max_length: int = 200,
                 passage_buckets: int = 1):
        self.tokenizer = tokenizer
        self.query_max_length = query_max_length
        self.passage_max_length = passage_max_length
        self.passage_buckets = max(1, passage_buckets)
        self.pad_id = tokenizer.pad_token_id or 0

    def _tok(self, texts: list[str], max_length: int) -> list[list[int]]:
        return self.tokenizer(texts, truncation=True, max_length=max_length, padding=False,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    def __call__(self, triples: Sequence[Triple]) -> Batch:
        import torch

        qpos: dict[str, int] = {}
        ppos: dict[str, int] = {}
        qi, pi, ni = [], [], []
        for t in triples:
            qi.append(qpos.setdefault(t.query, len(qpos)))
            pi.append(ppos.setdefault(t.pos, len(ppos)))
            ni.append(ppos.setdefault(t.neg, len(ppos)))
        q_texts = tuple(qpos)
        p_list = list(ppos)
        q_ids, q_mask = _pad(self._tok(list(q_texts), self.query_max_length), self.pad_id)
        p_tok = self._tok(p_list, self.passage_max_length)
        order = sorted(range(len(p_tok)), key=lambda i: len(p_tok[i]))  # stable: ties keep first-seen order
        rank = [0] * len(order)
        for r, i in enumerate(order):
            rank[i] = r
        k = min(self.passage_buckets, len(order))
        bounds = [round(j * len(order) / k) for j in range(k + 1)]
        p_ids, p_mask = [], []
        for a, b in zip(bounds, bounds[1:]):
            ids, mask = _pad([p_tok[i] for i in order[a:b]], self.pad_id)
            p_ids.append(ids)
            p_mask.append(mask)
        return Batch(q_ids=q_ids, q_mask=q_mask, p_ids=p_ids, p_mask=p_mask,
                     q_index=torch.tensor(qi, dtype=torch.long),
                     pos_index=torch.tensor([rank[i] for i in pi], dtype=torch.long),
                     neg_index=torch.tensor([rank[i] for i in ni], dtype=torch.long),
                     pos_scores=torch.tensor([t.pos_score for t in triples], dtype=torch.float32),
                     neg_scores=torch.tensor([t.neg_score for t in triples], dtype=torch.float32),
                     size=len(triples), q_texts=q_texts, p_texts=tuple(p_list[i] for i in order))
