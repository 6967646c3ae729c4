"""Search with kd_pyserini: dense (FAISS), BM25 (Lucene), re-ranking and dense-sparse hybrids, with provenance.

Command line (``kd-search`` or ``python -m kd_pyserini.search``)::

    # dense retrieval over an index from 'kd-index dense'
    kd-search --mode dense --encoder distilbert-dot-tas-b --index indexes/tasb --topics dl19-passage --output run.txt
    # BM25 over an index from 'kd-index bm25' (or any Pyserini Lucene index)
    kd-search --mode bm25 --index indexes/bm25 --topics scifact --output bm25.txt [--k1 0.9 --b 0.4]
    # re-rank BM25's top 1000 (text from the Lucene index's stored raw documents)
    kd-search --mode rerank --encoder distilbert-dot-tas-b --bm25-index indexes/bm25 --topics dl19-passage ...
    # re-rank a candidate run (text from a corpus), or an MS MARCO top1000-style qid<TAB>pid<TAB>query<TAB>passage
    kd-search --mode rerank --encoder tas-b --candidates top1000.dl19.tsv.gz --topics dl19-passage --output rr.txt
    # hybrid: dense + BM25 fused by kd_pyserini.fusion
    kd-search --mode hybrid --encoder tas-b --index indexes/tasb --bm25-index indexes/bm25 --fusion rrf ...

Without ``--mode``: ``--encoder`` with ``--index`` means dense; ``--candidates`` means rerank; an ``--index`` alone
is searched densely (with the encoder recorded in its ``kd_pyserini.json``) when it is a FAISS folder, else by BM25.

Every run file ``RUN`` gets a sidecar ``RUN.json`` with the exact configuration: the encoder card, the index paths
and their metadata, every parameter, package versions and the command line (both written atomically). Rankings are
in trec_eval order (score descending, ties by docid descending), so the file is deterministic. When qrels for the
topics can be found, the official measures are printed at the end (``--no-eval`` to skip).

The plain functions :func:`search_dense`, :func:`search_bm25`, :func:`rerank` and :func:`search_hybrid` do the work
and return runs ``{qid: {docid: score}}``; the CLI is a thin wrapper around them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

import kd_pyserini  # noqa: F401  (starts the JVM before any pyserini import)
from kd_pyserini.cards import EncoderCard, get_card
from kd_pyserini.index import (METADATA_FILENAME, IncompatibleIndexError, check_index_compatible, load_docids,
                               package_versions, raw_contents, read_metadata)
from kd_pyserini.trec_io import FormatError, Run, atomic_write, open_text, rank, read_run, write_run

__all__ = ["MODES", "FUSIONS", "BM25_DEFAULT", "BM25_MSMARCO", "resolve_topics", "load_dense_index", "search_dense",
           "search_bm25", "bm25_candidates", "read_candidates", "rerank", "search_hybrid", "evaluate_run",
           "write_sidecar", "main"]

log = logging.getLogger(__name__)

MODES = ("dense", "bm25", "rerank", "hybrid")
FUSIONS = ("interpolation", "rrf", "combsum", "combmnz")
BM25_DEFAULT = (0.9, 0.4)
"""Anserini's default BM25 parameters (k1, b), used for BEIR and by Pyserini's ``--bm25``."""
BM25_MSMARCO = (0.82, 0.68)
"""BM25 parameters tuned for MS MARCO passage (Anserini's "tuned" condition, k1=0.82, b=0.68)."""
DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100", "R@1000")
FAISS_QUERY_BLOCK = 4096  # faiss's own query block for exhaustive search: larger blocks give identical results


# ---------------------------------------------------------------------------------------------------------- topics

@dataclass
class Topics:
    """Queries ``{qid: text}`` and where they came from (``name`` for a known topic set, ``path`` for a file)."""

    queries: dict[str, str]
    name: str | None = None
    path: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "num_queries": len(self.queries)}


def resolve_topics(topics: str | os.PathLike | Mapping[str, str] | Topics) -> Topics:
    """Topics from a name (``dl19-passage``, ``scifact``...), a ``qid<TAB>query`` file, or a ``{qid: query}`` dict."""
    if isinstance(topics, Topics):
        return topics
    if isinstance(topics, Mapping):
        return Topics({str(k): str(v) for k, v in topics.items()})
    from kd_pyserini.resources import canonical, get_topics, topics_path

    p = Path(topics).expanduser()
    if p.is_file():
        return Topics(get_topics(p), None, str(p.resolve()))
    bench = canonical(str(topics))
    local = topics_path(str(topics))
    return Topics(get_topics(str(topics)), bench.name if bench else str(topics), str(local) if local else None)


# ---------------------------------------------------------------------------------------------------------- encoders

def _query_encoder(encoder: Any, device: str | None = None, precision: str = "fp32", batch_size: int = 64,
                   max_length: int | None = None):
    """A :class:`kd_pyserini.encoders.KDQueryEncoder` from a name / card / model folder, or the object given."""
    from kd_pyserini.encoders import KDDocumentEncoder, KDQueryEncoder
    from kd_pyserini.encoding import TextEncoder

    if isinstance(encoder, KDQueryEncoder):
        if max_length:
            encoder.max_length = max_length
        return encoder
    if isinstance(encoder, KDDocumentEncoder):
        encoder = encoder.encoder
    if isinstance(encoder, TextEncoder):
        return KDQueryEncoder(encoder=encoder, max_length=max_length, batch_size=batch_size)
    card = get_card(str(encoder) if isinstance(encoder, os.PathLike) else encoder)
    return KDQueryEncoder(card, device=device, precision=precision, max_length=max_length, batch_size=batch_size)


def _encode_queries(qe, queries: Sequence[str], batch_size: int | None) -> np.ndarray:
    # One call over all queries, as Pyserini's FaissSearcher.batch_search does: same batches, same vectors.
    return np.ascontiguousarray(qe.encode_batch(list(queries), batch_size=batch_size), dtype=np.float32)


# ------------------------------------------------------------------------------------------------------------ dense

def load_dense_index(index_dir: str | os.PathLike, ef_search: int | None = None, nprobe: int | None = None):
    """``(faiss_index, docids)`` of a dense index folder, as Pyserini's ``FaissSearcher.load_index`` reads them."""
    import faiss

    d = Path(index_dir)
    if not (d / "index").is_file() or not (d / "docid").is_file():
        raise FileNotFoundError(f"{d} is not a dense index folder (it needs 'index' and 'docid'); build one with "
                                "'kd-index dense'")
    index = faiss.read_index(str(d / "index"))
    docids = load_docids(d)
    if index.ntotal != len(docids):
        raise ValueError(f"{d}: {index.ntotal} vectors but {len(docids)} ids in 'docid'")
    ps = faiss.ParameterSpace()
    if ef_search is not None:
        ps.set_index_parameter(index, "efSearch", int(ef_search))
    if nprobe is not None:
        ps.set_index_parameter(index, "nprobe", int(nprobe))
    return index, docids


def _faiss_search(index, docids: Sequence[str], qids: Sequence[str], q: np.ndarray, k: int) -> Run:
    run: Run = {}
    k = min(k, index.ntotal)
    for s in range(0, len(qids), FAISS_QUERY_BLOCK):
        D, I = index.search(q[s:s + FAISS_QUERY_BLOCK], k)
        for qid, dist, idx in zip(qids[s:s + FAISS_QUERY_BLOCK], D, I):
            docs: dict[str, float] = {}
            for score, i in zip(dist.tolist(), idx.tolist()):
                if i != -1 and docids[i] not in docs:
                    docs[docids[i]] = float(score)
            run[qid] = docs
    return run


def search_dense(topics: Any, encoder: Any, index_dir: str | os.PathLike, hits: int = 1000, *,
                 batch_size: int = 64, device: str | None = None, precision: str = "fp32",
                 max_length: int | None = None, threads: int | None = None, ef_search: int | None = None,
                 nprobe: int | None = None, check: bool = True) -> Run:
    """Dense retrieval: encode the topics in batches and search the FAISS index directly.

    The results are those of Pyserini's ``FaissSearcher(index_dir, query_encoder).batch_search`` (the same query
    vectors and the same FAISS call), with rankings in trec_eval order.

    Args:
        topics: a topic-set name, a ``qid<TAB>query`` file, or ``{qid: query}``.
        encoder: card name, hub id, model folder, or a loaded KDQueryEncoder / TextEncoder.
        index_dir: a folder from ``kd-index dense`` (or any Pyserini FAISS index folder).
        hits: documents per query.
        batch_size / device / precision: query encoding settings.
        max_length: query truncation (default: the card's).
        threads: FAISS OpenMP threads (default: FAISS's).
        ef_search / nprobe: HNSW / IVF search settings (default: those saved in the index).
        check: refuse an index built with another encoder (:func:`kd_pyserini.index.check_index_compatible`).

    Raises:
        IncompatibleIndexError: the index was built with a different encoder or dimension.
    """
    import faiss

    t = resolve_topics(topics)
    qe = _query_encoder(encoder, device, precision, batch_size, max_length)
    if check:
        check_index_compatible(index_dir, qe.card, qe.dimension)
    index, docids = load_dense_index(index_dir, ef_search, nprobe)
    if index.d != qe.dimension:
        raise IncompatibleIndexError(f"index {index_dir} holds {index.d}-dimensional vectors but encoder "
                                     f"'{qe.card.name}' makes {qe.dimension}-dimensional ones")
    if threads:
        faiss.omp_set_num_threads(int(threads))
    qids = list(t.queries)
    q = _encode_queries(qe, [t.queries[x] for x in qids], batch_size)
    return _faiss_search(index, docids, qids, q, hits)


# ------------------------------------------------------------------------------------------------------------- BM25

def _lucene_searcher(index_dir: str | os.PathLike, k1: float, b: float):
    from pyserini.search.lucene import LuceneSearcher

    d = Path(index_dir)
    if not d.is_dir() or not any(d.glob("segments_*")):
        raise FileNotFoundError(f"{d} is not a Lucene index folder; build one with 'kd-index bm25'")
    s = LuceneSearcher(str(d))
    s.set_bm25(float(k1), float(b))
    return s


def search_bm25(topics: Any, index_dir: str | os.PathLike, hits: int = 1000, *, k1: float = BM25_DEFAULT[0],
                b: float = BM25_DEFAULT[1], threads: int = 1, remove_query: bool = False) -> Run:
    """BM25 through Pyserini's ``LuceneSearcher.batch_search`` (Anserini's analyzer and scoring).

    Args:
        topics: a topic-set name, a ``qid<TAB>query`` file, or ``{qid: query}``.
        index_dir: a Lucene index (``kd-index bm25`` or Pyserini's).
        hits: documents per query.
        k1 / b: BM25 parameters: 0.9 / 0.4 is Anserini's default (BEIR); 0.82 / 0.68 is tuned for MS MARCO passage.
        threads: search threads.
        remove_query: drop a hit whose docid equals the query id (Pyserini's ``--remove-query``, for BEIR sets
            such as ArguAna where queries are documents).
    """
    t = resolve_topics(topics)
    searcher = _lucene_searcher(index_dir, k1, b)
    qids = list(t.queries)
    results = searcher.batch_search([t.queries[q] for q in qids], qids, k=int(hits), threads=int(threads))
    run: Run = {}
    for qid in qids:
        docs: dict[str, float] = {}
        for h in results.get(qid, []):
            if remove_query and h.docid == qid:
                continue
            docs.setdefault(h.docid, float(h.score))
        run[qid] = docs
    return run


# ----------------------------------------------------------------------------------------------------------- rerank

@dataclass
class Candidates:
    """Candidate lists to re-rank: ``run`` (order = the first stage's), passage ``texts`` and, from a top1000-style
    file, the ``queries`` it carries."""

    run: Run
    texts: dict[str, str]
    queries: dict[str, str]
    source: dict[str, Any]


def _is_top1000(path: Path) -> bool:
    with open_text(path) as f:
        for line in f:
            if line.strip():
                return len(line.rstrip("\r\n").split("\t")) == 4
    return False


def read_candidates(path: str | os.PathLike, corpus: str | os.PathLike | None = None,
                    depth: int | None = None) -> Candidates:
    """Read candidates: an MS MARCO top1000-style ``qid<TAB>pid<TAB>query<TAB>passage`` file (text inline, in rank
    order), or a TREC/MS MARCO run whose passage text comes from ``corpus``.

    Raises:
        FormatError: a malformed line (file:line).
        ValueError: a run without ``corpus``, or candidates missing from the corpus.
    """
    p = Path(path)
    if _is_top1000(p):
        run: Run = {}
        texts: dict[str, str] = {}
        queries: dict[str, str] = {}
        with open_text(p) as f:
            for no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.rstrip("\r\n").split("\t")
                if len(parts) != 4:
                    raise FormatError(p, no, f"{len(parts)} fields; expected 'qid<TAB>pid<TAB>query<TAB>passage'")
                qid, pid, query, passage = parts
                docs = run.setdefault(qid, {})
                if pid in docs:
                    continue
                docs[pid] = -float(len(docs) + 1)  # the file's order: score = -rank
                texts.setdefault(pid, passage)
                queries.setdefault(qid, query)
        return Candidates(_cut(run, depth), texts, queries, {"path": str(p.resolve()), "format": "top1000-tsv"})
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


def _cut(run: Run, depth: int | None) -> Run:
    return {q: dict(rank(docs, depth)) for q, docs in run.items()}


def bm25_candidates(topics: Any, bm25_index: str | os.PathLike, depth: int = 1000, *, k1: float = BM25_DEFAULT[0],
                    b: float = BM25_DEFAULT[1], threads: int = 1) -> Candidates:
    """BM25's top ``depth`` with passage text read from the Lucene index's stored raw documents."""
    t = resolve_topics(topics)
    run = search_bm25(t, bm25_index, depth, k1=k1, b=b, threads=threads)
    searcher = _lucene_searcher(bm25_index, k1, b)
    texts: dict[str, str] = {}
    for docs in run.values():
        for d in docs:
            if d not in texts:
                doc = searcher.doc(d)
                raw = doc.raw() if doc is not None else None
                if raw is None:
                    raise ValueError(f"{bm25_index} stores no raw text for {d!r}; rebuild it with 'kd-index bm25' "
                                     "(-storeRaw), or give --candidates with --corpus")
                texts[d] = raw_contents(raw)
    return Candidates(run, texts, {}, {"bm25_index": str(Path(bm25_index).resolve()), "k1": k1, "b": b,
                                       "depth": depth})


def rerank(topics: Any, encoder: Any, candidates: Candidates | Run, texts: Mapping[str, str] | None = None,
           depth: int = 1000, hits: int | None = None, *, batch_size: int = 64, device: str | None = None,
           precision: str = "fp32", query_max_length: int | None = None,
           passage_max_length: int | None = None) -> Run:
    """Re-score each query's top ``depth`` candidates by the encoder: ``score = q . p`` (cosine for cosine cards,
    whose vectors are unit length). Each distinct passage is encoded once.

    Args:
        topics: queries (name, file or dict); ``None`` to use the queries a top1000-style candidates file carries.
        encoder: card name / hub id / folder, or a loaded KDQueryEncoder / TextEncoder.
        candidates: :class:`Candidates` (from :func:`read_candidates` / :func:`bm25_candidates`) or a run, with
            ``texts`` ``{docid: passage}``.
        depth: candidates re-scored per query (in the first stage's order); the rest are dropped.
        hits: documents kept per query in the output (default: ``depth``).
        query_max_length / passage_max_length: truncation (default: the card's).

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
    if topics is not None:
        queries.update(resolve_topics(topics).queries)
    qe = _query_encoder(encoder, device, precision, batch_size, query_max_length)
    p_len = passage_max_length or qe.card.passage_max_length
    lists = {q: [d for d, _ in rank(docs, depth)] for q, docs in run.items() if q in queries and docs}
    missing = {d for ds in lists.values() for d in ds if d not in texts}
    if missing:
        raise ValueError(f"no passage text for {len(missing)} candidates (e.g. {sorted(missing)[0]!r})")
    pids = list(dict.fromkeys(d for ds in lists.values() for d in ds))
    pos = {d: i for i, d in enumerate(pids)}
    qids = list(lists)
    qv = _encode_queries(qe, [queries[q] for q in qids], batch_size)
    pv = qe.encoder.embed([texts[d] for d in pids], p_len, batch_size)
    out: Run = {}
    for qid, vec in zip(qids, qv):
        ds = lists[qid]
        scores = pv[[pos[d] for d in ds]] @ vec
        out[qid] = dict(rank({d: float(s) for d, s in zip(ds, scores.tolist())}, hits or depth))
    return out


# ----------------------------------------------------------------------------------------------------------- hybrid

def search_hybrid(topics: Any, encoder: Any, index_dir: str | os.PathLike, bm25_index: str | os.PathLike,
                  fusion: str = "interpolation", hits: int = 1000, depth: int = 1000, *, alpha: float = 0.1,
                  normalize: bool = False, weight_on_dense: bool = False, rrf_k: float = 60,
                  weights: Sequence[float] | None = None, norm: str = "minmax", k1: float = BM25_DEFAULT[0],
                  b: float = BM25_DEFAULT[1], threads: int = 1, batch_size: int = 64, device: str | None = None,
                  precision: str = "fp32", max_length: int | None = None, ef_search: int | None = None,
                  nprobe: int | None = None, check: bool = True, return_components: bool = False):
    """Dense + BM25, each to ``depth``, fused with :func:`kd_pyserini.fusion.fuse` (BM25 is the first, sparse, run).

    ``interpolation`` is Pyserini's ``HybridSearcher``: ``alpha * bm25 + dense`` (``normalize``: centred min-max
    first; ``weight_on_dense``: ``bm25 + alpha * dense``); ``rrf`` uses ``rrf_k``; ``combsum``/``combmnz`` use
    ``weights`` and ``norm``.

    Returns:
        The fused run; with ``return_components``, ``(fused, {"bm25": run, "dense": run})``.
    """
    from kd_pyserini.fusion import fuse

    if fusion not in FUSIONS:
        raise ValueError(f"fusion {fusion!r} is not one of {', '.join(FUSIONS)}")
    t = resolve_topics(topics)
    dense = search_dense(t, encoder, index_dir, depth, batch_size=batch_size, device=device, precision=precision,
                         max_length=max_length, threads=threads, ef_search=ef_search, nprobe=nprobe, check=check)
    sparse = search_bm25(t, bm25_index, depth, k1=k1, b=b, threads=threads)
    params: dict[str, Any]
    if fusion == "interpolation":
        params = {"alpha": alpha, "normalize": normalize, "weight_on_dense": weight_on_dense}
    elif fusion == "rrf":
        params = {"rrf_k": rrf_k, "weights": weights}
    else:
        params = {"weights": weights, "norm": norm}
    fused = fuse([sparse, dense], fusion, k=hits, **params)
    return (fused, {"bm25": sparse, "dense": dense}) if return_components else fused


# ------------------------------------------------------------------------------------------------------- evaluation

def _qrels_for(topics: Topics, qrels: str | None):
    from kd_pyserini.resources import get_qrels

    if qrels:
        return get_qrels(qrels), qrels
    if topics.name is None:
        return None, None
    try:
        return get_qrels(topics.name), topics.name
    except Exception as e:  # noqa: BLE001  (no qrels is not an error for a search)
        log.info("no qrels for %s: %s", topics.name, e)
        return None, None


def _measures_for(name: str | None, measures: Sequence[str] | None) -> list[str]:
    if measures:
        return list(measures)
    from kd_pyserini.evaluation import official_measures

    if name:
        try:
            return [str(m) for m in official_measures(name)]
        except KeyError:
            pass
    return list(DEFAULT_MEASURES)


def evaluate_run(run: Run, qrels: Mapping[str, Mapping[str, int]], measures: Sequence[str]) -> dict[str, float]:
    """:func:`kd_pyserini.evaluation.evaluate` (``trec_eval -c`` semantics)."""
    from kd_pyserini.evaluation import evaluate

    return {str(k): float(v) for k, v in evaluate(run, qrels, list(measures)).items()}


# ------------------------------------------------------------------------------------------------------- provenance

def _index_info(path: str | os.PathLike | None) -> dict[str, Any] | None:
    if not path:
        return None
    return {"path": str(Path(path).resolve()), "metadata": read_metadata(path)}


def write_sidecar(run_path: str | os.PathLike, config: Mapping[str, Any]) -> Path:
    """Write ``RUN.json`` next to a run file (atomically), adding versions, time and the command line."""
    out = Path(str(run_path) + ".json")
    data = {"run": str(Path(run_path).resolve()), **config}
    data.setdefault("versions", package_versions())
    data.setdefault("command", list(sys.argv))
    data.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    with atomic_write(out) as f:
        json.dump(data, f, indent=2, default=str)
        f.write("\n")
    return out


# -------------------------------------------------------------------------------------------------------------- CLI

def _infer_mode(mode: str | None, encoder: str | None, index: str | None, bm25_index: str | None,
                candidates: str | None) -> str:
    if mode:
        return mode
    if candidates:
        return "rerank"
    if index:
        if encoder or (Path(index) / "index").is_file():
            return "dense"
        return "bm25"
    if encoder and bm25_index:
        return "rerank"
    if bm25_index:
        return "bm25"
    raise click.UsageError("say what to search: --mode dense|bm25|rerank|hybrid with --index / --bm25-index / "
                           "--candidates (e.g. --encoder ENC --index FAISS_DIR for dense)")


def _encoder_from_index(index: str) -> str:
    meta = read_metadata(index)
    if meta is None or "encoder" not in meta:
        raise click.UsageError(f"--encoder is required: {index} has no {METADATA_FILENAME} naming its encoder")
    enc = meta["encoder"]
    return enc["name"] if get_card_safe(enc["name"]) else enc["model_id"]


def get_card_safe(name: str) -> EncoderCard | None:
    from kd_pyserini.cards import _lookup

    return _lookup(name)


def _print_eval(label: str, values: Mapping[str, float]) -> None:
    click.echo(f"{label:<13} " + "  ".join(f"{m} {v:.4f}" for m, v in values.items()))


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--topics", default=None, help="Topic set name (dl19-passage, dl20, msmarco-dev, scifact...) or a "
                                             "qid<TAB>query file. Optional with a top1000-style --candidates file.")
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="Run file to write (+ RUN.json).")
@click.option("--mode", type=click.Choice(MODES), default=None,
              help="dense | bm25 | rerank | hybrid [--encoder with --index: dense].")
@click.option("--encoder", default=None, help="Card name, hub id or model folder [dense: the index's encoder].")
@click.option("--index", default=None, type=click.Path(exists=True, file_okay=False),
              help="dense/hybrid: FAISS index folder; bm25: Lucene index folder.")
@click.option("--bm25-index", default=None, type=click.Path(exists=True, file_okay=False),
              help="Lucene index for rerank/hybrid (kd-index bm25 or a Pyserini index with raw documents).")
@click.option("--hits", type=int, default=1000, show_default=True, help="Documents per query in the run.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Texts per encoder forward pass.")
@click.option("--threads", type=int, default=os.cpu_count() or 1, show_default="all CPU cores",
              help="Lucene search / FAISS threads.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 [cuda when present].")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]), default="fp32", show_default=True,
              help="int8: CPU only, dynamic quantisation (the fast query option; see PERFORMANCE.md).")
@click.option("--max-length", "query_max_length", type=int, default=None,
              help="Query truncation in tokens [the card's; 30 for TAS-B/Margin-MSE].")
@click.option("--passage-max-length", type=int, default=None, help="rerank: passage truncation [the card's].")
@click.option("--k1", type=float, default=BM25_DEFAULT[0], show_default=True,
              help="BM25 k1. Anserini default 0.9 (BEIR, Pyserini --bm25); MS MARCO passage tuned: 0.82.")
@click.option("--b", "b", type=float, default=BM25_DEFAULT[1], show_default=True,
              help="BM25 b. Anserini default 0.4; MS MARCO passage tuned: 0.68.")
@click.option("--remove-query", is_flag=True, help="bm25: drop hits whose docid equals the query id (Pyserini's "
                                                   "--remove-query).")
@click.option("--candidates", default=None, type=click.Path(exists=True, dir_okay=False),
              help="rerank: a TREC/MS MARCO run (with --corpus) or a qid<TAB>pid<TAB>query<TAB>passage tsv(.gz).")
@click.option("--corpus", default=None, type=click.Path(exists=True), help="rerank: passage texts for a run.")
@click.option("--depth", type=int, default=1000, show_default=True,
              help="rerank: candidates re-scored per query; hybrid: depth of each fused list.")
@click.option("--fusion", type=click.Choice(FUSIONS), default="interpolation", show_default=True,
              help="hybrid: fusion method (kd_pyserini.fusion).")
@click.option("--alpha", type=float, default=0.1, show_default=True,
              help="hybrid interpolation: alpha * bm25 + dense (Pyserini's HybridSearcher).")
@click.option("--normalize/--no-normalize", default=False, show_default=True,
              help="hybrid interpolation: centred min-max normalise both lists first.")
@click.option("--weight-on-dense", is_flag=True, help="hybrid interpolation: bm25 + alpha * dense instead.")
@click.option("--rrf-k", type=float, default=60, show_default=True, help="hybrid rrf: the RRF constant.")
@click.option("--norm", type=click.Choice(["minmax", "zscore", "max", "sum", "none"]), default="minmax",
              show_default=True, help="hybrid combsum/combmnz: per-query score normalisation.")
@click.option("--weights", default=None, help="hybrid rrf/combsum/combmnz: 'w_bm25,w_dense'.")
@click.option("--ef-search", type=int, default=None, help="HNSW efSearch [saved in the index].")
@click.option("--nprobe", type=int, default=None, help="IVF nprobe [saved in the index].")
@click.option("--run-tag", default=None, help="TREC run tag [kd_pyserini-MODE].")
@click.option("--msmarco-format", is_flag=True, help="Write qid<TAB>docid<TAB>rank instead of TREC format.")
@click.option("--eval/--no-eval", "do_eval", default=True, show_default=True,
              help="Print the evaluation at the end when qrels for the topics are found.")
@click.option("--qrels", default=None, help="Qrels name or file for --eval [the topics' own].")
@click.option("--measures", default=None, help="Comma-separated measures [the benchmark's official ones].")
@click.option("--ignore-encoder-mismatch", is_flag=True,
              help="Search a dense index even if its kd_pyserini.json names another encoder.")
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def main(**kw: Any) -> None:
    """Search with a dense encoder, BM25, re-ranking or a hybrid; write a TREC run and RUN.json."""
    logging.basicConfig(level=logging.INFO if kw["verbose"] else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        _run_cli(kw)
    except click.ClickException:
        raise
    except (IncompatibleIndexError, FormatError, FileNotFoundError, ValueError, KeyError) as e:
        raise click.ClickException(str(e).strip("'\"")) from e


def _run_cli(kw: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    mode = _infer_mode(kw["mode"], kw["encoder"], kw["index"], kw["bm25_index"], kw["candidates"])
    topics = resolve_topics(kw["topics"]) if kw["topics"] else None
    if topics is None and not (mode == "rerank" and kw["candidates"]):
        raise click.UsageError("--topics is required (a name such as dl19-passage or scifact, or a file)")
    weights = [float(x) for x in kw["weights"].split(",")] if kw["weights"] else None
    enc_kw = {"batch_size": kw["batch_size"], "device": kw["device"], "precision": kw["precision"]}
    check = not kw["ignore_encoder_mismatch"]
    encoder = kw["encoder"]
    components: dict[str, Run] = {}
    config: dict[str, Any] = {"mode": mode}
    before: Run | None = None

    if mode in ("dense", "hybrid"):
        if not kw["index"]:
            raise click.UsageError(f"--mode {mode} needs --index FAISS_DIR")
        encoder = encoder or _encoder_from_index(kw["index"])
    if mode in ("rerank", "hybrid") and not encoder:
        raise click.UsageError(f"--mode {mode} needs --encoder")

    if mode == "dense":
        run = search_dense(topics, encoder, kw["index"], kw["hits"], max_length=kw["query_max_length"],
                           threads=kw["threads"], ef_search=kw["ef_search"], nprobe=kw["nprobe"], check=check,
                           **enc_kw)
        config["params"] = {"hits": kw["hits"], "ef_search": kw["ef_search"], "nprobe": kw["nprobe"]}
    elif mode == "bm25":
        index = kw["index"] or kw["bm25_index"]
        if not index:
            raise click.UsageError("--mode bm25 needs --index LUCENE_DIR")
        kw["bm25_index"], kw["index"] = index, None
        run = search_bm25(topics, index, kw["hits"], k1=kw["k1"], b=kw["b"], threads=kw["threads"],
                          remove_query=kw["remove_query"])
        config["params"] = {"hits": kw["hits"], "k1": kw["k1"], "b": kw["b"], "remove_query": kw["remove_query"]}
    elif mode == "rerank":
        if kw["candidates"]:
            cands = read_candidates(kw["candidates"], kw["corpus"], kw["depth"])
        elif kw["bm25_index"]:
            if topics is None:
                raise click.UsageError("--topics is required to retrieve BM25 candidates")
            cands = bm25_candidates(topics, kw["bm25_index"], kw["depth"], k1=kw["k1"], b=kw["b"],
                                    threads=kw["threads"])
        else:
            raise click.UsageError("--mode rerank needs --bm25-index LUCENE_DIR or --candidates FILE")
        before = cands.run
        run = rerank(topics, encoder, cands, depth=kw["depth"], hits=min(kw["hits"], kw["depth"]),
                     query_max_length=kw["query_max_length"], passage_max_length=kw["passage_max_length"],
                     **enc_kw)
        config["candidates"] = cands.source
        config["params"] = {"depth": kw["depth"], "hits": min(kw["hits"], kw["depth"]),
                            "passage_max_length": kw["passage_max_length"], "k1": kw["k1"], "b": kw["b"],
                            "unique_passages_encoded": len({d for ds in cands.run.values() for d in ds})}
    else:  # hybrid
        if not kw["bm25_index"]:
            raise click.UsageError("--mode hybrid needs --bm25-index LUCENE_DIR (and --index FAISS_DIR)")
        run, components = search_hybrid(
            topics, encoder, kw["index"], kw["bm25_index"], kw["fusion"], kw["hits"], kw["depth"],
            alpha=kw["alpha"], normalize=kw["normalize"], weight_on_dense=kw["weight_on_dense"], rrf_k=kw["rrf_k"],
            weights=weights, norm=kw["norm"], k1=kw["k1"], b=kw["b"], threads=kw["threads"],
            max_length=kw["query_max_length"], ef_search=kw["ef_search"], nprobe=kw["nprobe"], check=check,
            return_components=True, **enc_kw)
        config["params"] = {"fusion": kw["fusion"], "hits": kw["hits"], "depth": kw["depth"], "alpha": kw["alpha"],
                            "normalize": kw["normalize"], "weight_on_dense": kw["weight_on_dense"],
                            "rrf_k": kw["rrf_k"], "weights": weights, "norm": kw["norm"], "k1": kw["k1"],
                            "b": kw["b"]}

    tag = kw["run_tag"] or f"kd_pyserini-{mode}"
    write_run(run, kw["output"], tag=tag, k=kw["hits"], msmarco=kw["msmarco_format"])
    elapsed = time.perf_counter() - t0

    evaluation: dict[str, Any] | None = None
    if kw["do_eval"]:
        qt = topics or Topics({})
        qrels, qrels_name = _qrels_for(qt, kw["qrels"])
        if qrels is not None:
            measures = _measures_for(kw["qrels"] or qt.name,
                                     [m.strip() for m in kw["measures"].split(",")] if kw["measures"] else None)
            evaluation = {"qrels": qrels_name, "measures": measures, "run": evaluate_run(run, qrels, measures)}
            if before is not None:
                evaluation["candidates"] = evaluate_run(before, qrels, measures)
                _print_eval("before", evaluation["candidates"])
                _print_eval("after", evaluation["run"])
            else:
                for name, comp in components.items():
                    evaluation[name] = evaluate_run(comp, qrels, measures)
                    _print_eval(name, evaluation[name])
                _print_eval(mode if not components else kw["fusion"], evaluation["run"])
        else:
            click.echo("no qrels found for these topics: not evaluated (give --qrels)", err=True)

    card = get_card(encoder).describe() if isinstance(encoder, str) and mode != "bm25" else None
    write_sidecar(kw["output"], {
        **config,
        "run_tag": tag,
        "format": "msmarco" if kw["msmarco_format"] else "trec",
        "topics": topics.describe() if topics else None,
        "encoder": card,
        "query_max_length": kw["query_max_length"] or (card or {}).get("query_max_length"),
        "encoding": {"batch_size": kw["batch_size"], "device": kw["device"], "precision": kw["precision"]}
        if card else None,
        "index": _index_info(kw["index"]) if mode != "bm25" else None,
        "bm25_index": _index_info(kw["bm25_index"]),
        "threads": kw["threads"],
        "num_queries": len(run),
        "elapsed_seconds": round(elapsed, 3),
        "evaluation": evaluation,
    })
    click.echo(f"{kw['output']}: {len(run)} queries ({mode}) in {elapsed:.1f} s; configuration in "
               f"{kw['output']}.json", err=True)


if __name__ == "__main__":
    main()
