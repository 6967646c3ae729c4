"""Fusion with Pyserini's conventions (``ranks="file"``, ``kd-fuse --ranks file``): what ``python -m pyserini.fusion``
does (without ``--resort``), to the last digit and line for line.

``pyserini.fusion`` (Pyserini 1.6, ``pyserini/fusion/_base.py`` and ``pyserini/trectools/_base.py``):

* reads each run with pandas (``TrecRun``): the rows keep *file order* and the ``rank`` column is used as written;
* RRF rescores every row as ``1 / (rrf_k + rank)`` with the file's rank (``RescoreMethod.RRF``); interpolation and
  average scale the scores (``score * alpha``, ``score * (1 - alpha)``, ``score * (1 / n)``); ``normalize``
  min-max-normalises each topic over all its rows (all equal: 1.0);
* ``TrecRun.merge``: each run cut to its first ``depth`` rows per topic (file order, default 1000), the scores of a
  (topic, docid) summed over the runs in run order with pandas' ``groupby().sum()`` (Kahan-compensated summation:
  :func:`kahan_sum`), sorted by topic, score descending and *docid ascending*, cut to ``k`` per topic (default
  1000), ranks 1, 2, ... in that order; written as ``topic Q0 docid rank score tag`` with the shortest round-trip
  text of each score.

This module reproduces those steps over kd_pyserini runs that remember their rank column (:class:`FileRun`, read
by :func:`read_fusion_run`); :mod:`kd_pyserini.fusion` uses it when ``ranks="file"``. Differences that remain, on
purpose: topic ids are kept as written (pandas turns ``007`` into ``7``); a document listed twice for a topic in one
run is refused (pandas would add both lines); fusing a single run is allowed (Pyserini refuses it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence

from kd_pyserini.trec_io import Run, RunWarnings, read_run

__all__ = ["FileRun", "read_fusion_run", "file_ranks", "kahan_sum", "pyserini_topic_order", "merge_like_pyserini",
           "RANKS"]

RANKS = ("file", "score")
"""Where fusion takes each document's rank from: ``file`` (the rank column, Pyserini's conventions) or ``score``
(re-ranked by score in trec_eval order, kd_pyserini's conventions)."""

_INT = re.compile(r"[+-]?\d+")


class FileRun(dict):
    """A run ``{qid: {docid: score}}`` read from a file: each query's documents in file order, plus the file's rank
    column (:attr:`ranks`, ``{qid: {docid: rank}}``) and the path it came from."""

    def __init__(self, data: Mapping[str, Mapping[str, float]] | None = None,
                 ranks: Mapping[str, Mapping[str, int]] | None = None, path: str | os.PathLike | None = None):
        super().__init__(data or {})
        self.ranks: dict[str, dict[str, int]] = {q: dict(r) for q, r in (ranks or {}).items()}
        self.path = None if path is None else str(path)


def read_fusion_run(path: str | os.PathLike, warnings: RunWarnings | None = None) -> FileRun:
    """Read a run for fusion, keeping file order and the rank column (an integer, or a :class:`FormatError`).

    A document listed twice for a query is refused (``file:line`` of both lines): Pyserini would add both lines'
    scores, trec_eval refuses the run.

    Raises:
        kd_pyserini.trec_io.FormatError: a malformed line, a rank that is not an integer, a duplicate document.
    """
    ranks: dict[str, dict[str, int]] = {}
    run = read_run(path, warnings=warnings, duplicates="error", ranks=ranks)
    return FileRun(run, ranks, path)


def file_ranks(run: Mapping[str, Mapping[str, float]], i: int) -> dict[str, dict[str, int]]:
    """The rank column of input run ``i`` (1-based, for messages).

    Raises:
        ValueError: the run was not read from a file (no rank column): use ``ranks="score"`` or
            :func:`read_fusion_run`.
    """
    ranks = getattr(run, "ranks", None)
    if ranks is None or any(set(ranks.get(q, ())) != set(docs) for q, docs in run.items()):
        raise ValueError(f"run {i} has no rank column (not read by kd_pyserini.fusion_files.read_fusion_run): fuse "
                         "with ranks='score' (re-rank by score), or read the run from its file")
    return ranks


def kahan_sum(values: Iterable[float]) -> float:
    """Sum with Kahan compensation, step for step as pandas' ``groupby().sum()`` (``group_sum`` in
    ``pandas/_libs/groupby.pyx``): ``y = v - c; t = s + y; c = (t - s) - y; s = t`` (``c`` reset to 0 when it is
    NaN). For two values this is the plain sum."""
    s = c = 0.0
    for v in values:
        y = v - c
        t = s + y
        c = t - s - y
        if c != c:
            c = 0.0
        s = t
    return s


def pyserini_topic_order(qids: Iterable[str]) -> list[str]:
    """Topics in the order Pyserini writes them: numerically when every id is an integer (pandas reads the column as
    integers), else as strings."""
    qids = list(qids)
    if all(_INT.fullmatch(q) for q in qids):
        return sorted(qids, key=lambda q: (int(q), q))
    return sorted(qids)


def merge_like_pyserini(scored: Sequence[Mapping[str, Mapping[str, float]]], depth: int | None, k: int | None,
                        mnz: bool = False) -> Run:
    """``TrecRun.merge(runs, AggregationMethod.SUM, depth, k)`` over rescored runs whose documents are in file order.

    Args:
        scored: ``{qid: {docid: score}}`` per run, already rescored (RRF, scaled or normalised), in file order.
        depth: rows taken from each run per topic, the first ones in file order (``None``: all).
        k: documents kept per topic after sorting (``None``: all).
        mnz: multiply each sum by the number of runs that have the document within ``depth`` (CombMNZ; not a
            Pyserini method, fused with the same conventions).

    Returns:
        The fused run; topics in :func:`pyserini_topic_order`, each topic's documents by score descending, ties by
        docid ascending, cut to ``k`` (the order and ranks Pyserini writes).
    """
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if k is not None and k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    qids = pyserini_topic_order(dict.fromkeys(q for run in scored for q in run))
    out: Run = {}
    for qid in qids:
        parts: dict[str, list[float]] = {}
        for run in scored:
            docs = run.get(qid, {})
            for n, (doc, s) in enumerate(docs.items()):
                if depth is not None and n >= depth:
                    break
                parts.setdefault(doc, []).append(s)
        fused = {doc: kahan_sum(v) * (len(v) if mnz else 1) for doc, v in parts.items()}
        ordered = sorted(fused.items(), key=lambda kv: kv[0])          # docid ascending ...
        ordered.sort(key=lambda kv: kv[1], reverse=True)               # ... within score descending (stable)
        out[qid] = dict(ordered if k is None else ordered[:k])
    return out
