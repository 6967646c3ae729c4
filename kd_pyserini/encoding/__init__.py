"""Turn text into vectors the way an encoder card says, without Pyserini (no JVM, no Lucene).

BERT_Dot (TAS-B, Margin-MSE): one shared DistilBERT for queries and passages, the CLS vector, no normalisation,
dot product; query max length 30, passage max length 200 (the authors' training settings). Cards with
``pooling = "mean"`` / ``similarity = "cosine"`` (all-MiniLM-L6-v2) use masked mean pooling and L2 normalisation.

Dense-only work (encoding, dense indexing and search, training) imports this package; the Pyserini
``QueryEncoder`` / ``DocumentEncoder`` classes built on :class:`TextEncoder` live in :mod:`kd_pyserini.encoders`.

Modules: :mod:`~kd_pyserini.encoding.device` (device and precision), :mod:`~kd_pyserini.encoding.loading` (model
loading), :mod:`~kd_pyserini.encoding.pooling` (padding and pooling), :mod:`~kd_pyserini.encoding.fast_linear`
(oneDNN linear), :mod:`~kd_pyserini.encoding.int8` (int8 quantisation), :mod:`~kd_pyserini.encoding.batching`
(autocast, model placement and token-budget batches, shared by every model kind),
:mod:`~kd_pyserini.encoding.text_encoder` (:class:`TextEncoder`), :mod:`~kd_pyserini.encoding.fingerprint` (the
SHA-256 of a model's weight files, which indexes, passage stores and teachers record) and
:mod:`~kd_pyserini.encoding.scorers` (teachers of any kind, shared by ``kd-teacher`` and kd-train's in-batch
teacher). Re-rankers, one module per kind of the paper's model family (Hofstätter et al. 2020, arXiv
2010.02666), all built by :func:`kd_pyserini.encoding.rerankers.load_reranker`:
:mod:`~kd_pyserini.encoding.cross_encoder` (BERT_CAT), :mod:`~kd_pyserini.encoding.colbert` (ColBERT),
:mod:`~kd_pyserini.encoding.prettr` (PreTTR), sharing :mod:`~kd_pyserini.encoding.interaction`.

Fast paths (same API, measured in PERFORMANCE.md):

* every forward runs under ``inference_mode`` on texts tokenised once, sorted by length and padded per batch;
* on CPU, ``nn.Linear`` layers run oneDNN's matmul on prepacked weights instead of the default BLAS sgemm (2-3x faster
  on AMD CPUs, same fp32 results up to float rounding; ``KD_PYSERINI_FAST_LINEAR=0`` turns it off). With
  ``precision="bf16"`` the same layers take pre-cast bf16 weights (what CPU autocast computes, without re-casting the
  weights at every call);
* ``precision="int8"`` (CPU only): torch dynamic int8 quantisation of the ``nn.Linear`` layers (per-channel
  weights, 8-bit activations on VNNI CPUs, SmoothQuant-style smoothing calibrated on a few built-in texts), the
  smallest single-query option (all-MiniLM-L6-v2 query vectors within cosine 0.99 of fp32);
* one text at a time (:meth:`TextEncoder.embed_one`, used by ``KDQueryEncoder.encode``) skips the batching
  machinery: a private Rust tokenizer, no padding, no attention mask;
* on CUDA, batches are filled up to a token budget (``batch_size * max_length``) over length-sorted texts, and the
  next chunk of texts is tokenised and padded into pinned memory in a background thread while the GPU runs.
"""

from __future__ import annotations

from kd_pyserini.lazy import lazy_exports

# Loaded on first access (kd_pyserini.lazy), so that importing a light module of this package does not import torch:
# the index metadata check (kd_pyserini.index_meta) and the Pyserini adapters need only encoding.fingerprint.
_LAZY = {
    "PRECISIONS": "kd_pyserini.encoding.device",
    "resolve_device": "kd_pyserini.encoding.device",
    "TextEncoder": "kd_pyserini.encoding.text_encoder",
    "NonFiniteVectorError": "kd_pyserini.encoding.text_encoder",
    "pool": "kd_pyserini.encoding.pooling",
    "pad_batch": "kd_pyserini.encoding.pooling",
    "ModelLoadError": "kd_pyserini.encoding.loading",
    "load_model": "kd_pyserini.encoding.loading",
    "hub_cached": "kd_pyserini.encoding.loading",
    "hub_reachable": "kd_pyserini.encoding.loading",
    "fast_linear_available": "kd_pyserini.encoding.fast_linear",
    "use_fast_linear": "kd_pyserini.encoding.fast_linear",
    "quantize_int8": "kd_pyserini.encoding.int8",
    "CALIBRATION_TEXTS": "kd_pyserini.encoding.int8",
    # internals, reachable here for the fidelity tests and the benchmarks (not in __all__)
    "_FastLinear": "kd_pyserini.encoding.fast_linear",
    "_Smoothed": "kd_pyserini.encoding.int8",
}

__all__ = ["PRECISIONS", "resolve_device", "TextEncoder", "NonFiniteVectorError", "pool", "pad_batch",
           "ModelLoadError", "load_model",
           "hub_cached", "hub_reachable", "fast_linear_available", "use_fast_linear", "quantize_int8",
           "CALIBRATION_TEXTS"]
__getattr__ = lazy_exports(__name__, _LAZY)
