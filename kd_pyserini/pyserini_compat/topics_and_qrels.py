"""Pyserini's topics/qrels loaders made local-first on both lines (installed by
:mod:`kd_pyserini.pyserini_compat.import_hook`), and topics from a file.

* 1.6 (``search/_base.py:34-37,69-905,908-987``): names map to Anserini 1.7.1's Java enums ``Topics`` / ``Qrels``;
  ``get_topics`` / ``get_qrels_file`` call ``TopicReader.getTopicsWithStringIds(enum)`` /
  ``RelevanceJudgments.getQrelsPath`` (``_base.py:923,975``), which read ``<cwd>/<file>``, then
  ``${user.home}/.cache/pyserini/topics-and-qrels/<file>``, then download from
  ``castorini/anserini-tools/master/topics-and-qrels/``, a path that no longer exists upstream (castorini/eval's
  README: "At commit 43add83 ... topics-and-qrels/ was refactored"), so 1.6 needs local files even online.
  :func:`patch_base_1x` wraps both to read the enum's file from the local folders first (names only 2.x knows,
  such as ``msmarco-passage.dev-subset``, come from the local registry).
* 2.x (``search/_base.py:34-69,96-127,146-248``): Python resolves names with the castorini/eval registry, then
  ``_download_and_cache`` looks in ``<cache>/topics|qrels`` and downloads. :func:`patch_base_2x` gives the
  registry's ``urlopen`` the offline fallback, makes ``_download_and_cache`` read local files first (a failed
  download becomes a ``FileNotFoundError`` naming the folders searched) and merges the local files' names into the
  registry (``setdefault``, online too).
* Topics from a file (:func:`load_topics_from_file`): 1.6 ``get_topics_with_reader(reader_class, file)``
  (``search/_base.py:940-958``), 2.x ``load_topics_from_file(file, reader_class)`` (``search/_base.py:186-192``); the
  Java method ``TopicReader.getTopicsWithStringIdsFromFileWithTopicReaderClass(String, String)`` swapped its
  arguments between Anserini 1.7.1 (reader, file) and 2.3.0 (file, reader).
"""

from __future__ import annotations

import functools
import http.client
import os
import sys
import urllib.error
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kd_pyserini.pyserini_compat.local_files import (find_local, local_registry, local_topics_and_qrels_dirs,
                                                      lookup_local)
from kd_pyserini.pyserini_compat.metadata import MetadataOpener, registry_fallback

__all__ = ["patch_base_1x", "patch_base_2x", "load_topics_from_file"]

_READER = "io.anserini.search.topicreader."

def _parse_topics(jtopics: Any) -> dict[Any, dict[str, str]]:
    """Pyserini's conversion of a Java ``Map<String, Map<String, String>>`` (``search/_base.py`` of both lines)."""
    out: dict[Any, dict[str, str]] = {}
    for topic in jtopics.keySet().toArray():
        key = int(topic) if topic.isdigit() else topic
        fields = jtopics.get(topic)
        out[key] = {f: fields.get(f) for f in fields.keySet().toArray()}
    return out


def patch_base_1x(base: Any) -> None:
    """1.x: ``get_topics`` / ``get_qrels_file`` read the local file named by Anserini's enum before Anserini's
    cache and download."""
    orig_topics = getattr(base.get_topics, "__wrapped__", base.get_topics)
    orig_qrels = getattr(base.get_qrels_file, "__wrapped__", base.get_qrels_file)

    @functools.wraps(orig_topics)
    def get_topics(collection_name):  # noqa: ANN001, ANN202  (Pyserini's signature)
        enum = base.topics_mapping.get(collection_name)
        if enum is not None:
            local, reader = find_local(str(enum.path)), enum.readerClass.getName()
        else:  # a name only 2.x knows (msmarco-passage.dev-subset...): the offline registry of the local files
            local, reader = lookup_local("topics", collection_name)
        if local is None:
            return orig_topics(collection_name)
        jtopics = base.JTopicReader.getTopicsWithStringIdsFromFileWithTopicReaderClass(
            reader, str(local))  # Anserini 1.7.1 order: (reader class, file)
        if jtopics is None:
            raise ValueError(f"Unable to read topics {collection_name} from {local}")
        return _parse_topics(jtopics)

    @functools.wraps(orig_qrels)
    def get_qrels_file(collection_name):  # noqa: ANN001, ANN202
        enum = base.qrels_mapping.get(collection_name)
        local = find_local(str(enum.path)) if enum is not None else lookup_local("qrels", collection_name)[0]
        return str(local) if local is not None else orig_qrels(collection_name)

    _rebind(base, {"get_topics": (orig_topics, get_topics), "get_qrels_file": (orig_qrels, get_qrels_file)})


def patch_base_2x(base: Any) -> None:
    """2.x: the registry's ``urlopen`` falls back offline; ``_download_and_cache`` reads local files first."""
    if not isinstance(getattr(base, "urlopen", None), MetadataOpener):
        base.urlopen = MetadataOpener(base.urlopen, registry_fallback())
    orig = getattr(base._download_and_cache, "__wrapped__", base._download_and_cache)

    @functools.wraps(orig)
    def _download_and_cache(url, filename, cache_path):  # noqa: ANN001, ANN202
        local = find_local(filename)
        if local is not None:
            return local
        try:
            return orig(url, filename, cache_path)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            looked = [str(d) for d in local_topics_and_qrels_dirs()] + [str(cache_path)]
            raise FileNotFoundError(f"{Path(filename).name} is not in {', '.join(looked)} and could not be "
                                    f"downloaded from {url} ({type(err).__name__}: {err})") from err

    replacements = {"_download_and_cache": (orig, _download_and_cache)}
    for kind in ("topics", "qrels"):
        name = f"_load_{kind}_mapping"
        loader = getattr(base, name, None)
        if loader is not None:
            orig_loader = getattr(loader, "__wrapped__", loader)
            replacements[name] = (orig_loader, _merging_loader(orig_loader, kind))
    _rebind(base, replacements)


def _merging_loader(orig: Callable[[], dict[str, Any]], kind: str) -> Callable[[], dict[str, Any]]:
    """2.x ``_load_topics_mapping`` / ``_load_qrels_mapping`` plus the local files' entries for names the registry
    lacks (so a local ``topics.NAME.tsv`` is ``--topics NAME`` online too)."""

    @functools.wraps(orig)
    def load() -> dict[str, Any]:
        mapping = orig()
        local, aliases = local_registry(kind)
        for name, entry in local.items():
            mapping.setdefault(name, entry)
        for canonical, names in aliases.items():
            for name in names:
                mapping.setdefault(name, mapping[canonical])
        return mapping

    return load


def _rebind(base: Any, replacements: Mapping[str, tuple[Any, Any]]) -> None:
    """Set the new functions on ``base`` and wherever a loaded pyserini module imported the old ones by name."""
    for name, (old, new) in replacements.items():
        current = getattr(base, name)
        setattr(base, name, new)
        for mod_name, mod in list(sys.modules.items()):
            if mod is None or not (mod_name == "pyserini" or mod_name.startswith("pyserini.")):
                continue
            if getattr(mod, name, None) in (old, current) and mod is not base:
                setattr(mod, name, new)


def load_topics_from_file(path: str | os.PathLike, reader_class: str) -> dict[Any, dict[str, str]]:
    """Topics from a file with an Anserini reader class (full or short name, e.g. ``TsvIntTopicReader``), as
    Pyserini returns them (int keys for numeric ids); 1.x ``get_topics_with_reader`` / 2.x ``load_topics_from_file``.
    Imports pyserini.search."""
    if "." not in reader_class:
        reader_class = _READER + reader_class
    from pyserini import search as psearch

    if hasattr(psearch, "load_topics_from_file"):
        return psearch.load_topics_from_file(str(path), reader_class)
    return psearch.get_topics_with_reader(reader_class, str(path))
