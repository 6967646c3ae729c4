"""BM25 and hybrid (BM25 + all-MiniLM-L6-v2, Pyserini's interpolation) on SciFact, end to end: kd_pyserini's
``search_bm25`` / ``search_hybrid`` against Pyserini's ``LuceneSearcher`` / ``HybridSearcher`` on the same indexes."""

from __future__ import annotations

import time

import numpy as np

from . import scifact
from .common import Result, Settings, Skip, pctl


def _top(run: dict[str, dict[str, float]], q: str, k: int) -> list[str]:
    from kd_pyserini.trec_io import rank

    return [d for d, _ in rank(run[q], k)] if run.get(q) else []


def bench_sparse(s: Settings) -> Result:
    try:
        from kd_pyserini import search as kds
    except ImportError as e:
        raise Skip(f"kd_pyserini.search is not ready ({e})") from e
    from pyserini.encode import AutoQueryEncoder
    from pyserini.search.faiss import FaissSearcher
    from pyserini.search.hybrid import HybridSearcher
    from pyserini.search.lucene import LuceneSearcher

    from kd_pyserini.encoding import TextEncoder

    from .common import minilm_dir

    r = Result("sparse")
    topics = scifact.topics(s)
    qids = list(topics)
    texts = [topics[q] for q in qids]
    bm25_dir = scifact.bm25_index(s)
    dense_dir = scifact.dense_index(s)
    hits = 1000
    k1, b = kds.BM25_DEFAULT

    # ---- BM25: all topics in one call, end to end (open the index, search, collect) ---------------------------
    def kd_bm25():
        return kds.search_bm25(topics, bm25_dir, hits, k1=k1, b=b, threads=1)

    def py_bm25():
        searcher = LuceneSearcher(str(bm25_dir))
        searcher.set_bm25(k1, b)
        res = searcher.batch_search(texts, qids, k=hits, threads=1)
        return {q: {h.docid: float(h.score) for h in res[q]} for q in qids}

    times: dict[str, list[float]] = {"kd": [], "py": []}
    runs = {}
    for rnd in range(2):
        for name, fn in ((("kd", kd_bm25), ("py", py_bm25)) if rnd % 2 == 0 else (("py", py_bm25), ("kd", kd_bm25))):
            t0 = time.perf_counter()
            runs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    r.add("BM25 end-to-end, all topics, ms/query", min(times["kd"]) * 1e3 / len(qids),
          min(times["py"]) * 1e3 / len(qids), "ms/query", higher_is_better=False)
    same = np.mean([_top(runs["kd"], q, 10) == _top(runs["py"], q, 10) for q in qids])
    r.agreement["BM25 identical top-10"] = float(same)

    # one query at a time, each side with a searcher held open (kd_pyserini.search.Bm25Searcher vs LuceneSearcher)
    held = LuceneSearcher(str(bm25_dir))
    held.set_bm25(k1, b)
    kd_held = kds.Bm25Searcher(bm25_dir, k1=k1, b=b)
    lat: dict[str, list[float]] = {"kd": [], "py": []}
    for i, q in enumerate(qids[: min(30, len(qids))]):
        for name in (("kd", "py") if i % 2 == 0 else ("py", "kd")):
            t0 = time.perf_counter()
            if name == "kd":
                kd_held.search(topics[q], hits)
            else:
                held.search(topics[q], k=hits)
            lat[name].append(time.perf_counter() - t0)
    r.add("BM25 one query per call p50 (searchers held open)", pctl(lat["kd"], 50) * 1e3,
          pctl(lat["py"], 50) * 1e3, "ms", higher_is_better=False)

    # ---- hybrid: dense (MiniLM, flat) + BM25, interpolation alpha 0.1, depth 1000 -----------------------------
    kd_q = TextEncoder("all-minilm-l6-v2", device="cpu")
    py_q = AutoQueryEncoder(str(minilm_dir()), device="cpu", pooling="mean", l2_norm=True)

    def kd_hybrid():
        return kds.search_hybrid(topics, kd_q, dense_dir, bm25_dir, "interpolation", hits=hits, depth=hits,
                                 alpha=0.1, threads=1, check=False)

    def py_hybrid():
        dense = FaissSearcher(str(dense_dir), py_q)
        sparse = LuceneSearcher(str(bm25_dir))
        sparse.set_bm25(k1, b)
        res = HybridSearcher(dense, sparse).batch_search(texts, qids, k0=hits, k=hits, alpha=0.1, threads=1)
        return {q: {h.docid: float(h.score) for h in res[q]} for q in qids}

    times = {"kd": [], "py": []}
    for rnd in range(2):
        for name, fn in ((("kd", kd_hybrid), ("py", py_hybrid)) if rnd % 2 == 0 else
                         (("py", py_hybrid), ("kd", kd_hybrid))):
            t0 = time.perf_counter()
            runs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    r.add("hybrid end-to-end, all topics, ms/query", min(times["kd"]) * 1e3 / len(qids),
          min(times["py"]) * 1e3 / len(qids), "ms/query", higher_is_better=False)
    r.agreement["hybrid identical top-10"] = float(np.mean([_top(runs["kd"], q, 10) == _top(runs["py"], q, 10)
                                                            for q in qids]))
    try:
        from kd_pyserini.evaluation import evaluate

        qr = scifact.qrels(s)
        qr = {q: qr[q] for q in qids if q in qr}
        for name in ("kd", "py"):
            r.agreement[f"hybrid nDCG@10 ({'kd_pyserini' if name == 'kd' else 'Pyserini'})"] = \
                next(iter(evaluate(runs[name], qr, ["nDCG@10"]).values()))
    except ImportError:
        pass
    r.notes.append(f"SciFact {len(qids)} topics, corpus {scifact.corpus(s).name}; k1={k1}, b={b}, 1000 hits, one "
                   "search thread; hybrid = all-MiniLM-L6-v2 flat index + BM25, alpha 0.1 (Pyserini's default). "
                   "Index building is not timed.")
    return r
