"""Query latency of a reproduced condition: measured in process, or read from kd-search's sidecar.

:func:`probe_latency` times what a user of a search service waits for: one query at a time, after the encoder, the
index and the searcher are loaded. It takes typed :class:`SearchParams`; :func:`search_params` gets them from a
matrix's ``kd-search ...`` command by parsing it with kd-search's own click command (no second parser to drift).
The searchers are :class:`kd_pyserini.search.DenseSearcher` and :class:`kd_pyserini.search.Bm25Searcher`, the
objects kd-search itself uses. Without a probe, the latency comes from the run's sidecar through the one latency
contract, :func:`kd_pyserini.search.sidecar_latency`.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["SearchParams", "search_params", "probe_latency", "sidecar_latency", "median_ms", "PROBE_SOURCE"]

T = TypeVar("T")

#: the latency source the leaderboard prints for a probed condition.
PROBE_SOURCE = ("dense/bm25: median of {n} single-query searches (encoding + search) in process, after loading "
                "(kd_pyserini.reproduce.probe_latency)")


@dataclass(frozen=True)
class SearchParams:
    """The settings of one ``kd-search`` command that matter for its per-query latency.

    ``None`` means "kd-search's default" (for ``device``, ``threads``, ``query_max_length``, ``ef_search``,
    ``nprobe``: decided by the searcher); ``mode`` ``None`` means the command did not say (or said something
    kd-search does not accept).
    """

    mode: str | None = None
    index: str | None = None
    encoder: str | None = None
    hits: int = 1000
    device: str | None = None
    precision: str = "fp32"
    batch_size: int = 32
    threads: int | None = None
    query_max_length: int | None = None
    ef_search: int | None = None
    nprobe: int | None = None
    k1: float = 0.9
    b: float = 0.4
    check: bool = True

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SearchParams:
        """From kd-search's parsed parameters (``ctx.params``); missing or unparsable values keep the defaults."""
        def get(name: str, kind: type, default: Any = None) -> Any:
            return _typed(params.get(name), kind, default)

        return cls(mode=get("mode", str), index=get("index", os.PathLike) or get("index", str),
                   encoder=get("encoder", str), hits=get("hits", int, 1000), device=get("device", str),
                   precision=get("precision", str, "fp32"), batch_size=get("batch_size", int, 32),
                   threads=get("threads", int), query_max_length=get("query_max_length", int),
                   ef_search=get("ef_search", int), nprobe=get("nprobe", int), k1=get("k1", float, 0.9),
                   b=get("b", float, 0.4), check=not get("ignore_encoder_mismatch", bool, False))


def _typed(value: Any, kind: type, default: Any) -> Any:
    """``value`` when it is a ``kind`` (ints count as floats; paths become strings), else ``default``."""
    if kind is bool:
        return value if isinstance(value, bool) else default
    if isinstance(value, bool) or value is None:
        return default
    if kind is float and isinstance(value, int):
        return float(value)
    if kind is os.PathLike and isinstance(value, os.PathLike):
        return os.fspath(value)
    return value if isinstance(value, kind) else default


def search_params(command: str | Sequence[str]) -> SearchParams | None:
    """The :class:`SearchParams` of a ``kd-search ...`` command line (a string or an argv), or ``None`` for another
    program. The options are parsed by kd-search's own click command (``--opt value``, ``--opt=value``, any order,
    old spellings included); a value kd-search would reject is left at its default (``mode``: ``None``)."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if not argv or argv[0] != "kd-search":
        return None
    from kd_pyserini.cli.search import main as kd_search

    ctx = kd_search.make_context("kd-search", argv[1:], resilient_parsing=True)
    return SearchParams.from_params(ctx.params)


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


def _dense_ms(p: SearchParams, sample: list[str], warmup: int) -> float:
    import torch

    from kd_pyserini.search import DenseSearcher

    searcher = DenseSearcher(p.index, p.encoder, device=p.device, precision=p.precision, batch_size=p.batch_size,
                             threads=p.threads, query_max_length=p.query_max_length, ef_search=p.ef_search,
                             nprobe=p.nprobe, check=p.check)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one query per core: intra-op threads only add overhead for a 30-token query
    try:
        for q in sample:  # warm-up pass: the first query of each length pays for kernel set-up
            searcher.encode(q)
        encode_ms, vectors = median_ms(searcher.encode, sample[warmup:] or sample, 0)
    finally:
        torch.set_num_threads(torch_threads)
    # second pass, after encoding: torch's and FAISS's thread pools never fight over the cores
    search_ms, _ = median_ms(lambda v: searcher.search_vectors(v, p.hits), vectors, min(warmup, len(vectors) - 1))
    return encode_ms + search_ms


def _bm25_ms(p: SearchParams, sample: list[str], warmup: int) -> float:
    from kd_pyserini.search import Bm25Searcher

    searcher = Bm25Searcher(p.index, k1=p.k1, b=p.b, threads=1)
    return median_ms(lambda q: searcher.search(q, p.hits), sample, warmup)[0]


def probe_latency(search: SearchParams | str, queries: Sequence[str], n: int = 100, warmup: int = 3) -> float | None:
    """Median single-query latency (ms) of a dense or BM25 search, measured in this process.

    The encoder, index and searcher are loaded first (not timed); then up to ``n`` queries are sent one at a time,
    as a user would send them, after ``warmup`` untimed ones, and the median is taken (robust to other load on the
    machine). Dense: median query-encoding time + median FAISS search time of one query vector (timed in two
    passes, so torch's and FAISS's thread pools do not fight over the cores; encoding on one torch thread, after a
    warm-up pass over the sample); BM25: one Lucene search. This is the *query latency* of the Margin-MSE paper's
    efficiency figure, without the start-up costs that the command's own elapsed time includes.

    Args:
        search: the search's settings, or a ``kd-search ...`` command line (read by :func:`search_params`).
        queries: query texts, in order.
        n: queries timed.
        warmup: untimed queries first.

    Returns:
        Milliseconds per query, or ``None`` for other modes (re-ranking, hybrid, none or an unknown one), a dense
        search without ``index``/``encoder``, a BM25 search without ``index``, or no queries.
    """
    params = search_params(search) if isinstance(search, str) else search
    if params is None or not queries or n <= 0:
        return None
    sample = list(queries)[: warmup + n]
    if params.mode == "dense" and params.encoder and params.index:
        return _dense_ms(params, sample, warmup)
    if params.mode == "bm25" and params.index:
        return _bm25_ms(params, sample, warmup)
    return None


def sidecar_latency(run_file: str | Path) -> tuple[float | None, str | None]:
    """Milliseconds per query that kd-search recorded beside ``run_file``, and where the figure comes from
    (:func:`kd_pyserini.search.sidecar_latency`, the one latency contract); ``(None, None)`` when it recorded none."""
    from kd_pyserini.search import sidecar_latency as read

    return read(run_file)
