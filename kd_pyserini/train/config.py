"""Every option of a Margin-MSE training run (:class:`TrainConfig`), what a run produced (:class:`TrainResult`), and
the user-facing errors a run can stop with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kd_pyserini.errors import KdError
from kd_pyserini.train.model import DEFAULT_STUDENT

__all__ = ["TrainConfig", "TrainResult", "NonFiniteLossError", "CheckpointWriteError", "OutputInUseError",
           "ResumeMismatchError", "TrainingInterrupted", "PRECISIONS", "SAMPLINGS"]

PRECISIONS = ("fp32", "bf16", "fp16")
SAMPLINGS = ("random", "tas-balanced")


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


@dataclass
class TrainConfig:
    """Every training option (the CLI's options, one to one). See ``kd-train margin-mse --help``.

    ``overwrite``: replace what an earlier run left in ``output`` (otherwise a non-empty ``output`` is refused
    unless ``resume`` is given). ``force``: resume although the settings differ from the checkpoint's.
    """

    teacher: str
    output: str
    student: str = DEFAULT_STUDENT
    student_layers: int | None = None
    collection: str | None = None
    queries: str | None = None
    teacher_format: str = "auto"
    skip_bad: bool = False
    pooling: str | None = None
    similarity: str | None = None
    query_max_length: int | None = None
    passage_max_length: int | None = None
    lr: float = 7e-6
    batch_size: int = 32
    epochs: int = 1
    max_steps: int | None = None
    warmup_steps: int | None = None
    weight_decay: float = 0.01
    max_grad_norm: float | None = None
    grad_accum: int = 1
    device: str | None = None
    precision: str = "fp32"
    seed: int = 42
    resume: str | None = None
    overwrite: bool = False
    force: bool = False
    grad_checkpointing: bool = False
    compile: bool = False
    in_batch_weight: float = 0.0
    in_batch_teacher: str | None = None
    in_batch_teacher_scale: float = 1.0
    sampling: str = "random"
    query_clusters: str | None = None
    cluster_encoder: str | None = None
    clusters: int | None = None
    margin_bins: int = 10
    recipe: str = "margin-mse"
    passage_buckets: int = 2
    save_every: int = 1000
    save_total_limit: int | None = 2
    eval_every: int = 0
    validation_candidates: str | None = None
    validation_topics: str | None = None
    validation_qrels: str | None = None
    validation_measures: tuple[str, ...] = ("nDCG@10", "RR@10")
    validation_max_queries: int | None = None
    early_stopping_patience: int | None = None
    log_csv: str | None = None
    log_every: int = 10
    tensorboard: bool = False
    progress: bool | None = None
    cpu_threads: int | None = None

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
        self._check_recipe()
        self.validation_measures = tuple(self.validation_measures)

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
        if self.in_batch_teacher_scale <= 0:
            raise ValueError(f"in_batch_teacher_scale must be > 0 (got {self.in_batch_teacher_scale})")
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
        if self.in_batch_teacher and self.in_batch_weight <= 0:
            raise ValueError("--in-batch-teacher is only used by the in-batch term: give --in-batch-weight W > 0 "
                             "(TAS-B: 0.75)")


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
