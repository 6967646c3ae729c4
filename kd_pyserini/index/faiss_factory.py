"""FAISS index types: what each costs, how it is made, filled from vector blocks, and written in Pyserini's layout.

**Index types** and memory per vector (d = dimension; for MS MARCO v1 passage, 8,841,823 x 768):

============  ===============================================  ===============  =========================
type          FAISS index                                      bytes / vector   8.8M x 768
============  ===============================================  ===============  =========================
``flat``      ``IndexFlatIP`` (exact inner product, default)   4 d = 3,072      27.2 GB (25.3 GiB)
``hnsw``      ``IndexHNSWFlat`` (M=32, inner product)          4 d + ~8 M       ~29.4 GB (27.4 GiB)
``fp16``      ``IndexScalarQuantizer`` ``QT_fp16``             2 d = 1,536      13.6 GB (12.6 GiB)
``sq8``       ``IndexScalarQuantizer`` ``QT_8bit``             d = 768          6.8 GB (6.3 GiB)
``ivfpq``     ``IndexIVFPQ`` (m = d/8 sub-quantisers, 8 bit)   m + 8 = 104      0.92 GB (+ nlist x 4 d)
============  ===============================================  ===============  =========================

``fp16`` is the memory-light choice that keeps ranking virtually unchanged (scores to ~3 significant digits);
``ivfpq`` is ~30x smaller but approximate (tune ``nprobe``). ``hnsw`` trades memory for speed. Searching an
``hnsw``/``ivfpq`` index with Pyserini works unchanged (``efSearch``/``nprobe`` are saved in the index file).

``faiss`` is imported inside the functions that need it.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kd_pyserini.index.layout import (DOCID_FILENAME, INDEX_FILENAME, METADATA_FILENAME, CorruptIndexError,
                                      IndexBuildError, crash_before_install, install_dir, new_build_dir,
                                      truncated_index_message, write_error, write_json)
from kd_pyserini.progress import progress_bar

__all__ = ["INDEX_TYPES", "IndexParams", "bytes_per_vector", "make_faiss_index", "VectorBlock", "sample_vectors",
           "fill_index", "write_faiss_folder", "install_faiss_index", "read_faiss_index"]

log = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "hnsw", "ivfpq", "sq8", "fp16")


@dataclass
class IndexParams:
    """The FAISS index type and its parameters.

    Attributes:
        index_type: one of :data:`INDEX_TYPES`.
        hnsw_m: HNSW neighbours per node (``M``).
        ef_construction: HNSW ``efConstruction``.
        ef_search: HNSW ``efSearch`` saved in the index (what Pyserini uses when searching).
        nlist: IVF cells (default ``4 * sqrt(n)``, at most ``n / 39``).
        pq_m: PQ sub-quantisers (default ``d / 8``, rounded down to a divisor of ``d``).
        pq_nbits: bits per PQ code (8; lowered for tiny corpora).
        nprobe: IVF cells visited per query, saved in the index.
        train_size: vectors used to train ``sq8``/``ivfpq`` (sampled evenly over the corpus).
        keep_vectors: ``fp16`` / ``fp32``: also write the vectors to ``vectors.npy`` (disk, not memory), so that
            searches can re-score an approximate index's candidates exactly (:mod:`kd_pyserini.index.rescore`).
    """

    index_type: str = "flat"
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 256
    nlist: int | None = None
    pq_m: int | None = None
    pq_nbits: int = 8
    nprobe: int = 32
    train_size: int = 262_144
    keep_vectors: str | None = None

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise ValueError(f"index type {self.index_type!r} is not one of {', '.join(INDEX_TYPES)}")
        if self.keep_vectors not in (None, "fp16", "fp32"):
            raise ValueError(f"keep_vectors {self.keep_vectors!r} is not one of fp16, fp32 (or None)")

    @classmethod
    def of(cls, index: IndexParams | str) -> IndexParams:
        """``index`` itself, or the default parameters of the type it names."""
        return cls(index) if isinstance(index, str) else index

    def describe(self) -> dict[str, Any]:
        """The type and the parameters that apply to it (the ``index`` entry of the metadata, before building)."""
        d: dict[str, Any] = {"index_type": self.index_type}
        if self.index_type == "hnsw":
            d.update(hnsw_m=self.hnsw_m, ef_construction=self.ef_construction, ef_search=self.ef_search)
        elif self.index_type == "ivfpq":
            d.update(nlist=self.nlist, pq_m=self.pq_m, pq_nbits=self.pq_nbits, nprobe=self.nprobe,
                     train_size=self.train_size)
        elif self.index_type == "sq8":
            d.update(train_size=self.train_size)
        if self.keep_vectors:
            d.update(keep_vectors=self.keep_vectors)
        return d


def _pq_m(dim: int, wanted: int | None) -> int:
    m = wanted or max(1, dim // 8)
    while dim % m:
        m -= 1
    return m


def bytes_per_vector(index_type: str, dim: int, hnsw_m: int = 32, pq_m: int | None = None,
                     pq_nbits: int = 8) -> float:
    """Approximate memory per vector of an index type (see the module's table)."""
    if index_type == "flat":
        return 4.0 * dim
    if index_type == "hnsw":
        # level 0 keeps 2M neighbour ids (int32); upper levels add ~1/(M-1) of that on average.
        return 4.0 * dim + 4 * 2 * hnsw_m * (1 + 1 / max(hnsw_m - 1, 1))
    if index_type == "fp16":
        return 2.0 * dim
    if index_type == "sq8":
        return float(dim)
    if index_type == "ivfpq":
        return _pq_m(dim, pq_m) * pq_nbits / 8 + 8  # code + int64 id in the inverted list
    raise ValueError(f"index type {index_type!r} is not one of {', '.join(INDEX_TYPES)}")


def make_faiss_index(params: IndexParams, dim: int, n: int) -> tuple[Any, dict[str, Any]]:
    """An empty FAISS index (inner product) for ``n`` vectors of size ``dim``; returns ``(index, resolved_params)``.

    ``resolved_params`` is :meth:`IndexParams.describe` with the defaults that depend on ``n`` filled in.
    """
    import faiss

    t = params.index_type
    desc = params.describe()
    if t == "flat":
        index = faiss.IndexFlatIP(dim)
    elif t == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
    elif t == "fp16":
        index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    elif t == "sq8":
        index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    elif t == "ivfpq":
        nlist = params.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        nlist = max(1, min(nlist, n))
        m = _pq_m(dim, params.pq_m)
        nbits = params.pq_nbits
        train_n = min(n, params.train_size)
        while nbits > 1 and (1 << nbits) > train_n:  # PQ training needs at least 2**nbits points
            nbits -= 1
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        quantizer.this.disown()
        index.nprobe = min(params.nprobe, nlist)
        desc.update(nlist=nlist, pq_m=m, pq_nbits=nbits, nprobe=int(index.nprobe))
    else:  # pragma: no cover  (IndexParams validates)
        raise ValueError(t)
    desc["faiss_class"] = type(index).__name__
    desc["bytes_per_vector"] = bytes_per_vector(t, dim, params.hnsw_m, desc.get("pq_m"), desc.get("pq_nbits", 8))
    return index, desc


# ------------------------------------------------------------------------------------------------ vector blocks

@dataclass
class VectorBlock:
    """A run of vectors: ``count`` vectors that ``load()`` returns as a float32 array (loaded only when needed)."""

    count: int
    load: Callable[[], np.ndarray]


def sample_vectors(blocks: Sequence[VectorBlock], n: int, k: int) -> np.ndarray:
    """``k`` vectors spread evenly over all blocks (deterministic), for training quantisers."""
    want = np.unique(np.linspace(0, n - 1, num=min(k, n)).astype(np.int64))
    out = []
    offset = 0
    for b in blocks:
        sel = want[(want >= offset) & (want < offset + b.count)] - offset
        if len(sel):
            out.append(np.asarray(b.load()[sel], dtype=np.float32))
        offset += b.count
    return np.ascontiguousarray(np.concatenate(out))


def fill_index(params: IndexParams, dim: int, blocks: Sequence[VectorBlock],
               progress: bool | None = None) -> tuple[Any, dict[str, Any]]:
    """Build the index from vector blocks (train on an even sample when the type needs it)."""
    n = sum(b.count for b in blocks)
    index, desc = make_faiss_index(params, dim, n)
    if not index.is_trained:
        train = sample_vectors(blocks, n, params.train_size)
        log.info("training %s on %d vectors", desc["faiss_class"], len(train))
        index.train(train)
    bar = progress_bar(total=n, unit="vec", desc=f"adding to {params.index_type} index", progress=progress)
    for b in blocks:
        x = np.ascontiguousarray(b.load(), dtype=np.float32)
        if x.shape != (b.count, dim):
            raise IndexBuildError(f"a vector block has shape {x.shape}, expected ({b.count}, {dim})")
        index.add(x)
        bar.update(b.count)
    bar.close()
    return index, desc


def read_faiss_index(index_dir: str | Path) -> Any:
    """``faiss.read_index`` of a dense index folder's ``index`` file, with a one-line error for a file that is
    truncated (a full disk, a partial copy) or not a FAISS index at all.

    Raises:
        CorruptIndexError: ``INDEX/index is truncated or not a FAISS index (...); rebuild it``.
    """
    import faiss

    path = Path(index_dir) / INDEX_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{index_dir} is not a dense index folder (it has no '{INDEX_FILENAME}'); build one "
                                "with 'kd-index dense'")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        short_read = re.search(r"read error in .*?: (\d+) != (\d+)", msg)
        if short_read:
            detail = f"FAISS read {short_read.group(1)} of {short_read.group(2)} bytes it expected"
        else:
            m = re.search(r"\.\w+:\d+: (.*)$", msg)
            detail = f"FAISS: {(m.group(1) if m else msg)[:160]}"
        raise CorruptIndexError(truncated_index_message(path, f"{path.stat().st_size} bytes; {detail}")) from None


def write_faiss_folder(folder: Path, index: Any, docids: Sequence[str]) -> int:
    """Write ``index`` and ``docid`` (one id per line, in vector order) into ``folder``; returns the size of the
    ``index`` file in bytes.

    Raises:
        IndexBuildError: a write failed (a full disk: ``could not write ...: No space left on device``).
    """
    import faiss

    if index.ntotal != len(docids):
        raise IndexBuildError(f"{index.ntotal} vectors but {len(docids)} ids")
    path = folder / INDEX_FILENAME
    try:
        faiss.write_index(index, str(path))
        path = folder / DOCID_FILENAME
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(f"{d}\n" for d in docids)
    except (OSError, RuntimeError) as e:
        raise write_error(path, e) from e
    return (folder / INDEX_FILENAME).stat().st_size


def install_faiss_index(params: IndexParams, dim: int, blocks: Sequence[VectorBlock], docids: Sequence[str],
                        meta: dict[str, Any], output: Path, overwrite: bool, progress: bool | None) -> Path:
    """Fill a FAISS index from vector blocks and install it with its docids and metadata, atomically.

    The folder is built as ``OUTPUT.tmp-xxxx`` (removed on any failure); ``meta["index"]`` is set to the resolved
    index parameters and the ``index`` file's size (``file_bytes``: searching refuses a truncated file).
    """
    tmp = new_build_dir(output)
    try:
        faiss_index, desc = fill_index(params, dim, blocks, progress=progress)
        meta["index"] = desc
        desc["file_bytes"] = write_faiss_folder(tmp, faiss_index, docids)
        if params.keep_vectors:  # on disk beside the index, for exact re-scoring (kd-search --rescore)
            from kd_pyserini.index.rescore import write_rescore_vectors

            try:
                desc["vectors"] = write_rescore_vectors(tmp, blocks, dim, params.keep_vectors)
            except OSError as e:
                raise write_error(tmp / "vectors.npy", e) from e
        try:
            write_json(tmp / METADATA_FILENAME, meta)
        except OSError as e:
            raise write_error(tmp / METADATA_FILENAME, e) from e
        crash_before_install()
        install_dir(tmp, output, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output
