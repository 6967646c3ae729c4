"""``kd_pyserini.train``: Margin-MSE knowledge distillation for BERT_Dot dense retrievers.

Hofstätter et al. 2020, "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
Distillation" (arXiv:2010.02666): a bi-encoder student learns the *margins* ``t(q, p+) - t(q, p-)`` that a teacher
(there a BERT_CAT ensemble) gives to (query, positive, negative) triples. TAS-B (Hofstätter et al. 2021) adds an
in-batch Margin-MSE term (``in_batch_weight``).

Modules (one loss per module, as in sentence-transformers):

* :mod:`~kd_pyserini.train.data` — teacher files (Hofstätter's id format via byte-offset indexes over
  ``collection.tsv``/``queries.train.tsv``, a text format, JSONL), deterministic batches;
* :mod:`~kd_pyserini.train.margin_mse` — :class:`MarginMSELoss`;
* :mod:`~kd_pyserini.train.in_batch_margin_mse` — :class:`InBatchMarginMSELoss`;
* :mod:`~kd_pyserini.train.model` — :class:`BertDotStudent`;
* :mod:`~kd_pyserini.train.validation` — re-ranking validation;
* :mod:`~kd_pyserini.train.trainer` — :class:`MarginMSETrainer`, checkpoints, exact resume;
* :mod:`kd_pyserini.cli.train` — ``kd-train margin-mse`` (also ``python -m kd_pyserini.train``).
"""

from __future__ import annotations

_LAZY = {
    "Triple": "kd_pyserini.train.data",
    "OffsetIndex": "kd_pyserini.train.data",
    "load_teacher": "kd_pyserini.train.data",
    "Collator": "kd_pyserini.train.data",
    "MarginMSELoss": "kd_pyserini.train.margin_mse",
    "margin_mse": "kd_pyserini.train.margin_mse",
    "InBatchMarginMSELoss": "kd_pyserini.train.in_batch_margin_mse",
    "BertDotStudent": "kd_pyserini.train.model",
    "RerankValidator": "kd_pyserini.train.validation",
    "TrainConfig": "kd_pyserini.train.trainer",
    "TrainResult": "kd_pyserini.train.trainer",
    "MarginMSETrainer": "kd_pyserini.train.trainer",
    "NonFiniteLossError": "kd_pyserini.train.trainer",
    "train_margin_mse": "kd_pyserini.train.trainer",
    "batch_loss": "kd_pyserini.train.trainer",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kd_pyserini.train' has no attribute {name!r}")
