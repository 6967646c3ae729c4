"""The in-batch ("dynamic") teacher of TAS-B: scores every query of a training batch against every batch passage.

Sebastian Hofstätter, Sheng-Chieh Lin, Jheng-Hong Yang, Jimmy Lin and Allan Hanbury. "Efficiently Teaching an
Effective Dense Retriever with Balanced Topic Aware Sampling". SIGIR 2021 (arXiv:2104.06967). TAS-B's "dual
supervision" adds to the pairwise Margin-MSE term (teacher-file scores) an in-batch term whose teacher scores the
cross pairs ``(q_i, p_j)``, ``(q_i, n_j)`` of each batch on the fly; the paper used a ColBERT teacher, which matchmaker
runs as a ``DynamicTeacher`` beside the training loop, without gradients, in fp16, on the last GPU
(``matchmaker/distillation/dynamic_teacher.py``). The term itself is in :mod:`kd_pyserini.train.in_batch_margin_mse`.

Here the teacher is any card :func:`kd_pyserini.teacher.teacher_spec` resolves (loaded by
:func:`kd_pyserini.teacher.scorers.load_scorer`):

* a bi-encoder (:class:`~kd_pyserini.encoding.TextEncoder`): the batch's unique queries and passages are encoded with
  the teacher's own tokenizer and lengths, and scored with the card's similarity (dot product; cosine for normalised
  cards such as all-MiniLM-L6-v2): ``Q + P`` forward passes per batch;
* a cross-encoder (:class:`~kd_pyserini.encoding.cross_encoder.CrossEncoder`): every (unique query, unique passage)
  pair of the batch is read together: ``Q × P`` pair forward passes per batch (with 32 distinct queries and 64
  passages, 2,048 pairs), much dearer than a bi-encoder, which is why TAS-B used ColBERT.

Scores are multiplied by ``scale`` (a cosine teacher's scores lie in [-1, 1]; ×10 or so puts its margins on the
scale of a teacher file's cross-encoder margins).

**Device** (:func:`default_teacher_device`): with several visible GPUs and no DDP, the last GPU (matchmaker's
choice; the student trains on ``cuda:0``); under DDP (torchrun) each rank's own GPU, since every rank scores its own
batch; one GPU: that GPU; a student on the CPU, or no CUDA: the CPU. **Precision**: ``auto`` is bf16 on GPUs that
support it (fp16 on older ones) and fp32 on the CPU; ``bf16`` on the CPU is autocast (slow without AMX); ``fp16``
needs CUDA.

:meth:`InBatchTeacher.key` (also :func:`in_batch_teacher_key`, without loading the weights) is what a trainer stores
in its checkpoint settings, so a resume with another teacher (card, lengths, scale, weights) is detected.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from kd_pyserini.cards import CrossEncoderCard, EncoderCard
from kd_pyserini.errors import KdError
from kd_pyserini.teacher.scorers import BiEncoderScorer, TeacherSpec, load_scorer, teacher_spec

__all__ = ["InBatchTeacher", "load_in_batch_teacher", "in_batch_teacher_key", "default_teacher_device",
           "TEACHER_PRECISIONS", "InBatchTeacherError", "NonFiniteTeacherScoresError"]

log = logging.getLogger(__name__)

TEACHER_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class InBatchTeacherError(KdError, ValueError):
    """A bad in-batch teacher setting (precision, scale) or a batch without texts; the message says the fix."""


class NonFiniteTeacherScoresError(KdError, FloatingPointError):
    """The in-batch teacher produced NaN or infinite scores (broken weights, or fp16 overflow)."""


def default_teacher_device(student_device: str | torch.device | None = None) -> torch.device:
    """Where the in-batch teacher runs when no device is given (see the module docstring).

    ``student_device``: the student's device; a CPU student keeps the teacher on the CPU too.
    """
    if student_device is not None and torch.device(student_device).type == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: every rank has its own GPU and its own batch
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cuda", torch.cuda.device_count() - 1)


def _resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in TEACHER_PRECISIONS:
        raise InBatchTeacherError(f"in-batch teacher precision {precision!r} is not one of "
                                  f"{', '.join(TEACHER_PRECISIONS)}")
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise InBatchTeacherError(f"in-batch teacher precision fp16 needs a CUDA device, not {device}; on the CPU "
                                  "use bf16 (autocast) or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InBatchTeacherError(f"{device} does not support bf16; use fp16 or fp32 for the in-batch teacher")
    return precision


def _check_scale(scale: float) -> float:
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise InBatchTeacherError(f"in-batch teacher scale {scale} must be a finite number > 0 (e.g. 10 for a "
                                  "cosine teacher)")
    return scale


def _fingerprint(card: EncoderCard | CrossEncoderCard) -> str | None:
    """SHA-256 of the teacher's weight files (:func:`kd_pyserini.index.fingerprint.weights_fingerprint`), ``None``
    when they are not on this machine's disk (a hub id not yet downloaded)."""
    from kd_pyserini.index.fingerprint import weights_fingerprint

    if isinstance(card, CrossEncoderCard):  # the fingerprint only needs the weights' location
        card = EncoderCard(name=card.name, model_id=card.model_location())
    fp = weights_fingerprint(card)
    return fp["sha256"] if fp else None


def _spec_key(spec: TeacherSpec, scale: float) -> dict[str, Any]:
    return {**spec.key(), "scale": scale, "weights_sha256": _fingerprint(spec.card)}


def in_batch_teacher_key(card: str | EncoderCard | CrossEncoderCard, scale: float = 1.0,
                         query_max_length: int | None = None, passage_max_length: int | None = None,
                         max_length: int | None = None) -> dict[str, Any]:
    """What identifies an in-batch teacher's scores, without loading its weights: kind, card name, model id,
    pooling/similarity (bi-encoder) or family (cross-encoder), lengths, ``scale``, and the SHA-256 of its weight files
    (``None`` when they are not on disk). Equal to :meth:`InBatchTeacher.key` of the loaded teacher. Precision and
    device are not part of it (they change the scores only by rounding)."""
    return _spec_key(teacher_spec(card, query_max_length, passage_max_length, max_length), _check_scale(scale))


class InBatchTeacher:
    """A loaded in-batch teacher (:func:`load_in_batch_teacher`): ``scores(batch)`` → ``(B, P)`` float32.

    Attributes: ``spec`` (card and lengths), ``scale``, ``device``, ``precision``, ``kind`` (``bi-encoder`` or
    ``cross-encoder``).
    """

    def __init__(self, spec: TeacherSpec, scorer: Any, scale: float, device: torch.device, precision: str):
        self.spec, self.scorer, self.scale = spec, scorer, scale
        self.device, self.precision = device, precision
        self._key: dict[str, Any] | None = None

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def card(self) -> EncoderCard | CrossEncoderCard:
        return self.spec.card

    def key(self) -> dict[str, Any]:
        """See :func:`in_batch_teacher_key` (computed once: the fingerprint reads the weight files)."""
        if self._key is None:
            self._key = _spec_key(self.spec, self.scale)
        return dict(self._key)

    def describe(self) -> dict[str, Any]:
        """:meth:`key` plus where and how it runs (for logs and run summaries)."""
        return {**self.key(), "device": str(self.device), "precision": self.precision}

    def score_matrix(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """``(len(queries), len(passages))`` float32: every query against every passage, × ``scale``.

        Raises:
            NonFiniteTeacherScoresError: a score is NaN or infinite.
        """
        if isinstance(self.scorer, BiEncoderScorer):
            enc = self.scorer.encoder
            qv = enc.embed(list(queries), self.spec.query_max_length)
            pv = enc.embed(list(passages), self.spec.passage_max_length)
            out = qv @ pv.T  # numpy: float32, and no autocast of the caller's can touch it
        else:
            pairs = [(i, j) for i in range(len(queries)) for j in range(len(passages))]
            out = self.scorer.score_pairs(queries, passages, pairs).reshape(len(queries), len(passages))
        out = np.asarray(out, dtype=np.float32) * np.float32(self.scale)
        if not np.isfinite(out).all():
            raise NonFiniteTeacherScoresError(
                f"in-batch teacher {self.card.name} ({self.precision} on {self.device}) produced "
                f"{int((~np.isfinite(out)).sum())} non-finite scores; its weights are broken, or fp16 overflows "
                "(use bf16 or fp32)")
        return out

    @torch.no_grad()
    def scores(self, batch: Any) -> torch.Tensor:
        """``(B, P)`` float32 on the batch's device: row ``i`` = the teacher's score (× ``scale``) of triple ``i``'s
        query against each unique batch passage, in the batch's passage row order (``batch.p_texts``).

        Raises:
            InBatchTeacherError: the batch carries no texts (not built by :class:`~kd_pyserini.train.batches.
            Collator`) or they do not match its rows.
        """
        q_texts, p_texts = tuple(getattr(batch, "q_texts", ())), tuple(getattr(batch, "p_texts", ()))
        rows = sum(int(x.shape[0]) for x in batch.p_ids) if isinstance(batch.p_ids, (list, tuple)) \
            else int(batch.p_ids.shape[0])
        if not q_texts or len(p_texts) != rows or len(q_texts) != int(batch.q_ids.shape[0]):
            raise InBatchTeacherError(f"the batch carries {len(q_texts)} query / {len(p_texts)} passage texts for "
                                      f"{int(batch.q_ids.shape[0])} / {rows} rows: an in-batch teacher needs batches "
                                      "built by kd_pyserini.train.batches.Collator")
        mat = torch.from_numpy(self.score_matrix(q_texts, p_texts))
        q_index = batch.q_index
        return mat.to(q_index.device, non_blocking=False)[q_index]


def load_in_batch_teacher(card: str | EncoderCard | CrossEncoderCard, device: str | torch.device | None = None,
                          precision: str = "auto", scale: float = 1.0, batch_size: int = 64,
                          query_max_length: int | None = None, passage_max_length: int | None = None,
                          max_length: int | None = None,
                          student_device: str | torch.device | None = None) -> InBatchTeacher:
    """Load an in-batch teacher in eval mode.

    Args:
        card: a bi-encoder or cross-encoder card name, hub id or model folder (:func:`~kd_pyserini.teacher.
            teacher_spec` decides which).
        device: where it runs; ``None``: :func:`default_teacher_device` (``student_device``).
        precision: ``auto`` (bf16/fp16 on CUDA, fp32 on CPU), ``fp32``, ``bf16`` or ``fp16`` (CUDA only).
        scale: multiplies every score (> 0).
        batch_size: texts (bi-encoder) or pairs (cross-encoder) per forward pass (on CUDA a token budget of
            ``batch_size × max length``).
        query_max_length / passage_max_length: a bi-encoder's truncation lengths [the card's]; for a cross-encoder,
            optional cuts of each text before pairing. max_length: a cross-encoder's pair length [the card's].

    Raises:
        InBatchTeacherError, ModelLoadError, UnknownEncoderError: one line each.
    """
    scale = _check_scale(scale)
    spec = teacher_spec(card, query_max_length, passage_max_length, max_length)
    dev = torch.device(device) if device not in (None, "") else default_teacher_device(student_device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InBatchTeacherError(f"in-batch teacher device {dev} was asked for but CUDA is not available here; "
                                  "use cpu")
    prec = _resolve_precision(precision, dev)
    scorer = load_scorer(spec, device=str(dev), precision=prec, batch_size=batch_size)
    model = scorer.encoder.model  # TextEncoder or CrossEncoder: both load in eval mode; make sure, and freeze
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    log.info("in-batch teacher %s (%s) on %s at %s, scores x %g", spec.card.name, spec.kind, dev, prec, scale)
    return InBatchTeacher(spec, scorer, scale, dev, prec)
