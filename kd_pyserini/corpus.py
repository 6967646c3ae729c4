"""Read corpora as passages with line numbers: Pyserini JsonCollection, BEIR ``corpus.jsonl``, MS MARCO tsv.

Formats (``.gz`` accepted for all, detected from the first line unless given):

* ``jsonl`` — Pyserini JsonCollection: ``{"id": ..., "contents": ...}``;
* ``beir`` — BEIR: ``{"_id": ..., "title": ..., "text": ...}``; the passage text is ``title + " " + text``, as
  Pyserini's BEIR "flat" indexes and its ``AutoDocumentEncoder`` join them;
* ``tsv`` — MS MARCO ``collection.tsv``: ``pid<TAB>text``.

A folder of such files is read file by file in name order, through :func:`kd_pyserini.trec_io.open_text` (UTF-8, a
leading byte-order mark dropped, a byte that is not UTF-8 a ``file:line`` error). Bad lines raise
:class:`kd_pyserini.trec_io.FormatError` with file and line; a repeated id raises :class:`DuplicateIdError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kd_pyserini.errors import KdError
from kd_pyserini.trec_io import FormatError, open_text

__all__ = ["Passage", "DuplicateIdError", "detect_format", "read_corpus", "corpus_files", "load_texts", "FORMATS"]

FORMATS = ("jsonl", "beir", "tsv")


class DuplicateIdError(KdError, ValueError):
    """A document id occurs twice in a corpus."""


@dataclass(frozen=True)
class Passage:
    """One passage: its id, title (may be empty), text, and where it came from."""

    id: str
    text: str
    title: str = ""
    path: str = ""
    line: int = 0

    @property
    def contents(self) -> str:
        """Title and text joined by one space (the text alone when there is no title)."""
        return f"{self.title} {self.text}" if self.title else self.text


def corpus_files(path: str | os.PathLike) -> list[Path]:
    """The files of a corpus: the file itself, or a folder's ``*.json*``/``*.tsv*`` files in name order."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and any(s in f.name for s in (".json", ".tsv")))
        if files:
            return files
        raise FileNotFoundError(f"corpus folder {p} has no .jsonl/.json/.tsv files (optionally .gz)")
    raise FileNotFoundError(f"corpus {p} does not exist; give a .jsonl, BEIR corpus.jsonl or MS MARCO .tsv file")


def detect_format(path: str | os.PathLike) -> str:
    """Guess the format from the first non-empty line of the (first) file."""
    first = corpus_files(path)[0]
    with open_text(first) as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            if line.lstrip().startswith("{"):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise FormatError(first, no, f"invalid JSON ({e.msg})") from None
                return "beir" if "_id" in obj else "jsonl"
            if "\t" in line:
                return "tsv"
            raise FormatError(first, no, "neither a JSON object nor 'id<TAB>text'; expected JsonCollection, "
                                         "BEIR corpus.jsonl or MS MARCO collection.tsv")
    raise FormatError(first, 0, "the corpus file is empty")


def _parse(fmt: str, line: str, path: Path, no: int) -> Passage:
    if fmt == "tsv":
        if "\t" not in line:
            raise FormatError(path, no, "no tab; expected 'pid<TAB>text' (MS MARCO collection.tsv)")
        pid, text = line.rstrip("\r\n").split("\t", 1)
        if not pid:
            raise FormatError(path, no, "empty id; expected 'pid<TAB>text'")
        return Passage(pid, text.strip(), "", str(path), no)
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise FormatError(path, no, f"invalid JSON ({e.msg}); expected one JSON object per line") from None
    if not isinstance(obj, dict):
        raise FormatError(path, no, "not a JSON object")
    if fmt == "beir":
        if "_id" not in obj:
            raise FormatError(path, no, "no '_id' field; expected BEIR {'_id', 'title', 'text'}")
        return Passage(str(obj["_id"]), str(obj.get("text") or "").strip(), str(obj.get("title") or "").strip(),
                       str(path), no)
    docid = obj.get("id", obj.get("docid"))
    if docid is None or "contents" not in obj:
        raise FormatError(path, no, "needs 'id' and 'contents' fields (Pyserini JsonCollection)")
    return Passage(str(docid), str(obj["contents"]).strip(), "", str(path), no)


def read_corpus(path: str | os.PathLike, fmt: str | None = None, check_duplicates: bool = True,
                start: int = 0) -> Iterator[Passage]:
    """Yield the passages of a corpus file or folder, in order.

    Args:
        path: file or folder.
        fmt: ``jsonl``, ``beir`` or ``tsv``; detected when ``None``.
        check_duplicates: raise :class:`DuplicateIdError` on a repeated id.
        start: skip this many passages first (still parsed, so line numbers and checks stay exact).

    Raises:
        FormatError: a malformed line (file:line in the message).
        DuplicateIdError: an id seen twice (both lines in the message).
    """
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"corpus format {fmt!r} is not one of {', '.join(FORMATS)}")
    seen: dict[str, tuple[str, int]] = {}
    n = 0
    for file in corpus_files(path):
        with open_text(file) as f:
            for no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                p = _parse(fmt, line, file, no)
                if check_duplicates:
                    if p.id in seen:
                        f0, l0 = seen[p.id]
                        raise DuplicateIdError(f"{file}:{no}: duplicate id {p.id!r} (first at {f0}:{l0}); ids must "
                                               "be unique: remove or rename the repeated document")
                    seen[p.id] = (str(file), no)
                if n >= start:
                    yield p
                n += 1


def load_texts(path: str | os.PathLike, ids: set[str] | None = None, fmt: str | None = None) -> dict[str, str]:
    """``{id: contents}`` for the whole corpus, or only ``ids`` (for re-ranking candidates)."""
    out: dict[str, str] = {}
    for p in read_corpus(path, fmt, check_duplicates=False):
        if ids is None or p.id in ids:
            out[p.id] = p.contents
    return out
