"""Dense-sparse hybrids: a dense run and a BM25 run, each to ``depth``, fused by :mod:`kd_pyserini.fusion`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from kd_pyserini.search.bm25 import BM25_DEFAULT, Bm25Searcher
from kd_pyserini.search.dense import DenseSearcher
from kd_pyserini.search.topics import resolve_topics

__all__ = ["FUSIONS", "fusion_parameters", "fuse_searchers", "search_hybrid"]

FUSIONS = ("interpolation", "rrf", "combsum", "combmnz")


def fusion_parameters(fusion: str, *, alpha: float = 0.1, normalize: bool = False, weight_on_dense: bool = False,
                      rrf_k: float = 60, weights: Sequence[float] | None = None,
                      norm: str = "minmax") -> dict[str, Any]:
    """The keyword arguments :func:`kd_pyserini.fusion.fuse` takes for ``fusion``.

    Raises:
        ValueError: an unknown fusion method.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"fusion {fusion!r} is not one of {', '.join(FUSIONS)}")
    if fusion == "interpolation":
        return {"alpha": alpha, "normalize": normalize, "weight_on_dense": weight_on_dense}
    if fusion == "rrf":
        return {"rrf_k": rrf_k, "weights": weights}
    return {"weights": weights, "norm": norm}


def fuse_searchers(topics: Any, dense: DenseSearcher, bm25: Bm25Searcher, fusion: str = "interpolation",
                   hits: int = 1000, depth: int = 1000, *, progress: bool | None = None,
                   return_components: bool = False, **params: Any):
    """:func:`search_hybrid` with a dense and a BM25 searcher already open (``params``: see
    :func:`fusion_parameters`)."""
    from kd_pyserini.fusion import fuse

    fuse_kw = fusion_parameters(fusion, **params)
    t = resolve_topics(topics)
    dense_run = dense.search_batch(t, depth, progress=progress)
    sparse_run = bm25.search_batch(t, depth, progress=progress)
    fused = fuse([sparse_run, dense_run], fusion, k=hits, **fuse_kw)
    return (fused, {"bm25": sparse_run, "dense": dense_run}) if return_components else fused


def search_hybrid(topics: Any, encoder: Any, index_dir: str | os.PathLike, bm25_index: str | os.PathLike,
                  fusion: str = "interpolation", hits: int = 1000, depth: int = 1000, *, alpha: float = 0.1,
                  normalize: bool = False, weight_on_dense: bool = False, rrf_k: float = 60,
                  weights: Sequence[float] | None = None, norm: str = "minmax", k1: float = BM25_DEFAULT[0],
                  b: float = BM25_DEFAULT[1], threads: int = 1, batch_size: int = 32, device: str | None = None,
                  precision: str = "fp32", max_length: int | None = None, ef_search: int | None = None,
                  nprobe: int | None = None, check: bool = True, allow_encoder_mismatch: bool = False,
                  return_components: bool = False,
                  progress: bool | None = None):
    """Dense + BM25, each to ``depth``, fused with :func:`kd_pyserini.fusion.fuse` (BM25 is the first, sparse, run).

    ``interpolation`` is Pyserini's ``HybridSearcher``: ``alpha * bm25 + dense`` (``normalize``: centred min-max
    first; ``weight_on_dense``: ``bm25 + alpha * dense``); ``rrf`` uses ``rrf_k``; ``combsum``/``combmnz`` use
    ``weights`` and ``norm``.

    Returns:
        The fused run; with ``return_components``, ``(fused, {"bm25": run, "dense": run})``.
    """
    params = dict(alpha=alpha, normalize=normalize, weight_on_dense=weight_on_dense, rrf_k=rrf_k, weights=weights,
                  norm=norm)
    fusion_parameters(fusion, **params)  # an unknown method fails before anything is loaded
    dense = DenseSearcher(index_dir, encoder, device=device, precision=precision, batch_size=batch_size,
                          threads=threads, query_max_length=max_length, ef_search=ef_search, nprobe=nprobe,
                          check=check, allow_encoder_mismatch=allow_encoder_mismatch)
    sparse = Bm25Searcher(bm25_index, k1=k1, b=b, threads=threads)
    return fuse_searchers(topics, dense, sparse, fusion, hits, depth, progress=progress,
                          return_components=return_components, **params)
