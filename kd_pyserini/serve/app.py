"""The ``kd-serve`` app: Pyserini 2.x's REST app (``pyserini.server.rest.app.create_app``) with ``mode=hybrid|rerank``
on ``GET /v1/{index}/search`` (see :mod:`kd_pyserini.serve`). Pyserini 2.x only (imports its server).

Query parameters added to Pyserini's (``query``, ``hits``, ``parse``, ``k1``, ``b``, ``max_doc_length``):

* ``mode``: ``hybrid`` or ``rerank`` (absent: Pyserini's own search, unchanged);
* ``depth``: documents taken from each first stage [1000, as kd-search];
* hybrid: ``fusion`` (``interpolation`` [default, as kd-search], ``rrf``, ``combsum``, ``combmnz``), ``alpha``
  [0.1], ``normalize`` [false], ``rrf_k`` [60] -- the names and defaults of ``kd-search --mode hybrid``.

``{index}`` is a dense (``faiss``) alias whose ``base_index`` is its BM25 (``tf``) alias; kd_pyserini fills that in
for a kd index from the corpus both were built from (:mod:`kd_pyserini.pyserini_compat.server`).
"""

import asyncio  # no "from __future__ import annotations": FastAPI reads the route's annotations at runtime
import math
from typing import Any

import numpy as np

from kd_pyserini.search.hybrid import FUSIONS, fusion_parameters

__all__ = ["MODES", "create_app", "hybrid_hits", "rerank_hits", "mode_search"]

MODES = ("hybrid", "rerank")
DEFAULT_DEPTH = 1000
_SCORE_DECIMALS = 6  # Pyserini's REST rounding (backend._RESULT_SCORE_DECIMALS)


def _bad(message: str) -> Exception:
    from pyserini.server.errors import BadSearchRequestError

    return BadSearchRequestError(message)


def _pair(backend: Any, index: str) -> tuple[Any, Any]:
    """The dense alias's open searcher config and that of its BM25 ``base_index``."""
    dense = backend._ensure_index(index, allow_local=True)
    if dense.index_type != "faiss":
        raise _bad(f"mode=hybrid|rerank needs a dense (faiss) index; {index!r} is {dense.index_type or 'unknown'}: "
                   "search the dense alias, whose base_index is this BM25 index")
    if not dense.base_index:
        raise _bad(f"index {index!r} names no base_index: add 'base_index: <its BM25 alias>' to its entry in the "
                   "server config (kd_pyserini fills it in when one BM25 index of the same corpus is configured)")
    sparse = backend._ensure_index(dense.base_index, allow_local=True)
    return dense, sparse


def _hits(results: Any) -> dict[str, float]:
    return {r.docid: float(r.score) for r in results}


def hybrid_hits(backend: Any, index: str, query: str, hits: int, *, fusion: str = "interpolation",
                depth: int = DEFAULT_DEPTH, **params: Any) -> list[tuple[str, float]]:
    """The dense index and its BM25 ``base_index``, each to ``depth``, fused by :func:`kd_pyserini.fusion.fuse`
    exactly as ``kd-search --mode hybrid`` fuses (BM25 is the first, sparse, run); ``params``: see
    :func:`kd_pyserini.search.hybrid.fusion_parameters`."""
    from kd_pyserini.fusion import fuse

    kwargs = fusion_parameters(fusion, **params)
    dense, sparse = _pair(backend, index)
    dense_run = {"q": _hits(dense.searcher.search(query, depth))}
    sparse_run = {"q": _hits(sparse.searcher.search(query, depth))}
    return list(fuse([sparse_run, dense_run], fusion, k=hits, **kwargs).get("q", {}).items())


def _positions(searcher: Any) -> dict[str, int]:
    found = getattr(searcher, "_kd_positions", None)
    if found is None:
        found = {d: i for i, d in enumerate(searcher.docids or ())}
        searcher._kd_positions = found
    return found


def rerank_hits(backend: Any, index: str, query: str, hits: int, *, depth: int = DEFAULT_DEPTH) -> list[tuple[str, float]]:
    """BM25's top ``depth`` from the ``base_index``, re-scored by the dense index's query encoder against the
    passage vectors the dense index stores (the vectors ``kd-search --mode rerank`` would compute from the same
    text), ranked as trec_eval ranks and cut to ``hits``."""
    from kd_pyserini.trec_io import rank

    dense, sparse = _pair(backend, index)
    candidates = [r.docid for r in sparse.searcher.search(query, depth)]
    if not candidates:
        return []
    positions = _positions(dense.searcher)
    missing = [d for d in candidates if d not in positions]
    if missing:
        raise _bad(f"document {missing[0]} of {dense.base_index!r} is not in the dense index {index!r}: base_index "
                   "must be the BM25 index of the same corpus")
    try:
        vectors = np.stack([dense.searcher.index.reconstruct(positions[d]) for d in candidates])
    except RuntimeError as e:
        raise _bad(f"mode=rerank reads the passage vectors back from {index!r}, which this FAISS index type cannot "
                   f"do ({str(e).splitlines()[0][:120]}); build it flat or HNSW (kd-index dense), or use "
                   "mode=hybrid") from None
    q = np.asarray(dense.searcher.query_encoder.encode(query), dtype=np.float32).reshape(-1)
    scores = vectors.astype(np.float32) @ q
    return list(rank({d: float(s) for d, s in zip(candidates, scores)}, hits))


def _number(raw: str | None, name: str, kind: type, default: Any) -> Any:
    if raw is None or not str(raw).strip():
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise _bad(f"Parameter '{name}' must be {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(value) or kind is int and value <= 0:
        raise _bad(f"Parameter '{name}' must be {'positive' if kind is int else 'finite'}")
    return value


def mode_search(backend: Any, index: str, query: str, *, mode: str, hits: int = 10, parse: bool = True,
                fusion: str | None = None, alpha: str | None = None, normalize: str | None = None,
                rrf_k: str | None = None, depth: str | None = None,
                max_doc_length: int | None = None) -> dict[str, Any]:
    """One ``mode=hybrid|rerank`` search, answered in Pyserini's REST shape (``candidates`` with ``docid``,
    ``score``, ``rank``, ``doc``; the documents read from the ``base_index``) plus ``mode`` and its settings.

    Raises:
        pyserini.server.errors.BadSearchRequestError: a bad parameter, or an index that cannot do it.
    """
    from pyserini.server.document_format import truncate_document_payload

    if mode not in MODES:
        raise _bad(f"Parameter 'mode' must be one of {', '.join(MODES)} (or absent for Pyserini's search)")
    d = _number(depth, "depth", int, DEFAULT_DEPTH)
    settings: dict[str, Any] = {"mode": mode, "depth": d}
    if mode == "hybrid":
        method = (fusion or "interpolation").strip()
        if method not in FUSIONS:
            raise _bad(f"Parameter 'fusion' must be one of {', '.join(FUSIONS)}")
        norm = (normalize or "false").strip().lower()
        if norm not in ("true", "false"):
            raise _bad("Parameter 'normalize' must be 'true' or 'false'")
        params = {"alpha": _number(alpha, "alpha", float, 0.1), "normalize": norm == "true",
                  "rrf_k": _number(rrf_k, "rrf_k", float, 60.0)}
        ranked = hybrid_hits(backend, index, query, hits, fusion=method, depth=d, **params)
        settings.update({"fusion": method, **fusion_parameters(method, **params)})
    else:
        ranked = rerank_hits(backend, index, query, hits, depth=d)
    base = backend._ensure_index(index, allow_local=True).base_index
    docs = backend._bulk_fetch_and_format_documents([docid for docid, _ in ranked], base, parse=parse,
                                                    allow_local_index=True)
    candidates = []
    for i, (docid, score) in enumerate(ranked, start=1):
        doc = docs[docid]
        if parse:
            doc = truncate_document_payload(doc, max_doc_length=max_doc_length)
        candidates.append({"docid": docid, "score": round(score, _SCORE_DECIMALS), "rank": i, "doc": doc})
    return {"api": "v1", "index": index, "query": {"text": query}, **settings, "candidates": candidates}


def create_app(config_path: str | None, *, no_prebuilt_indexes: bool = True, **kwargs: Any) -> Any:
    """Pyserini's REST app for ``config_path`` (``kwargs``: the other arguments of Pyserini's ``create_app``) with the
    ``mode`` route in front of its ``/v1/{index}/search`` (API keys and load shedding apply to it as to Pyserini's
    routes: they are middleware)."""
    from fastapi import Query, Request
    from fastapi.responses import JSONResponse
    from fastapi.routing import APIRoute
    from pyserini.server.errors import BadSearchRequestError, DocumentNotFoundError, IndexNotAvailableError
    from pyserini.server.rest.app import create_app as pyserini_create_app
    from pyserini.server.rest.routes import v1

    app = pyserini_create_app(config_path, no_prebuilt_indexes=no_prebuilt_indexes, **kwargs)

    async def search(request: Request, index: str, query: str | None = Query(None), hits: str | None = Query(None),
                     parse: str | None = Query(None), k1: str | None = Query(None), b: str | None = Query(None),
                     max_doc_length: str | None = Query(None), mode: str | None = Query(None),
                     fusion: str | None = Query(None), alpha: str | None = Query(None),
                     normalize: str | None = Query(None), rrf_k: str | None = Query(None),
                     depth: str | None = Query(None)):
        if mode is None or not mode.strip():
            return await v1.search_v1(request, index, query, hits, parse, k1, b, max_doc_length)
        backend = request.app.state.search_backend
        if query is None or not query.strip():
            return JSONResponse(status_code=400, content={"error": "Parameter 'query' is required"})
        parse_flag = (parse or "true").strip().lower()
        if parse_flag not in ("true", "false"):
            return JSONResponse(status_code=400, content={"error": "Parameter 'parse' must be 'true' or 'false'"})
        if k1 is not None or b is not None:
            return JSONResponse(status_code=400, content={"error": "k1 and b apply to Pyserini's BM25 search, not "
                                                                   "to mode=hybrid|rerank (the BM25 side uses the "
                                                                   "index's defaults)"})
        try:
            n = _number(hits, "hits", int, v1.DEFAULT_HITS)
            max_len = _number(max_doc_length, "max_doc_length", int, None)
            return await asyncio.to_thread(
                mode_search, backend, backend.decode_path_segment(index), query, mode=mode.strip(), hits=n,
                parse=parse_flag == "true", fusion=fusion, alpha=alpha, normalize=normalize, rrf_k=rrf_k,
                depth=depth, max_doc_length=max_len)
        except (IndexNotAvailableError, BadSearchRequestError) as e:
            return JSONResponse(status_code=400, content={"error": str(e)})
        except DocumentNotFoundError as e:
            return JSONResponse(status_code=404, content={"error": str(e)})

    app.router.routes.insert(0, APIRoute("/v1/{index:path}/search", search, methods=["GET"], tags=["kd_pyserini"]))
    return app
