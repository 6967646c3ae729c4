"""kd_pyserini: the distilled DistilBERT dense retrievers (TAS-B, Margin-MSE) as first-class Pyserini citizens.

``import kd_pyserini`` starts nothing. It installs an import hook (:mod:`kd_pyserini.jvm`) that starts Anserini's JVM
with a Java >= 21 the moment ``pyserini`` or ``jnius`` is first imported, so ``import kd_pyserini`` must come before
any ``pyserini`` import, and commands that never use Lucene (``kd-eval``, ``kd-fuse``, ``kd-train``, dense-only work)
need no Java at all. Everything else is imported lazily when first used.
"""

from __future__ import annotations

from kd_pyserini import jvm as _jvm

_jvm.check_not_preempted()
_jvm.install_import_hook()

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
    if name == "JAVA":  # the Java runtime of Anserini's JVM; asking for it starts the JVM
        return _jvm.start_jvm()
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kd_pyserini' has no attribute {name!r}")
