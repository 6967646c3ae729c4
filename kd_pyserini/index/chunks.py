"""The resumable chunk store of a dense build: ``OUTPUT.partial``.

``kd-index dense`` writes its vectors in chunks (``OUTPUT.partial/chunk-000123.npy`` + ``.ids``, each written to a
temporary name and renamed; the ``.npy``, renamed last, marks the chunk as done) next to ``state.json``, the
settings the chunks were encoded with. A run started again with the same settings resumes after the last finished
chunk; other settings are refused (:func:`check_state`). One process at a time holds the store
(:func:`lock_store`, an ``flock`` released when the process ends, even by a kill).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import IO, Any

import numpy as np

from kd_pyserini.atomic import atomic_write
from kd_pyserini.index.faiss_factory import VectorBlock
from kd_pyserini.index.layout import IndexBuildError

__all__ = ["CRASH_ENV", "STATE_FILENAME", "partial_dir", "chunk_paths", "chunk_done", "lock_store", "clear_store",
           "read_state", "check_state", "write_chunk", "read_chunks", "crash_after"]

CRASH_ENV = "KD_PYSERINI_CRASH_AFTER_CHUNK"
"""Test hook: after writing chunk number ``$KD_PYSERINI_CRASH_AFTER_CHUNK`` (0-based), the process exits at once
with status 137 without any clean-up, as if killed (``kill -9``). Used by the resume tests."""
STATE_FILENAME = "state.json"
LOCK_NAME = ".lock"
#: the settings that must match for chunks to be reused.
STATE_KEYS = ("encoder", "max_length", "precision", "format", "corpus", "shard", "chunk_size")


def partial_dir(output: Path) -> Path:
    """``OUTPUT.partial``, the chunk store of ``output``."""
    return Path(str(output) + ".partial")


def chunk_paths(partial: Path, k: int) -> tuple[Path, Path]:
    """The ``.npy`` (vectors) and ``.ids`` (ids) files of chunk ``k``."""
    return partial / f"chunk-{k:06d}.npy", partial / f"chunk-{k:06d}.ids"


def chunk_done(partial: Path, k: int) -> bool:
    """Whether chunk ``k`` is completely on disk."""
    npy, ids = chunk_paths(partial, k)
    return npy.is_file() and ids.is_file()


def lock_store(partial: Path) -> IO[str]:
    """Create ``partial`` and hold an exclusive lock on it (released when the process ends, even by a kill).

    Returns the open lock file; close it to release the lock.

    Raises:
        IndexBuildError: another process holds the lock.
    """
    import fcntl

    partial.mkdir(parents=True, exist_ok=True)
    f = open(partial / LOCK_NAME, "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise IndexBuildError(f"another kd-index process is writing {partial}; wait for it to finish (or stop it) "
                              "before starting this one") from None
    return f


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
    diff = [k for k in STATE_KEYS if state.get(k) != wanted.get(k)]
    if diff:
        raise IndexBuildError(
            f"{partial} holds chunks from a run with other settings ({', '.join(diff)} differ); rerun with the "
            "same options to resume it, or pass --restart to discard those chunks")


def write_chunk(partial: Path, k: int, ids: list[str], vectors: np.ndarray) -> None:
    """Put chunk ``k`` on disk: the ids first, then the vectors, whose rename marks the chunk as done."""
    npy, idf = chunk_paths(partial, k)
    with atomic_write(idf) as f:
        f.writelines(f"{d}\n" for d in ids)
    with atomic_write(npy, "wb") as f:
        np.save(f, vectors, allow_pickle=False)


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
