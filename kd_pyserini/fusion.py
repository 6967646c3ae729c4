"""Fusion of retrieval runs: dense-sparse interpolation, RRF, CombSUM and CombMNZ, plus grid-search tuning.

All functions are pure: they take runs ``{qid: {docid: score}}`` and return a new run, never modifying their inputs.
Scores in and out are finite: a NaN or infinite input score, or a fused score that overflows, raises ``ValueError``
(a NaN has no rank order, and trec_eval would rank it arbitrarily).
Two conventions, chosen by ``ranks`` (RRF, CombSUM, CombMNZ; kd-fuse's ``--ranks``):

* ``"score"`` (kd_pyserini's, the default of these functions): each input is re-ranked by score in trec_eval order
  (score descending, ties by docid descending, :func:`kd_pyserini.trec_io.rank`), optionally cut to its top
  ``depth``; every fused query is ranked the same way, truncated to the top ``k`` (default 1000) and returned as a
  dict whose insertion order *is* that ranking. Queries appear in first-seen order over the input runs.
* ``"file"`` (Pyserini's, ``python -m pyserini.fusion`` without ``--resort``; kd-fuse's default): the runs must come
  from files (:func:`kd_pyserini.fusion_files.read_fusion_run`); each document's RRF rank is the file's rank column,
  each input is cut to its first ``depth`` lines, sums are pandas' (Kahan) sums, and fused ties are broken by docid
  *ascending*, the order and ranks Pyserini writes (:mod:`kd_pyserini.fusion_files`). The output equals
  pyserini.fusion's line for line: ``rrf`` is its ``rrf``; ``combsum`` with ``norm="none"`` and weights
  ``(alpha, 1 - alpha)`` its ``interpolation``, with weights ``1/n`` its ``average``, with ``norm="minmax"`` its
  ``normalize``.

On runs without tied scores whose rank column is the score order (every run kd_pyserini or Pyserini writes), the two
agree but for the order of fused ties. A query that only some runs have is fused from the runs that have it.

Methods (one dispatch table, :data:`METHODS`, used by :func:`fuse`):

* ``interpolation`` -- :func:`interpolate`, Pyserini's ``HybridSearcher`` fusion, ``alpha * sparse + dense``.
* ``rrf`` -- :func:`rrf`, reciprocal rank fusion (Cormack et al., SIGIR 2009).
* ``combsum`` / ``combmnz`` -- :func:`comb_sum`, :func:`comb_mnz` (Fox & Shaw, TREC-2 1994) over scores normalised
  per query by one of :data:`NORMALIZATIONS` (``minmax``, ``zscore``, ``max``, ``sum``, ``none``).

:func:`tune` grid-searches the one free parameter of a method (alpha, the RRF constant, or the run weights) against
qrels with :func:`kd_pyserini.evaluation.evaluate`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kd_pyserini.fusion_files import RANKS, FileRun, file_ranks, merge_like_pyserini, read_fusion_run
from kd_pyserini.trec_io import Qrels, Run, rank

__all__ = ["interpolate", "rrf", "comb_sum", "comb_mnz", "fuse", "tune", "normalize", "NORMALIZATIONS", "METHODS",
           "default_grid", "DEFAULT_K", "RANKS", "FileRun", "read_fusion_run"]

DEFAULT_K = 1000
"""Default number of documents kept per query in every fused run."""

Scores = Mapping[str, float]


# ----------------------------------------------------------------------------------------------------------- helpers

def _top(docs: Mapping[str, float], k: int | None) -> dict[str, float]:
    """One query's scores as a dict in trec_eval order, cut to ``k`` (``None``: all)."""
    if k is not None and k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return dict(rank(docs, k))


def _qids(runs: Sequence[Mapping[str, Scores]]) -> list[str]:
    """The union of query ids, in first-seen order (deterministic for given inputs)."""
    return list(dict.fromkeys(q for run in runs for q in run))


def _check_inputs(runs: Sequence[Mapping[str, Scores]], method: str) -> None:
    """Refuse NaN and infinite input scores: they have no rank order and poison every sum they enter."""
    for i, run in enumerate(runs, 1):
        for qid, docs in run.items():
            for docid, score in docs.items():
                if not math.isfinite(score):
                    raise ValueError(f"{method}: run {i}, query {qid}, document {docid}: score {score} is not a "
                                     "finite number; fix the run (fusion needs finite scores)")


def _check_output(run: Run, method: str) -> Run:
    """Refuse to return a fused score that is not finite (e.g. an overflow of huge input scores)."""
    for qid, docs in run.items():
        for docid, score in docs.items():
            if not math.isfinite(score):
                raise ValueError(f"{method}: the fused score of query {qid}, document {docid} is {score} (the input "
                                 "scores overflow a double?); rescale the runs' scores or use --method rrf")
    return run


def _check_ranks(ranks: str) -> None:
    if ranks not in RANKS:
        raise ValueError(f"ranks must be one of {', '.join(RANKS)}, got {ranks!r}")


def _by_score(docs: Mapping[str, float], depth: int | None) -> dict[str, float]:
    """One query's input list re-ranked by score (trec_eval order), cut to ``depth``."""
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return dict(rank(docs, depth))


def _weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ValueError(f"{len(weights)} weights for {n} runs; give one weight per run")
    return weights


# ----------------------------------------------------------------------------------------------------- normalisation

def _norm_minmax(docs: Scores) -> dict[str, float]:
    """``(s - min) / (max - min)`` into [0, 1]; a list whose scores are all equal (one hit included) maps to 1.0."""
    if not docs:
        return {}
    lo, hi = min(docs.values()), max(docs.values())
    if hi == lo:
        return {d: 1.0 for d in docs}
    return {d: (s - lo) / (hi - lo) for d, s in docs.items()}


def _norm_zscore(docs: Scores) -> dict[str, float]:
    """``(s - mean) / std`` (population std); all-equal scores (one hit included) map to 0.0."""
    if not docs:
        return {}
    n = len(docs)
    mean = sum(docs.values()) / n
    std = math.sqrt(sum((s - mean) ** 2 for s in docs.values()) / n)
    if std == 0.0:
        return {d: 0.0 for d in docs}
    return {d: (s - mean) / std for d, s in docs.items()}


def _norm_max(docs: Scores) -> dict[str, float]:
    """``s / |max|`` (1.0 at the top for non-negative scores such as BM25); a zero maximum leaves scores as they are.

    Dividing by the absolute value keeps the order even for negative scores (e.g. MS MARCO ``-rank`` scores).
    """
    if not docs:
        return {}
    top = abs(max(docs.values()))
    if top == 0.0:
        return dict(docs)
    return {d: s / top for d, s in docs.items()}


def _norm_sum(docs: Scores) -> dict[str, float]:
    """``(s - min) / sum(s - min)`` (shifted to be non-negative, as ranx does); all-equal scores map to ``1/n``."""
    if not docs:
        return {}
    lo = min(docs.values())
    total = sum(s - lo for s in docs.values())
    if total == 0.0:
        return {d: 1.0 / len(docs) for d in docs}
    return {d: (s - lo) / total for d, s in docs.items()}


def _norm_none(docs: Scores) -> dict[str, float]:
    """The raw scores."""
    return dict(docs)


NORMALIZATIONS: dict[str, Callable[[Scores], dict[str, float]]] = {
    "minmax": _norm_minmax,
    "zscore": _norm_zscore,
    "max": _norm_max,
    "sum": _norm_sum,
    "none": _norm_none,
}
"""Per-query score normalisations by name. None of them divides by zero: degenerate lists (one hit, or all scores
equal) get the constant documented on each function."""


def normalize(run: Mapping[str, Scores], norm: str = "minmax") -> Run:
    """Normalise every query of a run with one of :data:`NORMALIZATIONS`.

    Args:
        run: ``{qid: {docid: score}}``.
        norm: ``minmax``, ``zscore``, ``max``, ``sum`` or ``none``.

    Returns:
        A new run with normalised scores (document order within each query unchanged).

    Raises:
        ValueError: an unknown ``norm``.
    """
    try:
        fn = NORMALIZATIONS[norm]
    except KeyError:
        raise ValueError(f"unknown normalisation {norm!r}; choose one of {', '.join(NORMALIZATIONS)}") from None
    return {qid: fn(docs) for qid, docs in run.items()}


# ----------------------------------------------------------------------------------------------------- interpolation

def _hybrid_query(sparse: Scores, dense: Scores, alpha: float, normalize: bool,
                  weight_on_dense: bool) -> dict[str, float]:
    """One query of :func:`interpolate`; the arithmetic is Pyserini's, expression for expression."""
    min_d = min(dense.values()) if dense else 0
    max_d = max(dense.values()) if dense else 1
    min_s = min(sparse.values()) if sparse else 0
    max_s = max(sparse.values()) if sparse else 1
    mid_d, range_d = (min_d + max_d) / 2, max_d - min_d
    mid_s, range_s = (min_s + max_s) / 2, max_s - min_s
    fused: dict[str, float] = {}
    for doc in itertools.chain(sparse, (d for d in dense if d not in sparse)):
        s = sparse.get(doc, min_s)
        d = dense.get(doc, min_d)
        if normalize:
            # Pyserini centres on the midpoint and divides by the range, into [-0.5, 0.5]; a degenerate list
            # (one hit, or all scores equal) has no range and sits at the centre, 0.0, instead of dividing by zero.
            s = (s - mid_s) / range_s if range_s else 0.0
            d = (d - mid_d) / range_d if range_d else 0.0
        fused[doc] = alpha * s + d if not weight_on_dense else s + alpha * d
    return fused


def interpolate(sparse: Mapping[str, Scores], dense: Mapping[str, Scores], alpha: float = 0.1,
                normalize: bool = False, k: int = DEFAULT_K, weight_on_dense: bool = False) -> Run:
    """Dense-sparse hybrid by linear interpolation, exactly as Pyserini's ``HybridSearcher`` fuses.

    ``fused = alpha * sparse + dense`` (or ``sparse + alpha * dense`` with ``weight_on_dense``) over the union of
    the two lists of a query; a document missing from one list gets that list's minimum score for the query (0 when
    the list is empty). With ``normalize``, each list's scores (after that fill) become
    ``(s - (min + max) / 2) / (max - min)``, Pyserini's centred min-max into [-0.5, 0.5]. Where Pyserini raises
    ``ZeroDivisionError`` -- a one-hit list or a list of equal scores -- those scores normalise to the constant
    0.0 (the centre), so the other list alone orders the documents. Otherwise the numbers are bit-for-bit
    Pyserini's (``HybridSearcher._hybrid_results``, Pyserini 1.6); only the order of tied scores differs: ours is
    trec_eval's (docid descending), Pyserini's follows set iteration order.

    Args:
        sparse: the sparse (e.g. BM25) run, ``{qid: {docid: score}}``.
        dense: the dense (e.g. TAS-B) run.
        alpha: the interpolation weight (Pyserini's default 0.1; on the sparse side unless ``weight_on_dense``).
        normalize: Pyserini's ``normalization`` flag (centred min-max, see above).
        k: documents kept per query.
        weight_on_dense: put ``alpha`` on the dense score instead (Pyserini's ``weight_on_dense``).

    Returns:
        The fused run, each query in trec_eval order and cut to ``k``.
    """
    _check_inputs([sparse, dense], "interpolation")
    empty: dict[str, float] = {}
    return _check_output({qid: _top(_hybrid_query(sparse.get(qid, empty), dense.get(qid, empty), alpha, normalize,
                                                  weight_on_dense), k)
                          for qid in _qids([sparse, dense])}, "interpolation")


# -------------------------------------------------------------------------------------------------------------- RRF

def rrf(runs: Sequence[Mapping[str, Scores]], k: float = 60, weights: Sequence[float] | None = None,
        cutoff: int = DEFAULT_K, ranks: str = "score", depth: int | None = None) -> Run:
    """Reciprocal rank fusion: ``score(d) = sum_i w_i / (k + rank_i(d))`` over the runs that retrieved ``d``.

    Cormack, Clarke & Buettcher, "Reciprocal Rank Fusion outperforms Condorcet and individual Rank Learning
    Methods", SIGIR 2009. Ranks are 1-based.

    Args:
        runs: the runs to fuse (at least one).
        k: the RRF constant (60 in the paper); note it is *not* the output depth, which is ``cutoff``.
        weights: one weight per run (default all 1.0: plain RRF).
        cutoff: documents kept per query.
        ranks: ``"score"``: ranks in trec_eval order (score descending, docid descending on ties), the ranks
            trec_eval would evaluate; ``"file"``: the runs' rank column, exactly as ``pyserini.fusion`` (the runs
            must be :class:`~kd_pyserini.fusion_files.FileRun`); see the module docstring.
        depth: documents taken from each input per query (``"score"``: its top ``depth``; ``"file"``: its first
            ``depth`` lines); ``None``: all.

    Returns:
        The fused run, each query cut to ``cutoff`` (``"score"``: in trec_eval order; ``"file"``: in Pyserini's).
    """
    if not runs:
        raise ValueError("rrf needs at least one run")
    _check_ranks(ranks)
    _check_inputs(runs, "rrf")
    ws = _weights(weights, len(runs))
    if ranks == "file":
        scored = []
        for i, (w, run) in enumerate(zip(ws, runs), 1):
            col = file_ranks(run, i)
            scored.append({q: {d: w / (k + col[q][d]) for d in docs} for q, docs in run.items()})
        return _check_output(merge_like_pyserini(scored, depth, cutoff), "rrf")
    out: Run = {}
    for qid in _qids(runs):
        fused: dict[str, float] = {}
        for w, run in zip(ws, runs):
            for r, doc in enumerate(_by_score(run.get(qid, {}), depth), 1):
                fused[doc] = fused.get(doc, 0.0) + w / (k + r)
        out[qid] = _top(fused, cutoff)
    return _check_output(out, "rrf")


# ------------------------------------------------------------------------------------------------ CombSUM / CombMNZ

def _comb(runs: Sequence[Mapping[str, Scores]], weights: Sequence[float] | None, norm: str, k: int,
          mnz: bool, ranks: str = "score", depth: int | None = None) -> Run:
    if not runs:
        raise ValueError("fusion needs at least one run")
    name = "combmnz" if mnz else "combsum"
    _check_ranks(ranks)
    _check_inputs(runs, name)
    ws = _weights(weights, len(runs))
    normed = [normalize(run, norm) for run in runs]  # each query's whole list, as Pyserini normalises
    if ranks == "file":
        for i, run in enumerate(runs, 1):
            file_ranks(run, i)
        scored = [{q: {d: w * s for d, s in docs.items()} for q, docs in run.items()} for w, run in zip(ws, normed)]
        return _check_output(merge_like_pyserini(scored, depth, k, mnz=mnz), name)
    out: Run = {}
    for qid in _qids(runs):
        fused: dict[str, float] = {}
        hits: dict[str, int] = {}
        for w, run, raw in zip(ws, normed, runs):
            docs = run.get(qid, {})
            for doc in (_by_score(raw.get(qid, {}), depth) if depth is not None else docs):
                fused[doc] = fused.get(doc, 0.0) + w * docs[doc]
                hits[doc] = hits.get(doc, 0) + 1
        if mnz:
            fused = {doc: s * hits[doc] for doc, s in fused.items()}
        out[qid] = _top(fused, k)
    return _check_output(out, name)


def comb_sum(runs: Sequence[Mapping[str, Scores]], weights: Sequence[float] | None = None, norm: str = "minmax",
             k: int = DEFAULT_K, ranks: str = "score", depth: int | None = None) -> Run:
    """CombSUM: ``score(d) = sum_i w_i * norm_i(d)`` over the runs that retrieved ``d`` (others contribute 0).

    Fox & Shaw, "Combination of Multiple Searches", TREC-2 (1994). Scores are normalised per run and query first.

    Args:
        runs: the runs to fuse (at least one).
        weights: one weight per run (default all 1.0).
        norm: a key of :data:`NORMALIZATIONS` (``minmax``, ``zscore``, ``max``, ``sum``, ``none``).
        k: documents kept per query.
        ranks: ``"score"`` or ``"file"`` (Pyserini's conventions: with ``norm="none"`` and weights ``(a, 1 - a)``
            this is ``pyserini.fusion --method interpolation --alpha a``, with weights ``1/n`` its ``average``, with
            ``norm="minmax"`` its ``normalize``); see the module docstring.
        depth: documents taken from each input per query (see :func:`rrf`); ``None``: all.

    Returns:
        The fused run, each query cut to ``k`` (``"score"``: in trec_eval order; ``"file"``: in Pyserini's).
    """
    return _comb(runs, weights, norm, k, mnz=False, ranks=ranks, depth=depth)


def comb_mnz(runs: Sequence[Mapping[str, Scores]], weights: Sequence[float] | None = None, norm: str = "minmax",
             k: int = DEFAULT_K, ranks: str = "score", depth: int | None = None) -> Run:
    """CombMNZ: CombSUM times the number of runs that retrieved the document.

    Fox & Shaw, "Combination of Multiple Searches", TREC-2 (1994).

    Args:
        runs: the runs to fuse (at least one).
        weights: one weight per run (default all 1.0); the hit count is not weighted.
        norm: a key of :data:`NORMALIZATIONS`.
        k: documents kept per query.
        ranks: ``"score"`` or ``"file"`` (see :func:`comb_sum`; the hit count is taken within ``depth``).
        depth: documents taken from each input per query; ``None``: all.

    Returns:
        The fused run, each query cut to ``k`` (``"score"``: in trec_eval order; ``"file"``: in Pyserini's).
    """
    return _comb(runs, weights, norm, k, mnz=True, ranks=ranks, depth=depth)


# --------------------------------------------------------------------------------------------------------- dispatch

def _fuse_interpolation(runs: Sequence[Mapping[str, Scores]], k: int = DEFAULT_K, alpha: float = 0.1,
                        normalize: bool = False, weight_on_dense: bool = False) -> Run:
    if len(runs) != 2:
        raise ValueError(f"interpolation fuses exactly two runs (sparse first, then dense), got {len(runs)}")
    return interpolate(runs[0], runs[1], alpha=alpha, normalize=normalize, k=k, weight_on_dense=weight_on_dense)


def _fuse_rrf(runs: Sequence[Mapping[str, Scores]], k: int = DEFAULT_K, rrf_k: float = 60,
              weights: Sequence[float] | None = None, ranks: str = "score", depth: int | None = None) -> Run:
    return rrf(runs, k=rrf_k, weights=weights, cutoff=k, ranks=ranks, depth=depth)


def _fuse_combsum(runs: Sequence[Mapping[str, Scores]], k: int = DEFAULT_K, weights: Sequence[float] | None = None,
                  norm: str = "minmax", ranks: str = "score", depth: int | None = None) -> Run:
    return comb_sum(runs, weights=weights, norm=norm, k=k, ranks=ranks, depth=depth)


def _fuse_combmnz(runs: Sequence[Mapping[str, Scores]], k: int = DEFAULT_K, weights: Sequence[float] | None = None,
                  norm: str = "minmax", ranks: str = "score", depth: int | None = None) -> Run:
    return comb_mnz(runs, weights=weights, norm=norm, k=k, ranks=ranks, depth=depth)


METHODS: dict[str, Callable[..., Run]] = {
    "rrf": _fuse_rrf,
    "interpolation": _fuse_interpolation,
    "combsum": _fuse_combsum,
    "combmnz": _fuse_combmnz,
}
"""Fusion methods by name, each ``f(runs, k=1000, **params)``; the parameters each accepts:

* ``rrf``: ``rrf_k`` (60), ``weights``, ``ranks`` (``"score"``), ``depth`` (``None``);
* ``interpolation``: ``alpha`` (0.1), ``normalize`` (False), ``weight_on_dense`` (False); exactly two runs, sparse
  first (Pyserini's HybridSearcher, which has no rank column: no ``ranks``/``depth``);
* ``combsum`` / ``combmnz``: ``weights``, ``norm`` (``minmax``), ``ranks`` (``"score"``), ``depth`` (``None``).
"""


def fuse(runs: Sequence[Mapping[str, Scores]], method: str = "rrf", k: int = DEFAULT_K, **params: Any) -> Run:
    """Fuse runs with one of :data:`METHODS`.

    Args:
        runs: the runs to fuse; for ``interpolation`` exactly two, the sparse run first.
        method: ``rrf``, ``interpolation``, ``combsum`` or ``combmnz``.
        k: documents kept per query (always the output depth; RRF's constant is ``rrf_k``).
        **params: the method's parameters (see :data:`METHODS`).

    Returns:
        The fused run, each query in trec_eval order and cut to ``k``.

    Raises:
        ValueError: an unknown method, or a parameter the method does not take.
    """
    try:
        fn = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown fusion method {method!r}; choose one of {', '.join(METHODS)}") from None
    try:
        return fn(list(runs), k=k, **params)
    except TypeError as e:  # an unexpected keyword: say which method and what it takes
        if "unexpected keyword" not in str(e):
            raise
        raise ValueError(f"{method}: {e}; see kd_pyserini.fusion.METHODS") from None


# ----------------------------------------------------------------------------------------------------------- tuning

def _frange(lo: float, hi: float, step: float) -> list[float]:
    n = int(round((hi - lo) / step))
    return [round(lo + i * step, 10) for i in range(n + 1)]


def _simplex(n: int, step: float) -> list[tuple[float, ...]]:
    """Weight vectors on the grid ``step`` that sum to 1 (the scale of the weights does not change the ranking)."""
    m = int(round(1 / step))
    return [tuple(round(c / m, 10) for c in combo)
            for combo in itertools.product(range(m + 1), repeat=n) if sum(combo) == m]


def default_grid(method: str, n_runs: int = 2) -> list[dict[str, Any]]:
    """The parameter grid :func:`tune` searches when none is given.

    * ``interpolation``: ``alpha`` in 0.0, 0.05, ..., 2.0;
    * ``rrf``: ``rrf_k`` in 1, 2, 5, 10, 20, 30, 40, 60, 80, 100, 200, 500, 1000;
    * ``combsum`` / ``combmnz``: ``weights`` summing to 1 -- for two runs ``(w, 1 - w)`` with ``w`` in
      0.0, 0.05, ..., 1.0 (a 1-D grid over the first weight); for more, the simplex on a 0.1 grid.
    """
    if method == "interpolation":
        return [{"alpha": a} for a in _frange(0.0, 2.0, 0.05)]
    if method == "rrf":
        return [{"rrf_k": c} for c in (1, 2, 5, 10, 20, 30, 40, 60, 80, 100, 200, 500, 1000)]
    if method in ("combsum", "combmnz"):
        if n_runs == 2:
            return [{"weights": (w, round(1 - w, 10))} for w in _frange(0.0, 1.0, 0.05)]
        return [{"weights": ws} for ws in _simplex(n_runs, 0.1)]
    raise ValueError(f"unknown fusion method {method!r}; choose one of {', '.join(METHODS)}")


def _evaluate(run: Run, qrels: Qrels, metric: str) -> float:
    from kd_pyserini.evaluation import evaluate

    values = evaluate(run, qrels, [metric])
    # keyed by the canonical name, which may be spelled differently from ``metric``
    return float(values[metric] if metric in values else next(iter(values.values())))


def tune(runs: Sequence[Mapping[str, Scores]], qrels: Qrels, method: str, metric: str = "nDCG@10",
         grid: Sequence[Mapping[str, Any]] | None = None, k: int = DEFAULT_K, progress: bool | None = None,
         **fixed: Any) -> tuple[dict[str, Any], list[tuple[dict[str, Any], float]]]:
    """Grid-search one method's parameters for the best ``metric`` on ``qrels``.

    Args:
        runs: the runs to fuse (for ``interpolation``, sparse first).
        qrels: ``{qid: {docid: grade}}``.
        method: a key of :data:`METHODS`.
        metric: an ir_measures-style name understood by :func:`kd_pyserini.evaluation.evaluate`
            (``nDCG@10``, ``RR(rel=2)@10``, ``AP``, ...).
        grid: the parameter settings to try, e.g. ``[{"alpha": 0.1}, {"alpha": 0.2}]``; default
            :func:`default_grid`.
        k: output depth of every fused run.
        progress: a bar over the grid on stderr (``None``: when stderr is a terminal; see kd_pyserini.progress).
        **fixed: parameters held fixed for every setting (e.g. ``normalize=True`` or ``norm="zscore"``).

    Returns:
        ``(best_params, table)``: the best setting merged with ``fixed`` (the first in grid order among equal
        scores), and ``[(params, score), ...]`` in grid order.

    Raises:
        ValueError: an empty grid, qrels that share no query with the runs, or an unknown metric or method.
    """
    settings = list(grid) if grid is not None else default_grid(method, len(runs))
    if not settings:
        raise ValueError("empty grid")
    if not any(q in run for run in runs for q in qrels):
        raise ValueError("the runs answer none of the qrels' queries: every setting would score 0 "
                         "(wrong qrels for these runs?)")
    from kd_pyserini.progress import progress_bar

    table: list[tuple[dict[str, Any], float]] = []
    for params in progress_bar(settings, desc=f"tuning {method}", unit="setting", progress=progress):
        merged = {**fixed, **params}
        table.append((merged, _evaluate(fuse(runs, method, k=k, **merged), qrels, metric)))
    best = max(range(len(table)), key=lambda i: (table[i][1], -i))
    return dict(table[best][0]), table
