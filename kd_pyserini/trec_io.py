"""Read and write TREC runs, qrels and topics, strictly, with file:line errors.

Runs are ``{qid: {docid: score}}`` and qrels ``{qid: {docid: grade}}`` with string ids and ``int`` grades (the form
pytrec_eval needs); topics are ``{qid: query}``.

Reading (every reader goes through :func:`open_text`):

* UTF-8 only: a leading byte-order mark is dropped, and a byte that is not UTF-8 stops the read with
  ``file:line: not UTF-8 (byte 0xe9 at column N)``; ``.gz`` files are un-gzipped (a ``.gz`` name on a plain file,
  or a truncated gzip stream, is a :class:`FormatError` too).
* A run's format (TREC ``qid Q0 docid rank score tag`` or MS MARCO ``qid docid rank``) is decided by its first
  non-empty line and every line is held to it, so a TREC line cut to 3 fields is refused instead of being read as
  an MS MARCO line. As trec_eval (``get_trec_results.c``: "Any field following run_id is ignored"), fields after
  the sixth of a TREC line are ignored (trailing comments, extra columns); they are counted in
  :class:`RunWarnings` (``extra_fields``) so a command can say so once. Scores must be finite decimal numbers
  (no NaN, no infinity). An empty run is refused, as trec_eval refuses it.
* Qrels: ``qid iteration docid grade`` with an integer grade; a (qid, docid) judged twice is refused (trec_eval:
  "duplicate docs"), whatever the grades.
* Topics: ``qid<TAB>query``; a repeated qid is refused.

Writing: writers write to a temporary name and rename, so an interrupted write leaves nothing half done; a name
ending in ``.gz`` is written gzip-compressed (the temporary file too). Scores are written as ``repr(float)``, the
shortest text that reads back to the same double, so distinct scores stay distinct and the order trec_eval
evaluates is the order written.

Ranking order is trec_eval's: score descending, ties broken by docid in *descending* string order, so the ranks we
write are the ranks trec_eval (and pytrec_eval) evaluate.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import os
import re
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from kd_pyserini.atomic import atomic_write
from kd_pyserini.errors import KdError

_log = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]

__all__ = ["Run", "Qrels", "FormatError", "ScoreError", "open_text", "read_run", "read_qrels", "read_topics",
           "write_run", "extra_fields_message", "rank", "atomic_write", "atomic_write_text", "qid_order",
           "RunWarnings", "format_score"]

TREC_LINE = "'qid Q0 docid rank score tag'"
MSMARCO_LINE = "'qid<TAB>docid<TAB>rank'"
QRELS_LINE = "'qid iteration docid grade'"
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")  # a decimal number, as C's strtod reads one
_INTEGER = re.compile(r"[+-]?\d+")
_NON_FINITE = {"nan", "inf", "infinity"}
_ESCAPED = re.compile("[\udc80-\udcff]")  # bytes that are not UTF-8, as errors="surrogateescape" decodes them


class FormatError(KdError, ValueError):
    """A malformed line in an input file; the message names file, line and what was expected."""

    def __init__(self, path: str | os.PathLike, line_no: int, message: str):
        super().__init__(f"{path}:{line_no}: {message}")
        self.path, self.line_no = str(path), line_no


class ScoreError(KdError, ValueError):
    """A score that cannot be written to a run file (NaN or infinite)."""


# ------------------------------------------------------------------------------------------------------- reading

def _open_binary(path: str) -> io.BufferedIOBase:
    """The file's bytes, un-gzipped for a ``.gz`` name (an empty ``.gz`` file reads as empty)."""
    raw = open(path, "rb")
    if not path.endswith(".gz"):
        return raw
    magic = raw.peek(2)[:2]
    if magic == b"":
        return raw
    raw.close()
    if magic != b"\x1f\x8b":
        raise FormatError(path, 1, "the name ends in .gz but the file is not gzip-compressed; fix: rename it "
                                   "without .gz, or compress it with gzip")
    return gzip.open(path, "rb")  # type: ignore[return-value]


def _locate_bad_byte(path: str) -> tuple[int, int, int] | None:
    """``(line, column, byte)`` of the first byte of ``path`` that is not UTF-8 (lines counted as when reading)."""
    try:
        with io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", errors="surrogateescape") as f:
            for no, line in enumerate(f, 1):
                m = _ESCAPED.search(line)
                if m:
                    return no, m.start() + 1, ord(m.group()) - 0xDC00
    except (EOFError, gzip.BadGzipFile, zlib.error):  # gzip data cut short after the bad byte's chunk
        pass
    return None


class TextReader:
    """A read-only UTF-8 text stream over a file (``.gz`` un-gzipped, a leading byte-order mark dropped) that turns
    undecodable bytes and broken gzip data into :class:`FormatError` with file and line."""

    def __init__(self, path: str | os.PathLike):
        self.name = str(path)
        self._f = io.TextIOWrapper(_open_binary(self.name), encoding="utf-8-sig")  # utf-8-sig: drops a leading BOM
        self._lines = 0

    def _error(self, e: Exception) -> FormatError:
        if isinstance(e, UnicodeDecodeError):
            where = _locate_bad_byte(self.name)
            if where is not None:
                no, col, byte = where
                return FormatError(self.name, no, f"not UTF-8 (byte 0x{byte:02x} at column {col}); fix: re-encode "
                                                  "the file as UTF-8")
            return FormatError(self.name, self._lines + 1, f"not UTF-8 ({e.reason}); fix: re-encode the file as "
                                                           "UTF-8")
        detail = str(e).splitlines()[0] if str(e) else "unexpected end"
        return FormatError(self.name, self._lines + 1, f"the gzip data is truncated or corrupt ({type(e).__name__}: "
                                                       f"{detail}); copy or compress the file again")

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise self._error(e) from None

    def __iter__(self) -> Iterator[str]:
        return self._iter()

    def _iter(self) -> Iterator[str]:
        """The lines, in one generator with one ``try`` (a method call per line would double the reading time)."""
        no = self._lines
        try:
            for line in self._f:
                no += 1
                yield line
        except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error) as e:
            self._lines = no
            raise self._error(e) from None
        self._lines = no

    def __next__(self) -> str:
        line = self._guard(next, self._f)
        self._lines += 1
        return line

    def readline(self, size: int = -1) -> str:
        line = self._guard(self._f.readline, size)
        self._lines += line.endswith("\n")
        return line

    def readlines(self, hint: int = -1) -> list[str]:
        lines = self._guard(self._f.readlines, hint)
        self._lines += len(lines)
        return lines

    def read(self, size: int = -1) -> str:
        return self._guard(self._f.read, size)

    @property
    def closed(self) -> bool:
        return self._f.closed

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> TextReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_text(path: str | os.PathLike) -> TextIO:
    """Open a UTF-8 text file for reading: ``.gz`` un-gzipped, a leading byte-order mark dropped, a byte that is not
    UTF-8 (or broken gzip data) raised as :class:`FormatError` naming file and line.

    Raises:
        FormatError: a ``.gz`` name on a file that is not gzip-compressed (at open); bad bytes (while reading).
        FileNotFoundError: the file does not exist.
    """
    return TextReader(path)  # type: ignore[return-value]


class RunWarnings(dict):
    """Counts of suspicious but tolerated things seen while reading a run: ``duplicate_docids`` (with
    ``duplicates="warn"``) and ``extra_fields`` (TREC lines with fields after the sixth, ignored as trec_eval ignores
    them)."""


def extra_fields_message(path: str | os.PathLike, count: int) -> str:
    """The one-line notice for ``count`` TREC lines with fields after the run tag (what commands print once)."""
    return (f"{path}: {count} line{'s' if count != 1 else ''} ha{'ve' if count != 1 else 's'} fields after the run "
            "tag (the sixth field); ignored, as trec_eval ignores them")


def _score(path, no: int, text: str) -> float:
    if not _NUMBER.fullmatch(text):
        if text.lower().lstrip("+-") in _NON_FINITE:
            raise FormatError(path, no, f"score {text!r} is not a finite number; NaN and infinite scores have no "
                                        "defined rank order: fix the system that wrote the run")
        raise FormatError(path, no, f"score {text!r} is not a number; expected {TREC_LINE}")
    value = float(text)
    if math.isinf(value):
        raise FormatError(path, no, f"score {text!r} overflows a double (it reads as infinite); fix the system "
                                    "that wrote the run")
    return value


def _msmarco_score(path, no: int, text: str) -> float:
    if not _INTEGER.fullmatch(text):
        raise FormatError(path, no, f"rank {text!r} is not an integer; expected {MSMARCO_LINE} (MS MARCO run)")
    return -float(int(text))


def _first_line_of(path, fields: int, qid_docid: tuple[str, str], docid_at: int, more: bool = False) -> int:
    """The first line of ``path`` with ``qid_docid`` (to name both lines of a duplicate; read only on error).
    ``more``: lines may have more than ``fields`` fields (TREC runs, whose fields after the tag are ignored)."""
    with open_text(path) as f:
        for no, line in enumerate(f, 1):
            parts = line.split()
            if (len(parts) == fields or (more and len(parts) > fields)) and (parts[0], parts[docid_at]) == qid_docid:
                return no
    return 0


def read_run(path: str | os.PathLike, warnings: RunWarnings | None = None, duplicates: str = "warn",
             ranks: dict[str, dict[str, int]] | None = None) -> Run:
    """Read a TREC run (``qid Q0 docid rank score tag``) or MS MARCO run (``qid<TAB>docid<TAB>rank``).

    The first non-empty line decides the format and every other line must have the same number of fields (a TREC
    line cut to 3 fields, or a file mixing the two formats, is refused); a TREC line may have fields after the sixth,
    ignored as trec_eval ignores them (counted in ``warnings["extra_fields"]``, else logged once). MS MARCO-format
    scores are derived from the rank (``-rank``) so the order is kept.

    Args:
        path: the run file (``.gz`` accepted).
        warnings: if given, filled with counts: ``duplicate_docids`` (with ``duplicates="warn"``) and
            ``extra_fields``.
        duplicates: what to do with a (qid, docid) seen twice: ``"warn"`` keeps the first line and counts the
            others in ``warnings``; ``"error"`` raises :class:`FormatError` naming both lines (what trec_eval
            does: "duplicate docs").
        ranks: if given, filled with the rank column, ``{qid: {docid: rank}}`` (for fusion that takes ranks from the
            file as Pyserini's does); the rank must then be an integer. The run's documents keep file order either
            way (a query's dict is in the order its lines appear).

    Raises:
        FormatError: a line of the wrong format, a score that is not a finite number, an MS MARCO rank that is not
            an integer, an empty file, a duplicate with ``duplicates="error"``, bytes that are not UTF-8.
        FileNotFoundError: the file does not exist.
    """
    if duplicates not in ("warn", "error"):
        raise ValueError(f"duplicates must be 'warn' or 'error', got {duplicates!r}")
    run: Run = {}
    dups = extra = 0
    fmt: str | None = None
    first_no = 0
    with open_text(path) as f:
        for no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            n = len(parts)
            if fmt is None:
                if n >= 6:
                    fmt, first_no = "trec", no
                elif n == 3 and parts[1] != "Q0":
                    fmt, first_no = "msmarco", no
                elif n == 3:
                    raise FormatError(path, no, f"3 fields with 'Q0' as the docid: a TREC line cut short? expected "
                                                f"6 ({TREC_LINE}, TREC) or 3 ('qid docid rank', MS MARCO)")
                else:
                    raise FormatError(path, no, f"{n} fields; expected 6 ({TREC_LINE}, TREC) or 3 "
                                                "('qid docid rank', MS MARCO)")
            if fmt == "trec":
                if n < 6:
                    raise FormatError(path, no, f"{n} fields (a line cut short, or an MS MARCO line in a TREC run?); "
                                                f"expected 6 ({TREC_LINE}) as on line {first_no}: a run is all TREC "
                                                "or all MS MARCO")
                if n > 6:  # trec_eval: "Any field following run_id is ignored"
                    extra += 1
                qid, _, docid, rank_s, score_s = parts[:5]
                score = _score(path, no, score_s)
                if ranks is not None and not _INTEGER.fullmatch(rank_s):
                    raise FormatError(path, no, f"rank {rank_s!r} is not an integer; fusion with ranks from the file "
                                                "needs the rank column (or re-rank by score: --ranks score)")
            else:
                if n != 3 or parts[1] == "Q0":
                    raise FormatError(path, no, f"{n} fields{' with Q0' if n == 3 else ''}; expected 3 ('qid docid "
                                                f"rank', MS MARCO) as on line {first_no}: a run is all TREC or all "
                                                "MS MARCO")
                qid, docid, rank_s = parts
                score = _msmarco_score(path, no, rank_s)
            docs = run.setdefault(qid, {})
            if docid in docs:
                if duplicates == "error":
                    first = (_first_line_of(path, 6, (qid, docid), 2, more=True) if fmt == "trec" else
                             _first_line_of(path, 3, (qid, docid), 1))
                    raise FormatError(path, no, f"document {docid!r} listed again for query {qid!r} (first at line "
                                                f"{first}); trec_eval refuses a run with duplicate docs: keep one "
                                                "line per (qid, docid)")
                dups += 1
                continue
            docs[docid] = score
            if ranks is not None:
                ranks.setdefault(qid, {})[docid] = int(rank_s)
    if fmt is None:
        raise FormatError(path, 1, f"the run is empty; expected {TREC_LINE} (TREC) or 'qid docid rank' (MS MARCO) "
                                   "lines")
    if warnings is not None and dups:
        warnings["duplicate_docids"] = warnings.get("duplicate_docids", 0) + dups
    if extra:
        if warnings is not None:
            warnings["extra_fields"] = warnings.get("extra_fields", 0) + extra
        else:
            _log.warning(extra_fields_message(path, extra))
    return run


def read_qrels(path: str | os.PathLike) -> Qrels:
    """Read TREC qrels (``qid iter docid grade``; tab- or space-separated), grades as ``int``.

    Raises:
        FormatError: a line without 4 fields or with a non-integer grade, a (qid, docid) judged twice (trec_eval
            refuses it: "duplicate docs"), an empty file, bytes that are not UTF-8.
    """
    qrels: Qrels = {}
    with open_text(path) as f:
        for no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4:
                raise FormatError(path, no, f"{len(parts)} fields; expected 4 ({QRELS_LINE})")
            qid, _, docid, grade_s = parts
            if not _INTEGER.fullmatch(grade_s):
                raise FormatError(path, no, f"grade {grade_s!r} is not an integer; expected {QRELS_LINE}")
            grade = int(grade_s)
            docs = qrels.setdefault(qid, {})
            if docid in docs:
                first = _first_line_of(path, 4, (qid, docid), 2)
                raise FormatError(path, no, f"document {docid!r} judged again for query {qid!r} (grade {grade}; "
                                            f"first at line {first}, grade {docs[docid]}); trec_eval refuses "
                                            "duplicate docs: keep one line per (qid, docid)")
            docs[docid] = grade
    if not qrels:
        raise FormatError(path, 1, f"the qrels file is empty; expected {QRELS_LINE} lines")
    return qrels


def read_topics(path: str | os.PathLike) -> dict[str, str]:
    """Read a ``qid<TAB>query`` topics file (``.gz`` accepted) as ``{qid: query}``, ids and queries stripped.

    Raises:
        FormatError: a line without a tab, an empty qid, a qid repeated (both lines named), bytes that are not
            UTF-8.
    """
    topics: dict[str, str] = {}
    where: dict[str, int] = {}
    with open_text(path) as f:
        for no, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if "\t" not in line:
                raise FormatError(path, no, "no tab; expected 'qid<TAB>query'")
            qid, query = line.split("\t", 1)
            qid = qid.strip()
            if not qid:
                raise FormatError(path, no, "empty qid; expected 'qid<TAB>query'")
            if qid in where:
                raise FormatError(path, no, f"query id {qid!r} repeated (first at line {where[qid]}); each qid must "
                                            "be unique: remove or renumber one of them")
            where[qid] = no
            topics[qid] = query.strip()
    return topics


# ------------------------------------------------------------------------------------------------------- writing

def rank(docs: Mapping[str, float], k: int | None = None) -> list[tuple[str, float]]:
    """Sort one query's ``{docid: score}`` the way trec_eval does: score descending, then docid descending."""
    ordered = sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    return ordered if k is None else ordered[:k]


def qid_order(qid: str) -> tuple[int, int | str]:
    """Sort key for query ids: numeric ids in numeric order first, then the others in string order."""
    return (0, int(qid)) if qid.isdigit() else (1, qid)


def format_score(score: float, qid: str = "?", docid: str = "?") -> str:
    """``repr(float(score))``: the shortest text that reads back to the same double (no rounding, so distinct
    scores stay distinct in the file).

    Raises:
        ScoreError: a NaN or infinite score (trec_eval's order for it is undefined).
    """
    value = float(score)
    if not math.isfinite(value):
        raise ScoreError(f"query {qid}, document {docid}: score {value} is not a finite number; refusing to write a "
                         "run whose order is undefined (fix the scores that produced it)")
    return repr(value)


def iter_run_lines(run: Mapping[str, Mapping[str, float]], tag: str = "kd_pyserini", k: int | None = None,
                   msmarco: bool = False, keep_order: bool = False) -> Iterator[str]:
    """Lines of a run file, queries in numeric-then-string order, documents in trec_eval order, scores exact.
    ``keep_order``: queries and documents in the mapping's own order instead (ranks 1, 2, ... in that order)."""
    for qid in (run if keep_order else sorted(run, key=qid_order)):
        docs = list(run[qid].items())[:k] if keep_order else rank(run[qid], k)
        for r, (docid, score) in enumerate(docs, 1):
            text = format_score(score, qid, docid)  # checked in MS MARCO format too: the order depends on it
            yield f"{qid}\t{docid}\t{r}\n" if msmarco else f"{qid} Q0 {docid} {r} {text} {tag}\n"


@contextmanager
def atomic_write_text(path: str | os.PathLike) -> Iterator[TextIO]:
    """Write a UTF-8 text file atomically (temporary name, renamed on success); gzip-compressed when the name ends
    in ``.gz`` (the temporary file is gzip too, so the final name never holds plain text)."""
    p = Path(path)
    if not p.name.endswith(".gz"):
        with atomic_write(p) as f:
            yield f
        return
    with atomic_write(p, "wb") as raw:
        with gzip.GzipFile(filename=p.name[:-3], mode="wb", fileobj=raw, mtime=0) as gz:
            with io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as f:
                yield f


def write_run(run: Mapping[str, Mapping[str, float]], path: str | os.PathLike, tag: str = "kd_pyserini",
              k: int | None = None, msmarco: bool = False, keep_order: bool = False) -> Path:
    """Write a run atomically in TREC format (or MS MARCO's ``qid\\tdocid\\trank`` with ``msmarco=True``);
    gzip-compressed when ``path`` ends in ``.gz``. Scores are written exactly (:func:`format_score`).

    Args:
        run: ``{qid: {docid: score}}``.
        path: output file.
        tag: the run tag (TREC's last column).
        k: keep the top ``k`` per query (all when ``None``).
        msmarco: write MS MARCO format instead of TREC.
        keep_order: write queries and documents in the mapping's order (e.g. a fusion that follows Pyserini's tie
            order) instead of sorting them the way trec_eval ranks; ranks are 1, 2, ... in that order.

    Raises:
        ScoreError: a NaN or infinite score (nothing is written).
    """
    with atomic_write_text(path) as f:
        f.writelines(iter_run_lines(run, tag=tag, k=k, msmarco=msmarco, keep_order=keep_order))
    return Path(path)
