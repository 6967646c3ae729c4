"""Where topics/qrels files and Pyserini's cache are on disk, and a registry of the local files named as Pyserini
2.x (castorini/eval) names them.

* Cache home (``pyserini_cache_home``): 1.6 ``util.py:248-252``: ``$PYSERINI_CACHE`` or ``~/.cache/pyserini``;
  2.x ``util.py:283-300`` also ``<cwd>/.cache/pyserini`` when ``<cwd>/.cache`` exists, and caches downloaded
  topics/qrels in ``<cache>/topics`` and ``<cache>/qrels`` (``search/_base.py:96-127``) instead of 1.6's
  ``<cache>/topics-and-qrels``.
* Local folders searched first (``local_topics_and_qrels_dirs``): the registered data directories, then
  ``$KD_PYSERINI_DATA/topics-and-qrels``, then the 1.x cache folder ``<cache>/topics-and-qrels``.
* Anserini's *Java* cache (``anserini_topics_and_qrels_dirs``, ``seed_anserini_cache``), for Java-only consumers:
  Anserini 1.7.1 ``TopicReader.getTopicPath`` / ``RelevanceJudgments.getQrelsPath`` read
  ``${user.home}/.cache/pyserini/topics-and-qrels`` (``$PYSERINI_CACHE`` is ignored); Anserini 2.3
  ``io.anserini.util.CacheDirectoryResolver``: ``-Dpyserini.cache``, ``$PYSERINI_CACHE``, ``${user.dir}/.cache/pyserini``
  (if ``.cache`` exists), ``${user.home}/.cache/pyserini``, sub-folders ``topics`` and ``qrels``.
* Offline registry (``local_registry``): canonical name = file name minus ``topics.``/``qrels.`` and extension, as
  castorini/eval's ``topics.json`` names them (2.x renamed ``msmarco-passage-dev-subset`` to
  ``msmarco-passage.dev-subset``, ``beir-v1.0.0-scifact-test`` to ``beir-v1.0.0-scifact.test``...), aliases by rule
  plus castorini's that no rule derives, reader class chosen as ``pyserini/query_iterator.py`` does.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kd_pyserini.pyserini_compat.version import is_pyserini2

__all__ = ["TOPICS_AND_QRELS", "pyserini_cache_home", "pyserini_cache_dirs", "register_local",
           "local_topics_and_qrels_dirs", "find_local", "local_registry", "lookup_local",
           "anserini_topics_and_qrels_dirs", "seed_anserini_cache", "registered_data_dirs", "LOCK"]

#: Sub-folder of a data directory (``$KD_PYSERINI_DATA``) holding files named as Pyserini names them.
TOPICS_AND_QRELS = "topics-and-qrels"

#: castorini/eval ``topics-aliases.json`` / ``qrels-aliases.json`` entries that no file-name rule derives; only used
#: to build the offline registry from local files (the online registry carries them itself).
_KNOWN_ALIASES: dict[str, tuple[str, ...]] = {
    "dl20": ("dl20-passage", "dl20-doc"),
    "msmarco-passage.dev-subset": ("msmarco-passage-dev-subset", "msmarco-passage-dev", "msmarco-passage.dev",
                                   "msmarco-v1-passage-dev", "msmarco-v1-passage.dev"),
}

_TOPIC_EXTENSIONS = (".tsv.gz", ".txt.gz", ".jsonl.gz", ".json.gz", ".tsv", ".txt", ".jsonl", ".json", ".xml",
                     ".trec", ".gz")
_QRELS_EXTENSIONS = (".txt.gz", ".tsv.gz", ".txt", ".tsv", ".gz")
_READER = "io.anserini.search.topicreader."


def pyserini_cache_home() -> Path:
    """Pyserini's cache folder, as the installed line's ``pyserini.util.get_cache_home`` computes it."""
    custom = os.environ.get("PYSERINI_CACHE")
    if custom:
        return Path(custom).expanduser()
    if is_pyserini2() and (Path.cwd() / ".cache").is_dir():  # 2.x util.py:296-298
        return Path.cwd() / ".cache" / "pyserini"
    return Path.home() / ".cache" / "pyserini"


LOCK = threading.RLock()
_DATA_DIRS: list[Path] = []          # registered by register_local, first = highest priority
_EXTRA_ALIASES: dict[str, set[str]] = {}  # file name -> extra names (from the caller)


def _as_topics_dir(path: Path) -> Path:
    sub = path / TOPICS_AND_QRELS
    return sub if sub.is_dir() or not path.is_dir() else path


def local_topics_and_qrels_dirs() -> list[Path]:
    """Folders searched for topics/qrels files by name, before Pyserini's own cache and download, in order:
    the registered data directories (default ``$KD_PYSERINI_DATA``), each as ``<dir>/topics-and-qrels``, then the
    1.x cache folder ``<cache>/topics-and-qrels`` (shared with Anserini 1.x). Existing folders only."""
    with LOCK:
        dirs = list(_DATA_DIRS)
    env = os.environ.get("KD_PYSERINI_DATA")
    if env:
        dirs.append(_as_topics_dir(Path(env).expanduser()))
    dirs.append(pyserini_cache_home() / TOPICS_AND_QRELS)
    out: list[Path] = []
    for d in dirs:
        if d.is_dir() and d not in out:
            out.append(d)
    return out


def find_local(filename: str) -> Path | None:
    """The first file called ``filename`` (its base name) in :func:`local_topics_and_qrels_dirs`, or ``None``."""
    name = Path(filename).name
    for d in local_topics_and_qrels_dirs():
        cand = d / name
        if cand.is_file():
            return cand
    return None


def pyserini_cache_dirs(kind: str) -> list[Path]:
    """The folders of Pyserini's cache that may hold a ``kind`` (``"topics"`` or ``"qrels"``) file: the 1.x
    ``topics-and-qrels`` folder, then 2.x's ``topics`` / ``qrels`` (where 2.x saves its downloads)."""
    home = pyserini_cache_home()
    return [home / TOPICS_AND_QRELS, home / kind]


def register_local(data_dir: str | os.PathLike | None = None, aliases: Mapping[str, str] | None = None) -> bool:
    """Register a data directory (searched first) and extra names (``{name: file name}``); whether anything was new."""
    changed = False
    if data_dir is not None:
        d = _as_topics_dir(Path(data_dir).expanduser())
        with LOCK:
            if d not in _DATA_DIRS:
                _DATA_DIRS.insert(0, d)
                changed = True
    for name, filename in (aliases or {}).items():
        with LOCK:
            known = _EXTRA_ALIASES.setdefault(Path(filename).name, set())
            changed |= name not in known
            known.add(name)
    return changed


def registered_data_dirs() -> list[Path]:
    """The data directories registered with :func:`register_local`, highest priority first."""
    with LOCK:
        return list(_DATA_DIRS)


def anserini_topics_and_qrels_dirs() -> list[Path]:
    """Where Anserini's *Java* loaders look for topics/qrels files by file name (Java-only consumers, e.g. Anserini
    command-line tools run as ``java -cp``). 1.x: ``${user.home}/.cache/pyserini/topics-and-qrels``; 2.x:
    ``<base>/topics`` and ``<base>/qrels`` of ``CacheDirectoryResolver``. Uses the running JVM's properties when it
    is up, else this process's view (``pwd`` home, cwd)."""
    props = _java_properties()
    home = Path(props.get("user.home") or _pw_home())
    if not is_pyserini2():
        return [home / ".cache" / "pyserini" / TOPICS_AND_QRELS]
    configured = props.get("pyserini.cache") or os.environ.get("PYSERINI_CACHE")
    user_dir = Path(props.get("user.dir") or os.getcwd())
    if configured:
        base = Path(configured)
    elif (user_dir / ".cache").is_dir():
        base = user_dir / ".cache" / "pyserini"
    else:
        base = home / ".cache" / "pyserini"
    return [base / "topics", base / "qrels"]


def seed_anserini_cache(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Copy the local topics/qrels files that Anserini's Java cache lacks into it (never overwrites); returns the
    files written. Only Java-only consumers need this: Pyserini's Python loaders are covered by
    :func:`~kd_pyserini.pyserini_compat.install_local_topics_and_qrels`. On 2.x, Java name lookups still need the online registry (see the package's difference 12)."""
    register_local(data_dir)
    targets = anserini_topics_and_qrels_dirs()
    written: list[Path] = []
    seen: set[str] = set()
    for d in local_topics_and_qrels_dirs():
        for f in sorted(d.iterdir()):
            if f.name in seen or not f.is_file() or not f.name.startswith(("topics.", "qrels.")):
                continue
            seen.add(f.name)
            target_dir = targets[0] if len(targets) == 1 or f.name.startswith("topics.") else targets[1]
            target = target_dir / f.name
            if target.exists():
                continue
            target_dir.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.kd-tmp")
            shutil.copyfile(f, tmp)
            tmp.replace(target)
            written.append(target)
    return written


def _java_properties() -> dict[str, str]:
    if "jnius" not in sys.modules:
        return {}
    try:
        from jnius import autoclass

        system = autoclass("java.lang.System")
        return {k: v for k in ("user.home", "user.dir", "pyserini.cache") if (v := system.getProperty(k))}
    except Exception:  # noqa: BLE001  (no JVM: fall back to this process's view)
        return {}


def _pw_home() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError, AttributeError):
        return str(Path.home())


def _strip_ext(name: str, prefix: str, extensions: Sequence[str]) -> str | None:
    if not name.startswith(prefix):
        return None
    stem = name[len(prefix):]
    for ext in extensions:
        if stem.endswith(ext):
            return stem[: -len(ext)] or None
    return None


def _derived_names(stem: str) -> list[str]:
    """Names castorini/eval gives a topic set besides its canonical name (the file stem), by rule."""
    out = [stem]
    if "." in stem:
        head, _, tail = stem.rpartition(".")
        out.append(f"{head}-{tail}")  # msmarco-passage.dev-subset -> msmarco-passage-dev-subset
    m = re.match(r"^(beir-v[\d.]+-[^.]+)[.-]test$", stem)
    if m:
        out += [m.group(1), f"{m.group(1)}-test", f"{m.group(1)}.test", "beir-" + m.group(1).split("-", 2)[2]]
    out += _KNOWN_ALIASES.get(stem, ())
    return list(dict.fromkeys(out))


def _topic_reader(path: Path) -> str | None:
    """The Anserini reader class for a topics file, as ``pyserini/query_iterator.py`` chooses it."""
    name = path.name
    if name.endswith((".jsonl", ".jsonl.gz")):
        return _READER + "JsonStringTopicReader"
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            lines = [line for _, line in zip(range(100000), f) if line.strip()]
    except OSError:
        return None
    if not lines:
        return None
    if lines[0].lstrip().startswith("<top>"):
        return _READER + "TrecTopicReader"
    if not all("\t" in line for line in lines[:50]):
        return None
    if "beir" in name:
        return _READER + "TsvStringTopicReader"
    ints = all(line.split("\t", 1)[0].strip().isdigit() for line in lines)
    return _READER + ("TsvIntTopicReader" if ints else "TsvStringTopicReader")


def local_registry(kind: str) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """``(mapping, aliases)`` in the format of castorini/eval's ``topics.json`` / ``qrels.json`` and their
    ``*-aliases.json``, for the topics (``kind='topics'``) or qrels files in the local folders."""
    prefix, extensions = ("topics.", _TOPIC_EXTENSIONS) if kind == "topics" else ("qrels.", _QRELS_EXTENSIONS)
    mapping: dict[str, Any] = {}
    aliases: dict[str, list[str]] = {}
    dirs = local_topics_and_qrels_dirs()
    downloaded = pyserini_cache_dirs(kind)[1]  # 2.x keeps its downloads there: named offline too
    if is_pyserini2() and downloaded.is_dir():
        dirs.append(downloaded)
    for d in dirs:
        for f in sorted(d.iterdir()):
            stem = _strip_ext(f.name, prefix, extensions)
            if stem is None or stem in mapping or not f.is_file():
                continue
            if kind == "topics":
                reader = _topic_reader(f)
                if reader is None:
                    continue
                mapping[stem] = {"path": f.name, "reader_class": reader}
            else:
                mapping[stem] = f.name
            with LOCK:
                extra = sorted(_EXTRA_ALIASES.get(f.name, ()))
            names = [n for n in dict.fromkeys((*_derived_names(stem), *extra)) if n != stem]
            if names:
                aliases[stem] = names
    return mapping, aliases


def lookup_local(kind: str, name: str) -> tuple[Path | None, str | None]:
    """``(file, reader class)`` for a topic set or qrels ``name`` in the offline registry of the local files."""
    mapping, aliases = local_registry(kind)
    canonical = name if name in mapping else next((c for c, names in aliases.items() if name in names), None)
    if canonical is None:
        return None, None
    entry = mapping[canonical]
    filename, reader = (entry["path"], entry["reader_class"]) if kind == "topics" else (entry, None)
    return find_local(filename), reader

