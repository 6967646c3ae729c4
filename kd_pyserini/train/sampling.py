"""Which triples make up each training batch: a seeded shuffle, or TAS-balanced (topic-aware, margin-balanced).

Sebastian Hofstätter, Sheng-Chieh Lin, Jheng-Hong Yang, Jimmy Lin and Allan Hanbury. "Efficiently Teaching an
Effective Dense Retriever with Balanced Topic Aware Sampling". SIGIR 2021 (arXiv:2104.06967), section 3, as
implemented in matchmaker (``matchmaker/dataloaders/tas_balanced_training_loader.py``,
``config/train/modes/tas_balanced.yaml``: one cluster per batch, ``tas_balanced_pair_strategy: bins``).

Both samplers answer ``epoch_batches(epoch, seed, rank, world_size)`` (the triple indices of each batch of this
rank, a pure function of its arguments: numpy Generators seeded with ``[seed, epoch, ...]``, no global state, so
``--resume`` and DDP stay exact) and ``batches_per_epoch(world_size)`` (the same for every rank).

* :class:`RandomSampler`: :func:`~kd_pyserini.train.batches.epoch_order` cut into batches, exactly the order
  ``kd-train`` always used (an epoch is every triple once).
* :class:`TasBalancedSampler`:

  - **balanced margins**: per query, the teacher margins ``t(q,p+) - t(q,p-)`` of its pairs fall into ``bins``
    equal-width bins over that query's [min, max] margin (a query whose margins are all equal has one bin); a pair
    is drawn by picking one of the query's *non-empty* bins uniformly, then one of its pairs uniformly. Queries with
    fewer than 2 pairs are dropped (counted and logged), as in matchmaker.
  - **topic-aware batches**: a batch takes ``batch_size`` queries from one randomly chosen cluster; when the
    cluster runs short it takes all the cluster has left and draws another cluster. Each query brings one pair.
  - **epoch**: every usable query exactly once (one pair each), so an epoch has ``ceil(queries / batch_size)``
    batches, the last possibly short; for MS MARCO (400k queries, 40M triples) that is 1% of the triples. The plan
    is the same on every rank; batch ``b`` goes to rank ``b % world_size`` and each rank keeps
    ``ceil(queries / batch_size) // world_size`` batches (fewer than ``world_size`` batches are left out that epoch).

Where this differs from matchmaker (which streams batches forever, with replacement): queries are drawn without
replacement within an epoch (the issue's epoch), and the next cluster is chosen with probability proportional to the
queries it has left (a fresh draw for every batch, so the cluster just used is not favoured), not uniformly among
clusters; a
uniform choice without replacement empties small clusters first and would end every epoch with long runs of batches
from the largest clusters. matchmaker also crashes on a query whose margins are all equal (``np.arange`` with step
0); here it has one bin.

Teacher queries in no cluster are kept, as one extra "unclustered" cluster (a warning gives the count): their batches
are plain random batches, the other batches stay topic-pure. Cluster qids that are not in the teacher data are
ignored with a warning naming the count and the first one's ``file:line`` (a cluster file built over all training
queries may name more queries than a teacher file holds); a cluster file naming *none* of them is an error.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from kd_pyserini.errors import KdError, UsageError
from kd_pyserini.train.batches import epoch_order, num_batches
from kd_pyserini.train.clusters import where

__all__ = ["RandomSampler", "TasBalancedSampler", "SamplingError", "QueryKeys", "query_keys", "query_texts",
           "text_key", "SAMPLINGS"]

log = logging.getLogger(__name__)
SAMPLINGS = ("random", "tas-balanced")
_STREAM = 0x7A5  # third seed word: keeps this generator's stream apart from epoch_order's [seed, epoch]
_CHUNK = 1 << 22  # triples per chunk of the vectorised bin assignment (bounds temporary memory)


class SamplingError(KdError, ValueError):
    """Training data and query clusters that cannot make TAS-balanced batches (one line naming the cause and fix)."""


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise UsageError(f"rank {rank} is not in 0..{world_size - 1} (world size {world_size})")


class RandomSampler:
    """Today's order: :func:`~kd_pyserini.train.batches.epoch_order` (a seeded permutation of the ``n`` triples, cut
    to a multiple of ``world_size`` and dealt round-robin) cut into batches of ``batch_size`` (the last may be
    short). An epoch is every triple once."""

    name = "random"

    def __init__(self, n: int, batch_size: int):
        if n < 0 or batch_size < 1:
            raise UsageError(f"random sampling needs n >= 0 triples and batch_size >= 1 (got {n}, {batch_size})")
        self.n, self.batch_size = int(n), int(batch_size)

    def epoch_batches(self, epoch: int, seed: int, rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
        _check_rank(rank, world_size)
        order = epoch_order(self.n, epoch, seed, rank, world_size)
        bs = self.batch_size
        return [order[i:i + bs] for i in range(0, len(order), bs)]

    def batches_per_epoch(self, world_size: int = 1) -> int:
        return num_batches(self.n, self.batch_size, world_size)

    def describe(self) -> dict[str, Any]:
        return {"sampling": self.name, "triples": self.n, "batch_size": self.batch_size}


# -------------------------------------------------------------------------------------------------- query keys

def text_key(text: str) -> str:
    """The stable key of a query known only by its text: ``kdq-`` + the first 16 hex digits of its SHA-1."""
    return "kdq-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


class QueryKeys(Sequence[str]):
    """The query key of every triple, stored compactly: ``names`` (one per distinct query) and ``codes`` (per
    triple, an index into ``names``; 4 bytes a triple instead of a Python string). ``texts`` (aligned with
    ``names``) when the query texts were read on the way; ``rows`` for id teacher files (rows of the queries file)."""

    def __init__(self, names: list[str], codes: np.ndarray, texts: list[str] | None = None,
                 rows: np.ndarray | None = None):
        self.names, self.codes, self.texts, self.rows = names, codes, texts, rows

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self.names[c] for c in self.codes[i].tolist()]
        return self.names[int(self.codes[i])]


def _qids_for_texts(texts: list[str], lines: list[int], data: Any, queries: Any) -> list[str]:
    """The qid of each text from a ``qid<TAB>text`` file (the first qid of a text listed twice)."""
    from kd_pyserini.offsets import open_bytes

    path = getattr(queries, "path", queries)
    wanted: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        wanted.setdefault(t.strip(), []).append(i)
    qids: list[str | None] = [None] * len(texts)
    with open_bytes(path) as (f, _):
        for raw in f:
            qid, tab, text = raw.decode("utf-8", errors="replace").rstrip("\r\n").partition("\t")
            for i in wanted.pop(text.strip(), ()) if tab else ():
                qids[i] = qid.strip()
    missing = [i for i, q in enumerate(qids) if q is None]
    if missing:
        i = missing[0]
        at = f"{data.path}:{lines[i]}" if lines[i] else str(data.path)
        raise SamplingError(f"{len(missing)} of {len(texts)} query texts of {data.path} are not in {path} (first: "
                            f"{at}: {texts[i][:60]!r}); pass the queries file these texts come from, or no --queries "
                            "(queries are then keyed by their text)")
    return qids  # type: ignore[return-value]


def query_keys(data: Any, queries: str | os.PathLike | Any = None) -> QueryKeys:
    """One query key per triple of a teacher file (a :class:`QueryKeys`, usable as a ``list[str]``).

    * id teacher files: the qid (``queries`` is ignored: the file has qids);
    * text and JSONL teacher files: the qid of the query text in ``queries`` (a ``qid<TAB>text`` file, e.g. MS MARCO
      ``queries.train.tsv``; a text not found there is a :class:`SamplingError` naming the first) or, without
      ``queries``, :func:`text_key` of the text;
    * any other sequence of :class:`~kd_pyserini.train.batches.Triple`: :func:`text_key` of each query text.
    """
    from kd_pyserini.train.teacher_files import QueryColumn, TeacherData

    if isinstance(data, TeacherData):
        col = data.query_keys()
    else:
        index: dict[str, int] = {}
        codes = np.array([index.setdefault(data[i].query, len(index)) for i in range(len(data))], dtype=np.int32)
        col = QueryColumn("texts", list(index), codes)
    if col.kind == "ids":
        return QueryKeys(col.names, col.codes, rows=col.rows)
    texts, codes = col.names, col.codes
    if queries is not None and isinstance(data, TeacherData):
        names = _qids_for_texts(texts, col.lines or [0] * len(texts), data, queries)
    else:
        names = [text_key(t) for t in texts]
    return _merged(names, codes, texts)


def _merged(names: list[str], codes: np.ndarray, texts: list[str]) -> QueryKeys:
    """Keys with one entry per distinct name (texts that differ only in surrounding spaces share a qid)."""
    first: dict[str, int] = {}
    remap = np.array([first.setdefault(n, len(first)) for n in names], dtype=np.int32)
    if len(first) == len(names):
        return QueryKeys(names, codes, texts=texts)
    kept: list[str] = []
    for i, v in enumerate(remap.tolist()):
        if v == len(kept):  # new codes are given in order of first appearance
            kept.append(texts[i])
    return QueryKeys(list(first), remap[codes], texts=kept)


def query_texts(data: Any, keys: Sequence[str]) -> dict[str, str]:
    """``{key: query text}`` of every query of ``data`` (for :func:`~kd_pyserini.train.clusters.build_query_clusters`):
    from ``keys`` when they hold the texts, from the queries file of an id teacher file, else from each key's first
    triple. Reads one text per query, not per triple."""
    if isinstance(keys, QueryKeys):
        if keys.texts is not None:
            return dict(zip(keys.names, keys.texts))
        if keys.rows is not None:
            return {k: data.queries.text_at(int(r)) for k, r in zip(keys.names, keys.rows.tolist())}
        if hasattr(data, "queries") and hasattr(data.queries, "get"):
            return {k: data.queries.get(k) for k in keys.names}
    out: dict[str, str] = {}
    for i, k in enumerate(keys):
        if k not in out:
            out[k] = data[i].query
    return out


# ------------------------------------------------------------------------------------------- TAS-balanced

def _codes_of(keys: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    if isinstance(keys, QueryKeys):
        return np.asarray(keys.codes, dtype=np.int64), keys.names
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(k, len(index)) for k in keys), dtype=np.int64, count=len(keys))
    return codes, list(index)


class TasBalancedSampler:
    """Topic-aware, margin-balanced batches (see the module docstring for the exact recipe and the epoch).

    Args:
        keys: the query key of every triple (:func:`query_keys`; any ``Sequence[str]``).
        margins: the teacher margin of every triple (``TeacherData.margins()``).
        clusters: lists of query keys (:func:`~kd_pyserini.train.clusters.read_query_clusters` or
            :func:`~kd_pyserini.train.clusters.build_query_clusters`).
        batch_size: queries (= triples) per batch and rank.
        bins: equal-width margin bins per query (``--margin-bins``; the paper: 10).

    Attributes (counts, for logs and the run record): ``triples``, ``queries`` (usable ones), ``dropped_queries`` /
    ``dropped_triples`` (queries with a single pair), ``clusters`` (non-empty ones, the unclustered one included),
    ``unclustered`` (usable queries in no cluster), ``unknown_qids`` (cluster qids not in the teacher data).

    Memory: 4 bytes a triple plus temporary arrays while the bins are built (one sort of an int64 key per triple).
    The epoch plan costs ``O(queries + batches * log clusters)``.

    Raises:
        UsageError: ``batch_size`` or ``bins`` below 1, or keys and margins of different lengths.
        SamplingError: a non-finite margin, no query with two pairs, a qid in two clusters, clusters that name
            none of the teacher data's queries.
    """

    name = "tas-balanced"

    def __init__(self, keys: Sequence[str], margins: Any, clusters: Sequence[Sequence[str]], batch_size: int,
                 bins: int = 10):
        if int(batch_size) < 1 or int(bins) < 1:
            raise UsageError(f"tas-balanced sampling needs batch_size >= 1 and --margin-bins >= 1 (got {batch_size}, "
                             f"{bins})")
        self.batch_size, self.bins = int(batch_size), int(bins)
        margins = np.asarray(margins)
        if margins.ndim != 1 or len(margins) != len(keys):
            raise UsageError(f"{len(keys)} query keys but {margins.shape[0] if margins.ndim else 0} margins; give "
                             "one of each per triple")
        finite = np.isfinite(margins)
        if not finite.all():
            raise SamplingError(f"the teacher margin of triple #{int(np.argmin(finite)) + 1} is not finite")
        codes, names = _codes_of(keys)
        self.triples = len(codes)
        self._index_pairs(codes, margins, names)
        self._assign_clusters(clusters, names)
        log.info("tas-balanced sampling: %d queries (%d triples) in %d clusters, %d margin bins, %d batches of %d "
                 "per epoch", self.queries, self.triples - self.dropped_triples, self.clusters, self.bins,
                 math.ceil(self.queries / self.batch_size), self.batch_size)

    # -- construction ------------------------------------------------------------------------------------------

    def _index_pairs(self, codes: np.ndarray, margins: np.ndarray, names: list[str]) -> None:
        """Group the triples by (query, margin bin): ``_order`` lists triple indices grouped so; group ``g`` is
        ``_order[_gstart[g]:_gstart[g + 1]]``; usable query ``u`` owns groups ``_gptr[u]:_gptr[u + 1]`` (its
        non-empty bins). Usable queries are numbered in order of their first triple (whatever ``keys`` type)."""
        n, nq, bins = len(codes), len(names), self.bins
        if n == 0:
            raise SamplingError("no training triples to sample from")
        counts = np.bincount(codes, minlength=nq)
        present, usable = counts > 0, counts >= 2
        first = np.full(nq, n, dtype=np.int64)
        qmin, qmax = np.full(nq, np.inf), np.full(nq, -np.inf)
        for a in range(0, n, _CHUNK):
            c = codes[a:a + _CHUNK].astype(np.intp)  # ufunc.at takes its fast path with intp indices, same dtypes
            m = margins[a:a + _CHUNK].astype(np.float64)
            np.minimum.at(first, c, np.arange(a, a + len(c)))
            np.minimum.at(qmin, c, m)
            np.maximum.at(qmax, c, m)
        canon = np.argsort(first, kind="stable")  # query codes in order of first appearance
        usable_old = canon[usable[canon]]
        self.queries = len(usable_old)
        self.dropped_queries = int((present & ~usable).sum())
        self.dropped_triples = int(counts[present & ~usable].sum())
        if self.queries == 0:
            raise SamplingError(f"no query of the teacher data has 2 or more pairs ({self.dropped_queries} queries, "
                                "one pair each): tas-balanced sampling draws among a query's pairs; use --sampling "
                                "random")
        if self.dropped_queries:
            log.warning("tas-balanced sampling drops %d queries with a single pair (%d triples), as matchmaker does",
                        self.dropped_queries, self.dropped_triples)
        self._uid = np.full(nq, -1, dtype=np.int64)
        self._uid[usable_old] = np.arange(self.queries)
        self._names = [names[o] for o in usable_old.tolist()]
        # one sort key per kept triple: (query, bin, triple index), packed into an int64 when it fits
        packed = self.queries * bins * n < 2 ** 62
        parts, groups, index = [], [], []
        for a in range(0, n, _CHUNK):
            u = self._uid[codes[a:a + _CHUNK]]
            k = u >= 0
            u, c = u[k], codes[a:a + _CHUNK][k]
            m = margins[a:a + _CHUNK][k].astype(np.float64)
            lo, span = qmin[c], qmax[c] - qmin[c]
            x = np.zeros(len(c))
            pos = span > 0  # all margins of a query equal: one bin
            x[pos] = (m[pos] - lo[pos]) / span[pos] * bins
            group = u * bins + np.minimum(x.astype(np.int64), bins - 1)
            idx = np.flatnonzero(k) + a
            if packed:
                parts.append(group * n + idx)
            else:
                groups.append(group)
                index.append(idx)
        if packed:
            key = np.sort(np.concatenate(parts))
            composite = key // n
            triple = key - composite * n
        else:
            group, idx = np.concatenate(groups), np.concatenate(index)
            o = np.lexsort((idx, group))
            composite, triple = group[o], idx[o]
        self._order = triple.astype(np.int32 if n < 2 ** 31 else np.int64)
        bounds = np.flatnonzero(np.diff(composite)) + 1
        self._gstart = np.concatenate([[0], bounds, [len(composite)]]).astype(np.int64)
        self._gptr = np.searchsorted(composite[self._gstart[:-1]] // bins, np.arange(self.queries + 1))
        self._ngroups = np.diff(self._gptr)
        self._gsize = np.diff(self._gstart)

    def _assign_clusters(self, clusters: Sequence[Sequence[str]], names: list[str]) -> None:
        known = {name: code for code, name in enumerate(names)}
        owner: dict[str, int] = {}
        cluster_of = np.full(self.queries, -1, dtype=np.int64)
        total = matched = unknown = 0
        first_unknown: tuple[str, int] | None = None
        for ci, cluster in enumerate(clusters):
            for q in cluster:
                prev = owner.setdefault(q, ci)
                if prev != ci:
                    raise SamplingError(f"qid {q!r} is in two query clusters ({where(clusters, prev)} and "
                                        f"{where(clusters, ci)}); each query belongs to exactly one cluster")
                total += 1
                code = known.get(q)
                if code is None:
                    unknown += 1
                    first_unknown = first_unknown or (q, ci)
                    continue
                matched += 1
                u = self._uid[code]
                if u >= 0:
                    cluster_of[u] = ci
        if len(owner) != total:
            dup = _first_duplicate(clusters)
            raise SamplingError(f"qid {dup[0]!r} occurs twice in the query cluster at {where(clusters, dup[1])}; "
                                "each query belongs to exactly one cluster")
        self.unknown_qids = unknown
        if matched == 0:
            hint = ("; a text or JSONL teacher file has no qids: pass --queries FILE (qid<TAB>text) so its query "
                    "texts get the qids the clusters use" if self._names[0].startswith("kdq-") else "")
            shown = f" (first: {where(clusters, first_unknown[1])}: {first_unknown[0]!r})" if first_unknown else ""
            raise SamplingError(f"none of the {total} qids of the query clusters{shown} is a query of the teacher "
                                f"data (whose keys look like {self._names[0]!r}): the clusters are for other "
                                f"queries{hint}")
        if unknown:
            log.warning("%d of the %d qids of the query clusters are not queries of the teacher data and are ignored "
                        "(first: %s: %r)", unknown, total, where(clusters, first_unknown[1]), first_unknown[0])
        used = np.unique(cluster_of[cluster_of >= 0])
        remap = np.full(len(clusters), -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        self.unclustered = int((cluster_of < 0).sum())
        cluster_of = np.where(cluster_of >= 0, remap[cluster_of], len(used))
        if self.unclustered:
            first = self._names[int(np.argmax(cluster_of == len(used)))]
            log.warning("%d of the %d usable teacher queries are in no query cluster (first: %r); they form one extra "
                        "'unclustered' cluster whose batches are random", self.unclustered, self.queries, first)
        self.clusters = len(used) + (1 if self.unclustered else 0)
        self._cluster_of = cluster_of
        self._csize = np.bincount(cluster_of, minlength=self.clusters)
        self._cstart = np.cumsum(self._csize) - self._csize

    # -- epochs ------------------------------------------------------------------------------------------------

    def epoch_plan(self, epoch: int, seed: int) -> np.ndarray:
        """The triple index of every usable query in the order this epoch uses them (identical on every rank);
        batch ``b`` is ``plan[b * batch_size:(b + 1) * batch_size]``."""
        rng = np.random.default_rng([seed, epoch, _STREAM])
        n_q, n_c, bs = self.queries, self.clusters, self.batch_size
        lay = np.lexsort((rng.random(n_q), self._cluster_of))  # clusters in turn, queries shuffled within each
        # each batch piece draws its cluster afresh, in proportion to the queries it has left (a fresh draw: the
        # cluster just used is not favoured), and takes the next queries of that cluster's shuffled segment
        left = self._csize.astype(np.int64)
        cstart = self._cstart.astype(np.int64)
        taken = np.zeros(n_c, dtype=np.int64)
        pieces, fill, remaining = [], 0, n_q
        while remaining:
            c = int(np.searchsorted(np.cumsum(left), rng.integers(remaining), side="right"))
            k = int(min(bs - fill % bs, left[c]))  # fill the current batch; a short cluster gives all it has left
            a = int(cstart[c] + taken[c])
            pieces.append(lay[a:a + k])
            taken[c] += k
            left[c] -= k
            fill += k
            remaining -= k
        seq = np.concatenate(pieces)
        # one pair per query: a uniformly chosen non-empty margin bin, then a uniformly chosen pair in it
        g = self._gptr[:-1] + rng.integers(0, self._ngroups)
        pair = self._order[self._gstart[g] + rng.integers(0, self._gsize[g])]
        return pair[seq].astype(np.int64)

    def epoch_batches(self, epoch: int, seed: int, rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
        """This rank's batches of ``epoch``: batches ``rank, rank + world_size, ...`` of :meth:`epoch_plan`,
        :meth:`batches_per_epoch` of them."""
        _check_rank(rank, world_size)
        per = self.batches_per_epoch(world_size)
        plan, bs = self.epoch_plan(epoch, seed), self.batch_size
        return [plan[b * bs:(b + 1) * bs] for b in range(rank, per * world_size, world_size)]

    def batches_per_epoch(self, world_size: int = 1) -> int:
        """Batches per epoch and rank: ``ceil(queries / batch_size) // world_size`` (0 when there are more ranks
        than batches)."""
        return math.ceil(self.queries / self.batch_size) // world_size

    def describe(self) -> dict[str, Any]:
        return {"sampling": self.name, "batch_size": self.batch_size, "margin_bins": self.bins,
                "triples": self.triples, "queries": self.queries, "dropped_queries": self.dropped_queries,
                "dropped_triples": self.dropped_triples, "clusters": self.clusters, "unclustered": self.unclustered,
                "unknown_cluster_qids": self.unknown_qids}


def _first_duplicate(clusters: Sequence[Sequence[str]]) -> tuple[str, int]:
    for ci, cluster in enumerate(clusters):
        seen: set[str] = set()
        for q in cluster:
            if q in seen:
                return q, ci
            seen.add(q)
    raise AssertionError("no duplicate")  # pragma: no cover
