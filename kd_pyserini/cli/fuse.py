"""``kd-fuse``: fuse TREC runs (RRF, Pyserini-style interpolation, CombSUM, CombMNZ), optionally tuning on qrels.

Usage::

    kd-fuse RUN RUN [RUN ...] -o FUSED [--method rrf|interpolation|combsum|combmnz]
            [--ranks file|score] [--depth 1000]
            [--hits 1000] [--rrf-k 60] [--alpha 0.1] [--normalize] [--weight-on-dense]
            [--weights 1,0.5] [--norm minmax|zscore|max|sum|none] [--run-tag TAG]
            [--tune-on QRELS --measures nDCG@10] [--progress/--no-progress]

For ``interpolation`` the FIRST run is the sparse one (it gets ``alpha``: ``alpha * sparse + dense``, as Pyserini's
``HybridSearcher``) and the second the dense one; exactly two runs. ``--tune-on`` takes a qrels name
(``dl19-passage``, ``trec-dl-20``, ``scifact``, ...) or a qrels file; the free parameter (``alpha``, ``--rrf-k`` or
the weights) is then chosen by grid search on ``--measures`` (one measure), the table and the choice are printed to
stderr, and the runs are fused with it. Also runnable as ``python -m kd_pyserini.cli.fuse``.

``--ranks`` (rrf, combsum, combmnz) chooses the conventions, see :mod:`kd_pyserini.fusion` and docs/evaluation.md:
``file`` (the default, because a Pyserini user expects ``python -m pyserini.fusion``'s run): each document's rank is
the file's rank column, each input is cut to its first ``--depth`` lines (1000), fused ties are broken by docid
ascending and the run is written in that order -- ``--method rrf`` equals ``pyserini.fusion --method rrf`` line for
line, ``--method combsum --norm none --weights A,1-A`` its ``interpolation --alpha A``, ``--weights 0.5,0.5`` its
``average``, ``--norm minmax`` its ``normalize``; ``score``: each input re-ranked by score in trec_eval order (ties by
docid descending), the output in trec_eval order. Interpolation is Pyserini's HybridSearcher fusion and takes
neither option.
Old spellings (one more release, with a warning): ``--k`` (``--hits``), ``--tag`` (``--run-tag``), ``--metric``
(``--measures``).
"""

from __future__ import annotations

import sys

import click

from kd_pyserini.cli.options import (KdCommand, fusion_options, fusion_params, fusion_ranks_options, hits_option,
                                     measures_option, output_option, parse_weights, progress_option, run_tag_option)

OLD_NAMES = {"--k": "--hits", "--tag": "--run-tag", "--metric": "--measures"}


def _fmt(params: dict) -> str:
    return " ".join(f"{k}={','.join(f'{x:g}' for x in v) if isinstance(v, (list, tuple)) else v}"
                    for k, v in params.items())


@click.command(name="kd-fuse", cls=KdCommand, old_names=OLD_NAMES)
@click.argument("runs", nargs=-1, required=True, metavar="RUN RUN...", type=click.Path(exists=True, dir_okay=False))
@output_option("file", help="Fused run (TREC format; .gz compressed).")
@hits_option(help="Documents kept per query.")
@fusion_options("--method")
@fusion_ranks_options()
@run_tag_option("kd-fuse-METHOD")
@click.option("--tune-on", default=None, metavar="QRELS",
              help="Qrels name (dl19-passage, trec-dl-20, scifact, ...) or file: grid-search the method's "
                   "parameter on it first.")
@measures_option("The measure --tune-on maximises.", default="nDCG@10")
@progress_option()
def main(runs, output, hits, method, alpha, normalize, weight_on_dense, rrf_k, weights, norm, ranks, depth, run_tag,
         tune_on, measures, progress):
    """Fuse RUN files (TREC or MS MARCO format) into one TREC run.

    For --method interpolation give exactly two runs, the SPARSE (e.g. BM25) run first and the dense one second:
    fused = alpha * sparse + dense, as Pyserini's HybridSearcher. With --tune-on the free parameter (alpha,
    --rrf-k or the weights) is grid-searched on those qrels, the table is printed to stderr, and the best is used.

    --ranks file (the default for rrf, combsum, combmnz) fuses as `python -m pyserini.fusion` does: ranks from the
    rank column, each input cut to its first --depth lines, ties by docid ascending; --method rrf then writes
    pyserini.fusion's run line for line. --ranks score re-ranks each input by score, in trec_eval order.
    """
    from kd_pyserini import fusion
    from kd_pyserini.trec_io import RunWarnings, extra_fields_message, read_run, write_run

    if method == "interpolation" and len(runs) != 2:
        raise click.UsageError(f"interpolation fuses exactly two runs (sparse first, then dense), got {len(runs)}")
    if len(runs) < 2:
        click.echo("kd-fuse: warning: only one run given; the output is that run re-ranked", err=True)
    params = fusion_params(method, alpha, normalize, weight_on_dense, rrf_k, parse_weights(weights, len(runs)), norm)
    if method == "interpolation":
        for flag, value in (("--ranks", ranks), ("--depth", depth)):
            if value is not None:
                raise click.UsageError(f"{flag} does not apply to --method interpolation (Pyserini's HybridSearcher "
                                       "fusion of two score lists, which has no rank column)")
    else:
        ranks, depth = ranks or "file", depth or 1000
        params.update(ranks=ranks, depth=depth)

    loaded = []
    for path in runs:
        warn = RunWarnings()
        # --ranks file: the rank column and file order are kept, and a document listed twice is refused (Pyserini
        # would add both lines); otherwise the first of a repeated document is kept, with a warning
        loaded.append(fusion.read_fusion_run(path, warnings=warn) if ranks == "file" else read_run(path, warnings=warn))
        if warn.get("extra_fields"):
            click.echo(f"kd-fuse: warning: {extra_fields_message(path, warn.pop('extra_fields'))}", err=True)
        if warn:
            click.echo(f"kd-fuse: warning: {path}: {dict(warn)}", err=True)

    if tune_on is not None:
        from kd_pyserini.resources import qrels_by_name_or_path

        try:
            qrels = qrels_by_name_or_path(tune_on)
        except (KeyError, ValueError, FileNotFoundError) as e:
            raise click.ClickException(f"--tune-on {tune_on}: {str(e).strip(chr(39))}") from None
        tuned_key = {"interpolation": "alpha", "rrf": "rrf_k"}.get(method, "weights")
        fixed = {p: v for p, v in params.items() if p != tuned_key}
        try:
            best, table = fusion.tune(loaded, qrels, method, metric=measures, k=hits, progress=progress, **fixed)
        except ValueError as e:  # an unknown measure (kd_pyserini.evaluation.MeasureError), empty qrels, ...
            raise click.ClickException(f"--measures {measures}: {e}") from None
        click.echo(f"kd-fuse: tuning {tuned_key} for {measures} on {tune_on}:", err=True)
        for setting, score in table:
            mark = "  <- best" if setting == best else ""
            click.echo(f"  {_fmt({tuned_key: setting[tuned_key]}):<28} {score:.4f}{mark}", err=True)
        click.echo(f"kd-fuse: chose {_fmt({tuned_key: best[tuned_key]})}", err=True)
        params = best

    fused = fusion.fuse(loaded, method, k=hits, **params)
    # --ranks file: written in Pyserini's order (ties by docid ascending), the ranks pyserini.fusion writes
    write_run(fused, output, tag=run_tag or f"kd-fuse-{method}", k=hits, keep_order=ranks == "file")
    how = f", ranks from the {'rank column' if ranks == 'file' else 'scores'}, depth {depth}" if ranks else ""
    click.echo(f"kd-fuse: {method} of {len(runs)} runs{how}, {len(fused)} queries -> {output}", err=True)


if __name__ == "__main__":
    sys.exit(main())
