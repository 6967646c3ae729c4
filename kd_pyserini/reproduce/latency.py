"""Query latency of a reproduced condition: measured in process, or read from kd-search's sidecar.

:func:`probe_latency` times what a user of a search service waits for: one query at a time, after the encoder, the
index and the searcher are loaded. It takes a :class:`kd_pyserini.search.spec.SearchSpec` (the one a kd-search run
records in its sidecar, read back by :func:`probe_spec`; no command line is parsed here), and the searchers are built
by the search pipeline's own constructors (:func:`kd_pyserini.search.pipeline.open_dense` and
:func:`~kd_pyserini.search.pipeline.open_bm25`), the objects kd-search itself uses. Without a probe, the latency
comes from the run's sidecar through the one latency contract, :func:`kd_pyserini.search.sidecar_latency`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from kd_pyserini.search.spec import SearchSpec

__all__ = ["probe_spec", "probe_latency", "sidecar_latency", "median_ms", "PROBE_SOURCE"]

T = TypeVar("T")

#: the latency source the leaderboard prints for a probed condition.
PROBE_SOURCE = ("dense/bm25: median of {n} single-query searches (encoding + search) in process, after loading "
                "(kd_pyserini.reproduce.probe_latency)")


def probe_spec(run_file: str | os.PathLike) -> SearchSpec | None:
    """The :class:`SearchSpec` that kd-search recorded beside ``run_file`` (its sidecar), or ``None`` (another
    program wrote it, or a kd-search from before specs were recorded)."""
    from kd_pyserini.search.spec import read_spec

    return read_spec(run_file)


def median_ms(fn: Callable[[T], Any], items: Sequence[T], warmup: int) -> tuple[float, list[Any]]:
    """Call ``fn`` on each item (the first ``warmup`` untimed); the median time in ms and the results."""
    for x in items[:warmup]:
        fn(x)
    times, out = [], []
    for x in items[warmup:] or items:
        t0 = time.perf_counter()
        out.append(fn(x))
        times.append(time.perf_counter() - t0)
    times.sort()
    mid = len(times) // 2
    return 1000.0 * (times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2), out


def _dense_ms(spec: SearchSpec, sample: list[str], warmup: int) -> float:
    import torch

    from kd_pyserini.search import pipeline

    assert spec.dense is not None
    searcher = pipeline.open_dense(spec.dense, spec.encoding, spec.threads)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one query per core: intra-op threads only add overhead for a 30-token query
    try:
        for q in sample:  # warm-up pass: the first query of each length pays for kernel set-up
            searcher.encode(q)
        encode_ms, vectors = median_ms(searcher.encode, sample[warmup:] or sample, 0)
    finally:
        torch.set_num_threads(torch_threads)
    # second pass, after encoding: torch's and FAISS's thread pools never fight over the cores
    hits = spec.hits
    search_ms, _ = median_ms(lambda v: searcher.search_vectors(v, hits), vectors, min(warmup, len(vectors) - 1))
    return encode_ms + search_ms


def _bm25_ms(spec: SearchSpec, sample: list[str], warmup: int) -> float:
    from kd_pyserini.search import pipeline

    assert spec.bm25 is not None
    searcher = pipeline.open_bm25(spec.bm25, threads=1)
    return median_ms(lambda q: searcher.search(q, spec.hits), sample, warmup)[0]


def probe_latency(spec: SearchSpec | None, queries: Sequence[str], n: int = 100, warmup: int = 3) -> float | None:
    """Median single-query latency (ms) of a dense or BM25 search, measured in this process.

    The encoder, index and searcher are loaded first (not timed); then up to ``n`` queries are sent one at a time,
    as a user would send them, after ``warmup`` untimed ones, and the median is taken (robust to other load on the
    machine). Dense: median query-encoding time + median FAISS search time of one query vector (timed in two
    passes, so torch's and FAISS's thread pools do not fight over the cores; encoding on one torch thread, after a
    warm-up pass over the sample); BM25: one Lucene search (one thread). This is the *query latency* of the
    Margin-MSE paper's efficiency figure, without the start-up costs that the command's own elapsed time includes.

    Args:
        spec: the search (:class:`~kd_pyserini.search.spec.SearchSpec`, e.g. :func:`probe_spec` of a run file).
        queries: query texts, in order.
        n: queries timed.
        warmup: untimed queries first.

    Returns:
        Milliseconds per query, or ``None`` for other searches (re-rank stages, hybrid, a candidates file), no spec,
        or no queries.
    """
    if spec is None or not queries or n <= 0 or spec.rerank:
        return None
    sample = list(queries)[: warmup + n]
    if spec.first_stage == "dense" and spec.dense is not None:
        return _dense_ms(spec, sample, warmup)
    if spec.first_stage == "bm25" and spec.bm25 is not None:
        return _bm25_ms(spec, sample, warmup)
    return None


def sidecar_latency(run_file: str | Path) -> tuple[float | None, str | None]:
    """Milliseconds per query that kd-search recorded beside ``run_file``, and where the figure comes from
    (:func:`kd_pyserini.search.sidecar_latency`, the one latency contract); ``(None, None)`` when it recorded none."""
    from kd_pyserini.search import sidecar_latency as read

    return read(run_file)
