"""Lazy package exports: a package's public names, imported from their modules only when first asked for.

``import kd_pyserini.teacher`` must stay cheap (no torch, no numpy work, no JVM), yet ``kd_pyserini.teacher.
score_triples`` should work. A package lists its names and the module each lives in, and lets :func:`lazy_exports`
write its module-level ``__getattr__`` (PEP 562)::

    from kd_pyserini.lazy import lazy_exports

    _LAZY = {"score_triples": "kd_pyserini.teacher.score", "read_triples": "kd_pyserini.teacher.triples"}
    __all__ = list(_LAZY)
    __getattr__ = lazy_exports(__name__, _LAZY)

Each access imports the module (cached by Python after the first time) and returns its attribute, so a test that
monkeypatches the module is seen through the package too. The layer check (``tools/layers.py``) reads import
statements: a table must only name modules an ordinary import from the package could name (same room or lower).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package`` serving ``table`` (public name -> dotted module name).

    Args:
        package: the package's ``__name__`` (for the ``AttributeError`` message).
        table: where each lazy name lives.

    Returns:
        ``__getattr__(name)``: the attribute ``name`` of module ``table[name]``.

    Raises:
        AttributeError: (from the returned function) for a name not in ``table``, worded as Python words it.
    """

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    __getattr__.__qualname__ = f"{package}.__getattr__"
    return __getattr__
