"""``kd-eval``: evaluate TREC runs with ``trec_eval -c`` semantics, one table for several runs, with significance.

Usage::

    kd-eval BENCHMARK RUN [RUN ...]                     # the benchmark's qrels and official measures
    kd-eval BENCHMARK RUN ... --measures nDCG@10,R@100  # other measures
    kd-eval --qrels QRELS --measures nDCG@10,RR@10 RUN [RUN ...]
    kd-eval QRELS --measures AP RUN [RUN ...]           # a qrels file in place of the benchmark
    kd-eval BENCHMARK                                   # the benchmark's reproduction runs (kd_pyserini.reproduce)

Options: ``--per-query``, ``--format table|markdown|json|csv``, ``--significance ttest|randomization|none``
(each run against the FIRST), ``--correction holm|bonferroni|none`` (over each measure's comparisons with the first
run; default holm), ``--significance-level 0.05`` (old spelling ``--alpha``, one more release),
``--permutations 10000``, ``--seed 0``.

BENCHMARK is one of ``trec-dl-19`` (``dl19-passage``), ``trec-dl-20`` (``dl20``), ``msmarco-dev``
(``msmarco-passage-dev-subset``) or ``scifact`` (``beir-v1.0.0-scifact-test``); its official measures are the
default, with ``Judged@10`` beside them for the pooled TREC DL qrels. Measures are ir_measures names (``nDCG@10``,
``RR(rel=2)@10``, ``R@1000``, ``AP(rel=2)``, ``Rprec``, ``Bpref``, ``IPrec@0.5`` (``IPrec``: all 11 points),
``NumRet``, ``NumRel``, ``NumRelRet``, ``Judged@10``, ...; see :mod:`kd_pyserini.eval_measures` and
docs/evaluation.md).

Output goes to stdout; warnings about the inputs (run queries without judgements, judged queries without results)
go to stderr. JSON is ``{run: {measure: value}}`` (``{run: {measure: {qid: value}}}`` with ``--per-query``) keyed by
the run path as given, plus, when runs were tested, an ``_significance`` object (baseline, test, correction, and per
run and measure the raw and adjusted p-value and whether it is significant); CSV is long format (with ``p_value``,
``p_adjusted``, ``correction``, ``significant`` columns when tested). Fields after the sixth of a TREC run line are
ignored, as trec_eval ignores them, with one notice per file on stderr. Whatever Java trec_eval refuses, kd-eval
refuses too, with a one-line ``Error: file:line: ...`` (exit 1): a malformed run or qrels line, a run mixing TREC and MS MARCO lines, a document
listed twice for a query in a run or judged twice in the qrels, an empty run or qrels file, a run that answers none
of the judged queries. kd-eval is stricter on purpose where trec_eval reads something silently wrong: NaN or
infinite scores, non-numeric scores or grades, bytes that are not UTF-8 are refused; it differs on purpose in
reading MS MARCO runs (``qid<TAB>docid<TAB>rank``), dropping a leading UTF-8 byte-order mark and allowing blank
lines in qrels (tests/test_io.py holds the case table). Also runnable as ``python -m kd_pyserini.cli.eval``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import click

from kd_pyserini.cli.options import KdCommand, measures_option
from kd_pyserini.eval_report import FORMATS, format_comparison, simple_table
from kd_pyserini.evaluation import (BENCHMARKS, CORRECTIONS, SIGNIFICANCE_TESTS, MeasureError, compare_runs,
                                    default_measures, parse_measures, read_run_checked, resolve_benchmark)
from kd_pyserini.trec_io import Qrels

OLD_NAMES = {"--alpha": "--significance-level"}


def load_qrels(name_or_path: str) -> Qrels:
    """Qrels from a file path, else from a benchmark/qrels name (:func:`kd_pyserini.resources.qrels_by_name_or_path`).

    Raises:
        click.ClickException: an unknown name or a missing file (a malformed line raises FormatError, reported by
            the command as ``file:line: ...``).
    """
    from kd_pyserini.resources import qrels_by_name_or_path
    from kd_pyserini.trec_io import FormatError

    try:
        return qrels_by_name_or_path(name_or_path)
    except FormatError:
        raise
    except (KeyError, ValueError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise click.ClickException(f"qrels {name_or_path}: {msg}") from None


def evaluate_without_runs(benchmark: str) -> Mapping[str, Mapping[str, float]] | None:
    """``kd-eval BENCHMARK`` with no run: evaluate the benchmark's reproduction runs
    (:func:`kd_pyserini.reproduce.evaluate_benchmark_runs`)."""
    from kd_pyserini.reproduce import evaluate_benchmark_runs

    return evaluate_benchmark_runs(benchmark)


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
            measures = [str(m) for m in default_measures(benchmark)]
        else:
            raise click.UsageError("give --measures (e.g. --measures nDCG@10,RR@10): there is no benchmark to take "
                                   "the official measures from")
    except MeasureError as e:
        raise click.BadParameter(str(e), param_hint="--measures") from None
    return benchmark, qrels_src, args, measures


# --------------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------
# Command
# --------------------------------------------------------------------------------------------------------------

@click.command(name="kd-eval", cls=KdCommand, old_names=OLD_NAMES)
@click.argument("args", nargs=-1, metavar="[BENCHMARK|QRELS] [RUN ...]")
@click.option("--qrels", "qrels_opt", default=None, metavar="FILE",
              help="Qrels file (or name); then every positional argument that is not a benchmark is a run.")
@measures_option("ir_measures names, comma-separated or repeated, e.g. nDCG@10,RR(rel=2)@10,R@1000,AP "
                 "[default: the benchmark's official measures].", multiple=True)
@click.option("--per-query", "-q", is_flag=True, help="Per-query values (plus the mean, as trec_eval -q).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--significance", type=click.Choice([*SIGNIFICANCE_TESTS, "none"]), default="ttest",
              show_default=True, help="Paired test of each run against the FIRST run, per measure.")
@click.option("--correction", type=click.Choice(CORRECTIONS), default="holm", show_default=True,
              help="Multiple-comparison correction of the p-values, over each measure's comparisons with the FIRST "
                   "run (Holm-Bonferroni: as safe as Bonferroni, never less powerful; one comparison: no change).")
@click.option("--significance-level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              show_default=True, help="Significance level for the markers (p below it is marked).")
@click.option("--permutations", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Permutations of the randomisation test.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the randomisation test.")
def main(args, qrels_opt, measures, per_query, fmt, significance, correction, significance_level, permutations, seed):
    """Evaluate RUN files on a BENCHMARK (or a QRELS file) with trec_eval -c semantics.

    BENCHMARK: trec-dl-19 (dl19-passage), trec-dl-20 (dl20), msmarco-dev (msmarco-passage-dev-subset),
    scifact (beir-v1.0.0-scifact-test); its official measures are the default (TREC DL: with Judged@10 beside
    them). Several runs give one table, with significance markers against the FIRST run (p-values corrected with
    --correction). Input warnings go to stderr.

    \b
    Examples:
      kd-eval trec-dl-19 bm25.txt tas-b.txt --format markdown
      kd-eval --qrels qrels.txt --measures nDCG@10,RR(rel=2)@10 run.txt
      kd-eval qrels.txt -m AP -m R@1000 run.txt --per-query --format csv
    """
    benchmark, qrels_src, run_paths, measures = _split_args(args, qrels_opt, measures)
    if not run_paths:
        if benchmark is None:
            raise click.UsageError("no runs given: kd-eval [BENCHMARK|QRELS] RUN [RUN ...]")
        result = evaluate_without_runs(benchmark)
        if isinstance(result, Mapping) and result:
            click.echo(json.dumps(result, indent=2) + "\n" if fmt == "json" else simple_table(result, fmt), nl=False)
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
        # duplicates="error": trec_eval refuses a run listing a document twice for a query ("duplicate docs")
        runs[path], warnings = read_run_checked(path, qrels, duplicates="error")
        if warnings.n_judged and len(warnings.missing_qids) == warnings.n_judged:
            raise click.ClickException(f"{path}: the run answers none of the {warnings.n_judged} judged queries of "
                                       f"{qrels_src} (wrong qrels or benchmark?); trec_eval refuses it too (\"No "
                                       "queries with both results and relevance info\")")
        for msg in warnings.messages():
            click.echo(f"kd-eval: warning: {msg}", err=True)
    cmp = compare_runs(runs, qrels, measures, test=None if significance == "none" else significance,
                       alpha=significance_level, n_permutations=permutations, seed=seed, correction=correction)
    click.echo(format_comparison(cmp, fmt, per_query=per_query), nl=False)




if __name__ == "__main__":
    main()
