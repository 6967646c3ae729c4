"""Teacher files for Margin-MSE distillation, in three formats.

Hofstätter et al. 2020 ("Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
Distillation", arXiv:2010.02666) publish theirs in the first one:

* ``ids`` — ``pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid`` (optionally ``.gz``), expanded to text through
  MS MARCO ``collection.tsv`` (``pid<TAB>passage``) and ``queries.train.tsv`` (``qid<TAB>query``), which are read
  lazily by :class:`~kd_pyserini.offsets.OffsetIndex`. The teacher rows become numpy arrays: 20 bytes per
  triple (two float32 scores, three int32 rows), ~0.8 GB for a 40M-triple teacher file.
* ``text`` — ``pos_score<TAB>neg_score<TAB>query<TAB>pos_passage<TAB>neg_passage``. Only line offsets and scores are
  kept; lines are re-read lazily (a ``.gz`` file cannot be seeked, so its rows are held in memory instead).
* ``jsonl`` — one object per line with ``query`` (str), ``pos`` and ``neg`` (lists of str) and ``pos_scores`` /
  ``neg_scores`` (lists of numbers, one per passage; FlagEmbedding's distillation layout). Every positive is paired
  with every negative: ``len(pos) * len(neg)`` triples per line.

A malformed line raises :class:`kd_pyserini.trec_io.FormatError` naming ``file:line``; with ``skip_bad=True`` it is
skipped and counted (:attr:`TeacherData.skipped`, first messages in :attr:`TeacherData.bad_examples`). Malformed
includes: bytes that are not UTF-8, a score that is not a finite number or does not fit in float32 (scores are kept
as float32), and a margin so large that its square overflows float32 in the loss. A UTF-8 byte-order mark at the
start of a file is ignored.
"""

from __future__ import annotations

import array
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kd_pyserini.train.batches import Triple
from kd_pyserini.offsets import OffsetIndex, open_bytes, utf8_error
from kd_pyserini.trec_io import FormatError

__all__ = ["QueryColumn", "TeacherData", "IdTeacherData", "TextTeacherData", "JsonlTeacherData", "load_teacher",
           "detect_teacher_format", "TEACHER_FORMATS", "check_scores"]

log = logging.getLogger(__name__)
TEACHER_FORMATS = ("auto", "ids", "text", "jsonl")
_MAX_BAD_EXAMPLES = 5


@dataclass(frozen=True)
class QueryColumn:
    """The query of every triple of a teacher file, compactly (what :meth:`TeacherData.query_keys` returns).

    Attributes:
        kind: ``ids`` (``names`` are qids) or ``texts`` (``names`` are query texts).
        names: one per distinct query.
        codes: per triple, an index into ``names`` (int32).
        rows: id files read from disk: each name's row in the queries file (else ``None``).
        lines: text files read from disk: each text's first line (1-based; 0 or ``None`` when unknown).
    """

    kind: str
    names: list[str]
    codes: np.ndarray
    rows: np.ndarray | None = None
    lines: list[int] | None = None


class TeacherData(Sequence[Triple]):
    """A teacher file as a random-access sequence of :class:`Triple` (texts materialised on access).

    Attributes:
        path: the file. format: ``ids``, ``text`` or ``jsonl``. skipped: bad lines skipped (``skip_bad``).
        bad_examples: the first few skipped lines' messages (``file:line: what``).
    """

    path: Path
    format: str

    def __init__(self, path: str | os.PathLike, skip_bad: bool):
        self.path = Path(path)
        self.skip_bad = skip_bad
        self.skipped = 0
        self.bad_examples: list[str] = []
        if not self.path.is_file():
            raise FileNotFoundError(f"teacher file {self.path} does not exist")

    def _fields(self, no: int, raw: bytes, rest: str) -> tuple[list[str], tuple[float, float]] | None:
        """Line ``no`` of a five-column teacher file split into its fields and its two checked scores; ``None`` for a
        blank line or a bad one (reported through :meth:`_bad`). ``rest`` names the last three columns."""
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            self._bad(no, utf8_error(raw))
            return None
        if not line.strip():
            return None
        parts = line.split("\t")
        if len(parts) != 5:
            self._bad(no, f"{len(parts)} tab-separated fields; expected 5 'pos_score<TAB>neg_score<TAB>{rest}'")
            return None
        s = _scores(parts)
        if isinstance(s, str):
            self._bad(no, s)
            return None
        return parts, s

    def _bad(self, no: int, message: str) -> None:
        err = FormatError(self.path, no, message)
        if not self.skip_bad:
            raise err
        self.skipped += 1
        if len(self.bad_examples) < _MAX_BAD_EXAMPLES:
            self.bad_examples.append(str(err))

    def _finish(self) -> None:
        if self.skipped:
            log.warning("%s: skipped %d bad line(s) (--skip-bad); first: %s", self.path, self.skipped,
                        self.bad_examples[0])
        if len(self) == 0:
            raise ValueError(f"teacher file {self.path} has no usable training triples"
                             + (f" ({self.skipped} bad lines skipped)" if self.skipped else ""))

    def margins(self) -> np.ndarray:
        """All teacher margins as float32 (for statistics)."""
        raise NotImplementedError

    def query_keys(self) -> QueryColumn:
        """The query of every triple (:class:`QueryColumn`); here by query text, read through ``self[i]``."""
        index: dict[str, int] = {}
        codes = np.array([index.setdefault(self[i].query, len(index)) for i in range(len(self))], dtype=np.int32)
        return QueryColumn("texts", list(index), codes)

    def describe(self) -> dict[str, Any]:
        m = self.margins()
        return {"path": str(self.path), "format": self.format, "triples": len(self), "skipped": self.skipped,
                "margin_mean": float(m.mean()), "margin_std": float(m.std())}


#: the largest float32; scores are stored as float32.
F32_MAX = float(np.finfo(np.float32).max)
#: margins at least this large overflow float32 when the loss squares them.
MAX_MARGIN = math.sqrt(F32_MAX)


def _score_problem(value: Any, shown: str) -> str | None:
    try:
        x: float | None = float(value)
    except OverflowError:  # a JSON integer beyond float64
        x = None
    if x is not None and not math.isfinite(x):
        return f"score {shown} is not finite"
    if x is None or abs(x) > F32_MAX:
        return f"score {shown} does not fit in float32 (|score| <= {F32_MAX:.4g}); rescale the teacher scores"
    return None


def check_scores(pos: Sequence[Any], neg: Sequence[Any], shown_pos: Sequence[str] | None = None,
                 shown_neg: Sequence[str] | None = None) -> str | None:
    """Why these teacher scores cannot be trained on (``None`` when they can): a score that is not finite or does not
    fit in float32, or a margin ``pos - neg`` whose square overflows float32 in the loss."""
    for values, shown in ((pos, shown_pos), (neg, shown_neg)):
        for k, v in enumerate(values):
            problem = _score_problem(v, shown[k] if shown else repr(v))
            if problem:
                return problem
    hi = max(float(max(pos)) - float(min(neg)), float(max(neg)) - float(min(pos)))
    if hi >= MAX_MARGIN:
        return (f"a teacher margin of {hi:.4g} is too large: its square overflows float32 in the loss (|pos_score - "
                f"neg_score| must be below {MAX_MARGIN:.3g}); rescale the teacher scores")
    return None


def _scores(parts: Sequence[str]) -> tuple[float, float] | str:
    try:
        pos, neg = float(parts[0]), float(parts[1])
    except ValueError:
        return f"scores {parts[0]!r}, {parts[1]!r} are not numbers"
    if abs(pos) <= F32_MAX and abs(neg) <= F32_MAX and abs(pos - neg) < MAX_MARGIN:  # False for NaN too
        return pos, neg
    return check_scores([pos], [neg], [repr(parts[0])], [repr(parts[1])]) or "scores are not usable"


class IdTeacherData(TeacherData):
    """``pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid`` resolved through a collection and queries file.

    Unknown ids are bad lines (``file:line: pid '123' is not in collection.tsv``).
    """

    format = "ids"

    def __init__(self, path: str | os.PathLike, collection: OffsetIndex | str | os.PathLike,
                 queries: OffsetIndex | str | os.PathLike, skip_bad: bool = False):
        super().__init__(path, skip_bad)
        self.collection = collection if isinstance(collection, OffsetIndex) else OffsetIndex(collection)
        self.queries = queries if isinstance(queries, OffsetIndex) else OffsetIndex(queries)
        in_mem = self.collection.in_memory or self.queries.in_memory
        scores = array.array("f")
        refs = array.array("i")  # rows of the two indexes (int32: MS MARCO has 8.8M passages)
        self._keys: list[tuple[str, str, str]] | None = [] if in_mem else None
        with open_bytes(self.path) as (f, _):
            for no, raw in enumerate(f, 1):
                fields = self._fields(no, raw, "qid<TAB>pos_pid<TAB>neg_pid")
                if fields is None:
                    continue
                parts, s = fields
                qid, pid, nid = (x.strip() for x in parts[2:])
                if in_mem:
                    missing = self._missing_in_memory(qid, pid, nid)
                    if missing:
                        self._bad(no, missing)
                        continue
                    self._keys.append((qid, pid, nid))
                else:
                    rq, rp, rn = self.queries.row(qid), self.collection.row(pid), self.collection.row(nid)
                    if rq < 0 or rp < 0 or rn < 0:
                        self._bad(no, self._missing_message(qid, pid, nid, rq, rp, rn))
                        continue
                    refs.extend((rq, rp, rn))
                scores.extend(s)
        self._scores = np.frombuffer(scores, dtype=np.float32).reshape(-1, 2).copy() if len(scores) \
            else np.zeros((0, 2), np.float32)
        self._refs = np.frombuffer(refs, dtype=np.int32).reshape(-1, 3).copy() if len(refs) \
            else np.zeros((0, 3), np.int32)
        self._finish()

    def _missing_message(self, qid, pid, nid, rq, rp, rn) -> str:
        if rq < 0:
            return f"qid {qid!r} is not in {self.queries.path.name}"
        return f"pid {pid if rp < 0 else nid!r} is not in {self.collection.path.name}"

    def _missing_in_memory(self, qid, pid, nid) -> str | None:
        if qid not in self.queries:
            return f"qid {qid!r} is not in {self.queries.path.name}"
        for p in (pid, nid):
            if p not in self.collection:
                return f"pid {p!r} is not in {self.collection.path.name}"
        return None

    def __len__(self) -> int:
        return len(self._scores)

    def __getitem__(self, i: int) -> Triple:  # type: ignore[override]
        ps, ns = self._scores[i]
        if self._keys is not None:
            q, p, n = self._keys[i]
            return Triple(self.queries.get(q), self.collection.get(p), self.collection.get(n), float(ps), float(ns))
        rq, rp, rn = self._refs[i]
        return Triple(self.queries.text_at(rq), self.collection.text_at(rp), self.collection.text_at(rn),
                      float(ps), float(ns))

    def margins(self) -> np.ndarray:
        return self._scores[:, 0] - self._scores[:, 1]


    def query_keys(self) -> QueryColumn:
        """The qid of every triple (:class:`QueryColumn` of kind ``ids``; ``rows``: the queries file's rows)."""
        if self._keys is not None:  # in-memory (gzipped) indexes
            seen: dict[str, int] = {}
            codes = np.array([seen.setdefault(k[0], len(seen)) for k in self._keys], dtype=np.int32)
            return QueryColumn("ids", list(seen), codes)
        rows, inverse = np.unique(self._refs[:, 0], return_inverse=True)
        return QueryColumn("ids", self.queries.ids(rows), inverse.astype(np.int32).ravel(), rows=rows)


class TextTeacherData(TeacherData):
    """``pos_score<TAB>neg_score<TAB>query<TAB>pos<TAB>neg``; lines re-read by offset (in memory for ``.gz``)."""

    format = "text"

    def __init__(self, path: str | os.PathLike, skip_bad: bool = False):
        super().__init__(path, skip_bad)
        gz = str(self.path).endswith(".gz")
        scores = array.array("f")
        offsets = array.array("q")
        lengths = array.array("q")
        self._rows: list[tuple[str, str, str]] | None = [] if gz else None
        with open_bytes(self.path) as (f, pos):
            for no, raw in enumerate(f, 1):
                start, pos = pos, pos + len(raw)
                fields = self._fields(no, raw, "query<TAB>pos_passage<TAB>neg_passage")
                if fields is None:
                    continue
                parts, s = fields
                if not all(x.strip() for x in parts[2:]):
                    self._bad(no, "empty query or passage text")
                    continue
                scores.extend(s)
                if gz:
                    self._rows.append((parts[2], parts[3], parts[4]))
                else:
                    offsets.append(start)
                    lengths.append(len(raw))
        self._scores = np.frombuffer(scores, dtype=np.float32).reshape(-1, 2).copy() if len(scores) \
            else np.zeros((0, 2), np.float32)
        self._offsets = np.frombuffer(offsets, dtype=np.int64).copy()
        self._lengths = np.frombuffer(lengths, dtype=np.int64).copy()
        self._fd = None if gz else os.open(self.path, os.O_RDONLY)
        self._finish()

    def __len__(self) -> int:
        return len(self._scores)

    def __getitem__(self, i: int) -> Triple:  # type: ignore[override]
        ps, ns = self._scores[i]
        if self._rows is not None:
            q, p, n = self._rows[i]
        else:
            raw = os.pread(self._fd, int(self._lengths[i]), int(self._offsets[i]))
            _, _, q, p, n = raw.decode("utf-8", errors="replace").rstrip("\r\n").split("\t")
        return Triple(q, p, n, float(ps), float(ns))

    def margins(self) -> np.ndarray:
        return self._scores[:, 0] - self._scores[:, 1]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fd"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self._rows is None:
            self._fd = os.open(self.path, os.O_RDONLY)


    def query_keys(self) -> QueryColumn:
        """The query text of every triple (:class:`QueryColumn` of kind ``texts``), with each text's first line
        (a ``.gz`` file keeps no line numbers: 0)."""
        codes = np.empty(len(self), dtype=np.int32)
        seen: dict[Any, int] = {}
        texts: list[str] = []
        lines: list[int] = []
        if self._rows is not None:  # a .gz file: rows in memory, no line numbers kept
            for i, (q, _, _) in enumerate(self._rows):
                c = seen.get(q)
                if c is None:
                    c = seen[q] = len(texts)
                    texts.append(q)
                    lines.append(0)
                codes[i] = c
            return QueryColumn("texts", texts, codes, lines=lines)
        offsets = self._offsets.tolist()
        j = 0
        with open_bytes(self.path) as (f, pos):
            for no, raw in enumerate(f, 1):
                start, pos = pos, pos + len(raw)
                if j >= len(offsets) or start != offsets[j]:
                    continue  # a blank or skipped line
                q = raw.split(b"\t", 3)[2]
                c = seen.get(q)
                if c is None:
                    c = seen[q] = len(texts)
                    texts.append(q.decode("utf-8", errors="replace"))
                    lines.append(no)
                codes[j] = c
                j += 1
        if j != len(codes):  # pragma: no cover - the file changed since it was loaded
            raise ValueError(f"{self.path} changed since it was read ({j} of {len(codes)} triples found again); "
                             "do not edit a teacher file during training")
        return QueryColumn("texts", texts, codes, lines=lines)


class JsonlTeacherData(TeacherData):
    """JSON lines with ``query``, ``pos``, ``neg``, ``pos_scores``, ``neg_scores``: one triple per (pos, neg) pair.

    Texts are interned (a passage that appears in several lines is stored once).
    """

    format = "jsonl"

    def __init__(self, path: str | os.PathLike, skip_bad: bool = False):
        super().__init__(path, skip_bad)
        self.texts: list[str] = []
        intern: dict[str, int] = {}

        def tid(text: str) -> int:
            i = intern.get(text)
            if i is None:
                i = intern[text] = len(self.texts)
                self.texts.append(text)
            return i

        refs = array.array("q")
        scores = array.array("f")
        with open_bytes(self.path) as (f, _):
            for no, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    self._bad(no, utf8_error(raw))
                    continue
                if not line.strip():
                    continue
                parsed = self._parse(no, line)
                if parsed is None:
                    continue
                query, pos, neg, ps, ns = parsed
                q = tid(query)
                pids, nids = [tid(p) for p in pos], [tid(n) for n in neg]
                for pi, psc in zip(pids, ps):
                    for ni, nsc in zip(nids, ns):
                        refs.extend((q, pi, ni))
                        scores.extend((psc, nsc))
        self._refs = np.frombuffer(refs, dtype=np.int64).reshape(-1, 3).copy() if len(refs) \
            else np.zeros((0, 3), np.int64)
        self._scores = np.frombuffer(scores, dtype=np.float32).reshape(-1, 2).copy() if len(scores) \
            else np.zeros((0, 2), np.float32)
        self._finish()

    def _parse(self, no: int, line: str):
        expected = "expected an object with query (str), pos/neg (lists of str) and pos_scores/neg_scores (lists of " \
                   "numbers, one per passage)"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            self._bad(no, f"not valid JSON ({e.msg}); {expected}")
            return None
        if not isinstance(obj, dict):
            self._bad(no, f"not a JSON object; {expected}")
            return None
        missing = [k for k in ("query", "pos", "neg", "pos_scores", "neg_scores") if k not in obj]
        if missing:
            self._bad(no, f"missing field(s) {', '.join(missing)}; {expected}")
            return None
        query, pos, neg, ps, ns = (obj[k] for k in ("query", "pos", "neg", "pos_scores", "neg_scores"))
        if not isinstance(query, str) or not query.strip():
            self._bad(no, f"'query' must be a non-empty string; {expected}")
            return None
        for name, texts, sc in (("pos", pos, ps), ("neg", neg, ns)):
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
                self._bad(no, f"{name!r} must be a non-empty list of strings; {expected}")
                return None
            if not isinstance(sc, list) or len(sc) != len(texts):
                self._bad(no, f"'{name}_scores' must be a list with one score per {name} passage "
                              f"({len(texts)}); got {len(sc) if isinstance(sc, list) else type(sc).__name__}")
                return None
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in sc):
                self._bad(no, f"'{name}_scores' must hold numbers")
                return None
        problem = check_scores(ps, ns)
        if problem:
            self._bad(no, f"{problem} (in pos_scores/neg_scores)")
            return None
        return query, pos, neg, ps, ns

    def __len__(self) -> int:
        return len(self._scores)

    def __getitem__(self, i: int) -> Triple:  # type: ignore[override]
        q, p, n = self._refs[i]
        ps, ns = self._scores[i]
        return Triple(self.texts[q], self.texts[p], self.texts[n], float(ps), float(ns))

    def margins(self) -> np.ndarray:
        return self._scores[:, 0] - self._scores[:, 1]

    def query_keys(self) -> QueryColumn:
        """The query text of every triple (:class:`QueryColumn` of kind ``texts``)."""
        tids, inverse = np.unique(self._refs[:, 0], return_inverse=True)
        return QueryColumn("texts", [self.texts[t] for t in tids.tolist()], inverse.astype(np.int32).ravel())


def detect_teacher_format(path: str | os.PathLike, collection: Any = None, queries: Any = None) -> str:
    """``jsonl`` for ``.jsonl``/``.json`` files or a first line starting with ``{``; ``ids`` when a collection and
    queries file are given; otherwise ``text``."""
    name = str(path).lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    with open_bytes(path) as (f, _):
        for raw in f:
            if raw.strip():
                if raw.lstrip().startswith(b"{"):
                    return "jsonl"
                break
    return "ids" if collection is not None and queries is not None else "text"


def load_teacher(path: str | os.PathLike, fmt: str = "auto", collection: str | os.PathLike | None = None,
                 queries: str | os.PathLike | None = None, skip_bad: bool = False) -> TeacherData:
    """Open a teacher file in any of the three formats (see the module docstring).

    Raises:
        FormatError: a bad line (unless ``skip_bad``).
        ValueError: ``ids`` without both ``collection`` and ``queries``, or an unknown format.
    """
    if fmt not in TEACHER_FORMATS:
        raise ValueError(f"teacher format {fmt!r} is not one of {', '.join(TEACHER_FORMATS)}")
    if fmt == "auto":
        fmt = detect_teacher_format(path, collection, queries)
    if fmt == "ids":
        if collection is None or queries is None:
            raise ValueError("an id teacher file (pos_score, neg_score, qid, pos_pid, neg_pid) needs --collection "
                             "(collection.tsv) and --queries (queries.train.tsv) to turn ids into text")
        return IdTeacherData(path, OffsetIndex(collection, skip_bad), OffsetIndex(queries, skip_bad), skip_bad)
    if collection is not None:
        log.warning("--collection is ignored for a %s teacher file (the passages' texts are in the file)", fmt)
    if queries is not None:
        log.info("--queries with a %s teacher file only gives its query texts their qids (for --query-clusters)", fmt)
    if fmt == "text":
        return TextTeacherData(path, skip_bad)
    return JsonlTeacherData(path, skip_bad)
