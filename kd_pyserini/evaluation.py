"""Retrieval evaluation with trec_eval's exact semantics (``trec_eval -c``), measures named as ir_measures names them.

Everything here is a pure function over in-memory runs and qrels (``{qid: {docid: score}}`` and
``{qid: {docid: grade}}``, the forms :mod:`kd_pyserini.trec_io` reads); the numbers come from ``pytrec_eval``
(the C trec_eval code) with these things added so they equal Java/C ``trec_eval -c`` to the last digit:

* **-c**: the mean is over *every* query in the qrels; a judged query the run does not answer scores 0
  (pytrec_eval alone leaves it out) -- except ``NumRel``, which is the query's number of relevant documents whether
  the run answers it or not. Run queries without judgements are ignored, as trec_eval ignores them.
  For TREC-DL 2020, 200 topics were released and 54 judged: the mean is over the 54.
* **cut-offs pytrec_eval lacks** (``RR@k``, i.e. ``trec_eval -M k -m recip_rank``): the run is cut to its top ``k``
  in trec_eval order (score descending, ties by docid descending, :func:`kd_pyserini.trec_io.rank`) before
  evaluation, exactly what ``-M k`` does.
* **relevance levels** (``RR(rel=2)@10``, ``AP(rel=2)``, ``Rprec(rel=2)``, ...): ``trec_eval -l 2``. nDCG always
  uses the graded judgements as gains (``ndcg_cut``) and takes no ``rel``.
* **aggregation**: the counts ``NumRet``, ``NumRel`` and ``NumRelRet`` are summed over the queries (trec_eval's
  ``all`` line, ir_measures' ``SumAgg``); every other measure is averaged.
* **Judged@k** (not a trec_eval measure; ir_measures' definition): the share of a query's top ``k`` (or of all its
  results when it has fewer than ``k``) that has a judgement of any grade, ranked in trec_eval order.

The measures, their names and their trec_eval options are in :mod:`kd_pyserini.eval_measures`; significance tests
and multiple-comparison corrections in :mod:`kd_pyserini.eval_significance` (both re-exported here). docs/evaluation.md
lists every measure and the deliberate differences from trec_eval.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from kd_pyserini.eval_measures import (FAMILIES, IPREC_LEVELS, Measure, MeasureError, parse_measure, parse_measures,
                                       trec_eval_args)
from kd_pyserini.eval_significance import (CORRECTIONS, SIGNIFICANCE_TESTS, Comparison, adjust_p_values,
                                          paired_ttest, randomization_test)
from kd_pyserini.resources import BENCHMARKS as _RESOURCE_BENCHMARKS
from kd_pyserini.trec_io import Run, RunWarnings, extra_fields_message, qid_order, rank, read_run

__all__ = [
    "Measure", "MeasureError", "parse_measure", "parse_measures", "trec_eval_args", "FAMILIES", "IPREC_LEVELS",
    "evaluate", "evaluate_per_query", "aggregate",
    "BENCHMARKS", "BENCHMARK_ALIASES", "resolve_benchmark", "official_measures", "default_measures",
    "INFORMATIONAL_MEASURES",
    "InputWarnings", "check_inputs", "read_run_checked",
    "paired_ttest", "randomization_test", "Comparison", "compare_runs", "SIGNIFICANCE_TESTS", "CORRECTIONS",
    "adjust_p_values",
]

# --------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------

def _truncate(run: Mapping[str, Mapping[str, float]], k: int) -> Run:
    return {qid: dict(rank(docs, k)) for qid, docs in run.items()}


def _judged(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]], k: int) -> dict[str, float]:
    """Judged@k per qrels query (ir_measures' ``Judged``, ``JudgedProvider``): judged documents among the top ``k``
    divided by ``min(k, number retrieved)``; 0.0 for a judged query without results (``-c``). The top ``k`` is taken
    in trec_eval order (ties by docid descending), as every other measure here."""
    out = {}
    for qid, judged in qrels.items():
        top = rank(run.get(qid) or {}, k)
        out[qid] = sum(d in judged for d, _ in top) / len(top) if top else 0.0
    return out


def evaluate_per_query(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
                       measures: str | Measure | Iterable[str | Measure]) -> dict[str, dict[str, float]]:
    """Per-query values, with ``trec_eval -c`` semantics.

    Args:
        run: ``{qid: {docid: score}}``; any order, ranked by score descending, ties by docid descending.
        qrels: ``{qid: {docid: grade}}``; its queries are the ones evaluated.
        measures: names (see :func:`parse_measure`), a comma-separated string, or :class:`Measure` objects.

    Returns:
        ``{measure: {qid: value}}`` keyed by the canonical measure name, one value for every qrels query
        (0.0 for a judged query the run does not answer, but for ``NumRel``: its number of relevant documents);
        run queries without judgements are left out.

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
    out: dict[str, dict[str, float]] = {str(m): {} for m in meas}
    for m in meas:
        if m.family.engine == "judged":
            out[str(m)] = _judged(run_pt, qrels_pt, int(m.cutoff))  # type: ignore[arg-type]
        else:
            groups.setdefault((m.rel, m._truncate), []).append(m)
    for (rel, trunc), ms in groups.items():
        evaluator = pytrec_eval.RelevanceEvaluator(qrels_pt, {m._trec for m in ms}, relevance_level=rel)
        res = evaluator.evaluate(run_pt if trunc is None else _truncate(run_pt, trunc))
        for m in ms:
            key = m._key
            if m.name == "NumRel":  # independent of the run: also counted for a judged query without results
                out[str(m)] = {q: float(res[q][key]) if q in res else float(sum(g >= rel for g in docs.values()))
                               for q, docs in qrels_pt.items()}
            else:
                out[str(m)] = {qid: float(res.get(qid, {}).get(key, 0.0)) for qid in qrels_pt}
    return out


def _check_finite(run: Mapping[str, Mapping[str, float]]) -> None:
    """Refuse NaN and infinite scores: the rank order, hence every measure, would be undefined."""
    for qid, docs in run.items():
        for docid, score in docs.items():
            if not math.isfinite(score):
                raise ValueError(f"query {qid}, document {docid}: score {score} is not a finite number; the ranking "
                                 "(and every measure) would be undefined: fix the scores")


def aggregate(measure: str | Measure, values: Mapping[str, float]) -> float:
    """The all-queries figure of one measure from its per-query values: the mean (``trec_eval -c``'s ``all``), or
    the sum for the counts ``NumRet``, ``NumRel``, ``NumRelRet`` (as trec_eval and ir_measures report them)."""
    if parse_measure(measure).aggregate == "sum":
        return math.fsum(values.values())
    return _mean(values)


def evaluate(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
             measures: str | Measure | Iterable[str | Measure]) -> dict[str, float]:
    """All-queries values over the qrels queries, equal to ``trec_eval -c``'s ``all`` line (unrounded): the mean,
    or the sum for ``NumRet``, ``NumRel``, ``NumRelRet``.

    Args:
        run: ``{qid: {docid: score}}``.
        qrels: ``{qid: {docid: grade}}``.
        measures: names (see :func:`parse_measure`), a comma-separated string, or :class:`Measure` objects.

    Returns:
        ``{measure: value}`` keyed by the canonical measure name, in the order given.
    """
    return {m: aggregate(m, v) for m, v in evaluate_per_query(run, qrels, measures).items()}


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


#: measures shown beside the official ones by default (``kd-eval BENCHMARK RUN ...``): the share of the top 10 that was
#: judged, for the benchmarks whose qrels are pooled (TREC DL: a dense run retrieves documents the BM25-heavy pools
#: never judged, and its scores are then lower bounds). Sparse-judgement benchmarks (MS MARCO dev, SciFact: only
#: relevant documents are judged) are left out: there Judged@10 is just P@10 of the relevant ones.
INFORMATIONAL_MEASURES: dict[str, tuple[str, ...]] = {"trec-dl-19": ("Judged@10",), "trec-dl-20": ("Judged@10",)}


def default_measures(benchmark: str) -> list[Measure]:
    """The measures ``kd-eval BENCHMARK`` reports: the official ones, then :data:`INFORMATIONAL_MEASURES`.

    Raises:
        KeyError: unknown benchmark.
    """
    official = official_measures(benchmark)
    extra = INFORMATIONAL_MEASURES.get(resolve_benchmark(benchmark) or "", ())
    return parse_measures([*official, *extra])


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
        extra_fields: TREC lines with fields after the run tag; ignored, as trec_eval ignores them.
        unknown_qids: run queries absent from the qrels (ignored by the evaluation).
        missing_qids: judged queries the run has no result for (they score 0).
        empty: the run has no results at all.
        n_judged: the number of qrels queries (the mean's denominator).
    """

    source: str = "run"
    duplicate_docids: int = 0
    extra_fields: int = 0
    unknown_qids: list[str] = field(default_factory=list)
    missing_qids: list[str] = field(default_factory=list)
    empty: bool = False
    n_judged: int = 0

    def __bool__(self) -> bool:
        return bool(self.duplicate_docids or self.extra_fields or self.unknown_qids or self.missing_qids or self.empty)

    def messages(self) -> list[str]:
        """One human-readable line per problem, each starting with the source, with counts and examples."""
        def eg(ids: Sequence[str]) -> str:
            more = ", ..." if len(ids) > _EXAMPLES else ""
            return f" (e.g. {', '.join(ids[:_EXAMPLES])}{more})"

        msgs = []
        if self.empty:
            msgs.append(f"{self.source}: the run is empty: all {self.n_judged} judged queries score 0")
        if self.extra_fields:
            msgs.append(extra_fields_message(self.source, self.extra_fields))
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
        extra_fields=int((read_warnings or {}).get("extra_fields", 0)),
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
# Several runs against the first (the tests and corrections: kd_pyserini.eval_significance, re-exported)
# --------------------------------------------------------------------------------------------------------------

def compare_runs(runs: Mapping[str, Mapping[str, Mapping[str, float]]], qrels: Mapping[str, Mapping[str, int]],
                 measures: str | Measure | Iterable[str | Measure], *,
                 test: Literal["ttest", "randomization"] | None = "ttest", alpha: float = 0.05,
                 n_permutations: int = 10_000, seed: int = 0, correction: str = "holm") -> Comparison:
    """Evaluate several runs and test each against the first one, per measure, over per-query values.

    Args:
        runs: ``{name: run}``; the first is the baseline.
        qrels: ``{qid: {docid: grade}}``.
        measures: see :func:`kd_pyserini.evaluation.evaluate`.
        test: ``"ttest"`` (paired t-test), ``"randomization"`` (paired sign-flip test) or ``None``.
        alpha: significance level.
        n_permutations: permutations of the randomisation test.
        seed: seed of the randomisation test.
        correction: ``"holm"`` (default), ``"bonferroni"`` or ``"none"``, over each measure's ``len(runs) - 1``
            comparisons (:func:`adjust_p_values`).

    Returns:
        A :class:`Comparison`.

    Raises:
        ValueError: no runs, an unknown test or correction.
    """
    if not runs:
        raise ValueError("no runs to compare")
    if test not in (None, *SIGNIFICANCE_TESTS):
        raise ValueError(f"unknown significance test {test!r}; use one of {', '.join(SIGNIFICANCE_TESTS)} or None")
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; use one of {', '.join(CORRECTIONS)}")
    meas = [str(m) for m in parse_measures(measures)]
    qids = list(qrels)
    per_query = {name: evaluate_per_query(run, qrels, meas) for name, run in runs.items()}
    means = {name: {m: aggregate(m, pq[m]) for m in meas} for name, pq in per_query.items()}
    p_values: dict[str, dict[str, float]] = {}
    p_adjusted: dict[str, dict[str, float]] = {}
    names = list(runs)
    if test is not None and len(names) > 1:
        base = per_query[names[0]]
        for name in names[1:]:
            p_values[name] = {}
            for m in meas:
                a = [per_query[name][m][q] for q in qids]
                b = [base[m][q] for q in qids]
                p_values[name][m] = (paired_ttest(a, b) if test == "ttest" else
                                     randomization_test(a, b, n_permutations=n_permutations, seed=seed))
        p_adjusted = {name: {} for name in names[1:]}
        for m in meas:
            adjusted = adjust_p_values([p_values[name][m] for name in names[1:]], correction)
            for name, p in zip(names[1:], adjusted):
                p_adjusted[name][m] = p
    return Comparison(measures=meas, means=means, per_query=per_query, p_values=p_values, test=test, alpha=alpha,
                      correction=correction, p_adjusted=p_adjusted)
