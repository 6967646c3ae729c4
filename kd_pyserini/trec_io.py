"""Read and write TREC run and qrels files, strictly, with file:line errors.

Runs are ``{qid: {docid: score}}`` and qrels ``{qid: {docid: grade}}`` with string ids and ``int`` grades (the form
pytrec_eval needs). Writers write to a temporary name and rename, so an interrupted write leaves nothing half done.

Ranking order is trec_eval's: score descending, ties broken by docid in *descending* string order, so the ranks we
write are the ranks trec_eval (and pytrec_eval) evaluate.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TextIO

from kd_pyserini.atomic import atomic_write
from kd_pyserini.errors import KdError

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]

__all__ = ["Run", "Qrels", "FormatError", "open_text", "read_run", "read_qrels", "write_run", "rank",
           "atomic_write", "qid_order", "RunWarnings"]


class FormatError(KdError, ValueError):
    """A malformed line in an input file; the message names file, line and what was expected."""

    def __init__(self, path: str | os.PathLike, line_no: int, message: str):
        super().__init__(f"{path}:{line_no}: {message}")
        self.path, self.line_no = str(path), line_no


def open_text(path: str | os.PathLike) -> TextIO:
    """Open a text file for reading, transparently un-gzipping ``.gz`` files (UTF-8)."""
    p = str(path)
    if p.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8")
    return open(p, encoding="utf-8")


class RunWarnings(dict):
    """Counts of suspicious but tolerated things seen while reading a run (e.g. duplicate docids)."""


def read_run(path: str | os.PathLike, warnings: RunWarnings | None = None) -> Run:
    """Read a TREC run (``qid Q0 docid rank score tag``) or MS MARCO run (``qid\\tdocid\\trank``).

    MS MARCO-format scores are derived from the rank (``-rank``) so the order is kept.

    Args:
        path: the run file (``.gz`` accepted).
        warnings: if given, filled with counts: ``duplicate_docids`` (the first line wins; Java trec_eval would refuse
            the run with "duplicate docs", so callers should report the count).

    Raises:
        FormatError: a line that is neither format, or a score that is not a number.
        FileNotFoundError: the file does not exist.
    """
    run: Run = {}
    dups = 0
    with open_text(path) as f:
        for no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) == 6:
                qid, _, docid, _, score_s, _ = parts
                try:
                    score = float(score_s)
                except ValueError:
                    raise FormatError(path, no, f"score {score_s!r} is not a number; expected "
                                                "'qid Q0 docid rank score tag'") from None
            elif len(parts) == 3:
                qid, docid, rank_s = parts
                try:
                    score = -float(rank_s)
                except ValueError:
                    raise FormatError(path, no, f"rank {rank_s!r} is not a number; expected "
                                                "'qid docid rank' (MS MARCO) or 'qid Q0 docid rank score tag' (TREC)"
                                      ) from None
            else:
                raise FormatError(path, no, f"{len(parts)} fields; expected 6 ('qid Q0 docid rank score tag', "
                                            "TREC) or 3 ('qid docid rank', MS MARCO)")
            docs = run.setdefault(qid, {})
            if docid in docs:
                dups += 1
                continue
            docs[docid] = score
    if warnings is not None and dups:
        warnings["duplicate_docids"] = warnings.get("duplicate_docids", 0) + dups
    return run


def read_qrels(path: str | os.PathLike) -> Qrels:
    """Read TREC qrels (``qid iter docid grade``; tab- or space-separated), grades as ``int``.

    Raises:
        FormatError: a line without 4 fields or with a non-integer grade.
    """
    qrels: Qrels = {}
    with open_text(path) as f:
        for no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4:
                raise FormatError(path, no, f"{len(parts)} fields; expected 4 ('qid iteration docid grade')")
            qid, _, docid, grade_s = parts
            try:
                grade = int(grade_s)
            except ValueError:
                raise FormatError(path, no, f"grade {grade_s!r} is not an integer; expected "
                                            "'qid iteration docid grade'") from None
            qrels.setdefault(qid, {})[docid] = grade
    return qrels


def rank(docs: Mapping[str, float], k: int | None = None) -> list[tuple[str, float]]:
    """Sort one query's ``{docid: score}`` the way trec_eval does: score descending, then docid descending."""
    ordered = sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    return ordered if k is None else ordered[:k]


def qid_order(qid: str) -> tuple[int, int | str]:
    """Sort key for query ids: numeric ids in numeric order first, then the others in string order."""
    return (0, int(qid)) if qid.isdigit() else (1, qid)


def iter_run_lines(run: Mapping[str, Mapping[str, float]], tag: str = "kd_pyserini", k: int | None = None,
                   msmarco: bool = False) -> Iterator[str]:
    """Lines of a run file, queries in numeric-then-string order, documents in trec_eval order."""
    for qid in sorted(run, key=qid_order):
        for r, (docid, score) in enumerate(rank(run[qid], k), 1):
            yield f"{qid}\t{docid}\t{r}\n" if msmarco else f"{qid} Q0 {docid} {r} {score:.6f} {tag}\n"


def write_run(run: Mapping[str, Mapping[str, float]], path: str | os.PathLike, tag: str = "kd_pyserini",
              k: int | None = None, msmarco: bool = False) -> Path:
    """Write a run atomically in TREC format (or MS MARCO's ``qid\\tdocid\\trank`` with ``msmarco=True``).

    Args:
        run: ``{qid: {docid: score}}``.
        path: output file.
        tag: the run tag (TREC's last column).
        k: keep the top ``k`` per query (all when ``None``).
        msmarco: write MS MARCO format instead of TREC.
    """
    with atomic_write(path) as f:
        f.writelines(iter_run_lines(run, tag=tag, k=k, msmarco=msmarco))
    return Path(path)
