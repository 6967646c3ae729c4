"""Candidate lists to re-rank, and the ONE reader of MS MARCO ``top1000``-style files.

A top1000-style file has one row per (query, candidate) in the first stage's rank order:
``qid<TAB>pid<TAB>query<TAB>passage`` (``.gz`` accepted), e.g. the shared TREC-DL 2019 BM25 top-100
``candidates.dl19.bm25-top100.tsv.gz``. With ``topics`` given, rows may also be ``qid<TAB>pid<TAB>passage`` (the
query text then comes from the topics). :func:`read_top1000` returns a :class:`Top1000`, from which re-ranking
(:func:`kd_pyserini.search.read_candidates`, a :class:`Candidates`) and training validation
(:class:`kd_pyserini.train.validation.RerankValidator`) take what they need.

Reading is strict: a row with the wrong number of fields or an empty qid/pid, bytes that are not UTF-8, and a
truncated or corrupt ``.gz`` stop with a :class:`~kd_pyserini.trec_io.FormatError` naming ``file:line``. Files are
opened by :func:`kd_pyserini.trec_io.open_text`; a UTF-8 byte-order mark at the start is dropped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kd_pyserini.trec_io import FormatError, Run, open_text

__all__ = ["Candidates", "Top1000", "read_top1000", "is_top1000"]


@dataclass
class Candidates:
    """Candidate lists to re-rank: ``run`` (order = the first stage's), passage ``texts`` and, from a top1000-style
    file, the ``queries`` it carries; ``source`` says where they came from (recorded in ``RUN.json``)."""

    run: Run
    texts: dict[str, str]
    queries: dict[str, str]
    source: dict[str, Any]


@dataclass
class Top1000:
    """A parsed top1000-style file.

    Attributes:
        queries: ``{qid: query text}`` (the first text seen per qid, or the topics' text).
        lists: ``{qid: [pid...]}`` in file (rank) order, each pid once per query.
        passages: ``{pid: passage text}`` (the first text seen per pid).
        path: the file read.
    """

    queries: dict[str, str] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)
    passages: dict[str, str] = field(default_factory=dict)
    path: str = ""

    def run(self, depth: int | None = None) -> Run:
        """The lists as a run ``{qid: {pid: -rank}}`` (the file's order as scores), the top ``depth`` per query."""
        return {q: {p: -float(r) for r, p in enumerate(pids[:depth] if depth else pids, 1)}
                for q, pids in self.lists.items()}

    def candidates(self, depth: int | None = None) -> Candidates:
        """A :class:`Candidates` for :func:`kd_pyserini.search.rerank`."""
        return Candidates(self.run(depth), dict(self.passages), dict(self.queries),
                          {"path": str(Path(self.path).resolve()), "format": "top1000-tsv"})


def _lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """``(line number, line without its end)`` through :func:`~kd_pyserini.trec_io.open_text` (``.gz``, a leading
    byte-order mark dropped, bytes that are not UTF-8 and broken gzip data raised as ``file:line`` errors)."""
    with open_text(path) as f:
        for no, line in enumerate(f, 1):
            yield no, line.rstrip("\r\n")


def is_top1000(path: str | os.PathLike) -> bool:
    """Whether the first non-empty line of ``path`` has the four fields of a top1000-style row."""
    for _, line in _lines(path):
        if line.strip():
            return len(line.split("\t")) == 4
    return False


def read_top1000(path: str | os.PathLike, topics: Mapping[str, str] | None = None,
                 three_field_hint: str = "topics") -> Top1000:
    """Read a top1000-style file.

    Args:
        path: ``qid<TAB>pid<TAB>query<TAB>passage`` rows (``.gz`` accepted).
        topics: optional ``{qid: query}``: restricts the file to these queries and supplies their text; then
            ``qid<TAB>pid<TAB>passage`` rows are accepted too.
        three_field_hint: how the error message names ``topics`` (e.g. ``--validation-topics``).

    Raises:
        FormatError: a row with the wrong number of fields or an empty qid/pid (``file:line``), a 3-field row
            without ``topics``, text that is not UTF-8, a truncated ``.gz``.
    """
    out = Top1000(path=str(path))
    seen: set[tuple[str, str]] = set()
    expected = f"expected 'qid<TAB>pid<TAB>query<TAB>passage' (or 'qid<TAB>pid<TAB>passage' with {three_field_hint})"
    for no, line in _lines(path):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) == 4:
            qid, pid, query, text = parts
        elif len(parts) == 3 and topics is not None:
            qid, pid, text = parts
            query = ""
        else:
            raise FormatError(path, no, f"{len(parts)} tab-separated fields; {expected}")
        qid, pid = qid.strip(), pid.strip()
        if not qid or not pid:
            raise FormatError(path, no, f"empty {'qid' if not qid else 'pid'}; {expected}")
        if topics is not None:
            if qid not in topics:
                continue
            query = topics[qid]
        out.queries.setdefault(qid, query)
        if (qid, pid) not in seen:
            seen.add((qid, pid))
            out.lists.setdefault(qid, []).append(pid)
        out.passages.setdefault(pid, text)
    return out
