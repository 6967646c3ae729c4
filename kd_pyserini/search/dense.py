"""Dense retrieval over a FAISS index folder (``kd-index dense`` or Pyserini's), without Pyserini or Java.

Queries are encoded by :class:`kd_pyserini.encoding.TextEncoder` and the FAISS index is searched directly, so
dense-only work never starts the JVM. :class:`DenseSearcher` holds the encoder and the index open, for per-query
serving (:meth:`~DenseSearcher.search`, the single-text fast path) and for batches
(:meth:`~DenseSearcher.search_batch`); :func:`search_dense` is the one-call form.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kd_pyserini.cards import EncoderCard, get_card
from kd_pyserini.errors import UsageError
from kd_pyserini.index import IncompatibleIndexError, check_index_compatible, load_docids
from kd_pyserini.index.faiss_factory import read_faiss_index
from kd_pyserini.progress import progress_bar
from kd_pyserini.search.topics import resolve_topics
from kd_pyserini.trec_io import Run

__all__ = ["FAISS_QUERY_BLOCK", "QUERY_CHUNK", "QueryEncoding", "resolve_query_encoding", "load_dense_index",
           "faiss_search", "DenseSearcher", "search_dense", "position_limit", "check_max_length"]

FAISS_QUERY_BLOCK = 4096  # faiss's own query block for exhaustive search: larger blocks give identical results
QUERY_CHUNK = 1024  # queries encoded and searched per step of search_batch (the progress bar's step)


_ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text")


def position_limit(encoder: Any) -> int | None:
    """The most tokens (special tokens included) the encoder's model has positions for, from its config
    (``max_position_embeddings``; RoBERTa-style models lose ``pad_token_id + 1`` of them), or ``None`` if unknown."""
    config = getattr(getattr(encoder, "model", None), "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0:
        return None
    if getattr(config, "model_type", None) in _ROBERTA_LIKE:
        limit -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    return limit


def check_max_length(encoder: Any, max_length: int | None, kind: str = "query") -> None:
    """Refuse a truncation length above the model's position limit (:func:`position_limit`), before any encoding.

    Args:
        encoder: the :class:`~kd_pyserini.encoding.TextEncoder` (anything without a model config is not checked).
        max_length: the truncation in tokens (``None``: the card's, not checked).
        kind: ``"query"`` or ``"passage"`` (names the option in the message).

    Raises:
        UsageError: ``max_length`` is above the limit (one line naming the limit and the option).
    """
    limit = position_limit(encoder)
    if max_length is None or limit is None or int(max_length) <= limit:
        return
    card = getattr(encoder, "card", None)
    name = getattr(card, "name", None) or "the encoder"
    raise UsageError(f"{kind} max length {max_length} (--{kind}-max-length) is above the position limit of "
                     f"'{name}': its model has positions for {limit} tokens (max_position_embeddings in its "
                     f"config.json); give --{kind}-max-length {limit} or less")


class QueryEncoding:
    """How queries become vectors: a :class:`~kd_pyserini.encoding.TextEncoder`, the query truncation and an
    optional prefix (from a Pyserini ``KDQueryEncoder`` given instead of a name)."""

    def __init__(self, encoder: Any, max_length: int, prefix: str | None = None, batch_size: int | None = None):
        check_max_length(encoder, max_length, "query")
        self.encoder = encoder
        self.max_length = int(max_length)
        self.prefix = prefix
        self.batch_size = batch_size

    @property
    def card(self) -> EncoderCard:
        return self.encoder.card

    @property
    def dimension(self) -> int:
        return int(self.encoder.dimension)

    def _prep(self, text: str) -> str:
        return f"{self.prefix} {text}" if self.prefix else text

    def one(self, query: str) -> np.ndarray:
        """``(1, dim)`` float32, by the single-text fast path (:meth:`TextEncoder.embed_one`)."""
        vec = self.encoder.embed_one(self._prep(query), self.max_length)
        return np.ascontiguousarray(np.asarray(vec, dtype=np.float32).reshape(1, -1))

    def many(self, queries: Sequence[str]) -> np.ndarray:
        """``(n, dim)`` float32, batched (:meth:`TextEncoder.embed`)."""
        vecs = self.encoder.embed([self._prep(q) for q in queries], self.max_length, self.batch_size)
        return np.ascontiguousarray(vecs, dtype=np.float32)


def resolve_query_encoding(encoder: Any, *, device: str | None = None, precision: str = "fp32",
                           batch_size: int = 32, query_max_length: int | None = None) -> QueryEncoding:
    """A :class:`QueryEncoding` from a card name / hub id / model folder / :class:`EncoderCard`, a loaded
    :class:`~kd_pyserini.encoding.TextEncoder`, or a Pyserini ``KDQueryEncoder`` / ``KDDocumentEncoder`` (whose
    TextEncoder is used directly; a KDQueryEncoder's ``max_length`` and ``prefix`` are kept).

    Never imports Pyserini: a Pyserini adapter can only be given if :mod:`kd_pyserini.encoders` is already loaded.
    """
    from kd_pyserini.encoding import TextEncoder

    if isinstance(encoder, QueryEncoding):
        if query_max_length and query_max_length != encoder.max_length:
            return QueryEncoding(encoder.encoder, query_max_length, encoder.prefix, encoder.batch_size)
        return encoder
    adapters = sys.modules.get("kd_pyserini.encoders")
    if adapters is not None and isinstance(encoder, adapters.KDQueryEncoder):
        return QueryEncoding(encoder.encoder, query_max_length or encoder.max_length, encoder.prefix, batch_size)
    if adapters is not None and isinstance(encoder, adapters.KDDocumentEncoder):
        encoder = encoder.encoder
    if isinstance(encoder, TextEncoder):
        return QueryEncoding(encoder, query_max_length or encoder.card.query_max_length, None, batch_size)
    card = get_card(str(encoder) if isinstance(encoder, os.PathLike) else encoder)
    te = TextEncoder(card, device=device, precision=precision, batch_size=batch_size)
    return QueryEncoding(te, query_max_length or card.query_max_length, None, batch_size)


def load_dense_index(index_dir: str | os.PathLike, ef_search: int | None = None, nprobe: int | None = None):
    """``(faiss_index, docids)`` of a dense index folder, as Pyserini's ``FaissSearcher.load_index`` reads them."""
    import faiss

    d = Path(index_dir)
    if not (d / "index").is_file() or not (d / "docid").is_file():
        raise FileNotFoundError(f"{d} is not a dense index folder (it needs 'index' and 'docid'); build one with "
                                "'kd-index dense'")
    index = read_faiss_index(d)  # a truncated or corrupt file: CorruptIndexError, one line
    docids = load_docids(d)
    if index.ntotal != len(docids):
        raise ValueError(f"{d}: {index.ntotal} vectors but {len(docids)} ids in 'docid'")
    ps = faiss.ParameterSpace()
    if ef_search is not None:
        ps.set_index_parameter(index, "efSearch", int(ef_search))
    if nprobe is not None:
        ps.set_index_parameter(index, "nprobe", int(nprobe))
    return index, docids


def _search_lists(index, docids: Sequence[str], q: np.ndarray, k: int,
                  unique_ids: bool = False) -> list[list[tuple[str, float]]]:
    """One ``[(docid, score)...]`` per row of ``q``, best first (a docid stored twice counts once; ``unique_ids``:
    the caller knows no docid is stored twice, so the per-query de-duplication is skipped)."""
    out: list[list[tuple[str, float]]] = []
    k = min(int(k), index.ntotal)
    if k <= 0:
        return [[] for _ in range(len(q))]
    for s in range(0, len(q), FAISS_QUERY_BLOCK):
        D, I = index.search(q[s:s + FAISS_QUERY_BLOCK], k)
        for dist, idx in zip(D.tolist(), I.tolist()):  # one conversion per block, not per row
            if unique_ids:
                out.append([(docids[i], score) for score, i in zip(dist, idx) if i != -1])
                continue
            seen: set[str] = set()
            hits: list[tuple[str, float]] = []
            for score, i in zip(dist, idx):
                if i != -1 and docids[i] not in seen:
                    seen.add(docids[i])
                    hits.append((docids[i], score))
            out.append(hits)
    return out


def faiss_search(index, docids: Sequence[str], qids: Sequence[str], q: np.ndarray, k: int,
                 unique_ids: bool = False) -> Run:
    """Search ``index`` with the query vectors ``q`` (one row per qid): ``{qid: {docid: score}}``, ``k`` per query
    (``unique_ids``: see :func:`_search_lists`)."""
    return {qid: dict(hits) for qid, hits in zip(qids, _search_lists(index, docids, q, k, unique_ids))}


class DenseSearcher:
    """A query encoder and a FAISS index held open, for per-query serving and batch search.

    Args:
        index_dir: a folder from ``kd-index dense`` (or any Pyserini FAISS index folder).
        encoder: card name, hub id, model folder, :class:`EncoderCard`, or a loaded
            :class:`~kd_pyserini.encoding.TextEncoder` (or Pyserini ``KDQueryEncoder``).
        device / precision / batch_size: query encoding settings (when the encoder is loaded here).
        threads: FAISS OpenMP threads (process-wide; default: FAISS's).
        query_max_length: query truncation (default: the card's, or the given KDQueryEncoder's).
        ef_search / nprobe: HNSW / IVF search settings (default: those saved in the index).
        rescore: re-score each query's top ``rescore`` exactly from the index's ``vectors.npy`` (an ``ivfpq``
            index built with ``keep_vectors``; :class:`kd_pyserini.index.rescore.RescoringIndex`); ``None``: off.
        check: check the index against the encoder (:func:`kd_pyserini.index.check_index_compatible`); ``False``
            skips every check but the FAISS dimension.
        allow_encoder_mismatch: search an index built with another encoder anyway, with a warning
            (``kd-search --allow-encoder-mismatch``); a different dimension or similarity is still refused.

    Raises:
        IncompatibleIndexError: the index was built with a different encoder or dimension.
        CorruptIndexError: the ``index`` file is truncated or corrupt.
        FileNotFoundError: ``index_dir`` is not a dense index folder.
    """

    def __init__(self, index_dir: str | os.PathLike, encoder: Any, *, device: str | None = None,
                 precision: str = "fp32", batch_size: int = 32, threads: int | None = None,
                 query_max_length: int | None = None, ef_search: int | None = None, nprobe: int | None = None,
                 check: bool = True, allow_encoder_mismatch: bool = False, rescore: int | None = None):
        import faiss

        self.index_dir = Path(index_dir)
        self.query = resolve_query_encoding(encoder, device=device, precision=precision, batch_size=batch_size,
                                            query_max_length=query_max_length)
        if check:
            check_index_compatible(index_dir, self.query.card, self.query.dimension,
                                   allow_encoder_mismatch=allow_encoder_mismatch)
        self.index, self.docids = load_dense_index(index_dir, ef_search, nprobe)
        #: no docid stored twice (checked once here), so results need no per-query de-duplication
        self.unique_ids = len(set(self.docids)) == len(self.docids)
        if rescore:
            from kd_pyserini.index.rescore import RescoringIndex

            self.index = RescoringIndex(self.index, index_dir, rescore)
        if self.index.d != self.query.dimension:
            raise IncompatibleIndexError(f"index {index_dir} holds {self.index.d}-dimensional vectors but encoder "
                                         f"'{self.card.name}' makes {self.query.dimension}-dimensional ones")
        if threads:
            faiss.omp_set_num_threads(int(threads))

    @property
    def encoder(self):
        """The :class:`~kd_pyserini.encoding.TextEncoder` encoding the queries."""
        return self.query.encoder

    @property
    def card(self) -> EncoderCard:
        return self.query.card

    @property
    def query_max_length(self) -> int:
        return self.query.max_length

    def encode(self, query: str) -> np.ndarray:
        """One query as a ``(1, dim)`` float32 array (the single-query fast path, ``TextEncoder.embed_one``)."""
        return self.query.one(query)

    def encode_batch(self, queries: Sequence[str]) -> np.ndarray:
        """Queries as an ``(n, dim)`` float32 array (batched, length-sorted)."""
        return self.query.many(queries)

    def search_vectors(self, vectors: np.ndarray, hits: int) -> list[list[tuple[str, float]]]:
        """Search with query vectors ``(n, dim)``: per row, ``[(docid, score)...]`` best first, ``hits`` long."""
        q = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, self.index.d))
        return _search_lists(self.index, self.docids, q, hits, self.unique_ids)

    def search(self, query: str, hits: int = 1000) -> list[tuple[str, float]]:
        """One query: ``[(docid, score)...]``, best first."""
        return self.search_vectors(self.encode(query), hits)[0]

    def search_batch(self, topics: Any, hits: int, progress: bool | None = None) -> Run:
        """Encode the topics in batches and search: ``{qid: {docid: score}}``.

        Args:
            topics: a topic-set name, a ``qid<TAB>query`` file, ``{qid: query}`` or :class:`Topics`.
            hits: documents per query.
            progress: a bar of queries encoded and searched on stderr (``None``: when stderr is a terminal).
        """
        t = resolve_topics(topics)
        qids = list(t.queries)
        run: Run = {}
        with progress_bar(total=len(qids), desc="dense search", unit="query", progress=progress) as bar:
            for s in range(0, len(qids), QUERY_CHUNK):
                chunk = qids[s:s + QUERY_CHUNK]
                q = self.encode_batch([t.queries[x] for x in chunk])
                run.update(faiss_search(self.index, self.docids, chunk, q, hits, self.unique_ids))
                bar.update(len(chunk))
        return run


def search_dense(topics: Any, encoder: Any, index_dir: str | os.PathLike, hits: int = 1000, *,
                 batch_size: int = 32, device: str | None = None, precision: str = "fp32",
                 max_length: int | None = None, threads: int | None = None, ef_search: int | None = None,
                 nprobe: int | None = None, check: bool = True, allow_encoder_mismatch: bool = False,
                 progress: bool | None = None) -> Run:
    """Dense retrieval: encode the topics in batches and search the FAISS index directly (a :class:`DenseSearcher`
    opened for one batch).

    The results are those of Pyserini's ``FaissSearcher(index_dir, query_encoder).batch_search`` (the same query
    vectors and the same FAISS call); write them with :func:`kd_pyserini.trec_io.write_run` for trec_eval order.

    Args:
        topics: a topic-set name, a ``qid<TAB>query`` file, or ``{qid: query}``.
        encoder: card name, hub id, model folder, or a loaded TextEncoder / KDQueryEncoder.
        index_dir: a folder from ``kd-index dense`` (or any Pyserini FAISS index folder).
        hits: documents per query.
        batch_size / device / precision: query encoding settings.
        max_length: query truncation (default: the card's).
        threads: FAISS OpenMP threads (default: FAISS's).
        ef_search / nprobe: HNSW / IVF search settings (default: those saved in the index).
        check / allow_encoder_mismatch: see :class:`DenseSearcher`.
        progress: a bar of queries searched on stderr.

    Raises:
        IncompatibleIndexError: the index was built with a different encoder or dimension.
    """
    t = resolve_topics(topics)
    searcher = DenseSearcher(index_dir, encoder, device=device, precision=precision, batch_size=batch_size,
                             threads=threads, query_max_length=max_length, ef_search=ef_search, nprobe=nprobe,
                             check=check, allow_encoder_mismatch=allow_encoder_mismatch)
    return searcher.search_batch(t, hits, progress=progress)
