"""Every option of a Margin-MSE training run (:class:`TrainConfig`), what a run produced (:class:`TrainResult`), and
the user-facing errors a run can stop with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from kd_pyserini.errors import KdError, UsageError
from kd_pyserini.train.model import DEFAULT_STUDENT
from kd_pyserini.train.teacher_files import TEACHER_FORMATS

__all__ = ["TrainConfig", "TrainResult", "Preset", "PRESETS", "get_preset", "option", "parse_scale", "RecipeError",
           "NonFiniteLossError", "CheckpointWriteError", "OutputInUseError", "ResumeMismatchError",
           "TrainingInterrupted", "PRECISIONS", "SAMPLINGS", "ARCHITECTURES"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: student architectures (Hofstätter et al. 2020): BERT_Dot (a bi-encoder: the default), BERT_CAT, ColBERT, PreTTR.
ARCHITECTURES = ("bert-dot", "bert-cat", "colbert", "prettr")
SAMPLINGS = ("random", "tas-balanced")


class RecipeError(UsageError):
    """A preset's rule broken, or an unknown preset (one line: what is missing and how to give it)."""


class NonFiniteLossError(KdError, FloatingPointError):
    """The loss or the weights became NaN or infinite; the message names the step and the last good checkpoint."""


class CheckpointWriteError(KdError, OSError):
    """A checkpoint (or the final model) could not be written, e.g. the disk is full; the previous one is intact."""


class OutputInUseError(KdError, FileExistsError):
    """``--output`` already holds files (another run) and neither ``--resume`` nor ``--overwrite`` was given."""


class ResumeMismatchError(KdError, ValueError):
    """``--resume`` with settings that differ from the checkpoint's (refused unless ``force``)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped training; ``str()`` says how far it got and how to resume.

    Attributes: step (optimizer steps done), last_checkpoint (the newest complete checkpoint, or ``None``).
    """

    def __init__(self, message: str, step: int, last_checkpoint: Path | None):
        super().__init__(message)
        self.step, self.last_checkpoint = step, last_checkpoint


def option(default: Any = MISSING, help: str | None = None, *, flag: str | tuple[str, ...] | None = None,
           kind: str | None = None, min: float | None = None, min_open: bool = False,
           choices: tuple[str, ...] | None = None, metavar: str | None = None, show_default: bool = True,
           recipe: bool = False, cli: bool = True) -> Any:
    """A :class:`TrainConfig` field with what its command-line option needs, written once (``kd-train``'s options
    are generated from these, :mod:`kd_pyserini.cli.train`; no click here).

    Args:
        default: the field's default (none: required).
        help: the option's help.
        flag: the option's spelling(s) (default: ``--field-name``).
        kind: ``file`` (an existing file), ``path`` (a file to write), ``flag`` (an on/off switch), ``measures`` (a
            comma-separated list), or ``None`` (by the default's type: int, float, str).
        min / min_open: the smallest value (excluded with ``min_open``).
        choices: the allowed values.
        metavar: how the help names the value.
        show_default: show the default in ``--help``.
        recipe: the field shapes the trained model (a preset's value or an override of it:
            :meth:`TrainConfig.applied_recipe`).
        cli: ``False``: not an option (set by the command itself).
    """
    meta = {"help": help, "flag": flag, "kind": kind, "min": min, "min_open": min_open, "choices": choices,
            "metavar": metavar, "show_default": show_default, "recipe": recipe, "cli": cli}
    return field(default=default, metadata=meta)


@dataclass(kw_only=True)
class TrainConfig:
    """Every training option (the CLI's options, one to one, generated from these fields: see :func:`option`).
    See ``kd-train margin-mse --help``.

    Make one from a preset with :meth:`preset` (``TrainConfig.preset("tas-b", teacher=..., output=...,
    in_batch_teacher=...)``): the recipe's values unless overridden, and its rules (:data:`PRESETS`). A config whose
    ``recipe`` names a preset is held to that preset's rules however it was made.

    ``overwrite``: replace what an earlier run left in ``output`` (otherwise a non-empty ``output`` is refused
    unless ``resume`` is given). ``force``: resume although the settings differ from the checkpoint's.
    """

    teacher: str = option(help="Teacher scores: ids (with --collection/--queries), text, or JSONL file (.gz "
                               "accepted).", kind="file")
    collection: str | None = option(None, "MS MARCO collection.tsv (pid<TAB>passage) for an id teacher file; read "
                                          "lazily by byte offset.", kind="file")
    queries: str | None = option(None, "queries.train.tsv (qid<TAB>query): the texts of an id teacher file; with a "
                                       "text teacher file, the qids that --query-clusters names.", kind="file")
    teacher_format: str = option("auto", "Teacher file format (auto: jsonl by content, ids when "
                                         "--collection/--queries are given).", flag="--format",
                                 choices=TEACHER_FORMATS)
    skip_bad: bool = option(False, "Skip and count malformed teacher lines instead of stopping.", kind="flag")
    architecture: str = option("bert-dot", "The student: bert-dot (a bi-encoder: CLS vector, dot product), bert-cat "
                                           "(query and passage read together), colbert (late interaction over "
                                           "token vectors) or prettr (split at layer 3); the last three are "
                                           "saved as re-rankers and train without an in-batch term.",
                               choices=ARCHITECTURES, recipe=True)
    student: str = option(DEFAULT_STUDENT, "Hub id, local model directory, or encoder card name to start from.",
                          recipe=True)
    student_layers: int | None = option(None, "Keep N of the student's transformer layers, evenly spread and ending "
                                              "with the last (6 -> 3 keeps the 2nd, 4th and 6th) [default: all].",
                                        min=1, recipe=True)
    output: str = option(help="Output folder (checkpoints, final model, logs).", flag=("-o", "--output"),
                         kind="dir")
    pooling: str | None = option(None, "Override the student card's pooling (BERT_Dot: cls).",
                                 choices=("cls", "mean"), recipe=True)
    similarity: str | None = option(None, "Override the student card's similarity (BERT_Dot: dot).",
                                    choices=("dot", "cosine"), recipe=True)
    query_max_length: int | None = option(None, "Query truncation in tokens [the card's: 30 for BERT_Dot].", min=2,
                                          recipe=True)
    passage_max_length: int | None = option(None, "Passage truncation in tokens [the card's: 200 for BERT_Dot].",
                                            min=2, recipe=True)
    lr: float = option(7e-6, "Peak AdamW learning rate.", min=0, min_open=True, recipe=True)
    batch_size: int = option(32, "Triples per training batch (per process).", min=1, recipe=True)
    epochs: int = option(1, None, min=1, recipe=True)
    max_steps: int | None = option(None, "Optimizer steps (overrides --epochs).", min=1, recipe=True)
    warmup_steps: int | None = option(None, "Linear warm-up steps, then linear decay to 0 [default: 10% of the "
                                            "steps, at most 1000].", min=0, recipe=True)
    weight_decay: float = option(0.01, None, min=0, recipe=True)
    max_grad_norm: float | None = option(None, "Clip the gradient norm (off by default).", min=0, min_open=True,
                                         recipe=True)
    grad_accum: int = option(1, "Micro-batches per optimizer step.", min=1, recipe=True)
    device: str | None = option(None, "cpu, cuda, cuda:1 [cuda when present].")
    precision: str = option("auto", "Explicit: the student's autocast precision (fp16: CUDA only, with a grad "
                                    "scaler; bf16: CUDA or CPU). An in-batch teacher runs in bf16 (fp16 where bf16 "
                                    "is missing) on GPUs, fp32 on CPUs.", choices=PRECISIONS, recipe=True)
    seed: int = option(42, "Seeds the data order, the clusters and dropout.", recipe=True)
    sampling: str = option("random", "random: a seeded shuffle of the triples; tas-balanced: each batch's queries "
                                     "from one topic cluster, each query's pair drawn from balanced teacher-margin "
                                     "bins (TAS-B).", choices=SAMPLINGS, recipe=True)
    query_clusters: str | None = option(None, "tas-balanced: clusters file, one line per cluster of tab-separated "
                                              "qids (matchmaker's).", kind="file", recipe=True)
    cluster_encoder: str | None = option(None, "tas-balanced: build the clusters by k-means over this encoder's "
                                               "query vectors (cached in --output, reused on --resume).",
                                         metavar="CARD", recipe=True)
    clusters: int | None = option(None, "tas-balanced with --cluster-encoder: number of k-means clusters.", min=1,
                                  recipe=True)
    margin_bins: int = option(10, "tas-balanced: equal-width teacher-margin bins per query.", min=1, recipe=True)
    in_batch_weight: float = option(0.0, "Weight of the in-batch Margin-MSE term (0: off).", min=0, recipe=True)
    in_batch_teacher: str | None = option(None, "Bi-encoder, cross-encoder, ColBERT or PreTTR card that scores "
                                                "every in-batch (query, passage) pair on the fly (exact two-sided "
                                                "term) [margin-mse: none: a one-sided approximation from the pair's own "
                                                "margin; tas-b: the ColBERT of the paper].", metavar="CARD",
                                          recipe=True)
    in_batch_teacher_scale: float | str = option(1.0, "Multiply the in-batch teacher's scores (e.g. 10 for a cosine "
                                                      "teacher), or 'auto': fit the scale to the teacher file's "
                                                      "margins of the first 256 triples (saved in checkpoints, "
                                                      "restored on --resume).", kind="scale", metavar="S|auto",
                                                 recipe=True)
    resume: str | None = option(None, "Continue exactly from a checkpoint-N folder, an output folder's latest, or "
                                      "'latest' (--output).", metavar="DIR|latest")
    force: bool = option(False, "With --resume: continue although the settings differ from the checkpoint's (not "
                                "exact).", kind="flag")
    overwrite: bool = option(False, "Replace what an earlier run left in --output.", kind="flag")
    grad_checkpointing: bool = option(False, "Recompute activations in backward (less memory).", kind="flag")
    compile: bool = option(False, "torch.compile the transformer.", kind="flag")
    passage_buckets: int = option(2, "Sort a batch's passages by length and pad this many groups separately (less "
                                     "padding).", min=1)
    save_every: int = option(1000, "Checkpoint every N steps (0: only the final model).", min=0)
    save_total_limit: int | None = option(2, "Keep the newest N checkpoints (0: keep all).", min=0)
    eval_every: int = option(0, "Validate every N steps (also before training and at the end) when validation is "
                                "set.", min=0)
    validation_candidates: str | None = option(None, "qid<TAB>pid<TAB>query<TAB>passage rows to re-rank (e.g. "
                                                     "candidates.dl19.bm25-top100.tsv.gz).", kind="file")
    validation_topics: str | None = option(None, "Topics name or file: restricts the queries and supplies their "
                                                 "text.")
    validation_qrels: str | None = option(None, "Qrels name (dl19-passage, dl20, ...) or file.")
    validation_measures: tuple[str, ...] = option(("nDCG@10", "RR@10"), "Validation measures, comma-separated; the "
                                                  "first selects the best checkpoint.", flag=("--measures", "-m"),
                                                  kind="measures", metavar="M1,M2")
    validation_max_queries: int | None = option(None, "Validate on the first N judged queries only.", min=1)
    early_stopping_patience: int | None = option(None, "Stop after N validations without improvement.", min=1)
    log_csv: str | None = option(None, "CSV log [default: OUTPUT/train_log.csv].", kind="path")
    log_every: int = option(10, "Log every N steps.", min=1)
    tensorboard: bool = option(False, "Also log to OUTPUT/tensorboard (needs the tensorboard package).",
                               kind="flag")
    progress: bool | None = option(None, "Progress bars on stderr [on when stderr is a terminal].", kind="progress")
    cpu_threads: int | None = option(None, "torch CPU threads (on a busy machine 1 can be much faster than the "
                                           "default).", min=1)
    recipe: str = option("margin-mse", "The preset this config follows (its rules are checked).", cli=False)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """A config following the preset ``name`` (:data:`PRESETS`): its values, then ``overrides`` (``None`` for a
        field the preset sets means "the preset's"), then its rules.

        Raises:
            RecipeError: an unknown preset, or a rule of the preset broken (e.g. ``tas-b`` without
                ``in_batch_teacher``), one line, as ``kd-train`` prints it.
        """
        p = get_preset(name)
        values = dict(p.values)
        values.update({k: v for k, v in overrides.items() if not (v is None and k in p.values)})
        values.pop("recipe", None)
        return cls(recipe=name, **values)

    def applied_recipe(self) -> dict[str, Any]:
        """The recipe this config applies: the preset's name and every model-shaping field that differs from the
        preset's value (what checkpoints and ``training_args.json`` record as ``recipe_applied``)."""
        p = PRESETS.get(self.recipe)
        base = {f.name: f.default for f in fields(self) if f.default is not MISSING}
        if p is not None:
            base.update(p.values)
        overrides = {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.metadata.get("recipe")
                     and _plain(getattr(self, f.name)) != _plain(base.get(f.name))}
        return {"name": self.recipe, "overrides": overrides}

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        for name in ("batch_size", "grad_accum", "epochs", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 (got {self.max_steps})")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0 (got {self.lr})")
        if self.in_batch_weight < 0:
            raise ValueError(f"in_batch_weight must be >= 0 (got {self.in_batch_weight})")
        self.validation_measures = tuple(self.validation_measures)
        preset = PRESETS.get(self.recipe)
        if preset is None:
            raise RecipeError(f"recipe {self.recipe!r} is not one of {', '.join(PRESETS)}; use "
                              "TrainConfig.preset(name, ...) with one of them")
        preset.check(self)  # before the option checks: a missing required part is the first thing to fix
        self._check_recipe()

    def _check_recipe(self) -> None:
        """Options of TAS-B's parts that would be silently ignored, or are missing, are refused (one line each)."""
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling {self.sampling!r} is not one of {', '.join(SAMPLINGS)}")
        if self.student_layers is not None and self.student_layers < 1:
            raise ValueError(f"student_layers must be >= 1 (got {self.student_layers})")
        if self.margin_bins < 1:
            raise ValueError(f"margin_bins must be >= 1 (got {self.margin_bins})")
        if self.clusters is not None and self.clusters < 1:
            raise ValueError(f"clusters must be >= 1 (got {self.clusters})")
        self.in_batch_teacher_scale = parse_scale(self.in_batch_teacher_scale)
        if self.in_batch_teacher_scale == "auto" and not self.in_batch_teacher:
            raise ValueError("--in-batch-teacher-scale auto fits the scale of an in-batch teacher: give "
                             "--in-batch-teacher CARD, or drop the scale")
        if self.sampling == "random":
            given = [f"--{n.replace('_', '-')}" for n in ("query_clusters", "cluster_encoder")
                     if getattr(self, n)]
            if given:
                verb = "apply" if len(given) > 1 else "applies"
                raise ValueError(f"{' and '.join(given)} {verb} only with --sampling tas-balanced (this run samples at "
                                 "random); add --sampling tas-balanced or drop them")
        else:
            if bool(self.query_clusters) == bool(self.cluster_encoder):
                raise ValueError("--sampling tas-balanced needs exactly one of --query-clusters FILE (one line per "
                                 "cluster of tab-separated qids) or --cluster-encoder CARD (with --clusters K) to "
                                 "build them")
            if self.cluster_encoder and not self.clusters:
                raise ValueError("--cluster-encoder needs --clusters K (TAS-B used 2000 for MS MARCO's 400k "
                                 "training queries; about queries/50 for smaller sets)")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture {self.architecture!r} is not one of {', '.join(ARCHITECTURES)}")
        if self.architecture != "bert-dot":
            if self.in_batch_weight > 0:
                raise ValueError(f"--architecture {self.architecture} scores (query, passage) pairs, so it has no "
                                 "in-batch term: drop --in-batch-weight (or use --architecture bert-dot)")
            given = [f"--{n}" for n in ("pooling", "similarity", "compile") if getattr(self, n)]
            if given:
                raise ValueError(f"{' and '.join(given)} apply to bert-dot students only, not --architecture "
                                 f"{self.architecture}; drop them")
        if self.in_batch_teacher and self.in_batch_weight <= 0:
            raise ValueError("--in-batch-teacher is only used by the in-batch term: give --in-batch-weight W > 0 "
                             "(TAS-B: 0.75)")


def parse_scale(value: Any) -> float | str:
    """An in-batch teacher scale: a number > 0, or ``"auto"`` (any case, surrounding blanks ignored).

    Raises:
        ValueError: anything else (one line, naming both accepted forms).
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"in_batch_teacher_scale must be a number > 0 or 'auto' (got {value!r})") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != value \
            or value == float("inf"):
        raise ValueError(f"in_batch_teacher_scale must be a number > 0 or 'auto' (got {value!r})")
    return float(value)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Preset:
    """A training recipe: its values (the defaults of ``kd-train NAME``) and its rules.

    Args:
        name: the ``kd-train`` sub-command and the recorded recipe.
        values: field values that differ from :class:`TrainConfig`'s defaults.
        requires: ``(field, message)``: the field must be set (``message``: the one-line error otherwise).
        summary: one line for ``--help``.
    """

    name: str
    values: Mapping[str, Any] = field(default_factory=dict)
    requires: tuple[tuple[str, str], ...] = ()
    summary: str = ""

    def check(self, config: Any) -> None:
        """Raise :class:`RecipeError` (the preset's own message) for the first rule ``config`` breaks."""
        for name, message in self.requires:
            if not getattr(config, name):
                raise RecipeError(message)

    def default(self, name: str, fallback: Any = None) -> Any:
        """The preset's value of field ``name`` (``fallback``: the field's own default)."""
        return self.values.get(name, fallback)


#: TAS-B's default in-batch teacher: the ColBERT the paper used (Hofstätter et al. 2021, Section 3.2), as the hub
#: checkpoint of Hofstätter et al. 2020 (card ``colbert-distilbert-margin-mse``). Offline, without it in the Hugging
#: Face cache, loading it stops with a one-line error naming the fix (--in-batch-teacher CARD|DIR).
TAS_B_IN_BATCH_TEACHER = "colbert-distilbert-margin-mse"

#: the presets (``kd-train margin-mse`` / ``kd-train tas-b``): Margin-MSE (Hofstätter et al. 2020, the T2
#: recipe) and TAS-B (Hofstätter et al., SIGIR 2021, arXiv:2104.06967, and matchmaker's
#: ``config/train/modes/tas_balanced.yaml``; the released checkpoint used batch 256 and the lengths 30/200,
#: whatever the student card says).
PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("margin-mse", {}, (), "Margin-MSE: DistilBERT student, CLS pooling, dot product, AdamW at 7e-6, batch "
                                 "32, random sampling."),
    Preset("tas-b", {"batch_size": 256, "lr": 7e-6, "sampling": "tas-balanced", "clusters": 2000,
                     "in_batch_weight": 0.75, "query_max_length": 30, "passage_max_length": 200,
                     "in_batch_teacher": TAS_B_IN_BATCH_TEACHER},
           (("in_batch_teacher", "kd-train tas-b needs --in-batch-teacher CARD (TAS-B's dynamic in-batch teacher, "
                                 "e.g. a ColBERT or cross-encoder card); for the one-sided approximation use kd-train "
                                 "margin-mse --in-batch-weight"),),
           "TAS-B: Margin-MSE + TAS-balanced batches + an in-batch term from a dynamic teacher (default: the "
           "ColBERT colbert-distilbert-margin-mse, as the paper)."),
]}


def get_preset(name: str) -> Preset:
    """The preset ``name``.

    Raises:
        RecipeError: no such preset (the known ones are named).
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise RecipeError(f"no training preset {name!r}; known: {', '.join(PRESETS)}") from None


@dataclass
class TrainResult:
    """What a finished run produced."""

    output: Path
    steps: int
    final_dir: Path | None
    best_dir: Path | None = None
    best_metric: float | None = None
    best_step: int | None = None
    last_checkpoint: Path | None = None
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
