"""Topic clusters of training queries for TAS-balanced sampling: matchmaker's file format, FAISS k-means, a cache.

Sebastian Hofstätter, Sheng-Chieh Lin, Jheng-Hong Yang, Jimmy Lin and Allan Hanbury. "Efficiently Teaching an
Effective Dense Retriever with Balanced Topic Aware Sampling". SIGIR 2021 (arXiv:2104.06967), section 3.1: the
training queries are encoded with an already-trained dense retriever and k-means clustered (about 2,000 clusters for
MS MARCO's 400k training queries); a batch then takes its queries from one cluster
(:class:`kd_pyserini.train.sampling.TasBalancedSampler`).

* **File format** (matchmaker's ``cluster-assignment-ids.tsv``, written by ``matchmaker/distillation/
  query_clusterer.py``): one line per cluster, its qids separated by tabs. Like matchmaker's reader
  (``line.split()``), any whitespace separates qids, so a qid cannot contain whitespace; blank lines (matchmaker
  writes one per empty centroid) are empty clusters and skipped. A qid may occur only once in the file.
* **Building** (:func:`build_query_clusters`) follows matchmaker: its ``FaissDynamicIndexer`` trains an IVF index
  with ``METRIC_INNER_PRODUCT`` on the query vectors, which in FAISS is *spherical* k-means (centroids L2-normalised,
  points assigned by inner product; 10 iterations, FAISS's IVF default), and each query goes to the centroid of
  largest inner product (``quantizer.search(q, 1)``). That is done for every card, dot-product (BERT_Dot, as in the
  paper) or cosine: with unit centroids the largest inner product is the largest cosine, so clusters depend on the
  direction of a query vector, not its length.
* **Cache** (:func:`cached_query_clusters`): the clusters are written next to the training output with a
  ``.json`` sidecar recording what they were built from (k, seed, iterations, the card, a sha256 of the queries and
  of the cluster file); a later call (``--resume``) reuses the file only when all of these match, and rebuilds it
  otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kd_pyserini.atomic import atomic_write
from kd_pyserini.errors import KdError, UsageError
from kd_pyserini.offsets import open_bytes, utf8_error
from kd_pyserini.trec_io import FormatError

__all__ = ["QueryClusters", "QueryClusterError", "read_query_clusters", "write_query_clusters",
           "build_query_clusters", "cached_query_clusters", "cache_settings", "discard_cache", "KMEANS_NITER"]

log = logging.getLogger(__name__)

#: k-means iterations: FAISS's default for training an IVF quantizer, which is what matchmaker's clusterer runs.
KMEANS_NITER = 10
_CACHE_FORMAT = 1


class QueryClusterError(KdError, ValueError):
    """Query clusters that cannot be used (the message names the file and line, and the fix)."""


class QueryClusterFileNotFound(KdError, FileNotFoundError):
    """A query-cluster file that does not exist."""


class QueryClusters(list):
    """A list of clusters (each a list of qids) that remembers where each came from, for error messages.

    Attributes:
        path: the cluster file (``None`` for clusters built in memory).
        line_numbers: the file line of each cluster (empty for clusters built in memory).
    """

    def __init__(self, clusters: Iterable[list[str]] = (), path: str | os.PathLike | None = None,
                 line_numbers: Sequence[int] = ()):
        super().__init__(clusters)
        self.path = None if path is None else str(path)
        self.line_numbers = list(line_numbers)

    def where(self, i: int) -> str:
        """``file:line`` of cluster ``i`` (``cluster #i+1`` when it came from no file)."""
        if self.path is not None and i < len(self.line_numbers):
            return f"{self.path}:{self.line_numbers[i]}"
        return f"cluster #{i + 1}"


def where(clusters: Sequence[Sequence[str]], i: int) -> str:
    """``file:line`` of cluster ``i`` of any list of clusters (a :class:`QueryClusters` knows its file)."""
    return clusters.where(i) if isinstance(clusters, QueryClusters) else f"cluster #{i + 1}"


def read_query_clusters(path: str | os.PathLike) -> QueryClusters:
    """The clusters of a matchmaker cluster file (one line per cluster of whitespace-separated qids; ``.gz`` too).

    Raises:
        QueryClusterFileNotFound: no such file.
        FormatError: a line that is not UTF-8, or a qid already seen (the message names both lines).
        QueryClusterError: a file without any qid.
    """
    path = Path(path)
    if not path.is_file():
        raise QueryClusterFileNotFound(f"query-cluster file {path} does not exist (expected one line per cluster "
                                       "of tab-separated qids, matchmaker's cluster-assignment-ids.tsv)")
    seen: dict[str, int] = {}
    clusters, lines = [], []
    with open_bytes(path) as (f, _):
        for no, raw in enumerate(f, 1):
            try:
                qids = raw.decode("utf-8").split()
            except UnicodeDecodeError:
                raise FormatError(path, no, utf8_error(raw)) from None
            for q in qids:
                first = seen.get(q)
                if first is not None:
                    what = f"is already in the cluster at {path}:{first}" if first != no else "occurs twice here"
                    raise FormatError(path, no, f"qid {q!r} {what}; each query belongs to exactly one cluster "
                                                "(fix or rebuild the cluster file)")
                seen[q] = no
            if qids:
                clusters.append(qids)
                lines.append(no)
    if not clusters:
        raise QueryClusterError(f"{path} holds no qids; expected one line per cluster of tab-separated qids "
                                "(matchmaker's cluster-assignment-ids.tsv)")
    return QueryClusters(clusters, path, lines)


def write_query_clusters(path: str | os.PathLike, clusters: Iterable[Sequence[str]]) -> Path:
    """Write ``clusters`` in matchmaker's format (one line per non-empty cluster, qids joined by tabs), atomically.

    Raises:
        UsageError: a qid that is empty or holds whitespace (it could not be read back), or a qid in two clusters.
    """
    seen: dict[str, int] = {}
    rows = []
    for i, cluster in enumerate(clusters):
        for q in cluster:
            if not isinstance(q, str) or not q or len(q.split()) != 1 or q.split()[0] != q:
                raise UsageError(f"cluster #{i + 1}: qid {q!r} is empty or holds whitespace; the cluster file "
                                 "format separates qids by whitespace")
            if seen.setdefault(q, i) != i:
                raise UsageError(f"qid {q!r} is in cluster #{seen[q] + 1} and cluster #{i + 1}; each query belongs "
                                 "to exactly one cluster")
        if cluster:
            rows.append("\t".join(cluster))
    path = Path(path)
    with atomic_write(path) as f:
        f.write("".join(r + "\n" for r in rows))
    return path


def _vectors(texts: list[str], card: Any, encoder: Any, device: str | None, precision: str,
             batch_size: int) -> np.ndarray:
    if encoder is None:
        from kd_pyserini.encoding import TextEncoder  # imports torch: only when clusters are built

        encoder = TextEncoder(card, device=device, precision=precision, batch_size=batch_size)
    vecs = encoder.embed(texts, encoder.card.query_max_length)
    return np.ascontiguousarray(vecs, dtype=np.float32)


def build_query_clusters(queries: Mapping[str, str], k: int, card: Any, seed: int = 0, *,
                         niter: int = KMEANS_NITER, device: str | None = None, precision: str = "fp32",
                         batch_size: int = 128, encoder: Any = None) -> QueryClusters:
    """Cluster ``queries`` (``{qid: text}``) into at most ``k`` topic clusters, as matchmaker's clusterer does.

    The texts are encoded with the card's query side (:class:`~kd_pyserini.encoding.TextEncoder`; or pass a ready
    ``encoder``), spherical k-means (``faiss.Kmeans(..., spherical=True)``: inner-product assignment, unit centroids)
    runs ``niter`` iterations from ``seed``, and each query goes to the centroid with the largest inner product.
    Empty centroids are dropped, so fewer than ``k`` clusters can come back. The result is a pure function of the
    inputs (FAISS k-means is deterministic for a seed; encoding on one device is too).

    Returns:
        the non-empty clusters in centroid order, each listing its qids in the order of ``queries``.

    Raises:
        UsageError: ``k`` < 1 or more clusters than queries, or no queries.
    """
    import faiss

    keys = list(queries)
    if not keys:
        raise UsageError("no queries to cluster")
    if not 1 <= k <= len(keys):
        raise UsageError(f"cannot make {k} query clusters from {len(keys)} queries; use --clusters between 1 and "
                         f"{len(keys)} (the paper: ~2,000 for 400k queries)")
    vecs = _vectors([queries[q] for q in keys], card, encoder, device, precision, batch_size)
    d = vecs.shape[1]
    km = faiss.Kmeans(d, int(k), niter=int(niter), seed=int(seed) & 0x7FFFFFFF, spherical=True, verbose=False)
    km.train(vecs)
    index = faiss.IndexFlatIP(d)
    index.add(np.ascontiguousarray(km.centroids, dtype=np.float32))
    _, nearest = index.search(vecs, 1)
    members: list[list[str]] = [[] for _ in range(int(k))]
    for key, c in zip(keys, nearest[:, 0].tolist()):
        members[c].append(key)
    clusters = QueryClusters(c for c in members if c)
    sizes = np.array([len(c) for c in clusters])
    log.info("clustered %d queries into %d topic clusters (%d empty centroids dropped); sizes min %d median %d max %d",
             len(keys), len(clusters), int(k) - len(clusters), sizes.min(), int(np.median(sizes)), sizes.max())
    return clusters


def _card_identity(card: Any) -> dict[str, Any]:
    from kd_pyserini.cards import get_card

    c = get_card(card)
    return {"name": c.name, "model_id": str(c.model_id), "pooling": c.pooling, "similarity": c.similarity,
            "query_max_length": c.query_max_length}


def _queries_sha256(queries: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for key in sorted(queries):
        h.update(key.encode("utf-8") + b"\t" + queries[key].encode("utf-8") + b"\n")
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_settings(queries: Mapping[str, str], k: int, card: Any, seed: int, niter: int = KMEANS_NITER,
                   precision: str = "fp32") -> dict[str, Any]:
    """What a cached cluster file must have been built from to be reused (recorded in its ``.json`` sidecar)."""
    return {"format": _CACHE_FORMAT, "k": int(k), "seed": int(seed), "niter": int(niter), "precision": precision,
            "card": _card_identity(card), "queries": len(queries), "queries_sha256": _queries_sha256(queries)}


def _cache_mismatch(path: Path, meta_path: Path, settings: dict[str, Any]) -> str | None:
    """Why the cache at ``path`` cannot be reused (``None`` when it can)."""
    if not path.is_file() or not meta_path.is_file():
        return "no cached clusters yet"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"its record {meta_path} is unreadable ({e})"
    if not isinstance(meta, dict):
        return f"its record {meta_path} is not a JSON object"
    changed = [k for k in settings if meta.get("settings", {}).get(k) != settings[k]]
    if changed:
        return "built with other " + ", ".join(changed)
    if meta.get("file_sha256") != _file_sha256(path):
        return f"{path} was changed after it was built"
    return None


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def discard_cache(cache_path: str | os.PathLike) -> None:
    """Delete a cached cluster file and its ``.json`` record (``--overwrite``); absent files are fine."""
    path = Path(cache_path)
    for p in (_record_path(path), path):  # the record first: a cluster file without one is never reused
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def cached_query_clusters(cache_path: str | os.PathLike, queries: Mapping[str, str], k: int, card: Any,
                          seed: int, **build_options: Any) -> QueryClusters:
    """The clusters of ``queries``, read from ``cache_path`` when it was built from the same settings, else built
    with :func:`build_query_clusters` and written there (matchmaker's format) with a ``<cache_path>.json`` record.

    Reused only when k, seed, k-means iterations, precision, the card (name, weights, pooling, similarity, query
    length) and a sha256 of the queries (keys and texts) all match, and the cluster file's sha256 is the recorded
    one (an edited or half-replaced cache is rebuilt, never trusted). The clusters returned are always those read
    back from the file, so a fresh and a resumed run see identical input. The record is written after the cluster
    file, both atomically. In DDP, build on one rank and let the others call this after a barrier.
    """
    path = Path(cache_path)
    meta_path = _record_path(path)
    settings = cache_settings(queries, k, card, seed, build_options.get("niter", KMEANS_NITER),
                              build_options.get("precision", "fp32"))
    why = _cache_mismatch(path, meta_path, settings)
    if why is None:
        log.info("reusing the query clusters in %s", path)
        return read_query_clusters(path)
    log.info("building query clusters into %s (%s)", path, why)
    clusters = build_query_clusters(queries, k, card, seed, **build_options)
    write_query_clusters(path, clusters)
    with atomic_write(meta_path) as f:
        json.dump({"settings": settings, "file_sha256": _file_sha256(path), "clusters": len(clusters)}, f,
                  indent=1, sort_keys=True)
        f.write("\n")
    return read_query_clusters(path)
