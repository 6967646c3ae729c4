"""Build indexes for kd_pyserini: dense FAISS indexes in Pyserini's layout, and Lucene BM25 indexes.

Command line (``kd-index`` or ``python -m kd_pyserini.index``)::

    kd-index dense --encoder distilbert-dot-tas-b --corpus collection.tsv --output indexes/tasb
                   [--batch-size 32] [--device cuda] [--precision fp32|fp16|bf16] [--max-length 200]
                   [--chunk-size 50000] [--shard I/N] [--index-type flat|hnsw|ivfpq|sq8|fp16] ...
    kd-index merge indexes/tasb.shard0 indexes/tasb.shard1 ... --output indexes/tasb [--index-type ...]
    kd-index convert indexes/tasb --output indexes/tasb-fp16 --index-type fp16
    kd-index bm25  --corpus corpus.jsonl.gz --output indexes/bm25 [--threads 4]
    kd-index info  indexes/tasb

**Layout.** A dense index folder holds ``index`` (written by ``faiss.write_index``) and ``docid`` (one id per line,
in vector order) -- exactly what Pyserini's ``FaissSearcher(DIR, query_encoder)`` reads -- plus
``kd_pyserini.json``: the encoder card, the maximum lengths, the dimension, the index type and its parameters, the
corpus (path, format, number of documents) and the versions of the software that built it.
:func:`check_index_compatible` uses it to refuse searching an index with a different encoder.

**Corpora** (read with :mod:`kd_pyserini.corpus`, ``.gz`` accepted): Pyserini JsonCollection ``{"id", "contents"}``,
BEIR ``{"_id", "title", "text"}`` (encoded and indexed as ``title + " " + text``) and MS MARCO ``pid<TAB>text``.
The corpus is checked completely before anything is written: a malformed line stops with ``file:line``, a
repeated id is refused, and no output folder is left behind.

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
``ivfpq`` is ~30x smaller but approximate (tune ``--nprobe``). ``hnsw`` trades memory for speed. Searching an
``hnsw``/``ivfpq`` index with Pyserini works unchanged (``efSearch``/``nprobe`` are saved in the index file).

**Long jobs.** Vectors are written in chunks (``DIR.partial/chunk-000123.npy`` + ``.ids``, each written to a
temporary name and renamed), so a killed run started again with the same options resumes after the last finished
chunk without re-encoding it; ``--shard I/N`` encodes only the I-th (0-based) of N contiguous ranges of the
corpus into its own index, and ``kd-index merge`` assembles the shards in order (choosing the final
``--index-type`` there). The output folder is built as ``DIR.tmp-xxxx`` and renamed into place when complete, so
``DIR`` exists only when it is whole.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

import kd_pyserini
from kd_pyserini.cards import EncoderCard, get_card
from kd_pyserini.corpus import DuplicateIdError, corpus_files, detect_format, read_corpus
from kd_pyserini.trec_io import FormatError, atomic_write

__all__ = [
    "METADATA_FILENAME", "INDEX_TYPES", "DEFAULT_CHUNK_SIZE", "IndexBuildError", "IncompatibleIndexError",
    "IndexParams", "bytes_per_vector", "make_faiss_index", "build_dense_index", "merge_dense_indexes",
    "convert_dense_index", "raw_contents",
    "build_bm25_index", "read_metadata", "check_index_compatible", "package_versions", "parse_shard",
    "shard_range", "load_docids", "main",
]

log = logging.getLogger(__name__)

METADATA_FILENAME = "kd_pyserini.json"
INDEX_TYPES = ("flat", "hnsw", "ivfpq", "sq8", "fp16")
DEFAULT_CHUNK_SIZE = 50_000
FORMAT_NAME = "kd_pyserini.faiss"
BM25_FORMAT_NAME = "kd_pyserini.lucene"
DOCS_PER_FILE = 500_000
"""Documents per converted JsonCollection file for ``kd-index bm25`` (Anserini indexes one file per thread)."""
CRASH_ENV = "KD_PYSERINI_CRASH_AFTER_CHUNK"
"""Test hook: after writing chunk number ``$KD_PYSERINI_CRASH_AFTER_CHUNK`` (0-based), the process exits at once
with status 137 without any clean-up, as if killed (``kill -9``). Used by the resume tests."""


class IndexBuildError(RuntimeError):
    """An index could not be built (bad options, an existing output, leftover chunks from other settings...)."""


class IncompatibleIndexError(ValueError):
    """An index was built with another encoder (or dimension) than the one asked to search it."""


# ------------------------------------------------------------------------------------------------------ helpers

def package_versions() -> dict[str, str | None]:
    """Versions of the software that matters for reproducing an index or a run."""
    from importlib.metadata import PackageNotFoundError, version

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
    java = getattr(kd_pyserini, "JAVA", None)
    out["java"] = str(java.version) if java is not None else None
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, obj: Any) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")


def read_metadata(index_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The ``kd_pyserini.json`` of an index folder, or ``None`` when it has none (e.g. a Pyserini prebuilt index)."""
    path = Path(index_dir) / METADATA_FILENAME
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def load_docids(index_dir: str | os.PathLike) -> list[str]:
    """The ``docid`` file of a dense index, read as Pyserini reads it (one id per line, right-stripped)."""
    with open(Path(index_dir) / "docid", encoding="utf-8") as f:
        return [line.rstrip() for line in f]


def parse_shard(spec: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"I/N"`` (I counted from 0) -> ``(I, N)``; ``None`` -> ``None``.

    Raises:
        ValueError: not of the form ``I/N`` with ``0 <= I < N``.
    """
    if spec is None or spec == "":
        return None
    if isinstance(spec, tuple):
        i, n = spec
    else:
        try:
            i_s, n_s = str(spec).split("/")
            i, n = int(i_s), int(n_s)
        except ValueError:
            raise ValueError(f"--shard {spec!r}: expected I/N, e.g. 0/4 for the first of 4 shards") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {i}/{n}: need N >= 1 and 0 <= I < N (shards are counted from 0)")
    return i, n


def shard_range(total: int, shard: tuple[int, int] | None) -> tuple[int, int]:
    """The contiguous ``[start, end)`` passage range of shard ``(I, N)`` of ``total`` passages."""
    if shard is None:
        return 0, total
    i, n = shard
    return i * total // n, (i + 1) * total // n


def _corpus_fingerprint(corpus: str | os.PathLike) -> list[dict[str, Any]]:
    out = []
    for f in corpus_files(corpus):
        st = f.stat()
        out.append({"path": str(f.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def _validate_corpus(corpus: str | os.PathLike, fmt: str) -> int:
    """Parse the whole corpus once: malformed lines, repeated ids and ids TREC runs cannot hold are refused."""
    n = 0
    for p in read_corpus(corpus, fmt, check_duplicates=True):
        if not p.id or any(c.isspace() for c in p.id):
            raise FormatError(p.path, p.line, f"id {p.id!r} is empty or contains whitespace, which the docid file "
                                              "and TREC runs cannot hold; rename the document")
        n += 1
    if n == 0:
        raise FormatError(corpus_files(corpus)[0], 0, "the corpus has no passages")
    return n


def _reserve_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not overwrite:
        raise IndexBuildError(f"{output} already exists; choose another --output or pass --overwrite to replace it")


def _tmp_dir_for(output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{output.name}.tmp-", dir=output.parent))


def _install(tmp: Path, output: Path, overwrite: bool) -> None:
    """Move a finished ``tmp`` folder to ``output`` (replacing an old one only with ``overwrite``)."""
    if output.exists():
        if not overwrite:
            raise IndexBuildError(f"{output} appeared while the index was being built; the new index is left in "
                                  f"{tmp}")
        trash = Path(tempfile.mkdtemp(prefix=f"{output.name}.old-", dir=output.parent))
        os.replace(output, trash / "old")
        os.replace(tmp, output)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, output)


# -------------------------------------------------------------------------------------------------- faiss indexes

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

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise ValueError(f"index type {self.index_type!r} is not one of {', '.join(INDEX_TYPES)}")

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"index_type": self.index_type}
        if self.index_type == "hnsw":
            d.update(hnsw_m=self.hnsw_m, ef_construction=self.ef_construction, ef_search=self.ef_search)
        elif self.index_type == "ivfpq":
            d.update(nlist=self.nlist, pq_m=self.pq_m, pq_nbits=self.pq_nbits, nprobe=self.nprobe,
                     train_size=self.train_size)
        elif self.index_type == "sq8":
            d.update(train_size=self.train_size)
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


def make_faiss_index(params: IndexParams, dim: int, n: int):
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


@dataclass
class _Block:
    """A run of vectors: ``count`` vectors that ``load()`` returns as a float32 array."""

    count: int
    load: Callable[[], np.ndarray]


def _sample(blocks: Sequence[_Block], n: int, k: int) -> np.ndarray:
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


def _fill_index(params: IndexParams, dim: int, blocks: Sequence[_Block], progress: bool = False):
    """Build the index from vector blocks (train on an even sample when the type needs it)."""
    n = sum(b.count for b in blocks)
    index, desc = make_faiss_index(params, dim, n)
    if not index.is_trained:
        train = _sample(blocks, n, params.train_size)
        log.info("training %s on %d vectors", desc["faiss_class"], len(train))
        index.train(train)
    from tqdm.auto import tqdm

    bar = tqdm(total=n, unit="vec", desc=f"adding to {params.index_type} index", disable=not progress,
               dynamic_ncols=True)
    for b in blocks:
        x = np.ascontiguousarray(b.load(), dtype=np.float32)
        if x.shape != (b.count, dim):
            raise IndexBuildError(f"a vector block has shape {x.shape}, expected ({b.count}, {dim})")
        index.add(x)
        bar.update(b.count)
    bar.close()
    return index, desc


def _write_dense(tmp: Path, index, docids: Sequence[str]) -> None:
    import faiss

    if index.ntotal != len(docids):
        raise IndexBuildError(f"{index.ntotal} vectors but {len(docids)} ids")
    faiss.write_index(index, str(tmp / "index"))
    with open(tmp / "docid", "w", encoding="utf-8") as f:
        f.writelines(f"{d}\n" for d in docids)


# ----------------------------------------------------------------------------------------------------- encoding

def _resolve_text_encoder(encoder: Any, device: str | None, precision: str, batch_size: int):
    """A name / card -> a loaded TextEncoder; an encoder object (TextEncoder, KDDocumentEncoder, or anything with
    ``card``, ``dimension`` and ``embed``) is used as it is."""
    if isinstance(encoder, (str, os.PathLike, EncoderCard)):
        from kd_pyserini.encoding import TextEncoder

        return TextEncoder(get_card(str(encoder) if isinstance(encoder, os.PathLike) else encoder), device=device,
                           precision=precision, batch_size=batch_size)  # noqa: E501
    inner = getattr(encoder, "encoder", None)
    if inner is not None and hasattr(inner, "embed"):  # a KDDocumentEncoder / KDQueryEncoder
        return inner
    if not all(hasattr(encoder, a) for a in ("card", "dimension", "embed")):
        raise TypeError("encoder must be a name, a card, a TextEncoder or a KDDocumentEncoder")
    return encoder


def _chunk_paths(partial: Path, k: int) -> tuple[Path, Path]:
    return partial / f"chunk-{k:06d}.npy", partial / f"chunk-{k:06d}.ids"


def _chunk_done(partial: Path, k: int) -> bool:
    npy, ids = _chunk_paths(partial, k)
    return npy.is_file() and ids.is_file()


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _state_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = ("encoder", "max_length", "precision", "format", "corpus", "shard", "chunk_size")
    return [k for k in keys if old.get(k) != new.get(k)]


def _crash_hook() -> int | None:
    v = os.environ.get(CRASH_ENV)
    return int(v) if v not in (None, "") else None


_LOCK_NAME = ".lock"


def _lock_partial(partial: Path):
    """Create ``partial`` and hold an exclusive lock on it (released when the process ends, even by a kill)."""
    import fcntl

    partial.mkdir(parents=True, exist_ok=True)
    f = open(partial / _LOCK_NAME, "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise IndexBuildError(f"another kd-index process is writing {partial}; wait for it to finish (or stop it) "
                              "before starting this one") from None
    return f


def build_dense_index(corpus: str | os.PathLike, encoder: Any, output: str | os.PathLike, *,
                      fmt: str | None = None, batch_size: int = 32, device: str | None = None,
                      precision: str = "fp32", max_length: int | None = None,
                      chunk_size: int = DEFAULT_CHUNK_SIZE, shard: str | tuple[int, int] | None = None,
                      index: IndexParams | str = "flat", overwrite: bool = False, keep_chunks: bool = False,
                      restart: bool = False, progress: bool = True,
                      on_chunk: Callable[[int], None] | None = None,
                      command: Sequence[str] | None = None) -> Path:
    """Encode a corpus into a FAISS index folder that Pyserini's ``FaissSearcher`` reads unchanged.

    Args:
        corpus: a JsonCollection / BEIR / MS MARCO tsv file (or folder), ``.gz`` accepted.
        encoder: card name, hub id or model directory; or an already-loaded TextEncoder / KDDocumentEncoder.
        output: the index folder to create (must not exist unless ``overwrite``).
        fmt: ``jsonl``, ``beir`` or ``tsv`` (detected when ``None``).
        batch_size: passages per forward pass.
        device / precision: see :class:`kd_pyserini.encoders.TextEncoder` (ignored for encoder objects).
        max_length: passage truncation (default: the card's ``passage_max_length``).
        chunk_size: passages per resumable chunk in ``OUTPUT.partial``.
        shard: ``"I/N"`` or ``(I, N)``: encode only the I-th (0-based) of N contiguous ranges.
        index: an :class:`IndexParams` or an index type name.
        overwrite: replace an existing ``output``.
        keep_chunks: keep ``OUTPUT.partial`` after success (default: removed).
        restart: discard chunks left by an earlier run instead of resuming from them.
        progress: show a tqdm bar (passages/s and ETA) on stderr.
        on_chunk: called with the chunk number after each chunk is safely on disk (tests use it).
        command: the command line to record in the metadata.

    Returns:
        The output folder.

    Raises:
        FormatError: a malformed corpus line (``file:line``); nothing is written.
        DuplicateIdError: an id occurs twice; nothing is written.
        IndexBuildError: ``output`` exists, or leftover chunks come from different settings.
    """
    params = IndexParams(index) if isinstance(index, str) else index
    output = Path(output)
    if isinstance(encoder, os.PathLike):
        encoder = str(encoder)
    shard_t = parse_shard(shard)
    _reserve_output(output, overwrite)
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    fmt = fmt or detect_format(corpus)
    fingerprint = _corpus_fingerprint(corpus)
    partial = Path(str(output) + ".partial")
    state_path = partial / "state.json"

    # Cheap settings first: the encoder's card is known without loading the model when given by name.
    if isinstance(encoder, (str, EncoderCard)):
        encoder = get_card(encoder)  # resolved once (a bare model folder logs its note once)
        card = encoder
    else:
        card = _resolve_text_encoder(encoder, device, precision, batch_size).card
    max_len = int(max_length or card.passage_max_length)
    wanted = {"encoder": card.describe(), "max_length": max_len, "precision": precision, "format": fmt,
              "corpus": fingerprint, "shard": list(shard_t) if shard_t else None, "chunk_size": chunk_size}

    partial_existed = partial.exists()
    lock = _lock_partial(partial)
    try:
        if restart:
            for p in partial.iterdir():
                if p.name != _LOCK_NAME:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()

        state: dict[str, Any] | None = None
        if state_path.is_file():
            state = json.loads(state_path.read_text(encoding="utf-8"))
            diff = _state_differences(state, wanted)
            if diff:
                raise IndexBuildError(
                    f"{partial} holds chunks from a run with other settings ({', '.join(diff)} differ); rerun with the "
                    "same options to resume it, or pass --restart to discard those chunks")
            log.info("resuming from %s", partial)
        else:
            try:
                total = _validate_corpus(corpus, fmt)  # before anything is written
                start, end = shard_range(total, shard_t)
                if end <= start:
                    raise IndexBuildError(f"shard {shard} of a {total}-passage corpus is empty; use fewer shards")
            except BaseException:
                if not partial_existed:  # leave nothing behind
                    shutil.rmtree(partial, ignore_errors=True)
                raise
            state = {**wanted, "num_docs": total, "start": start, "end": end, "created": _now()}
            _write_json(state_path, state)

        total, start, end = int(state["num_docs"]), int(state["start"]), int(state["end"])
        n_chunks = math.ceil((end - start) / chunk_size)
        done = [k for k in range(n_chunks) if _chunk_done(partial, k)]
        todo = n_chunks - len(done)

        text_encoder = None
        encoded = 0
        encode_seconds = 0.0
        crash_after = _crash_hook()
        if todo:
            text_encoder = _resolve_text_encoder(encoder, device, precision, batch_size)
            if text_encoder.card.describe() != card.describe():
                raise IndexBuildError("the encoder object's card differs from the card resolved for it")
            from tqdm.auto import tqdm

            done_set = set(done)
            already = sum(min(chunk_size, end - start - k * chunk_size) for k in done)
            bar = tqdm(total=end - start, initial=already, unit="psg", unit_scale=True, dynamic_ncols=True,
                       desc=f"encoding {output.name}" + (f" shard {shard_t[0]}/{shard_t[1]}" if shard_t else ""),
                       disable=not progress, smoothing=0.05)
            # CPU: sub-blocks of the chunk only to move the progress bar; CUDA: the whole chunk per call, so the
            # encoder can overlap tokenisation with the GPU. Either way a chunk's vectors depend only on the chunk.
            on_cuda = getattr(getattr(text_encoder, "device", None), "type", "cpu") == "cuda"
            k = 0
            ids: list[str] = []
            texts: list[str] = []

            def flush(k: int) -> None:
                nonlocal encoded, encode_seconds
                t0 = time.perf_counter()
                vecs = []
                block = len(texts) if on_cuda else batch_size * 32
                for i in range(0, len(texts), block):
                    vecs.append(text_encoder.embed(texts[i:i + block], max_len, batch_size))
                    bar.update(len(texts[i:i + block]))
                arr = np.ascontiguousarray(np.concatenate(vecs).astype(np.float32, copy=False))
                encode_seconds += time.perf_counter() - t0
                encoded += len(texts)
                npy, idf = _chunk_paths(partial, k)
                with atomic_write(idf) as f:  # ids first; the .npy, renamed last, marks the chunk as done
                    f.writelines(f"{d}\n" for d in ids)
                _save_npy(npy, arr)
                if crash_after is not None and k >= crash_after:
                    os._exit(137)
                if on_chunk is not None:
                    on_chunk(k)

            for p in read_corpus(corpus, fmt, check_duplicates=False, start=start):
                pos = len(ids) + k * chunk_size + start
                if pos >= end:
                    break
                if k in done_set:
                    ids.append(p.id)  # only counted, not encoded
                else:
                    ids.append(p.id)
                    texts.append(p.contents)
                if len(ids) == chunk_size or pos == end - 1:
                    if k not in done_set:
                        flush(k)
                    k += 1
                    ids, texts = [], []
            bar.close()
            if k != n_chunks:
                raise IndexBuildError(f"the corpus changed while it was encoded: {k} chunks read, {n_chunks} expected")

        # Assemble: every chunk is on disk.
        blocks: list[_Block] = []
        docids: list[str] = []
        dim = None
        for k in range(n_chunks):
            npy, idf = _chunk_paths(partial, k)
            ids_k = idf.read_text(encoding="utf-8").splitlines()
            arr = np.load(npy, mmap_mode="r")
            if arr.shape[0] != len(ids_k):
                raise IndexBuildError(f"{npy} has {arr.shape[0]} vectors but {idf} has {len(ids_k)} ids; delete both "
                                      "and "
                                      "run again to re-encode that chunk")
            dim = int(arr.shape[1])
            docids.extend(ids_k)
            blocks.append(_Block(len(ids_k), (lambda p=npy: np.load(p, mmap_mode="r"))))
        if len(docids) != end - start:
            raise IndexBuildError(f"{len(docids)} vectors in {partial}, expected {end - start}")
        if text_encoder is not None and dim != text_encoder.dimension:
            raise IndexBuildError(f"chunks have dimension {dim}, the encoder {text_encoder.dimension}")

        meta = {
            "format": FORMAT_NAME,
            "format_version": 1,
            "encoder": card.describe(),
            "dimension": dim,
            "similarity": card.similarity,
            "normalized": card.normalize,
            "max_length": {"query": card.query_max_length, "passage": max_len},
            "precision": precision,
            "batch_size": batch_size,
            "index": None,
            "num_vectors": len(docids),
            "corpus": {"path": str(Path(corpus).resolve()), "format": fmt, "num_docs": total,
                       "files": [{"name": Path(f["path"]).name, "size": f["size"]} for f in fingerprint]},
            "shard": ({"index": shard_t[0], "count": shard_t[1], "start": start, "end": end} if shard_t else None),
            "encoding": {"passages_encoded_this_run": encoded, "seconds": round(encode_seconds, 3),
                         "passages_per_second": round(encoded / encode_seconds, 2) if encode_seconds else None,
                         "resumed_chunks": len(done)},
            "created": _now(),
            "versions": package_versions(),
            "command": list(command) if command is not None else None,
        }
        tmp = _tmp_dir_for(output)
        try:
            faiss_index, desc = _fill_index(params, dim, blocks, progress=progress and params.index_type != "flat")
            meta["index"] = desc
            _write_dense(tmp, faiss_index, docids)
            _write_json(tmp / METADATA_FILENAME, meta)
            _install(tmp, output, overwrite)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if not keep_chunks:
            shutil.rmtree(partial, ignore_errors=True)
    except BaseException:
        if not partial_existed and partial.is_dir() and not any(partial.glob("chunk-*.npy")):
            shutil.rmtree(partial, ignore_errors=True)  # nothing worth resuming: leave nothing behind
        raise
    finally:
        lock.close()
    return output


# ------------------------------------------------------------------------------------------------------ merging

def _build_from_blocks(params: IndexParams, dim: int, blocks: Sequence[_Block], docids: Sequence[str],
                       meta: dict[str, Any], output: Path, overwrite: bool, progress: bool) -> Path:
    """Fill a FAISS index from vector blocks and install it with its docids and metadata, atomically."""
    tmp = _tmp_dir_for(output)
    try:
        faiss_index, desc = _fill_index(params, dim, blocks, progress=progress)
        meta["index"] = desc
        _write_dense(tmp, faiss_index, docids)
        _write_json(tmp / METADATA_FILENAME, meta)
        _install(tmp, output, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output


def _reconstruct_blocks(index_dir: Path, block: int = 65_536) -> tuple[list[_Block], int]:
    import faiss

    index = faiss.read_index(str(index_dir / "index"))
    cls = type(faiss.downcast_index(index)).__name__
    if cls not in ("IndexFlatIP", "IndexFlat", "IndexHNSWFlat"):
        raise IndexBuildError(f"{index_dir} is a {cls}, whose vectors are compressed; merge needs shards that keep "
                              "the exact vectors: build the shards with --index-type flat (the default) or hnsw and "
                              "choose the compressed type with 'kd-index merge --index-type'")
    n = index.ntotal
    blocks = [_Block(min(block, n - i), (lambda i=i: index.reconstruct_n(i, min(block, n - i))))
              for i in range(0, n, block)]
    return blocks, index.d


def merge_dense_indexes(shards: Sequence[str | os.PathLike], output: str | os.PathLike, *,
                        index: IndexParams | str = "flat", overwrite: bool = False, progress: bool = True,
                        command: Sequence[str] | None = None) -> Path:
    """Assemble the shard indexes of ``kd-index dense --shard I/N`` into one index, in shard order.

    The shards must come from the same encoder, maximum length and corpus, and cover ``0..N-1`` exactly once.

    Raises:
        IndexBuildError: missing/extra/repeated shards, or shards built with different settings.
    """
    params = IndexParams(index) if isinstance(index, str) else index
    output = Path(output)
    _reserve_output(output, overwrite)
    if not shards:
        raise IndexBuildError("no shard folders given")
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
                raise IndexBuildError(f"{s} differs from {metas[0][0]} in {key}: {m.get(key)} vs {first.get(key)}")
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
    pos = 0
    blocks: list[_Block] = []
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
                             for s, m in metas],
                created=_now(), versions=package_versions(), command=list(command) if command else None)
    return _build_from_blocks(params, dim, blocks, docids, meta, output, overwrite, progress)


def convert_dense_index(source: str | os.PathLike, output: str | os.PathLike, *, index: IndexParams | str = "fp16",
                        overwrite: bool = False, progress: bool = True,
                        command: Sequence[str] | None = None) -> Path:
    """Re-index the vectors of an exact index (``flat`` or ``hnsw``) as another index type, without re-encoding.

    The ``docid`` order and the metadata are kept; ``index`` in the metadata describes the new index.
    """
    params = IndexParams(index) if isinstance(index, str) else index
    source, output = Path(source), Path(output)
    _reserve_output(output, overwrite)
    meta = read_metadata(source) or {}
    blocks, dim = _reconstruct_blocks(source)
    docids = load_docids(source)
    meta = {**meta, "converted_from": {"path": str(source.resolve()), "index": meta.get("index")},
            "created": _now(), "versions": package_versions(), "command": list(command) if command else None}
    return _build_from_blocks(params, dim, blocks, docids, meta, output, overwrite, progress)


# -------------------------------------------------------------------------------------------------- compatibility

def check_index_compatible(index_dir: str | os.PathLike, card: EncoderCard | str,
                           dimension: int | None = None) -> dict[str, Any] | None:
    """Refuse to search a dense index with another encoder than the one that built it.

    Args:
        index_dir: the index folder.
        card: the query encoder's card (or name).
        dimension: the query encoder's vector size (default: the card's).

    Returns:
        The index metadata, or ``None`` for an index without ``kd_pyserini.json`` (e.g. Pyserini's own), which is
        accepted (the caller should still compare the FAISS dimension).

    Raises:
        IncompatibleIndexError: a different encoder or dimension, in one line saying what to do.
        FileNotFoundError: ``index_dir`` is not a dense index folder.
    """
    d = Path(index_dir)
    if not (d / "index").is_file() or not (d / "docid").is_file():
        raise FileNotFoundError(f"{d} is not a dense index folder (it needs 'index' and 'docid'); build one with "
                                "'kd-index dense'")
    card = get_card(card)
    meta = read_metadata(d)
    dim = dimension or card.dimension
    if meta is None:
        return None
    built = meta.get("encoder") or {}
    same = (card.name == built.get("name") or card.model_id == built.get("model_id") or
            _same_path(card.model_id, built.get("model_id")))
    if not same:
        raise IncompatibleIndexError(
            f"index {d} was built with encoder '{built.get('name')}' ({built.get('model_id')}), not "
            f"'{card.name}' ({card.model_id}); queries must be encoded by the same model: search with --encoder "
            f"{built.get('name')} or rebuild the index with --encoder {card.name}")
    if dim is not None and meta.get("dimension") is not None and int(meta["dimension"]) != int(dim):
        raise IncompatibleIndexError(
            f"index {d} holds {meta['dimension']}-dimensional vectors but encoder '{card.name}' makes "
            f"{dim}-dimensional "
            "ones; rebuild the index with this encoder")
    if built.get("similarity") and built.get("similarity") != card.similarity:
        raise IncompatibleIndexError(
            f"index {d} was built with {built['similarity']} similarity, encoder '{card.name}' uses "
            f"{card.similarity}; rebuild the index")
    return meta


def _same_path(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    try:
        pa, pb = Path(a).expanduser(), Path(b).expanduser()
        return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------------------- BM25

def raw_contents(raw: str | None) -> str:
    """The passage text from a Lucene document's stored raw JSON (``contents``, or BEIR ``title``/``text``)."""
    if raw is None:
        return ""
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        return raw
    if not isinstance(obj, dict):
        return raw
    if "contents" in obj:
        return str(obj["contents"])
    if "text" in obj:
        title = str(obj.get("title") or "").strip()
        text = str(obj.get("text") or "").strip()
        return f"{title} {text}" if title else text
    return raw


def _anserini_index(input_dir: Path, index_dir: Path, threads: int, extra: Sequence[str] = ()) -> None:
    from jnius import autoclass

    args = ["-collection", "JsonCollection", "-input", str(input_dir), "-index", str(index_dir),
            "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads),
            "-storePositions", "-storeDocvectors", "-storeRaw", *extra]
    log.info("IndexCollection %s", " ".join(args))
    autoclass("io.anserini.index.IndexCollection").main(args)


def build_bm25_index(corpus: str | os.PathLike, output: str | os.PathLike, *, fmt: str | None = None,
                     threads: int = 1, overwrite: bool = False, progress: bool = True,
                     command: Sequence[str] | None = None) -> Path:
    """Build Pyserini's Lucene index (positions, docvectors, raw) from a JsonCollection / BEIR / tsv corpus.

    The corpus is converted to a JsonCollection ``{"id", "contents"}`` (``contents = title + " " + text`` for BEIR,
    as Pyserini's BEIR "flat" indexes) in a temporary folder, then indexed by Anserini's ``IndexCollection`` with
    ``-generator DefaultLuceneDocumentGenerator -storePositions -storeDocvectors -storeRaw``; the index is built in
    ``OUTPUT.tmp-xxxx`` and renamed into place when complete, with a ``kd_pyserini.json`` beside Lucene's files.

    Raises:
        FormatError / DuplicateIdError: a malformed line or a repeated id; nothing is left behind.
        IndexBuildError: ``output`` exists, or Anserini indexed a different number of documents.
    """
    output = Path(output)
    _reserve_output(output, overwrite)
    fmt = fmt or detect_format(corpus)
    fingerprint = _corpus_fingerprint(corpus)
    work = _tmp_dir_for(output)
    try:
        coll = work / "collection"
        coll.mkdir()
        n = 0
        n_empty = 0
        t0 = time.perf_counter()
        from tqdm.auto import tqdm

        # Anserini gives each input file to one thread: split the collection so --threads can be used.
        f = None
        try:
            for p in tqdm(read_corpus(corpus, fmt, check_duplicates=True), unit="doc", desc="converting",
                          disable=not progress, dynamic_ncols=True):
                if not p.id or any(c.isspace() for c in p.id):
                    raise FormatError(p.path, p.line, f"id {p.id!r} is empty or contains whitespace; rename the "
                                                      "document")
                if n % DOCS_PER_FILE == 0:
                    if f is not None:
                        f.close()
                    f = open(coll / f"docs{n // DOCS_PER_FILE:04d}.jsonl", "w", encoding="utf-8")
                contents = p.contents
                n_empty += not contents.strip()
                f.write(json.dumps({"id": p.id, "contents": contents}, ensure_ascii=False) + "\n")
                n += 1
        finally:
            if f is not None:
                f.close()
        if n == 0:
            raise FormatError(corpus_files(corpus)[0], 0, "the corpus has no passages")
        t_convert = time.perf_counter() - t0
        lucene = work / "index"
        t1 = time.perf_counter()
        _anserini_index(coll, lucene, threads)
        t_index = time.perf_counter() - t1
        from pyserini.index.lucene import LuceneIndexReader

        stats = LuceneIndexReader(str(lucene)).stats()
        indexed = int(stats["documents"])
        if indexed != n - n_empty:
            raise IndexBuildError(f"Anserini indexed {indexed} documents of {n} ({n_empty} empty); see its log above")
        if n_empty:
            log.warning("%d documents have empty contents; Anserini skips them", n_empty)
        meta = {
            "format": BM25_FORMAT_NAME,
            "format_version": 1,
            "kind": "lucene-bm25",
            "collection": "JsonCollection",
            "generator": "DefaultLuceneDocumentGenerator",
            "stored": ["positions", "docvectors", "raw"],
            "contents": "title + ' ' + text" if fmt == "beir" else "contents" if fmt == "jsonl" else "text",
            "corpus": {"path": str(Path(corpus).resolve()), "format": fmt, "num_docs": n, "empty_docs": n_empty,
                       "files": [{"name": Path(f["path"]).name, "size": f["size"]} for f in fingerprint]},
            "stats": {k: int(v) for k, v in stats.items()},
            "timing": {"convert_seconds": round(t_convert, 3), "index_seconds": round(t_index, 3),
                       "docs_per_second": round(n / t_index, 1) if t_index else None},
            "threads": threads,
            "created": _now(),
            "versions": package_versions(),
            "command": list(command) if command is not None else None,
        }
        _write_json(lucene / METADATA_FILENAME, meta)
        _install(lucene, output, overwrite)  # OUTPUT.tmp-xxxx/index -> OUTPUT: one rename
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return output


# -------------------------------------------------------------------------------------------------------- the CLI

def _index_options(f):
    opts = [
        click.option("--index-type", type=click.Choice(INDEX_TYPES), default="flat", show_default=True,
                     help="flat: exact IndexFlatIP (3,072 B/vector at d=768: 27.2 GB for 8.8M passages); "
                          "hnsw: IndexHNSWFlat (~3.3 KB/vector, 29.4 GB); fp16: scalar quantiser QT_fp16 "
                          "(1,536 B, 13.6 GB); sq8: QT_8bit (768 B, 6.8 GB); ivfpq: IVF-PQ (m + 8 = 104 B, 0.92 GB)."),
        click.option("--hnsw-m", type=int, default=32, show_default=True, help="HNSW: neighbours per node (M)."),
        click.option("--ef-construction", type=int, default=200, show_default=True, help="HNSW: efConstruction."),
        click.option("--ef-search", type=int, default=256, show_default=True,
                     help="HNSW: efSearch saved in the index (Pyserini searches with it)."),
        click.option("--nlist", type=int, default=None, help="IVF-PQ: number of cells [4*sqrt(n), at most n/39]."),
        click.option("--pq-m", type=int, default=None, help="IVF-PQ: sub-quantisers [d/8]."),
        click.option("--pq-nbits", type=int, default=8, show_default=True, help="IVF-PQ: bits per code."),
        click.option("--nprobe", type=int, default=32, show_default=True,
                     help="IVF-PQ: cells searched per query, saved in the index."),
        click.option("--train-size", type=int, default=262_144, show_default=True,
                     help="sq8/ivfpq: vectors sampled (evenly) for training."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _params_from(kw: dict[str, Any]) -> IndexParams:
    return IndexParams(index_type=kw.pop("index_type"), hnsw_m=kw.pop("hnsw_m"),
                       ef_construction=kw.pop("ef_construction"), ef_search=kw.pop("ef_search"),
                       nlist=kw.pop("nlist"), pq_m=kw.pop("pq_m"), pq_nbits=kw.pop("pq_nbits"),
                       nprobe=kw.pop("nprobe"), train_size=kw.pop("train_size"))


def _fail(e: Exception) -> None:
    raise click.ClickException(str(e)) from e


_HANDLED = (FormatError, DuplicateIdError, IndexBuildError, IncompatibleIndexError, FileNotFoundError, ValueError,
            OSError)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def main(verbose: bool) -> None:
    """Build dense (FAISS, Pyserini layout) and BM25 (Lucene) indexes for kd_pyserini."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command("dense")
@click.option("--encoder", required=True, help="Card name (distilbert-dot-tas-b, distilbert-dot-margin-mse, "
                                               "all-minilm-l6-v2...), hub id or model directory.")
@click.option("--corpus", required=True, type=click.Path(exists=True),
              help="JsonCollection .jsonl, BEIR corpus.jsonl or MS MARCO .tsv (.gz accepted), or a folder of them.")
@click.option("--output", required=True, type=click.Path(), help="Index folder to create.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "beir", "tsv"]), default=None,
              help="Corpus format [detected].")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Passages per forward pass.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 [cuda when present].")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]), default="fp32", show_default=True,
              help="int8: CPU only, dynamic quantisation (the fast query option; see PERFORMANCE.md).")
@click.option("--max-length", type=int, default=None, help="Passage truncation in tokens [the card's; 200 for "
                                                          "TAS-B/Margin-MSE].")
@click.option("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, show_default=True,
              help="Passages per resumable chunk (OUTPUT.partial/chunk-NNNNNN.npy).")
@click.option("--shard", default=None, metavar="I/N", help="Encode only shard I (0-based) of N contiguous ranges.")
@_index_options
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--restart", is_flag=True, help="Discard chunks of an earlier interrupted run instead of resuming.")
@click.option("--keep-chunks", is_flag=True, help="Keep OUTPUT.partial after success.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def dense_cmd(**kw: Any) -> None:
    """Encode a corpus into a FAISS index readable by Pyserini's FaissSearcher (resumable, shardable)."""
    params = _params_from(kw)
    try:
        out = build_dense_index(kw["corpus"], kw["encoder"], kw["output"], fmt=kw["fmt"],
                                batch_size=kw["batch_size"], device=kw["device"], precision=kw["precision"],
                                max_length=kw["max_length"], chunk_size=kw["chunk_size"], shard=kw["shard"],
                                index=params, overwrite=kw["overwrite"], keep_chunks=kw["keep_chunks"],
                                restart=kw["restart"], progress=kw["progress"], command=sys.argv)
    except _HANDLED as e:
        _fail(e)
    meta = read_metadata(out)
    enc = meta["encoding"]
    click.echo(f"{out}: {meta['num_vectors']} vectors x {meta['dimension']} ({meta['index']['faiss_class']}); "
               f"encoded {enc['passages_encoded_this_run']} passages"
               + (f" at {enc['passages_per_second']} passages/s" if enc["passages_per_second"] else ""), err=True)


@main.command("merge")
@click.argument("shards", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--output", required=True, type=click.Path(), help="Index folder to create.")
@_index_options
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def merge_cmd(shards: tuple[str, ...], output: str, overwrite: bool, progress: bool, **kw: Any) -> None:
    """Merge the shard indexes of 'kd-index dense --shard I/N' (any order) into one index."""
    params = _params_from(kw)
    try:
        out = merge_dense_indexes(shards, output, index=params, overwrite=overwrite, progress=progress,
                                  command=sys.argv)
    except _HANDLED as e:
        _fail(e)
    meta = read_metadata(out)
    click.echo(f"{out}: {meta['num_vectors']} vectors from {len(shards)} shards ({meta['index']['faiss_class']})",
               err=True)


@main.command("convert")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.option("--output", required=True, type=click.Path(), help="Index folder to create.")
@_index_options
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def convert_cmd(source: str, output: str, overwrite: bool, progress: bool, **kw: Any) -> None:
    """Re-index a flat (or hnsw) index as another --index-type without re-encoding."""
    params = _params_from(kw)
    try:
        out = convert_dense_index(source, output, index=params, overwrite=overwrite, progress=progress,
                                  command=sys.argv)
    except _HANDLED as e:
        _fail(e)
    meta = read_metadata(out)
    click.echo(f"{out}: {meta['num_vectors']} vectors ({meta['index']['faiss_class']}, "
               f"{meta['index']['bytes_per_vector']:.0f} bytes/vector)", err=True)


@main.command("bm25")
@click.option("--corpus", required=True, type=click.Path(exists=True),
              help="JsonCollection .jsonl, BEIR corpus.jsonl or MS MARCO .tsv (.gz accepted).")
@click.option("--output", required=True, type=click.Path(), help="Lucene index folder to create.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "beir", "tsv"]), default=None,
              help="Corpus format [detected].")
@click.option("--threads", type=int, default=1, show_default=True, help="Anserini indexing threads.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def bm25_cmd(corpus: str, output: str, fmt: str | None, threads: int, overwrite: bool, progress: bool) -> None:
    """Build Pyserini's Lucene BM25 index (positions, docvectors, raw documents) from a corpus."""
    try:
        out = build_bm25_index(corpus, output, fmt=fmt, threads=threads, overwrite=overwrite, progress=progress,
                               command=sys.argv)
    except _HANDLED as e:
        _fail(e)
    meta = read_metadata(out)
    click.echo(f"{out}: {meta['stats']['documents']} documents indexed in {meta['timing']['index_seconds']} s",
               err=True)


@main.command("info")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False))
def info_cmd(index_dir: str) -> None:
    """Print an index's kd_pyserini.json."""
    meta = read_metadata(index_dir)
    if meta is None:
        raise click.ClickException(f"{index_dir} has no {METADATA_FILENAME} (not built by kd-index)")
    click.echo(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
