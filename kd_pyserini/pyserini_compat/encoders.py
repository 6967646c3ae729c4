"""Pyserini's encoder base classes and class maps, per line.

* ``QueryEncoder`` (``encode/_base.py``): 1.6 line 42 ``QueryEncoder(encoded_query_dir)`` with attributes
  ``has_encoded_query`` / ``embedding``; 2.x line 89 ``QueryEncoder(encoded_queries_dir)`` with
  ``has_encoded_queries`` / ``embeddings``, and ``load_encoded_queries`` calls ``cls(encoded_queries_dir=...)`` by
  keyword (lines 119, 128). Passing the folder positionally to ``super().__init__`` works on both.
* Unchanged, verified: ``encode/__init__.py:55,75`` ``query_encoder_class_map`` / ``document_encoder_class_map``
  (same 17 keys), and the keyword arguments ``search.faiss`` passes to an encoder class (``encoder_dir,
  tokenizer_name, device, prefix, fp16``; 1.6 ``search/faiss/__main__.py:302-308``, 2.4 ``287-293``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kd_pyserini.cards import CARD_FILENAME, _lookup
from kd_pyserini.pyserini_compat.version import is_pyserini2

__all__ = ["route_encoder", "encoder_class_maps", "encoded_queries_keyword", "pop_encoded_queries_dir", "query_encoder_base_kwargs",
           "has_encoded_queries"]


def encoder_class_maps() -> tuple[dict[str, Any], dict[str, Any]]:
    """``(query_encoder_class_map, document_encoder_class_map)`` of ``pyserini.encode`` (the very dicts
    ``pyserini.search.faiss`` and ``pyserini.encode`` read; same names on both lines). Imports pyserini.encode."""
    import pyserini.encode as penc

    return penc.query_encoder_class_map, penc.document_encoder_class_map


def encoded_queries_keyword() -> str:
    """The keyword of ``pyserini.encode.QueryEncoder.__init__`` for pre-encoded queries on the installed line."""
    return "encoded_queries_dir" if is_pyserini2() else "encoded_query_dir"


def pop_encoded_queries_dir(kwargs: dict[str, Any], value: str | None = None) -> str | None:
    """Take the pre-encoded-queries folder out of ``kwargs`` under either spelling (1.x ``encoded_query_dir``,
    2.x ``encoded_queries_dir``, which 2.x's ``QueryEncoder.load_encoded_queries`` passes by keyword); ``value`` (an
    explicit argument) wins."""
    for key in ("encoded_queries_dir", "encoded_query_dir"):
        found = kwargs.pop(key, None)
        if value is None:
            value = found
    return value


def query_encoder_base_kwargs(encoded_queries_dir: str | None) -> dict[str, Any]:
    """Keyword arguments for ``pyserini.encode.QueryEncoder.__init__`` (passing the folder positionally also works on
    both lines)."""
    return {encoded_queries_keyword(): encoded_queries_dir}


def has_encoded_queries(encoder: Any) -> bool:
    """Whether a Pyserini ``QueryEncoder`` was built from pre-encoded queries (1.x ``has_encoded_query``, 2.x
    ``has_encoded_queries``)."""
    return bool(getattr(encoder, "has_encoded_queries", False) or getattr(encoder, "has_encoded_query", False))


#: Pyserini's encoder-class keywords and the model types each class can load (see :func:`route_encoder`).
_CLASS_MODEL_TYPES = {
    "ance": {"roberta"},
    "dpr": {"dpr"},
    "dkrr": {"dpr", "bert"},
    "cosdpr": {"bert"},
    "bpr": {"dpr"},
    "dse": {"qwen2_vl"},
}


def route_encoder(encoder: str) -> bool:
    """Whether ``--encoder encoder`` must be routed to kd_pyserini's classes explicitly.

    True for our cards and for local directories that carry a kd_pyserini card, or whose ``config.json`` model type
    does not fit the Pyserini class that a substring of the path would select.
    """
    if _lookup(encoder) is not None:
        return True
    path = Path(encoder).expanduser()
    if not path.is_dir():
        return False
    if (path / CARD_FILENAME).is_file():
        return True
    keyword = next((k for k in encoder_class_maps()[0] if k in encoder.lower()), None)
    if keyword not in _CLASS_MODEL_TYPES:
        return False
    cfg = path / "config.json"
    model_type = json.loads(cfg.read_text()).get("model_type") if cfg.is_file() else None
    return model_type not in _CLASS_MODEL_TYPES[keyword]
