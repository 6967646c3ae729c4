"""The one entry point that makes Pyserini work offline and local-first: an import hook for the few Pyserini modules
that differ (:func:`prepare_import`) and :func:`install_local_topics_and_qrels`.

kd_pyserini's JVM start (:func:`kd_pyserini.jvm.start_jvm`, run by the ``sys.meta_path`` hook the moment ``pyserini``
is first imported) calls both right after the JVM is up, i.e. before any Pyserini module body runs, which is what
2.x's network-at-import needs. Both are idempotent, import nothing and patch already-loaded modules in place.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kd_pyserini.pyserini_compat.faiss_encoders import patch_faiss_searcher
from kd_pyserini.pyserini_compat.local_files import local_topics_and_qrels_dirs, register_local
from kd_pyserini.pyserini_compat.metadata import (MetadataOpener, drop_placeholders, import_time_keys,
                                                   prebuilt_fallback)
from kd_pyserini.pyserini_compat.server import patch_server_backend, patch_server_config
from kd_pyserini.pyserini_compat.topics_and_qrels import patch_base_1x, patch_base_2x
from kd_pyserini.pyserini_compat.version import is_pyserini2

__all__ = ["prepare_import", "install_local_topics_and_qrels"]


def install_local_topics_and_qrels(data_dir: str | os.PathLike | None = None,
                                   aliases: Mapping[str, str] | None = None) -> list[Path]:
    """Make Pyserini's topic/qrels loaders (``pyserini.search.get_topics``, ``get_qrels_file``, ``get_qrels``, and so
    every CLI's ``--topics NAME`` and ``trec_eval``'s qrels name) read local files first, on 1.x and 2.x.

    ``data_dir`` is a folder holding ``topics-and-qrels/`` (or that folder itself) with Pyserini's file names
    (``topics.dl19-passage.txt``, ``qrels.dl19-passage.txt``...); default ``$KD_PYSERINI_DATA``. ``aliases`` maps
    extra names to file names (``{"trec-dl-19": "topics.dl19-passage.txt"}``); they are used by the offline 2.x
    registry, which otherwise derives names from the file names (1.x names come from Anserini's enums).
    Installs :func:`prepare_import`'s hook, or patches the loaded modules. Idempotent; returns the folders searched.
    """
    changed = register_local(data_dir, aliases)
    prepare_import()
    base = sys.modules.get("pyserini.search._base")
    if changed and base is not None and hasattr(base, "_topics_mapping"):  # 2.x: rebuilt with them at next use
        base._topics_mapping = None
        base._qrels_mapping = None
    return local_topics_and_qrels_dirs()


def _exec_prebuilt_index_info(loader: Any, module: Any) -> None:
    fallback = prebuilt_fallback(import_time_keys(getattr(module.__spec__, "origin", None)))
    opener = MetadataOpener(urllib.request.urlopen, fallback)
    real = urllib.request.urlopen
    urllib.request.urlopen = opener  # the module's `from urllib.request import urlopen` binds the opener
    try:
        loader.exec_module(module)
    finally:
        urllib.request.urlopen = real
        fallback.keys.clear()  # tables loaded from now on get no placeholders
    drop_placeholders(module)


def _exec_faiss_searcher(loader: Any, module: Any) -> None:
    loader.exec_module(module)
    patch_faiss_searcher(module)


def _exec_server_config(loader: Any, module: Any) -> None:
    loader.exec_module(module)
    patch_server_config(module)


def _exec_server_backend(loader: Any, module: Any) -> None:
    loader.exec_module(module)
    patch_server_backend(module)


def _exec_search_base(loader: Any, module: Any) -> None:
    loader.exec_module(module)
    (patch_base_2x if is_pyserini2() else patch_base_1x)(module)


_HOOKS: dict[str, Callable[[Any, Any], None]] = {
    "pyserini.search._base": _exec_search_base,
    "pyserini.search.faiss._searcher": _exec_faiss_searcher,
}
_HOOKS_2X: dict[str, Callable[[Any, Any], None]] = {
    "pyserini.prebuilt_index_info": _exec_prebuilt_index_info,
    "pyserini.server.config": _exec_server_config,
    "pyserini.server.backend": _exec_server_backend,
}
#: what to patch in place in a module imported before the hook was installed
_IN_PLACE: dict[str, Callable[[Any], None]] = {
    "pyserini.search.faiss._searcher": patch_faiss_searcher,
    "pyserini.server.config": patch_server_config,
    "pyserini.server.backend": patch_server_backend,
}


class _PatchingLoader(importlib.abc.Loader):
    """Wraps a module's loader so that ``hook(loader, module)`` executes it (and patches it)."""

    def __init__(self, loader: Any, hook: Callable[[Any, Any], None]):
        self._loader = loader
        self._hook = hook

    def create_module(self, spec):  # noqa: ANN001, ANN201
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:  # noqa: ANN001
        self._hook(self._loader, module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_code, is_package... for tracebacks and tools
        return getattr(self._loader, name)


class _PyseriniPatchFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for the few Pyserini modules in ``_HOOKS`` it asks the other finders and wraps the
    loader they return."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, ANN201  (importlib protocol)
        hook = _active_hooks().get(fullname)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if isinstance(finder, _PyseriniPatchFinder) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader, hook)
                return spec
        return None

    def invalidate_caches(self) -> None:
        return None


def _active_hooks() -> dict[str, Callable[[Any, Any], None]]:
    return {**_HOOKS, **_HOOKS_2X} if is_pyserini2() else dict(_HOOKS)


def prepare_import() -> None:
    """Make Pyserini's network-at-import paths fall back to what is on disk, and its topic/qrels loaders read local
    files first (see :func:`install_local_topics_and_qrels`). Call it once the JVM is up and before (or after) any
    ``pyserini`` import; idempotent, imports nothing.

    Online, Pyserini behaves as before (a copy of the metadata it fetches is saved under
    ``<cache>/metadata/``); offline, each metadata file is served from a saved copy (``$KD_PYSERINI_DATA/
    pyserini-metadata/`` or that cache), else a prebuilt-index table holding only the entries kd_pyserini ships
    (``prebuilt_indexes.json``; none for most files), or for the topics/qrels registry one built from the local
    files, and one :class:`PyseriniOfflineWarning` says what is unavailable.
    """
    if not any(isinstance(f, _PyseriniPatchFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PyseriniPatchFinder())
    # Modules imported before the hook existed: patch in place.
    base = sys.modules.get("pyserini.search._base")
    if base is not None:
        (patch_base_2x if is_pyserini2() else patch_base_1x)(base)
    for name, patch in _IN_PLACE.items():  # string encoders, kd indexes behind the servers
        loaded = sys.modules.get(name)
        if loaded is not None:
            patch(loaded)
    pii = sys.modules.get("pyserini.prebuilt_index_info")
    if pii is not None and is_pyserini2() and not isinstance(getattr(pii, "urlopen", None), MetadataOpener):
        pii.urlopen = MetadataOpener(pii.urlopen, prebuilt_fallback(set()))

