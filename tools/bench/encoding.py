"""Passage and query encoding: kd_pyserini's encoders against Pyserini's ``AutoDocumentEncoder`` /
``AutoQueryEncoder`` on the same model (TAS-B architecture), the same texts, interleaved in one process."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import numpy as np

from .common import (PeakRSS, Result, Settings, dl_queries, interleave, mib, pctl, sample_passages, tasb_model,
                     vector_agreement)


@contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _kd_doc(model: str, precision: str = "fp32", fast_linear: bool = True, batch_size: int = 32):
    from kd_pyserini import encoders as E

    with _env("KD_PYSERINI_FAST_LINEAR", "1" if fast_linear else "0"):
        return E.get_document_encoder(model, device="cpu", precision=precision, batch_size=batch_size)


def _kd_query(model: str, precision: str = "fp32", fast_linear: bool = True):
    from kd_pyserini import encoders as E

    with _env("KD_PYSERINI_FAST_LINEAR", "1" if fast_linear else "0"):
        return E.get_query_encoder(model, device="cpu", precision=precision)


def profile_top(fn: Callable[[], Any], rows: int = 8) -> list[dict[str, Any]]:
    """torch.profiler over one call of ``fn``: the ops taking the most self CPU time, with their share."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1000, 2),
             "share": round(e.self_cpu_time_total / total, 3), "calls": e.count} for e in events[:rows]]


# ------------------------------------------------------------------------------------------------------ passages

def bench_passages(s: Settings) -> Result:
    """Passages/s and peak memory: Pyserini's AutoDocumentEncoder (batches of 32 in corpus order, padding to the
    batch's longest, as ``python -m pyserini.encode`` runs it) against kd_pyserini's encoder (fp32 default; fp32
    without the oneDNN linear; bf16; int8), same 200-token truncation, interleaved chunk by chunk."""
    from pyserini.encode import AutoDocumentEncoder

    r = Result("passages")
    model = str(tasb_model(s))
    texts = sample_passages(s)
    bs = s.passage_batch
    theirs = AutoDocumentEncoder(model, device="cpu", pooling="cls", l2_norm=False)
    variants = {
        "kd fp32": _kd_doc(model, "fp32", batch_size=bs),
        "kd fp32 (sorting only, MKL linear)": _kd_doc(model, "fp32", fast_linear=False, batch_size=bs),
        "kd bf16": _kd_doc(model, "bf16", batch_size=bs),
        "kd int8": _kd_doc(model, "int8", batch_size=bs),
    }

    def pyserini_encode(chunk: list[str]) -> np.ndarray:
        # pyserini.encode's loop: fixed-size batches in corpus order; no inference_mode / no_grad around it.
        return np.concatenate([theirs.encode(chunk[i:i + bs], max_length=200) for i in range(0, len(chunk), bs)])

    chunk = max(bs, min(256, len(texts)))
    names = ["pyserini", *variants]
    secs = dict.fromkeys(names, 0.0)
    peak = dict.fromkeys(names, 0)
    vecs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    fns = {"pyserini": pyserini_encode, **{n: e.encode for n, e in variants.items()}}
    for n in names:  # warm-up (first-call allocations, oneDNN kernel creation)
        fns[n](texts[:4])
    for k, start in enumerate(range(0, len(texts), chunk)):
        part = texts[start:start + chunk]
        for n in (names if k % 2 == 0 else names[::-1]):
            with PeakRSS() as m:
                t0 = time.perf_counter()
                v = fns[n](part)
                secs[n] += time.perf_counter() - t0
            peak[n] = max(peak[n], m.delta)
            vecs[n].append(v)
    V = {n: np.concatenate(v) for n, v in vecs.items()}
    base = len(texts) / secs["pyserini"]
    for n in variants:
        r.add(f"passages/s, {n}", len(texts) / secs[n], base, "passages/s", ours_label=n)
    # memory: each variant alone in a fresh process (in this one, memory freed by an earlier run stays resident)
    from .memprobe import probe

    mem_texts = texts[:64]
    mem = {} if s.quick else {n: probe("passages", n, model, mem_texts)
                              for n in ("pyserini", "kd fp32", "kd bf16", "kd int8")}
    if s.quick:
        r.notes.append("--quick: no memory probe (a fresh process per variant)")
    r.extra["memory_probe"] = mem
    for n in ("kd fp32", "kd bf16", "kd int8") if mem else ():
        if "error" not in mem[n] and "error" not in mem["pyserini"]:
            r.add(f"peak RSS above loaded model, {len(mem_texts)} passages, {n}", mib(mem[n]["peak_above_loaded"]),
                  mib(mem["pyserini"]["peak_above_loaded"]), "MiB", higher_is_better=False, ours_label=n)
    r.extra["in_process_peak_above_start_mib"] = {n: mib(v) for n, v in peak.items()}
    r.agreement["kd fp32 vs pyserini"] = vector_agreement(V["kd fp32"], V["pyserini"])
    for n in ("kd fp32 (sorting only, MKL linear)", "kd bf16", "kd int8"):
        r.agreement[f"{n} vs kd fp32"] = vector_agreement(V[n], V["kd fp32"])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    lens = np.array([len(x) for x in tok(texts, truncation=True, max_length=200)["input_ids"]])
    padded_py = sum(lens[i:i + bs].max() * len(lens[i:i + bs]) for i in range(0, len(lens), bs)) / len(lens)
    srt = np.sort(lens)[::-1]
    padded_kd = sum(srt[i:i + bs].max() * len(srt[i:i + bs]) for i in range(0, len(srt), bs)) / len(srt)
    r.extra["tokens_per_passage"] = {"real_mean": float(lens.mean()), "pyserini_padded": float(padded_py),
                                     "kd_sorted_padded": float(padded_kd)}
    r.extra["passages"] = len(texts)
    r.extra["chunk"] = chunk
    r.notes.append(f"{len(texts)} DL-pool passages (seed {s.seed}), max length 200, batch {bs}, "
                   f"{_threads()} threads; interleaved in chunks of {chunk}; Pyserini as its encode CLI runs it "
                   "(no inference_mode).")
    if not s.quick:
        r.extra["batch_sweep"] = _batch_sweep(model, texts[:256])
        enc = variants["kd fp32"]
        r.extra["profile_kd_fp32"] = profile_top(lambda: enc.encode(texts[:64]))
        r.extra["profile_pyserini"] = profile_top(lambda: pyserini_encode(texts[:64]))
    return r


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _batch_sweep(model: str, texts: list[str]) -> dict[str, float]:
    """kd fp32 passages/s by batch size (length-sorted), interleaved; 256 passages."""
    enc = _kd_doc(model, "fp32")
    sizes = (8, 16, 32, 64, 128)
    times = interleave({str(b): (lambda b=b: enc.encode(texts, batch_size=b)) for b in sizes}, rounds=1, warmup=0)
    return {f"batch {b}": round(len(texts) / min(times[str(b)]), 2) for b in sizes}


# ------------------------------------------------------------------------------------------------------- queries

def bench_queries(s: Settings) -> Result:
    """Single-query latency (p50/p95) and batched queries/s: Pyserini's AutoQueryEncoder against kd_pyserini's
    KDQueryEncoder (fp32, bf16, int8), each query encoded by all of them in turn."""
    import torch
    from pyserini.encode import AutoQueryEncoder

    r = Result("queries")
    model = str(tasb_model(s))
    queries = dl_queries(s)
    theirs = AutoQueryEncoder(model, device="cpu", pooling="cls", l2_norm=False)
    kd = {p: _kd_query(model, p) for p in ("fp32", "bf16", "int8")}
    fns: dict[str, Callable[[str], np.ndarray]] = {"pyserini": lambda q: theirs.encode(q, max_length=30)}
    fns.update({f"kd {p}": e.encode for p, e in kd.items()})
    names = list(fns)
    for q in queries[:5]:
        for n in names:
            fns[n](q)
    lat: dict[str, list[float]] = {n: [] for n in names}
    vec: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i, q in enumerate(queries):
        for n in (names if i % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            v = fns[n](q)
            lat[n].append(time.perf_counter() - t0)
            vec[n].append(v)
    py50, py95 = pctl(lat["pyserini"], 50) * 1e3, pctl(lat["pyserini"], 95) * 1e3
    for n in names[1:]:
        r.add(f"single-query p50, {n}", pctl(lat[n], 50) * 1e3, py50, "ms", higher_is_better=False, ours_label=n)
    for n in names[1:]:
        r.add(f"single-query p95, {n}", pctl(lat[n], 95) * 1e3, py95, "ms", higher_is_better=False, ours_label=n)
    V = {n: np.stack(v) for n, v in vec.items()}
    r.agreement["kd fp32 vs pyserini"] = vector_agreement(V["kd fp32"], V["pyserini"])
    for p in ("bf16", "int8"):
        r.agreement[f"kd {p} vs kd fp32"] = vector_agreement(V[f"kd {p}"], V["kd fp32"])

    # batched: Pyserini's FaissSearcher.batch_search loops over encode() (AutoQueryEncoder has no encode_batch)
    batch_fns = {"pyserini": lambda: [theirs.encode(q, max_length=30) for q in queries],
                 **{f"kd {p}": (lambda e=e: e.encode_batch(queries)) for p, e in kd.items()}}
    t = interleave(batch_fns, rounds=2 if not s.quick else 1, warmup=0)
    for p in kd:
        r.add(f"batched queries/s, kd {p}", len(queries) / min(t[f"kd {p}"]), len(queries) / min(t["pyserini"]),
              "queries/s", ours_label=f"kd {p}")

    # threads: 1 vs the default for single queries (small matmuls: thread sync can cost more than it brings)
    default = torch.get_num_threads()
    sweep: dict[str, float] = {}
    sample = queries[: min(60, len(queries))]
    for th in sorted({1, default}):
        torch.set_num_threads(th)
        for n in names:
            ts = []
            for q in sample:
                t0 = time.perf_counter()
                fns[n](q)
                ts.append(time.perf_counter() - t0)
            sweep[f"{n}, {th} thread(s), p50 ms"] = round(pctl(ts, 50) * 1e3, 2)
    torch.set_num_threads(default)
    r.extra["threads_sweep"] = sweep
    if not s.quick:
        q8 = kd["int8"]
        r.extra["profile_kd_int8_single_query"] = profile_top(lambda: [q8.encode(q) for q in queries[:20]])
        r.extra["profile_kd_fp32_single_query"] = profile_top(lambda: [kd["fp32"].encode(q) for q in queries[:20]])
        r.extra["profile_pyserini_single_query"] = profile_top(
            lambda: [theirs.encode(q, max_length=30) for q in queries[:20]])
    r.notes.append(f"{len(queries)} DL19+DL20 topics, max length 30, {default} threads; each query encoded by every "
                   "encoder in turn (order alternating). Pyserini's batched path = its per-query loop.")
    return r
