"""``kd-train``: knowledge-distillation training of BERT_Dot dense retrievers.

Usage::

    kd-train margin-mse --teacher FILE [--collection collection.tsv --queries queries.train.tsv]
             [--student distilbert-base-uncased | HUB_ID | DIR | CARD] [--student-layers N] --output DIR
             [--lr 7e-6] [--batch-size 32] [--epochs 1 | --max-steps N] [--warmup-steps N]
             [--device cuda] [--precision fp32|bf16|fp16] [--grad-accum N] [--grad-checkpointing] [--compile]
             [--sampling random|tas-balanced [--query-clusters FILE | --cluster-encoder CARD --clusters K]
              [--margin-bins 10]]
             [--in-batch-weight W [--in-batch-teacher CARD [--in-batch-teacher-scale S]]]
             [--save-every N] [--resume DIR|latest [--force] | --overwrite]
             [--validation-candidates candidates.dl19.bm25-top100.tsv.gz --validation-qrels dl19-passage
              --measures nDCG@10,RR@10 --eval-every N --early-stopping-patience N] [--log-csv FILE] [--tensorboard]
             [--skip-bad] [--progress/--no-progress]
    kd-train tas-b --teacher FILE --in-batch-teacher CARD (--query-clusters FILE | --cluster-encoder CARD) ...
    kd-train export OUTPUT/best --to FOLDER [--repo-id OWNER/NAME] [--license apache-2.0]

Every folder kd-train saves (``checkpoint-N/``, ``best/``, the final model) carries a Hugging Face model card,
``README.md`` (:mod:`kd_pyserini.train.model_card`); ``export`` copies one to a folder that ``huggingface-cli upload``
publishes as is (docs/publishing.md).

``tas-b`` is the same command with TAS-B's recipe as its defaults (Hofstätter et al., SIGIR 2021): TAS-balanced
sampling with 10 margin bins and 2,000 query clusters, the in-batch Margin-MSE term with weight 0.75 scored by a
dynamic in-batch teacher (required), batch size 256, AdamW at 7e-6, query/passage lengths 30/200. Every value can be
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
from typing import Any

import click

from kd_pyserini.cli.options import (KdCommand, KdGroup, batch_size_option, compose, device_option, measures_option,
                                     output_option, passage_max_length_option, precision_option, progress_option,
                                     query_max_length_option)
from kd_pyserini.train.model import DEFAULT_STUDENT
from kd_pyserini.train.teacher_files import TEACHER_FORMATS

OLD_NAMES = {"--validation-measures": "--measures"}

#: the defaults of ``kd-train margin-mse`` (Hofstätter et al. 2020, the Margin-MSE T2 recipe).
MARGIN_MSE_DEFAULTS: dict[str, Any] = {"batch_size": 32, "lr": 7e-6, "sampling": "random", "clusters": None,
                                       "in_batch_weight": 0.0}
#: the defaults of ``kd-train tas-b`` (Hofstätter et al., SIGIR 2021, arXiv:2104.06967, and matchmaker's
#: ``config/train/modes/tas_balanced.yaml``): the released checkpoint used batch 256.
TAS_B_DEFAULTS: dict[str, Any] = {"batch_size": 256, "lr": 7e-6, "sampling": "tas-balanced", "clusters": 2000,
                                  "in_batch_weight": 0.75}
#: ``kd-train tas-b``'s query / passage lengths unless given (margin-mse takes the student card's).
TAS_B_LENGTHS = (30, 200)


@click.group(name="kd-train", cls=KdGroup)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Train BERT_Dot dense retrievers by knowledge distillation (Margin-MSE, Hofstätter et al. 2020; TAS-B,
    Hofstätter et al. 2021)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def train_options(d: dict[str, Any]):
    """Every ``kd-train`` option, with the recipe's defaults ``d`` (margin-mse and tas-b differ only there)."""
    return compose(
        click.option("--teacher", required=True, type=click.Path(exists=True, dir_okay=False),
                     help="Teacher scores: ids (with --collection/--queries), text, or JSONL file (.gz accepted)."),
        click.option("--collection", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="MS MARCO collection.tsv (pid<TAB>passage) for an id teacher file; read lazily by byte "
                          "offset."),
        click.option("--queries", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="queries.train.tsv (qid<TAB>query): the texts of an id teacher file; with a text teacher "
                          "file, the qids that --query-clusters names."),
        click.option("--format", "teacher_format", type=click.Choice(TEACHER_FORMATS), default="auto",
                     show_default=True,
                     help="Teacher file format (auto: jsonl by content, ids when --collection/--queries are given)."),
        click.option("--skip-bad", is_flag=True, help="Skip and count malformed teacher lines instead of stopping."),
        click.option("--student", default=DEFAULT_STUDENT, show_default=True,
                     help="Hub id, local model directory, or encoder card name to start from."),
        click.option("--student-layers", type=click.IntRange(min=1), default=None,
                     help="Keep N of the student's transformer layers, evenly spread and ending with the last "
                          "(6 -> 3 keeps the 2nd, 4th and 6th) [default: all]."),
        output_option("dir", help="Output folder (checkpoints, final model, logs)."),
        click.option("--pooling", type=click.Choice(["cls", "mean"]), default=None,
                     help="Override the student card's pooling (BERT_Dot: cls)."),
        click.option("--similarity", type=click.Choice(["dot", "cosine"]), default=None,
                     help="Override the student card's similarity (BERT_Dot: dot)."),
        query_max_length_option("Query truncation in tokens [the card's: 30 for BERT_Dot]."),
        passage_max_length_option("Passage truncation in tokens [the card's: 200 for BERT_Dot]."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=d["lr"], show_default=True,
                     help="Peak AdamW learning rate."),
        batch_size_option(default=d["batch_size"], help="Triples per training batch (per process)."),
        click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True),
        click.option("--max-steps", type=click.IntRange(min=1), default=None,
                     help="Optimizer steps (overrides --epochs)."),
        click.option("--warmup-steps", type=click.IntRange(min=0), default=None,
                     help="Linear warm-up steps, then linear decay to 0 [default: 10% of the steps, at most 1000]."),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=0.01, show_default=True),
        click.option("--max-grad-norm", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Clip the gradient norm (off by default)."),
        click.option("--grad-accum", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Micro-batches per optimizer step."),
        device_option(),
        precision_option(("fp32", "bf16", "fp16"), help="The student's autocast precision (fp16: CUDA only, with a "
                                                        "grad scaler; bf16: CUDA or CPU). An in-batch teacher runs in "
                                                        "bf16 (fp16 where bf16 is missing) on GPUs, fp32 on CPUs."),
        click.option("--seed", type=int, default=42, show_default=True,
                     help="Seeds the data order, the clusters and dropout."),
        click.option("--sampling", type=click.Choice(["random", "tas-balanced"]), default=d["sampling"],
                     show_default=True,
                     help="random: a seeded shuffle of the triples; tas-balanced: each batch's queries from one topic "
                          "cluster, each query's pair drawn from balanced teacher-margin bins (TAS-B)."),
        click.option("--query-clusters", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="tas-balanced: clusters file, one line per cluster of tab-separated qids (matchmaker's)."),
        click.option("--cluster-encoder", default=None, metavar="CARD",
                     help="tas-balanced: build the clusters by k-means over this encoder's query vectors (cached in "
                          "--output, reused on --resume)."),
        click.option("--clusters", type=click.IntRange(min=1), default=d["clusters"], show_default=True,
                     help="tas-balanced with --cluster-encoder: number of k-means clusters."),
        click.option("--margin-bins", type=click.IntRange(min=1), default=10, show_default=True,
                     help="tas-balanced: equal-width teacher-margin bins per query."),
        click.option("--in-batch-weight", type=click.FloatRange(min=0), default=d["in_batch_weight"],
                     show_default=True, help="Weight of the in-batch Margin-MSE term (0: off)."),
        click.option("--in-batch-teacher", default=None, metavar="CARD",
                     help="Bi-encoder or cross-encoder card that scores every in-batch (query, passage) pair on the "
                          "fly (exact two-sided term) [default: none: a one-sided approximation from the pair's own "
                          "margin]."),
        click.option("--in-batch-teacher-scale", type=click.FloatRange(min=0, min_open=True), default=1.0,
                     show_default=True,
                     help="Multiply the in-batch teacher's scores (e.g. 10 for a cosine teacher)."),
        click.option("--resume", default=None, metavar="DIR|latest",
                     help="Continue exactly from a checkpoint-N folder, an output folder's latest, or 'latest' "
                          "(--output)."),
        click.option("--force", is_flag=True,
                     help="With --resume: continue although the settings differ from the checkpoint's (not exact)."),
        click.option("--overwrite", is_flag=True, help="Replace what an earlier run left in --output."),
        click.option("--grad-checkpointing", is_flag=True, help="Recompute activations in backward (less memory)."),
        click.option("--compile", "compile_", is_flag=True, help="torch.compile the transformer."),
        click.option("--passage-buckets", type=click.IntRange(min=1), default=2, show_default=True,
                     help="Sort a batch's passages by length and pad this many groups separately (less padding)."),
        click.option("--save-every", type=click.IntRange(min=0), default=1000, show_default=True,
                     help="Checkpoint every N steps (0: only the final model)."),
        click.option("--save-total-limit", type=click.IntRange(min=0), default=2, show_default=True,
                     help="Keep the newest N checkpoints (0: keep all)."),
        click.option("--eval-every", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Validate every N steps (also before training and at the end) when validation is set."),
        click.option("--validation-candidates", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="qid<TAB>pid<TAB>query<TAB>passage rows to re-rank (e.g. "
                          "candidates.dl19.bm25-top100.tsv.gz)."),
        click.option("--validation-topics", default=None,
                     help="Topics name or file: restricts the queries and supplies their text."),
        click.option("--validation-qrels", default=None, help="Qrels name (dl19-passage, dl20, ...) or file."),
        measures_option("Validation measures, comma-separated; the first selects the best checkpoint.",
                        default="nDCG@10,RR@10"),
        click.option("--validation-max-queries", type=click.IntRange(min=1), default=None,
                     help="Validate on the first N judged queries only."),
        click.option("--early-stopping-patience", type=click.IntRange(min=1), default=None,
                     help="Stop after N validations without improvement."),
        click.option("--log-csv", type=click.Path(dir_okay=False), default=None,
                     help="CSV log [default: OUTPUT/train_log.csv]."),
        click.option("--log-every", type=click.IntRange(min=1), default=10, show_default=True,
                     help="Log every N steps."),
        click.option("--tensorboard", is_flag=True,
                     help="Also log to OUTPUT/tensorboard (needs the tensorboard package)."),
        progress_option(),
        click.option("--cpu-threads", type=click.IntRange(min=1), default=None,
                     help="torch CPU threads (on a busy machine 1 can be much faster than the default)."),
    )


def _run(recipe: str, compile_: bool, progress: bool | None, measures: str, options: dict[str, Any]) -> None:
    from kd_pyserini.errors import one_line
    from kd_pyserini.train.config import NonFiniteLossError, TrainConfig, TrainingInterrupted
    from kd_pyserini.trec_io import FormatError

    measures_t = tuple(m.strip() for m in measures.split(",") if m.strip())
    try:
        from kd_pyserini.train.trainer import train_margin_mse

        cfg = TrainConfig(compile=compile_, progress=progress, validation_measures=measures_t, recipe=recipe,
                          **options)
        result = train_margin_mse(cfg)
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
        click.echo(f"best {measures_t[0]} {result.best_metric:.4f} at step {result.best_step}: {result.best_dir}"
                   + (" (stopped early)" if result.stopped_early else ""))
    if result.last_checkpoint is not None:
        click.echo(f"last checkpoint: {result.last_checkpoint}")


@main.command("margin-mse", cls=KdCommand, old_names=OLD_NAMES)
@train_options(MARGIN_MSE_DEFAULTS)
def margin_mse_cmd(compile_: bool, progress: bool | None, measures: str, **options: Any) -> None:
    """Margin-MSE distillation: MSE(s(q,p+) - s(q,p-), t(q,p+) - t(q,p-)) (Hofstätter et al. 2020).

    Defaults follow the paper: DistilBERT student, CLS pooling, dot product, query/passage max length 30/200,
    AdamW at 7e-6, batch size 32, random sampling. --sampling tas-balanced and --in-batch-teacher add TAS-B's parts
    one at a time (or use `kd-train tas-b`).
    """
    _run("margin-mse", compile_, progress, measures, options)


@main.command("tas-b", cls=KdCommand, old_names=OLD_NAMES)
@train_options(TAS_B_DEFAULTS)
def tas_b_cmd(compile_: bool, progress: bool | None, measures: str, **options: Any) -> None:
    """TAS-B: Margin-MSE + TAS-balanced batches + an in-batch term from a dynamic teacher (Hofstätter et al. 2021).

    The same options as margin-mse with TAS-B's defaults: --sampling tas-balanced, --clusters 2000, --margin-bins
    10, --in-batch-weight 0.75, --batch-size 256, --lr 7e-6, --query-max-length 30, --passage-max-length 200;
    --in-batch-teacher is required, and the clusters come from --query-clusters or --cluster-encoder. An epoch of
    TAS-balanced sampling is one pass over the queries (one pair each): set --max-steps.
    """
    if not options.get("in_batch_teacher"):
        raise click.UsageError("kd-train tas-b needs --in-batch-teacher CARD (TAS-B's dynamic in-batch teacher, e.g. "
                               "a ColBERT or cross-encoder card); for the one-sided approximation use kd-train "
                               "margin-mse --in-batch-weight")
    # the paper's lengths, whatever the student card says (all-MiniLM-L6-v2's card would give 256/256)
    options["query_max_length"] = options["query_max_length"] or TAS_B_LENGTHS[0]
    options["passage_max_length"] = options["passage_max_length"] or TAS_B_LENGTHS[1]
    _run("tas-b", compile_, progress, measures, options)


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
