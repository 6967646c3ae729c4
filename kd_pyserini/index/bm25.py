"""Build Pyserini's Lucene BM25 index from a JsonCollection / BEIR / MS MARCO tsv corpus.

The only room of :mod:`kd_pyserini.index` that uses Pyserini (and so Java): ``pyserini`` and ``jnius`` are imported
inside the functions, so importing this module starts nothing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from kd_pyserini.corpus import corpus_files, detect_format, read_corpus
from kd_pyserini.index.layout import (BM25_FORMAT_NAME, METADATA_FILENAME, IndexBuildError, claim_output,
                                      corpus_fingerprint, corpus_summary, crash_before_install, install_dir,
                                      new_build_dir, now, package_versions, raw_contents, reserve_output,
                                      write_json)
from kd_pyserini.progress import progress_bar
from kd_pyserini.trec_io import FormatError

__all__ = ["DOCS_PER_FILE", "build_bm25_index", "raw_contents"]

log = logging.getLogger(__name__)

DOCS_PER_FILE = 500_000
"""Documents per converted JsonCollection file for ``kd-index bm25`` (Anserini indexes one file per thread)."""
#: empty documents named in the warning.
SHOW_EMPTY = 5


def _anserini_index(input_dir: Path, index_dir: Path, threads: int, extra: Sequence[str] = ()) -> None:
    """Run Anserini's ``IndexCollection`` on a JsonCollection folder (starts the JVM if needed)."""
    from jnius import autoclass

    args = ["-collection", "JsonCollection", "-input", str(input_dir), "-index", str(index_dir),
            "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads),
            "-storePositions", "-storeDocvectors", "-storeRaw", *extra]
    log.info("IndexCollection %s", " ".join(args))
    autoclass("io.anserini.index.IndexCollection").main(args)


def _convert_corpus(corpus: str | os.PathLike, fmt: str, coll: Path,
                    progress: bool | None) -> tuple[int, int, list[str]]:
    """Write the corpus as JsonCollection files ``docs0000.jsonl``... of :data:`DOCS_PER_FILE` documents each
    (Anserini gives each input file to one thread: split so ``threads`` can be used); returns ``(documents,
    empty documents, the first empty ones' ids)``.

    Raises:
        FormatError / DuplicateIdError: a malformed line, an unusable or a repeated id, or no passages.
    """
    n = 0
    n_empty = 0
    empty: list[str] = []
    f: IO[str] | None = None
    try:
        for p in progress_bar(read_corpus(corpus, fmt, check_duplicates=True), unit="doc", desc="converting",
                              progress=progress):
            if not p.id or any(c.isspace() for c in p.id):
                raise FormatError(p.path, p.line, f"id {p.id!r} is empty or contains whitespace; rename the "
                                                  "document")
            if n % DOCS_PER_FILE == 0:
                if f is not None:
                    f.close()
                f = open(coll / f"docs{n // DOCS_PER_FILE:04d}.jsonl", "w", encoding="utf-8")
            contents = p.contents
            if not contents.strip():
                n_empty += 1
                if len(empty) < SHOW_EMPTY:
                    empty.append(p.id)
            f.write(json.dumps({"id": p.id, "contents": contents}, ensure_ascii=False) + "\n")
            n += 1
    finally:
        if f is not None:
            f.close()
    if n == 0:
        raise FormatError(corpus_files(corpus)[0], 0, "the corpus has no passages")
    return n, n_empty, empty


def _metadata(corpus: str | os.PathLike, fmt: str, fingerprint: list[dict[str, Any]], n: int, n_empty: int,
              stats: dict[str, Any], t_convert: float, t_index: float, threads: int,
              command: Sequence[str] | None) -> dict[str, Any]:
    """The ``kd_pyserini.json`` of a BM25 index."""
    return {
        "format": BM25_FORMAT_NAME,
        "format_version": 1,
        "kind": "lucene-bm25",
        "collection": "JsonCollection",
        "generator": "DefaultLuceneDocumentGenerator",
        "stored": ["positions", "docvectors", "raw"],
        "contents": "title + ' ' + text" if fmt == "beir" else "contents" if fmt == "jsonl" else "text",
        "corpus": corpus_summary(corpus, fmt, fingerprint, num_docs=n, empty_docs=n_empty),
        "stats": {k: int(v) for k, v in stats.items()},
        "timing": {"convert_seconds": round(t_convert, 3), "index_seconds": round(t_index, 3),
                   "docs_per_second": round(n / t_index, 1) if t_index else None},
        "threads": threads,
        "created": now(),
        "versions": package_versions(),
        "command": list(command) if command is not None else None,
    }


def build_bm25_index(corpus: str | os.PathLike, output: str | os.PathLike, *, fmt: str | None = None,
                     threads: int = 1, overwrite: bool = False, progress: bool | None = None,
                     command: Sequence[str] | None = None) -> Path:
    """Build Pyserini's Lucene index (positions, docvectors, raw) from a JsonCollection / BEIR / tsv corpus.

    The corpus is converted to a JsonCollection ``{"id", "contents"}`` (``contents = title + " " + text`` for BEIR,
    as Pyserini's BEIR "flat" indexes) in a temporary folder, then indexed by Anserini's ``IndexCollection`` with
    ``-generator DefaultLuceneDocumentGenerator -storePositions -storeDocvectors -storeRaw``; the index is built in
    ``OUTPUT.tmp-xxxx`` and renamed into place when complete, with a ``kd_pyserini.json`` beside Lucene's files.

    Args:
        progress: a progress bar for the conversion on stderr; ``None``: when stderr is a terminal.

    Raises:
        FormatError / DuplicateIdError: a malformed line or a repeated id; nothing is left behind.
        IndexBuildError: ``output`` exists, or Anserini indexed a different number of documents.
    """
    output = Path(output)
    with claim_output(output):  # also removes what a killed earlier build of OUTPUT left beside it
        reserve_output(output, overwrite)
        fmt = fmt or detect_format(corpus)
        work = new_build_dir(output)
        try:
            _build(corpus, fmt, work, output, threads, overwrite, progress, command)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return output


def _warn_empty(corpus: str | os.PathLike, n_empty: int, first: Sequence[str]) -> None:
    if n_empty:
        more = ", ..." if n_empty > len(first) else ""
        log.warning("%s: %d document%s empty contents (%s%s); Anserini skips %s, so %s not in the index",
                    corpus, n_empty, " has" if n_empty == 1 else "s have", ", ".join(first), more,
                    "it" if n_empty == 1 else "them", "it is" if n_empty == 1 else "they are")


def _build(corpus: str | os.PathLike, fmt: str, work: Path, output: Path, threads: int, overwrite: bool,
           progress: bool | None, command: Sequence[str] | None) -> None:
    """Convert, index with Anserini in ``work`` and move the Lucene folder to ``output``."""
    fingerprint = corpus_fingerprint(corpus)
    coll = work / "collection"
    coll.mkdir()
    t0 = time.perf_counter()
    n, n_empty, empty = _convert_corpus(corpus, fmt, coll, progress)
    t_convert = time.perf_counter() - t0
    _warn_empty(corpus, n_empty, empty)
    lucene = work / "index"
    t1 = time.perf_counter()
    _anserini_index(coll, lucene, threads)
    t_index = time.perf_counter() - t1
    from pyserini.index.lucene import LuceneIndexReader

    stats = LuceneIndexReader(str(lucene)).stats()
    indexed = int(stats["documents"])
    if indexed != n - n_empty:
        raise IndexBuildError(f"Anserini indexed {indexed} documents of {n} ({n_empty} empty); see its log above")
    meta = _metadata(corpus, fmt, fingerprint, n, n_empty, stats, t_convert, t_index, threads, command)
    write_json(lucene / METADATA_FILENAME, meta)
    crash_before_install()
    install_dir(lucene, output, overwrite)  # OUTPUT.tmp-xxxx/index -> OUTPUT: one rename
