"""Re-ranking candidate lists with a re-ranker of any kind: BERT_CAT (each pair read together), ColBERT, PreTTR.

The stage after any first stage: a top1000-style file or a run plus its corpus (:func:`~kd_pyserini.search.
read_candidates`), BM25 with the Lucene index's stored text (:func:`~kd_pyserini.search.bm25_candidates`), or a
dense / hybrid run made in the same process. A cross-encoder costs one forward pass per pair, so its default depth is
:data:`CROSS_ENCODER_DEPTH` (100) where a bi-encoder re-ranks :data:`BI_ENCODER_DEPTH` (1000); ColBERT
(``late-interaction``) and PreTTR (``split``) also default to 100 (:data:`DEFAULT_DEPTHS`): without a passage store
each candidate costs a passage encoder pass (PreTTR: its lower layers, then the joint upper layers per pair), the same
order as BERT_CAT; with a store (``kd-search --passage-store``) a deeper ``--depth`` is cheap. The model is any
re-ranker :func:`kd_pyserini.encoding.rerankers.load_reranker` builds (no Pyserini, no Java); all pairs of all queries
go through one ``score_pairs`` call (length-sorted), with the candidates' ids so that a re-ranker with a passage store
reads their passage side from it. For a Pyserini hit list use :func:`kd_pyserini.encoding.hits.rerank_hits`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kd_pyserini.candidates import Candidates
from kd_pyserini.search.topics import resolve_topics
from kd_pyserini.trec_io import Run, rank

__all__ = ["CROSS_ENCODER_DEPTH", "BI_ENCODER_DEPTH", "DEFAULT_DEPTHS", "default_depth", "cross_rerank"]

CROSS_ENCODER_DEPTH = 100
BI_ENCODER_DEPTH = 1000
#: the re-ranking depth when none is given, by card kind (``bi-encoder``: BERT_Dot; the rest: re-ranker kinds).
DEFAULT_DEPTHS = {"bi-encoder": BI_ENCODER_DEPTH, "cross-encoder": CROSS_ENCODER_DEPTH,
                  "late-interaction": CROSS_ENCODER_DEPTH, "split": CROSS_ENCODER_DEPTH}


def default_depth(kind: str) -> int:
    """The re-ranking depth when none is given (:data:`DEFAULT_DEPTHS`): 1000 for a ``bi-encoder`` (BERT_Dot), 100
    for every re-ranker kind (``cross-encoder``, ``late-interaction``, ``split``; an unknown kind: 100)."""
    return DEFAULT_DEPTHS.get(kind, CROSS_ENCODER_DEPTH)


def cross_rerank(candidates: Candidates | Run, texts: Mapping[str, str] | None, reranker: Any,
                 depth: int = CROSS_ENCODER_DEPTH, hits: int | None = None, *, topics: Any = None,
                 batch_size: int = 32, device: str | None = None, precision: str = "fp32",
                 max_length: int | None = None, progress: bool | None = None) -> Run:
    """Re-score each query's top ``depth`` candidates with a re-ranker (any kind).

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
    scores = encoder.score_pairs([queries[q] for q in qids], [texts[d] for d in pids], pairs, progress=progress,
                                 passage_ids=pids)
    out: Run = {}
    at = 0
    for q in qids:
        ds = lists[q]
        out[q] = dict(rank({d: float(s) for d, s in zip(ds, scores[at:at + len(ds)].tolist())}, hits or depth))
        at += len(ds)
    return out
