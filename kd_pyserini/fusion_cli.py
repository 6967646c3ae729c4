"""``kd-fuse``: fuse TREC runs (RRF, Pyserini-style interpolation, CombSUM, CombMNZ), optionally tuning on qrels.

Usage::

    kd-fuse RUN RUN [RUN ...] --output FUSED [--method rrf|interpolation|combsum|combmnz]
            [--k 1000] [--rrf-k 60] [--alpha 0.1] [--normalize] [--weight-on-dense]
            [--weights 1,0.5] [--norm minmax|zscore|max|sum|none] [--tag TAG]
            [--tune-on QRELS --metric nDCG@10]

For ``interpolation`` the FIRST run is the sparse one (it gets ``alpha``: ``alpha * sparse + dense``, as Pyserini's
``HybridSearcher``) and the second the dense one; exactly two runs. ``--tune-on`` takes a qrels name
(``dl19-passage``, ``trec-dl-20``, ``scifact``, ...) or a qrels file; the free parameter (``alpha``, ``--rrf-k`` or
the weights) is then chosen by grid search on ``--metric``, the table and the choice are printed to stderr, and the
runs are fused with it. Also runnable as ``python -m kd_pyserini.fusion_cli``.
"""

from __future__ import annotations

import os
import sys

import click

from kd_pyserini.trec_io import FormatError, RunWarnings, read_qrels, read_run, write_run

METHOD_CHOICES = ("rrf", "interpolation", "combsum", "combmnz")
NORM_CHOICES = ("minmax", "zscore", "max", "sum", "none")


def _parse_weights(text: str | None, n_runs: int) -> list[float] | None:
    if text is None:
        return None
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers, e.g. 1,0.5",
                                 param_hint="--weights") from None
    if len(weights) != n_runs:
        raise click.BadParameter(f"{len(weights)} weights for {n_runs} runs; give one per run",
                                 param_hint="--weights")
    return weights


def _load_qrels(name_or_path: str):
    if os.path.isfile(name_or_path):
        return read_qrels(name_or_path)
    from kd_pyserini.resources import get_qrels

    qrels = get_qrels(name_or_path)
    if isinstance(qrels, (str, os.PathLike)):  # a resolver that answers with a path
        qrels = read_qrels(qrels)
    return qrels


def _fmt(params: dict) -> str:
    return " ".join(f"{k}={','.join(f'{x:g}' for x in v) if isinstance(v, (list, tuple)) else v}"
                    for k, v in params.items())


@click.command(name="kd-fuse", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("runs", nargs=-1, required=True, metavar="RUN RUN...", type=click.Path(exists=True, dir_okay=False))
@click.option("--method", type=click.Choice(METHOD_CHOICES), default="rrf", show_default=True,
              help="Fusion method. For interpolation the FIRST run is the sparse one.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Fused run (TREC format).")
@click.option("--k", "k", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Documents kept per query.")
@click.option("--rrf-k", type=click.FloatRange(min=0), default=60, show_default=True,
              help="RRF constant (Cormack et al. 2009).")
@click.option("--alpha", type=float, default=0.1, show_default=True,
              help="Interpolation weight: alpha*sparse + dense (Pyserini HybridSearcher).")
@click.option("--normalize/--no-normalize", default=False, show_default=True,
              help="Interpolation: Pyserini's centred min-max normalisation of both lists.")
@click.option("--weight-on-dense", is_flag=True, help="Interpolation: sparse + alpha*dense instead.")
@click.option("--weights", default=None, metavar="W1,W2,...",
              help="Per-run weights (rrf, combsum, combmnz), e.g. 1,0.5.")
@click.option("--norm", type=click.Choice(NORM_CHOICES), default="minmax", show_default=True,
              help="Score normalisation for combsum/combmnz.")
@click.option("--tag", default=None, help="Run tag (default kd-fuse-METHOD).")
@click.option("--tune-on", default=None, metavar="QRELS",
              help="Qrels name (dl19-passage, trec-dl-20, scifact, ...) or file: grid-search the method's "
                   "parameter on it first.")
@click.option("--metric", default="nDCG@10", show_default=True, help="Metric maximised by --tune-on.")
def main(runs, method, output, k, rrf_k, alpha, normalize, weight_on_dense, weights, norm, tag, tune_on, metric):
    """Fuse RUN files (TREC or MS MARCO format) into one TREC run.

    For --method interpolation give exactly two runs, the SPARSE (e.g. BM25) run first and the dense one second:
    fused = alpha * sparse + dense, as Pyserini's HybridSearcher. With --tune-on the free parameter (alpha,
    --rrf-k or the weights) is grid-searched on those qrels, the table is printed to stderr, and the best is used.
    """
    from kd_pyserini import fusion

    if method == "interpolation" and len(runs) != 2:
        raise click.UsageError(f"interpolation fuses exactly two runs (sparse first, then dense), got {len(runs)}")
    if len(runs) < 2:
        click.echo("kd-fuse: warning: only one run given; the output is that run re-ranked", err=True)
    parsed_weights = _parse_weights(weights, len(runs))

    loaded = []
    for path in runs:
        warn = RunWarnings()
        try:
            loaded.append(read_run(path, warnings=warn))
        except FormatError as e:
            raise click.ClickException(str(e)) from None
        if warn:
            click.echo(f"kd-fuse: warning: {path}: {dict(warn)}", err=True)

    if method == "interpolation":
        params = {"alpha": alpha, "normalize": normalize, "weight_on_dense": weight_on_dense}
    elif method == "rrf":
        params = {"rrf_k": rrf_k, "weights": parsed_weights}
    else:
        params = {"weights": parsed_weights, "norm": norm}

    if tune_on is not None:
        try:
            qrels = _load_qrels(tune_on)
        except FormatError as e:
            raise click.ClickException(str(e)) from None
        except (KeyError, ValueError, FileNotFoundError) as e:
            raise click.ClickException(f"--tune-on {tune_on}: {e}") from None
        tuned_key = {"interpolation": "alpha", "rrf": "rrf_k"}.get(method, "weights")
        fixed = {p: v for p, v in params.items() if p != tuned_key}
        try:
            best, table = fusion.tune(loaded, qrels, method, metric=metric, k=k, **fixed)
        except ValueError as e:  # an unknown metric (kd_pyserini.evaluation.MeasureError), empty qrels, ...
            raise click.ClickException(f"--metric {metric}: {e}") from None
        click.echo(f"kd-fuse: tuning {tuned_key} for {metric} on {tune_on}:", err=True)
        for setting, score in table:
            mark = "  <- best" if setting == best else ""
            click.echo(f"  {_fmt({tuned_key: setting[tuned_key]}):<28} {score:.4f}{mark}", err=True)
        click.echo(f"kd-fuse: chose {_fmt({tuned_key: best[tuned_key]})}", err=True)
        params = best

    try:
        fused = fusion.fuse(loaded, method, k=k, **params)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    write_run(fused, output, tag=tag or f"kd-fuse-{method}", k=k)
    click.echo(f"kd-fuse: {method} of {len(runs)} runs, {len(fused)} queries -> {output}", err=True)


if __name__ == "__main__":
    sys.exit(main())
