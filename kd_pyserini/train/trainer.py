"""Margin-MSE training loop for BERT_Dot students (Hofstätter et al. 2020, arXiv:2010.02666).

One code path for CPU and GPU: the same loop runs a 2-layer test model on a laptop core and DistilBERT on CUDA, with
bf16/fp16 autocast, gradient accumulation, gradient checkpointing, ``torch.compile`` and DistributedDataParallel
(``torchrun --nproc_per_node N -m kd_pyserini.train margin-mse ...``) switched on by options.

What a run leaves in ``--output DIR``:

* ``checkpoint-STEP/`` every ``save_every`` steps: a Hugging Face model directory (weights, tokenizer,
  ``kd_pyserini_card.toml``) plus ``trainer_state.pt`` (optimizer, scheduler, grad scaler, every rank's RNG states,
  data position, validation history). Written under a temporary name and renamed, so a crash never leaves half a
  checkpoint. ``resume`` continues from one *exactly*: same data order (a function of the seed), same RNG stream,
  so the weights equal those of an uninterrupted run.
* ``best/`` the best checkpoint by the first validation measure (when validating).
* ``DIR`` itself: the final weights (model, tokenizer, card), loadable by ``kd_pyserini.get_query_encoder(DIR)``.
* ``train_log.csv`` (step, epoch, loss, lr, triples/s, validation measures) and ``training_args.json``.

A non-finite loss stops training at once (:class:`NonFiniteLossError`) without saving the bad weights; the last
checkpoint written before it is left as it was.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kd_pyserini.atomic import replace_dir
from kd_pyserini.errors import KdError
from kd_pyserini.progress import progress_bar, quiet_third_party
from kd_pyserini.train.data import (Batch, Collator, TeacherData, epoch_order, load_teacher, num_batches)
from kd_pyserini.train.in_batch_margin_mse import InBatchMarginMSELoss
from kd_pyserini.train.margin_mse import MarginMSELoss
from kd_pyserini.train.model import DEFAULT_STUDENT, BertDotStudent, resolve_student_card

__all__ = ["TrainConfig", "TrainResult", "MarginMSETrainer", "NonFiniteLossError", "train_margin_mse",
           "find_checkpoint", "batch_loss", "STATE_FILE"]

log = logging.getLogger(__name__)
STATE_FILE = "trainer_state.pt"
PRECISIONS = ("fp32", "bf16", "fp16")
# Settings that change the data order or the update sequence: resuming with different values is not exact.
_ORDER_KEYS = ("teacher", "seed", "batch_size", "grad_accum", "world_size", "total_steps", "lr", "warmup_steps",
               "in_batch_weight", "precision")


class NonFiniteLossError(KdError, FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


@dataclass
class TrainConfig:
    """Every training option (the CLI's options, one to one). See ``kd-train margin-mse --help``."""

    teacher: str
    output: str
    student: str = DEFAULT_STUDENT
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
    grad_checkpointing: bool = False
    compile: bool = False
    in_batch_weight: float = 0.0
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
        self.validation_measures = tuple(self.validation_measures)


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


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed() -> _Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: initialise the process group (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return _Dist(rank=rank, world_size=world, local_rank=local)


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory (one holding ``trainer_state.pt``), or the latest ``checkpoint-N`` inside ``path``."""
    p = Path(path)
    if (p / STATE_FILE).is_file():
        return p
    if p.is_dir():
        ckpts = _list_checkpoints(p)
        if ckpts:
            return ckpts[-1][1]
    raise FileNotFoundError(f"{p} is neither a checkpoint (no {STATE_FILE}) nor an output directory with "
                            "checkpoint-N folders; pass --resume OUTPUT_DIR or --resume OUTPUT_DIR/checkpoint-N")


def _list_checkpoints(output: Path) -> list[tuple[int, Path]]:
    out = []
    for d in output.glob("checkpoint-*"):
        suffix = d.name.removeprefix("checkpoint-")
        if d.is_dir() and suffix.isdigit() and (d / STATE_FILE).is_file():
            out.append((int(suffix), d))
    return sorted(out)


def _rng_state() -> dict[str, Any]:
    """Every RNG's state as plain Python values (bytes, ints), so it pickles across processes and loads with
    ``torch.load(weights_only=True)``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (kind, keys.astype(np.uint32).tobytes(), int(pos), int(has_gauss), float(cached)),
             "torch": torch.get_rng_state().numpy().tobytes()}
    if torch.cuda.is_available():
        state["cuda"] = [s.numpy().tobytes() for s in torch.cuda.get_rng_state_all()]
    return state


def _bytes_tensor(b: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(b), dtype=torch.uint8)


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.frombuffer(keys, dtype=np.uint32).copy(), pos, has_gauss, cached))
    torch.set_rng_state(_bytes_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_bytes_tensor(b) for b in state["cuda"]])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def batch_loss(student: BertDotStudent | torch.nn.Module, batch: Batch, in_batch_weight: float = 0.0,
               margin_loss: MarginMSELoss | None = None,
               in_batch_loss: InBatchMarginMSELoss | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loss of one batch: Margin-MSE (+ ``in_batch_weight`` × in-batch Margin-MSE).

    ``student`` is called once with all unique queries and passages (so a DDP wrapper sees one forward). Returns
    ``(loss, parts)`` with the un-weighted terms in ``parts``.
    """
    margin_loss = margin_loss or MarginMSELoss()
    q, p = student(batch.q_ids, batch.q_mask, batch.p_ids, batch.p_mask)
    qv = q[batch.q_index]
    s_pos = (qv * p[batch.pos_index]).sum(-1)
    s_neg = (qv * p[batch.neg_index]).sum(-1)
    margin = batch.teacher_margin
    loss = margin_loss(s_pos, s_neg, margin)
    parts = {"margin_mse": loss.detach()}
    if in_batch_weight > 0:
        in_batch_loss = in_batch_loss or InBatchMarginMSELoss()
        inb = in_batch_loss(qv @ p.T, batch.q_index, batch.pos_index, batch.neg_index, margin)
        parts["in_batch"] = inb.detach()
        loss = loss + in_batch_weight * inb
    return loss, parts


# ----------------------------------------------------------------------------------------------------------------
# the trainer
# ----------------------------------------------------------------------------------------------------------------

class MarginMSETrainer:
    """Train a BERT_Dot student with Margin-MSE from a teacher file.

    Args:
        config: the options.
        data: an already-loaded teacher file (default: ``load_teacher(config.teacher, ...)``).
        on_step: called as ``on_step(trainer)`` after every optimizer step (after logging, validation and saving);
            raising from it stops training (tests use it to simulate an interruption).
    """

    def __init__(self, config: TrainConfig, data: TeacherData | None = None,
                 on_step: Callable[["MarginMSETrainer"], None] | None = None):
        self.cfg = cfg = config
        self.on_step = on_step
        if cfg.cpu_threads:
            torch.set_num_threads(cfg.cpu_threads)
        self.dist = _init_distributed()
        self.output = Path(cfg.output)
        self.device = self._pick_device()
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision fp16 needs a CUDA device; on CPU use bf16 (autocast) or fp32")
        _seed_everything(cfg.seed + self.dist.rank)

        self.resume_dir = find_checkpoint(cfg.resume if cfg.resume != "latest" else cfg.output) \
            if cfg.resume else None
        source = str(self.resume_dir) if self.resume_dir else cfg.student
        self.card = resolve_student_card(source, cfg.pooling, cfg.similarity)
        self.student, self.tokenizer = BertDotStudent.from_card(self.card)
        self.query_max_length = cfg.query_max_length or self.card.query_max_length or 30
        self.passage_max_length = cfg.passage_max_length or self.card.passage_max_length or 200
        self.card = self.card.replace(query_max_length=self.query_max_length,
                                      passage_max_length=self.passage_max_length)
        self.student.to(self.device).train()
        if cfg.grad_checkpointing:
            self.student.enable_gradient_checkpointing()
        if cfg.compile:
            self.student.compile()

        self.data = data if data is not None else load_teacher(cfg.teacher, cfg.teacher_format, cfg.collection,
                                                               cfg.queries, cfg.skip_bad)
        if len(self.data) < self.dist.world_size:
            raise ValueError(f"{len(self.data)} triples cannot be shared among {self.dist.world_size} processes")
        self.collator = Collator(self.tokenizer, self.query_max_length, self.passage_max_length,
                                 cfg.passage_buckets)
        self.batches_per_epoch = num_batches(len(self.data), cfg.batch_size, self.dist.world_size)
        self.total_steps = cfg.max_steps or math.ceil(cfg.epochs * self.batches_per_epoch / cfg.grad_accum)
        self.warmup_steps = cfg.warmup_steps if cfg.warmup_steps is not None else min(1000, self.total_steps // 10)

        self.optimizer = self._make_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_lambda)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
        self.model: torch.nn.Module = self.student
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(self.student, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.margin_loss = MarginMSELoss()
        self.in_batch_loss = InBatchMarginMSELoss()

        self.validator = self._make_validator()
        self.measure = self.validator.measures[0] if self.validator else None

        # training position and bookkeeping (all restored by resume)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.bad_validations = 0
        self.validations: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        self.triples_seen = 0
        self.last_checkpoint: Path | None = None
        self.history: list[dict[str, Any]] = []
        self._rng_to_restore: dict[str, Any] | None = None
        if self.resume_dir is not None:
            self._load_state(self.resume_dir)
        self.csv_path = Path(cfg.log_csv) if cfg.log_csv else self.output / "train_log.csv"
        self._tb = None

    # -- setup -------------------------------------------------------------------------------------------------

    def _pick_device(self) -> torch.device:
        from kd_pyserini.encoding import resolve_device

        if self.dist.enabled and torch.cuda.is_available() and not self.cfg.device:
            return torch.device("cuda", self.dist.local_rank)
        dev = resolve_device(self.cfg.device)
        if self.dist.enabled and dev.type == "cuda":
            return torch.device("cuda", self.dist.local_rank)
        return dev

    def _make_optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, p in self.student.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        kwargs: dict[str, Any] = {"lr": self.cfg.lr}
        if self.device.type == "cuda":
            kwargs["fused"] = True  # one kernel for the whole update
        return torch.optim.AdamW(groups, **kwargs)

    def _lr_lambda(self, step: int) -> float:
        """Linear warm-up to the peak learning rate over ``warmup_steps``, then linear decay to 0."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return max(0.0, (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps))

    def _make_validator(self):
        cfg = self.cfg
        if not cfg.validation_candidates:
            if cfg.eval_every or cfg.early_stopping_patience:
                raise ValueError("--eval-every / --early-stopping-patience need --validation-candidates")
            return None
        from kd_pyserini.train.validation import RerankValidator

        qrels = cfg.validation_qrels or cfg.validation_topics
        if qrels is None:
            raise ValueError("validation needs qrels: give --validation-qrels (a name such as dl19-passage, or a "
                             "path), or --validation-topics with a known topic-set name")
        v = RerankValidator(cfg.validation_candidates, qrels, cfg.validation_topics, cfg.validation_measures,
                            cfg.validation_max_queries)
        v.prepare(self.tokenizer, self.query_max_length, self.passage_max_length)
        return v

    def _autocast(self):
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # -- state ---------------------------------------------------------------------------------------------------

    def _order_settings(self) -> dict[str, Any]:
        return {"teacher": str(self.cfg.teacher), "seed": self.cfg.seed, "batch_size": self.cfg.batch_size,
                "grad_accum": self.cfg.grad_accum, "world_size": self.dist.world_size,
                "total_steps": self.total_steps, "lr": self.cfg.lr, "warmup_steps": self.warmup_steps,
                "in_batch_weight": self.cfg.in_batch_weight, "precision": self.cfg.precision}

    def _state(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        return {"format": 1, "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None, "rng": rng,
                "best_metric": self.best_metric, "best_step": self.best_step,
                "bad_validations": self.bad_validations, "validations": self.validations,
                "train_seconds": self.train_seconds, "triples_seen": self.triples_seen,
                "settings": self._order_settings(), "num_triples": len(self.data)}

    def _load_state(self, ckpt: Path) -> None:
        state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
        diffs = {k: (state["settings"].get(k), v) for k, v in self._order_settings().items()
                 if k in _ORDER_KEYS and state["settings"].get(k) != v}
        if state.get("num_triples") != len(self.data):
            diffs["num_triples"] = (state.get("num_triples"), len(self.data))
        if diffs:
            log.warning("resuming %s with different settings (%s): training continues, but not as an exact "
                        "continuation of the interrupted run", ckpt,
                        ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in diffs.items()))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        for key in ("step", "epoch", "batch_in_epoch", "best_metric", "best_step", "bad_validations",
                    "train_seconds", "triples_seen"):
            setattr(self, key, state[key])
        self.validations = list(state["validations"])
        rngs = state["rng"]
        if len(rngs) != self.dist.world_size:
            log.warning("checkpoint has RNG states for %d process(es), this run has %d: dropout randomness differs",
                        len(rngs), self.dist.world_size)
        self._rng_to_restore = rngs[self.dist.rank % len(rngs)]
        self.last_checkpoint = ckpt
        log.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt, self.step, self.epoch, self.batch_in_epoch)

    def _gather_rng(self) -> list[dict[str, Any]]:
        mine = _rng_state()
        if not self.dist.enabled:
            return [mine]
        import torch.distributed as dist

        out: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(out, mine)
        return out

    def _barrier(self) -> None:
        if self.dist.enabled:
            import torch.distributed as dist

            dist.barrier()

    def _broadcast(self, value: Any) -> Any:
        if not self.dist.enabled:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _train_info(self, **extra: Any) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "teacher": str(self.cfg.teacher),
                "student": self.cfg.student, "loss": "margin-mse", "in_batch_weight": self.cfg.in_batch_weight,
                "query_max_length": self.query_max_length, "passage_max_length": self.passage_max_length, **extra}

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoint-STEP`` atomically (all ranks must call it; rank 0 writes)."""
        rng = self._gather_rng()
        path = self.output / f"checkpoint-{self.step}"
        if self.dist.main:
            tmp = self.output / f".tmp-checkpoint-{self.step}"
            if tmp.exists():
                shutil.rmtree(tmp)
            self.student.save(tmp, self.tokenizer, self.card, self._train_info(), final_path=path)
            torch.save(self._state(rng), tmp / STATE_FILE)
            replace_dir(tmp, path)
            self._prune_checkpoints()
        self._barrier()
        self.last_checkpoint = path
        return path

    def _prune_checkpoints(self) -> None:
        limit = self.cfg.save_total_limit
        if not limit or limit < 1:
            return
        ckpts = _list_checkpoints(self.output)
        for _, d in ckpts[:-limit]:
            shutil.rmtree(d, ignore_errors=True)

    def _save_model(self, dest: Path, **info: Any) -> Path:
        """Model only (no optimizer state): ``best/`` and the final weights."""
        tmp = self.output / f".tmp-{dest.name or 'final'}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        self.student.save(tmp, self.tokenizer, self.card, self._train_info(**info), final_path=dest)
        if dest == self.output:
            for f in tmp.iterdir():
                os.replace(f, dest / f.name)
            tmp.rmdir()
        else:
            replace_dir(tmp, dest)
        return dest

    # -- logging -----------------------------------------------------------------------------------------------

    def _csv_fields(self) -> list[str]:
        return ["step", "epoch", "loss", "lr", "triples_per_s", "elapsed_s"] + \
            ([f"val_{m}" for m in self.validator.measures] if self.validator else [])

    def _open_csv(self) -> None:
        if not self.dist.main:
            return
        fields = self._csv_fields()
        keep: list[dict[str, str]] = []
        if self.step > 0 and self.csv_path.is_file():  # resuming: drop rows logged after the checkpoint
            with open(self.csv_path, newline="") as f:
                keep = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= self.step]
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        self._csv_file = open(self.csv_path, "w", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=fields, extrasaction="ignore")
        self._csv.writeheader()
        self._csv.writerows(keep)
        self._csv_file.flush()
        if self.cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.output / "tensorboard"))
            except Exception as e:  # noqa: BLE001  (tensorboard is optional)
                log.warning("--tensorboard ignored: %s (pip install tensorboard)", e)

    def _log_row(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if not self.dist.main:
            return
        self._csv.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._csv_file.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, row["step"])

    def _close_logs(self) -> None:
        if self.dist.main and getattr(self, "_csv_file", None):
            self._csv_file.close()
        if self._tb is not None:
            self._tb.close()

    # -- validation ----------------------------------------------------------------------------------------------

    def validate(self) -> dict[str, float] | None:
        """Re-rank the validation candidates (rank 0), keep ``best/``, and update the early-stopping counter."""
        if self.validator is None:
            return None
        metrics = None
        if self.dist.main:
            metrics = self.validator(self.student, self.device, self._autocast)
            value = metrics[self.measure]
            self.validations.append({"step": self.step, **metrics})
            log.info("step %d validation: %s", self.step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            if self.best_metric is None or value > self.best_metric:
                self.best_metric, self.best_step, self.bad_validations = value, self.step, 0
                self._save_model(self.output / "best", validation=metrics)
            elif self.step > 0:
                self.bad_validations += 1
        metrics, self.best_metric, self.best_step, self.bad_validations = self._broadcast(
            (metrics, self.best_metric, self.best_step, self.bad_validations))
        return metrics

    # -- the loop ------------------------------------------------------------------------------------------------

    def _make_batch(self, order: np.ndarray, b: int) -> Batch:
        bs = self.cfg.batch_size
        batch = self.collator([self.data[int(i)] for i in order[b * bs:(b + 1) * bs]])
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        return batch

    def _batches(self, order: np.ndarray, start: int) -> Iterator[tuple[int, Batch]]:
        """Batches ``start, start + 1, ...`` of ``order``; the next one is tokenised in a thread meanwhile."""
        nb = math.ceil(len(order) / self.cfg.batch_size)
        if start >= nb:
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            fut = pool.submit(self._make_batch, order, start)
            for b in range(start, nb):
                batch = fut.result()
                if b + 1 < nb:
                    fut = pool.submit(self._make_batch, order, b + 1)
                yield b, batch

    def _check_finite(self, loss: torch.Tensor) -> float:
        value = loss.detach().float()
        finite = torch.isfinite(value)
        if self.dist.enabled:
            import torch.distributed as dist

            flag = finite.to(torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = flag.bool()
        if not bool(finite):
            where = (f"last good checkpoint: {self.last_checkpoint} (step "
                     f"{self.last_checkpoint.name.removeprefix('checkpoint-')})" if self.last_checkpoint else
                     "no checkpoint had been written yet (use --save-every N to keep one)")
            raise NonFiniteLossError(
                f"the loss is {value.item()} at step {self.step + 1} (epoch {self.epoch}, batch "
                f"{self.batch_in_epoch}); training stopped and these weights were not saved; {where}. Likely causes: "
                f"a learning rate too high (now {self.cfg.lr:g}), fp16 overflow (try --precision bf16 or fp32), or "
                "exploding gradients (try --max-grad-norm 1.0)")
        return float(value)

    def train(self) -> TrainResult:
        """Run until ``total_steps`` (or early stopping); returns where things were written."""
        cfg = self.cfg
        if self.dist.main:
            self.output.mkdir(parents=True, exist_ok=True)
            for stale in self.output.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            args = {**dataclasses.asdict(cfg), "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                    "world_size": self.dist.world_size, "device": str(self.device), "data": self.data.describe(),
                    "card": self.card.describe()}
            (self.output / "training_args.json").write_text(json.dumps(args, indent=2, default=str) + "\n")
        self._barrier()
        self._open_csv()
        stopped_early = False
        try:
            if self.validator is not None and self.step == 0:
                metrics = self.validate()
                self._log_row({"step": 0, "epoch": 0, **{f"val_{k}": v for k, v in metrics.items()}})
            if self._rng_to_restore is not None:
                _set_rng_state(self._rng_to_restore)
            stopped_early = self._loop()
        finally:
            self._close_logs()
        final = None
        if self.dist.main:
            final = self._save_model(self.output, final=True, best_step=self.best_step)
        self._barrier()
        best = self.output / "best" if self.best_step is not None else None
        return TrainResult(output=self.output, steps=self.step, final_dir=final, best_dir=best,
                           best_metric=self.best_metric, best_step=self.best_step,
                           last_checkpoint=self.last_checkpoint, stopped_early=stopped_early, history=self.history)

    def _loop(self) -> bool:
        cfg = self.cfg
        accum = cfg.grad_accum
        world = self.dist.world_size
        bar = progress_bar(total=self.total_steps, initial=self.step, unit="step", desc="margin-mse",
                           progress=cfg.progress if self.dist.main else False)
        window_loss, window_n, window_triples, window_time = 0.0, 0, 0, 0.0
        micro = 0
        self.optimizer.zero_grad(set_to_none=True)
        try:
            while self.step < self.total_steps:
                if self.batch_in_epoch >= self.batches_per_epoch:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                order = epoch_order(len(self.data), self.epoch, cfg.seed, self.dist.rank, world)
                t0 = time.perf_counter()
                for b, batch in self._batches(order, self.batch_in_epoch):
                    batch = batch.to(self.device)
                    micro += 1
                    sync = micro % accum == 0
                    ctx = self.model.no_sync() if (self.dist.enabled and not sync) else contextlib.nullcontext()
                    with ctx:
                        with self._autocast():
                            loss, _ = batch_loss(self.model, batch, cfg.in_batch_weight, self.margin_loss,
                                                 self.in_batch_loss)
                        value = self._check_finite(loss)
                        scaled = loss / accum
                        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
                    self.batch_in_epoch = b + 1
                    window_loss += value
                    window_n += 1
                    window_triples += batch.size * world
                    if not sync:
                        continue
                    self._optimizer_step()
                    now = time.perf_counter()
                    window_time += now - t0
                    self.train_seconds += now - t0
                    self.triples_seen += batch.size * world * accum
                    bar.update(1)
                    lr = self.scheduler.get_last_lr()[0]
                    last = self.step >= self.total_steps
                    do_eval = self.validator is not None and ((cfg.eval_every and self.step % cfg.eval_every == 0)
                                                              or last)
                    if self.step % cfg.log_every == 0 or last or do_eval:
                        tps = window_triples / window_time if window_time > 0 else float("nan")
                        row = {"step": self.step, "epoch": self.epoch, "loss": window_loss / max(1, window_n),
                               "lr": lr, "triples_per_s": tps, "elapsed_s": self.train_seconds}
                        bar.set_postfix(loss=f"{row['loss']:.4g}", triples_s=f"{tps:.1f}", lr=f"{lr:.2e}")
                        if do_eval:
                            metrics = self.validate()
                            row.update({f"val_{k}": v for k, v in metrics.items()})
                            bar.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
                        self._log_row(row)
                        window_loss, window_n, window_triples, window_time = 0.0, 0, 0, 0.0
                    if cfg.save_every and self.step % cfg.save_every == 0:
                        self.save_checkpoint()
                    if self.on_step is not None:
                        self.on_step(self)
                    stop = (cfg.early_stopping_patience is not None and do_eval
                            and self.bad_validations >= cfg.early_stopping_patience)
                    if stop:
                        log.warning("early stopping at step %d: no %s improvement in %d validations (best %.4f at "
                                    "step %s)", self.step, self.measure, self.bad_validations, self.best_metric,
                                    self.best_step)
                        if cfg.save_every and self.step % cfg.save_every != 0:
                            self.save_checkpoint()
                        return True
                    if last:
                        break
                    t0 = time.perf_counter()
        finally:
            bar.close()
        return False

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.cfg.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1


def train_margin_mse(config: TrainConfig | None = None, **options: Any) -> TrainResult:
    """Train with Margin-MSE: ``train_margin_mse(teacher=..., output=..., student=..., max_steps=...)``."""
    cfg = config or TrainConfig(**options)
    with quiet_third_party(cfg.progress if os.environ.get("RANK", "0") == "0" else False):
        return MarginMSETrainer(cfg).train()
