"""kd indexes behind Pyserini 2.x's own servers (``python -m pyserini.server.rest`` and ``pyserini.server.mcp``).

Both servers share ``server/backend.py``'s ``SharedSearchBackend``, configured by a YAML file that maps an alias to
``{path, index_type, encoder, base_index}`` (``server/config.py`` ``_parse_indexes``). Pyserini 1.6 has no server.
What kd_pyserini changes (through the import hook, nothing else):

* ``config._parse_indexes``: an entry whose ``path`` is a kd dense index (``kd_pyserini.json`` of format
  ``kd_pyserini.faiss``) gets ``index_type: faiss`` and the ``encoder`` its metadata records when the config names
  none (Pyserini requires one), and, when it names no ``base_index``, the ``tf`` alias of the same config built from
  the same corpus (same corpus files and sizes in both ``kd_pyserini.json``), which is where the servers read the
  documents of the hits from. A kd dense index can also be given as a bare path string.
* ``SharedSearchBackend._ensure_index``: 2.4 opens a configured non-``tf`` index only with
  ``--no-prebuilt-indexes``; without it (always, for the MCP server, which has no such option) it looks the alias up
  in the prebuilt-index tables (``backend.py:386``, a ``KeyError``). A configured alias that is no prebuilt name is
  opened the way ``--no-prebuilt-indexes`` opens it; prebuilt names behave as before.
* ``SharedSearchBackend._build_searcher``: why an index could not be opened is logged as one line (the servers only
  answer ``Unable to open index: NAME``).
* ``get_indexes`` / ``get_status`` (the MCP tools ``list_indexes`` / ``get_index``): the config's aliases are listed
  first, and a configured alias reports its entry, with or without ``--no-prebuilt-indexes``.

The encoder string itself reaches kd_pyserini's encoders through ``FaissSearcher``
(:mod:`kd_pyserini.pyserini_compat.faiss_encoders`).
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from typing import Any

__all__ = ["complete_index_entries", "patch_server_config", "patch_server_backend"]

log = logging.getLogger(__name__)
_local = threading.local()


def _metadata(path: Any, config_parent: Path) -> tuple[Path, dict[str, Any] | None]:
    from kd_pyserini.index_meta import read_metadata

    p = Path(str(path)).expanduser()
    if not p.is_absolute():
        p = (config_parent / p).resolve()
    try:
        return p, read_metadata(p) if p.is_dir() else None
    except (OSError, ValueError):
        return p, None


def _corpus_key(meta: dict[str, Any] | None) -> Any:
    corpus = (meta or {}).get("corpus") or {}
    files = corpus.get("files")
    if not files:
        return None
    return corpus.get("num_docs"), tuple((f.get("name"), f.get("size")) for f in files)


def _check_encoder(alias: Any, index_dir: Path, encoder: Any) -> None:
    """A config that names another encoder than the one that built a kd index fails when the config is read (the
    server would otherwise start and answer every search with ``Unable to open index``)."""
    from kd_pyserini.errors import one_line
    from kd_pyserini.index_meta import IncompatibleIndexError, check_index_compatible
    from kd_pyserini.pyserini_compat.faiss_encoders import _routes

    if not isinstance(encoder, str) or not _routes(encoder):
        return  # Pyserini's own encoder: FaissSearcher compares nothing, neither do we
    from kd_pyserini.cards import get_card

    try:
        check_index_compatible(index_dir, get_card(encoder))
    except (IncompatibleIndexError, OSError, ValueError) as e:
        raise ValueError(f'Index alias "{alias}": {one_line(e)} (or leave "encoder" out: kd_pyserini uses the one '
                         "the index records)") from None


def complete_index_entries(raw_indexes: Any, config_parent: Path) -> Any:
    """The ``indexes:`` mapping of a server config with kd dense indexes completed (see the module docstring); other
    entries, and anything that is not a mapping, are returned unchanged (Pyserini reports what is wrong with them)."""
    if not isinstance(raw_indexes, dict):
        return raw_indexes
    from kd_pyserini.index_meta import BM25_FORMAT_NAME, FORMAT_NAME
    from kd_pyserini.pyserini_compat.faiss_encoders import recorded_encoder

    out: dict[Any, Any] = {}
    dense: list[tuple[Any, dict[str, Any]]] = []
    sparse: dict[Any, Any] = {}
    for alias, entry in raw_indexes.items():
        path = entry if isinstance(entry, str) else entry.get("path") if isinstance(entry, dict) else None
        resolved, meta = _metadata(path, config_parent) if path else (None, None)
        fmt = (meta or {}).get("format")
        if fmt == FORMAT_NAME:
            entry = {"path": entry} if isinstance(entry, str) else dict(entry)
            entry.setdefault("index_type", "faiss")
            if entry["index_type"] == "faiss" and not entry.get("encoder"):
                entry["encoder"] = recorded_encoder(resolved)
            elif entry["index_type"] == "faiss":
                _check_encoder(alias, resolved, entry["encoder"])
            if entry["index_type"] == "faiss" and not entry.get("base_index"):
                dense.append((alias, meta))
        elif fmt == BM25_FORMAT_NAME and (isinstance(entry, str) or entry.get("index_type", "tf") == "tf"):
            sparse[alias] = _corpus_key(meta)
        out[alias] = entry
    for alias, meta in dense:
        key = _corpus_key(meta)
        same = [a for a, k in sparse.items() if key is not None and k == key]
        if len(same) == 1:
            out[alias]["base_index"] = str(same[0])
            log.info("server config: index %r reads its documents from %r (same corpus)", alias, same[0])
        elif len(same) > 1:
            log.warning("server config: index %r has no base_index and %d BM25 indexes of its corpus (%s); set "
                        "base_index to one of them", alias, len(same), ", ".join(map(str, same)))
    return out


def patch_server_config(module: Any) -> None:
    """Wrap ``pyserini.server.config._parse_indexes`` (idempotent)."""
    original = getattr(module, "_parse_indexes", None)
    if original is None or getattr(original, "_kd_pyserini", False):
        return

    @functools.wraps(original)
    def _parse_indexes(raw_indexes: Any, config_parent: Path) -> Any:
        return original(complete_index_entries(raw_indexes, Path(config_parent)), config_parent)

    _parse_indexes._kd_pyserini = True
    module._parse_indexes = _parse_indexes


def patch_server_backend(module: Any) -> None:
    """Patch ``pyserini.server.backend.SharedSearchBackend`` in place (idempotent)."""
    cls = getattr(module, "SharedSearchBackend", None)
    if cls is None or getattr(cls, "_kd_pyserini_patched", False):
        return
    from kd_pyserini.errors import one_line

    lookup_index_type = module.lookup_index_type

    def _get(self: Any) -> bool:
        own = self.__dict__.get("_kd_no_prebuilt_indexes", self.__dict__.get("_no_prebuilt_indexes", False))
        return bool(own or getattr(_local, "configured_only", False))

    def _set(self: Any, value: bool) -> None:
        self.__dict__["_kd_no_prebuilt_indexes"] = value

    ensure = cls._ensure_index

    @functools.wraps(ensure)
    def _ensure_index(self: Any, index_name: str, *, allow_local: bool = False, ef_search: int | None = None,
                      encoder: str | None = None) -> Any:
        configured = (allow_local and index_name in getattr(self, "_local_indexes", {})
                      and lookup_index_type(index_name) is None)
        if not configured or getattr(_local, "configured_only", False):
            return ensure(self, index_name, allow_local=allow_local, ef_search=ef_search, encoder=encoder)
        _local.configured_only = True  # this thread, this call: open it as --no-prebuilt-indexes does
        try:
            return ensure(self, index_name, allow_local=allow_local, ef_search=ef_search, encoder=encoder)
        finally:
            _local.configured_only = False

    pyserini_get_indexes, pyserini_get_status = cls.get_indexes, cls.get_status

    @functools.wraps(pyserini_get_indexes)
    def get_indexes(self: Any, index_type: str) -> list[str]:
        found = pyserini_get_indexes(self, index_type)
        configured = [a for a, c in getattr(self, "_local_indexes", {}).items() if c.index_type == index_type]
        return [*configured, *(n for n in found if n not in configured)]

    @functools.wraps(pyserini_get_status)
    def get_status(self: Any, index_name: str) -> dict[str, Any]:
        if index_name not in getattr(self, "_local_indexes", {}) or lookup_index_type(index_name) is not None:
            return pyserini_get_status(self, index_name)
        _local.configured_only = True  # the configured entry, as --no-prebuilt-indexes reports it
        try:
            return pyserini_get_status(self, index_name)
        finally:
            _local.configured_only = False

    build = cls._build_searcher

    @functools.wraps(build)
    def _build_searcher(self: Any, config: Any, *, index_type: str, local_path: str | None = None) -> Any:
        try:
            return build(self, config, index_type=index_type, local_path=local_path)
        except Exception as e:
            log.error("could not open index %r (%s, %s): %s", config.name, index_type, local_path or "prebuilt",
                      one_line(e))
            raise

    cls._no_prebuilt_indexes = property(_get, _set)
    cls._ensure_index = _ensure_index
    cls._build_searcher = _build_searcher
    cls.get_indexes = get_indexes
    cls.get_status = get_status
    cls._kd_pyserini_patched = True
