"""Precomputed passage sides of ColBERT and PreTTR re-rankers: ``kd-index passage-store``.

Why these architectures exist (Hofstätter et al. 2020, arXiv 2010.02666, Section 2): ColBERT (Khattab & Zaharia 2020)
and PreTTR (MacAvaney et al. 2020) read the passage without the query up to some point, so that part can be computed
once at indexing time; re-ranking then pays only the query side and the interaction. This store keeps, per passage:

* ColBERT (``late-interaction``): the token vectors ``compressor(last hidden state)`` of ``[CLS] p [SEP]``;
* PreTTR (``split``): the layer-``join_layer_idx`` states of ``p [SEP]`` at the store's query width (see
  :mod:`kd_pyserini.encoding.prettr`: the passage positions are offset by the query's width).

Layout of a finished store ``OUTPUT/``: ``store.json`` (the record: format, the encoder's key including the SHA-256 of
its weight files, dtype, dimension, passages, tokens, bytes, chunks) and per chunk ``chunk-NNNNNN.vec.npy`` (all its
passages' token rows, fp16, ``(tokens, d)``), ``chunk-NNNNNN.off.npy`` (row offsets, ``passages + 1``) and
``chunk-NNNNNN.ids`` (a record line, then one id per line). A re-ranker uses a store only when the store's encoder key
equals its own (:meth:`PassageStore.check_compatible`), so a store is never read with other weights or lengths.

Building is chunked and resumable like ``kd-index dense`` (:mod:`kd_pyserini.index.chunks`): chunks are written into
``OUTPUT.partial/`` (ids and offsets first, the vectors' rename last marks a chunk done), each with a record of the
settings and a SHA-256 of its passages, under an exclusive lock; a rerun after a kill resumes after the finished
chunks, and the folder becomes ``OUTPUT`` (one rename) only when complete. An existing ``OUTPUT`` is never replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from kd_pyserini.atomic import atomic_write
from kd_pyserini.encoding.stored_passages import (RECORD_TAG, STORE_FORMAT, STORE_INFO, PassageStore,
                                                  PassageStoreError, chunk_files, first_difference)
from kd_pyserini.index.chunks import (content_digest, crash_after, lock_store, partial_dir, remove_temp_files,
                                      settings_key)
from kd_pyserini.progress import progress_bar

__all__ = ["PassageStore", "PassageStoreError", "build_passage_store", "STORE_FORMAT", "STORE_INFO",
           "DEFAULT_STORE_CHUNK"]

DEFAULT_STORE_CHUNK = 4096
_FP16_MAX = 65504.0


def _write_chunk(partial: Path, k: int, ids: list[str], reps: list[np.ndarray], record: dict[str, Any]) -> int:
    """Chunk ``k`` on disk (vectors renamed last); returns its token rows."""
    vec, off, idf = chunk_files(partial, k)
    vec.unlink(missing_ok=True)
    offsets = np.zeros(len(reps) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(r) for r in reps])
    with atomic_write(off, "wb") as f:
        np.save(f, offsets, allow_pickle=False)
    with atomic_write(idf) as f:
        f.write(RECORD_TAG + json.dumps(record, sort_keys=True) + "\n")
        f.writelines(f"{d}\n" for d in ids)
    rows = np.concatenate(reps).astype(np.float16) if reps else np.zeros((0, 0), np.float16)
    with atomic_write(vec, "wb") as f:
        np.save(f, rows, allow_pickle=False)
    return int(offsets[-1])


def _chunk_record(partial: Path, k: int) -> dict[str, Any] | None:
    vec, off, idf = chunk_files(partial, k)
    if not (vec.is_file() and off.is_file() and idf.is_file()):
        return None
    with open(idf, encoding="utf-8") as f:
        first = f.readline()
    try:
        return json.loads(first[len(RECORD_TAG):]) if first.startswith(RECORD_TAG) else None
    except ValueError:
        return None


def _load_reranker(reranker: Any, device: str | None, precision: str, batch_size: int,
                   passage_max_length: int | None, query_width: int | None) -> Any:
    if hasattr(reranker, "passage_representations"):
        return reranker
    from kd_pyserini.cards import get_reranker_card
    from kd_pyserini.encoding.rerankers import load_reranker  # index -> encoding: the builder drives a re-ranker

    card = get_reranker_card(reranker)
    if card.kind not in ("late-interaction", "split"):
        raise PassageStoreError(f"{card.name} is a {card.kind} re-ranker: it reads query and passage together, so it "
                                "has no passage side to store (only late-interaction and split kinds do)")
    extra = {"query_width": query_width} if card.kind == "split" and query_width else {}
    return load_reranker(card, device=device, precision=precision, batch_size=batch_size,
                         passage_max_length=passage_max_length, **extra)


def build_passage_store(corpus: str | os.PathLike, output: str | os.PathLike, reranker: Any, *,
                        fmt: str | None = None, chunk_size: int = DEFAULT_STORE_CHUNK, device: str | None = None,
                        precision: str = "auto", batch_size: int = 32, passage_max_length: int | None = None,
                        query_width: int | None = None, restart: bool = False,
                        progress: bool | None = None) -> Path:
    """Compute a ColBERT / PreTTR passage side for every passage of ``corpus`` into the store ``output``.

    Args:
        corpus: JsonCollection / BEIR / MS MARCO tsv file or folder (:func:`kd_pyserini.corpus.read_corpus`).
        output: the store folder to create (must not exist).
        reranker: a card name, hub id, folder, or a loaded ColBERT/PreTTR re-ranker.
        chunk_size: passages per resumable chunk. restart: discard an interrupted build's chunks.
        device / precision / batch_size / passage_max_length / query_width: how the re-ranker is loaded.

    Returns:
        ``output``.

    Raises:
        PassageStoreError: ``output`` exists, a cross-encoder, another build of other settings, or an fp16 overflow.
    """
    from kd_pyserini.corpus import read_corpus

    output = Path(output)
    if output.exists():
        raise PassageStoreError(f"{output} already exists; choose another output folder or delete it first (nothing "
                                "is overwritten)")
    if chunk_size < 1:
        raise PassageStoreError(f"chunk_size must be >= 1, not {chunk_size}")
    rr = _load_reranker(reranker, device, precision, batch_size, passage_max_length, query_width)
    key = rr.store_key()
    partial = partial_dir(output)
    corpus_path = Path(corpus)
    wanted = {"encoder": key, "chunk_size": chunk_size, "format": fmt, "precision": rr.precision,
              "corpus": str(corpus_path.resolve())}
    t0 = time.perf_counter()
    lock = lock_store(partial)
    try:
        state_path = partial / "state.json"
        if restart:
            for p in partial.iterdir():
                if p.name != ".lock":
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        remove_temp_files(partial)
        if state_path.is_file():
            old = json.loads(state_path.read_text(encoding="utf-8"))
            diff = first_difference(old, wanted)
            if diff:
                from kd_pyserini.encoding.precision import resume_hint

                hint = resume_hint(old.get("precision"), wanted.get("precision"))
                raise PassageStoreError(f"{partial} holds chunks of another build ({diff}){hint}; rerun with the "
                                        "same options to resume it, or pass --restart to discard them")
        else:
            with atomic_write(state_path) as f:
                json.dump(wanted, f, indent=2)
        skey = settings_key(wanted)
        n_passages = n_tokens = encoded = resumed = k = 0
        seen: set[str] = set()
        stop = crash_after()

        def flush(ids: list[str], texts: list[str]) -> None:
            nonlocal n_tokens, encoded, resumed
            record = {"settings": skey, "passages": len(ids), "content": content_digest(ids, texts)}
            old = _chunk_record(partial, k)
            if old is not None and {x: old.get(x) for x in record} == record:
                n_tokens += int(old.get("tokens", 0))
                resumed += 1
                return
            reps = rr.passage_representations(texts)
            worst = max((float(np.abs(r).max()) for r in reps if r.size), default=0.0)
            if not np.isfinite(worst) or worst > _FP16_MAX:
                raise PassageStoreError(f"chunk {k} ({ids[0]}...): a passage-side value ({worst:.3g}) does not fit "
                                        "fp16; the weights are broken or need an fp32 store, which this version "
                                        "does not write")
            tokens = sum(len(r) for r in reps)
            _write_chunk(partial, k, ids, reps, {**record, "tokens": tokens})
            n_tokens += tokens
            encoded += len(ids)
            if stop is not None and k >= stop:
                os._exit(137)

        ids: list[str] = []
        texts: list[str] = []
        with progress_bar(total=None, desc="passage store", unit="passage", progress=progress) as bar:
            for p in read_corpus(corpus_path, fmt):
                if p.id in seen:
                    raise PassageStoreError(f"{p.path}:{p.line}: passage id {p.id!r} repeated; ids must be unique")
                seen.add(p.id)
                ids.append(p.id)
                texts.append(p.contents)
                if len(ids) == chunk_size:
                    flush(ids, texts)
                    bar.update(len(ids))
                    n_passages += len(ids)
                    ids, texts, k = [], [], k + 1
            if ids:
                flush(ids, texts)
                bar.update(len(ids))
                n_passages += len(ids)
                k += 1
        dim = int(key.get("dimension") or rr.model.config.dim)
        info = {"format": STORE_FORMAT, "version": 1, "encoder": key, "dtype": "float16", "dimension": dim,
                "passages": n_passages, "tokens": n_tokens, "chunks": k,
                "bytes": n_tokens * dim * 2, "mean_tokens_per_passage": round(n_tokens / max(n_passages, 1), 3),
                "bytes_per_passage": round(n_tokens * dim * 2 / max(n_passages, 1), 1),
                "corpus": str(corpus_path.resolve()), "precision": rr.precision, "chunk_size": chunk_size,
                "passages_encoded_this_run": encoded, "chunks_resumed": resumed,
                "seconds": round(time.perf_counter() - t0, 3),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        for j in range(k, 1 << 30):  # chunks beyond the end (a corpus that shrank) must not stay
            stale = [p for p in chunk_files(partial, j) if p.exists()]
            if not stale:
                break
            for p in stale:
                p.unlink()
        with atomic_write(partial / STORE_INFO) as f:
            json.dump(info, f, indent=2)
        state_path.unlink(missing_ok=True)
        os.replace(partial, output)
        (output / ".lock").unlink(missing_ok=True)
    finally:
        lock.close()
    return output
