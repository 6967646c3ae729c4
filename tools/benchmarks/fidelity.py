"""What the fast precisions do to the vectors and to effectiveness, on real weights (all-MiniLM-L6-v2):

* cosine of bf16 / int8 vectors against fp32, for DL-pool passages and DL19+DL20 queries;
* SciFact nDCG@10 with fp32 documents (the flat index ``kd-index`` builds) and fp32 / bf16 / int8 queries, and with
  bf16 documents + bf16 queries (exact inner-product search in numpy, so only the encoders differ).
"""

from __future__ import annotations

import time

import numpy as np

from . import scifact
from .common import Result, Settings, Skip, cosines, dl_queries, sample_passages


def _stats(a: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    c = cosines(a, ref)
    return {"cos_min": float(c.min()), "cos_p01": float(np.percentile(c, 1)), "cos_mean": float(c.mean())}


def _run(Q: np.ndarray, D: np.ndarray, qids: list[str], docids: list[str], k: int = 1000) -> dict:
    scores = Q @ D.T
    k = min(k, D.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return {q: {docids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(qids)}


def bench_fidelity(s: Settings) -> Result:
    from kd_pyserini.encoders import get_document_encoder, get_query_encoder

    r = Result("fidelity")
    name = "all-minilm-l6-v2"
    docs = {p: get_document_encoder(name, device="cpu", precision=p) for p in ("fp32", "bf16", "int8")}
    qenc = {p: get_query_encoder(name, device="cpu", precision=p) for p in ("fp32", "bf16", "int8")}

    passages = sample_passages(s, 32 if s.quick else 256)
    pv = {p: e.encode(passages) for p, e in docs.items()}
    queries = dl_queries(s)
    qv = {p: np.stack([e.encode(q) for q in queries]) for p, e in qenc.items()}
    for p in ("bf16", "int8"):
        r.agreement[f"MiniLM passages {p} vs fp32"] = _stats(pv[p], pv["fp32"])
        r.agreement[f"MiniLM queries {p} vs fp32"] = _stats(qv[p], qv["fp32"])

    # ---- SciFact nDCG@10 ---------------------------------------------------------------------------------------
    try:
        from kd_pyserini.corpus import read_corpus
        from kd_pyserini.evaluation import evaluate
        from kd_pyserini.index import load_docids
    except ImportError as e:
        r.notes.append(f"SciFact nDCG@10 skipped: {e}")
        return r
    try:
        index_dir = scifact.dense_index(s, name)
    except Skip as e:
        r.notes.append(f"SciFact nDCG@10 skipped: {e}")
        return r
    import faiss

    index = faiss.read_index(str(index_dir / "index"))
    D32 = index.reconstruct_n(0, index.ntotal)
    docids = load_docids(index_dir)
    texts_by_id = {p.id: p.contents for p in read_corpus(scifact.corpus(s), check_duplicates=False)}
    texts = [texts_by_id[d] for d in docids]
    t0 = time.perf_counter()
    Dbf = docs["bf16"].encode(texts)
    bf16_doc_s = time.perf_counter() - t0
    r.agreement["SciFact documents bf16 vs fp32 index"] = _stats(Dbf, D32)
    topics = scifact.topics(s)
    qids = list(topics)
    Q = {p: np.stack([qenc[p].encode(topics[q]) for q in qids]) for p in ("fp32", "bf16", "int8")}
    qrels = scifact.qrels(s)
    qrels = {q: qrels[q] for q in qids if q in qrels}

    def ndcg(Qm: np.ndarray, Dm: np.ndarray) -> float:
        return next(iter(evaluate(_run(Qm, Dm, qids, docids), qrels, ["nDCG@10"]).values()))

    base = ndcg(Q["fp32"], D32)
    confs = {"fp32 docs + bf16 queries": (Q["bf16"], D32), "fp32 docs + int8 queries": (Q["int8"], D32),
             "bf16 docs + bf16 queries": (Q["bf16"], Dbf)}
    if not s.quick:
        t0 = time.perf_counter()
        D8 = docs["int8"].encode(texts)
        r.extra["int8_doc_encoding_s"] = time.perf_counter() - t0
        r.agreement["SciFact documents int8 vs fp32 index"] = _stats(D8, D32)
        confs["int8 docs + int8 queries"] = (Q["int8"], D8)
    r.add("SciFact nDCG@10, fp32 docs + fp32 queries (reference)", base, None, "")
    for label, (Qm, Dm) in confs.items():
        v = ndcg(Qm, Dm)
        r.add(f"SciFact nDCG@10, {label}", v, None, "", note=f"delta {v - base:+.4f}")
        r.extra[f"ndcg_delta {label}"] = v - base
    r.extra["bf16_doc_encoding_s"] = bf16_doc_s
    r.notes.append(f"all-MiniLM-L6-v2 (real weights), SciFact {len(docids)} docs / {len(qids)} topics, exact search; "
                   "cosines: passages = DL-pool sample, queries = DL19+DL20 topics (single-query path).")
    return r
