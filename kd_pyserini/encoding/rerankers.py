"""One place that builds a re-ranker from its card's kind: a dispatch table ``kind -> constructor``.

Every re-ranker, whatever its architecture, answers the same small interface (the one
:class:`~kd_pyserini.encoding.cross_encoder.CrossEncoder` defines): ``score(query, passages, passage_ids=None) ->
np.ndarray``, ``score_pairs(queries, passages, pairs=None, progress=False, on_batch=None, passage_ids=None) ->
np.ndarray`` (float32, one score per pair) and ``describe() -> dict``; ``passage_ids`` lets a re-ranker with a passage
store read the stored passage side (a cross-encoder ignores them). The search
pipeline, ``kd-teacher`` and the in-batch teacher ask :func:`load_reranker`, never a model name.

The kinds (:data:`kd_pyserini.cards.RERANKER_CARD_KINDS`) of the model family of Hofstätter et al. 2020 (arXiv
2010.02666): ``cross-encoder`` (BERT_CAT, :mod:`~kd_pyserini.encoding.cross_encoder`), ``late-interaction`` (ColBERT,
Khattab & Zaharia 2020, :mod:`~kd_pyserini.encoding.colbert`) and ``split`` (PreTTR, MacAvaney et al. 2020,
:mod:`~kd_pyserini.encoding.prettr`). The last two also take ``store=`` (a passage store of their passage side,
:mod:`kd_pyserini.index.passage_store`) and answer ``score(query, passages, passage_ids=...)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["RERANKER_KINDS", "load_reranker"]


def _cross_encoder(card: Any, **options: Any) -> Any:
    from kd_pyserini.encoding.cross_encoder import CrossEncoder

    return CrossEncoder(card, **options)


def _colbert(card: Any, **options: Any) -> Any:
    from kd_pyserini.encoding.colbert import ColBERTReranker

    return ColBERTReranker(card, **options)


def _prettr(card: Any, **options: Any) -> Any:
    from kd_pyserini.encoding.prettr import PreTTRReranker

    return PreTTRReranker(card, **options)


#: ``card kind -> constructor(card, **options)``; a new architecture registers its kind here (and in
#: :data:`kd_pyserini.cards.RERANKER_CARD_KINDS`).
RERANKER_KINDS: dict[str, Callable[..., Any]] = {
    "cross-encoder": _cross_encoder,
    "late-interaction": _colbert,
    "split": _prettr,
}


def load_reranker(card: Any, **options: Any) -> Any:
    """The re-ranker for ``card`` (a re-ranker card, its name, a hub id or a model folder), built by its kind.

    Args:
        card: what :func:`kd_pyserini.cards.get_reranker_card` resolves (or a card object with ``kind``).
        options: passed to the kind's constructor (``device``, ``precision``, ``batch_size``, lengths, ``threads``;
            ``store`` for ColBERT/PreTTR); options left at ``None`` are dropped, so callers can pass a cross-encoder's
            ``max_length=None`` to any kind.
    """
    from kd_pyserini.cards import get_reranker_card

    if isinstance(card, str):
        card = get_reranker_card(card)
    options = {k: v for k, v in options.items() if v is not None or k in ("device",)}
    kind = getattr(card, "kind", "cross-encoder")
    try:
        make = RERANKER_KINDS[kind]
    except KeyError:
        raise ValueError(f"no re-ranker for card kind {kind!r}; known kinds: {', '.join(RERANKER_KINDS)}") from None
    return make(card, **options)
