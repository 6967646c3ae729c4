"""Compressed dense search on *real* embeddings, tiled: IVF-PQ in memory + exact re-scoring from fp16 vectors on
disk (``kd-index dense --index-type ivfpq --keep-vectors fp16``, ``kd-search --rescore K``) against flat search.

The ``dense`` benchmark's synthetic collection (2,000 Gaussian clusters, isotropic noise in all 768 dimensions) is a
hard case for product quantisation: real embeddings put most of their variance in far fewer directions. Here the
collection is made from real ones:

* **base**: the DL19/DL20 pool passages (28,606 real MS MARCO passages) encoded by all-MiniLM-L6-v2 (real weights;
  384 dimensions, unit length), cached in the benchmark's cache folder;
* **tiling to n vectors** (default 1,000,000): vector ``i`` is base vector ``i mod B`` plus ``0.5 x`` a draw from
  N(0, C), C being the base vectors' own covariance (so the copies spread along the data's own principal
  directions, not into directions real embeddings do not use), renormalised to unit length; seeded by block;
* **queries**: the 243 DL19 + DL20 topics encoded by the same model.

Ground truth: exact (flat) top 1000. Reported: recall@1000 of IVF-PQ alone and re-scored (depth 2000 / 8000) at
nprobe 32 / 128 / 512, for two code sizes (d/8 and d/4 sub-quantisers), queries/s, and the memory kept (codes + ids +
coarse centroids) as a fraction of flat's.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .common import Result, Settings, Skip, dl_queries, need_data
from .dense import _rescore_sweep

BLOCK = 50_000
NOISE = 0.5


def _base_vectors(s: Settings) -> tuple[np.ndarray, np.ndarray]:
    """(passage vectors, query vectors) of all-MiniLM-L6-v2, cached."""
    import gzip

    path = need_data(s, "msmarco-dl", "passages.dl19-dl20-pool.tsv.gz")
    limit = 2_000 if s.quick else None
    cache = s.cache_dir / f"minilm-pool-vectors{'-quick' if s.quick else ''}.npz"
    if cache.is_file():
        z = np.load(cache)
        return z["passages"], z["queries"]
    try:
        from kd_pyserini.encoding import TextEncoder
    except ImportError as e:
        raise Skip(f"kd_pyserini.encoding is not importable ({e})") from e
    with gzip.open(path, "rt", encoding="utf-8") as f:
        texts = [line.rstrip("\n").split("\t", 1)[1] for line in f if "\t" in line][:limit]
    enc = TextEncoder("all-minilm-l6-v2", device="cpu", precision="fp32", batch_size=64)
    passages = np.asarray(enc.embed(texts, 256), dtype=np.float32)
    queries = np.asarray(enc.embed(dl_queries(s, 243), 64), dtype=np.float32)
    s.cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, passages=passages, queries=queries)
    return passages, queries


class Tiled:
    """``n`` vectors tiled from real ``base`` vectors with noise in their own principal directions (seeded blocks)."""

    def __init__(self, base: np.ndarray, n: int, seed: int):
        self.base, self.n, self.seed, self.dim = base, n, seed, base.shape[1]
        cov = np.cov(base, rowvar=False).astype(np.float64)
        w, v = np.linalg.eigh(cov)
        self.root = (v * np.sqrt(np.clip(w, 0, None))).astype(np.float32)  # C = root @ root.T

    def block(self, b: int) -> np.ndarray:
        start = b * BLOCK
        m = min(BLOCK, self.n - start)
        rng = np.random.default_rng([self.seed, 7, b])
        x = self.base[np.arange(start, start + m) % len(self.base)].copy()
        if start + m > len(self.base):  # the first B vectors are the real ones; the rest are noisy copies
            noisy = np.arange(start, start + m) >= len(self.base)
            x[noisy] += NOISE * (rng.standard_normal((int(noisy.sum()), self.dim), dtype=np.float32) @ self.root.T)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def blocks(self):
        return [SimpleNamespace(count=min(BLOCK, self.n - st), load=lambda b=b: self.block(b))
                for b, st in enumerate(range(0, self.n, BLOCK))]


def bench_rescore(s: Settings) -> Result:
    import faiss

    from kd_pyserini.index.faiss_factory import IndexParams, fill_index
    from kd_pyserini.index.rescore import write_rescore_vectors

    r = Result("rescore")
    threads = s.threads or faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    base, Q = _base_vectors(s)
    encode_s = time.perf_counter() - t0
    n = 50_000 if s.quick else s.dense_size
    data = Tiled(base, n, s.seed)
    blocks = data.blocks()
    flat, _ = fill_index(IndexParams("flat"), data.dim, blocks, progress=False)
    k = min(1000, n)
    exact = flat.search(Q, k)[1]
    flat_bpv = 4.0 * data.dim
    del flat
    gc.collect()
    tmp = Path(tempfile.mkdtemp(prefix="kd-rescore-real-"))
    summary: dict[str, Any] = {"n": n, "base_passages": len(base), "queries": len(Q), "dim": data.dim,
                               "noise": NOISE, "encode_s": round(encode_s, 1)}
    try:
        vec = write_rescore_vectors(tmp, blocks, data.dim, "fp16")
        nlist = 1024 if n >= 200_000 else max(16, int(n ** 0.5))
        for m in (data.dim // 8, data.dim // 4):
            t0 = time.perf_counter()
            index, desc = fill_index(IndexParams("ivfpq", nlist=nlist, pq_m=m, train_size=min(n, 65_536)),
                                     data.dim, blocks, progress=False)
            summary[f"m {m}"] = {"build_s": round(time.perf_counter() - t0, 1), **desc,
                                 **_rescore_sweep(r, index, tmp, vec, Q, exact, flat_bpv, f"m {m} (real, tiled)")}
            del index
            gc.collect()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    r.extra["summary"] = summary
    r.notes.append(f"{n:,} x {data.dim} vectors tiled from {len(base):,} real DL-pool passages encoded by "
                   f"all-MiniLM-L6-v2 (copies: + {NOISE} x N(0, C), C = the real vectors' covariance, renormalised); "
                   f"{len(Q)} real DL19+DL20 queries; exact top {k} by flat search; IVF-PQ nlist {nlist}, 8-bit "
                   f"codes, trained on {min(n, 65_536):,}; {threads} FAISS threads.")
    return r
