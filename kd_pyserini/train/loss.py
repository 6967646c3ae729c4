"""The distillation losses, one per module (as sentence-transformers keeps them):

* :class:`~kd_pyserini.train.margin_mse.MarginMSELoss` — Hofstätter et al. 2020, pairwise Margin-MSE;
* :class:`~kd_pyserini.train.in_batch_margin_mse.InBatchMarginMSELoss` — the TAS-B style in-batch term.
"""

from kd_pyserini.train.in_batch_margin_mse import InBatchMarginMSELoss, in_batch_negative_mask
from kd_pyserini.train.margin_mse import MarginMSELoss, margin_mse

__all__ = ["MarginMSELoss", "margin_mse", "InBatchMarginMSELoss", "in_batch_negative_mask"]
