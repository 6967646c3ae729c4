"""Verdicts: a condition's measured scores against its published figures, row by row.

A published figure is *checked* (``pass``/``fail`` within its tolerance) only when the run can compute its measure:
a run of depth ``d`` cannot check a measure with a cut-off above ``d`` (``R@1000`` on a top-100 run) or a
full-ranking measure (``AP``, ``nDCG``) below depth 1000; those rows are *not checkable*, never failed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kd_pyserini.reproduce.matrix import Condition

__all__ = ["PASS", "FAIL", "NOT_CHECKABLE", "NO_REFERENCE", "NOT_RUNNABLE", "ERROR", "RUNNABLE", "Row", "Result",
           "checkable", "compare", "overall_status", "short_problem", "unmeasured_rows"]

PASS, FAIL, NOT_CHECKABLE, NO_REFERENCE, NOT_RUNNABLE, ERROR = (
    "pass", "fail", "not checkable", "no published figure", "not runnable", "error")
#: a dry run's status for a condition whose inputs are all here.
RUNNABLE = "runnable"


@dataclass
class Row:
    """One leaderboard line: a measure of a condition, its expected and measured value and the verdict."""

    benchmark: str
    condition: str
    measure: str
    expected: float | None
    measured: float | None
    tolerance: float | None
    source: str | None
    verdict: str
    detail: str = ""

    @property
    def delta(self) -> float | None:
        """measured - expected, for checked rows only (a not-checkable difference means nothing)."""
        if self.expected is None or self.measured is None or self.verdict not in (PASS, FAIL):
            return None
        return self.measured - self.expected


@dataclass
class Result:
    """What happened to one condition."""

    condition: Condition
    status: str  # pass / fail / no published figure / not runnable / error (runnable: a dry run)
    rows: list[Row] = field(default_factory=list)
    run_file: str | None = None
    commands: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    wall_s: float | None = None
    latency_ms: float | None = None
    latency_source: str | None = None
    n_queries: int | None = None
    log: str = ""


def checkable(measure: str, depth: int) -> str | None:
    """Why ``measure`` cannot be checked on a run of ``depth`` documents per query, or ``None``."""
    from kd_pyserini.evaluation import parse_measure

    m = parse_measure(measure)
    if m.cutoff is None and m.name in ("AP", "nDCG") and depth < 1000:
        return f"top-{depth} run: {measure} needs the full ranking (published at depth 1000)"
    if m.cutoff is not None and m.cutoff > depth:
        return f"top-{depth} run: {measure} needs {m.cutoff} documents per query"
    return None


def compare(cond: Condition, measured: Mapping[str, float], measures: Sequence[str]) -> list[Row]:
    """Leaderboard rows of one evaluated condition: each published figure checked within its tolerance, and the
    matrix's measures that have no published figure reported as measured."""
    rows: list[Row] = []
    covered = set()
    for exp in cond.expected:
        covered.add(exp.measure)
        got = measured.get(exp.measure)
        why = checkable(exp.measure, cond.depth)
        if why:
            rows.append(Row(cond.benchmark, cond.name, exp.measure, exp.value, got, exp.tolerance, exp.source,
                            NOT_CHECKABLE, why))
            continue
        ok = got is not None and abs(got - exp.value) <= exp.tolerance + 1e-9
        rows.append(Row(cond.benchmark, cond.name, exp.measure, exp.value, got, exp.tolerance, exp.source,
                        PASS if ok else FAIL))
    for m in measures:
        if m in covered:
            continue
        why = checkable(m, cond.depth)
        rows.append(Row(cond.benchmark, cond.name, m, None, measured.get(m), None, None,
                        NOT_CHECKABLE if why else NO_REFERENCE, why or ""))
    return rows


def overall_status(rows: Sequence[Row]) -> str:
    """A condition's status from its rows: ``fail`` if one fails, else ``pass`` if one passes, else measured only."""
    verdicts = {r.verdict for r in rows}
    if FAIL in verdicts:
        return FAIL
    if PASS in verdicts:
        return PASS
    return NO_REFERENCE


def short_problem(problems: Sequence[str]) -> str:
    """The first problem without its trailing fix hint, plus how many more (the Conditions table lists them all)."""
    if not problems:
        return ""
    first = re.sub(r"\s*\([^()]*(\([^()]*\)[^()]*)*\)\s*$", "", problems[0])
    more = len(problems) - 1
    return first + (f" (+{more} more, see Conditions)" if more else "")


def unmeasured_rows(cond: Condition, primary: str, verdict: str, detail: str) -> list[Row]:
    """Rows for a condition that produced no run (not runnable, or a command failed): one per published figure,
    or one for the primary measure when it has none."""
    rows = [Row(cond.benchmark, cond.name, e.measure, e.value, None, e.tolerance, e.source, verdict, detail)
            for e in cond.expected]
    return rows or [Row(cond.benchmark, cond.name, primary, None, None, None, None, verdict, detail)]
