"""One option vocabulary for every kd_pyserini command, shared option decorators, and the error/alias handling.

The vocabulary (README, "Command-line vocabulary"):

=========================  =====================================================================================
``-o/--output``             what the command writes: a run file (kd-search, kd-fuse) or a folder (kd-index,
                            kd-train, kd-repro)
``--hits``                  depth of an output run (kd-search, kd-fuse)
``--run-tag``               the TREC run tag written in column 6
``--measures``              measures, ir_measures names such as ``nDCG@10,RR(rel=2)@10`` (kd-eval, kd-search's
                            evaluation, kd-fuse's ``--tune-on`` target)
``--query-max-length``      query truncation in tokens (default: the encoder card's)
``--passage-max-length``    passage truncation in tokens (default: the encoder card's)
``--batch-size``            texts per encoder forward pass; one default (:data:`ENCODE_BATCH_SIZE`) for encoding
``--progress/--no-progress``  progress bars on stderr; default: on when stderr is a terminal
``--significance-level``    kd-eval's test level; ``--alpha`` is only ever a fusion weight
=========================  =====================================================================================

Old spellings keep working for one release as hidden aliases that print a deprecation warning on stderr
(``old_names`` of :class:`KdCommand` rewrites them before parsing, per command, e.g. kd-fuse's ``--k`` -> ``--hits``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from kd_pyserini.errors import KdError, one_line

__all__ = ["CONTEXT_SETTINGS", "ENCODE_BATCH_SIZE", "PRECISION_CHOICES", "KdCommand", "KdGroup", "output_option",
           "hits_option", "run_tag_option", "measures_option", "query_max_length_option",
           "passage_max_length_option", "batch_size_option", "progress_option", "device_option", "precision_option",
           "verbose_option", "compose", "HANDLED_ERRORS", "fusion_options", "parse_weights", "fusion_params",
           "fusion_ranks_options", "Decorator"]

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 110}
#: texts per encoder forward pass, the same default on every command that encodes.
ENCODE_BATCH_SIZE = 32
PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16", "int8")
_AUTO_HELP = ("auto (default): the fastest faithful precision on this device (CUDA: bf16, else fp16; CPU: bf16 with "
              "native bf16 units, else fp32; teacher scores: fp32 on CPU); logged with -v, recorded as "
              "resolved. ")
#: exceptions a command reports as one ``Error:`` line instead of a traceback.
HANDLED_ERRORS: tuple[type[BaseException], ...] = (KdError, ValueError, OSError, KeyError)

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def compose(*decorators: Decorator) -> Decorator:
    """Apply several option decorators as one (the first listed is the first shown in ``--help``)."""

    def apply(f: Callable[..., Any]) -> Callable[..., Any]:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


def _rewrite_aliases(args: Sequence[str], aliases: Mapping[str, str], command: str) -> list[str]:
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            out.extend(args[i:])
            break
        name, eq, value = arg.partition("=")
        if name in aliases:
            new = aliases[name]
            click.echo(f"Warning: {command} {name} is deprecated and will be removed in the next release; "
                       f"use {new}.", err=True)
            arg = f"{new}={value}" if eq else new
        out.append(arg)
    return out


class _KdMixin:
    """Deprecated aliases and one-line errors, shared by :class:`KdCommand` and :class:`KdGroup`."""

    def __init__(self, *args: Any, old_names: Mapping[str, str] | None = None,
                 handled: tuple[type[BaseException], ...] = HANDLED_ERRORS, **kwargs: Any):
        kwargs["context_settings"] = {**CONTEXT_SETTINGS, **(kwargs.get("context_settings") or {})}
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.old_names = dict(old_names or {})
        self.handled = handled

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if self.old_names:
            args = _rewrite_aliases(args, self.old_names, ctx.command_path)
        return super().parse_args(ctx, args)  # type: ignore[misc]

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:  # Ctrl-C: one line, the conventional status 130 (128 + SIGINT), no traceback
            click.echo(f"{ctx.command_path}: interrupted; what was finished is kept (run the same command again to "
                       "resume where it can)", err=True)
            ctx.exit(130)
        except self.handled as e:
            raise click.ClickException(one_line(e)) from e


class KdCommand(_KdMixin, click.Command):
    """A click command with kd_pyserini's help settings, hidden deprecated aliases (``old_names={"--k":
    "--hits"}``: the old spelling is rewritten to the new one, with a warning) and one-line ``Error:`` messages for
    :data:`HANDLED_ERRORS`."""


class KdGroup(_KdMixin, click.Group):
    """A click group whose sub-commands are :class:`KdCommand` by default."""

    command_class = KdCommand


# ------------------------------------------------------------------------------------------------------------------
# Shared options
# ------------------------------------------------------------------------------------------------------------------

def output_option(kind: str = "file", required: bool = True, default: str | None = None,
                  help: str | None = None) -> Decorator:
    """``-o/--output``: a file (``kind="file"``) or a folder (``kind="dir"``) the command writes."""
    path_type = click.Path(dir_okay=False) if kind == "file" else click.Path(file_okay=False)
    return click.option("-o", "--output", "output", required=required and default is None, default=default,
                        show_default=default is not None, type=path_type,
                        help=help or ("File to write." if kind == "file" else "Folder to write."))


def hits_option(default: int = 1000, help: str = "Documents per query in the output run.") -> Decorator:
    return click.option("--hits", type=click.IntRange(min=1), default=default, show_default=True, help=help)


def run_tag_option(default_help: str) -> Decorator:
    return click.option("--run-tag", default=None, help=f"TREC run tag (column 6) [{default_help}].")


def measures_option(help: str, default: str | None = None, multiple: bool = False,
                    dest: str = "measures") -> Decorator:
    """``-m/--measures M1,M2`` (arriving as ``dest``)."""
    kw: dict[str, Any] = {"multiple": True} if multiple else {"default": default, "show_default": default is not None}
    return click.option("--measures", "-m", dest, metavar="M1,M2", help=help, **kw)


def query_max_length_option(help: str = "Query truncation in tokens [the card's].",
                            default: int | None = None) -> Decorator:
    """``--query-max-length N`` (default ``None``: the card's)."""
    return click.option("--query-max-length", type=click.IntRange(min=2), default=default,
                        show_default=default is not None, help=help)


def passage_max_length_option(help: str = "Passage truncation in tokens [the card's].",
                              default: int | None = None) -> Decorator:
    """``--passage-max-length N`` (default ``None``: the card's)."""
    return click.option("--passage-max-length", type=click.IntRange(min=2), default=default,
                        show_default=default is not None, help=help)


def batch_size_option(default: int = ENCODE_BATCH_SIZE, help: str = "Texts per encoder forward pass.") -> Decorator:
    return click.option("--batch-size", type=click.IntRange(min=1), default=default, show_default=True, help=help)


def progress_option() -> Decorator:
    """``--progress/--no-progress``; unset means on when stderr is a terminal (:mod:`kd_pyserini.progress`)."""
    return click.option("--progress/--no-progress", "progress", default=None,
                        help="Progress bars on stderr [on when stderr is a terminal].")


def device_option() -> Decorator:
    return click.option("--device", default=None, help="cpu, cuda, cuda:1 [cuda when present].")


def precision_option(choices: Sequence[str] = PRECISION_CHOICES, help: str | None = None) -> Decorator:
    """``--precision`` (default ``auto``: :mod:`kd_pyserini.encoding.precision`); ``help`` describes the explicit
    choices after the shared sentence on ``auto``."""
    return click.option("--precision", type=click.Choice(list(choices)), default="auto", show_default=True,
                        help=_AUTO_HELP + (help or "Explicit: fp32, fp16 (CUDA), bf16, int8 (CPU)."))


def verbose_option() -> Decorator:
    return click.option("-v", "--verbose", is_flag=True, help="Log more.")


def fusion_options(method_flag: str = "--method", default_method: str = "rrf", prefix: str = "") -> Decorator:
    """The fusion parameters, declared once for kd-fuse (``--method``) and kd-search's hybrid mode (``--fusion``);
    the choices are read from :data:`kd_pyserini.fusion.METHODS` and :data:`~kd_pyserini.fusion.NORMALIZATIONS`.
    The method option's value arrives as ``method``."""
    from kd_pyserini.fusion import METHODS, NORMALIZATIONS

    return compose(
        click.option(method_flag, "method", type=click.Choice(list(METHODS)), default=default_method,
                     show_default=True, help=f"{prefix}Fusion method; for interpolation the sparse run comes first."),
        click.option("--alpha", type=float, default=0.1, show_default=True,
                     help=f"{prefix}interpolation weight: alpha*sparse + dense (Pyserini's HybridSearcher)."),
        click.option("--normalize/--no-normalize", default=False, show_default=True,
                     help=f"{prefix}interpolation: Pyserini's centred min-max normalisation of both lists."),
        click.option("--weight-on-dense", is_flag=True, help=f"{prefix}interpolation: sparse + alpha*dense instead."),
        click.option("--rrf-k", type=click.FloatRange(min=0), default=60, show_default=True,
                     help=f"{prefix}rrf: the RRF constant (Cormack et al. 2009)."),
        click.option("--weights", default=None, metavar="W1,W2,...",
                     help=f"{prefix}rrf/combsum/combmnz: one weight per run, e.g. 1,0.5."),
        click.option("--norm", type=click.Choice(list(NORMALIZATIONS)), default="minmax", show_default=True,
                     help=f"{prefix}combsum/combmnz: per-query score normalisation."),
    )


def fusion_ranks_options() -> Decorator:
    """kd-fuse's ``--ranks file|score`` and ``--depth`` (:mod:`kd_pyserini.fusion_files`); both arrive as ``None``
    when not given, so a command can tell a default from an explicit choice."""
    from kd_pyserini.fusion_files import RANKS

    return compose(
        click.option("--ranks", type=click.Choice(RANKS), default=None,
                     help="rrf/combsum/combmnz: where each document's rank comes from. file [default]: the rank "
                          "column, as `python -m pyserini.fusion` (without --resort) takes it, with Pyserini's "
                          "conventions (each input cut to its first --depth lines, fused ties by docid ascending), so "
                          "a Pyserini user gets pyserini.fusion's run line for line and the ranks the system that "
                          "wrote the run meant; score: re-rank each input by score in trec_eval order (ties by docid "
                          "descending), the ranks trec_eval evaluates."),
        click.option("--depth", type=click.IntRange(min=1), default=None,
                     help="rrf/combsum/combmnz: documents taken from each input run per query [1000, as "
                          "pyserini.fusion]."),
    )


def parse_weights(text: str | None, n_runs: int) -> list[float] | None:
    """``--weights 1,0.5`` -> ``[1.0, 0.5]`` (one per run), or ``None``."""
    if text is None:
        return None
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers, e.g. 1,0.5",
                                 param_hint="--weights") from None
    if len(weights) != n_runs:
        raise click.BadParameter(f"{len(weights)} weights for {n_runs} runs; give one per run", param_hint="--weights")
    return weights


def fusion_params(method: str, alpha: float, normalize: bool, weight_on_dense: bool, rrf_k: float,
                  weights: list[float] | None, norm: str) -> dict[str, Any]:
    """The keyword arguments :func:`kd_pyserini.fusion.fuse` takes for ``method``."""
    if method == "interpolation":
        return {"alpha": alpha, "normalize": normalize, "weight_on_dense": weight_on_dense}
    if method == "rrf":
        return {"rrf_k": rrf_k, "weights": weights}
    return {"weights": weights, "norm": norm}
