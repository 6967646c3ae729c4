"""``kd-train``: knowledge-distillation training of BERT_Dot dense retrievers.

Usage::

    kd-train margin-mse --teacher FILE [--collection collection.tsv --queries queries.train.tsv]
             [--student distilbert-base-uncased | HUB_ID | DIR | CARD] [--student-layers N] --output DIR
             [--lr 7e-6] [--batch-size 32] [--epochs 1 | --max-steps N] [--warmup-steps N]
             [--device cuda] [--precision auto|fp32|bf16|fp16] [--grad-accum N] [--grad-checkpointing] [--compile]
             [--sampling random|tas-balanced [--query-clusters FILE | --cluster-encoder CARD --clusters K]
              [--margin-bins 10]]
             [--in-batch-weight W [--in-batch-teacher CARD [--in-batch-teacher-scale S|auto]]]
             [--save-every N] [--resume DIR|latest [--force] | --overwrite]
             [--validation-candidates candidates.dl19.bm25-top100.tsv.gz --validation-qrels dl19-passage
              --measures nDCG@10,RR@10 --eval-every N --early-stopping-patience N] [--log-csv FILE] [--tensorboard]
             [--skip-bad] [--progress/--no-progress]
    kd-train tas-b --teacher FILE [--in-batch-teacher CARD [--in-batch-teacher-scale S|auto]]
             (--query-clusters FILE | --cluster-encoder CARD) ...
    kd-train export OUTPUT/best --to FOLDER [--repo-id OWNER/NAME] [--license apache-2.0]

Every folder kd-train saves (``checkpoint-N/``, ``best/``, the final model) carries a Hugging Face model card,
``README.md`` (:mod:`kd_pyserini.train.model_card`); ``export`` copies one to a folder that ``huggingface-cli upload``
publishes as is (docs/publishing.md).

The options are generated from :class:`kd_pyserini.train.config.TrainConfig`'s fields (their help, range and
choices are written there once), with the preset's values (:data:`kd_pyserini.train.config.PRESETS`) as defaults;
the command builds ``TrainConfig.preset(NAME, **options)``, which also enforces the preset's rules.
``tas-b`` is the same command with TAS-B's recipe as its defaults (Hofstätter et al., SIGIR 2021): TAS-balanced
sampling with 10 margin bins and 2,000 query clusters, the in-batch Margin-MSE term with weight 0.75 scored by a
dynamic in-batch teacher (default: the ColBERT ``colbert-distilbert-margin-mse``, as in the paper; any card with
``--in-batch-teacher``), batch size 256, AdamW at 7e-6, query/passage lengths 30/200. Every value can be
overridden.

Teacher files: ``pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid`` (Hofstätter et al. 2020's, with
``--collection``/``--queries``), ``pos_score<TAB>neg_score<TAB>query<TAB>pos<TAB>neg``, or JSONL with ``query``,
``pos``, ``neg``, ``pos_scores``, ``neg_scores``. Several GPUs: ``torchrun --nproc_per_node N -m kd_pyserini.train
margin-mse ...`` (``--batch-size`` is per process). Also runnable as ``python -m kd_pyserini.train``.

``--output`` must be new or empty: a folder that holds another run is refused unless ``--resume`` continues it
(with the same settings, or ``--force``) or ``--overwrite`` replaces it. Ctrl-C stops with status 130 and keeps the
last complete checkpoint; run the same command plus ``--resume latest`` to continue.

Old spellings (one more release, with a warning): ``--validation-measures`` (``--measures``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import MISSING, Field, fields
from typing import Any

import click

from kd_pyserini.cli.options import (Decorator, KdCommand, KdGroup, batch_size_option, compose, device_option,
                                     measures_option, output_option, passage_max_length_option, precision_option,
                                     progress_option, query_max_length_option)

OLD_NAMES = {"--validation-measures": "--measures"}
#: options spelled by the shared vocabulary (:mod:`kd_pyserini.cli.options`), by field.
_VOCABULARY = {"output", "query_max_length", "passage_max_length", "batch_size", "device", "precision",
               "validation_measures", "progress"}


@click.group(name="kd-train", cls=KdGroup)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Train BERT_Dot dense retrievers by knowledge distillation (Margin-MSE, Hofstätter et al. 2020; TAS-B,
    Hofstätter et al. 2021)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


class ScaleType(click.ParamType):
    """A number > 0 or ``auto`` (``--in-batch-teacher-scale``)."""

    name = "scale"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        from kd_pyserini.train.config import parse_scale

        try:
            return parse_scale(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number > 0 nor 'auto'", param, ctx)


def _click_type(meta: Mapping[str, Any], default: Any, annotation: str) -> Any:
    kind, lo = meta.get("kind"), meta.get("min")
    if kind == "scale":
        return ScaleType()
    if kind == "file":
        return click.Path(exists=True, dir_okay=False)
    if kind == "path":
        return click.Path(dir_okay=False)
    if meta.get("choices"):
        return click.Choice(list(meta["choices"]))
    is_float = "float" in annotation or isinstance(default, float)
    if lo is not None:
        return click.FloatRange(min=lo, min_open=meta.get("min_open", False)) if is_float else click.IntRange(min=lo)
    if "int" in annotation:
        return int
    return float if is_float else None


def _field_option(f: Field, default: Any) -> Decorator:
    """One ``kd-train`` option from a :class:`TrainConfig` field and its metadata (:func:`kd_pyserini.train.config.
    option`); the options of the shared vocabulary keep their shared spelling."""
    meta = f.metadata
    name, help_ = f.name, meta.get("help")
    if name == "output":
        return output_option("dir", help=help_)
    if name == "query_max_length":
        return query_max_length_option(help_, default=default)
    if name == "passage_max_length":
        return passage_max_length_option(help_, default=default)
    if name == "batch_size":
        return batch_size_option(default=default, help=help_)
    if name == "device":
        return device_option()
    if name == "precision":
        return precision_option(meta["choices"], help=help_)
    if name == "validation_measures":
        return measures_option(help_, default=",".join(default), dest=name)
    if name == "progress":
        return progress_option()
    flags = meta.get("flag") or f"--{name.replace('_', '-')}"
    flags = (flags,) if isinstance(flags, str) else tuple(flags)
    if meta.get("kind") == "flag":
        return click.option(*flags, name, is_flag=True, default=bool(default), help=help_)
    required = default is MISSING
    kw: dict[str, Any] = {"required": required, "help": help_}
    if not required:
        kw["default"] = default
        kw["show_default"] = meta.get("show_default", True) and default is not None
    typ = _click_type(meta, default, str(f.type))
    if typ is not None:
        kw["type"] = typ
    if meta.get("metavar"):
        kw["metavar"] = meta["metavar"]
    return click.option(*flags, name, **kw)


def train_options(preset: str) -> Decorator:
    """Every ``kd-train`` option, generated from :class:`~kd_pyserini.train.config.TrainConfig`'s fields, with the
    preset's values as defaults (margin-mse and tas-b differ only there): each default is written once, in the
    config."""
    from kd_pyserini.train.config import TrainConfig, get_preset

    p = get_preset(preset)
    return compose(*(_field_option(f, p.default(f.name, f.default)) for f in fields(TrainConfig)
                     if f.metadata.get("cli", True)))


def _run(recipe: str, options: dict[str, Any]) -> None:
    from kd_pyserini.errors import one_line
    from kd_pyserini.train.config import NonFiniteLossError, RecipeError, TrainConfig, TrainingInterrupted
    from kd_pyserini.trec_io import FormatError

    measures = options.pop("validation_measures") or ""
    options["validation_measures"] = tuple(m.strip() for m in measures.split(",") if m.strip())
    try:
        from kd_pyserini.train.trainer import train_margin_mse

        cfg = TrainConfig.preset(recipe, **options)
        result = train_margin_mse(cfg)
    except RecipeError as e:
        raise click.UsageError(one_line(e)) from None
    except FormatError as e:
        raise click.ClickException(f"{e} (use --skip-bad to skip and count bad lines)") from None
    except NonFiniteLossError as e:
        click.echo(f"kd-train: error: {e}", err=True)
        sys.exit(3)
    except KeyboardInterrupt as e:  # Ctrl-C: one line, status 130, no traceback
        detail = str(e) if isinstance(e, TrainingInterrupted) else \
            "interrupted before training started; nothing was written (run the same command again)"
        click.echo(f"kd-train: {detail}", err=True)
        sys.exit(130)
    except (ValueError, OSError) as e:
        raise click.ClickException(one_line(e)) from None
    if os.environ.get("RANK", "0") != "0":  # torchrun: only rank 0 reports (and writes)
        return
    click.echo(f"trained {result.steps} steps; final model: {result.final_dir}")
    if result.best_dir is not None:
        click.echo(f"best {cfg.validation_measures[0]} {result.best_metric:.4f} at step {result.best_step}: "
                   f"{result.best_dir}" + (" (stopped early)" if result.stopped_early else ""))
    if result.last_checkpoint is not None:
        click.echo(f"last checkpoint: {result.last_checkpoint}")


@main.command("margin-mse", cls=KdCommand, old_names=OLD_NAMES)
@train_options("margin-mse")
def margin_mse_cmd(**options: Any) -> None:
    """Margin-MSE distillation: MSE(s(q,p+) - s(q,p-), t(q,p+) - t(q,p-)) (Hofstätter et al. 2020).

    Defaults follow the paper: DistilBERT student, CLS pooling, dot product, query/passage max length 30/200,
    AdamW at 7e-6, batch size 32, random sampling. --sampling tas-balanced and --in-batch-teacher add TAS-B's parts
    one at a time (or use `kd-train tas-b`).
    """
    _run("margin-mse", options)


@main.command("tas-b", cls=KdCommand, old_names=OLD_NAMES)
@train_options("tas-b")
def tas_b_cmd(**options: Any) -> None:
    """TAS-B: Margin-MSE + TAS-balanced batches + an in-batch term from a dynamic teacher (Hofstätter et al. 2021).

    The same options as margin-mse with TAS-B's defaults (the preset TrainConfig.preset("tas-b")): --sampling
    tas-balanced, --clusters 2000, --margin-bins 10, --in-batch-weight 0.75, --batch-size 256, --lr 7e-6,
    --query-max-length 30, --passage-max-length 200, --in-batch-teacher colbert-distilbert-margin-mse (the ColBERT
    of the paper, from the Hugging Face hub or its cache; give another card or folder to override), and the clusters
    come from --query-clusters or --cluster-encoder. An epoch of TAS-balanced sampling is one pass over the queries (one pair
    each): set --max-steps.
    """
    _run("tas-b", options)


def export_model(model_dir: str, output: str, repo_id: str | None = None, name: str | None = None,
                 license: str | None = None, overwrite: bool = False) -> str:
    """What ``kd-train export`` does (see :func:`kd_pyserini.train.model_card.export_student`); returns the line it
    prints."""
    from kd_pyserini.train.model_card import export_student

    out = export_student(model_dir, output, repo_id=repo_id, name=name, license=license, overwrite=overwrite)
    return (f"exported {model_dir} to {out} (model.safetensors, tokenizer, README.md model card, kd card); publish "
            f"with: huggingface-cli upload {repo_id or 'OWNER/NAME'} {out} .")


@main.command("export", cls=KdCommand)
@click.argument("model_dir", metavar="DIR", type=click.Path(exists=True, file_okay=False))
@click.option("--to", "-o", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="Folder to write (new or empty): what 'huggingface-cli upload REPO FOLDER' publishes as is.")
@click.option("--repo-id", default=None, metavar="OWNER/NAME",
              help="The hub id it will be published as (named in the model card's examples and the kd card).")
@click.option("--name", default=None, help="The model's name in its cards [the repo id's name, else the run's].")
@click.option("--license", "license_", default=None, metavar="ID",
              help="License identifier for the model card (e.g. apache-2.0) [left out].")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --to folder.")
def export_cmd(model_dir: str, output: str, repo_id: str | None, name: str | None, license_: str | None,
               overwrite: bool) -> None:
    """Export a trained student (DIR: a kd-train output folder, checkpoint-N or best/) for the Hugging Face hub:
    safetensors weights, tokenizer, a README.md model card (architecture, training, measured validation figures,
    the command that reproduces it, citations) and the kd card."""
    click.echo(export_model(model_dir, output, repo_id=repo_id, name=name, license=license_, overwrite=overwrite))


if __name__ == "__main__":
    main()
