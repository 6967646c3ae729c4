"""``kd-eval``: evaluate TREC runs with ``trec_eval -c`` semantics, one table for several runs, with significance.

Usage::

    kd-eval BENCHMARK RUN [RUN ...]                     # the benchmark's qrels and official measures
    kd-eval BENCHMARK RUN ... --measures nDCG@10,R@100  # other measures
    kd-eval --qrels QRELS --measures nDCG@10,RR@10 RUN [RUN ...]
    kd-eval QRELS --measures AP RUN [RUN ...]           # a qrels file in place of the benchmark
    kd-eval BENCHMARK                                   # the benchmark's reproduction runs (kd_pyserini.reproduce)

Options: ``--per-query``, ``--format table|markdown|json|csv``, ``--significance ttest|randomization|none``
(each run against the FIRST), ``--alpha 0.05``, ``--permutations 10000``, ``--seed 0``.

BENCHMARK is one of ``trec-dl-19`` (``dl19-passage``), ``trec-dl-20`` (``dl20``), ``msmarco-dev``
(``msmarco-passage-dev-subset``) or ``scifact`` (``beir-v1.0.0-scifact-test``). Measures are ir_measures names
(``nDCG@10``, ``RR(rel=2)@10``, ``R@1000``, ``AP(rel=2)``, ...; see :mod:`kd_pyserini.evaluation`).

Output goes to stdout; warnings about the inputs (duplicate docids, run queries without judgements, judged queries
without results, empty runs) go to stderr. JSON is ``{run: {measure: value}}`` (``{run: {measure: {qid: value}}}``
with ``--per-query``) keyed by the run path as given; CSV is long format. A malformed run or qrels line stops with a
one-line ``file:line: ...`` error. Also runnable as ``python -m kd_pyserini.eval_cli``.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import io
import json
import os
from collections.abc import Mapping, Sequence

import click

from kd_pyserini.evaluation import (BENCHMARKS, SIGNIFICANCE_TESTS, Comparison, MeasureError,
                                    check_inputs, compare_runs, official_measures, parse_measures,
                                    resolve_benchmark)
from kd_pyserini.trec_io import FormatError, Qrels, RunWarnings, read_qrels, read_run

FORMATS = ("table", "markdown", "json", "csv")
MARK = "\u2020"  # dagger
TEST_NAMES = {"ttest": "paired t-test", "randomization": "paired randomisation test"}


# --------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------

def load_qrels(name_or_path: str) -> Qrels:
    """Qrels from a file path, else from a benchmark/qrels name via :func:`kd_pyserini.resources.get_qrels`.

    Raises:
        click.ClickException: a malformed line (``file:line: ...``) or an unknown name.
    """
    try:
        if os.path.isfile(name_or_path):
            return read_qrels(name_or_path)
        from kd_pyserini.resources import get_qrels

        return get_qrels(name_or_path)
    except FormatError as e:
        raise click.ClickException(str(e)) from None
    except (KeyError, ValueError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise click.ClickException(f"qrels {name_or_path}: {msg}") from None


def evaluate_without_runs(benchmark: str) -> Mapping[str, Mapping[str, float]] | None:
    """``kd-eval BENCHMARK`` with no run: hand over to ``kd_pyserini.reproduce.evaluate_benchmark_runs``.

    Returns:
        Whatever the hook returns (a ``{run: {measure: value}}`` mapping is printed in the chosen format).

    Raises:
        click.UsageError: the hook does not exist (yet), so there is nothing to evaluate.
    """
    hook = None
    if importlib.util.find_spec("kd_pyserini.reproduce") is not None:
        hook = getattr(importlib.import_module("kd_pyserini.reproduce"), "evaluate_benchmark_runs", None)
    if hook is None:
        raise click.UsageError(f"no runs given for {benchmark}: give run files, e.g. "
                               f"'kd-eval {benchmark} run.txt [run2.txt ...]'")
    return hook(benchmark)


def _split_args(args: Sequence[str], qrels_opt: str | None, measures_opt: Sequence[str]):
    """Resolve ``[BENCHMARK|QRELS] [RUN ...]`` -> (benchmark or None, qrels source, runs, measures)."""
    args = list(args)
    benchmark = resolve_benchmark(args[0]) if args else None
    if benchmark is not None:
        args.pop(0)
        qrels_src = qrels_opt or benchmark
    elif qrels_opt is not None:
        qrels_src = qrels_opt
    elif args and os.path.isfile(args[0]):
        qrels_src = args.pop(0)
    else:
        known = ", ".join(BENCHMARKS) + " or an alias such as dl19-passage"
        what = f"{args[0]!r} is neither a benchmark nor a qrels file" if args else "no benchmark or qrels given"
        raise click.UsageError(f"{what}; give a benchmark ({known}), a qrels file, or --qrels FILE")
    try:
        if measures_opt:
            measures = [str(m) for m in parse_measures(list(measures_opt))]
        elif benchmark is not None:
            measures = [str(m) for m in official_measures(benchmark)]
        else:
            raise click.UsageError("give --measures (e.g. --measures nDCG@10,RR@10): there is no benchmark to take "
                                   "the official measures from")
    except MeasureError as e:
        raise click.BadParameter(str(e), param_hint="--measures") from None
    return benchmark, qrels_src, args, measures


# --------------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------------

def _qid_key(qid: str) -> tuple[int, int | str]:
    return (0, int(qid)) if qid.isdigit() else (1, qid)


def _cell(cmp: Comparison, run: str, measure: str) -> str:
    mark = MARK if cmp.significant(run, measure) else ""
    return f"{cmp.means[run][measure]:.4f}{mark}"


def _legend(cmp: Comparison, n_queries: int) -> str:
    parts = [f"mean over {n_queries} judged queries (trec_eval -c)"]
    if cmp.test is not None and len(cmp.means) > 1:
        parts.append(f"{MARK} p < {cmp.alpha:g} vs {cmp.baseline} ({TEST_NAMES[cmp.test]}, two-sided)")
    return "; ".join(parts)


def _aligned(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(header), *(fmt(r) for r in rows)]).rstrip() + "\n"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
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
    qids = sorted(next(iter(cmp.per_query.values()))[cmp.measures[0]], key=_qid_key)
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
        return _markdown(header, rows) + "\n" + "\n".join(f"{n}  " for n in notes).rstrip() + "\n"
    return _aligned(header, rows) + "\n".join(notes) + "\n"


# --------------------------------------------------------------------------------------------------------------
# Command
# --------------------------------------------------------------------------------------------------------------

@click.command(name="kd-eval", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("args", nargs=-1, metavar="[BENCHMARK|QRELS] [RUN ...]")
@click.option("--qrels", "qrels_opt", default=None, metavar="FILE",
              help="Qrels file (or name); then every positional argument that is not a benchmark is a run.")
@click.option("--measures", "-m", "measures_opt", multiple=True, metavar="M1,M2",
              help="ir_measures names, comma-separated or repeated, e.g. nDCG@10,RR(rel=2)@10,R@1000,AP "
                   "[default: the benchmark's official measures].")
@click.option("--per-query", "-q", is_flag=True, help="Per-query values (plus the mean, as trec_eval -q).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--significance", type=click.Choice([*SIGNIFICANCE_TESTS, "none"]), default="ttest",
              show_default=True, help="Paired test of each run against the FIRST run, per measure.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              show_default=True, help="Significance level for the markers.")
@click.option("--permutations", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Permutations of the randomisation test.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the randomisation test.")
def main(args, qrels_opt, measures_opt, per_query, fmt, significance, alpha, permutations, seed):
    """Evaluate RUN files on a BENCHMARK (or a QRELS file) with trec_eval -c semantics.

    BENCHMARK: trec-dl-19 (dl19-passage), trec-dl-20 (dl20), msmarco-dev (msmarco-passage-dev-subset),
    scifact (beir-v1.0.0-scifact-test); its official measures are the default. Several runs give one table,
    with significance markers against the FIRST run. Input warnings go to stderr.

    \b
    Examples:
      kd-eval trec-dl-19 bm25.txt tas-b.txt --format markdown
      kd-eval --qrels qrels.txt --measures nDCG@10,RR(rel=2)@10 run.txt
      kd-eval qrels.txt -m AP -m R@1000 run.txt --per-query --format csv
    """
    benchmark, qrels_src, run_paths, measures = _split_args(args, qrels_opt, measures_opt)
    if not run_paths:
        if benchmark is None:
            raise click.UsageError("no runs given: kd-eval [BENCHMARK|QRELS] RUN [RUN ...]")
        result = evaluate_without_runs(benchmark)
        if isinstance(result, Mapping) and result:
            click.echo(json.dumps(result, indent=2) + "\n" if fmt == "json" else _simple_table(result, fmt), nl=False)
        return
    seen = set()
    for path in run_paths:
        if path in seen:
            raise click.UsageError(f"run {path} is given twice")
        seen.add(path)
        if not os.path.isfile(path):
            raise click.ClickException(f"{path}: no such run file")

    qrels = load_qrels(qrels_src)
    if not qrels:
        raise click.ClickException(f"qrels {qrels_src}: no judgements")
    runs = {}
    for path in run_paths:
        rw = RunWarnings()
        try:
            runs[path] = read_run(path, warnings=rw)
        except FormatError as e:
            raise click.ClickException(str(e)) from None
        for msg in check_inputs(runs[path], qrels, read_warnings=rw, source=path).messages():
            click.echo(f"kd-eval: warning: {msg}", err=True)
    cmp = compare_runs(runs, qrels, measures, test=None if significance == "none" else significance, alpha=alpha,
                       n_permutations=permutations, seed=seed)
    click.echo(format_comparison(cmp, fmt, per_query=per_query), nl=False)


def _simple_table(result: Mapping[str, Mapping[str, float]], fmt: str) -> str:
    """Format a ``{run: {measure: value}}`` mapping returned by the reproduction hook (no significance)."""
    measures = list(dict.fromkeys(m for v in result.values() for m in v))
    rows = [[r, *(f"{v[m]:.4f}" if m in v else "" for m in measures)] for r, v in result.items()]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["run", "measure", "value"])
        w.writerows([r, m, repr(v)] for r, vals in result.items() for m, v in vals.items())
        return buf.getvalue()
    return (_markdown if fmt == "markdown" else _aligned)(["run", *measures], rows)


if __name__ == "__main__":
    main()
