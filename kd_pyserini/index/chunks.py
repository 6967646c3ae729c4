"""The resumable chunk store of a dense build: ``OUTPUT.partial``.

``kd-index dense`` writes its vectors in chunks (``OUTPUT.partial/chunk-000123.npy`` + ``.ids``, each written to a
temporary name and renamed; the ``.npy``, renamed last, marks the chunk as done) next to ``state.json``, the
settings the chunks were encoded with. A run started again with the same settings resumes after the last finished
chunk; other settings are refused (:func:`check_state`). One process at a time holds the store
(:func:`lock_store`, a :class:`~kd_pyserini.locks.ProcessLock`: released when the process ends, even by a kill).

Each chunk also carries its own record, the first line of its ``.ids`` file (``#kd_pyserini-chunk<TAB>{json}``; an
id cannot hold a tab): a key of the settings it was encoded with (encoder card *and* weights fingerprint, lengths,
precision...), its passage range and a SHA-256 of its passages' ids and texts. A chunk is reused only when its
record matches (:func:`chunk_record`), so a store whose ``state.json`` was lost (a kill while the store was being
deleted) can never lend its chunks to a build with another encoder, and a corpus edited in place is noticed even
when its size and modification time were kept. A chunk being rewritten first loses its ``.npy``, so an ``.ids``
record never vouches for older vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kd_pyserini.atomic import atomic_write
from kd_pyserini.index.faiss_factory import VectorBlock
from kd_pyserini.index.layout import IndexBuildError, write_error
from kd_pyserini.locks import ProcessLock

__all__ = ["CRASH_ENV", "STATE_FILENAME", "partial_dir", "chunk_paths", "chunk_done", "lock_store", "clear_store",
           "read_state", "check_state", "write_chunk", "read_chunks", "crash_after", "settings_key", "chunk_record",
           "discard_chunk", "content_digest", "remove_temp_files"]

CRASH_ENV = "KD_PYSERINI_CRASH_AFTER_CHUNK"
"""Test hook: after writing chunk number ``$KD_PYSERINI_CRASH_AFTER_CHUNK`` (0-based), the process exits at once
with status 137 without any clean-up, as if killed (``kill -9``). Used by the resume tests."""
STATE_FILENAME = "state.json"
LOCK_NAME = ".lock"
#: the settings that must match for chunks to be reused.
STATE_KEYS = ("encoder", "encoder_weights", "max_length", "precision", "format", "corpus", "shard", "chunk_size")
#: the first characters of a chunk's record line in its ``.ids`` file.
RECORD_TAG = "#kd_pyserini-chunk\t"


def partial_dir(output: Path) -> Path:
    """``OUTPUT.partial``, the chunk store of ``output``."""
    return Path(str(output) + ".partial")


def chunk_paths(partial: Path, k: int) -> tuple[Path, Path]:
    """The ``.npy`` (vectors) and ``.ids`` (ids) files of chunk ``k``."""
    return partial / f"chunk-{k:06d}.npy", partial / f"chunk-{k:06d}.ids"


def chunk_done(partial: Path, k: int) -> bool:
    """Whether chunk ``k`` is completely on disk (its record says whether it can be reused: :func:`chunk_record`)."""
    npy, ids = chunk_paths(partial, k)
    return npy.is_file() and ids.is_file()


def settings_key(wanted: dict[str, Any]) -> str:
    """A SHA-256 of the settings that decide a chunk's vectors (all of ``state.json``'s but the corpus files' sizes
    and times, which the chunk's own content hash replaces)."""
    settings = {k: v for k, v in wanted.items() if k != "corpus"}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def content_digest(ids: Sequence[str], texts: Sequence[str]) -> str:
    """A SHA-256 of a chunk's passages (ids and texts, length-prefixed), what its vectors were computed from."""
    h = hashlib.sha256()
    for d, t in zip(ids, texts, strict=True):
        h.update(f"{len(d)}:{d}{len(t)}:".encode())
        h.update(t.encode())
    return h.hexdigest()


def chunk_record(partial: Path, k: int) -> dict[str, Any] | None:
    """The record of a finished chunk ``k`` (``None``: not finished, or written without a record)."""
    npy, idf = chunk_paths(partial, k)
    if not (npy.is_file() and idf.is_file()):
        return None
    try:
        with open(idf, encoding="utf-8") as f:
            first = f.readline()
        if not first.startswith(RECORD_TAG):
            return None
        record = json.loads(first[len(RECORD_TAG):])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def discard_chunk(partial: Path, k: int) -> None:
    """Delete chunk ``k``'s files (the ``.npy`` first: without it the chunk is not finished)."""
    for p in chunk_paths(partial, k):
        p.unlink(missing_ok=True)


def remove_temp_files(partial: Path) -> list[str]:
    """Delete the hidden temporary files a killed run left in the store (call while holding its lock)."""
    removed = []
    for p in partial.glob(".*.tmp"):
        p.unlink(missing_ok=True)
        removed.append(p.name)
    return removed


def lock_store(partial: Path) -> ProcessLock:
    """Create ``partial`` and hold an exclusive lock on it (released when the process ends, even by a kill).

    Returns the held lock; ``close()`` it to release the lock.

    Raises:
        IndexBuildError: another process holds the lock.
    """

    def busy(pid: int | None) -> IndexBuildError:
        return IndexBuildError(f"another kd-index process is writing {partial}; wait for it to finish (or stop it) "
                               "before starting this one")

    return ProcessLock(partial / LOCK_NAME, busy).acquire()


def clear_store(partial: Path) -> None:
    """Delete every chunk and the state of ``partial`` (keeping the lock file)."""
    for p in partial.iterdir():
        if p.name != LOCK_NAME:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def read_state(partial: Path) -> dict[str, Any] | None:
    """The ``state.json`` of an earlier run, or ``None``."""
    path = partial / STATE_FILENAME
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def check_state(partial: Path, state: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Refuse to resume chunks encoded with other settings than ``wanted``.

    Raises:
        IndexBuildError: naming the settings that differ.
    """
    # a store from before weights fingerprints has no "encoder_weights": its chunks carry no record either, so
    # they are encoded again (never trusted) rather than the whole store refused
    diff = [k for k in STATE_KEYS if (k in state or k != "encoder_weights") and state.get(k) != wanted.get(k)]
    if diff:
        from kd_pyserini.encoding.precision import resume_hint

        hint = resume_hint(state.get("precision"), wanted.get("precision")) if "precision" in diff else ""
        raise IndexBuildError(
            f"{partial} holds chunks from a run with other settings ({', '.join(diff)} differ){hint}; rerun with "
            "the same options to resume it, or pass --restart to discard those chunks")


def write_chunk(partial: Path, k: int, ids: list[str], vectors: np.ndarray, record: dict[str, Any]) -> None:
    """Put chunk ``k`` on disk: any old vectors are deleted, then the record and ids are written, then the vectors,
    whose rename marks the chunk as done.

    Raises:
        IndexBuildError: a write failed (a full disk...), in one line; the chunk is left unfinished.
    """
    npy, idf = chunk_paths(partial, k)
    target = idf
    try:
        npy.unlink(missing_ok=True)
        with atomic_write(idf) as f:
            f.write(RECORD_TAG + json.dumps(record, sort_keys=True) + "\n")
            f.writelines(f"{d}\n" for d in ids)
        target = npy
        with atomic_write(npy, "wb") as f:
            np.save(f, vectors, allow_pickle=False)
    except OSError as e:
        for p in partial.glob(f".{target.name}.*.tmp"):  # a failed close leaves atomic_write's temporary file
            p.unlink(missing_ok=True)
        raise write_error(target, e, resume=True) from e


def read_chunks(partial: Path, n_chunks: int) -> tuple[list[VectorBlock], list[str], int | None]:
    """The finished chunks ``0..n_chunks-1`` as memory-mapped vector blocks, their ids and the dimension.

    Raises:
        IndexBuildError: a chunk's vectors and ids disagree in number.
    """
    blocks: list[VectorBlock] = []
    docids: list[str] = []
    dim = None
    for k in range(n_chunks):
        npy, idf = chunk_paths(partial, k)
        ids_k = idf.read_text(encoding="utf-8").splitlines()
        if ids_k and ids_k[0].startswith(RECORD_TAG):
            ids_k = ids_k[1:]
        arr = np.load(npy, mmap_mode="r")
        if arr.shape[0] != len(ids_k):
            raise IndexBuildError(f"{npy} has {arr.shape[0]} vectors but {idf} has {len(ids_k)} ids; delete both "
                                  "and run again to re-encode that chunk")
        dim = int(arr.shape[1])
        docids.extend(ids_k)
        blocks.append(VectorBlock(len(ids_k), (lambda p=npy: np.load(p, mmap_mode="r"))))
    return blocks, docids, dim


def crash_after() -> int | None:
    """The chunk number after which the :data:`CRASH_ENV` test hook kills the process, or ``None``."""
    v = os.environ.get(CRASH_ENV)
    return int(v) if v not in (None, "") else None
