"""Re-ranking candidate lists with a cross-encoder (BERT_CAT): each (query, passage) pair read together, one logit.

The stage after any first stage: a top1000-style file or a run plus its corpus (:func:`~kd_pyserini.search.
read_candidates`), BM25 with the Lucene index's stored text (:func:`~kd_pyserini.search.bm25_candidates`), or a
dense / hybrid run made in the same process. Cross-encoders cost one forward pass per pair, so the default depth is
:data:`CROSS_ENCODER_DEPTH` (100) where a bi-encoder re-ranks :data:`BI_ENCODER_DEPTH` (1000). The model is any
re-ranker :func:`kd_pyserini.encoding.rerankers.load_reranker` builds (a
:class:`kd_pyserini.encoding.cross_encoder.CrossEncoder` for BERT_CAT; no Pyserini, no Java); all pairs of all queries
go through one ``score_pairs`` call (length-sorted). For a Pyserini hit list use
:func:`kd_pyserini.encoding.cross_encoder.rerank_hits`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kd_pyserini.candidates import Candidates
from kd_pyserini.search.topics import resolve_topics
from kd_pyserini.trec_io import Run, rank

__all__ = ["CROSS_ENCODER_DEPTH", "BI_ENCODER_DEPTH", "default_depth", "cross_rerank"]

CROSS_ENCODER_DEPTH = 100
BI_ENCODER_DEPTH = 1000


def default_depth(kind: str) -> int:
    """The re-ranking depth when none is given: 100 for a ``cross-encoder``, 1000 for a ``bi-encoder`` (BERT_Dot)."""
    return CROSS_ENCODER_DEPTH if kind == "cross-encoder" else BI_ENCODER_DEPTH


def cross_rerank(candidates: Candidates | Run, texts: Mapping[str, str] | None, reranker: Any,
                 depth: int = CROSS_ENCODER_DEPTH, hits: int | None = None, *, topics: Any = None,
                 batch_size: int = 32, device: str | None = None, precision: str = "fp32",
                 max_length: int | None = None, progress: bool | None = None) -> Run:
    """Re-score each query's top ``depth`` candidates with a cross-encoder.

    Args:
        candidates: :class:`~kd_pyserini.candidates.Candidates` (their texts and queries are used) or a run
            ``{qid: {docid: score}}`` (first-stage order = its trec_eval order).
        texts: ``{docid: passage}`` (``None``: the candidates' own).
        reranker: a loaded re-ranker (anything with ``score_pairs``, e.g. a
            :class:`~kd_pyserini.encoding.cross_encoder.CrossEncoder`), or a re-ranker card name / hub id / folder
            (built by :func:`~kd_pyserini.encoding.rerankers.load_reranker`, by its card's kind).
        depth: candidates re-scored per query; the rest are dropped (as :func:`kd_pyserini.search.rerank` does).
        hits: documents kept per query in the output (default: ``depth``).
        topics: queries (name, file, dict); needed unless the candidates carry their queries.
        batch_size / device / precision / max_length: for loading ``reranker`` by name.
        progress: a bar of pairs scored on stderr (``None``: when stderr is a terminal).

    Returns:
        The re-ranked run (queries that have both a query text and candidates).

    Raises:
        ValueError: a candidate without text.
    """
    if isinstance(candidates, Candidates):
        run, queries = candidates.run, dict(candidates.queries)
        texts = candidates.texts if texts is None else texts
    else:
        run, queries = candidates, {}
    if texts is None:
        raise ValueError("cross_rerank needs passage texts ({docid: passage}, or Candidates with texts)")
    if topics is not None:
        queries.update(resolve_topics(topics).queries)
    lists = {q: [d for d, _ in rank(docs, depth)] for q, docs in run.items() if q in queries and docs}
    missing = {d for ds in lists.values() for d in ds if d not in texts}
    if missing:
        raise ValueError(f"no passage text for {len(missing)} candidates (e.g. {sorted(missing)[0]!r}); give the "
                         "corpus the first stage ranked")
    if hasattr(reranker, "score_pairs"):
        encoder = reranker
    else:
        from kd_pyserini.encoding.rerankers import load_reranker

        encoder = load_reranker(reranker, device=device, precision=precision, batch_size=batch_size,
                                max_length=max_length)
    qids = list(lists)
    pids = list(dict.fromkeys(d for ds in lists.values() for d in ds))
    where = {d: j for j, d in enumerate(pids)}
    pairs = [(i, where[d]) for i, q in enumerate(qids) for d in lists[q]]
    scores = encoder.score_pairs([queries[q] for q in qids], [texts[d] for d in pids], pairs, progress=progress)
    out: Run = {}
    at = 0
    for q in qids:
        ds = lists[q]
        out[q] = dict(rank({d: float(s) for d, s in zip(ds, scores[at:at + len(ds)].tolist())}, hits or depth))
        at += len(ds)
    return out
