"""Re-ranking candidate lists with a bi-encoder: ``score = q . p`` over each query's first-stage candidates.

Candidates come from a top1000-style file or a run plus its corpus (:func:`read_candidates`), or from BM25 with the
Lucene index's stored text (:func:`kd_pyserini.search.bm25_candidates`). The encoder is a
:class:`kd_pyserini.encoding.TextEncoder` (no Pyserini, no Java).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kd_pyserini.candidates import Candidates, is_top1000, read_top1000
from kd_pyserini.progress import progress_bar
from kd_pyserini.search.dense import check_max_length, resolve_query_encoding
from kd_pyserini.search.topics import resolve_topics
from kd_pyserini.trec_io import Run, rank, read_run

__all__ = ["Candidates", "read_candidates", "rerank", "PASSAGE_CHUNK"]

PASSAGE_CHUNK = 4096  # passages encoded per step (the progress bar's step)


def _cut(run: Run, depth: int | None) -> Run:
    return {q: dict(rank(docs, depth)) for q, docs in run.items()}


def read_candidates(path: str | os.PathLike, corpus: str | os.PathLike | None = None,
                    depth: int | None = None) -> Candidates:
    """Read candidates: an MS MARCO top1000-style ``qid<TAB>pid<TAB>query<TAB>passage`` file (text inline, in rank
    order; :func:`kd_pyserini.candidates.read_top1000`), or a TREC/MS MARCO run whose passage text comes from
    ``corpus``.

    Raises:
        FormatError: a malformed line (file:line).
        ValueError: a run without ``corpus``, or candidates missing from the corpus.
    """
    p = Path(path)
    if is_top1000(p):
        return read_top1000(p).candidates(depth)
    if corpus is None:
        raise ValueError(f"{p} is a run without passage text: give --corpus (the collection the run ranks), or "
                         "use an MS MARCO top1000-style qid<TAB>pid<TAB>query<TAB>passage file")
    from kd_pyserini.corpus import load_texts

    run = _cut(read_run(p), depth)
    need = {d for docs in run.values() for d in docs}
    texts = load_texts(corpus, need)
    missing = need - texts.keys()
    if missing:
        raise ValueError(f"{len(missing)} candidate docids are not in {corpus} (e.g. {sorted(missing)[0]!r}); give "
                         "the corpus the run was made from")
    return Candidates(run, texts, {}, {"path": str(p.resolve()), "format": "run",
                                       "corpus": str(Path(corpus).resolve())})


def rerank(topics: Any, encoder: Any, candidates: Candidates | Run, texts: Mapping[str, str] | None = None,
           depth: int = 1000, hits: int | None = None, *, batch_size: int = 32, device: str | None = None,
           precision: str = "fp32", query_max_length: int | None = None, passage_max_length: int | None = None,
           progress: bool | None = None) -> Run:
    """Re-score each query's top ``depth`` candidates by the encoder: ``score = q . p`` (cosine for cosine cards,
    whose vectors are unit length). Each distinct passage is encoded once.

    Args:
        topics: the queries to re-rank (name, file or dict): only these are answered, with their text; ``None`` to
            re-rank every query a top1000-style candidates file carries, with the file's text.
        encoder: card name / hub id / folder, or a loaded TextEncoder (or Pyserini KDQueryEncoder).
        candidates: :class:`Candidates` (from :func:`read_candidates` / :func:`bm25_candidates`) or a run, with
            ``texts`` ``{docid: passage}``.
        depth: candidates re-scored per query (in the first stage's order); the rest are dropped.
        hits: documents kept per query in the output (default: ``depth``).
        query_max_length / passage_max_length: truncation (default: the card's).
        progress: a bar of passages encoded on stderr (``None``: when stderr is a terminal).

    Returns:
        The re-ranked run (only the queries that have both a query text and candidates).
    """
    if isinstance(candidates, Candidates):
        texts = candidates.texts if texts is None else texts
        queries = dict(candidates.queries)
        run = candidates.run
    else:
        queries = {}
        run = candidates
    if texts is None:
        raise ValueError("rerank needs passage texts")
    if topics is not None:  # the topics asked for, and only these (not every query the candidates file carries)
        queries = dict(resolve_topics(topics).queries)
    qe = resolve_query_encoding(encoder, device=device, precision=precision, batch_size=batch_size,
                                query_max_length=query_max_length)
    p_len = passage_max_length or qe.card.passage_max_length
    check_max_length(qe.encoder, p_len, "passage")
    lists = {q: [d for d, _ in rank(docs, depth)] for q, docs in run.items() if q in queries and docs}
    missing = {d for ds in lists.values() for d in ds if d not in texts}
    if missing:
        raise ValueError(f"no passage text for {len(missing)} candidates (e.g. {sorted(missing)[0]!r})")
    pids = list(dict.fromkeys(d for ds in lists.values() for d in ds))
    pos = {d: i for i, d in enumerate(pids)}
    qids = list(lists)
    qv = qe.many([queries[q] for q in qids])
    pv = np.empty((len(pids), qe.dimension), dtype=np.float32)
    with progress_bar(total=len(pids), desc="rerank", unit="passage", progress=progress) as bar:
        for s in range(0, len(pids), PASSAGE_CHUNK):
            chunk = pids[s:s + PASSAGE_CHUNK]
            pv[s:s + len(chunk)] = qe.encoder.embed([texts[d] for d in chunk], p_len, batch_size)
            bar.update(len(chunk))
    out: Run = {}
    for qid, vec in zip(qids, qv):
        ds = lists[qid]
        scores = pv[[pos[d] for d in ds]] @ vec
        out[qid] = dict(rank({d: float(s) for d, s in zip(ds, scores.tolist())}, hits or depth))
    return out
