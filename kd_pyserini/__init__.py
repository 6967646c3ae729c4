"""kd_pyserini: the distilled DistilBERT dense retrievers (TAS-B, Margin-MSE) as first-class Pyserini citizens.

Importing this package starts Anserini's JVM with a Java >= 21 (see :mod:`kd_pyserini.jvm`), so it must be imported
before any ``pyserini`` module. That is the package's only import-time side effect; everything else is imported
lazily when first used.
"""

from __future__ import annotations

from kd_pyserini.jvm import start_jvm as _start_jvm

JAVA = _start_jvm()

__version__ = "0.1.0"

_LAZY = {
    "get_topics": "kd_pyserini.resources",
    "get_qrels": "kd_pyserini.resources",
    "get_query_encoder": "kd_pyserini.encoders",
    "get_document_encoder": "kd_pyserini.encoders",
    "get_card": "kd_pyserini.cards",
    "list_cards": "kd_pyserini.cards",
}

__all__ = ["JAVA", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kd_pyserini' has no attribute {name!r}")
