"""kd_pyserini's encoders as Pyserini ``QueryEncoder`` / ``DocumentEncoder`` objects, registered with Pyserini.

The classes wrap the Pyserini-free core :class:`kd_pyserini.encoding.TextEncoder` (vectors, pooling, fast paths: see
:mod:`kd_pyserini.encoding`). They subclass Pyserini's, so they plug into ``FaissSearcher`` and ``HybridSearcher``
unchanged, and :func:`register_with_pyserini` makes Pyserini's own command-line tools pick them for
``--encoder distilbert-dot...``. Importing this module imports ``pyserini`` (and so starts the JVM); dense-only code
imports :mod:`kd_pyserini.encoding` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pyserini.encode import DocumentEncoder, QueryEncoder

import kd_pyserini.pyserini_compat.encoders as pyserini_compat  # the encoder-class parts only
from kd_pyserini.cards import EncoderCard, get_card
from kd_pyserini.encoding import TextEncoder, resolve_device

__all__ = ["KDQueryEncoder", "KDDocumentEncoder", "get_query_encoder", "get_document_encoder", "PYSERINI_KEYS",
           "register_with_pyserini"]


class KDQueryEncoder(QueryEncoder):
    """A Pyserini ``QueryEncoder`` for a kd_pyserini card (BERT_Dot by default).

    Accepts the keyword arguments Pyserini's ``search.faiss`` passes (``encoder_dir``, ``tokenizer_name``,
    ``device``, ``prefix``, ``fp16``...), so Pyserini can build it from ``--encoder``. Pre-encoded queries: a folder
    as ``encoded_query_dir`` (Pyserini 1.6's name) or ``encoded_queries_dir`` (2.x's, which 2.x's
    ``QueryEncoder.load_encoded_queries`` passes).

    Args:
        encoder_dir: card name, hub id or model directory (Pyserini's name for it).
        device: see :func:`resolve_device`.
        precision: ``fp32``, ``fp16``, ``bf16`` or ``int8`` (CPU only, the fastest single-query option);
            Pyserini's ``fp16=True`` means ``fp16`` (on CPU: ``bf16``).
        max_length: query truncation length (default: the card's, 30 for BERT_Dot).
        encoder: an already-loaded :class:`TextEncoder` to share (e.g. with a document encoder).
        threads: CPU threads for torch (process-wide), ``None`` for torch's default.
    """

    def __init__(self, encoder_dir: str | EncoderCard | None = None, tokenizer_name: str | None = None,
                 encoded_query_dir: str | None = None, device: str | None = None, precision: str = "fp32",
                 max_length: int | None = None, prefix: str | None = None, fp16: bool = False,
                 batch_size: int = 64, encoder: TextEncoder | None = None, threads: int | None = None,
                 **kwargs: Any):
        encoded_query_dir = pyserini_compat.pop_encoded_queries_dir(kwargs, encoded_query_dir)
        super().__init__(encoded_query_dir)  # positional: the keyword differs between Pyserini 1.6 and 2.x
        if fp16 and precision == "fp32":
            precision = "fp16" if resolve_device(device).type == "cuda" else "bf16"
        if encoder is None and encoder_dir is not None:
            encoder = TextEncoder(encoder_dir, device=device, precision=precision, batch_size=batch_size,
                                  threads=threads)
        self.encoder = encoder
        self.has_model = encoder is not None
        if not self.has_model and not pyserini_compat.has_encoded_queries(self):
            raise ValueError("KDQueryEncoder needs an encoder (name, hub id or directory) or encoded queries")
        self.card = encoder.card if encoder else None
        self.max_length = max_length or (self.card.query_max_length if self.card else None)
        self.prefix = prefix

    @property
    def dimension(self) -> int:
        return self.encoder.dimension

    def _prep(self, queries: Sequence[str]) -> list[str]:
        return [f"{self.prefix} {q}" for q in queries] if self.prefix else list(queries)

    def encode(self, query: str, max_length: int | None = None, **kwargs: Any) -> np.ndarray:
        """One query → a 1-D float32 vector (the single-text fast path: no batching, padding or mask)."""
        if not self.has_model:
            return super().encode(query)
        return self.encoder.embed_one(f"{self.prefix} {query}" if self.prefix else query,
                                      max_length or self.max_length)

    def encode_batch(self, queries: Sequence[str], max_length: int | None = None,
                     batch_size: int | None = None) -> np.ndarray:
        """Many queries → a 2-D ``(n, dim)`` float32 array (batched, length-sorted)."""
        return self.encoder.embed(self._prep(queries), max_length or self.max_length, batch_size)


class KDDocumentEncoder(DocumentEncoder):
    """A Pyserini ``DocumentEncoder`` for a kd_pyserini card (BERT_Dot by default).

    ``encode(texts, titles=None)`` joins ``title + " " + text`` as Pyserini's ``AutoDocumentEncoder`` does and returns
    ``(n, dim)`` float32. Accepts Pyserini's ``encode`` keyword arguments (``max_length``, ``fp16``, ``add_sep``).
    """

    def __init__(self, model_name: str | EncoderCard | None = None, tokenizer_name: str | None = None,
                 device: str | None = None, precision: str = "fp32", max_length: int | None = None,
                 batch_size: int = 32, encoder: TextEncoder | None = None, threads: int | None = None,
                 **kwargs: Any):
        if encoder is None:
            if model_name is None:
                raise ValueError("KDDocumentEncoder needs model_name (card name, hub id or directory)")
            encoder = TextEncoder(model_name, device=device, precision=precision, batch_size=batch_size,
                                  threads=threads)
        self.encoder = encoder
        self.card = encoder.card
        self.max_length = max_length or self.card.passage_max_length
        self.has_model = True

    @property
    def dimension(self) -> int:
        return self.encoder.dimension

    def encode(self, texts: Sequence[str], titles: Sequence[str] | None = None, max_length: int | None = None,
               batch_size: int | None = None, **kwargs: Any) -> np.ndarray:
        """Passages (optionally with titles) → ``(n, dim)`` float32, in input order."""
        if titles is not None:
            texts = [f"{t} {x}" if t else x for t, x in zip(titles, texts)]
        return self.encoder.embed(list(texts), max_length or self.max_length, batch_size)


def get_query_encoder(name: str | EncoderCard, device: str | None = None, precision: str = "fp32",
                      max_length: int | None = None, **kwargs: Any) -> KDQueryEncoder:
    """A Pyserini ``QueryEncoder`` for an encoder name, hub id or model directory.

    Args:
        name: e.g. ``distilbert-dot`` (= TAS-B), ``distilbert-dot-margin-mse``, ``all-minilm-l6-v2``, a hub id or a
            local directory.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``; default CUDA when present.
        precision: ``"fp32"`` (default), ``"fp16"`` (CUDA), ``"bf16"`` or ``"int8"`` (CPU only).
        max_length: query truncation (default: the card's).
    """
    return KDQueryEncoder(get_card(name), device=device, precision=precision, max_length=max_length, **kwargs)


def get_document_encoder(name: str | EncoderCard, device: str | None = None, precision: str = "fp32",
                         max_length: int | None = None, **kwargs: Any) -> KDDocumentEncoder:
    """A Pyserini ``DocumentEncoder`` for an encoder name, hub id or model directory (see :func:`get_query_encoder`)."""
    return KDDocumentEncoder(get_card(name), device=device, precision=precision, max_length=max_length, **kwargs)


# Pyserini picks an encoder class by the first key of its maps that is a substring of --encoder.
PYSERINI_KEYS = ("distilbert-dot", "all-minilm-l6-v2")


def _prepend(mapping: dict, key: str, value: Any) -> None:
    items = [(k, v) for k, v in mapping.items() if k != key]
    mapping.clear()
    mapping[key] = value
    mapping.update(items)


def register_with_pyserini(extra_keys: Sequence[str] = ()) -> None:
    """Make Pyserini's ``encode`` and ``search.faiss`` pick our classes for ``--encoder distilbert-dot...``.

    Our keys go first in ``pyserini.encode.query_encoder_class_map`` / ``document_encoder_class_map`` (the dicts
    ``pyserini.search.faiss`` also uses), so they win Pyserini's substring match. ``extra_keys`` (e.g. a full model
    path) are put first too, so a path that merely contains ``ance`` or ``dpr`` reaches our class.
    """
    query_map, document_map = pyserini_compat.encoder_class_maps()
    for key in (*PYSERINI_KEYS, *extra_keys):
        _prepend(query_map, key.lower(), KDQueryEncoder)
        _prepend(document_map, key.lower(), KDDocumentEncoder)
