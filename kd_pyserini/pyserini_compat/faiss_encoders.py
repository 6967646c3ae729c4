"""String encoders in Pyserini's ``FaissSearcher`` (both lines): ``FaissSearcher(index, "all-minilm-l6-v2")``.

Pyserini builds a query encoder from a string in ``FaissSearcher._init_encoder_from_str`` (1.6
``search/faiss/_searcher.py:350``, 2.4 ``:353``): a substring match (``dpr``, ``tct_colbert``, ``ance``,
``sentence``) else ``AutoQueryEncoder(name)``, which goes to the Hugging Face hub. That path never reaches
kd_pyserini's encoders, so a kd card name fails, and TAS-B loads with the wrong defaults. Everything that takes a
string encoder goes through it: ``FaissSearcher(index, "...")`` in Python, ``HybridSearcher`` (it takes a
``FaissSearcher``), and on 2.x the REST/MCP server's ``encoder:`` (``server/utils.py`` ``create_searcher``).

:func:`patch_faiss_searcher` (run by the import hook when ``pyserini.search.faiss._searcher`` is first imported, or
in place) changes two things, and nothing for strings that are not kd_pyserini's:

* a string that :func:`kd_pyserini.pyserini_compat.encoders.route_encoder` routes (a kd card name or alias, a seed model's hub id,
  a folder with a ``kd_pyserini_card.toml`` such as a ``kd-train`` student, or a folder whose model type does not fit
  the class Pyserini's substring would pick) becomes a :class:`kd_pyserini.encoders.KDQueryEncoder`; on a kd index
  (one with ``kd_pyserini.json``) the encoder is checked against the one that built it first
  (:func:`kd_pyserini.index.check_index_compatible`: a wrong encoder is one clear error, not a silent bad ranking);
* ``FaissSearcher(kd_index)`` with the encoder left out uses the encoder its ``kd_pyserini.json`` records (an
  explicit ``None`` keeps Pyserini's meaning: search with vectors only).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

__all__ = ["recorded_encoder", "kd_query_encoder", "patch_faiss_searcher"]

log = logging.getLogger(__name__)
_RECORDED = object()  # FaissSearcher(index) with no encoder: the one kd_pyserini.json records


def recorded_encoder(index_dir: str | Path) -> str | None:
    """The encoder a kd dense index records in its ``kd_pyserini.json``, as a string every kd loader accepts (the
    card name when it is a shipped card, else its model id or folder), or ``None`` when the folder is no kd dense
    index."""
    from kd_pyserini.cards import _lookup
    from kd_pyserini.index_meta import FORMAT_NAME, read_metadata

    try:
        meta = read_metadata(index_dir)
    except (OSError, ValueError):
        return None
    if not meta or meta.get("format") != FORMAT_NAME:
        return None
    built = meta.get("encoder") or {}
    name, model_id = built.get("name"), built.get("model_id")
    if name and _lookup(str(name)) is not None:
        return str(name)
    return str(model_id or name) if (model_id or name) else None


def _routes(encoder: str) -> bool:
    from kd_pyserini.pyserini_compat.encoders import route_encoder

    try:
        return route_encoder(encoder)
    except (OSError, ValueError):  # an unreadable config.json: leave it to Pyserini's own path
        return False


def kd_query_encoder(encoder: str, index_dir: str | Path | None = None) -> Any:
    """A :class:`~kd_pyserini.encoders.KDQueryEncoder` for ``encoder`` when kd_pyserini handles that string, else
    ``None`` (Pyserini's own path goes on). With ``index_dir`` a kd index, the encoder must be the one that built it.

    Raises:
        kd_pyserini.index.IncompatibleIndexError: another encoder built the index (one line, naming both).
    """
    if not isinstance(encoder, str) or not _routes(encoder):
        return None
    from kd_pyserini.cards import get_card
    from kd_pyserini.encoders import get_query_encoder

    card = get_card(encoder)
    if index_dir is not None:  # before loading: a wrong encoder is refused without touching its weights
        from kd_pyserini.index_meta import check_index_compatible, read_metadata

        if read_metadata(index_dir) is not None:
            check_index_compatible(index_dir, card)
    return get_query_encoder(card)


def patch_faiss_searcher(module: Any) -> None:
    """Patch ``pyserini.search.faiss._searcher.FaissSearcher`` in place (idempotent; see the module docstring).
    Subclasses with their own ``_init_encoder_from_str`` (``BinaryDenseFaissSearcher``) keep theirs."""
    cls = getattr(module, "FaissSearcher", None)
    if cls is None or getattr(cls, "_kd_pyserini_patched", False):
        return
    pyserini_from_str = cls.__dict__["_init_encoder_from_str"].__func__

    def _init_encoder_from_str(encoder: str) -> Any:
        ours = kd_query_encoder(encoder)
        return ours if ours is not None else pyserini_from_str(encoder)

    pyserini_init = cls.__init__

    @functools.wraps(pyserini_init)
    def __init__(self, index_dir: str, query_encoder: Any = _RECORDED, *args: Any, **kwargs: Any) -> None:
        own = getattr(type(self), "_init_encoder_from_str", None) is _init_encoder_from_str
        if query_encoder is _RECORDED:
            query_encoder = recorded_encoder(index_dir) if own and index_dir else None
            if query_encoder is None:
                raise TypeError(f"{type(self).__name__}() needs a query encoder (an encoder object, a name, or None "
                                f"to search with vectors only); {index_dir} records none (no kd_pyserini.json)")
            log.info("FaissSearcher(%s): the encoder its kd_pyserini.json records, %s", index_dir, query_encoder)
        if own and isinstance(query_encoder, str):
            ours = kd_query_encoder(query_encoder, index_dir)
            query_encoder = ours if ours is not None else query_encoder
        pyserini_init(self, index_dir, query_encoder, *args, **kwargs)

    cls._init_encoder_from_str = staticmethod(_init_encoder_from_str)
    cls.__init__ = __init__
    cls._kd_pyserini_patched = True
