"""Dense search on a synthetic collection: flat, fp16 scalar quantisation, IVF-PQ and HNSW FAISS indexes built the
way ``kd-index dense`` builds them (:func:`kd_pyserini.index.make_faiss_index`), searched the way ``kd-search``
searches them (:func:`kd_pyserini.search.faiss_search`), against Pyserini's ``FaissSearcher`` on the flat index.

The collection: ``n`` x 768 float32 vectors from a fixed seed, clustered (2,000 Gaussian clusters, so approximate
indexes face the kind of structure real embeddings have, not uniform noise); the queries come from the same
distribution but are not in the collection. Recall@100 is against the exact (flat) top 100. Vectors are generated
block by block from ``(seed, block)`` so every index sees the same collection without keeping a copy in memory.
Figures for MS MARCO's 8,841,823 passages are *extrapolated* (linear in ``n`` for memory, flat and fp16 search).
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import PeakRSS, Result, Settings, Skip, mib, pctl, recall_at, topk_overlap

DIM = 768
MSMARCO = 8_841_823
BLOCK = 50_000
CLUSTERS = 2_000


class Synthetic:
    """The synthetic collection: ``block(i)`` is always the same array for the same seed."""

    def __init__(self, n: int, seed: int = 0, dim: int = DIM):
        self.n, self.seed, self.dim = n, seed, dim
        rng = np.random.default_rng([seed, 0])
        self.centers = rng.standard_normal((CLUSTERS, dim), dtype=np.float32)

    def _draw(self, key: list[int], m: int) -> np.ndarray:
        rng = np.random.default_rng(key)
        x = rng.standard_normal((m, self.dim), dtype=np.float32)
        x *= 0.8
        x += self.centers[rng.integers(0, CLUSTERS, m)]
        return x

    def blocks(self, n: int | None = None):
        n = self.n if n is None else n
        for b, start in enumerate(range(0, n, BLOCK)):
            yield self._draw([self.seed, 1, b], min(BLOCK, n - start))

    def queries(self, m: int) -> np.ndarray:
        return self._draw([self.seed, 2], m)


def _faiss_search_fn():
    try:
        from kd_pyserini.search import faiss_search

        return faiss_search, "kd_pyserini.search"
    except ImportError:
        return None, "raw faiss (kd_pyserini.search not importable)"


def _build(kind: str, data: Synthetic, n: int, **params: Any):
    """Build an index of the first ``n`` vectors; returns ``(index, describe, seconds, rss_delta_bytes)``."""
    from kd_pyserini.index.faiss_factory import IndexParams, make_faiss_index

    p = IndexParams(index_type=kind, **params)
    with PeakRSS() as m:
        t0 = time.perf_counter()
        index, desc = make_faiss_index(p, data.dim, n)
        if not index.is_trained:
            take = min(n, p.train_size)
            parts, got = [], 0
            for blk in data.blocks(n):  # the first train_size vectors (the blocks are already shuffled clusters)
                parts.append(blk[: take - got])
                got += len(parts[-1])
                if got >= take:
                    break
            index.train(np.ascontiguousarray(np.concatenate(parts)))
            del parts
        for blk in data.blocks(n):
            index.add(blk)
        secs = time.perf_counter() - t0
    gc.collect()
    return index, desc, secs, m.hwm - m.start


class _NoEncoder:
    """Pyserini's FaissSearcher wants a query encoder; the benchmark passes vectors, so it is never called."""

    def encode(self, *_: Any, **__: Any):  # pragma: no cover
        raise RuntimeError("not used")


def _pyserini_searcher(index, docids: list[str]):
    """A Pyserini ``FaissSearcher`` around an index already in memory (what ``FaissSearcher(dir, enc)`` holds after
    ``faiss.read_index``), so both sides search the very same object."""
    from pyserini.search.faiss import FaissSearcher

    s = FaissSearcher.__new__(FaissSearcher)
    s.faiss_device = "cpu"
    s._faiss_gpu_resources = None
    s.query_encoder = _NoEncoder()
    s.index, s.docids = index, docids
    s.dimension, s.num_docs = index.d, index.ntotal
    s.normalize_distances = False
    return s


def _ids(run: dict[str, dict[str, float]], qids: list[str], docpos: dict[str, int], k: int) -> np.ndarray:
    return np.array([[docpos[d] for d in list(run[q])[:k]] for q in qids])


def _write_vectors(data: Synthetic, n: int) -> tuple[Path, dict[str, Any]]:
    """The collection's vectors as ``kd-index dense --keep-vectors fp16`` writes them, in a temporary folder."""
    import tempfile
    from types import SimpleNamespace

    from kd_pyserini.index.rescore import write_rescore_vectors

    tmp = Path(tempfile.mkdtemp(prefix="kd-rescore-"))
    blocks = [SimpleNamespace(count=min(BLOCK, n - start), load=lambda b=b, m=min(BLOCK, n - start):
                              data._draw([data.seed, 1, b], m)) for b, start in enumerate(range(0, n, BLOCK))]
    return tmp, write_rescore_vectors(tmp, blocks, data.dim, "fp16")


def _rescore_sweep(r: Result, index: Any, vec_dir: Path, vec: dict[str, Any], Q: np.ndarray, exact1000: np.ndarray,
                   flat_bytes_per_vector: float, label: str) -> dict[str, Any]:
    """IVF-PQ's top K re-scored exactly from fp16 vectors on disk (``kd-index dense --keep-vectors fp16``,
    ``kd-search --rescore K``: :class:`kd_pyserini.index.rescore.RescoringIndex`): recall@1000 against flat search,
    queries/s, and the memory it keeps (the PQ codes and ids, the coarse centroids; the vectors stay on disk)."""
    from kd_pyserini.index.rescore import RescoringIndex

    n = index.ntotal
    k = min(1000, n)
    pq_bytes = index.code_size * n + 8 * n + index.d * 4 * index.nlist
    out: dict[str, Any] = {"pq_m": int(index.pq.M), "nlist": int(index.nlist), "vectors_file_bytes": vec["file_bytes"],
                           "k": k, "memory_bytes": pq_bytes,
                           "memory_fraction_of_flat": pq_bytes / (flat_bytes_per_vector * n), "settings": {}}
    for nprobe in (32, 128, 512):
        index.nprobe = min(nprobe, index.nlist)
        for depth in (None, 2000, 8000):
            searcher = index if depth is None else RescoringIndex(index, vec_dir, depth)
            t0 = time.perf_counter()
            got = searcher.search(Q, k)[1]
            out["settings"][f"nprobe {nprobe}, " + ("no rescore" if depth is None else f"rescore {depth}")] = {
                "qps": round(len(Q) / (time.perf_counter() - t0), 1),
                "recall@1000": round(recall_at(got, exact1000, k), 4)}
    best_key, best = max(out["settings"].items(), key=lambda kv: kv[1]["recall@1000"])
    r.add(f"ivfpq {label} + fp16 rescore: best recall@1000 vs flat", best["recall@1000"], None, "")
    r.add(f"ivfpq {label}: memory as a fraction of flat", out["memory_fraction_of_flat"], None, "",
          higher_is_better=False)
    r.notes.append(f"IVF-PQ {label} + exact re-scoring (fp16 vectors on disk, {vec['file_bytes'] / 2**20:,.0f} MiB, "
                   f"memory-mapped): in memory {pq_bytes / 2**20:,.0f} MiB = {out['memory_fraction_of_flat']:.3f} "
                   "of flat; recall@1000 vs flat: " +
                   "; ".join(f"{key}: {v['recall@1000']:.4f} at {v['qps']} q/s" for key, v in out["settings"].items())
                   + f" (best: {best_key})")
    return out


def bench_dense(s: Settings) -> Result:
    import faiss

    try:
        import kd_pyserini.index  # noqa: F401
    except ImportError as e:
        raise Skip(f"kd_pyserini.index is not importable ({e})") from e
    r = Result("dense")
    threads = s.threads or faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    n = s.dense_size
    nh = min(n, s.hnsw_size or 250_000)
    data = Synthetic(n, s.seed)
    Q = data.queries(s.dense_queries)
    qids = [f"q{i}" for i in range(len(Q))]
    kd_search, search_impl = _faiss_search_fn()
    k = 100
    docids = [str(i) for i in range(n)]
    docpos = {d: i for i, d in enumerate(docids)}

    def kd_batch(index, q=Q, ids=qids):
        if kd_search is None:
            return index.search(q, k)[1]
        return _ids(kd_search(index, docids, ids, q, k, unique_ids=True), ids, docpos, k)  # as DenseSearcher: ids unique

    # ---- flat: exact ground truth, kd vs Pyserini --------------------------------------------------------------
    flat, desc, build_s, rss = _build("flat", data, n)
    exact = flat.search(Q, k)[1]
    exact1000 = flat.search(Q, min(1000, n))[1]  # for IVF-PQ + exact re-scoring (recall@1000)
    pys = _pyserini_searcher(flat, docids)

    def py_batch(th: int):
        res = pys.batch_search(Q, qids, k=k, threads=th)
        faiss.omp_set_num_threads(threads)
        return np.array([[docpos[h.docid] for h in res[q]] for q in qids])

    times = {"kd": [], "py_same": [], "py_default": []}
    outs: dict[str, Any] = {}
    for rnd in range(2 if not s.quick else 1):
        for name, fn in ((("kd", lambda: kd_batch(flat)), ("py_same", lambda: py_batch(threads)),
                          ("py_default", lambda: py_batch(1)))[:: 1 if rnd % 2 == 0 else -1]):
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    qps = {name: len(Q) / min(t) for name, t in times.items()}
    r.add(f"flat batch QPS ({threads} thr) vs Pyserini same threads", qps["kd"], qps["py_same"], "queries/s")
    r.add("flat batch QPS vs Pyserini default (threads=1)", qps["kd"], qps["py_default"], "queries/s")
    # single queries
    lat = {"kd": [], "py": []}
    nsingle = min(20, len(Q))
    for i in range(nsingle):
        for name in (("kd", "py") if i % 2 == 0 else ("py", "kd")):
            t0 = time.perf_counter()
            if name == "kd":
                kd_batch(flat, Q[i:i + 1], qids[i:i + 1])
            else:
                pys.search(Q[i:i + 1], k=k, threads=threads)
            lat[name].append(time.perf_counter() - t0)
    faiss.omp_set_num_threads(threads)
    r.add("flat single-query p50", pctl(lat["kd"], 50) * 1e3, pctl(lat["py"], 50) * 1e3, "ms",
          higher_is_better=False)
    r.agreement["flat kd vs Pyserini"] = topk_overlap(outs["kd"], outs["py_same"], 10)
    r.agreement["flat kd recall@100 vs exact"] = recall_at(outs["kd"], exact, 100)
    summary: dict[str, Any] = {"flat": {"n": n, "build_s": build_s, "rss_mib": mib(rss), "qps": qps["kd"],
                                        "p50_ms": pctl(lat["kd"], 50) * 1e3, "recall@100": 1.0,
                                        "bytes_per_vector": desc["bytes_per_vector"]}}
    r.add("flat index memory (RSS growth while building)", mib(rss), None, "MiB", higher_is_better=False)
    del pys, flat
    gc.collect()

    # ---- fp16 scalar quantisation and IVF-PQ on the full collection -------------------------------------------
    ivf_params = dict(nlist=1024 if n >= 200_000 else max(16, int(n ** 0.5)), train_size=min(n, 65_536),
                      nprobe=32)
    if n < 200_000:  # smoke runs: a coarser PQ trains in seconds
        ivf_params.update(pq_m=32, train_size=min(n, 10_000))
    for kind, params in (("fp16", {}), ("ivfpq", ivf_params)):
        index, desc, build_s, rss = _build(kind, data, n, **params)
        t0 = time.perf_counter()
        got = kd_batch(index)
        secs = time.perf_counter() - t0
        rec = recall_at(got, exact, k)
        summary[kind] = {"n": n, "build_s": build_s, "rss_mib": mib(rss), "qps": len(Q) / secs,
                         "recall@100": rec, "recall@10": recall_at(got, exact, 10), **desc}
        r.add(f"{kind} batch QPS", len(Q) / secs, None, "queries/s")
        r.add(f"{kind} recall@100 vs exact", rec, None, "")
        r.add(f"{kind} index memory (RSS growth while building)", mib(rss), None, "MiB", higher_is_better=False)
        if kind == "ivfpq":
            sweep = {}
            for nprobe in (8, 32, 128):
                index.nprobe = nprobe
                t0 = time.perf_counter()
                got = kd_batch(index)
                sweep[f"nprobe {nprobe}"] = {"qps": round(len(Q) / (time.perf_counter() - t0), 1),
                                             "recall@100": round(recall_at(got, exact, k), 4)}
            summary[kind]["nprobe_sweep"] = sweep
            import shutil

            vec_dir, vec = _write_vectors(data, n)
            try:
                m_default = summary[kind]["pq_m"]
                summary[kind]["rescore"] = {f"m {m_default}": _rescore_sweep(
                    r, index, vec_dir, vec, Q, exact1000, summary["flat"]["bytes_per_vector"], f"m {m_default}")}
                del index
                gc.collect()
                # twice the codes (d/4 sub-quantisers): still under 1/8 of flat's memory
                m_fine = 2 * m_default
                index, desc2, _, _ = _build(kind, data, n, **{**ivf_params, "pq_m": m_fine})
                summary[kind]["rescore"][f"m {m_fine}"] = _rescore_sweep(
                    r, index, vec_dir, vec, Q, exact1000, summary["flat"]["bytes_per_vector"], f"m {m_fine}")
            finally:
                shutil.rmtree(vec_dir, ignore_errors=True)
        del index
        gc.collect()

    # ---- HNSW on the first nh vectors (exact top 100 of that subset for recall) -------------------------------
    sub_flat, _, _, _ = _build("flat", data, nh)
    exact_sub = sub_flat.search(Q, k)[1]
    del sub_flat
    gc.collect()
    hnsw, desc, build_s, rss = _build("hnsw", data, nh, hnsw_m=32, ef_construction=64, ef_search=128)
    sweep = {}
    sub_ids = docids[:nh]
    try:
        pys_h = _pyserini_searcher(hnsw, sub_ids)  # Pyserini's FaissSearcher on the very same HNSW index
    except ImportError:
        pys_h = None
    for ef in (32, 64, 128, 256, 512):
        hnsw.hnsw.efSearch = ef
        t0 = time.perf_counter()
        got = kd_batch(hnsw)
        secs = time.perf_counter() - t0
        row = {"qps": round(len(Q) / secs, 1), "recall@100": round(recall_at(got, exact_sub, k), 4)}
        if pys_h is not None:
            t0 = time.perf_counter()  # results turned into row ids inside the timing, as kd_batch's are
            res = pys_h.batch_search(Q, qids, k=k, threads=threads)
            py_got = np.array([[docpos[h.docid] for h in res[q]] for q in qids])
            py_secs = time.perf_counter() - t0
            faiss.omp_set_num_threads(threads)
            row.update(pyserini_qps=round(len(Q) / py_secs, 1),
                       pyserini_recall_at_100=round(recall_at(py_got, exact_sub, k), 4))
        sweep[f"efSearch {ef}"] = row
    summary["hnsw"] = {"n": nh, "build_s": build_s, "build_vectors_per_s": nh / build_s, "rss_mib": mib(rss),
                       "ef_sweep": sweep, **desc}
    best = sweep["efSearch 128"]
    r.add(f"hnsw (n={nh:,}) batch QPS, efSearch 128 vs Pyserini same index", best["qps"], best.get("pyserini_qps"),
          "queries/s")
    r.add(f"hnsw (n={nh:,}) recall@100 vs exact, efSearch 128", best["recall@100"], best.get("pyserini_recall_at_100"),
          "")
    r.notes.append("HNSW recall@100 / QPS curve (kd_pyserini | Pyserini's FaissSearcher on the same index, same "
                   "threads): " + "; ".join(f"{key}: {v['recall@100']:.4f} at {v['qps']} q/s | "
                                            f"{v.get('pyserini_recall_at_100', '-')} at {v.get('pyserini_qps', '-')} q/s"
                                            for key, v in sweep.items()))
    r.add(f"hnsw (n={nh:,}) index memory (RSS growth while building)", mib(rss), None, "MiB",
          higher_is_better=False)
    del hnsw
    gc.collect()

    # ---- extrapolation to MS MARCO ------------------------------------------------------------------------------
    f = MSMARCO / n
    ext = {
        "flat": {"memory_gib": summary["flat"]["bytes_per_vector"] * MSMARCO / 2**30,
                 "batch_qps": summary["flat"]["qps"] / f, "single_query_ms": summary["flat"]["p50_ms"] * f},
        "fp16": {"memory_gib": summary["fp16"]["bytes_per_vector"] * MSMARCO / 2**30, "batch_qps": summary["fp16"]["qps"] / f},
        "ivfpq": {"memory_gib": summary["ivfpq"]["bytes_per_vector"] * MSMARCO / 2**30,
                  "note": "nlist would grow to ~4*sqrt(n) = 11,900; at fixed nprobe the cells are ~3x fuller, so "
                          "QPS ~ 1/3 of the measured value (rough)"},
        "hnsw": {"memory_gib": summary["hnsw"]["bytes_per_vector"] * MSMARCO / 2**30,
                 "build_hours_2_cores": MSMARCO / summary["hnsw"]["build_vectors_per_s"] / 3600,
                 "note": "build time extrapolated linearly (a lower bound: insertion cost grows ~log n); search "
                         "cost grows ~log n"},
    }
    r.extra["summary"] = summary
    r.extra["extrapolated_msmarco_8.8M"] = ext
    r.notes.append(f"synthetic {n:,} x {DIM} float32 (seed {s.seed}, {CLUSTERS} clusters), {len(Q)} queries, "
                   f"k={k}, {threads} FAISS threads; ours = {search_impl}; Pyserini = FaissSearcher on the same "
                   "in-memory index (its default is threads=1).")
    r.notes.append(f"IVF-PQ: nlist {summary['ivfpq'].get('nlist')}, m {summary['ivfpq'].get('pq_m')}, 8 bits, "
                   f"nprobe 32, trained on {ivf_params['train_size']:,}; HNSW: M 32, efConstruction 64 (kd-index's "
                   f"default is 200: slower to build, higher recall), first {nh:,} vectors.")
    r.notes.append("MS MARCO 8.8M (EXTRAPOLATED, linear in n): flat "
                   f"{ext['flat']['memory_gib']:.1f} GiB, {ext['flat']['single_query_ms']:.0f} ms/query single; fp16 "
                   f"{ext['fp16']['memory_gib']:.1f} GiB; IVF-PQ {ext['ivfpq']['memory_gib']:.2f} GiB; HNSW "
                   f"{ext['hnsw']['memory_gib']:.1f} GiB, build >= {ext['hnsw']['build_hours_2_cores']:.1f} h on "
                   "these cores.")
    return r
