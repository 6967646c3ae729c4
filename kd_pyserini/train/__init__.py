"""``kd_pyserini.train``: Margin-MSE and TAS-B knowledge distillation for BERT_Dot dense retrievers.

Hofstätter et al. 2020, "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
Distillation" (arXiv:2010.02666): a bi-encoder student learns the *margins* ``t(q, p+) - t(q, p-)`` that a teacher
(there a BERT_CAT ensemble) gives to (query, positive, negative) triples. TAS-B (Hofstätter et al., SIGIR 2021,
arXiv:2104.06967) adds topic-aware, margin-balanced batches and an in-batch Margin-MSE term scored on the fly by a
second teacher.

Modules (one job each; one loss per module, as in sentence-transformers):

* :mod:`~kd_pyserini.offsets` — :class:`OffsetIndex` (``collection.tsv``/``queries.train.tsv`` read
  lazily by byte offset) and the byte-level line reading (BOM, UTF-8 errors as ``file:line``) of every input;
* :mod:`~kd_pyserini.train.teacher_files` — teacher files (Hofstätter's id format, a text format, JSONL);
* :mod:`~kd_pyserini.train.batches` — :class:`Triple`, the deterministic data order, tokenised batches;
* :mod:`~kd_pyserini.train.sampling` — :class:`RandomSampler`, :class:`TasBalancedSampler` (TAS-balanced batches);
* :mod:`~kd_pyserini.train.clusters` — query clusters: matchmaker's file format, k-means over an encoder, the cache;
* :mod:`~kd_pyserini.train.in_batch_teacher` — the dynamic teacher that scores every in-batch pair;
* :mod:`~kd_pyserini.train.recipe` — which sampler and in-batch teacher a :class:`TrainConfig` asks for;
* :mod:`~kd_pyserini.train.margin_mse` — :class:`MarginMSELoss`;
* :mod:`~kd_pyserini.train.in_batch_margin_mse` — :class:`InBatchMarginMSELoss`;
* :mod:`~kd_pyserini.train.objective` — :func:`batch_loss` (the two losses over one batch);
* :mod:`~kd_pyserini.train.model` — :class:`BertDotStudent`, :func:`keep_layers` (smaller students);
* :mod:`~kd_pyserini.train.validation` — re-ranking validation;
* :mod:`~kd_pyserini.train.config` — :class:`TrainConfig`, :class:`TrainResult`, the errors a run stops with;
* :mod:`~kd_pyserini.train.checkpoints` — finding, writing, pruning checkpoints; output-folder and resume rules;
* :mod:`~kd_pyserini.train.guards` — the finiteness checks (nothing non-finite is saved);
* :mod:`~kd_pyserini.train.parts`, :mod:`~kd_pyserini.train.distributed`, :mod:`~kd_pyserini.train.train_log` —
  device/optimizer/schedule/validator, torchrun plumbing, the CSV/TensorBoard log;
* :mod:`~kd_pyserini.train.trainer` — :class:`MarginMSETrainer` (the loop), :func:`train_margin_mse`;
* :mod:`kd_pyserini.cli.train` — ``kd-train margin-mse`` and ``kd-train tas-b`` (also ``python -m
  kd_pyserini.train``).
"""

from __future__ import annotations

_LAZY = {
    "Triple": "kd_pyserini.train.batches",
    "Collator": "kd_pyserini.train.batches",
    "OffsetIndex": "kd_pyserini.offsets",
    "load_teacher": "kd_pyserini.train.teacher_files",
    "MarginMSELoss": "kd_pyserini.train.margin_mse",
    "margin_mse": "kd_pyserini.train.margin_mse",
    "InBatchMarginMSELoss": "kd_pyserini.train.in_batch_margin_mse",
    "in_batch_teacher_margin_mse": "kd_pyserini.train.in_batch_margin_mse",
    "RandomSampler": "kd_pyserini.train.sampling",
    "TasBalancedSampler": "kd_pyserini.train.sampling",
    "query_keys": "kd_pyserini.train.sampling",
    "read_query_clusters": "kd_pyserini.train.clusters",
    "write_query_clusters": "kd_pyserini.train.clusters",
    "build_query_clusters": "kd_pyserini.train.clusters",
    "load_in_batch_teacher": "kd_pyserini.train.in_batch_teacher",
    "in_batch_teacher_key": "kd_pyserini.train.in_batch_teacher",
    "keep_layers": "kd_pyserini.train.model",
    "batch_loss": "kd_pyserini.train.objective",
    "BertDotStudent": "kd_pyserini.train.model",
    "RerankValidator": "kd_pyserini.train.validation",
    "TrainConfig": "kd_pyserini.train.config",
    "TrainResult": "kd_pyserini.train.config",
    "NonFiniteLossError": "kd_pyserini.train.config",
    "MarginMSETrainer": "kd_pyserini.train.trainer",
    "train_margin_mse": "kd_pyserini.train.trainer",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kd_pyserini.train' has no attribute {name!r}")
