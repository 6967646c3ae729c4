"""BM25 over a Lucene index (``kd-index bm25`` or Pyserini's), through Pyserini's ``LuceneSearcher``.

Pyserini (and so the JVM) is imported only when a :class:`Bm25Searcher` is opened. :class:`Bm25Searcher` holds the
Lucene index open for per-query serving and batches; :func:`search_bm25` is the one-call form and
:func:`bm25_candidates` BM25's top hits with their stored passage text, for re-ranking.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kd_pyserini.candidates import Candidates
from kd_pyserini.index import raw_contents
from kd_pyserini.progress import progress_bar
from kd_pyserini.search.topics import resolve_topics
from kd_pyserini.trec_io import Run

__all__ = ["BM25_DEFAULT", "BM25_MSMARCO", "BATCH_CHUNK", "Bm25Searcher", "search_bm25", "bm25_candidates"]

BM25_DEFAULT = (0.9, 0.4)
"""Anserini's default BM25 parameters (k1, b), used for BEIR and by Pyserini's ``--bm25``."""
BM25_MSMARCO = (0.82, 0.68)
"""BM25 parameters tuned for MS MARCO passage (Anserini's "tuned" condition, k1=0.82, b=0.68)."""
BATCH_CHUNK = 256  # queries per LuceneSearcher.batch_search call in search_batch (the progress bar's step)


class Bm25Searcher:
    """A Lucene index held open with BM25 scoring (Anserini's analyzer and scoring, via Pyserini).

    Args:
        index_dir: a Lucene index (``kd-index bm25`` or Pyserini's).
        k1 / b: BM25 parameters: 0.9 / 0.4 is Anserini's default (BEIR); 0.82 / 0.68 is tuned for MS MARCO passage.
        threads: search threads for :meth:`search_batch`.

    Raises:
        FileNotFoundError: ``index_dir`` is not a Lucene index folder.
    """

    def __init__(self, index_dir: str | os.PathLike, *, k1: float = BM25_DEFAULT[0], b: float = BM25_DEFAULT[1],
                 threads: int = 1):
        d = Path(index_dir)
        if not d.is_dir() or not any(d.glob("segments_*")):
            raise FileNotFoundError(f"{d} is not a Lucene index folder; build one with 'kd-index bm25'")
        from pyserini.search.lucene import LuceneSearcher

        self.index_dir = d
        self.k1, self.b, self.threads = float(k1), float(b), max(1, int(threads))
        self.lucene = LuceneSearcher(str(d))
        self.lucene.set_bm25(self.k1, self.b)

    def search(self, query: str, hits: int = 1000) -> list[tuple[str, float]]:
        """One query: ``[(docid, score)...]``, best first (a docid indexed twice counts once)."""
        out: dict[str, float] = {}
        for h in self.lucene.search(query, k=int(hits)):
            out.setdefault(h.docid, float(h.score))
        return list(out.items())

    def search_batch(self, topics: Any, hits: int, progress: bool | None = None,
                     remove_query: bool = False) -> Run:
        """Search every topic (``LuceneSearcher.batch_search`` over ``threads``): ``{qid: {docid: score}}``.

        Args:
            topics: a topic-set name, a ``qid<TAB>query`` file, ``{qid: query}`` or :class:`Topics`.
            hits: documents per query.
            progress: a bar of queries searched on stderr (``None``: when stderr is a terminal).
            remove_query: drop a hit whose docid equals the query id (Pyserini's ``--remove-query``, for BEIR sets
                such as ArguAna where queries are documents).
        """
        t = resolve_topics(topics)
        qids = list(t.queries)
        run: Run = {}
        with progress_bar(total=len(qids), desc="bm25 search", unit="query", progress=progress) as bar:
            for s in range(0, len(qids), BATCH_CHUNK):
                chunk = qids[s:s + BATCH_CHUNK]
                results = self.lucene.batch_search([t.queries[q] for q in chunk], chunk, k=int(hits),
                                                   threads=self.threads)
                for qid in chunk:
                    docs: dict[str, float] = {}
                    for h in results.get(qid, []):
                        if remove_query and h.docid == qid:
                            continue
                        docs.setdefault(h.docid, float(h.score))
                    run[qid] = docs
                bar.update(len(chunk))
        return run

    def passage(self, docid: str) -> str | None:
        """The passage text of ``docid`` from the index's stored raw document (``None`` when none is stored)."""
        doc = self.lucene.doc(docid)
        raw = doc.raw() if doc is not None else None
        return None if raw is None else raw_contents(raw)


def search_bm25(topics: Any, index_dir: str | os.PathLike, hits: int = 1000, *, k1: float = BM25_DEFAULT[0],
                b: float = BM25_DEFAULT[1], threads: int = 1, remove_query: bool = False,
                progress: bool | None = None) -> Run:
    """BM25 through Pyserini's ``LuceneSearcher.batch_search`` (a :class:`Bm25Searcher` opened for one batch).

    Args:
        topics: a topic-set name, a ``qid<TAB>query`` file, or ``{qid: query}``.
        index_dir: a Lucene index (``kd-index bm25`` or Pyserini's).
        hits: documents per query.
        k1 / b: BM25 parameters: 0.9 / 0.4 is Anserini's default (BEIR); 0.82 / 0.68 is tuned for MS MARCO passage.
        threads: search threads.
        remove_query: drop a hit whose docid equals the query id (Pyserini's ``--remove-query``).
        progress: a bar of queries searched on stderr.
    """
    t = resolve_topics(topics)
    return Bm25Searcher(index_dir, k1=k1, b=b, threads=threads).search_batch(t, hits, progress, remove_query)


def bm25_candidates(topics: Any, bm25_index: str | os.PathLike | Bm25Searcher, depth: int = 1000, *,
                    k1: float = BM25_DEFAULT[0], b: float = BM25_DEFAULT[1], threads: int = 1,
                    progress: bool | None = None) -> Candidates:
    """BM25's top ``depth`` with passage text read from the Lucene index's stored raw documents.

    ``bm25_index`` is an index folder or an open :class:`Bm25Searcher` (then ``k1``, ``b`` and ``threads`` are its
    own).

    Raises:
        ValueError: the index stores no raw text for a candidate.
    """
    searcher = bm25_index if isinstance(bm25_index, Bm25Searcher) else Bm25Searcher(bm25_index, k1=k1, b=b,
                                                                                       threads=threads)
    run = searcher.search_batch(resolve_topics(topics), depth, progress)
    texts: dict[str, str] = {}
    for docs in run.values():
        for d in docs:
            if d not in texts:
                text = searcher.passage(d)
                if text is None:
                    raise ValueError(f"{searcher.index_dir} stores no raw text for {d!r}; rebuild it with "
                                     "'kd-index bm25' (-storeRaw), or give --candidates with --corpus")
                texts[d] = text
    return Candidates(run, texts, {}, {"bm25_index": str(searcher.index_dir.resolve()), "k1": searcher.k1,
                                       "b": searcher.b, "depth": depth})
