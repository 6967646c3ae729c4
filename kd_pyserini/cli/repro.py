"""``kd-repro``: run the reproduction matrix (``runs/*.yaml``) — what this machine has, checked against the
published numbers; the rest is listed as not runnable with exactly what is missing.

Usage::

    kd-repro                                   # every benchmark and condition; runs what exists here
    kd-repro --benchmark trec-dl-19 --dry-run  # what would run, with the filled-in commands, and what is missing
    kd-repro -b scifact                        # SciFact end to end (indexes built under --index-root)
    kd-repro -b trec-dl-19 -c 'tas-b*'         # conditions by name (shell-style patterns)
    kd-repro --paths local-paths.yaml          # msmarco_collection: ..., index_root: ..., tasb_model: ...
    kd-repro --collection /data/msmarco/collection.tsv --index-root /data/indexes --set threads=16

Outputs (``-o/--output``, a folder, default ``runs/output``): the run files
(``<benchmark>/run.<benchmark>.<condition>.txt``), ``leaderboard.md``, ``leaderboard.json``, ``commands.log`` and
``efficiency.png``. With progress on (``--progress``, or stderr a terminal) the commands' own progress bars show on
stderr. Also runnable as ``python -m kd_pyserini.cli.repro``. Old spelling (one more release, with a warning):
``--output-dir`` (``--output``). The work is done by :mod:`kd_pyserini.reproduce`.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from kd_pyserini.cli.options import KdCommand, output_option, progress_option

OLD_NAMES = {"--output-dir": "--output"}

#: command-line options that set a placeholder -> the placeholder.
PATH_OPTIONS = {
    "data": "data", "collection": "msmarco_collection", "scifact_corpus": "scifact_corpus",
    "index_root": "index_root", "bm25_index": "bm25_index", "tasb_index": "tasb_index",
    "margin_mse_index": "margin_mse_index", "tasb_model": "tasb_model", "margin_mse_model": "margin_mse_model",
    "threads": "threads", "batch_size": "batch_size", "device": "device",
}


def _benchmark_names() -> str:
    from kd_pyserini.resources import BENCHMARKS

    return ", ".join(b.key for b in BENCHMARKS.values())


def _parse_sets(values: Sequence[str]) -> dict[str, str]:
    out = {}
    for v in values:
        key, eq, val = v.partition("=")
        if not eq or not key.strip():
            raise click.BadParameter(f"{v!r} is not NAME=VALUE", param_hint="--set")
        out[key.strip()] = val
    return out


@click.command(name="kd-repro", cls=KdCommand, old_names=OLD_NAMES)
@click.option("--benchmark", "-b", "benchmarks", multiple=True, metavar="NAME",
              help=f"{_benchmark_names()} (or aliases: dl19-passage, dl20, ...); repeatable [default: all].")
@click.option("--condition", "-c", "conditions", multiple=True, metavar="PATTERN",
              help="Condition names or shell patterns (tas-b, 'bm25-*'); repeatable [default: all].")
@output_option("dir", default="runs/output", help="Folder for the run files, leaderboard.md/.json, efficiency.png.")
@click.option("--dry-run", is_flag=True, help="Check inputs and print the filled-in commands; run nothing.")
@click.option("--list", "list_only", is_flag=True, help="List the benchmarks and conditions and exit.")
@click.option("--paths", "paths_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML of local paths: msmarco_collection, index_root, bm25_index, tasb_index, tasb_model, ...")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="Any placeholder value; repeatable.")
@click.option("--data", type=click.Path(), help="The data folder (default $KD_PYSERINI_DATA).")
@click.option("--collection", type=click.Path(), help="MS MARCO passage collection.tsv (${msmarco_collection}).")
@click.option("--scifact-corpus", type=click.Path(), help="BEIR SciFact corpus.jsonl[.gz].")
@click.option("--index-root", type=click.Path(), help="Folder for indexes kd-repro builds [default: OUTPUT/indexes].")
@click.option("--bm25-index", help="MS MARCO Lucene index: folder or prebuilt name [msmarco-v1-passage].")
@click.option("--tasb-index", help="TAS-B Faiss index: folder or prebuilt name.")
@click.option("--margin-mse-index", help="Margin-MSE Faiss index: folder or prebuilt name.")
@click.option("--tasb-model", help="TAS-B weights: card, hub id or local folder.")
@click.option("--margin-mse-model", help="Margin-MSE weights: card, hub id or local folder.")
@click.option("--threads", help="Threads for the searches.")
@click.option("--batch-size", help="Query/passage batch size.")
@click.option("--device", help="cpu, cuda, cuda:1 [default: cuda when present].")
@click.option("--matrix-dir", type=click.Path(file_okay=False, exists=True),
              help="Folder of matrix YAML files [default: the repository's runs/].")
@click.option("--allow-heavy", is_flag=True, help="Also run steps marked heavy (encoding all of MS MARCO).")
@click.option("--reuse", is_flag=True, help="Evaluate existing run files instead of producing them again.")
@click.option("--no-plot", is_flag=True, help="Do not draw efficiency.png.")
@click.option("--latency-queries", type=click.IntRange(min=0), default=100, show_default=True,
              help="Queries timed one at a time (after loading) per dense/BM25 condition, for the latency column "
                   "and plot; 0 = use kd-search's elapsed time instead.")
@click.option("--strict", is_flag=True, help="Exit 1 also when a condition is not runnable.")
@progress_option()
def main(benchmarks, conditions, output, dry_run, list_only, paths_file, sets, matrix_dir, allow_heavy, reuse,
         no_plot, latency_queries, strict, progress, **path_opts):
    """Run the reproduction matrix (runs/*.yaml): every condition whose inputs exist here, checked against the
    published scores; the others are listed as not runnable with what is missing.

    Exit status: 0 when every condition that ran is within tolerance (or has no published figure), 1 when one is
    outside tolerance or a command failed (and with --strict, when one is not runnable), 2 on usage errors.

    \b
    Examples:
      kd-repro --dry-run
      kd-repro -b trec-dl-19 -b trec-dl-20
      kd-repro -b scifact -o runs/output
      kd-repro --paths local.yaml --allow-heavy
    """
    from kd_pyserini.reproduce import (DEFAULT_PATHS, ERROR, FAIL, NOT_RUNNABLE, RUNNABLE, MatrixError,
                                       build_resolver, leaderboard_markdown, load_matrices, reproduce,
                                       write_leaderboard)

    overrides = {PATH_OPTIONS[k]: v for k, v in path_opts.items() if v is not None}
    given = _parse_sets(sets)
    overrides.update(given)
    try:
        matrices = load_matrices(matrix_dir, benchmarks)
        resolver = build_resolver(paths_file, overrides, output)
    except MatrixError as e:
        raise click.UsageError(str(e)) from None
    unknown = [k for k in given if k not in DEFAULT_PATHS and k != "output_dir"]
    if unknown:
        raise click.UsageError(f"--set: unknown names {', '.join(unknown)}; known: {', '.join(sorted(DEFAULT_PATHS))}")
    if list_only:
        for m in matrices:
            click.echo(f"{m.benchmark} ({m.path}): topics {m.topics}, qrels {m.qrels}, "
                       f"measures {', '.join(m.measures)}")
            for c in m.conditions:
                click.echo(f"  {c.name:34s} {c.type:13s} {c.display}")
        return
    try:
        results = reproduce(matrices, resolver, output, conditions=conditions, dry_run=dry_run,
                            allow_heavy=allow_heavy, reuse=reuse, echo=lambda s: click.echo(s, err=True),
                            latency_queries=latency_queries, progress=progress)
    except MatrixError as e:
        raise click.UsageError(str(e)) from None
    if dry_run:
        for r in results:
            state = "RUNNABLE" if r.status == RUNNABLE else "NOT RUNNABLE: " + "; ".join(r.problems)
            click.echo(f"{r.condition.key}: {state}")
            for c in r.commands:
                click.echo(f"    {c}")
            if r.condition.type == "reference-run" and r.run_file:
                click.echo(f"    (evaluate {r.run_file})")
        return
    paths = write_leaderboard(results, matrices, output, plot=not no_plot)
    click.echo(leaderboard_markdown(results))
    click.echo(f"kd-repro: wrote {', '.join(str(p) for p in paths.values())}", err=True)
    bad = any(r.status in (FAIL, ERROR) for r in results) or (strict and any(r.status == NOT_RUNNABLE
                                                                              for r in results))
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
