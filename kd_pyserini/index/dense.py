"""Encode a corpus into a dense FAISS index in Pyserini's layout: resumable, shardable.

**Corpora** (read with :mod:`kd_pyserini.corpus`, ``.gz`` accepted): Pyserini JsonCollection ``{"id", "contents"}``,
BEIR ``{"_id", "title", "text"}`` (encoded and indexed as ``title + " " + text``) and MS MARCO ``pid<TAB>text``.
The corpus is checked completely before anything is written: a malformed line stops with ``file:line``, a
repeated id is refused, and no output folder is left behind.

**Long jobs.** Vectors are written in chunks (:mod:`kd_pyserini.index.chunks`), so a killed run started again with
the same options resumes after the last finished chunk without re-encoding it; ``shard="I/N"`` encodes only the
I-th (0-based) of N contiguous ranges of the corpus into its own index, and
:func:`kd_pyserini.index.merge.merge_dense_indexes` assembles the shards in order (choosing the final index type
there). The output folder is built as ``DIR.tmp-xxxx`` and renamed into place when complete, so ``DIR`` exists only
when it is whole. Nothing here imports Pyserini or starts Java.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kd_pyserini.cards import EncoderCard, get_card
from kd_pyserini.corpus import corpus_files, detect_format, read_corpus
from kd_pyserini.index import chunks
from kd_pyserini.index.faiss_factory import IndexParams, install_faiss_index
from kd_pyserini.index.layout import (FORMAT_NAME, IndexBuildError, corpus_fingerprint, corpus_summary, now,
                                      package_versions, reserve_output, write_json)
from kd_pyserini.progress import progress_bar
from kd_pyserini.trec_io import FormatError

__all__ = ["DEFAULT_CHUNK_SIZE", "build_dense_index", "parse_shard", "shard_range"]

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 50_000


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


def _resolve_text_encoder(encoder: Any, device: str | None, precision: str, batch_size: int) -> Any:
    """A name / card -> a loaded TextEncoder; an encoder object (TextEncoder, KDDocumentEncoder, or anything with
    ``card``, ``dimension`` and ``embed``) is used as it is."""
    if isinstance(encoder, (str, os.PathLike, EncoderCard)):
        from kd_pyserini.encoding import TextEncoder

        return TextEncoder(get_card(str(encoder) if isinstance(encoder, os.PathLike) else encoder), device=device,
                           precision=precision, batch_size=batch_size)
    inner = getattr(encoder, "encoder", None)
    if inner is not None and hasattr(inner, "embed"):  # a KDDocumentEncoder / KDQueryEncoder
        return inner
    if not all(hasattr(encoder, a) for a in ("card", "dimension", "embed")):
        raise TypeError("encoder must be a name, a card, a TextEncoder or a KDDocumentEncoder")
    return encoder


@dataclass
class _Job:
    """The settings of one dense build that decide its vectors (fixed before any model is loaded)."""

    corpus: str | os.PathLike
    fmt: str
    card: EncoderCard
    max_len: int
    precision: str
    batch_size: int
    chunk_size: int
    shard: tuple[int, int] | None
    fingerprint: list[dict[str, Any]]

    def wanted(self) -> dict[str, Any]:
        """The settings recorded in ``state.json``; resuming requires the same (:data:`chunks.STATE_KEYS`)."""
        return {"encoder": self.card.describe(), "max_length": self.max_len, "precision": self.precision,
                "format": self.fmt, "corpus": self.fingerprint, "shard": list(self.shard) if self.shard else None,
                "chunk_size": self.chunk_size}


@dataclass
class _EncodeStats:
    """What this run encoded (the ``encoding`` entry of the metadata)."""

    encoded: int = 0
    seconds: float = 0.0
    resumed: list[int] = field(default_factory=list)


def _start_or_resume(partial: Path, job: _Job, partial_existed: bool, shard_spec: Any) -> dict[str, Any]:
    """The state of the chunk store: the earlier run's (same settings required) or a new one, written after the
    whole corpus was validated (on a bad corpus a new store is removed again, so nothing is left behind)."""
    wanted = job.wanted()
    state = chunks.read_state(partial)
    if state is not None:
        chunks.check_state(partial, state, wanted)
        log.info("resuming from %s", partial)
        return state
    try:
        total = _validate_corpus(job.corpus, job.fmt)  # before anything is written
        start, end = shard_range(total, job.shard)
        if end <= start:
            raise IndexBuildError(f"shard {shard_spec} of a {total}-passage corpus is empty; use fewer shards")
    except BaseException:
        if not partial_existed:  # leave nothing behind
            shutil.rmtree(partial, ignore_errors=True)
        raise
    state = {**wanted, "num_docs": total, "start": start, "end": end, "created": now()}
    write_json(partial / chunks.STATE_FILENAME, state)
    return state


def _iter_chunks(corpus: str | os.PathLike, fmt: str, start: int, end: int, chunk_size: int,
                 skip: set[int]) -> Iterator[tuple[int, list[str], list[str]]]:
    """``(k, ids, texts)`` for each chunk of passages ``[start, end)``, in order; for chunks in ``skip`` (already
    on disk) the ids are only counted and ``texts`` is empty."""
    k = 0
    ids: list[str] = []
    texts: list[str] = []
    for p in read_corpus(corpus, fmt, check_duplicates=False, start=start):
        pos = len(ids) + k * chunk_size + start
        if pos >= end:
            break
        ids.append(p.id)
        if k not in skip:
            texts.append(p.contents)
        if len(ids) == chunk_size or pos == end - 1:
            yield k, ids, texts
            k += 1
            ids, texts = [], []


def _embed(text_encoder: Any, texts: list[str], max_len: int, batch_size: int, bar: Any) -> np.ndarray:
    """The vectors of one chunk. CPU: sub-blocks of the chunk only to move the progress bar; CUDA: the whole chunk
    per call, so the encoder can overlap tokenisation with the GPU. Either way a chunk's vectors depend only on
    the chunk."""
    on_cuda = getattr(getattr(text_encoder, "device", None), "type", "cpu") == "cuda"
    block = len(texts) if on_cuda else batch_size * 32
    vecs = []
    for i in range(0, len(texts), block):
        vecs.append(text_encoder.embed(texts[i:i + block], max_len, batch_size))
        bar.update(len(texts[i:i + block]))
    return np.ascontiguousarray(np.concatenate(vecs).astype(np.float32, copy=False))


def _encode_missing(partial: Path, job: _Job, state: dict[str, Any], text_encoder: Any, done: list[int],
                    n_chunks: int, desc: str, progress: bool | None,
                    on_chunk: Callable[[int], None] | None) -> _EncodeStats:
    """Encode every chunk not in ``done`` and put it on disk (calling ``on_chunk(k)`` after each)."""
    start, end = int(state["start"]), int(state["end"])
    stats = _EncodeStats(resumed=list(done))
    kill_after = chunks.crash_after()
    done_set = set(done)
    already = sum(min(job.chunk_size, end - start - k * job.chunk_size) for k in done)
    bar = progress_bar(total=end - start, initial=already, unit="psg", unit_scale=True, desc=desc,
                       progress=progress, smoothing=0.05)
    n_read = 0
    for k, ids, texts in _iter_chunks(job.corpus, job.fmt, start, end, job.chunk_size, done_set):
        n_read = k + 1
        if k in done_set:
            continue
        t0 = time.perf_counter()
        vectors = _embed(text_encoder, texts, job.max_len, job.batch_size, bar)
        stats.seconds += time.perf_counter() - t0
        stats.encoded += len(texts)
        chunks.write_chunk(partial, k, ids, vectors)
        if kill_after is not None and k >= kill_after:
            os._exit(137)
        if on_chunk is not None:
            on_chunk(k)
    bar.close()
    if n_read != n_chunks:
        raise IndexBuildError(f"the corpus changed while it was encoded: {n_read} chunks read, {n_chunks} expected")
    return stats


def _metadata(job: _Job, state: dict[str, Any], dim: int | None, n_vectors: int, stats: _EncodeStats,
              command: Sequence[str] | None) -> dict[str, Any]:
    """The ``kd_pyserini.json`` of a dense index (``index`` is filled in when the FAISS index is built)."""
    card, shard = job.card, job.shard
    start, end = int(state["start"]), int(state["end"])
    return {
        "format": FORMAT_NAME,
        "format_version": 1,
        "encoder": card.describe(),
        "dimension": dim,
        "similarity": card.similarity,
        "normalized": card.normalize,
        "max_length": {"query": card.query_max_length, "passage": job.max_len},
        "precision": job.precision,
        "batch_size": job.batch_size,
        "index": None,
        "num_vectors": n_vectors,
        "corpus": corpus_summary(job.corpus, job.fmt, job.fingerprint, num_docs=int(state["num_docs"])),
        "shard": ({"index": shard[0], "count": shard[1], "start": start, "end": end} if shard else None),
        "encoding": {"passages_encoded_this_run": stats.encoded, "seconds": round(stats.seconds, 3),
                     "passages_per_second": round(stats.encoded / stats.seconds, 2) if stats.seconds else None,
                     "resumed_chunks": len(stats.resumed)},
        "created": now(),
        "versions": package_versions(),
        "command": list(command) if command is not None else None,
    }


def build_dense_index(corpus: str | os.PathLike, encoder: Any, output: str | os.PathLike, *,
                      fmt: str | None = None, batch_size: int = 32, device: str | None = None,
                      precision: str = "fp32", max_length: int | None = None,
                      chunk_size: int = DEFAULT_CHUNK_SIZE, shard: str | tuple[int, int] | None = None,
                      index: IndexParams | str = "flat", overwrite: bool = False, keep_chunks: bool = False,
                      restart: bool = False, progress: bool | None = None,
                      on_chunk: Callable[[int], None] | None = None,
                      command: Sequence[str] | None = None) -> Path:
    """Encode a corpus into a FAISS index folder that Pyserini's ``FaissSearcher`` reads unchanged.

    Args:
        corpus: a JsonCollection / BEIR / MS MARCO tsv file (or folder), ``.gz`` accepted.
        encoder: card name, hub id or model directory; or an already-loaded TextEncoder / KDDocumentEncoder.
        output: the index folder to create (must not exist unless ``overwrite``).
        fmt: ``jsonl``, ``beir`` or ``tsv`` (detected when ``None``).
        batch_size: passages per forward pass.
        device / precision: see :class:`kd_pyserini.encoding.TextEncoder` (ignored for encoder objects).
        max_length: passage truncation (default: the card's ``passage_max_length``).
        chunk_size: passages per resumable chunk in ``OUTPUT.partial``.
        shard: ``"I/N"`` or ``(I, N)``: encode only the I-th (0-based) of N contiguous ranges.
        index: an :class:`IndexParams` or an index type name.
        overwrite: replace an existing ``output``.
        keep_chunks: keep ``OUTPUT.partial`` after success (default: removed).
        restart: discard chunks left by an earlier run instead of resuming from them.
        progress: progress bars (passages/s and ETA) on stderr; ``None``: when stderr is a terminal.
        on_chunk: called with the chunk number after each chunk is safely on disk (tests use it).
        command: the command line to record in the metadata.

    Returns:
        The output folder.

    Raises:
        FormatError: a malformed corpus line (``file:line``); nothing is written.
        DuplicateIdError: an id occurs twice; nothing is written.
        IndexBuildError: ``output`` exists, or leftover chunks come from different settings.
    """
    params = IndexParams.of(index)
    output = Path(output)
    if isinstance(encoder, os.PathLike):
        encoder = str(encoder)
    shard_t = parse_shard(shard)
    reserve_output(output, overwrite)
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    fmt = fmt or detect_format(corpus)
    fingerprint = corpus_fingerprint(corpus)
    partial = chunks.partial_dir(output)

    # Cheap settings first: the encoder's card is known without loading the model when given by name.
    if isinstance(encoder, (str, EncoderCard)):
        encoder = get_card(encoder)  # resolved once (a bare model folder logs its note once)
        card = encoder
    else:
        card = _resolve_text_encoder(encoder, device, precision, batch_size).card
    job = _Job(corpus, fmt, card, int(max_length or card.passage_max_length), precision, batch_size, chunk_size,
               shard_t, fingerprint)

    partial_existed = partial.exists()
    lock = chunks.lock_store(partial)
    try:
        if restart:
            chunks.clear_store(partial)
        state = _start_or_resume(partial, job, partial_existed, shard)
        start, end = int(state["start"]), int(state["end"])
        n_chunks = math.ceil((end - start) / chunk_size)
        done = [k for k in range(n_chunks) if chunks.chunk_done(partial, k)]

        text_encoder = None
        stats = _EncodeStats(resumed=done)
        if len(done) < n_chunks:
            text_encoder = _resolve_text_encoder(encoder, device, precision, batch_size)
            if text_encoder.card.describe() != card.describe():
                raise IndexBuildError("the encoder object's card differs from the card resolved for it")
            desc = f"encoding {output.name}" + (f" shard {shard_t[0]}/{shard_t[1]}" if shard_t else "")
            stats = _encode_missing(partial, job, state, text_encoder, done, n_chunks, desc, progress, on_chunk)

        # Assemble: every chunk is on disk.
        blocks, docids, dim = chunks.read_chunks(partial, n_chunks)
        if len(docids) != end - start:
            raise IndexBuildError(f"{len(docids)} vectors in {partial}, expected {end - start}")
        if text_encoder is not None and dim != text_encoder.dimension:
            raise IndexBuildError(f"chunks have dimension {dim}, the encoder {text_encoder.dimension}")
        meta = _metadata(job, state, dim, len(docids), stats, command)
        # adding to a flat index is a copy: no bar for it
        install_faiss_index(params, dim, blocks, docids, meta, output, overwrite,
                            progress=False if params.index_type == "flat" else progress)
        if not keep_chunks:
            shutil.rmtree(partial, ignore_errors=True)
    except BaseException:
        if not partial_existed and partial.is_dir() and not any(partial.glob("chunk-*.npy")):
            shutil.rmtree(partial, ignore_errors=True)  # nothing worth resuming: leave nothing behind
        raise
    finally:
        lock.close()
    return output
