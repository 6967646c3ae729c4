"""Re-ranking a Pyserini hit list with a re-ranker of any kind (:func:`rerank_hits`).

The re-ranker is built by :func:`kd_pyserini.encoding.rerankers.load_reranker` from its card's kind (the model family of
Hofstätter et al. 2020, arXiv 2010.02666: BERT_CAT, ColBERT, PreTTR), or given loaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

__all__ = ["ScoredHit", "hit_text", "rerank_hits"]


class ScoredHit(NamedTuple):
    """One re-ranked hit: its docid, the cross-encoder's score, and the hit object it came from."""

    docid: str
    score: float
    hit: Any


def hit_text(hit: Any) -> str:
    """A hit's passage text: ``.raw`` (a stored JSON document's ``contents``, or ``title`` + ``text``; else the raw
    string), else ``.contents``.

    Raises:
        ValueError: the hit carries no text (a dense hit): pass ``texts={docid: passage}``.
    """
    raw = getattr(hit, "raw", None)
    if raw:
        try:
            doc = json.loads(raw)
        except (TypeError, ValueError):
            return str(raw)
        if isinstance(doc, dict):
            if isinstance(doc.get("contents"), str):
                return doc["contents"]
            if isinstance(doc.get("text"), str):
                return " ".join(x for x in (doc.get("title") or "", doc["text"]) if x)
        return str(raw)
    contents = getattr(hit, "contents", None)
    if contents:
        return str(contents)
    raise ValueError(f"hit {getattr(hit, 'docid', '?')!r} carries no text (.raw or .contents); pass "
                     "texts={docid: passage} (e.g. from kd_pyserini.corpus.load_texts)")


def rerank_hits(query: str, hits: Sequence[Any], reranker: Any, texts: Mapping[str, str] | None = None,
                depth: int | None = None) -> list[ScoredHit]:
    """Re-score a Pyserini hit list (anything with ``.docid``; text from ``texts`` or the hit's ``.raw`` /
    ``.contents``) with a re-ranker of any kind (a loaded one, or a card / name / folder built by
    :func:`kd_pyserini.encoding.rerankers.load_reranker`); the first ``depth`` hits are re-scored and returned best
    first (ties by docid, descending, as trec_eval orders them). A ColBERT/PreTTR re-ranker with a passage store reads
    the stored passage side of the hits' docids.
    """
    from kd_pyserini.encoding.rerankers import load_reranker

    encoder = reranker if hasattr(reranker, "score_pairs") else load_reranker(reranker)
    kept = list(hits)[:depth] if depth else list(hits)
    passages = [texts[str(h.docid)] if texts is not None and str(h.docid) in texts else hit_text(h) for h in kept]
    scores = encoder.score(query, passages, passage_ids=[str(h.docid) for h in kept])
    out = [ScoredHit(str(h.docid), float(s), h) for h, s in zip(kept, scores.tolist())]
    return sorted(out, key=lambda x: (x.score, x.docid), reverse=True)
