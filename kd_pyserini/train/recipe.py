"""What a training recipe adds to the Margin-MSE loop: the data sampler and the dynamic in-batch teacher.

``kd-train margin-mse`` samples triples at random (:class:`~kd_pyserini.train.sampling.RandomSampler`, a seeded
shuffle); ``--sampling tas-balanced`` draws topic-aware, margin-balanced batches
(:class:`~kd_pyserini.train.sampling.TasBalancedSampler`, Hofstätter et al., SIGIR 2021, arXiv:2104.06967) from query
clusters read from ``--query-clusters`` or built by k-means over ``--cluster-encoder``'s query vectors and cached in
the output folder as ``query_clusters.tsv`` (reused by ``--resume``). ``--in-batch-teacher`` loads the teacher that
scores every in-batch (query, passage) pair on the fly (:mod:`kd_pyserini.train.in_batch_teacher`).

Both are chosen here from :class:`~kd_pyserini.train.config.TrainConfig`, so the trainer has one code path.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from kd_pyserini.train.checkpoints import CACHE_FILES
from kd_pyserini.train.config import TrainConfig

__all__ = ["CLUSTERS_FILE", "make_sampler", "clusters_digest", "make_in_batch_teacher", "card_argument"]

log = logging.getLogger(__name__)

#: where built query clusters are cached inside ``--output`` (matchmaker's format: a line of tab-separated qids).
CLUSTERS_FILE = CACHE_FILES[0]


def card_argument(name: str | None) -> str | None:
    """A card given as a folder, as an absolute path (so a run resumed from another working directory, or with the
    path spelt differently, records the same teacher and cluster encoder); card names and hub ids as given."""
    if name and Path(name).exists():
        return str(Path(name).resolve())
    return name


def clusters_digest(clusters: list[list[str]] | None) -> str | None:
    """SHA-256 of the clusters (as written), recorded in checkpoints so ``--resume`` detects other clusters."""
    if clusters is None:
        return None
    h = hashlib.sha256()
    for c in clusters:
        h.update(("\t".join(c) + "\n").encode("utf-8"))
    return h.hexdigest()


def make_sampler(cfg: TrainConfig, data: Any, output: Path, resuming: bool, main: bool, barrier,
                 device: str | None = None) -> tuple[Any, list[list[str]] | None]:
    """The batch sampler of ``cfg.sampling`` and the clusters it uses (``None`` for random sampling).

    With ``--cluster-encoder``, rank 0 builds the clusters (or reuses ``OUTPUT/query_clusters.tsv`` when its recorded
    settings match) and writes them; the other ranks wait at ``barrier`` and read them. ``--overwrite`` rebuilds; a
    resumed run reads the cache as it is (its checkpoint's settings then check it) and never replaces it.
    """
    from kd_pyserini.train import sampling

    if cfg.sampling == "random":
        return sampling.RandomSampler(len(data), cfg.batch_size), None
    from kd_pyserini.train import clusters as cl

    keys = sampling.query_keys(data, cfg.queries)
    if cfg.query_clusters:
        clusters = cl.read_query_clusters(cfg.query_clusters)
    else:
        cache = output / CLUSTERS_FILE
        if main:
            if resuming and cache.is_file():
                # never rebuilt under a resumed run: the checkpoint's settings (clusters digest, k, encoder, seed)
                # decide whether these are the clusters it was trained with
                clusters = cl.read_query_clusters(cache)
            else:
                if cfg.overwrite and not resuming:
                    cl.discard_cache(cache)
                clusters = cl.cached_query_clusters(cache, sampling.query_texts(data, keys), cfg.clusters,
                                                    card_argument(cfg.cluster_encoder), cfg.seed, device=device)
        barrier()
        if not main:
            clusters = cl.read_query_clusters(cache)
    sampler = sampling.TasBalancedSampler(keys, data.margins(), clusters, cfg.batch_size, bins=cfg.margin_bins)
    return sampler, clusters


def make_in_batch_teacher(cfg: TrainConfig, device: Any) -> Any:
    """The dynamic in-batch teacher of ``--in-batch-teacher`` (``None`` without one)."""
    if not cfg.in_batch_teacher:
        return None
    from kd_pyserini.train.in_batch_teacher import load_in_batch_teacher

    # the teacher's own device (the last GPU when several are visible outside torchrun, as matchmaker does) and
    # precision (bf16/fp16 on GPUs, fp32 on CPUs): it only scores, never trains
    return load_in_batch_teacher(card_argument(cfg.in_batch_teacher), device=None, student_device=device,
                                 precision="auto", scale=cfg.in_batch_teacher_scale)
