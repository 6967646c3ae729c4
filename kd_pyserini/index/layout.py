"""The index folder's contract: what a kd_pyserini index folder holds, how it is read, and how it is installed.

**Dense layout.** A dense index folder holds ``index`` (written by ``faiss.write_index``) and ``docid`` (one id per
line, in vector order) -- exactly what Pyserini's ``FaissSearcher(DIR, query_encoder)`` reads -- plus
``kd_pyserini.json``: the encoder card, the maximum lengths, the dimension, the index type and its parameters, the
corpus (path, format, number of documents) and the versions of the software that built it.
:func:`~kd_pyserini.index_meta.check_index_compatible` uses it to refuse searching an index with a different encoder.
The read side (the file names, :func:`~kd_pyserini.index_meta.read_metadata`, :func:`~kd_pyserini.index_meta.
load_docids`, the encoder check, the read errors) lives in :mod:`kd_pyserini.index_meta`, below the Pyserini adapters
that need it too; it is re-exported here.

**BM25 layout.** Lucene's own files (positions, document vectors and the raw JSON ``{"id", "contents"}`` stored),
plus a ``kd_pyserini.json`` of format :data:`BM25_FORMAT_NAME`; :func:`raw_contents` reads a stored document back.

**Install.** Every index is built in a temporary folder beside its final name (``DIR.tmp-xxxx``, see
:func:`new_build_dir`) and moved into place in one rename by :func:`install_dir`, so ``DIR`` exists only when it is
whole. Every build holds the output's lock (:func:`claim_output`, a hidden ``.DIR.lock`` beside it, a
:class:`~kd_pyserini.locks.ProcessLock`) while it
runs, and first removes what a killed earlier build of ``DIR`` left there (``DIR.tmp-*``, ``DIR.old-*``, hidden
temporary files), restoring the old index when a killed ``--overwrite`` had already moved it aside. This module only
reads files and moves folders: it imports neither FAISS nor Pyserini.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import platform
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kd_pyserini.atomic import atomic_write, replace_dir, temp_dir_for
from kd_pyserini.corpus import corpus_files
from kd_pyserini.errors import KdError
from kd_pyserini.index_meta import (BM25_FORMAT_NAME, DOCID_FILENAME, FORMAT_NAME, INDEX_FILENAME, METADATA_FILENAME,
                                    CorruptIndexError, IncompatibleIndexError, MissingMetadataError,
                                    check_index_compatible, index_info, load_docids, raw_contents, read_metadata,
                                    truncated_index_message)
from kd_pyserini.locks import ProcessLock

__all__ = ["METADATA_FILENAME", "INDEX_FILENAME", "DOCID_FILENAME", "FORMAT_NAME", "BM25_FORMAT_NAME",
           "IndexBuildError", "IncompatibleIndexError", "MissingMetadataError", "CorruptIndexError", "read_metadata",
           "load_docids", "write_error", "claim_output", "clean_leftovers", "truncated_index_message",
           "CRASH_INSTALL_ENV", "crash_before_install",
           "index_info", "check_index_compatible", "raw_contents", "package_versions", "corpus_fingerprint",
           "corpus_summary", "now", "write_json", "reserve_output", "new_build_dir", "install_dir"]


class IndexBuildError(KdError, RuntimeError):
    """An index could not be built (bad options, an existing output, leftover chunks from other settings...)."""


log = logging.getLogger(__name__)


def write_error(path: str | os.PathLike, error: BaseException, resume: bool = False) -> IndexBuildError:
    """A one-line :class:`IndexBuildError` for a failed write of ``path`` (``OSError`` from Python and numpy,
    ``RuntimeError`` from FAISS): ``could not write PATH: No space left on device (...)``.

    A short write (numpy's ``N requested and M written``, FAISS's ``write error ... N != M``) happens on a full
    disk (or quota), so it is reported as such."""
    raw = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    code = getattr(error, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        reason = os.strerror(code)
    elif "No space left" in raw:
        reason = "No space left on device"
    elif re.search(r"\d+ requested and \d+ written|write error", raw):
        reason = f"No space left on device ({raw})"
    else:
        reason = raw
    fix = "free some space" if reason.startswith("No space") else "fix that"
    kept = " (finished chunks are kept)" if resume else ""
    return IndexBuildError(f"could not write {path}: {reason}; {fix} and run the same command again{kept}")


# ----------------------------------------------------------------------------------------------------- metadata

def package_versions() -> dict[str, str | None]:
    """Versions of the software that matters for reproducing an index or a run.

    ``java`` is the runtime of the JVM kd_pyserini started in this process, or ``None`` when none was started (a
    dense index needs no Java; asking would start one).
    """
    from importlib.metadata import PackageNotFoundError, version

    import kd_pyserini
    from kd_pyserini.jvm import current_runtime

    out: dict[str, str | None] = {"kd_pyserini": kd_pyserini.__version__}
    for key, dist in (("pyserini", "pyserini"), ("torch", "torch"), ("faiss", "faiss-cpu"),
                      ("transformers", "transformers"), ("numpy", "numpy")):
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = None
    if out["faiss"] is None:
        try:
            import faiss

            out["faiss"] = faiss.__version__
        except Exception:  # noqa: BLE001
            pass
    out["python"] = platform.python_version()
    java = current_runtime()
    out["java"] = str(java.version) if java is not None else None
    return out


def corpus_fingerprint(corpus: str | os.PathLike) -> list[dict[str, Any]]:
    """Path, size and modification time of each corpus file (a resumed build must read the same files)."""
    out = []
    for f in corpus_files(corpus):
        st = f.stat()
        out.append({"path": str(f.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def corpus_summary(corpus: str | os.PathLike, fmt: str, fingerprint: list[dict[str, Any]],
                   **counts: int) -> dict[str, Any]:
    """The ``corpus`` entry of an index's metadata: path, format, counts (``num_docs``...) and file names/sizes."""
    return {"path": str(Path(corpus).resolve()), "format": fmt, **counts,
            "files": [{"name": Path(f["path"]).name, "size": f["size"]} for f in fingerprint]}


def now() -> str:
    """The current UTC time, ISO 8601 to the second (the ``created`` of metadata)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")


# ------------------------------------------------------------------------------------------------------ install

def reserve_output(output: Path, overwrite: bool) -> None:
    """Refuse an existing ``output`` unless ``overwrite`` (checked before any work starts)."""
    if output.exists() and not overwrite:
        raise IndexBuildError(f"{output} already exists; choose another --output or pass --overwrite to replace it")


def new_build_dir(output: Path) -> Path:
    """A new empty ``OUTPUT.tmp-xxxx`` folder beside ``output``, where the index is built."""
    return temp_dir_for(output, "tmp")


def _lock_path(output: Path) -> Path:
    return output.parent / f".{output.name}.lock"


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def clean_leftovers(output: Path) -> list[str]:
    """Remove what killed builds of ``output`` left beside it; call only while holding :func:`claim_output`.

    ``OUTPUT.tmp-*`` (an index being built), ``OUTPUT.old-*`` (an old index moved aside by ``--overwrite``) and
    hidden ``.OUTPUT.*.tmp`` files (:class:`~kd_pyserini.atomic.atomic_write`). When ``output`` itself is missing
    and an ``OUTPUT.old-*`` still holds the old index (the kill came between the two renames of ``--overwrite``),
    that index is put back first, so nothing that was there is lost. Returns the names removed.
    """
    parent, name = output.parent, output.name
    if not parent.is_dir():
        return []
    olds = sorted((p for p in parent.iterdir() if p.name.startswith(f"{name}.old-") and (p / "old").is_dir()),
                  key=lambda p: p.stat().st_mtime_ns, reverse=True)
    if olds and not output.exists() and not output.is_symlink():
        os.replace(olds[0] / "old", output)
        log.warning("put back %s, which an interrupted --overwrite had moved to %s", output, olds[0])
    removed, freed = [], 0
    for p in sorted(parent.iterdir()):
        n = p.name
        ours = n.startswith((f"{name}.tmp-", f"{name}.old-")) or (n.startswith(f".{name}.") and n.endswith(".tmp"))
        if not ours:
            continue
        freed += _size(p)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        removed.append(n)
    if removed:
        log.warning("removed %s, left beside %s by an interrupted kd-index run (%.1f MB freed)",
                    ", ".join(removed), output, freed / 1e6)
    return removed


@contextlib.contextmanager
def claim_output(output: str | os.PathLike) -> Iterator[Path]:
    """Hold ``output``'s build lock (an ``flock`` on ``.OUTPUT.lock`` beside it, released when the process ends,
    even by a kill) for the whole build, after removing what killed earlier builds left (:func:`clean_leftovers`):
    since every build of ``output`` holds the lock, leftovers found while holding it belong to no live process.

    Raises:
        IndexBuildError: another process is building ``output``.
    """
    output = Path(output)
    path = _lock_path(output)

    def busy(pid: int | None) -> IndexBuildError:
        return IndexBuildError(f"another kd-index process is building {output} (it holds {path}); wait for it to "
                               "finish (or stop it) before starting this one")

    with ProcessLock(path, busy, remove=True):
        clean_leftovers(output)
        yield output


CRASH_INSTALL_ENV = "KD_PYSERINI_CRASH_BEFORE_INSTALL"
"""Test hook: when set (to ``1``), a build exits at once with status 137, without any clean-up, right before it moves
its finished ``OUTPUT.tmp-xxxx`` into place, as if killed (``kill -9``) then. Used by the leftover tests."""


def crash_before_install() -> None:
    """The :data:`CRASH_INSTALL_ENV` test hook."""
    if os.environ.get(CRASH_INSTALL_ENV) == "1":
        os._exit(137)


def install_dir(tmp: Path, output: Path, overwrite: bool) -> None:
    """Move a finished ``tmp`` folder to ``output`` in one rename (replacing an old one only with ``overwrite``).

    Raises:
        IndexBuildError: ``output`` appeared during the build and ``overwrite`` is off.
    """
    if output.exists() and not overwrite:
        raise IndexBuildError(f"{output} appeared while the index was being built; the new index is left in {tmp}")
    replace_dir(tmp, output)
