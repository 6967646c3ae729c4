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

**Checks.** The index records the SHA-256 of the encoder's weight files (``encoder_weights``, see
:mod:`kd_pyserini.encoding.fingerprint`), which searching compares. A ``--passage-max-length`` beyond the model's
position limit is refused before any work; vectors with NaN/inf (a diverged checkpoint) stop the build with the first
passage id; empty passages are warned about (count and first ids). A resumed build re-reads the corpus and hashes
each chunk's passages (one SHA-256 over the text it reads anyway: seconds for MS MARCO's ~3 GB), so a chunk whose
passages were edited in place is encoded again, never mixed in.
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
from kd_pyserini.errors import KdError
from kd_pyserini.index.faiss_factory import IndexParams, install_faiss_index
from kd_pyserini.encoding.fingerprint import position_limit, weights_fingerprint
from kd_pyserini.encoding.precision import resolve_precision
from kd_pyserini.index.layout import (FORMAT_NAME, IndexBuildError, claim_output, corpus_fingerprint, corpus_summary,
                                      now, package_versions, reserve_output, write_json)
from kd_pyserini.progress import progress_bar
from kd_pyserini.trec_io import FormatError

__all__ = ["DEFAULT_CHUNK_SIZE", "build_dense_index", "parse_shard", "shard_range"]

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 50_000
#: empty passages named in the warning.
SHOW_EMPTY = 5


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


def _validate_corpus(corpus: str | os.PathLike, fmt: str) -> tuple[int, int, list[str]]:
    """Parse the whole corpus once: malformed lines, repeated ids and ids TREC runs cannot hold are refused.
    Returns ``(passages, empty passages, the first empty ones' ids)``."""
    n = n_empty = 0
    empty: list[str] = []
    for p in read_corpus(corpus, fmt, check_duplicates=True):
        if not p.id or any(c.isspace() for c in p.id):
            raise FormatError(p.path, p.line, f"id {p.id!r} is empty or contains whitespace, which the docid file "
                                              "and TREC runs cannot hold; rename the document")
        if not p.contents.strip():
            n_empty += 1
            if len(empty) < SHOW_EMPTY:
                empty.append(p.id)
        n += 1
    if n == 0:
        raise FormatError(corpus_files(corpus)[0], 0, "the corpus has no passages")
    return n, n_empty, empty


def _warn_empty(corpus: str | os.PathLike, n_empty: int, first: Sequence[str]) -> None:
    if n_empty:
        more = ", ..." if n_empty > len(first) else ""
        log.warning("%s: %d passage%s empty text (%s%s); %s encoded as the empty string and can be retrieved for "
                    "any query: remove or fix them", corpus, n_empty, " has" if n_empty == 1 else "s have",
                    ", ".join(first), more, "it is" if n_empty == 1 else "they are")


def _nonfinite_error(card: EncoderCard, bad: int, total: int, first_id: str) -> IndexBuildError:
    return IndexBuildError(f"encoder {card.model_id} produced non-finite vectors (NaN/inf) for {bad} of {total} "
                           f"passages, first id {first_id}: the weights are broken (a diverged checkpoint?)")


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
    weights: dict[str, Any] | None = None

    def wanted(self) -> dict[str, Any]:
        """The settings recorded in ``state.json``; resuming requires the same (:data:`chunks.STATE_KEYS`)."""
        return {"encoder": self.card.describe(), "encoder_weights": (self.weights or {}).get("sha256"),
                "max_length": self.max_len, "precision": self.precision, "format": self.fmt,
                "corpus": self.fingerprint, "shard": list(self.shard) if self.shard else None,
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
        _warn_empty(job.corpus, int(state.get("empty_docs") or 0), state.get("empty_ids") or [])
        return state
    try:
        total, n_empty, empty = _validate_corpus(job.corpus, job.fmt)  # before anything is written
        _warn_empty(job.corpus, n_empty, empty)
        start, end = shard_range(total, job.shard)
        if end <= start:
            raise IndexBuildError(f"shard {shard_spec} of a {total}-passage corpus is empty; use fewer shards")
    except BaseException:
        if not partial_existed:  # leave nothing behind
            shutil.rmtree(partial, ignore_errors=True)
        raise
    state = {**wanted, "num_docs": total, "empty_docs": n_empty, "empty_ids": empty, "start": start, "end": end,
             "created": now()}
    write_json(partial / chunks.STATE_FILENAME, state)
    return state


def _iter_chunks(corpus: str | os.PathLike, fmt: str, start: int, end: int,
                 chunk_size: int) -> Iterator[tuple[int, list[str], list[str]]]:
    """``(k, ids, texts)`` for each chunk of passages ``[start, end)``, in order."""
    k = 0
    ids: list[str] = []
    texts: list[str] = []
    for p in read_corpus(corpus, fmt, check_duplicates=False, start=start):
        pos = len(ids) + k * chunk_size + start
        if pos >= end:
            break
        ids.append(p.id)
        texts.append(p.contents)
        if len(ids) == chunk_size or pos == end - 1:
            yield k, ids, texts
            k += 1
            ids, texts = [], []


def _embed(text_encoder: Any, ids: list[str], texts: list[str], max_len: int, batch_size: int,
           bar: Any) -> np.ndarray:
    """The vectors of one chunk. CPU: sub-blocks of the chunk only to move the progress bar; CUDA: the whole chunk
    per call, so the encoder can overlap tokenisation with the GPU. Either way a chunk's vectors depend only on
    the chunk. Non-finite vectors (one ``isfinite`` per block) stop the build, naming the first passage."""
    on_cuda = getattr(getattr(text_encoder, "device", None), "type", "cpu") == "cuda"
    block = len(texts) if on_cuda else batch_size * 32
    vecs = []
    for i in range(0, len(texts), block):
        part = texts[i:i + block]
        try:
            v = text_encoder.embed(part, max_len, batch_size)
        except KdError as e:  # TextEncoder's NonFiniteVectorError says which text, not which passage
            if getattr(e, "first_index", None) is None:
                raise
            raise _nonfinite_error(text_encoder.card, e.bad, e.total, ids[i + e.first_index]) from None
        if not np.isfinite(v).all():  # encoder objects that do not check
            bad = ~np.isfinite(v).all(axis=1)
            raise _nonfinite_error(text_encoder.card, int(bad.sum()), len(part), ids[i + int(np.argmax(bad))])
        vecs.append(v)
        bar.update(len(part))
    return np.ascontiguousarray(np.concatenate(vecs).astype(np.float32, copy=False))


def _encode_missing(partial: Path, job: _Job, state: dict[str, Any], get_encoder: Callable[[], Any],
                    done: list[int], n_chunks: int, desc: str, progress: bool | None,
                    on_chunk: Callable[[int], None] | None) -> tuple[_EncodeStats, Any]:
    """Read the corpus chunk by chunk: reuse each chunk in ``done`` whose passages hash as recorded, encode the
    others (the encoder is loaded by ``get_encoder()`` only if one needs it) and put them on disk (calling
    ``on_chunk(k)`` after each). Returns the stats and the encoder (``None`` if none was needed)."""
    start, end = int(state["start"]), int(state["end"])
    stats = _EncodeStats(resumed=list(done))
    kill_after = chunks.crash_after()
    done_set = set(done)
    key = chunks.settings_key(job.wanted())
    already = sum(min(job.chunk_size, end - start - k * job.chunk_size) for k in done)
    bar = progress_bar(total=end - start, initial=already, unit="psg", unit_scale=True, desc=desc,
                       progress=progress, smoothing=0.05)
    text_encoder = None
    n_read = 0
    for k, ids, texts in _iter_chunks(job.corpus, job.fmt, start, end, job.chunk_size):
        n_read = k + 1
        digest = chunks.content_digest(ids, texts)
        if k in done_set:
            if (chunks.chunk_record(partial, k) or {}).get("content_sha256") == digest:
                continue
            log.warning("%s: passages %d-%d changed since chunk %d was encoded; encoding them again", job.corpus,
                        start + k * job.chunk_size, start + k * job.chunk_size + len(ids) - 1, k)
            chunks.discard_chunk(partial, k)
            stats.resumed.remove(k)
            bar.update(-len(ids))
        if text_encoder is None:
            text_encoder = get_encoder()
        t0 = time.perf_counter()
        vectors = _embed(text_encoder, ids, texts, job.max_len, job.batch_size, bar)
        stats.seconds += time.perf_counter() - t0
        stats.encoded += len(texts)
        a = start + k * job.chunk_size
        record = {"settings": key, "range": [a, a + len(ids)], "content_sha256": digest,
                  "encoder_weights": (job.weights or {}).get("sha256")}
        chunks.write_chunk(partial, k, ids, vectors, record)
        if kill_after is not None and k >= kill_after:
            os._exit(137)
        if on_chunk is not None:
            on_chunk(k)
    bar.close()
    if n_read != n_chunks:
        raise IndexBuildError(f"the corpus changed while it was encoded: {n_read} chunks read, {n_chunks} expected")
    return stats, text_encoder


def _reusable_chunks(partial: Path, job: _Job, start: int, end: int, n_chunks: int) -> list[int]:
    """The finished chunks whose record matches this build's settings and range (their passages are checked as
    the corpus is read); finished chunks of other settings (or without a record) are deleted."""
    key = chunks.settings_key(job.wanted())
    done, dropped = [], []
    for k in range(n_chunks):
        if not chunks.chunk_done(partial, k):
            continue
        rec = chunks.chunk_record(partial, k) or {}
        a = start + k * job.chunk_size
        if rec.get("settings") == key and rec.get("range") == [a, min(a + job.chunk_size, end)]:
            done.append(k)
        else:
            chunks.discard_chunk(partial, k)
            dropped.append(k)
    if dropped:
        log.warning("%s: discarded %d chunk%s encoded with other settings or another encoder (chunks %s)", partial,
                    len(dropped), "" if len(dropped) == 1 else "s", ", ".join(map(str, dropped[:10])) +
                    (", ..." if len(dropped) > 10 else ""))
    return done


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
        "encoder_weights": job.weights,
        "corpus": corpus_summary(job.corpus, job.fmt, job.fingerprint, num_docs=int(state["num_docs"]),
                                 empty_docs=int(state.get("empty_docs") or 0)),
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
                      precision: str = "auto", max_length: int | None = None,
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
        device / precision: see :class:`kd_pyserini.encoding.TextEncoder` (ignored for encoder objects); ``auto``
            is resolved here (:mod:`kd_pyserini.encoding.precision`), and the metadata and a resume compare the
            precision used.
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
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    with claim_output(output):  # also removes what a killed earlier build of OUTPUT left beside it
        reserve_output(output, overwrite)
        fmt = fmt or detect_format(corpus)

        # Cheap settings first: the encoder's card is known without loading the model when given by name.
        if isinstance(encoder, (str, EncoderCard)):
            encoder = get_card(encoder)  # resolved once (a bare model folder logs its note once)
            card, limit = encoder, position_limit(encoder)
            precision = resolve_precision(precision, device, "encode").precision
        else:
            loaded = _resolve_text_encoder(encoder, device, precision, batch_size)
            card, limit = loaded.card, position_limit(loaded.card, getattr(loaded, "model", None))
            if precision == "auto":  # an encoder object runs at its own precision
                precision = getattr(loaded, "precision", None) or getattr(getattr(loaded, "encoder", None),
                                                                          "precision", "fp32")
        max_len = int(max_length or card.passage_max_length)
        if limit is not None and max_len > limit:
            raise IndexBuildError(f"--passage-max-length {max_len} is more than encoder {card.model_id} can take: "
                                  f"its max_position_embeddings is {limit} tokens; use --passage-max-length {limit} "
                                  "or less")
        job = _Job(corpus, fmt, card, max_len, precision, batch_size, chunk_size, shard_t, corpus_fingerprint(corpus),
                   weights_fingerprint(card))
        desc = f"encoding {output.name}" + (f" shard {shard_t[0]}/{shard_t[1]}" if shard_t else "")

        def get_encoder() -> Any:
            text_encoder = _resolve_text_encoder(encoder, device, precision, batch_size)
            if text_encoder.card.describe() != card.describe():
                raise IndexBuildError("the encoder object's card differs from the card resolved for it")
            return text_encoder

        _build(job, output, params, get_encoder, desc, overwrite=overwrite, keep_chunks=keep_chunks,
               restart=restart, progress=progress, on_chunk=on_chunk, shard_spec=shard, command=command)
    return output


def _build(job: _Job, output: Path, params: IndexParams, get_encoder: Callable[[], Any], desc: str, *,
           overwrite: bool, keep_chunks: bool, restart: bool, progress: bool | None,
           on_chunk: Callable[[int], None] | None, shard_spec: Any, command: Sequence[str] | None) -> None:
    """The build proper, under the output's lock: chunks (resumed or encoded), then the FAISS index."""
    partial = chunks.partial_dir(output)
    partial_existed = partial.exists()
    lock = chunks.lock_store(partial)
    try:
        chunks.remove_temp_files(partial)
        if restart:
            chunks.clear_store(partial)
        state = _start_or_resume(partial, job, partial_existed, shard_spec)
        start, end = int(state["start"]), int(state["end"])
        n_chunks = math.ceil((end - start) / job.chunk_size)
        done = _reusable_chunks(partial, job, start, end, n_chunks)
        stats, text_encoder = _encode_missing(partial, job, state, get_encoder, done, n_chunks, desc, progress,
                                              on_chunk)

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
