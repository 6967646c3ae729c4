"""The in-batch ("dynamic") teacher of TAS-B: scores every query of a training batch against every batch passage.

Sebastian Hofstätter, Sheng-Chieh Lin, Jheng-Hong Yang, Jimmy Lin and Allan Hanbury. "Efficiently Teaching an
Effective Dense Retriever with Balanced Topic Aware Sampling". SIGIR 2021 (arXiv:2104.06967). TAS-B's "dual
supervision" adds to the pairwise Margin-MSE term (teacher-file scores) an in-batch term whose teacher scores the
cross pairs ``(q_i, p_j)``, ``(q_i, n_j)`` of each batch on the fly; the paper used a ColBERT teacher, which matchmaker
runs as a ``DynamicTeacher`` beside the training loop, without gradients, in fp16, on the last GPU
(``matchmaker/distillation/dynamic_teacher.py``). The term itself is in :mod:`kd_pyserini.train.in_batch_margin_mse`.

Here the teacher is any card :func:`kd_pyserini.encoding.scorers.teacher_spec` resolves (loaded by
:func:`kd_pyserini.encoding.scorers.load_scorer`):

* a bi-encoder (:class:`~kd_pyserini.encoding.TextEncoder`): the batch's unique queries and passages are encoded with
  the teacher's own tokenizer and lengths, and scored with the card's similarity (dot product; cosine for normalised
  cards such as all-MiniLM-L6-v2): ``Q + P`` forward passes per batch;
* a ColBERT (late interaction, Khattab & Zaharia 2020; :class:`~kd_pyserini.encoding.colbert.ColBERTReranker`), as
  TAS-B used: each unique query and passage of the batch is encoded once (``Q + P`` encoder passes) and every
  ``Q × P`` pair is scored by MaxSim on those token vectors;
* a PreTTR (split, MacAvaney et al. 2020): queries and passages run the lower layers apart (a passage once per
  distinct query width in the batch), and every pair runs the joint upper layers;
* a cross-encoder (:class:`~kd_pyserini.encoding.cross_encoder.CrossEncoder`): every (unique query, unique passage)
  pair of the batch is read together: ``Q × P`` pair forward passes per batch (with 32 distinct queries and 64
  passages, 2,048 pairs), much dearer than a bi-encoder or ColBERT, which is why TAS-B used ColBERT.

Scores are multiplied by ``scale`` (a cosine teacher's scores lie in [-1, 1]; ×10 or so puts its margins on the
scale of a teacher file's cross-encoder margins). **Scale check**: each batch's own triples have a teacher-file
margin (``pos_score - neg_score``) and an in-batch margin (the in-batch teacher's ``(q_i, p_i) - (q_i, n_i)``). Over
the first ``calibration_triples`` triples the least-squares scale ``s* = Σ m_in·m_file / Σ m_in²`` is fitted
(:func:`fit_margin_scale`); when ``s*`` and ``scale`` differ by more than a factor of 2 a warning says so once, with
the factor and the scale that would match (:func:`margin_scale_warning`). ``scale="auto"`` uses ``s*`` itself: the
running fit until ``calibration_triples`` triples are seen, then fixed (:attr:`InBatchTeacher.scale`; a resumed run
restores it with :meth:`InBatchTeacher.restore_scale`).

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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kd_pyserini.cards import CrossEncoderCard, EncoderCard
from kd_pyserini.encoding.fingerprint import weights_sha256
from kd_pyserini.encoding.scorers import BiEncoderScorer, TeacherSpec, load_scorer, teacher_spec
from kd_pyserini.errors import KdError

__all__ = ["InBatchTeacher", "load_in_batch_teacher", "in_batch_teacher_key", "default_teacher_device",
           "TEACHER_PRECISIONS", "InBatchTeacherError", "NonFiniteTeacherScoresError", "MarginScaleFit",
           "fit_margin_scale", "margin_scale_warning", "DEFAULT_CALIBRATION_TRIPLES", "SCALE_TOLERANCE"]

log = logging.getLogger(__name__)

TEACHER_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: triples whose margins fit the scale (``scale="auto"``) and decide the scale warning.
DEFAULT_CALIBRATION_TRIPLES = 256
#: the scale warning fires when the fitted scale and the given one differ by more than this factor.
SCALE_TOLERANCE = 2.0


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
    if precision == "auto":  # the teacher-score rule: bf16 (fp16) on CUDA, fp32 on CPU
        from kd_pyserini.encoding.precision import choose_precision

        return choose_precision("auto", device.type, "score").precision
    if precision == "fp16" and device.type != "cuda":
        raise InBatchTeacherError(f"in-batch teacher precision fp16 needs a CUDA device, not {device}; on the CPU "
                                  "use bf16 (autocast) or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InBatchTeacherError(f"{device} does not support bf16; use fp16 or fp32 for the in-batch teacher")
    return precision


def _check_scale(scale: float | str) -> float | str:
    if isinstance(scale, str) and scale.strip().lower() == "auto":
        return "auto"
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise InBatchTeacherError(f"in-batch teacher scale {scale!r} must be a number > 0 or 'auto'") from None
    if not math.isfinite(scale) or scale <= 0:
        raise InBatchTeacherError(f"in-batch teacher scale {scale} must be a finite number > 0 (e.g. 10 for a "
                                  "cosine teacher) or 'auto' (fitted to the teacher file's margins)")
    return scale


@dataclass(frozen=True)
class MarginScaleFit:
    """The scale that puts in-batch margins on the teacher file's: ``scale`` (least squares through 0), fitted on
    ``triples`` triples whose margins correlate by ``correlation`` (Pearson)."""

    scale: float
    triples: int
    correlation: float


def fit_margin_scale(in_batch_margins: Sequence[float] | np.ndarray,
                     file_margins: Sequence[float] | np.ndarray) -> MarginScaleFit:
    """Fit ``s`` minimising ``Σ (s·m_in - m_file)²``: ``s = Σ m_in·m_file / Σ m_in²``.

    Args:
        in_batch_margins: the in-batch teacher's ``score(q, pos) - score(q, neg)`` of each triple, unscaled.
        file_margins: the teacher file's ``pos_score - neg_score`` of the same triples.

    Raises:
        InBatchTeacherError: no triples, all in-batch margins 0, or a fit that is not > 0 (the two teachers
        disagree on which passage is better).
    """
    a = np.asarray(in_batch_margins, dtype=np.float64).ravel()
    b = np.asarray(file_margins, dtype=np.float64).ravel()
    if len(a) != len(b) or len(a) == 0:
        raise InBatchTeacherError(f"fit_margin_scale needs margins of the same triples ({len(a)} vs {len(b)})")
    denom = float((a * a).sum())
    if denom == 0:
        raise InBatchTeacherError("the in-batch teacher gives every triple a margin of 0: no scale can be fitted")
    scale = float((a * b).sum()) / denom
    corr = float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() > 0 and b.std() > 0 else float("nan")
    if not math.isfinite(scale) or scale <= 0:
        raise InBatchTeacherError(f"the in-batch teacher's margins do not agree with the teacher file's (fitted scale "
                                  f"{scale:.3g} on {len(a)} triples, correlation {corr:.2f}): check that both score "
                                  "the same kind of relevance; no positive scale fits")
    return MarginScaleFit(scale, len(a), corr)


def margin_scale_warning(fit: MarginScaleFit, scale: float, name: str = "in-batch teacher",
                         tolerance: float = SCALE_TOLERANCE) -> str | None:
    """The one-line warning when ``scale`` is off the fitted one by more than ``tolerance`` (``None`` otherwise)."""
    ratio = fit.scale / scale
    if 1 / tolerance <= ratio <= tolerance:
        return None
    how = f"{1 / ratio:.1f}x larger" if ratio < 1 else f"{ratio:.1f}x smaller"
    return (f"{name}: with scale {scale:g} its margins are {how} than the teacher file's on {fit.triples} triples "
            f"(correlation {fit.correlation:.2f}); scale {fit.scale:.4g} would match them (--in-batch-teacher-scale "
            f"{fit.scale:.4g}, or auto)")


def _fingerprint(card: Any) -> str | None:
    """SHA-256 of the teacher's weight files (:func:`kd_pyserini.encoding.fingerprint.weights_sha256`), ``None``
    when they are not on this machine's disk (a hub id not yet downloaded)."""
    return weights_sha256(card)


def _spec_key(spec: TeacherSpec, scale: float | str) -> dict[str, Any]:
    return {**spec.key(), "scale": scale, "weights_sha256": _fingerprint(spec.card)}


def in_batch_teacher_key(card: str | EncoderCard | CrossEncoderCard, scale: float | str = 1.0,
                         query_max_length: int | None = None, passage_max_length: int | None = None,
                         max_length: int | None = None) -> dict[str, Any]:
    """What identifies an in-batch teacher's scores, without loading its weights: kind, card name, model id,
    pooling/similarity (bi-encoder), family (cross-encoder) or mask tokens etc. (ColBERT, PreTTR), lengths,
    ``scale`` (``"auto"`` when fitted), and the SHA-256 of its weight files
    (``None`` when they are not on disk). Equal to :meth:`InBatchTeacher.key` of the loaded teacher. Precision and
    device are not part of it (they change the scores only by rounding)."""
    return _spec_key(teacher_spec(card, query_max_length, passage_max_length, max_length), _check_scale(scale))


class InBatchTeacher:
    """A loaded in-batch teacher (:func:`load_in_batch_teacher`): ``scores(batch)`` → ``(B, P)`` float32.

    Attributes: ``spec`` (card and lengths), ``scale`` (a number; with ``scale="auto"`` the fitted one, ``None``
    before the first batch), ``scale_mode`` (``fixed`` or ``auto``), ``scale_fit`` (the latest
    :class:`MarginScaleFit`), ``device``, ``precision``, ``kind`` (``bi-encoder``, ``cross-encoder``,
    ``late-interaction`` or ``split``).
    """

    def __init__(self, spec: TeacherSpec, scorer: Any, scale: float | str, device: torch.device, precision: str,
                 calibration_triples: int = DEFAULT_CALIBRATION_TRIPLES):
        self.spec, self.scorer = spec, scorer
        self.scale_mode = "auto" if scale == "auto" else "fixed"
        self.scale: float | None = None if scale == "auto" else float(scale)
        self.device, self.precision = device, precision
        self.calibration_triples = int(calibration_triples)
        self.scale_fit: MarginScaleFit | None = None
        self._margins: tuple[list[float], list[float]] = ([], [])
        self._calibrated = False
        self._key: dict[str, Any] | None = None

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def card(self) -> Any:
        return self.spec.card

    def key(self) -> dict[str, Any]:
        """See :func:`in_batch_teacher_key` (computed once: the fingerprint reads the weight files)."""
        if self._key is None:
            self._key = _spec_key(self.spec, "auto" if self.scale_mode == "auto" else self.scale)
        return dict(self._key)

    def describe(self) -> dict[str, Any]:
        """:meth:`key` plus where and how it runs, and the scale in use (for logs and run summaries)."""
        fit = self.scale_fit
        return {**self.key(), "device": str(self.device), "precision": self.precision, "scale_in_use": self.scale,
                "scale_fit": None if fit is None else {"scale": fit.scale, "triples": fit.triples,
                                                       "correlation": fit.correlation}}

    def restore_scale(self, scale: float) -> None:
        """Fix an ``auto`` teacher's scale to the value a run fitted before (on resume), ending its calibration."""
        self.scale = float(_check_scale(float(scale)))
        self._calibrated = True

    def raw_matrix(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """``(len(queries), len(passages))`` float32: every query against every passage, unscaled. ColBERT/PreTTR
        encode each text once (``score_matrix``); a cross-encoder reads all ``Q × P`` pairs."""
        if isinstance(self.scorer, BiEncoderScorer):
            enc = self.scorer.encoder
            qv = enc.embed(list(queries), self.spec.query_max_length)
            pv = enc.embed(list(passages), self.spec.passage_max_length)
            out = qv @ pv.T  # numpy: float32, and no autocast of the caller's can touch it
        elif hasattr(self.scorer.encoder, "score_matrix"):
            out = self.scorer.encoder.score_matrix(queries, passages)
        else:
            pairs = [(i, j) for i in range(len(queries)) for j in range(len(passages))]
            out = self.scorer.score_pairs(queries, passages, pairs).reshape(len(queries), len(passages))
        out = np.asarray(out, dtype=np.float32)
        if not np.isfinite(out).all():
            raise NonFiniteTeacherScoresError(
                f"in-batch teacher {self.card.name} ({self.precision} on {self.device}) produced "
                f"{int((~np.isfinite(out)).sum())} non-finite scores; its weights are broken, or fp16 overflows "
                "(use bf16 or fp32)")
        return out

    def score_matrix(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """:meth:`raw_matrix` × ``scale``.

        Raises:
            NonFiniteTeacherScoresError: a score is NaN or infinite.
            InBatchTeacherError: ``scale="auto"`` before any batch fitted it (call :meth:`scores`).
        """
        if self.scale is None:
            raise InBatchTeacherError("the in-batch teacher's scale is 'auto' and no batch has fitted it yet: score "
                                      "batches with scores(batch), or give a number")
        return self.raw_matrix(queries, passages) * np.float32(self.scale)

    def observe_margins(self, in_batch_margins: np.ndarray, file_margins: np.ndarray) -> None:
        """Add a batch's triples to the scale check (see the module docstring): while fewer than
        ``calibration_triples`` have been seen, refit; ``auto`` takes the fit as its scale; once enough are seen,
        warn once when a fixed scale is off by more than :data:`SCALE_TOLERANCE`."""
        if self._calibrated:
            return
        self._margins[0].extend(np.asarray(in_batch_margins, dtype=np.float64).ravel().tolist())
        self._margins[1].extend(np.asarray(file_margins, dtype=np.float64).ravel().tolist())
        done = len(self._margins[0]) >= self.calibration_triples
        try:
            self.scale_fit = fit_margin_scale(*self._margins)
        except InBatchTeacherError as e:
            if self.scale_mode == "auto" and (done or self.scale is None):
                raise InBatchTeacherError(f"--in-batch-teacher-scale auto: {e}") from None
            if done:
                log.warning("in-batch teacher %s: %s", self.card.name, e)
                self._calibrated = True
            return
        if self.scale_mode == "auto":
            self.scale = self.scale_fit.scale
            if done:
                log.info("in-batch teacher %s: scale fitted to %.4g on %d triples (correlation %.2f)",
                         self.card.name, self.scale, self.scale_fit.triples, self.scale_fit.correlation)
        elif done:
            msg = margin_scale_warning(self.scale_fit, float(self.scale), f"in-batch teacher {self.card.name}")
            if msg:
                log.warning(msg)
        if done:
            self._calibrated = True

    @torch.no_grad()
    def scores(self, batch: Any) -> torch.Tensor:
        """``(B, P)`` float32 on the batch's device: row ``i`` = the teacher's score (× ``scale``) of triple ``i``'s
        query against each unique batch passage, in the batch's passage row order (``batch.p_texts``). The batch's
        own triples feed the scale check (:meth:`observe_margins`) when it carries teacher-file scores.

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
        raw = self.raw_matrix(q_texts, p_texts)
        pos_s, neg_s = getattr(batch, "pos_scores", None), getattr(batch, "neg_scores", None)
        if pos_s is not None and neg_s is not None and not self._calibrated:
            qi = np.asarray(batch.q_index.cpu()).astype(np.int64)
            in_batch = raw[qi, np.asarray(batch.pos_index.cpu())] - raw[qi, np.asarray(batch.neg_index.cpu())]
            file_m = np.asarray(torch.as_tensor(pos_s).float().cpu()) - np.asarray(torch.as_tensor(neg_s).float().cpu())
            self.observe_margins(in_batch, file_m)
        if self.scale is None:
            raise InBatchTeacherError("--in-batch-teacher-scale auto needs batches with teacher-file scores "
                                      "(pos_scores / neg_scores) to fit the scale; give a number instead")
        mat = torch.from_numpy(raw * np.float32(self.scale))
        q_index = batch.q_index
        return mat.to(q_index.device, non_blocking=False)[q_index]


def load_in_batch_teacher(card: Any, device: str | torch.device | None = None,
                          precision: str = "auto", scale: float | str = 1.0, batch_size: int = 64,
                          query_max_length: int | None = None, passage_max_length: int | None = None,
                          max_length: int | None = None,
                          student_device: str | torch.device | None = None,
                          calibration_triples: int = DEFAULT_CALIBRATION_TRIPLES) -> InBatchTeacher:
    """Load an in-batch teacher in eval mode.

    Args:
        card: a bi-encoder, cross-encoder, ColBERT or PreTTR card name, hub id or model folder
            (:func:`~kd_pyserini.teacher.teacher_spec` decides which).
        device: where it runs; ``None``: :func:`default_teacher_device` (``student_device``).
        precision: ``auto`` (bf16/fp16 on CUDA, fp32 on CPU), ``fp32``, ``bf16`` or ``fp16`` (CUDA only).
        scale: multiplies every score (> 0), or ``"auto"``: fitted to the teacher file's margins of the first
            ``calibration_triples`` triples (see the module docstring).
        batch_size: texts (bi-encoder, ColBERT, PreTTR) or pairs (cross-encoder) per forward pass (on CUDA a token
            budget of ``batch_size × max length``).
        query_max_length / passage_max_length: a bi-encoder's, ColBERT's or PreTTR's truncation lengths [the card's];
            for a cross-encoder, optional cuts of each text before pairing. max_length: a cross-encoder's pair length [the card's].

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
    log.info("in-batch teacher %s (%s) on %s at %s, scores x %s", spec.card.name, spec.kind, dev, prec, scale)
    return InBatchTeacher(spec, scorer, scale, dev, prec, calibration_triples)
