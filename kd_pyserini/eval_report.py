"""Render evaluation results as text: aligned tables, Markdown, JSON and CSV (what kd-eval prints).

Pure functions over :class:`~kd_pyserini.evaluation.Comparison` objects and ``{run: {measure: value}}`` mappings;
no I/O besides returning strings.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping

from kd_pyserini.evaluation import Comparison, parse_measure
from kd_pyserini.trec_io import qid_order

__all__ = ["FORMATS", "format_comparison", "simple_table", "aligned_table", "markdown_table"]

FORMATS = ("table", "markdown", "json", "csv")
MARK = "\u2020"  # dagger
TEST_NAMES = {"ttest": "paired t-test", "randomization": "paired randomisation test"}
CORRECTION_NAMES = {"holm": "Holm-Bonferroni", "bonferroni": "Bonferroni"}
#: the top-level JSON key that holds the significance results (never a measure or a run: runs are files)
SIGNIFICANCE_KEY = "_significance"


def _is_sum(measure: str) -> bool:
    try:
        return parse_measure(measure).aggregate == "sum"
    except ValueError:  # a name from the reproduction hook that is not one of ours: a mean
        return False


def _value(measure: str, value: float) -> str:
    """4 decimals; the counts (NumRet, NumRel, NumRelRet) as integers, as trec_eval prints them."""
    return f"{value:.0f}" if _is_sum(measure) else f"{value:.4f}"


def _cell(cmp: Comparison, run: str, measure: str) -> str:
    mark = MARK if cmp.significant(run, measure) else ""
    return f"{_value(measure, cmp.means[run][measure])}{mark}"


def _tested(cmp: Comparison) -> bool:
    return cmp.test is not None and len(cmp.means) > 1


def _legend(cmp: Comparison, n_queries: int) -> str:
    sums = [m for m in cmp.measures if _is_sum(m)]
    what = "mean" if len(sums) < len(cmp.measures) else "sum"
    parts = [f"{what} over {n_queries} judged queries (trec_eval -c)"]
    if sums and what == "mean":
        parts.append(f"{', '.join(sums)}: sums (as trec_eval)")
    if _tested(cmp):
        corr = CORRECTION_NAMES.get(cmp.correction)
        how = (f"{corr}-corrected over {cmp.n_comparisons} comparisons per measure" if corr and cmp.n_comparisons > 1
               else f"{corr} correction, 1 comparison per measure" if corr else "no correction")
        parts.append(f"{MARK} p < {cmp.alpha:g} vs {cmp.baseline} ({TEST_NAMES[cmp.test]}, two-sided; {how})")
    return "; ".join(parts)


def _significance_json(cmp: Comparison) -> dict:
    """The ``_significance`` object of the JSON output: the test, the correction and every p-value."""
    return {
        "baseline": cmp.baseline, "test": cmp.test, "correction": cmp.correction, "alpha": cmp.alpha,
        "comparisons_per_measure": cmp.n_comparisons,
        "p_values": {r: {m: {"p": cmp.p(r, m, adjusted=False), "p_adjusted": cmp.p(r, m),
                             "significant": cmp.significant(r, m)} for m in cmp.measures}
                     for r in list(cmp.means)[1:]},
    }


def aligned_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(header), *(fmt(r) for r in rows)]).rstrip() + "\n"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda c: c.replace("|", "\\|")
    lines = ["| " + " | ".join(map(esc, header)) + " |",
             "|" + "|".join([":---", *["---:"] * (len(header) - 1)]) + "|"]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _per_query_grid(cmp: Comparison, qids: list[str]) -> tuple[list[str], list[list[str]], list[str]]:
    runs = list(cmp.means)
    many = len(runs) > 1
    cols = [(r, m) for r in runs for m in cmp.measures]
    header = ["qid", *(f"{m} [{runs.index(r) + 1}]" if many else m for r, m in cols)]
    rows = [[q, *(_value(m, cmp.per_query[r][m][q]) for r, m in cols)] for q in qids]
    rows.append(["all", *(_cell(cmp, r, m) for r, m in cols)])
    notes = [f"[{i}] {r}" for i, r in enumerate(runs, 1)] if many else []
    return header, rows, notes


def format_comparison(cmp: Comparison, fmt: str, per_query: bool = False) -> str:
    """Render a :class:`~kd_pyserini.evaluation.Comparison` as ``table``, ``markdown``, ``json`` or ``csv`` text."""
    qids = sorted(next(iter(cmp.per_query.values()))[cmp.measures[0]], key=qid_order)
    runs = list(cmp.means)
    if fmt == "json":
        data = ({r: {m: {q: cmp.per_query[r][m][q] for q in qids} for m in cmp.measures} for r in runs}
                if per_query else dict(cmp.means))
        if _tested(cmp):
            data[SIGNIFICANCE_KEY] = _significance_json(cmp)
        return json.dumps(data, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        if per_query:
            w.writerow(["run", "measure", "qid", "value"])
            for r in runs:
                for m in cmp.measures:
                    w.writerows([r, m, q, repr(cmp.per_query[r][m][q])] for q in qids)
        else:
            with_p = _tested(cmp)
            w.writerow(["run", "measure", "value",
                        *(["p_value", "p_adjusted", "correction", "significant"] if with_p else [])])
            for r in runs:
                for m in cmp.measures:
                    extra = []
                    if with_p:
                        p = cmp.p(r, m, adjusted=False)
                        extra = (["", "", "", ""] if p is None else
                                 [repr(p), repr(cmp.p(r, m)), cmp.correction, str(cmp.significant(r, m)).lower()])
                    w.writerow([r, m, repr(cmp.means[r][m]), *extra])
        return buf.getvalue()
    if per_query:
        header, rows, notes = _per_query_grid(cmp, qids)
    else:
        header, rows, notes = ["run", *cmp.measures], [[r, *(_cell(cmp, r, m) for m in cmp.measures)] for r in runs], []
    notes.append(_legend(cmp, len(qids)))
    if fmt == "markdown":
        return markdown_table(header, rows) + "\n" + "\n".join(f"{n}  " for n in notes).rstrip() + "\n"
    return aligned_table(header, rows) + "\n".join(notes) + "\n"


def simple_table(result: Mapping[str, Mapping[str, float]], fmt: str) -> str:
    """Format a ``{run: {measure: value}}`` mapping returned by the reproduction hook (no significance)."""
    measures = list(dict.fromkeys(m for v in result.values() for m in v))
    rows = [[r, *(_value(m, v[m]) if m in v else "" for m in measures)] for r, v in result.items()]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["run", "measure", "value"])
        w.writerows([r, m, repr(v)] for r, vals in result.items() for m, v in vals.items())
        return buf.getvalue()
    return (markdown_table if fmt == "markdown" else aligned_table)(["run", *measures], rows)
