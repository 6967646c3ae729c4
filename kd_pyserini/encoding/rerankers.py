"""One place that builds a re-ranker from its card's kind: a dispatch table ``kind -> constructor``.

Every re-ranker, whatever its architecture, answers the same small interface (the one
:class:`~kd_pyserini.encoding.cross_encoder.CrossEncoder` defines): ``score(query, passages) -> np.ndarray``,
``score_pairs(queries, passages) -> np.ndarray`` (float32, one score per pair) and ``describe() -> dict``. The search
pipeline, ``kd-teacher`` and the in-batch teacher ask :func:`load_reranker`, never a model name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["RERANKER_KINDS", "load_reranker"]


def _cross_encoder(card: Any, **options: Any) -> Any:
    from kd_pyserini.encoding.cross_encoder import CrossEncoder

    return CrossEncoder(card, **options)


#: ``card kind -> constructor(card, **options)``; a new architecture registers its kind here.
RERANKER_KINDS: dict[str, Callable[..., Any]] = {
    "cross-encoder": _cross_encoder,
}


def load_reranker(card: Any, **options: Any) -> Any:
    """The re-ranker for ``card`` (a re-ranker card, its name, a hub id or a model folder), built by its kind.

    Args:
        card: what :func:`kd_pyserini.cards.get_cross_encoder_card` resolves (or a card object with ``kind``).
        options: passed to the kind's constructor (``device``, ``precision``, ``batch_size``, lengths, ``threads``).
    """
    from kd_pyserini.cards import get_cross_encoder_card

    if isinstance(card, str):
        card = get_cross_encoder_card(card)
    kind = getattr(card, "kind", "cross-encoder")
    try:
        make = RERANKER_KINDS[kind]
    except KeyError:
        raise ValueError(f"no re-ranker for card kind {kind!r}; known kinds: {', '.join(RERANKER_KINDS)}") from None
    return make(card, **options)
