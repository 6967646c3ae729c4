"""Pyserini 2.x's online metadata, with an offline fallback (1.6 has none: its tables are static and its topic/qrels
names are Anserini's Java enums).

* Prebuilt-index tables: 2.x ``prebuilt_index_info.py:20,22,48-118`` made 1.6's static dicts lazy tables that
  ``urlopen`` castorini/prebuilt-indexes JSON, and lines 259-273 subscript ``IMPACT_INDEX_INFO_MSMARCO[...]`` at
  module level: offline, *any* import reaching ``pyserini.util`` (``pyserini.encode``, ``pyserini.search``,
  ``pyserini.search.faiss``, ``pyserini.search.lucene``, ``pyserini.index.lucene``...) raises ``URLError``.
* Topics/qrels registry: 2.x ``search/_base.py:34-69`` ``_load_mapping`` fetches castorini/eval's ``topics.json``,
  ``qrels.json`` and their ``*-aliases.json`` at first use (``urlopen`` without a timeout).

:class:`MetadataOpener` replaces ``urlopen`` in those modules: the network first (30 s timeout when Pyserini gives
none; a copy of the answer is saved under ``<cache>/metadata/<host>/<path>``), then a saved copy
(``$KD_PYSERINI_DATA/pyserini-metadata/`` or the cache), then a fallback: for the prebuilt-index tables, the few
entries kd_pyserini ships in ``prebuilt_indexes.json`` (the MS MARCO v1 passage BM25, TAS-B and Margin-MSE indexes of
its reproduction matrix; :func:`shipped_prebuilt_entries`), else an empty table, plus, while
``prebuilt_index_info`` is being imported only, placeholder records for the keys its module body reads (removed right
after it); for the topics/qrels registry, one built from the local topics/qrels files. After the first network-level failure, later requests skip the network; ONE
:class:`PyseriniOfflineWarning` per process names what is unavailable.
"""

from __future__ import annotations

import ast
import http.client
import io
import json
import os
import threading
import urllib.error
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kd_pyserini.pyserini_compat.local_files import (LOCK, TOPICS_AND_QRELS, local_registry,
                                                      local_topics_and_qrels_dirs, pyserini_cache_home,
                                                      registered_data_dirs)
from kd_pyserini.pyserini_compat.version import pyserini_version

__all__ = ["PyseriniOfflineWarning", "MetadataOpener", "offline_report", "registry_fallback", "prebuilt_fallback",
           "PrebuiltFallback", "shipped_prebuilt_entries", "import_time_keys", "drop_placeholders", "DATA_METADATA",
           "CACHE_METADATA", "SHIPPED_PREBUILT"]

#: Sub-folder of a data directory that may hold saved copies of Pyserini's online metadata (same layout as the cache).
DATA_METADATA = "pyserini-metadata"
#: Sub-folder of Pyserini's cache where this module saves the metadata JSON it fetched online.
CACHE_METADATA = "metadata"
#: kd_pyserini's own offline copy of the prebuilt-index entries its reproduction matrix names (package data).
SHIPPED_PREBUILT = "prebuilt_indexes.json"

_METADATA_PREFIX = "https://raw.githubusercontent.com/castorini/"
#: How long a metadata request may take when Pyserini gives no timeout (2.x ``search/_base.py:62`` gives none).
_DEFAULT_TIMEOUT = 30.0


class PyseriniOfflineWarning(UserWarning):
    """Pyserini's online metadata could not be fetched; cached copies or local files are used instead."""


_FAILURES: list[tuple[str, str]] = []   # (url, error) for every metadata URL served without the network
_OFFLINE = threading.Event()           # set after the first network-level failure: later metadata skips the network
_WARNED = threading.Event()


def offline_report() -> list[tuple[str, str]]:
    """``(url, what was served instead)`` for every Pyserini metadata URL that could not be fetched."""
    with LOCK:
        return list(_FAILURES)


def _metadata_relpath(url: str) -> Path:
    return Path(url.split("://", 1)[1].split("?", 1)[0])


def _metadata_dirs() -> list[Path]:
    data_dirs = registered_data_dirs()
    env = os.environ.get("KD_PYSERINI_DATA")
    roots = [d.parent if d.name == TOPICS_AND_QRELS else d for d in data_dirs]
    if env:
        roots.append(Path(env).expanduser())
    return [*(r / DATA_METADATA for r in roots), pyserini_cache_home() / CACHE_METADATA]


def _saved_copy(url: str) -> Path | None:
    rel = _metadata_relpath(url)
    for d in _metadata_dirs():
        if (d / rel).is_file():
            return d / rel
    return None


def _save_copy(url: str, data: bytes) -> None:
    target = pyserini_cache_home() / CACHE_METADATA / _metadata_relpath(url)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    except OSError:
        pass  # a read-only cache only costs the offline fallback


def _warn_once(url: str, err: BaseException) -> None:
    if _WARNED.is_set():
        return
    _WARNED.set()
    dirs = ", ".join(map(str, local_topics_and_qrels_dirs())) or "(none: set KD_PYSERINI_DATA)"
    warnings.warn(
        f"Pyserini {'.'.join(map(str, pyserini_version()))} cannot reach {url.split('/', 3)[2]} "
        f"({type(err).__name__}: {err}); working offline. Unavailable offline: Pyserini's prebuilt-index tables "
        f"(only the MS MARCO v1 passage BM25/TAS-B/Margin-MSE entries kd_pyserini ships, unless saved copies exist "
        f"under {pyserini_cache_home() / CACHE_METADATA}), and any topics/qrels "
        f"name, prebuilt index or encoded queries not on disk. Topics/qrels names resolve from: {dirs}.",
        PyseriniOfflineWarning, stacklevel=3)


def _is_network_error(err: BaseException) -> bool:
    return not isinstance(err, urllib.error.HTTPError)


class MetadataOpener:
    """A drop-in for ``urllib.request.urlopen`` in Pyserini's metadata modules: the real network first (a copy of
    what it returns is saved), then a saved copy, then ``fallback(url)``; returns a file-like object."""

    def __init__(self, real: Callable[..., Any], fallback: Callable[[str], tuple[bytes, str] | None]):
        self._real = real
        self._fallback = fallback

    def __call__(self, url: Any, *args: Any, **kwargs: Any) -> Any:
        target = url if isinstance(url, str) else getattr(url, "full_url", "")
        if not target.startswith(_METADATA_PREFIX):
            return self._real(url, *args, **kwargs)
        if not _OFFLINE.is_set():
            if not args and "timeout" not in kwargs:
                kwargs["timeout"] = _DEFAULT_TIMEOUT
            try:
                with self._real(url, *args, **kwargs) as response:
                    data = response.read()
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
                if _is_network_error(err):
                    _OFFLINE.set()
                error: BaseException = err
            else:
                _save_copy(target, data)
                return io.BytesIO(data)
        else:
            error = urllib.error.URLError("offline (an earlier request failed)")
        saved = _saved_copy(target)
        if saved is not None:
            data, served = saved.read_bytes(), f"saved copy {saved}"
        else:
            fallback = self._fallback(target)
            if fallback is None:
                raise error
            data, served = fallback
        with LOCK:
            _FAILURES.append((target, served))
        _warn_once(target, error)
        return io.BytesIO(data)


def registry_fallback() -> Callable[[str], tuple[bytes, str] | None]:
    """Offline content for castorini/eval's registry files, built from the local topics/qrels files."""

    def fallback(url: str) -> tuple[bytes, str] | None:
        name = url.rsplit("/", 1)[-1]
        kinds = {"topics.json": ("topics", 0), "topics-aliases.json": ("topics", 1),
                 "qrels.json": ("qrels", 0), "qrels-aliases.json": ("qrels", 1)}
        if name not in kinds:
            return None
        kind, part = kinds[name]
        table = local_registry(kind)[part]
        return json.dumps(table).encode(), f"built from the local {kind} files ({len(table)} entries)"

    return fallback


def import_time_keys(source_path: str | None) -> set[str]:
    """String keys that ``prebuilt_index_info.py`` subscripts while it is being imported (2.4.0: line 270, 272)."""
    try:
        tree = ast.parse(Path(source_path).read_text(encoding="utf-8")) if source_path else None
    except (OSError, SyntaxError, ValueError):
        return set()
    keys: set[str] = set()
    for stmt in tree.body if tree else ():
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for node in ast.walk(stmt):
            if (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
                    and isinstance(node.slice.value, str)):
                keys.add(node.slice.value)
    return keys


_PLACEHOLDER_NOTE = "unavailable offline (kd_pyserini placeholder: Pyserini's prebuilt-index metadata was unreachable)"


def shipped_prebuilt_entries() -> dict[str, Any]:
    """kd_pyserini's offline prebuilt-index entries, by file of castorini/prebuilt-indexes, in 2.x's shapes:
    ``{"lucene/msmarco-v1-passage-inverted.json": [record, ...], "faiss/msmarco-faiss.json": {name: record}}``."""
    from importlib.resources import files

    try:
        text = (files("kd_pyserini.pyserini_compat") / SHIPPED_PREBUILT).read_text(encoding="utf-8")
        return dict(json.loads(text)["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # a broken install only costs these offline entries


def _prebuilt_file(url: str) -> str:
    """``lucene/x.json`` of ``https://raw.githubusercontent.com/castorini/prebuilt-indexes/<commit>/lucene/x.json``."""
    return url.split("/prebuilt-indexes/", 1)[1].split("?", 1)[0].split("/", 1)[-1]


class PrebuiltFallback:
    """Offline content for a castorini/prebuilt-indexes file: kd_pyserini's shipped entries for it, else an empty
    table; Lucene tables (lists) also get placeholder records for ``keys`` (the names ``prebuilt_index_info`` reads
    while it is imported). Clear ``keys`` once the import is done, so tables loaded later hold no placeholders."""

    def __init__(self, keys: set[str]):
        self.keys = set(keys)

    def __call__(self, url: str) -> tuple[bytes, str] | None:
        if "/prebuilt-indexes/" not in url:
            return None
        shipped = shipped_prebuilt_entries().get(_prebuilt_file(url))
        if "/faiss/" in url:  # _LazyPrebuiltIndexInfoJson: a dict
            table = dict(shipped) if isinstance(shipped, dict) else {}
            return json.dumps(table).encode(), _served(list(table))
        # _LazyLucenePrebuiltInvertedIndexJson: a list of records
        records = list(shipped) if isinstance(shipped, list) else []
        names = [r["name"] for r in records]
        placeholders = [{"name": k, "description": _PLACEHOLDER_NOTE, "filename": "", "urls": [], "md5": "",
                         "size": 0} for k in sorted(self.keys - set(names))]
        return json.dumps(records + placeholders).encode(), _served(names)


def _served(names: list[str]) -> str:
    return f"kd_pyserini's shipped entries ({', '.join(names)})" if names else "empty table"


def prebuilt_fallback(keys: set[str]) -> PrebuiltFallback:
    return PrebuiltFallback(keys)


def _is_placeholder(value: Any) -> bool:
    return isinstance(value, dict) and value.get("description") == _PLACEHOLDER_NOTE


def drop_placeholders(module: Any) -> None:
    """Remove the import-time placeholders from the lazy tables and from the alias dicts that captured them at import
    (2.4.0: ``IMPACT_INDEX_INFO_MSMARCO_ALIASES``), so offline a name is either really known or unknown."""
    for value in list(vars(module).values()):
        info = getattr(value, "_info", None)
        for table in (info, value):
            if isinstance(table, dict):
                for key in [k for k, v in table.items() if _is_placeholder(v)]:
                    del table[key]
