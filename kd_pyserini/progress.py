"""Progress bars for long jobs, one convention everywhere: on stderr, and off when stderr is not a terminal.

Every long-running function takes ``progress: bool | None``: ``True`` shows a bar, ``False`` hides it, ``None`` (the
default) shows it only when stderr is a terminal, so logs and pipes stay clean. The command-line tools pass their
``--progress/--no-progress`` option straight through.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["progress_enabled", "progress_bar", "quiet_third_party", "PROGRESS_ENV"]

#: set by a parent command (kd-repro) so that its children show their bars although their stderr is a pipe.
PROGRESS_ENV = "KD_PYSERINI_PROGRESS"


def progress_enabled(progress: bool | None = None) -> bool:
    """Resolve a ``progress`` setting: explicit ``True``/``False`` win; ``None`` follows ``$KD_PYSERINI_PROGRESS``
    (``1``/``0``, set by a parent command that passes its children's progress through), else whether stderr is a
    terminal."""
    if progress is not None:
        return bool(progress)
    env = os.environ.get(PROGRESS_ENV)
    if env in ("0", "1"):
        return env == "1"
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress_bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str | None = None,
                 unit: str = "it", progress: bool | None = None, **kwargs: Any):
    """A ``tqdm`` bar on stderr, disabled unless :func:`progress_enabled` says otherwise.

    Usable as an iterator wrapper or, with ``iterable=None``, as a manual bar (``update(n)``, ``close()``).
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr,
                disable=not progress_enabled(progress), dynamic_ncols=True, **kwargs)


@contextlib.contextmanager
def quiet_third_party(progress: bool | None = None) -> Iterator[None]:
    """Silence the progress bars of transformers and huggingface_hub (e.g. "Writing model shards", "Loading
    weights") while the block runs, unless ``progress`` resolves to on."""
    if progress_enabled(progress):
        yield
        return
    undo = []
    try:
        from transformers.utils import logging as hf_logging

        if hf_logging.is_progress_bar_enabled():
            hf_logging.disable_progress_bar()
            undo.append(hf_logging.enable_progress_bar)
    except ImportError:  # pragma: no cover
        pass
    try:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

        if not are_progress_bars_disabled():
            disable_progress_bars()
            undo.append(enable_progress_bars)
    except ImportError:  # pragma: no cover
        pass
    try:
        yield
    finally:
        for fn in undo:
            fn()
