"""Re-index existing dense indexes without re-encoding: merge the shards of ``kd-index dense --shard I/N`` into one
index, or convert an exact index (``flat``/``hnsw``) to another index type.

Both read the exact vectors back from the FAISS files (``reconstruct_n``, block by block) and end the same way
(:func:`_reindex`): fresh metadata, a FAISS index of the chosen type built in ``OUTPUT.tmp-xxxx`` and renamed into
place.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kd_pyserini.index.faiss_factory import IndexParams, VectorBlock, install_faiss_index, read_faiss_index
from kd_pyserini.encoding.fingerprint import short
from kd_pyserini.index.layout import (FORMAT_NAME, METADATA_FILENAME, IndexBuildError, claim_output, load_docids,
                                      now, package_versions, read_metadata, reserve_output)

__all__ = ["merge_dense_indexes", "convert_dense_index"]

log = logging.getLogger(__name__)

#: FAISS classes that keep the exact vectors (the only ones that can be merged or converted).
EXACT_CLASSES = ("IndexFlatIP", "IndexFlat", "IndexHNSWFlat")


def _reconstruct_blocks(index_dir: Path, block: int = 65_536) -> tuple[list[VectorBlock], int]:
    """The vectors of an exact index as lazily reconstructed blocks, and their dimension.

    Raises:
        IndexBuildError: the index is compressed (its vectors are lossy).
    """
    import faiss

    index = read_faiss_index(index_dir)
    cls = type(faiss.downcast_index(index)).__name__
    if cls not in EXACT_CLASSES:
        raise IndexBuildError(f"{index_dir} is a {cls}, whose vectors are compressed; merge needs shards that keep "
                              "the exact vectors: build the shards with --index-type flat (the default) or hnsw and "
                              "choose the compressed type with 'kd-index merge --index-type'")
    n = index.ntotal
    blocks = [VectorBlock(min(block, n - i), (lambda i=i: index.reconstruct_n(i, min(block, n - i))))
              for i in range(0, n, block)]
    return blocks, index.d


def _reindex(params: IndexParams, dim: int, blocks: Sequence[VectorBlock], docids: Sequence[str],
             meta: dict[str, Any], output: Path, overwrite: bool, progress: bool | None,
             command: Sequence[str] | None) -> Path:
    """The tail merge and convert share: stamp the metadata (``created``, ``versions``, ``command``) and build and
    install the index of type ``params``."""
    meta.update(created=now(), versions=package_versions(), command=list(command) if command else None)
    return install_faiss_index(params, dim, blocks, docids, meta, output, overwrite, progress)


def _shard_metadata(shards: Sequence[str | os.PathLike]) -> list[tuple[Path, dict[str, Any]]]:
    """The shards' metadata, sorted by shard number, after checking they are shards of one build, each once.

    Raises:
        IndexBuildError: not kd_pyserini shards, other settings or corpus, or missing/extra/repeated shards.
    """
    metas = []
    for s in shards:
        m = read_metadata(s)
        if m is None or m.get("format") != FORMAT_NAME:
            raise IndexBuildError(f"{s} is not a kd_pyserini dense index (no {METADATA_FILENAME})")
        if not m.get("shard"):
            raise IndexBuildError(f"{s} is a whole index, not a shard (built without --shard)")
        metas.append((Path(s), m))
    metas.sort(key=lambda sm: sm[1]["shard"]["index"])
    first = metas[0][1]
    count = first["shard"]["count"]
    for s, m in metas:
        for key in ("encoder", "dimension", "max_length", "precision"):
            if m.get(key) != first.get(key):
                hint = (f" (shards made with --precision auto on different machines: rebuild {s} with --precision "
                        f"{first.get(key)})") if key == "precision" else ""
                raise IndexBuildError(f"{s} differs from {metas[0][0]} in {key}: {m.get(key)} vs {first.get(key)}"
                                      f"{hint}")
        fp, fp0 = (m.get("encoder_weights") or {}).get("sha256"), (first.get("encoder_weights") or {}).get("sha256")
        if fp and fp0 and fp != fp0:
            raise IndexBuildError(
                f"{s} was encoded by '{m['encoder'].get('name')}' ({m['encoder'].get('model_id')}, weights sha256 "
                f"{short(fp)}) but {metas[0][0]} by '{first['encoder'].get('name')}' "
                f"({first['encoder'].get('model_id')}, weights sha256 {short(fp0)}): other weights; rebuild the "
                "shards with one encoder")
        if bool(fp) != bool(fp0):
            log.warning("%s: shards %s and %s: only one records its encoder's weights, so they could not be "
                        "compared", s, s, metas[0][0])
        if (m["corpus"]["num_docs"], m["corpus"]["files"]) != (first["corpus"]["num_docs"], first["corpus"]["files"]):
            raise IndexBuildError(f"{s} was encoded from another corpus than {metas[0][0]}")
        if m["shard"]["count"] != count:
            raise IndexBuildError(f"{s} is a shard of {m['shard']['count']}, {metas[0][0]} of {count}")
    got = [m["shard"]["index"] for _, m in metas]
    if got != list(range(count)):
        missing = sorted(set(range(count)) - set(got))
        dup = sorted({i for i in got if got.count(i) > 1})
        raise IndexBuildError(f"shards of {count}: " + (f"missing {missing}" if missing else "") +
                              (" " if missing and dup else "") + (f"repeated {dup}" if dup else "") +
                              f"; give each of 0..{count - 1} exactly once")
    return metas


def merge_dense_indexes(shards: Sequence[str | os.PathLike], output: str | os.PathLike, *,
                        index: IndexParams | str = "flat", overwrite: bool = False, progress: bool | None = None,
                        command: Sequence[str] | None = None) -> Path:
    """Assemble the shard indexes of ``kd-index dense --shard I/N`` into one index, in shard order.

    The shards must come from the same encoder, maximum length and corpus, and cover ``0..N-1`` exactly once.

    Raises:
        IndexBuildError: missing/extra/repeated shards, or shards built with different settings.
    """
    params = IndexParams.of(index)
    output = Path(output)
    if not shards:
        raise IndexBuildError("no shard folders given")
    with claim_output(output):
        reserve_output(output, overwrite)
        return _merge(shards, output, params, overwrite, progress, command)


def _merge(shards: Sequence[str | os.PathLike], output: Path, params: IndexParams, overwrite: bool,
           progress: bool | None, command: Sequence[str] | None) -> Path:
    metas = _shard_metadata(shards)
    first = metas[0][1]
    pos = 0
    blocks: list[VectorBlock] = []
    docids: list[str] = []
    dim = int(first["dimension"])
    for s, m in metas:
        if m["shard"]["start"] != pos:
            raise IndexBuildError(f"{s} starts at passage {m['shard']['start']}, expected {pos}")
        b, d = _reconstruct_blocks(s)
        ids = load_docids(s)
        if d != dim or sum(x.count for x in b) != len(ids) or len(ids) != m["shard"]["end"] - m["shard"]["start"]:
            raise IndexBuildError(f"{s} is inconsistent (vectors, ids and metadata disagree)")
        blocks.extend(b)
        docids.extend(ids)
        pos = m["shard"]["end"]
    if pos != first["corpus"]["num_docs"] or len(set(docids)) != len(docids):
        raise IndexBuildError(f"the shards hold {pos} passages of {first['corpus']['num_docs']}")
    meta = {k: v for k, v in first.items() if k not in ("shard", "encoding", "created", "command", "versions")}
    meta.update(num_vectors=len(docids), shard=None,
                merged_from=[{"path": str(s.resolve()), "shard": m["shard"], "encoding": m.get("encoding")}
                             for s, m in metas])
    return _reindex(params, dim, blocks, docids, meta, output, overwrite, progress, command)


def convert_dense_index(source: str | os.PathLike, output: str | os.PathLike, *, index: IndexParams | str = "fp16",
                        overwrite: bool = False, progress: bool | None = None,
                        command: Sequence[str] | None = None) -> Path:
    """Re-index the vectors of an exact index (``flat`` or ``hnsw``) as another index type, without re-encoding.

    The ``docid`` order and the metadata are kept; ``index`` in the metadata describes the new index.
    """
    params = IndexParams.of(index)
    source, output = Path(source), Path(output)
    with claim_output(output):
        reserve_output(output, overwrite)
        meta = read_metadata(source) or {}
        blocks, dim = _reconstruct_blocks(source)
        docids = load_docids(source)
        meta = {**meta, "converted_from": {"path": str(source.resolve()), "index": meta.get("index")}}
        return _reindex(params, dim, blocks, docids, meta, output, overwrite, progress, command)
