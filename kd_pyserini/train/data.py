"""Training data for Margin-MSE distillation: teacher files, lazily read texts, deterministic batches.

Three teacher-file formats (Hofstätter et al. 2020, "Improving Efficient Neural Ranking Models with
Cross-Architecture Knowledge Distillation", arXiv:2010.02666, publish theirs in the first one):

* ``ids`` — ``pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid`` (optionally ``.gz``), expanded to text through
  MS MARCO ``collection.tsv`` (``pid<TAB>passage``) and ``queries.train.tsv`` (``qid<TAB>query``). The two tsv
  files are *not* loaded: an :class:`OffsetIndex` keeps one byte offset and length per line in numpy arrays (dense
  arrays keyed by the integer id when ids are dense integers, as MS MARCO's are; a sorted id array searched with
  ``np.searchsorted`` otherwise) and reads a line by ``os.pread`` when it is needed. The 8.8M-passage collection
  costs ~180 MB of arrays (built in seconds) instead of several GB of Python strings. The teacher rows become numpy
  arrays: 20 bytes per triple (two float32 scores, three int32 rows), ~0.8 GB for a 40M-triple teacher file.
* ``text`` — ``pos_score<TAB>neg_score<TAB>query<TAB>pos_passage<TAB>neg_passage``. Only line offsets and scores are
  kept; lines are re-read lazily (a ``.gz`` file cannot be seeked, so its rows are held in memory instead).
* ``jsonl`` — one object per line with ``query`` (str), ``pos`` and ``neg`` (lists of str) and ``pos_scores`` /
  ``neg_scores`` (lists of numbers, one per passage; FlagEmbedding's distillation layout). Every positive is paired
  with every negative: ``len(pos) * len(neg)`` triples per line.

A malformed line raises :class:`kd_pyserini.trec_io.FormatError` naming ``file:line``; with ``skip_bad=True`` it is
skipped and counted (:attr:`TeacherData.skipped`, first messages in :attr:`TeacherData.bad_examples`).

The data order is a pure function of ``(seed, epoch, rank, world_size)`` (:func:`epoch_order`), which is what lets
``--resume`` continue an interrupted run exactly.
"""

from __future__ import annotations

import array
import gzip
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kd_pyserini.trec_io import FormatError, open_text

__all__ = ["Triple", "Batch", "OffsetIndex", "TeacherData", "IdTeacherData", "TextTeacherData", "JsonlTeacherData",
           "load_teacher", "detect_teacher_format", "epoch_order", "Collator", "TEACHER_FORMATS"]

log = logging.getLogger(__name__)
TEACHER_FORMATS = ("auto", "ids", "text", "jsonl")
_MAX_BAD_EXAMPLES = 5


@dataclass(frozen=True)
class Triple:
    """One training example: a query, a positive and a negative passage, and the teacher's two scores."""

    query: str
    pos: str
    neg: str
    pos_score: float
    neg_score: float

    @property
    def margin(self) -> float:
        """The teacher margin ``t(q, p+) - t(q, p-)`` that Margin-MSE makes the student reproduce."""
        return self.pos_score - self.neg_score


# ----------------------------------------------------------------------------------------------------------------
# Lazily read id<TAB>text files
# ----------------------------------------------------------------------------------------------------------------

class OffsetIndex:
    """Byte offsets of the lines of an ``id<TAB>text`` tsv file, keyed by id; texts are read on demand.

    Building the index reads the file once (about 30 s for MS MARCO's 8.8M passages). Lookups use ``os.pread``, which
    has no shared file position, so one index can serve several threads.

    Integer ids that are dense (``max id < 2 * lines + 1024``, true of MS MARCO pids and qids) are stored as direct
    arrays (``offsets[id]``); other ids, strings included, as a sorted id array searched by ``np.searchsorted``.

    A ``.gz`` file cannot be read by offset: its texts are held in memory (a warning says so; decompress it to avoid
    that).

    Args:
        path: the tsv file.
        skip_bad: skip (and count in :attr:`skipped`) lines without a tab instead of raising ``FormatError``.
    """

    def __init__(self, path: str | os.PathLike, skip_bad: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} does not exist (expected an 'id<TAB>text' tsv file such as MS MARCO "
                                    "collection.tsv or queries.train.tsv)")
        self.skipped = 0
        self._texts: dict[str, str] | None = None
        self._fd: int | None = None
        if str(self.path).endswith(".gz"):
            log.warning("%s is gzipped, so it cannot be read by byte offset: holding its texts in memory (gunzip it "
                        "to keep memory flat)", self.path)
            self._load_in_memory(skip_bad)
            return
        self._build(skip_bad)
        self._fd = os.open(self.path, os.O_RDONLY)

    # -- building ------------------------------------------------------------------------------------------------

    def _load_in_memory(self, skip_bad: bool) -> None:
        texts: dict[str, str] = {}
        with open_text(self.path) as f:
            for no, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                if "\t" not in line:
                    if skip_bad:
                        self.skipped += 1
                        continue
                    raise FormatError(self.path, no, "no tab; expected 'id<TAB>text'")
                key, text = line.split("\t", 1)
                texts[key.strip()] = text
        self._texts = texts

    def _build(self, skip_bad: bool) -> None:
        offsets = array.array("q")
        lengths = array.array("l")
        int_ids: array.array | None = array.array("q")
        str_ids: list[bytes] | None = None
        pos = 0
        with open(self.path, "rb") as f:
            for no, line in enumerate(f, 1):
                n = len(line)
                tab = line.find(b"\t")
                if tab < 0:
                    if line.strip():
                        if not skip_bad:
                            raise FormatError(self.path, no, "no tab; expected 'id<TAB>text'")
                        self.skipped += 1
                    pos += n
                    continue
                key = line[:tab].strip()
                if int_ids is not None:
                    try:
                        value = int(key)
                        if str(value).encode() != key:  # "007", "+7", "7_0": keep such ids as strings
                            raise ValueError(key)
                        int_ids.append(value)
                    except ValueError:
                        str_ids = [str(i).encode() for i in int_ids]
                        int_ids = None
                if str_ids is not None:
                    str_ids.append(key)
                offsets.append(pos + tab + 1)
                lengths.append(n - tab - 1)
                pos += n
        self._offsets = np.frombuffer(offsets, dtype=np.int64).copy() if len(offsets) else np.zeros(0, np.int64)
        self._lengths = np.asarray(lengths, dtype=np.int64).astype(np.int32)
        count = len(self._offsets)
        self._dense = False
        if int_ids is not None:
            ids = np.frombuffer(int_ids, dtype=np.int64) if len(int_ids) else np.zeros(0, np.int64)
            if count and ids.min() >= 0 and ids.max() < 2 * count + 1024:
                slot = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
                slot[ids] = np.arange(count, dtype=np.int64)
                if int((slot >= 0).sum()) != count:
                    self._raise_duplicate(ids.astype(str))
                self._dense, self._slot = True, slot
                return
            keys = ids.astype(str).astype(np.bytes_)
        else:
            keys = np.array(str_ids, dtype=np.bytes_) if str_ids else np.zeros(0, dtype="S1")
        order = np.argsort(keys, kind="stable")
        self._keys, self._key_rows = keys[order], order.astype(np.int64)
        if count > 1 and bool((self._keys[1:] == self._keys[:-1]).any()):
            self._raise_duplicate(keys)

    def _raise_duplicate(self, keys: np.ndarray) -> None:
        seen: set[Any] = set()
        for k in keys:
            if k in seen:
                k = k.decode() if isinstance(k, bytes) else str(k)
                raise ValueError(f"{self.path}: id {k!r} occurs more than once; ids must be unique")
            seen.add(k)

    # -- lookups -------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._texts) if self._texts is not None else len(self._offsets)

    def row(self, key: str) -> int:
        """The row of ``key`` (an int usable with :meth:`text_at`), or -1 when the file has no such id."""
        key = key.strip()
        if self._texts is not None:
            raise TypeError("an in-memory (gzipped) index has no rows; use get()")
        if self._dense:
            if not (key.isascii() and key.isdigit()) or (len(key) > 1 and key[0] == "0"):
                return -1
            i = int(key)
            return int(self._slot[i]) if i < len(self._slot) else -1
        k = key.encode()
        j = int(np.searchsorted(self._keys, k))
        if j < len(self._keys) and self._keys[j] == k:
            return int(self._key_rows[j])
        return -1

    def __contains__(self, key: str) -> bool:
        if self._texts is not None:
            return key.strip() in self._texts
        return self.row(key) >= 0

    def text_at(self, row: int) -> str:
        """The text on row ``row`` (read from disk now)."""
        raw = os.pread(self._fd, int(self._lengths[row]), int(self._offsets[row]))
        return raw.rstrip(b"\r\n").decode("utf-8", errors="replace")

    def get(self, key: str) -> str:
        """The text of ``key``; ``KeyError`` when absent."""
        if self._texts is not None:
            return self._texts[key.strip()]
        r = self.row(key)
        if r < 0:
            raise KeyError(key)
        return self.text_at(r)

    @property
    def in_memory(self) -> bool:
        return self._texts is not None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def __getstate__(self):  # pickling (e.g. to a worker process) reopens the file there
        state = self.__dict__.copy()
        state["_fd"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self._texts is None:
            self._fd = os.open(self.path, os.O_RDONLY)


# ----------------------------------------------------------------------------------------------------------------
# Teacher files
# ----------------------------------------------------------------------------------------------------------------

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

    def describe(self) -> dict[str, Any]:
        m = self.margins()
        return {"path": str(self.path), "format": self.format, "triples": len(self), "skipped": self.skipped,
                "margin_mean": float(m.mean()), "margin_std": float(m.std())}


def _scores(parts: Sequence[str]) -> tuple[float, float] | str:
    try:
        pos, neg = float(parts[0]), float(parts[1])
    except ValueError:
        return f"scores {parts[0]!r}, {parts[1]!r} are not numbers"
    if not (math.isfinite(pos) and math.isfinite(neg)):
        return f"scores {parts[0]!r}, {parts[1]!r} are not finite"
    return pos, neg


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
        with open_text(self.path) as f:
            for no, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) != 5:
                    self._bad(no, f"{len(parts)} tab-separated fields; expected 5 "
                                  "'pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid'")
                    continue
                s = _scores(parts)
                if isinstance(s, str):
                    self._bad(no, s)
                    continue
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
        opener = gzip.open if gz else open
        pos = 0
        with opener(self.path, "rb") as f:
            for no, raw in enumerate(f, 1):
                n = len(raw)
                start, pos = pos, pos + n
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) != 5:
                    self._bad(no, f"{len(parts)} tab-separated fields; expected 5 "
                                  "'pos_score<TAB>neg_score<TAB>query<TAB>pos_passage<TAB>neg_passage'")
                    continue
                s = _scores(parts)
                if isinstance(s, str):
                    self._bad(no, s)
                    continue
                if not all(x.strip() for x in parts[2:]):
                    self._bad(no, "empty query or passage text")
                    continue
                scores.extend(s)
                if gz:
                    self._rows.append((parts[2], parts[3], parts[4]))
                else:
                    offsets.append(start)
                    lengths.append(n)
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
        with open_text(self.path) as f:
            for no, line in enumerate(f, 1):
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
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in sc):
                self._bad(no, f"'{name}_scores' must hold finite numbers")
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


def detect_teacher_format(path: str | os.PathLike, collection: Any = None, queries: Any = None) -> str:
    """``jsonl`` for ``.jsonl``/``.json`` files or a first line starting with ``{``; ``ids`` when a collection and
    queries file are given; otherwise ``text``."""
    name = str(path).lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    with open_text(path) as f:
        for line in f:
            if line.strip():
                if line.lstrip().startswith("{"):
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
    if collection is not None or queries is not None:
        log.warning("--collection/--queries are ignored for a %s teacher file (texts are in the file)", fmt)
    if fmt == "text":
        return TextTeacherData(path, skip_bad)
    return JsonlTeacherData(path, skip_bad)


# ----------------------------------------------------------------------------------------------------------------
# Order and batches
# ----------------------------------------------------------------------------------------------------------------

def epoch_order(n: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """The triple indices this rank reads in ``epoch``: a seeded permutation, cut to a multiple of ``world_size``
    (so every rank gets as many) and dealt round-robin (rank ``r`` gets positions ``r, r + W, ...``)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    usable = (n // world_size) * world_size
    return perm[:usable][rank::world_size]


def num_batches(n: int, batch_size: int, world_size: int = 1) -> int:
    """Batches per epoch per rank (the last one may be short)."""
    return math.ceil((n // world_size) / batch_size)


@dataclass
class Batch:
    """A tokenised batch. Queries and passages are de-duplicated: ``q_index[i]`` / ``pos_index[i]`` /
    ``neg_index[i]`` point triple ``i`` at rows of the query / passage vectors.

    Passages are sorted by token length and cut into ``len(p_ids)`` buckets, each padded to its own longest
    passage (rows are numbered across the buckets in order); queries form one bucket padded to the longest query.
    """

    q_ids: Any
    q_mask: Any
    p_ids: list[Any]
    p_mask: list[Any]
    q_index: Any
    pos_index: Any
    neg_index: Any
    pos_scores: Any
    neg_scores: Any
    size: int

    def _map(self, fn) -> "Batch":
        out = {}
        for k, v in self.__dict__.items():
            if isinstance(v, list):
                out[k] = [fn(x) for x in v]
            elif hasattr(v, "to"):
                out[k] = fn(v)
            else:
                out[k] = v
        return Batch(**out)

    def to(self, device, non_blocking: bool = True) -> "Batch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        return self._map(lambda t: t.pin_memory())

    @property
    def teacher_margin(self):
        return self.pos_scores - self.neg_scores

    @property
    def padded_tokens(self) -> int:
        """Token positions the encoder processes (real + padding), for efficiency statistics."""
        return int(self.q_ids.numel()) + sum(int(x.numel()) for x in self.p_ids)


def _pad(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """``(input_ids, attention_mask)``: int64 tensors padded to the longest text (see ``encoding.pad_batch``)."""
    from kd_pyserini.encoding.pooling import pad_batch  # imports torch: on first batch, not with this module

    return pad_batch(ids, pad_id)


class Collator:
    """Tokenise a list of triples once: unique queries (max ``query_max_length``) and unique passages (max
    ``passage_max_length``), padded to the longest text, not to the maximum length.

    ``passage_buckets`` > 1 sorts the unique passages by length and pads each of that many groups separately: with
    MS MARCO's passage lengths (median 78, 99th percentile 191 word pieces) two buckets cut the padded passage tokens
    of a 32-triple batch by ~30%, four by ~40%.
    """

    def __init__(self, tokenizer: Any, query_max_length: int = 30, passage_max_length: int = 200,
                 passage_buckets: int = 1):
        self.tokenizer = tokenizer
        self.query_max_length = query_max_length
        self.passage_max_length = passage_max_length
        self.passage_buckets = max(1, passage_buckets)
        self.pad_id = tokenizer.pad_token_id or 0

    def _tok(self, texts: list[str], max_length: int) -> list[list[int]]:
        return self.tokenizer(texts, truncation=True, max_length=max_length, padding=False,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    def __call__(self, triples: Sequence[Triple]) -> Batch:
        import torch

        qpos: dict[str, int] = {}
        ppos: dict[str, int] = {}
        qi, pi, ni = [], [], []
        for t in triples:
            qi.append(qpos.setdefault(t.query, len(qpos)))
            pi.append(ppos.setdefault(t.pos, len(ppos)))
            ni.append(ppos.setdefault(t.neg, len(ppos)))
        q_ids, q_mask = _pad(self._tok(list(qpos), self.query_max_length), self.pad_id)
        p_tok = self._tok(list(ppos), self.passage_max_length)
        order = sorted(range(len(p_tok)), key=lambda i: len(p_tok[i]))  # stable: ties keep first-seen order
        rank = [0] * len(order)
        for r, i in enumerate(order):
            rank[i] = r
        k = min(self.passage_buckets, len(order))
        bounds = [round(j * len(order) / k) for j in range(k + 1)]
        p_ids, p_mask = [], []
        for a, b in zip(bounds, bounds[1:]):
            ids, mask = _pad([p_tok[i] for i in order[a:b]], self.pad_id)
            p_ids.append(ids)
            p_mask.append(mask)
        return Batch(q_ids=q_ids, q_mask=q_mask, p_ids=p_ids, p_mask=p_mask,
                     q_index=torch.tensor(qi, dtype=torch.long),
                     pos_index=torch.tensor([rank[i] for i in pi], dtype=torch.long),
                     neg_index=torch.tensor([rank[i] for i in ni], dtype=torch.long),
                     pos_scores=torch.tensor([t.pos_score for t in triples], dtype=torch.float32),
                     neg_scores=torch.tensor([t.neg_score for t in triples], dtype=torch.float32),
                     size=len(triples))
