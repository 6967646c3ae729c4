"""Retrieval evaluation with trec_eval's exact semantics (``trec_eval -c``), measures named as ir_measures names them.

Everything here is a pure function over in-memory runs and qrels (``{qid: {docid: score}}`` and
``{qid: {docid: grade}}``, the forms :mod:`kd_pyserini.trec_io` reads); the numbers come from ``pytrec_eval``
(the C trec_eval code) with three things added so they equal Java/C ``trec_eval -c`` to the last digit:

* **-c**: the mean is over *every* query in the qrels; a judged query the run does not answer scores 0
  (pytrec_eval alone leaves it out). Run queries without judgements are ignored, as trec_eval ignores them.
  For TREC-DL 2020, 200 topics were released and 54 judged: the mean is over the 54.
* **cut-offs pytrec_eval lacks** (``RR@k``, i.e. ``trec_eval -M k -m recip_rank``): the run is cut to its top ``k``
  in trec_eval order (score descending, ties by docid descending, :func:`kd_pyserini.trec_io.rank`) before
  evaluation, exactly what ``-M k`` does.
* **relevance levels** (``RR(rel=2)@10``, ``AP(rel=2)``, ``R(rel=2)@1000``): ``trec_eval -l 2``. nDCG always uses
  the graded judgements as gains (``ndcg_cut``) and takes no ``rel``.

Supported measures (ir_measures spelling; family names are case-insensitive, ``MRR``, ``MAP`` and ``Recall`` are
accepted as aliases and ``@1K`` as ``@1000``):

============================  =========================================
measure                       trec_eval
============================  =========================================
``nDCG@k`` / ``nDCG``         ``-m ndcg_cut.k`` / ``-m ndcg``
``RR[(rel=N)][@k]``           ``[-l N] [-M k] -m recip_rank``
``AP[(rel=N)][@k]``           ``[-l N] -m map`` / ``-m map_cut.k``
``R[(rel=N)]@k``              ``[-l N] -m recall.k``
``P[(rel=N)]@k``              ``[-l N] -m P.k``
``Success[(rel=N)]@k``        ``[-l N] -m success.k``
============================  =========================================

Significance tests compare per-query values (with the ``-c`` zeros) of each run against the first one: a paired
t-test (:func:`paired_ttest`) or a seeded paired randomisation (sign-flip) test (:func:`randomization_test`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from kd_pyserini.errors import KdError
from kd_pyserini.resources import BENCHMARKS as _RESOURCE_BENCHMARKS
from kd_pyserini.trec_io import Run, RunWarnings, qid_order, rank, read_run

__all__ = [
    "Measure", "MeasureError", "parse_measure", "parse_measures", "trec_eval_args",
    "evaluate", "evaluate_per_query",
    "BENCHMARKS", "BENCHMARK_ALIASES", "resolve_benchmark", "official_measures",
    "InputWarnings", "check_inputs", "read_run_checked",
    "paired_ttest", "randomization_test", "Comparison", "compare_runs", "SIGNIFICANCE_TESTS",
]

# --------------------------------------------------------------------------------------------------------------
# Measures
# --------------------------------------------------------------------------------------------------------------

#: family -> (trec_eval measure without cut-off, with cut-off, cut-off required, accepts rel)
_FAMILIES: dict[str, tuple[str | None, str | None, bool, bool]] = {
    "nDCG": ("ndcg", "ndcg_cut", False, False),
    "RR": ("recip_rank", "recip_rank", False, True),  # the cut-off is applied by truncating the run (-M k)
    "AP": ("map", "map_cut", False, True),
    "R": (None, "recall", True, True),
    "P": (None, "P", True, True),
    "Success": (None, "success", True, True),
}
_FAMILY_ALIASES = {"ndcg": "nDCG", "rr": "RR", "mrr": "RR", "ap": "AP", "map": "AP", "r": "R", "recall": "R",
                   "p": "P", "precision": "P", "success": "Success"}
_MEASURE_RE = re.compile(r"^\s*(?P<fam>[A-Za-z]+)\s*(?:\((?P<params>[^()]*)\))?\s*"
                         r"(?:@\s*(?P<k>\d+)\s*(?P<kilo>[kK])?)?\s*$")
SUPPORTED_FORMS = ("nDCG[@k], RR[(rel=N)][@k], AP[(rel=N)][@k], R[(rel=N)]@k, P[(rel=N)]@k, Success[(rel=N)]@k "
                   "(e.g. nDCG@10, RR(rel=2)@10, R@1000, AP(rel=2))")


class MeasureError(KdError, ValueError):
    """A measure name that cannot be parsed or is not supported; the message lists the supported forms."""


@dataclass(frozen=True)
class Measure:
    """One evaluation measure, e.g. ``RR(rel=2)@10`` = ``Measure("RR", cutoff=10, rel=2)``.

    Attributes:
        name: the measure family, ir_measures spelling: ``nDCG``, ``RR``, ``AP``, ``R``, ``P`` or ``Success``.
        cutoff: the rank cut-off ``k`` (``@k``), or ``None`` for the whole ranking.
        rel: the minimum grade that counts as relevant (trec_eval ``-l``); 1 by default.
    """

    name: str
    cutoff: int | None = None
    rel: int = 1

    def __post_init__(self) -> None:
        if self.name not in _FAMILIES:
            raise MeasureError(f"unknown measure family {self.name!r}; supported: {SUPPORTED_FORMS}")
        plain, _, needs_cut, takes_rel = _FAMILIES[self.name]
        if self.cutoff is None and needs_cut:
            raise MeasureError(f"{self.name} needs a cut-off ({self.name}@k); supported: {SUPPORTED_FORMS}")
        if self.cutoff is not None and self.cutoff < 1:
            raise MeasureError(f"cut-off must be >= 1, got {self.cutoff}")
        if self.rel != 1 and not takes_rel:
            raise MeasureError(f"{self.name} takes no rel parameter: nDCG uses the graded judgements as gains")

    def __str__(self) -> str:
        rel = f"(rel={self.rel})" if self.rel != 1 else ""
        cut = f"@{self.cutoff}" if self.cutoff is not None else ""
        return f"{self.name}{rel}{cut}"

    @property
    def _trec(self) -> str:
        plain, cut, _, _ = _FAMILIES[self.name]
        if self.cutoff is None or self.name == "RR":
            return plain  # type: ignore[return-value]
        return f"{cut}.{self.cutoff}"

    @property
    def _key(self) -> str:
        """The key pytrec_eval reports the measure under."""
        return self._trec.replace(".", "_")

    @property
    def _truncate(self) -> int | None:
        """Cut the run to this many documents first (trec_eval ``-M``): RR@k only."""
        return self.cutoff if self.name == "RR" else None


def parse_measure(name: str | Measure) -> Measure:
    """Parse an ir_measures-style measure name.

    Args:
        name: e.g. ``"nDCG@10"``, ``"RR(rel=2)@10"``, ``"R@1000"``, ``"AP(rel=2)"``, ``"MRR@10"``, ``"R@1K"``;
            a :class:`Measure` is returned unchanged.

    Returns:
        The :class:`Measure`; ``str()`` of it is the canonical spelling (``"MRR@10"`` -> ``"RR@10"``).

    Raises:
        MeasureError: unknown family, unknown parameter, a missing required cut-off, or ``rel`` on nDCG.
    """
    if isinstance(name, Measure):
        return name
    m = _MEASURE_RE.match(name)
    if not m:
        raise MeasureError(f"cannot parse measure {name!r}; supported: {SUPPORTED_FORMS}")
    fam = _FAMILY_ALIASES.get(m.group("fam").lower())
    if fam is None:
        raise MeasureError(f"unknown measure {m.group('fam')!r} in {name!r}; supported: {SUPPORTED_FORMS}")
    _, _, needs_cut, takes_rel = _FAMILIES[fam]
    rel = 1
    if m.group("params") is not None and m.group("params").strip():
        for param in m.group("params").split(","):
            key, eq, value = (s.strip() for s in param.partition("="))
            if key != "rel" or not eq or not re.fullmatch(r"-?\d+", value):
                raise MeasureError(f"unsupported parameter {param.strip()!r} in {name!r}: the only parameter is "
                                   f"rel=N (an integer grade); supported: {SUPPORTED_FORMS}")
            rel = int(value)
        if not takes_rel:
            raise MeasureError(f"{fam} takes no rel parameter ({name!r}): nDCG uses the graded judgements as "
                               f"gains; supported: {SUPPORTED_FORMS}")
    cutoff = None
    if m.group("k") is not None:
        cutoff = int(m.group("k")) * (1000 if m.group("kilo") else 1)
        if cutoff < 1:
            raise MeasureError(f"cut-off must be >= 1 in {name!r}")
    elif needs_cut:
        raise MeasureError(f"{fam} needs a cut-off ({fam}@k, e.g. {fam}@1000) in {name!r}; "
                           f"supported: {SUPPORTED_FORMS}")
    return Measure(fam, cutoff, rel)


def _split_top_level(spec: str) -> list[str]:
    """Split on commas that are not inside parentheses (``"RR(rel=2)@10,R@1000"``)."""
    parts, depth, cur = [], 0, []
    for ch in spec:
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        depth += (ch == "(") - (ch == ")")
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def parse_measures(spec: str | Measure | Iterable[str | Measure]) -> list[Measure]:
    """Parse one measure, a comma-separated list (``"nDCG@10,RR@10"``) or an iterable of names/measures.

    Returns:
        The measures in the given order, duplicates (after canonicalisation) removed.

    Raises:
        MeasureError: an unsupported name, or no measure at all.
    """
    items: list[str | Measure]
    if isinstance(spec, Measure):
        items = [spec]
    elif isinstance(spec, str):
        items = list(_split_top_level(spec))
    else:
        items = []
        for s in spec:
            items.extend(_split_top_level(s) if isinstance(s, str) else [s])
    out: list[Measure] = []
    for item in items:
        meas = parse_measure(item)
        if meas not in out:
            out.append(meas)
    if not out:
        raise MeasureError(f"no measure given; supported: {SUPPORTED_FORMS}")
    return out


def trec_eval_args(measure: str | Measure) -> list[str]:
    """The trec_eval options that compute ``measure`` (add ``-c`` for the complete-query mean).

    Example: ``trec_eval_args("RR(rel=2)@10") == ["-l", "2", "-M", "10", "-m", "recip_rank"]``.
    """
    m = parse_measure(measure)
    args = ["-l", str(m.rel)] if m.rel != 1 else []
    if m._truncate is not None:
        args += ["-M", str(m._truncate)]
    return args + ["-m", m._trec]


# --------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------

def _truncate(run: Mapping[str, Mapping[str, float]], k: int) -> Run:
    return {qid: dict(rank(docs, k)) for qid, docs in run.items()}


def evaluate_per_query(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
                       measures: str | Measure | Iterable[str | Measure]) -> dict[str, dict[str, float]]:
    """Per-query values, with ``trec_eval -c`` semantics.

    Args:
        run: ``{qid: {docid: score}}``; any order, ranked by score descending, ties by docid descending.
        qrels: ``{qid: {docid: grade}}``; its queries are the ones evaluated.
        measures: names (see :func:`parse_measure`), a comma-separated string, or :class:`Measure` objects.

    Returns:
        ``{measure: {qid: value}}`` keyed by the canonical measure name, one value for every qrels query
        (0.0 for a judged query the run does not answer); run queries without judgements are left out.

    Raises:
        MeasureError: an unsupported measure.
        ValueError: empty qrels.
    """
    meas = parse_measures(measures)
    if not qrels:
        raise ValueError("the qrels are empty: nothing to evaluate against")
    _check_finite(run)
    import pytrec_eval

    qrels_pt = {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    run_pt = {str(q): {str(d): float(s) for d, s in docs.items()} for q, docs in run.items()
              if str(q) in qrels_pt and docs}
    groups: dict[tuple[int, int | None], list[Measure]] = {}
    for m in meas:
        groups.setdefault((m.rel, m._truncate), []).append(m)
    out: dict[str, dict[str, float]] = {str(m): {} for m in meas}
    for (rel, trunc), ms in groups.items():
        evaluator = pytrec_eval.RelevanceEvaluator(qrels_pt, {m._trec for m in ms}, relevance_level=rel)
        res = evaluator.evaluate(run_pt if trunc is None else _truncate(run_pt, trunc))
        for m in ms:
            key = m._key
            out[str(m)] = {qid: float(res.get(qid, {}).get(key, 0.0)) for qid in qrels_pt}
    return out


def _check_finite(run: Mapping[str, Mapping[str, float]]) -> None:
    """Refuse NaN and infinite scores: the rank order, hence every measure, would be undefined."""
    for qid, docs in run.items():
        for docid, score in docs.items():
            if not math.isfinite(score):
                raise ValueError(f"query {qid}, document {docid}: score {score} is not a finite number; the ranking "
                                 "(and every measure) would be undefined: fix the scores")


def evaluate(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
             measures: str | Measure | Iterable[str | Measure]) -> dict[str, float]:
    """Mean values over all qrels queries, equal to ``trec_eval -c`` (unrounded).

    Args:
        run: ``{qid: {docid: score}}``.
        qrels: ``{qid: {docid: grade}}``.
        measures: names (see :func:`parse_measure`), a comma-separated string, or :class:`Measure` objects.

    Returns:
        ``{measure: mean}`` keyed by the canonical measure name, in the order given.
    """
    return {m: _mean(v) for m, v in evaluate_per_query(run, qrels, measures).items()}


def _mean(values: Mapping[str, float]) -> float:
    return math.fsum(values.values()) / len(values) if values else 0.0


# --------------------------------------------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------------------------------------------

#: canonical benchmark name -> its official measures, read from the one benchmark table (kd_pyserini.resources).
BENCHMARKS: dict[str, tuple[str, ...]] = {b.key: b.measures for b in _RESOURCE_BENCHMARKS.values()}
#: other accepted names (Pyserini's topic-set names and the aliases) -> canonical benchmark name.
BENCHMARK_ALIASES: dict[str, str] = {
    alias: b.key for b in _RESOURCE_BENCHMARKS.values() for alias in (b.name, *b.aliases) if alias != b.key
}


def resolve_benchmark(name: str) -> str | None:
    """The canonical benchmark name for ``name`` (a canonical name or an alias), or ``None`` if unknown."""
    key = name.strip().lower()
    if key in BENCHMARKS:
        return key
    return BENCHMARK_ALIASES.get(key)


def official_measures(benchmark: str) -> list[Measure]:
    """The official measures of a benchmark.

    Raises:
        KeyError: unknown benchmark (the message lists the known names).
    """
    canon = resolve_benchmark(benchmark)
    if canon is None:
        known = ", ".join([*BENCHMARKS, *BENCHMARK_ALIASES])
        raise KeyError(f"unknown benchmark {benchmark!r}; known: {known}")
    return parse_measures(BENCHMARKS[canon])


# --------------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------------

_EXAMPLES = 5


@dataclass
class InputWarnings:
    """Suspicious but tolerated things about a run, relative to the qrels.

    Attributes:
        source: the run's name (file path) for messages.
        duplicate_docids: repeated (qid, docid) lines; the first was kept (trec_eval itself refuses such a run).
        unknown_qids: run queries absent from the qrels (ignored by the evaluation).
        missing_qids: judged queries the run has no result for (they score 0).
        empty: the run has no results at all.
        n_judged: the number of qrels queries (the mean's denominator).
    """

    source: str = "run"
    duplicate_docids: int = 0
    unknown_qids: list[str] = field(default_factory=list)
    missing_qids: list[str] = field(default_factory=list)
    empty: bool = False
    n_judged: int = 0

    def __bool__(self) -> bool:
        return bool(self.duplicate_docids or self.unknown_qids or self.missing_qids or self.empty)

    def messages(self) -> list[str]:
        """One human-readable line per problem, each starting with the source, with counts and examples."""
        def eg(ids: Sequence[str]) -> str:
            more = ", ..." if len(ids) > _EXAMPLES else ""
            return f" (e.g. {', '.join(ids[:_EXAMPLES])}{more})"

        msgs = []
        if self.empty:
            msgs.append(f"{self.source}: the run is empty: all {self.n_judged} judged queries score 0")
        if self.duplicate_docids:
            msgs.append(f"{self.source}: {self.duplicate_docids} duplicate docid line(s) for a query; kept the "
                        "first of each (trec_eval itself refuses such a run)")
        if self.unknown_qids:
            n = len(self.unknown_qids)
            msgs.append(f"{self.source}: {n} run quer{'y is' if n == 1 else 'ies are'} not in the qrels and "
                        f"ignored{eg(self.unknown_qids)}")
        if self.missing_qids and not self.empty and len(self.missing_qids) == self.n_judged:
            msgs.append(f"{self.source}: the run answers none of the {self.n_judged} judged queries (wrong qrels "
                        f"or benchmark?): all score 0")
        elif self.missing_qids and not self.empty:
            msgs.append(f"{self.source}: {len(self.missing_qids)} of {self.n_judged} judged quer"
                        f"{'y has' if len(self.missing_qids) == 1 else 'ies have'} no results and "
                        f"count{'s' if len(self.missing_qids) == 1 else ''} as 0 (trec_eval -c){eg(self.missing_qids)}")
        return msgs


def check_inputs(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]], *,
                 read_warnings: Mapping[str, int] | None = None, source: str = "run") -> InputWarnings:
    """Compare a run with the qrels and report what the evaluation will ignore or score as 0.

    Args:
        run: ``{qid: {docid: score}}``.
        qrels: ``{qid: {docid: grade}}``.
        read_warnings: the :class:`~kd_pyserini.trec_io.RunWarnings` filled by ``read_run`` (duplicate docids).
        source: the run's name for the messages.

    Returns:
        The :class:`InputWarnings` (falsy when there is nothing to report).
    """
    answered = {q for q, docs in run.items() if docs}
    return InputWarnings(
        source=source,
        duplicate_docids=int((read_warnings or {}).get("duplicate_docids", 0)),
        unknown_qids=sorted((q for q in answered if q not in qrels), key=qid_order),
        missing_qids=sorted((q for q in qrels if q not in answered), key=qid_order),
        empty=not answered,
        n_judged=len(qrels),
    )


def read_run_checked(path: str | os.PathLike, qrels: Mapping[str, Mapping[str, int]],
                     duplicates: str = "warn") -> tuple[Run, InputWarnings]:
    """Read a run file and check it against the qrels.

    Args:
        path: the run file.
        qrels: ``{qid: {docid: grade}}``.
        duplicates: ``"warn"`` (keep the first of a repeated (qid, docid), counted in the warnings) or ``"error"``
            (refuse the run, as trec_eval does; what kd-eval uses), see :func:`kd_pyserini.trec_io.read_run`.

    Returns:
        ``(run, warnings)``.

    Raises:
        kd_pyserini.trec_io.FormatError: a malformed line (the message is ``file:line: ...``).
    """
    rw = RunWarnings()
    run = read_run(path, warnings=rw, duplicates=duplicates)
    return run, check_inputs(run, qrels, read_warnings=rw, source=str(path))


# --------------------------------------------------------------------------------------------------------------
# Significance
# --------------------------------------------------------------------------------------------------------------

SIGNIFICANCE_TESTS = ("ttest", "randomization")


def _diffs(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired tests need two 1-d arrays of equal length, got shapes {x.shape} and {y.shape}")
    return x - y


def paired_ttest(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided paired t-test p-value (``scipy.stats.ttest_rel``) of per-query values ``a`` vs ``b``.

    Returns:
        The p-value; 1.0 when all differences are 0, 0.0 when they are all equal and non-zero.
    """
    d = _diffs(a, b)
    if d.size < 2 or np.all(d == d[0]):
        return 1.0 if d.size == 0 or d[0] == 0 else 0.0
    from scipy.stats import ttest_rel

    return float(ttest_rel(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)).pvalue)


def randomization_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                       n_permutations: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired randomisation (sign-flip) test p-value of per-query values ``a`` vs ``b``.

    Each permutation swaps the two runs' values of every query with probability 1/2 (flips the sign of its
    difference); the p-value is ``(1 + #{|mean perm. diff| >= |observed mean diff|}) / (1 + n_permutations)``.
    Vectorised with numpy in chunks; deterministic for a given ``seed``.

    Args:
        a, b: per-query values in the same query order.
        n_permutations: number of random sign assignments.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        The p-value (1.0 when all differences are 0).
    """
    d = _diffs(a, b)
    if d.size == 0 or not np.any(d):
        return 1.0
    rng = np.random.default_rng(seed)
    observed = abs(math.fsum(d))
    tol = 1e-9 * max(1.0, observed)
    chunk = max(1, min(n_permutations, 4_000_000 // d.size))
    hits = 0
    done = 0
    while done < n_permutations:
        c = min(chunk, n_permutations - done)
        signs = rng.integers(0, 2, size=(c, d.size), dtype=np.int8).astype(np.float64) * 2.0 - 1.0
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
        done += c
    return (hits + 1) / (n_permutations + 1)


@dataclass
class Comparison:
    """Several runs evaluated on the same qrels, with significance tests against the first (the baseline).

    Attributes:
        measures: canonical measure names, in order.
        means: ``{run: {measure: mean}}``.
        per_query: ``{run: {measure: {qid: value}}}`` (all qrels queries, ``-c`` zeros included).
        p_values: ``{run: {measure: p}}`` for every run but the baseline (empty when no test was run).
        test: ``"ttest"``, ``"randomization"`` or ``None``.
        alpha: significance level for :meth:`significant`.
    """

    measures: list[str]
    means: dict[str, dict[str, float]]
    per_query: dict[str, dict[str, dict[str, float]]]
    p_values: dict[str, dict[str, float]]
    test: str | None
    alpha: float

    @property
    def baseline(self) -> str:
        return next(iter(self.means))

    def significant(self, run: str, measure: str) -> bool:
        """Whether ``run`` differs from the baseline on ``measure`` at level ``alpha``."""
        p = self.p_values.get(run, {}).get(measure)
        return p is not None and p < self.alpha


def compare_runs(runs: Mapping[str, Mapping[str, Mapping[str, float]]], qrels: Mapping[str, Mapping[str, int]],
                 measures: str | Measure | Iterable[str | Measure], *,
                 test: Literal["ttest", "randomization"] | None = "ttest", alpha: float = 0.05,
                 n_permutations: int = 10_000, seed: int = 0) -> Comparison:
    """Evaluate several runs and test each against the first one, per measure, over per-query values.

    Args:
        runs: ``{name: run}``; the first is the baseline.
        qrels: ``{qid: {docid: grade}}``.
        measures: see :func:`evaluate`.
        test: ``"ttest"`` (paired t-test), ``"randomization"`` (paired sign-flip test) or ``None``.
        alpha: significance level.
        n_permutations: permutations of the randomisation test.
        seed: seed of the randomisation test.

    Returns:
        A :class:`Comparison`.

    Raises:
        ValueError: no runs, or an unknown test.
    """
    if not runs:
        raise ValueError("no runs to compare")
    if test not in (None, *SIGNIFICANCE_TESTS):
        raise ValueError(f"unknown significance test {test!r}; use one of {', '.join(SIGNIFICANCE_TESTS)} or None")
    meas = [str(m) for m in parse_measures(measures)]
    qids = list(qrels)
    per_query = {name: evaluate_per_query(run, qrels, meas) for name, run in runs.items()}
    means = {name: {m: _mean(pq[m]) for m in meas} for name, pq in per_query.items()}
    p_values: dict[str, dict[str, float]] = {}
    names = list(runs)
    if test is not None:
        base = per_query[names[0]]
        for name in names[1:]:
            p_values[name] = {}
            for m in meas:
                a = [per_query[name][m][q] for q in qids]
                b = [base[m][q] for q in qids]
                p_values[name][m] = (paired_ttest(a, b) if test == "ttest" else
                                     randomization_test(a, b, n_permutations=n_permutations, seed=seed))
    return Comparison(measures=meas, means=means, per_query=per_query, p_values=p_values, test=test, alpha=alpha)
