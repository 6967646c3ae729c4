"""Compressed first stage, exact second: an IVF-PQ (or any approximate) index in memory, the full vectors on disk.

An ``ivfpq`` index keeps ``m + 8`` bytes per vector in memory (104 for 768 dimensions, 1/30 of a flat index), at
the cost of approximate scores: its top 1000 misses some of the exact top 1000. Re-scoring fixes most of that for
little memory (Jégou et al. 2011, "Searching in one billion vectors: re-rank with source coding", ICASSP; FAISS's
``IndexRefineFlat`` does the same with the vectors in memory): the approximate index proposes ``depth`` candidates
per query, their stored vectors are read from ``vectors.npy`` through a memory map (only those rows are read; the
file stays on disk and in the page cache), and exact inner products decide the final order.

* ``kd-index dense --index-type ivfpq --keep-vectors fp16`` writes ``vectors.npy`` (fp16: 2 bytes per dimension,
  scores to ~3 significant digits; ``fp32`` for exact ones) beside ``index`` and ``docid``, in vector order.
  Pyserini's ``FaissSearcher`` ignores the extra file.
* ``kd-search --rescore 2000`` (:class:`RescoringIndex` around the FAISS index) re-scores each query's top 2000.

Measured on a 1M-vector index: ``python tools/benchmarks/run_all.py --only dense`` (PERFORMANCE.md, "Dense search").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["VECTORS_FILENAME", "VECTOR_DTYPES", "write_rescore_vectors", "RescoringIndex", "RescoreError"]

VECTORS_FILENAME = "vectors.npy"
VECTOR_DTYPES = {"fp16": np.float16, "fp32": np.float32}


class RescoreError(ValueError):
    """Re-scoring asked of an index without stored vectors, or stored vectors that do not fit the index (one line:
    the folder and the fix)."""


def write_rescore_vectors(folder: str | os.PathLike, blocks: Sequence[Any], dim: int, dtype: str = "fp16") -> dict:
    """Write the vectors of ``blocks`` (objects with ``count`` and ``load()``, in index order) to
    ``folder/vectors.npy`` as ``dtype``; returns its description for the index metadata."""
    if dtype not in VECTOR_DTYPES:
        raise ValueError(f"vector dtype {dtype!r} is not one of {', '.join(VECTOR_DTYPES)}")
    n = sum(int(b.count) for b in blocks)
    path = Path(folder) / VECTORS_FILENAME
    out = np.lib.format.open_memmap(path, mode="w+", dtype=VECTOR_DTYPES[dtype], shape=(n, dim))
    row = 0
    for b in blocks:
        x = np.asarray(b.load(), dtype=np.float32)
        out[row:row + len(x)] = x
        row += len(x)
    out.flush()
    del out
    return {"file": VECTORS_FILENAME, "dtype": dtype, "count": n, "dimension": dim,
            "file_bytes": path.stat().st_size}


class RescoringIndex:
    """A FAISS index whose results are re-scored exactly from stored vectors: ``search(q, k)`` asks the index for
    ``max(depth, k)`` candidates per query, reads their vectors from the memory-mapped ``vectors.npy`` and returns
    the ``k`` best by exact inner product (``(scores, ids)`` as FAISS does; ``-1`` pads).

    Args:
        index: the FAISS index (``ivfpq``, ``sq8``, ``hnsw``...).
        index_dir: the folder holding ``vectors.npy``.
        depth: candidates re-scored per query.

    Raises:
        RescoreError: no ``vectors.npy``, or one of another size or dimension than the index.
    """

    def __init__(self, index: Any, index_dir: str | os.PathLike, depth: int):
        if depth < 1:
            raise RescoreError(f"--rescore must be >= 1, not {depth}")
        path = Path(index_dir) / VECTORS_FILENAME
        if not path.is_file():
            raise RescoreError(f"{index_dir} has no {VECTORS_FILENAME} to re-score from; rebuild it with "
                               "'kd-index dense ... --keep-vectors fp16' (or search without --rescore)")
        self.vectors = np.load(path, mmap_mode="r")
        if self.vectors.shape != (index.ntotal, index.d):
            raise RescoreError(f"{path} holds {self.vectors.shape[0]} x {self.vectors.shape[1]} vectors but the "
                               f"index {index.ntotal} x {index.d}; rebuild the index with --keep-vectors")
        self.index, self.depth = index, int(depth)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def d(self) -> int:
        return int(self.index.d)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(q, dtype=np.float32)
        k = int(k)
        _, cand = self.index.search(q, min(max(self.depth, k), self.ntotal))
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        for r in range(len(q)):
            rows = np.unique(cand[r][cand[r] >= 0])  # sorted: the memory map is read in file order
            if not len(rows):
                continue
            exact = np.asarray(self.vectors[rows], dtype=np.float32) @ q[r]
            top = np.argsort(-exact, kind="stable")[:k]
            scores[r, :len(top)], ids[r, :len(top)] = exact[top], rows[top]
        return scores, ids
