"""Teachers: the models that score (query, passage) pairs, for a teacher file (``kd-teacher score``) or in a batch
(the in-batch teacher of ``kd-train``).

A teacher is a re-ranker of any kind (built by :func:`kd_pyserini.encoding.rerankers.load_reranker`: a cross-encoder
reading the pair together, a ColBERT late-interaction or a PreTTR split model; the model family of Hofstätter et al.
2020, arXiv 2010.02666) or a bi-encoder (:class:`~kd_pyserini.encoding.TextEncoder`: query and passage vectors,
scored with the card's own similarity: dot product, or cosine for normalised cards such as all-MiniLM-L6-v2).
:class:`TeacherSpec` is what a teacher *is* (card and lengths, known without loading the weights, so a resumed run is
checked at once);
:func:`load_scorer` loads it. It lives with the models (``encoding/``) so that :mod:`kd_pyserini.teacher` and
:mod:`kd_pyserini.train` share it without importing each other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from kd_pyserini.cards import CrossEncoderCard, EncoderCard, resolve_any_card

__all__ = ["TeacherSpec", "teacher_spec", "PairScorer", "BiEncoderScorer", "load_scorer"]

log = logging.getLogger(__name__)


class PairScorer(Protocol):
    """Anything that scores pairs ``(queries[i], passages[j])`` given as index pairs."""

    def score_pairs(self, queries: Sequence[str], passages: Sequence[str], pairs: Sequence[tuple[int, int]],
                    on_batch: Callable[[int], None] | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher: its card and the lengths it scores with.

    For bi-encoders ``query_max_length`` / ``passage_max_length`` are the truncation lengths (the card's unless
    given); for cross-encoders ``max_length`` is the pair length (the card's unless given) and the two others, when
    set, also cut the query / passage before pairing.
    """

    card: EncoderCard | CrossEncoderCard
    query_max_length: int | None
    passage_max_length: int | None
    max_length: int | None

    @property
    def kind(self) -> str:
        return self.card.kind

    def key(self) -> dict[str, Any]:
        """What a resumed or sharded run must share with the first one (scores depend on all of it)."""
        if isinstance(self.card, EncoderCard):
            extra: dict[str, Any] = {"pooling": self.card.pooling, "similarity": self.card.similarity}
        elif isinstance(self.card, CrossEncoderCard):
            extra = {"family": self.card.family}
        else:  # ColBERT / PreTTR: what else decides their scores
            extra = {k: getattr(self.card, k) for k in ("query_mask_tokens", "compression_dim", "join_layer_idx")
                     if hasattr(self.card, k)}
        return {"kind": self.kind, "name": self.card.name, "model_id": str(self.card.model_id), **extra,
                "query_max_length": self.query_max_length, "passage_max_length": self.passage_max_length,
                "max_length": self.max_length}


def teacher_spec(name: str | EncoderCard | CrossEncoderCard, query_max_length: int | None = None,
                 passage_max_length: int | None = None, max_length: int | None = None) -> TeacherSpec:
    """Resolve a teacher name (card, hub id or folder, either kind) and its lengths."""
    card = resolve_any_card(name)
    if not isinstance(card, CrossEncoderCard):  # bi-encoders, ColBERT, PreTTR: query and passage cut apart
        if max_length is not None:
            log.warning("%s is a %s: --max-length (the pair length of cross-encoders) does not apply", card.name,
                        card.kind)
        return TeacherSpec(card, query_max_length or card.query_max_length,
                           passage_max_length or card.passage_max_length, None)
    return TeacherSpec(card, query_max_length, passage_max_length, max_length or card.max_length)


class BiEncoderScorer:
    """A bi-encoder teacher: each distinct query and passage encoded once, ``score = q . p`` (cosine for cards that
    normalise their vectors)."""

    def __init__(self, spec: TeacherSpec, device: str | None = None, precision: str = "fp32", batch_size: int = 32,
                 threads: int | None = None):
        from kd_pyserini.encoding import TextEncoder

        self.spec = spec
        self.encoder = TextEncoder(spec.card, device=device, precision=precision, batch_size=batch_size,
                                   threads=threads)

    def score_pairs(self, queries: Sequence[str], passages: Sequence[str], pairs: Sequence[tuple[int, int]],
                    on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        qv = self.encoder.embed(list(queries), self.spec.query_max_length)
        pv = self.encoder.embed(list(passages), self.spec.passage_max_length)
        idx = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        scores = np.einsum("ij,ij->i", qv[idx[:, 0]], pv[idx[:, 1]]).astype(np.float32)
        if on_batch is not None:
            on_batch(len(idx))
        return scores


class _CrossScorer:
    def __init__(self, encoder: Any):
        self.encoder = encoder

    def score_pairs(self, queries: Sequence[str], passages: Sequence[str], pairs: Sequence[tuple[int, int]],
                    on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        return self.encoder.score_pairs(queries, passages, pairs, progress=False, on_batch=on_batch)


def load_scorer(spec: TeacherSpec, device: str | None = None, precision: str = "fp32", batch_size: int = 32,
                threads: int | None = None) -> PairScorer:
    """Load the teacher's weights on ``device`` at ``precision`` (re-rankers of every kind through
    :func:`~kd_pyserini.encoding.rerankers.load_reranker`)."""
    if isinstance(spec.card, EncoderCard):
        return BiEncoderScorer(spec, device, precision, batch_size, threads)
    from kd_pyserini.encoding.rerankers import load_reranker

    return _CrossScorer(load_reranker(spec.card, device=device, precision=precision, batch_size=batch_size,
                                      max_length=spec.max_length, query_max_length=spec.query_max_length,
                                      passage_max_length=spec.passage_max_length, threads=threads))
