"""Margin-MSE training loop for BERT_Dot, BERT_CAT, ColBERT and PreTTR students (Hofstätter et al. 2020,
arXiv:2010.02666; ``--architecture``, :mod:`kd_pyserini.train.pair_students` for the last three).

One code path for CPU and GPU: the same loop runs a 2-layer test model on a laptop core and DistilBERT on CUDA, with
bf16/fp16 autocast, gradient accumulation, gradient checkpointing, ``torch.compile`` and DistributedDataParallel
(``torchrun --nproc_per_node N -m kd_pyserini.train margin-mse ...``) switched on by options.

What a run leaves in ``--output DIR`` (which must be empty or new, unless ``resume`` or ``overwrite``):

* ``checkpoint-STEP/`` every ``save_every`` steps (:mod:`kd_pyserini.train.checkpoints`): a Hugging Face model
  directory plus ``trainer_state.pt``. ``resume`` continues from one *exactly* (same data order, same RNG stream,
  so the weights equal those of an uninterrupted run), and refuses other settings than the checkpoint's.
* ``best/`` the best checkpoint by the first validation measure (when validating).
* ``DIR`` itself: the final weights (model, tokenizer, card), loadable by ``kd_pyserini.get_query_encoder(DIR)``.
* ``train_log.csv`` (step, epoch, loss, lr, triples/s, validation measures) and ``training_args.json``.

Nothing non-finite is ever saved: the loss is checked before every update and the weights after it, and a
checkpoint is only written when the weights encode the step's batch to finite vectors (in fp32). Training then stops
with :class:`NonFiniteLossError`, naming the step and the last good checkpoint. Ctrl-C stops with
:class:`TrainingInterrupted` (what was written is complete; ``--resume latest`` continues).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kd_pyserini.atomic import atomic_write
from kd_pyserini.progress import progress_bar, quiet_third_party
from kd_pyserini.train import checkpoints as ck
from kd_pyserini.train.batches import Batch, Collator
from kd_pyserini.train.config import (CheckpointWriteError, NonFiniteLossError, TrainConfig, TrainingInterrupted,
                                      TrainResult)
from kd_pyserini.train.distributed import init_distributed
from kd_pyserini.train.guards import stop_message, vectors_finite, weights_finite
from kd_pyserini.train.in_batch_margin_mse import InBatchMarginMSELoss
from kd_pyserini.train.margin_mse import MarginMSELoss
from kd_pyserini.train.model import BertDotStudent, resolve_student_card
from kd_pyserini.train.objective import batch_loss
from kd_pyserini.train.parts import WarmupLinearDecay, autocast, make_optimizer, make_validator, pick_device
from kd_pyserini.train.recipe import (CLUSTERS_FILE, card_argument, clusters_digest, make_in_batch_teacher,
                                     make_sampler)
from kd_pyserini.train.state import TrainerState
from kd_pyserini.train.teacher_files import TeacherData, load_teacher
from kd_pyserini.train.train_log import TrainLog

__all__ = ["MarginMSETrainer", "train_margin_mse"]

log = logging.getLogger(__name__)


class _InState:
    """A trainer attribute that lives in its :class:`~kd_pyserini.train.state.TrainerState` (``trainer.step`` is
    ``trainer.state.step``)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else getattr(obj.state, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj.state, self.name, value)


class MarginMSETrainer:
    """Train a BERT_Dot student with Margin-MSE from a teacher file.

    Args:
        config: the options.
        data: an already-loaded teacher file (default: ``load_teacher(config.teacher, ...)``).
        on_step: called as ``on_step(trainer)`` after every optimizer step (after logging, validation and saving);
            raising from it stops training (tests use it to simulate an interruption).

    Raises (on construction): OutputInUseError (``output`` holds another run), ResumeMismatchError (``resume`` with
    other settings, without ``force``), FileNotFoundError, FormatError, ValueError.

    Where training stands is :attr:`state` (a :class:`~kd_pyserini.train.state.TrainerState`, what a checkpoint
    saves with ``state_dict()`` and a resume restores with ``load_state_dict()``); ``step``, ``epoch`` and the other
    position fields read and write it.
    """

    step = _InState()
    epoch = _InState()
    batch_in_epoch = _InState()
    best_metric = _InState()
    best_step = _InState()
    bad_validations = _InState()
    train_seconds = _InState()
    triples_seen = _InState()
    validations = _InState()

    def __init__(self, config: TrainConfig, data: TeacherData | None = None,
                 on_step: Callable[["MarginMSETrainer"], None] | None = None):
        self.cfg = cfg = config
        self.on_step = on_step
        if cfg.cpu_threads:
            torch.set_num_threads(cfg.cpu_threads)
        self.dist = init_distributed()
        self.output = Path(cfg.output)
        self.resume_dir = ck.find_checkpoint(cfg.resume if cfg.resume != "latest" else cfg.output) \
            if cfg.resume else None
        ck.check_output(self.output, self.resume_dir, cfg.overwrite)  # before any rank writes anything
        self.dist.barrier()
        self.device = pick_device(cfg, self.dist)
        from kd_pyserini.encoding.precision import resolve_precision

        #: the precision the student runs at (``auto`` resolved for this device; what checkpoints record)
        self.precision = resolve_precision(cfg.precision, self.device, "train").precision
        if self.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision fp16 needs a CUDA device; on CPU use bf16 (autocast) or fp32")
        ck.seed_everything(cfg.seed + self.dist.rank)

        source = str(self.resume_dir) if self.resume_dir else cfg.student
        # a resumed checkpoint already has the kept layers
        self.student, self.tokenizer, self.card = make_student(cfg, source, self.resume_dir is not None)
        self.query_max_length = cfg.query_max_length or self.card.query_max_length or 30
        self.passage_max_length = cfg.passage_max_length or self.card.passage_max_length or 200
        self.card = self.card.replace(query_max_length=self.query_max_length,
                                      passage_max_length=self.passage_max_length)
        self.student.to(self.device).train()
        self._params = [p for p in self.student.parameters() if p.requires_grad]
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
        # the cheap checks first (teacher card, validation files): the clusters may take minutes to build
        self.in_batch_teacher = make_in_batch_teacher(cfg, self.device)
        self.validator = make_validator(cfg, self.tokenizer, self.query_max_length, self.passage_max_length)
        self.measure = self.validator.measures[0] if self.validator else None
        self.sampler, self.clusters = make_sampler(cfg, self.data, self.output, self.resume_dir is not None,
                                                   self.dist.main, self.dist.barrier, device=str(self.device))
        self.batches_per_epoch = self.sampler.batches_per_epoch(self.dist.world_size)
        if self.batches_per_epoch < 1:
            raise ValueError(f"{cfg.teacher}: {cfg.sampling} sampling leaves no batch to train on (too few triples "
                             f"or queries for {self.dist.world_size} process(es))")
        self.total_steps = cfg.max_steps or math.ceil(cfg.epochs * self.batches_per_epoch / cfg.grad_accum)
        self.warmup_steps = cfg.warmup_steps if cfg.warmup_steps is not None else min(1000, self.total_steps // 10)

        self.optimizer = make_optimizer(self.student, cfg, self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           WarmupLinearDecay(self.warmup_steps, self.total_steps))
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.model: torch.nn.Module = self.student
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(self.student, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.margin_loss = MarginMSELoss()
        self.in_batch_loss = InBatchMarginMSELoss()

        # training position and bookkeeping (all restored by resume)
        self.state = TrainerState()
        self.last_checkpoint: Path | None = None
        self._confirmed: Path | None = None  # the newest checkpoint whose weights then gave a finite loss
        self._last_batch: Batch | None = None
        self.history: list[dict[str, Any]] = []
        if self.resume_dir is not None:
            self._load_state(self.resume_dir)
        csv_path = Path(cfg.log_csv) if cfg.log_csv else self.output / "train_log.csv"
        self.train_log = TrainLog(csv_path, self.validator.measures if self.validator else None, self.dist.main,
                            self.output / "tensorboard" if cfg.tensorboard else None)

    def _autocast(self):
        return autocast(self.precision, self.device)

    # -- state ---------------------------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """What a checkpoint records and ``resume`` must match (the data order, the update sequence, the model)."""
        cfg = self.cfg
        return {"teacher": str(cfg.teacher), "teacher_format": getattr(self.data, "format", None),
                "collection": cfg.collection, "queries": cfg.queries, "student": str(cfg.student),
                "seed": cfg.seed, "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum,
                "world_size": self.dist.world_size, "total_steps": self.total_steps, "lr": cfg.lr,
                "warmup_steps": self.warmup_steps, "weight_decay": cfg.weight_decay,
                "max_grad_norm": cfg.max_grad_norm, "in_batch_weight": cfg.in_batch_weight,
                "precision": self.precision, "query_max_length": self.query_max_length,
                "passage_max_length": self.passage_max_length, "pooling": self.card.pooling,
                "similarity": self.card.similarity, "num_triples": len(self.data),
                "student_layers": cfg.student_layers, "sampling": cfg.sampling, "margin_bins": cfg.margin_bins,
                "query_clusters_sha256": clusters_digest(self.clusters),
                "cluster_encoder": card_argument(cfg.cluster_encoder), "clusters": cfg.clusters if cfg.cluster_encoder
                else None,
                "in_batch_teacher": self._teacher_key(), "recipe": cfg.recipe,
                **({"architecture": cfg.architecture} if cfg.architecture != "bert-dot" else {})}

    def _teacher_key(self) -> Any:
        t = self.in_batch_teacher
        if t is None:
            return None
        key = getattr(t, "key", None)
        return key() if callable(key) else (key or self.cfg.in_batch_teacher)

    def _load_state(self, ckpt: Path) -> None:
        ck.load_state(self, ckpt, self.settings(), self.cfg.force)
        self.last_checkpoint = self._confirmed = ckpt
        log.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt, self.step, self.epoch, self.batch_in_epoch)

    def _train_info(self, **extra: Any) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "teacher": str(self.cfg.teacher),
                "student": self.cfg.student, "architecture": self.cfg.architecture, "loss": self.cfg.recipe,
                "recipe_applied": self.cfg.applied_recipe(),
                "in_batch_weight": self.cfg.in_batch_weight,
                "student_layers": self.cfg.student_layers, "sampling": self.cfg.sampling,
                "in_batch_teacher": self.cfg.in_batch_teacher,
                "in_batch_teacher_scale": self.cfg.in_batch_teacher_scale,
                "in_batch_teacher_scale_fitted": getattr(self.in_batch_teacher, "scale", None)
                if self.cfg.in_batch_teacher_scale == "auto" else None,
                "query_max_length": self.query_max_length, "passage_max_length": self.passage_max_length, **extra}

    # -- saving --------------------------------------------------------------------------------------------------

    def _write_everywhere(self, final: Path, write: Callable[[Path], None], into: bool = False) -> None:
        """Rank 0 writes (see :func:`checkpoints.write_dir`); every rank learns whether it worked."""
        error: CheckpointWriteError | None = None
        if self.dist.main:
            try:
                ck.write_dir(final, write, self.last_checkpoint, into=into)
            except CheckpointWriteError as e:
                error = e
        if not self.dist.all_true(error is None, self.device):
            raise error or CheckpointWriteError(f"rank 0 could not write {final.name}; see its error")

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoint-STEP`` atomically (all ranks must call it; rank 0 writes)."""
        self._require_finite_vectors(f"checkpoint-{self.step}")
        rng = self.dist.gather(ck.rng_state())
        scales = self.dist.gather(ck.teacher_scale_state(self.in_batch_teacher))
        path = self.output / f"checkpoint-{self.step}"

        def write(tmp: Path) -> None:
            self.student.save(tmp, self.tokenizer, self.card, self._train_info(), final_path=path)
            torch.save(ck.trainer_state(self, rng, scales), tmp / ck.STATE_FILE)

        self._write_everywhere(path, write)
        if self.dist.main:  # keep the newest confirmed one too until the new one has given a finite loss
            ck.prune(self.output, self.cfg.save_total_limit, protect=[self._confirmed, path])
        self.dist.barrier()
        self.last_checkpoint = path
        return path

    def _save_model(self, dest: Path, **info: Any) -> Path:
        """Model only (no optimizer state): ``best/`` and the final weights (rank 0 writes)."""
        def write(tmp: Path) -> None:
            self.student.save(tmp, self.tokenizer, self.card, self._train_info(**info), final_path=dest)

        self._write_everywhere(dest, write, into=dest == self.output)
        return dest

    # -- finiteness ----------------------------------------------------------------------------------------------

    def _stop(self, what: str, step: int, good: Path | None) -> NonFiniteLossError:
        return NonFiniteLossError(stop_message(what, step, self.epoch, self.batch_in_epoch, good, self.cfg.lr))

    def _require_finite_vectors(self, name: str) -> None:
        """Before writing ``name``: the weights must encode the last batch to finite vectors."""
        if self._last_batch is not None and not vectors_finite(self.student, self._last_batch, self.dist):
            raise self._stop(f"the weights encode non-finite vectors ({name} not written)", self.step,
                             self.last_checkpoint)

    def _check_loss(self, loss: torch.Tensor, batch: Batch) -> float:
        """The loss as a float; a non-finite one stops training (naming a checkpoint that really is good)."""
        value = loss.detach().float()
        if self.dist.all_true(torch.isfinite(value)):
            if self.last_checkpoint is not None and self._confirmed != self.last_checkpoint:
                # these weights (the newest checkpoint's) gave a finite loss: older ones may be pruned now
                self._confirmed = self.last_checkpoint
                if self.dist.main:
                    ck.prune(self.output, self.cfg.save_total_limit, protect=[self._confirmed])
            return float(value)
        good = self.last_checkpoint
        newest = good is not None and good != self._confirmed and good.name == f"checkpoint-{self.step}"
        if newest and not vectors_finite(self.student, batch, self.dist):
            # the newest checkpoint holds exactly these weights, and they encode this batch to NaN/inf: not good
            if self.dist.main:
                ck.delete_checkpoint(good)
            self.dist.barrier()
            log.warning("deleted %s: its weights encode non-finite vectors", good)
            good = self._confirmed if self._confirmed is not None and self._confirmed.is_dir() else None
        raise self._stop(f"the loss is {value.item()}", self.step + 1, good)

    def _check_weights(self) -> None:
        """After an update: every trainable weight finite."""
        if not weights_finite(self._params, self.dist):
            raise self._stop("the update made the weights non-finite", self.step, self.last_checkpoint)

    # -- validation ----------------------------------------------------------------------------------------------

    def validate(self) -> dict[str, float] | None:
        """Re-rank the validation candidates (rank 0), keep ``best/``, and update the early-stopping counter."""
        if self.validator is None:
            return None
        metrics = None
        improved = False
        if self.dist.main:
            metrics = self.validator(self.student, self.device, self._autocast)
            value = metrics[self.measure]
            self.validations.append({"step": self.step, **metrics})
            log.info("step %d validation: %s", self.step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            if self.best_metric is None or value > self.best_metric:
                self.best_metric, self.best_step, self.bad_validations = value, self.step, 0
                improved = True
            elif self.step > 0:
                self.bad_validations += 1
        metrics, improved, self.best_metric, self.best_step, self.bad_validations = self.dist.broadcast(
            (metrics, improved, self.best_metric, self.best_step, self.bad_validations))
        if improved:
            self._save_model(self.output / "best", validation=metrics)
        return metrics

    # -- the loop ------------------------------------------------------------------------------------------------

    def _make_batch(self, batches: list[np.ndarray], b: int) -> Batch:
        batch = self.collator([self.data[int(i)] for i in batches[b]])
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        return batch

    def _batches(self, batches: list[np.ndarray], start: int) -> Iterator[tuple[int, Batch]]:
        """Batches ``start, start + 1, ...`` of the epoch; the next one is tokenised in a thread meanwhile."""
        nb = len(batches)
        if start >= nb:
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            fut = pool.submit(self._make_batch, batches, start)
            for b in range(start, nb):
                batch = fut.result()
                if b + 1 < nb:
                    fut = pool.submit(self._make_batch, batches, b + 1)
                yield b, batch

    def _prepare_output(self) -> None:
        cfg = self.cfg
        if self.dist.main:
            if cfg.overwrite:
                # the query clusters this run built in __init__ (into the output folder) survive the clearing
                built = {f: f.read_bytes() for f in self.output.glob(CLUSTERS_FILE + "*")} \
                    if cfg.cluster_encoder and self.clusters is not None else {}
                ck.clear_output(self.output)
                for f, data in built.items():
                    with atomic_write(f, "wb") as out:
                        out.write(data)
            self.output.mkdir(parents=True, exist_ok=True)
            for stale in self.output.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            args = {**dataclasses.asdict(cfg), "recipe_applied": cfg.applied_recipe(),
                    "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                    "world_size": self.dist.world_size, "device": str(self.device),
                    "precision": self.precision, "precision_requested": cfg.precision,
                    "data": self.data.describe() if hasattr(self.data, "describe") else None,
                    "card": self.card.describe()}
            with atomic_write(self.output / "training_args.json") as f:
                f.write(json.dumps(args, indent=2, default=str) + "\n")
        self.dist.barrier()

    def train(self) -> TrainResult:
        """Run until ``total_steps`` (or early stopping); returns where things were written.

        Raises:
            NonFiniteLossError, CheckpointWriteError, TrainingInterrupted (Ctrl-C; a ``KeyboardInterrupt``).
        """
        stopped_early = False
        try:
            self._prepare_output()
            self.train_log.open(self.step)
            if self.validator is not None and self.step == 0:
                metrics = self.validate()
                self._log_row({"step": 0, "epoch": 0, **{f"val_{k}": v for k, v in metrics.items()}})
            if self.state.rng_to_restore is not None:
                ck.set_rng_state(self.state.rng_to_restore)
            stopped_early = self._loop()
            self._require_finite_vectors("the final model")  # and so the newest checkpoint's weights are good
            final = self._save_model(self.output, final=True, best_step=self.best_step)
            if self.dist.main:
                ck.prune(self.output, self.cfg.save_total_limit)
        except KeyboardInterrupt:
            how = (f"the last checkpoint is {self.last_checkpoint}; continue with the same command plus --resume "
                   "latest" if self.last_checkpoint else "no checkpoint had been written yet; start again with the "
                   "same command plus --overwrite")
            raise TrainingInterrupted(f"interrupted at step {self.step}; {how}", self.step,
                                      self.last_checkpoint) from None
        finally:
            self.train_log.close()
        self.dist.barrier()
        best = self.output / "best" if self.best_step is not None else None
        return TrainResult(output=self.output, steps=self.step, final_dir=final if self.dist.main else None,
                           best_dir=best, best_metric=self.best_metric, best_step=self.best_step,
                           last_checkpoint=self.last_checkpoint, stopped_early=stopped_early, history=self.history)

    def _log_row(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        self.train_log.write(row)

    def _loop(self) -> bool:
        cfg = self.cfg
        accum = cfg.grad_accum
        world = self.dist.world_size
        bar = progress_bar(total=self.total_steps, initial=self.step, unit="step", desc=cfg.recipe,
                           progress=cfg.progress if self.dist.main else False)
        window_loss, window_n, window_triples, window_time = 0.0, 0, 0, 0.0
        micro = 0
        self.optimizer.zero_grad(set_to_none=True)
        try:
            while self.step < self.total_steps:
                if self.batch_in_epoch >= self.batches_per_epoch:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                batches = self.sampler.epoch_batches(self.epoch, cfg.seed, self.dist.rank, world)
                t0 = time.perf_counter()
                for b, batch in self._batches(batches, self.batch_in_epoch):
                    batch = batch.to(self.device)
                    micro += 1
                    sync = micro % accum == 0
                    ctx = self.model.no_sync() if (self.dist.enabled and not sync) else contextlib.nullcontext()
                    with ctx:
                        with self._autocast():
                            loss, _ = batch_loss(self.model, batch, cfg.in_batch_weight, self.margin_loss,
                                                 self.in_batch_loss, in_batch_teacher=self.in_batch_teacher)
                        value = self._check_loss(loss, batch)
                        scaled = loss / accum
                        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
                    self.batch_in_epoch = b + 1
                    self._last_batch = batch
                    window_loss += value
                    window_n += 1
                    window_triples += batch.size * world
                    if not sync:
                        continue
                    self._optimizer_step()
                    self._check_weights()
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


def make_student(cfg: TrainConfig, source: str, resumed: bool) -> tuple[Any, Any, Any]:
    """``(student, tokenizer, card)`` of ``cfg.architecture`` from ``source`` (the starting model, or the checkpoint
    being resumed, which already has its kept layers). A pair student's ``card`` is an encoder card that only carries
    the name and, later, the lengths (its checkpoints carry their re-ranker card)."""
    if cfg.architecture == "bert-dot":
        card = resolve_student_card(source, cfg.pooling, cfg.similarity)
        student, tokenizer = BertDotStudent.from_card(card, student_layers=None if resumed else cfg.student_layers)
        return student, tokenizer, card
    from kd_pyserini.cards import EncoderCard
    from kd_pyserini.train.pair_students import load_pair_student, new_pair_student

    student, tokenizer = load_pair_student(cfg.architecture, source) if resumed else \
        new_pair_student(cfg.architecture, source, cfg.student_layers)
    card = EncoderCard(name=Path(str(cfg.student)).name or str(cfg.student), model_id=str(cfg.student))
    return student, tokenizer, card


def train_margin_mse(config: TrainConfig | None = None, **options: Any) -> TrainResult:
    """Train with Margin-MSE: ``train_margin_mse(teacher=..., output=..., student=..., max_steps=...)``."""
    cfg = config or TrainConfig(**options)
    with quiet_third_party(cfg.progress if os.environ.get("RANK", "0") == "0" else False):
        return MarginMSETrainer(cfg).train()
