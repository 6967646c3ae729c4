"""One base class for every user-facing error of kd_pyserini.

Each :class:`KdError` carries a one-line message that says what is wrong and how to fix it; the command-line tools
(:mod:`kd_pyserini.cli`) print it as ``Error: <message>`` and exit with status 1, without a traceback. Library
callers can catch :class:`KdError` to handle every kd_pyserini failure at once; the concrete classes also derive from
the matching built-in exception (``ValueError``, ``FileNotFoundError``, ``OSError``...), so existing ``except``
clauses keep working.
"""

from __future__ import annotations

__all__ = ["KdError", "UsageError", "one_line"]


class KdError(Exception):
    """Base class: a user-facing error with a one-line message naming the cause and the fix."""


class UsageError(KdError, ValueError):
    """Options that do not fit together (raised by library functions called with impossible arguments)."""


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (its first line; a ``KeyError``'s message without the quotes ``str``
    adds around it)."""
    if isinstance(error, KeyError) and len(error.args) == 1:
        text = str(error.args[0]).strip()
    else:
        text = str(error).strip()
    if not text:
        return type(error).__name__
    first = text.splitlines()[0]
    return first if first else type(error).__name__
