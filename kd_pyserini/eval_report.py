"""Render evaluation results as text: aligned tables, Markdown, JSON and CSV (what kd-eval prints).

Pure functions over :class:`~kd_pyserini.evaluation.Comparison` objects and ``{run: {measure: value}}`` mappings;
no I/O besides returning strings.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping

from kd_pyserini.evaluation import Comparison
from kd_pyserini.trec_io import qid_order

__all__ = ["FORMATS", "format_comparison", "simple_table", "aligned_table", "markdown_table"]

FORMATS = ("table", "markdown", "json", "csv")
MARK = "\u2020"  # dagger
TEST_NAMES = {"ttest": "paired t-test", "randomization": "paired randomisation test"}


def _cell(cmp: Comparison, run: str, measure: str) -> str:
    mark = MARK if cmp.significant(run, measure) else ""
    return f"{cmp.means[run][measure]:.4f}{mark}"


def _legend(cmp: Comparison, n_queries: int) -> str:
    parts = [f"mean over {n_queries} judged queries (trec_eval -c)"]
    if cmp.test is not None and len(cmp.means) > 1:
        parts.append(f"{MARK} p < {cmp.alpha:g} vs {cmp.baseline} ({TEST_NAMES[cmp.test]}, two-sided)")
    return "; ".join(parts)


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
    rows = [[q, *(f"{cmp.per_query[r][m][q]:.4f}" for r, m in cols)] for q in qids]
    rows.append(["all", *(_cell(cmp, r, m) for r, m in cols)])
    notes = [f"[{i}] {r}" for i, r in enumerate(runs, 1)] if many else []
    return header, rows, notes


def format_comparison(cmp: Comparison, fmt: str, per_query: bool = False) -> str:
    """Render a :class:`~kd_pyserini.evaluation.Comparison` as ``table``, ``markdown``, ``json`` or ``csv`` text."""
    qids = sorted(next(iter(cmp.per_query.values()))[cmp.measures[0]], key=qid_order)
    runs = list(cmp.means)
    if fmt == "json":
        data = ({r: {m: {q: cmp.per_query[r][m][q] for q in qids} for m in cmp.measures} for r in runs}
                if per_query else cmp.means)
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
            with_p = cmp.test is not None and len(runs) > 1
            w.writerow(["run", "measure", "value", *(["p_value", "significant"] if with_p else [])])
            for r in runs:
                for m in cmp.measures:
                    extra = []
                    if with_p:
                        p = cmp.p_values.get(r, {}).get(m)
                        extra = ["", ""] if p is None else [repr(p), str(cmp.significant(r, m)).lower()]
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
    rows = [[r, *(f"{v[m]:.4f}" if m in v else "" for m in measures)] for r, v in result.items()]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["run", "measure", "value"])
        w.writerows([r, m, repr(v)] for r, vals in result.items() for m, v in vals.items())
        return buf.getvalue()
    return (markdown_table if fmt == "markdown" else aligned_table)(["run", *measures], rows)
