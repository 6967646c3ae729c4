"""Reading a passage store: the precomputed passage side of a ColBERT / PreTTR re-ranker (:class:`PassageStore`).

Stores are built by :mod:`kd_pyserini.index.passage_store` (``kd-index passage-store``), whose docstring describes
the layout and why they exist (Hofstätter et al. 2020, arXiv 2010.02666: ColBERT, Khattab & Zaharia 2020, and PreTTR,
MacAvaney et al. 2020, read the passage without the query up to some point). This module is the read side, used by the
re-rankers (:meth:`kd_pyserini.encoding.interaction.TokenInteractionReranker.attach_store`): ids indexed, fp16 rows
memory-mapped, and the check that a store is only used with the weights and lengths that built it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kd_pyserini.errors import KdError

__all__ = ["PassageStore", "PassageStoreError", "STORE_FORMAT", "STORE_INFO", "RECORD_TAG", "chunk_files",
           "first_difference"]

STORE_FORMAT = "kd_pyserini-passage-store"
STORE_INFO = "store.json"
#: the first characters of a chunk's record line in its ``.ids`` file (as in :mod:`kd_pyserini.index.chunks`).
RECORD_TAG = "#kd_pyserini-chunk\t"


def chunk_files(folder: Path, k: int) -> tuple[Path, Path, Path]:
    """Chunk ``k``'s rows (``.vec.npy``), row offsets (``.off.npy``) and ids (``.ids``)."""
    return folder / f"chunk-{k:06d}.vec.npy", folder / f"chunk-{k:06d}.off.npy", folder / f"chunk-{k:06d}.ids"


def first_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first key whose values differ, as ``key: old in the store, new here`` (``None``: equal)."""
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{key}: {json.dumps(old.get(key))[:80]} in the store, {json.dumps(new.get(key))[:80]} here"
    return None


class PassageStoreError(KdError, ValueError):
    """A passage store that cannot be built or used as asked; the message names the folder and the fix."""


class PassageStore:
    """A finished store, opened for reading (vectors memory-mapped, ids indexed).

    Attributes: ``path``, ``info`` (``store.json``), ``dimension``, ``num_passages``.

    Raises:
        PassageStoreError: not a finished store (the message says how to finish or build it).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        info_path = self.path / STORE_INFO
        if not info_path.is_file():
            partial = Path(str(self.path) + ".partial")
            hint = (f"{partial} holds an unfinished build: run the same 'kd-index passage-store' "
                    "command again to finish it") if partial.is_dir() else \
                "build one with 'kd-index passage-store'"
            raise PassageStoreError(f"{self.path} is not a finished passage store (no {STORE_INFO}); {hint}")
        try:
            self.info = json.loads(info_path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise PassageStoreError(f"{info_path}: not valid JSON ({e}); rebuild the store") from e
        if self.info.get("format") != STORE_FORMAT:
            raise PassageStoreError(f"{info_path}: format {self.info.get('format')!r} is not {STORE_FORMAT!r}")
        self.dimension = int(self.info["dimension"])
        self.num_passages = int(self.info["passages"])
        self._where: dict[str, tuple[int, int]] = {}
        self._vec: dict[int, np.ndarray] = {}
        self._off: dict[int, np.ndarray] = {}
        for k in range(int(self.info["chunks"])):
            _, _, idf = chunk_files(self.path, k)
            ids = [x for x in idf.read_text(encoding="utf-8").splitlines() if not x.startswith(RECORD_TAG)]
            for row, pid in enumerate(ids):
                self._where[pid] = (k, row)
        if len(self._where) != self.num_passages:
            raise PassageStoreError(f"{self.path}: {STORE_INFO} says {self.num_passages} passages but the chunks "
                                    f"hold {len(self._where)} distinct ids; rebuild the store")

    def __len__(self) -> int:
        return self.num_passages

    def __contains__(self, pid: object) -> bool:
        return str(pid) in self._where

    @property
    def encoder(self) -> dict[str, Any]:
        return dict(self.info["encoder"])

    def check_compatible(self, key: dict[str, Any]) -> None:
        """Refuse a re-ranker whose key (kind, weights SHA-256, lengths, dimension...) is not the store's; names and
        model ids are compared only when a side has no weights fingerprint.

        Raises:
            PassageStoreError: naming the first setting that differs and the fix.
        """
        mine, theirs = self.encoder, dict(key)
        if mine.get("weights_sha256") and theirs.get("weights_sha256"):
            for k in ("name", "model_id"):  # the weights decide; a copied folder or a hub download is the same model
                mine.pop(k, None)
                theirs.pop(k, None)
        diff = first_difference(mine, theirs)
        if diff:
            raise PassageStoreError(f"{self.path} was built by another encoder ({diff}); re-rank without it, or "
                                    "build a store with this model ('kd-index passage-store')")

    def _chunk(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k not in self._vec:
            vec, off, _ = chunk_files(self.path, k)
            self._vec[k], self._off[k] = np.load(vec, mmap_mode="r"), np.load(off)
        return self._vec[k], self._off[k]

    def get(self, ids: Sequence[str]) -> list[np.ndarray | None]:
        """The stored fp16 ``(tokens, d)`` array of each id (``None`` for ids not in the store)."""
        out: list[np.ndarray | None] = []
        for pid in ids:
            where = self._where.get(str(pid))
            if where is None:
                out.append(None)
                continue
            vec, off = self._chunk(where[0])
            out.append(np.asarray(vec[off[where[1]]:off[where[1] + 1]]))
        return out
