"""Search with kd_pyserini: dense (FAISS), BM25 (Lucene), re-ranking and dense-sparse hybrids, with provenance.

The library; :func:`~kd_pyserini.search.pipeline.run_search` runs a :class:`~kd_pyserini.search.spec.SearchSpec`
(what to search: first stage, re-rank stages, fusion, output) and is the one place that builds searchers and
re-rankers; the ``kd-search`` command is :mod:`kd_pyserini.cli.search` (``python -m kd_pyserini.cli.search``, or
``python -m kd_pyserini.search``).

* :mod:`~kd_pyserini.search.spec`: :class:`SearchSpec` (validated when made, :class:`SpecError`),
  :func:`spec_from_options` (kd-search's options), :func:`read_spec` (the spec a run's sidecar records);
* :mod:`~kd_pyserini.search.pipeline`: :func:`run_search` -> :class:`RunResult`;
* :mod:`~kd_pyserini.search.topics`: :class:`Topics`, :func:`resolve_topics`;
* :mod:`~kd_pyserini.search.dense`: :class:`DenseSearcher` (held open, per query or per batch),
  :func:`search_dense`, :func:`load_dense_index`, :func:`faiss_search`; no Pyserini, no Java;
* :mod:`~kd_pyserini.search.bm25`: :class:`Bm25Searcher`, :func:`search_bm25`, :func:`bm25_candidates` (Lucene,
  through Pyserini, imported when first used);
* :mod:`~kd_pyserini.search.rerank`: :func:`read_candidates`, :func:`rerank` (bi-encoder re-ranking);
* :mod:`~kd_pyserini.search.hybrid`: :func:`search_hybrid` (dense + BM25 fused by :mod:`kd_pyserini.fusion`);
* :mod:`~kd_pyserini.search.sidecar`: the ``RUN.json`` a run gets (:func:`write_sidecar`, with the run's SHA-256)
  and the latency contract (:func:`sidecar_latency`);
* :mod:`~kd_pyserini.search.output`: the run and its sidecar written as one unit (:func:`write_run_and_sidecar`)
  by one writer at a time (:class:`OutputLock`).

The functions return runs ``{qid: {docid: score}}``; :func:`kd_pyserini.trec_io.write_run` writes them in trec_eval
order (score descending, ties by docid descending).
"""

from __future__ import annotations


from kd_pyserini.candidates import Candidates
from kd_pyserini.search.bm25 import BM25_DEFAULT, BM25_MSMARCO, Bm25Searcher, bm25_candidates, search_bm25
from kd_pyserini.search.dense import (FAISS_QUERY_BLOCK, DenseSearcher, QueryEncoding, faiss_search,
                                      load_dense_index, resolve_query_encoding, search_dense)
from kd_pyserini.search.hybrid import FUSIONS, fuse_searchers, fusion_parameters, search_hybrid
from kd_pyserini.search.output import OutputBusyError, OutputLock, write_run_and_sidecar
from kd_pyserini.search.pipeline import RunResult, run_search
from kd_pyserini.search.rerank import read_candidates, rerank
from kd_pyserini.search.sidecar import (DEFAULT_MEASURES, SearchTiming, evaluate_run, read_sidecar, sidecar_latency,
                                        sidecar_path, write_sidecar)
from kd_pyserini.search.spec import MODES, SearchSpec, SpecError, read_spec, spec_from_options
from kd_pyserini.search.topics import Topics, resolve_topics

__all__ = ["MODES", "FUSIONS", "BM25_DEFAULT", "BM25_MSMARCO", "DEFAULT_MEASURES", "FAISS_QUERY_BLOCK", "Topics",
           "resolve_topics", "load_dense_index", "faiss_search", "QueryEncoding", "resolve_query_encoding",
           "DenseSearcher", "search_dense", "Bm25Searcher", "search_bm25", "bm25_candidates", "Candidates",
           "read_candidates", "rerank", "fusion_parameters", "fuse_searchers", "search_hybrid", "evaluate_run",
           "SearchTiming", "sidecar_path", "write_sidecar", "read_sidecar", "sidecar_latency", "OutputLock",
           "OutputBusyError", "write_run_and_sidecar", "SearchSpec", "SpecError", "spec_from_options", "read_spec",
           "run_search", "RunResult"]

