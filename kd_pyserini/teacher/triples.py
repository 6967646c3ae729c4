"""Training triples to score, and the teacher files written from them.

Two input layouts (``.gz`` accepted):

* ``ids``: ``qid<TAB>pos_pid<TAB>neg_pid`` (MS MARCO's ``qidpidtriples``), texts from ``--collection``
  (``pid<TAB>passage``) and ``--queries`` (``qid<TAB>query``), read lazily through kd-train's
  :class:`~kd_pyserini.train.data.OffsetIndex`;
* ``text``: ``query<TAB>pos_passage<TAB>neg_passage`` (``triples.train.small.tsv``).

:func:`read_triples` reads a file once: it checks every line (``file:line`` errors, or skipped and counted with
``skip_bad``), hashes the content (the fingerprint that resumed and sharded runs compare), and turns the triples into
the **unique** (query, passage) pairs they need, in order of first appearance (MS MARCO's triples repeat queries and
passages heavily; each pair is scored once). :func:`write_teacher_file` writes what kd-train reads: for ids,
Hofstätter's ``pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid``; for text,
``pos_score<TAB>neg_score<TAB>query<TAB>pos<TAB>neg`` (the triple's line as it was).
"""

from __future__ import annotations

import array
import gzip
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kd_pyserini.atomic import atomic_write
from kd_pyserini.progress import progress_bar
from kd_pyserini.trec_io import FormatError

__all__ = ["TRIPLE_FORMATS", "TripleSet", "read_triples", "detect_triple_format", "write_teacher_file",
           "format_score"]

TRIPLE_FORMATS = ("auto", "ids", "text")
_IDS_LAYOUT = "'qid<TAB>pos_pid<TAB>neg_pid'"
_TEXT_LAYOUT = "'query<TAB>pos_passage<TAB>neg_passage'"


def _lines(path: Path) -> Iterator[bytes]:
    """The file's lines as bytes (``.gz`` decompressed)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        yield from f


def detect_triple_format(path: str | os.PathLike, texts_given: bool = False) -> str:
    """``ids`` when a collection/queries pair is given or the first line's three fields hold no spaces, else
    ``text``."""
    if texts_given:
        return "ids"
    for raw in _lines(Path(path)):
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line.strip():
            parts = line.split("\t")
            return "ids" if len(parts) == 3 and all(p.strip() and " " not in p.strip() for p in parts) else "text"
    return "text"


@dataclass
class TripleSet:
    """Triples as unique (query, passage) pairs.

    Attributes:
        path, format: the file and its layout (``ids`` or ``text``).
        fingerprint: BLAKE2b of the file's (decompressed) content.
        queries / passages: distinct ids (``ids``) or texts (``text``), indexed by the arrays below.
        pair_query / pair_passage: for each unique pair, its query and passage index (first-appearance order).
        pos_pair / neg_pair: for each triple, the index of its (query, pos) and (query, neg) pair.
        skipped_lines: line numbers of bad lines skipped (``skip_bad``); bad_examples: their first messages.
    """

    path: Path
    format: str
    fingerprint: str
    queries: list[str]
    passages: list[str]
    pair_query: np.ndarray
    pair_passage: np.ndarray
    pos_pair: np.ndarray
    neg_pair: np.ndarray
    skipped_lines: list[int] = field(default_factory=list)
    bad_examples: list[str] = field(default_factory=list)

    @property
    def num_triples(self) -> int:
        return len(self.pos_pair)

    @property
    def num_pairs(self) -> int:
        return len(self.pair_query)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path.resolve()), "format": self.format, "fingerprint": self.fingerprint,
                "triples": self.num_triples, "unique_pairs": self.num_pairs, "queries": len(self.queries),
                "passages": len(self.passages), "skipped_lines": list(self.skipped_lines)}


def _check_ids(parts: list[str], collection: Any, queries: Any) -> str | None:
    qid, pid, nid = parts
    if queries is not None and qid not in queries:
        return f"qid {qid!r} is not in {Path(queries.path).name} (--queries)"
    if collection is not None:
        for p in (pid, nid):
            if p not in collection:
                return f"pid {p!r} is not in {Path(collection.path).name} (--collection)"
    return None


def read_triples(path: str | os.PathLike, fmt: str = "auto", *, collection: Any = None, queries: Any = None,
                 skip_bad: bool = False, skip_lines: Sequence[int] = (), progress: bool | None = None) -> TripleSet:
    """Read and check a triples file (see the module docstring).

    Args:
        path: the triples file.
        fmt: ``ids``, ``text`` or ``auto`` (:func:`detect_triple_format`).
        collection / queries: :class:`~kd_pyserini.train.data.OffsetIndex` es (or anything with ``in``) that every
            id must be in (ids layout); ``None`` skips the check.
        skip_bad: skip and count bad lines instead of raising.
        skip_lines: line numbers to skip as bad without looking (a merge repeating a scoring run's choices).

    Raises:
        FormatError: a bad line (``file:line: what is wrong``), unless ``skip_bad``.
        ValueError: no triples at all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"triples file {path} does not exist")
    if fmt not in TRIPLE_FORMATS:
        raise ValueError(f"triples format {fmt!r} is not one of {', '.join(TRIPLE_FORMATS)}")
    if fmt == "auto":
        fmt = detect_triple_format(path, collection is not None or queries is not None)
    layout = _IDS_LAYOUT if fmt == "ids" else _TEXT_LAYOUT
    digest = hashlib.blake2b(digest_size=16)
    q_index: dict[str, int] = {}
    p_index: dict[str, int] = {}
    refs = array.array("q")  # query, pos, neg index per triple
    skipped: list[int] = []
    examples: list[str] = []
    forced = set(skip_lines)
    gz = str(path).endswith(".gz")  # the bar counts bytes read (of the decompressed text for .gz)
    with progress_bar(total=None if gz else path.stat().st_size, desc=f"reading {path.name}", unit="B",
                      unit_scale=True, progress=progress) as bar:
        for no, raw in enumerate(_lines(path), 1):
            digest.update(raw)
            bar.update(len(raw))
            if no in forced:
                skipped.append(no)
                continue
            problem = None
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                line, problem = "", f"not valid UTF-8 ({e.reason} at byte {e.start})"
            if problem is None:
                if not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) != 3:
                    problem = f"{len(parts)} tab-separated fields; expected 3: {layout}"
                elif fmt == "ids":
                    parts = [p.strip() for p in parts]
                    if not all(parts):
                        problem = f"an empty id; expected {layout}"
                    elif " " in "".join(parts):
                        problem = (f"an id with a space ({parts[0][:30]!r}...): this looks like text triples; use "
                                   f"--format text, or give {layout} with --collection/--queries")
                    else:
                        problem = _check_ids(parts, collection, queries)
                elif not all(p.strip() for p in parts):
                    problem = f"an empty query or passage; expected {layout}"
            if problem is not None:
                if not skip_bad:
                    raise FormatError(path, no, problem + (" (use --skip-bad to skip and count bad lines)"
                                                           if "UTF-8" in problem or "fields" in problem else ""))
                skipped.append(no)
                if len(examples) < 5:
                    examples.append(f"{path}:{no}: {problem}")
                continue
            q, p, n = parts
            refs.append(q_index.setdefault(q, len(q_index)))
            refs.append(p_index.setdefault(p, len(p_index)))
            refs.append(p_index.setdefault(n, len(p_index)))
    if forced and set(skipped) != forced:
        raise ValueError(f"{path} has changed: lines {sorted(forced - set(skipped))[:3]} recorded as skipped do not "
                         "exist")
    tri = np.frombuffer(refs, dtype=np.int64).reshape(-1, 3) if len(refs) else np.zeros((0, 3), np.int64)
    if len(tri) == 0:
        raise ValueError(f"{path} has no usable triples" + (f" ({len(skipped)} bad lines skipped)" if skipped else ""))
    # unique (query, passage) pairs in order of first appearance: pos then neg, triple by triple
    keys = np.stack([(tri[:, 0] << 32) | tri[:, 1], (tri[:, 0] << 32) | tri[:, 2]], axis=1).ravel()
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    pair_of = rank[inverse.ravel()].reshape(-1, 2)
    ordered = uniq[order]
    return TripleSet(path=path, format=fmt, fingerprint=digest.hexdigest(), queries=list(q_index),
                     passages=list(p_index), pair_query=(ordered >> 32).astype(np.int64),
                     pair_passage=(ordered & 0xFFFFFFFF).astype(np.int64), pos_pair=pair_of[:, 0].copy(),
                     neg_pair=pair_of[:, 1].copy(), skipped_lines=skipped, bad_examples=examples)


def format_score(x: float) -> str:
    """A teacher score as written: six decimals (kd-train reads any float)."""
    return f"{x:.6f}"


def write_teacher_file(triples: TripleSet, pair_scores: np.ndarray, output: str | os.PathLike,
                       progress: bool | None = None) -> Path:
    """Write the teacher file for ``triples`` from one score per unique pair, atomically (a temporary file renamed
    when complete). Lines follow the triples file's order; ids layout: ``pos<TAB>neg<TAB>qid<TAB>pos_pid<TAB>neg_pid``,
    text layout: ``pos<TAB>neg<TAB>`` + the triple's line."""
    if len(pair_scores) != triples.num_pairs:
        raise ValueError(f"{len(pair_scores)} scores for {triples.num_pairs} pairs")
    text = [format_score(x) for x in np.asarray(pair_scores, dtype=np.float64).tolist()]
    skipped = set(triples.skipped_lines)
    t = 0
    with atomic_write(output) as out, progress_bar(total=triples.num_triples, desc="writing", unit="triple",
                                                   progress=progress) as bar:
        for no, raw in enumerate(_lines(triples.path), 1):
            if no in skipped:
                continue
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line.strip():
                continue
            if t >= triples.num_triples:
                raise ValueError(f"{triples.path} changed while it was being read (more triples than before)")
            if triples.format == "ids":
                line = "\t".join(p.strip() for p in line.split("\t"))
            out.write(f"{text[triples.pos_pair[t]]}\t{text[triples.neg_pair[t]]}\t{line}\n")
            t += 1
            if t % 65536 == 0:
                bar.update(65536)
        bar.update(t % 65536)
        if t != triples.num_triples:  # raised inside the block: the temporary file is removed, nothing is renamed
            raise ValueError(f"{triples.path} changed while it was being read ({t} triples now, "
                             f"{triples.num_triples} before)")
    return Path(output)
