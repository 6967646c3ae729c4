"""Passage and query encoding: kd_pyserini's encoders against Pyserini's ``AutoDocumentEncoder`` /
``AutoQueryEncoder`` and against sentence-transformers (fp32 and bf16), on the same model (TAS-B architecture), the
same texts, interleaved in one process; every throughput also as a fraction of this CPU's measured GEMM ceiling for
its precision (:mod:`tools.benchmarks.ceiling`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import numpy as np

from .ceiling import encoder_flops, fraction_of_ceiling, useful_gflops
from .common import (PeakRSS, Result, Settings, Skip, bf16_worth_running, dl_queries, interleave, mib, pctl,
                     sample_passages, st_encoder,
                     tasb_model, vector_agreement)
from .runtimes import ORT, OV

ST = "sentence-transformers"
BEST = "best other runtime"
QUERY_BLOCK = 25  # single queries an encoder answers in a row (bench_queries)


def _runtime_peers(model: str, s: Settings, max_length: int, precs: tuple[str, ...], mode: str,
                   notes: list[str]) -> dict[str, Any]:
    """ONNX Runtime (fp32, int8) and OpenVINO (fp32, and bf16 where ``precs`` has it) encoders, by variant name
    (``"ort fp32"``, ``"ov bf16"``...); a runtime that is not installed or does not export is left out with a note."""
    from .runtimes import OrtEncoder, OvEncoder

    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        notes.append("ONNX Runtime and OpenVINO left out: torch's kernels are capped at AVX2 in this run "
                     f"({os.environ['ONEDNN_MAX_CPU_ISA']}), and neither runtime offers such a cap (their kernels "
                     "would use AMX/AVX-512: not a comparison)")
        return {}
    out: dict[str, Any] = {}
    # ONNX Runtime as its users get it (intra-op threads spinning between calls: in blocks of single queries this is
    # what makes it fast; in the one-process run of 2026-12-07 16:36 it was off: ORT int8 4.2 ms there, 2.75 alone)
    for name, make in (("ort fp32", lambda: OrtEncoder(model, s.cache_dir, max_length, "fp32")),
                       ("ort int8", lambda: OrtEncoder(model, s.cache_dir, max_length, "int8")),
                       *((f"ov {p}", (lambda p=p: OvEncoder(model, s.cache_dir, max_length, p, mode=mode,
                                                            threads=_threads())))
                         for p in precs)):
        try:
            out[name] = make()
        except Skip as e:
            notes.append(f"{name} left out: {e}")
        except Exception as e:  # noqa: BLE001  (a peer's export or compile failing must not stop the benchmark)
            notes.append(f"{name} left out: {type(e).__name__}: {str(e)[:200]}")
    return out


def _peer_set(rates: dict[str, float], p: str) -> dict[str, float | None]:
    """Each peer's figure at precision ``p`` (the same-precision comparison)."""
    return {ST: rates.get(f"st {p}"), ORT: rates.get(f"ort {p}"), OV: rates.get(f"ov {p}")}


def _faithful(v: np.ndarray, ref: np.ndarray, min_cosine: float = 0.999) -> bool:
    """The issue's "equal vectors": every vector's cosine to fp32's at least ``min_cosine``."""
    return vector_agreement(v, ref)["cos_min"] >= min_cosine


def _best(rates: dict[str, float], names: list[str], higher_is_better: bool = True) -> tuple[str | None, float | None]:
    got = [(n, rates[n]) for n in names if rates.get(n)]
    if not got:
        return None, None
    return (max if higher_is_better else min)(got, key=lambda x: x[1])


def _prec(name: str) -> str:
    """The precision a variant runs at (its ceiling): ``"kd bf16"`` -> ``bf16``; Pyserini and ST fp32 -> ``fp32``."""
    for p in ("bf16", "int8"):
        if p in name:
            return p
    return "fp32"


def _token_lengths(model: str, texts: list[str], max_length: int) -> np.ndarray:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    return np.array([len(x) for x in tok(texts, truncation=True, max_length=max_length)["input_ids"]])


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


def _kd_doc(model: str, precision: str = "fp32", fast_linear: bool = True, batch_size: int = 32,
            fused: bool = True):
    from kd_pyserini import encoders as E

    with _env("KD_PYSERINI_FAST_LINEAR", "1" if fast_linear else "0"), _env("KD_PYSERINI_FUSED", "1" if fused else "0"):
        enc = E.get_document_encoder(model, device="cpu", precision=precision, batch_size=batch_size)
    want = fused and fast_linear and precision in ("fp32", "bf16")
    if enc.encoder._fused() is None and want and _fused_possible(precision):
        raise RuntimeError(f"kd {precision}: the fused forward was expected and is off")
    if enc.encoder._fused() is not None and not want:
        raise RuntimeError(f"kd {precision}: the fused forward is on in a variant that must run without it")
    return enc


def _fused_possible(precision: str) -> bool:
    import torch

    from kd_pyserini.encoding.fast_linear import fast_linear_available
    from kd_pyserini.encoding.fused import fused_enabled

    return fused_enabled() and fast_linear_available(torch.bfloat16 if precision == "bf16" else torch.float32)


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
    bf16 = bf16_worth_running(s)
    precs = ("fp32", "bf16") if bf16 else ("fp32",)
    variants = {
        "kd fp32": _kd_doc(model, "fp32", batch_size=bs),
        "kd fp32 (sorting only, MKL linear)": _kd_doc(model, "fp32", fast_linear=False, batch_size=bs),
        "kd fp32 (oneDNN linear, not fused)": _kd_doc(model, "fp32", fused=False, batch_size=bs),
        **({"kd bf16 (not fused)": _kd_doc(model, "bf16", fused=False, batch_size=bs)} if bf16 else {}),
        **({"kd bf16": _kd_doc(model, "bf16", batch_size=bs)} if bf16 else {}),
        "kd int8": _kd_doc(model, "int8", batch_size=bs),
    }
    if not bf16:
        r.notes.append(f"bf16 not timed: this CPU's bf16 GEMM is emulated ({s.ceilings.get('bf16')} GFLOP/s vs fp32 "
                       f"{s.ceilings.get('fp32')})")

    def pyserini_encode(chunk: list[str]) -> np.ndarray:
        # pyserini.encode's loop: fixed-size batches in corpus order; no inference_mode / no_grad around it.
        return np.concatenate([theirs.encode(chunk[i:i + bs], max_length=200) for i in range(0, len(chunk), bs)])

    peers = {f"st {p}": st_encoder(model, 200, p) for p in precs}
    runtimes = _runtime_peers(model, s, 200, precs, "throughput", r.notes)
    peers.update(runtimes)
    chunk = max(bs, min(256, len(texts)))
    names = ["pyserini", *peers, *variants]
    secs = dict.fromkeys(names, 0.0)
    peak = dict.fromkeys(names, 0)
    vecs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    fns = {"pyserini": pyserini_encode,
           **{n: (lambda c, e=e: np.asarray(e.encode(c, batch_size=bs, show_progress_bar=False), dtype=np.float32))
              for n, e in peers.items() if n.startswith("st ")},
           **{n: (lambda c, e=e: e.encode(c, batch_size=bs)) for n, e in runtimes.items()},
           **{n: e.encode for n, e in variants.items()}}
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
    rate = {n: len(texts) / secs[n] for n in names}
    lens = _token_lengths(model, texts, 200)
    per_passage = encoder_flops(model, lens) / len(lens)
    ceil = s.ceilings or {}
    for n in variants:
        p = _prec(n)
        r.add(f"passages/s, {n}", rate[n], rate["pyserini"], "passages/s", ours_label=n,
              peers=_peer_set(rate, p),
              ceiling=fraction_of_ceiling(rate[n], per_passage, ceil.get(p)),
              gflops=useful_gflops(rate[n], per_passage), precision=p)
    # the headline: kd's default (--precision auto) against the fastest faithful peer at any precision
    from kd_pyserini.encoding.precision import choose_precision

    auto = choose_precision("auto", "cpu", "encode").precision
    if f"kd {auto}" not in rate:  # e.g. bf16 left out of this run
        r.notes.append(f"--precision auto would pick {auto}, which this run did not time; fp32 stands in")
        auto = "fp32"
    faithful = [n for n in peers if n in V and _faithful(V[n], V["kd fp32"])]
    bn, bv = _best(rate, faithful)
    r.add(f"passages/s, kd auto ({auto}) vs the fastest faithful peer", rate[f"kd {auto}"], rate["pyserini"],
          "passages/s", ours_label=f"kd {auto}", peers={BEST: bv}, note=f"fastest faithful peer: {bn}",
          ceiling=fraction_of_ceiling(rate[f"kd {auto}"], per_passage, ceil.get(auto)),
          gflops=useful_gflops(rate[f"kd {auto}"], per_passage), precision=auto)
    r.extra["faithful_peers"] = faithful
    r.extra["ort_fusions"] = getattr(runtimes.get("ort fp32"), "fusions", None)
    r.extra["openvino_streams"] = {n: e.streams for n, e in runtimes.items() if n.startswith("ov ")}
    r.extra["peer_rates"] = {n: rate[n] for n in ("pyserini", *peers)}
    r.extra["peer_gflops"] = {n: {"gflops": useful_gflops(rate[n], per_passage), "precision": _prec(n)}
                              for n in ("pyserini", *peers)}
    r.extra["gflop_per_passage"] = per_passage / 1e9
    # memory: each variant alone in a fresh process (in this one, memory freed by an earlier run stays resident)
    from .memprobe import probe

    mem_texts = texts[:64]
    mem_variants = ["kd fp32", *(["kd bf16"] if bf16 else []), "kd int8"]
    mem = {} if s.quick else {n: probe("passages", n, model, mem_texts) for n in ("pyserini", *mem_variants)}
    if s.quick:
        r.notes.append("--quick: no memory probe (a fresh process per variant)")
    r.extra["memory_probe"] = mem
    for n in mem_variants if mem else ():
        if "error" not in mem[n] and "error" not in mem["pyserini"]:
            r.add(f"peak RSS above loaded model, {len(mem_texts)} passages, {n}", mib(mem[n]["peak_above_loaded"]),
                  mib(mem["pyserini"]["peak_above_loaded"]), "MiB", higher_is_better=False, ours_label=n)
    r.extra["in_process_peak_above_start_mib"] = {n: mib(v) for n, v in peak.items()}
    r.agreement["kd fp32 vs pyserini"] = vector_agreement(V["kd fp32"], V["pyserini"])
    r.agreement["kd fp32 vs st fp32"] = vector_agreement(V["kd fp32"], V["st fp32"])
    if bf16:
        r.agreement["st bf16 vs kd fp32"] = vector_agreement(V["st bf16"], V["kd fp32"])
    for n in (v for v in variants if v != "kd fp32"):
        r.agreement[f"{n} vs kd fp32"] = vector_agreement(V[n], V["kd fp32"])
    for n in runtimes:
        r.agreement[f"{n} vs kd fp32"] = vector_agreement(V[n], V["kd fp32"])
    padded_py = sum(lens[i:i + bs].max() * len(lens[i:i + bs]) for i in range(0, len(lens), bs)) / len(lens)
    srt = np.sort(lens)[::-1]
    padded_kd = sum(srt[i:i + bs].max() * len(srt[i:i + bs]) for i in range(0, len(srt), bs)) / len(srt)
    r.extra["tokens_per_passage"] = {"real_mean": float(lens.mean()), "pyserini_padded": float(padded_py),
                                     "kd_sorted_padded": float(padded_kd)}
    r.extra["passages"] = len(texts)
    r.extra["chunk"] = chunk
    r.notes.append(f"{len(texts)} DL-pool passages (seed {s.seed}), max length 200, batch {bs}, "
                   f"{_threads()} threads; interleaved in chunks of {chunk}; Pyserini as its encode CLI runs it "
                   "(no inference_mode); sentence-transformers: SentenceTransformer(Transformer + CLS Pooling).encode "
                   "(it sorts by length too), fp32 and the model cast to bf16 (its way); ratio to ST at the same "
                   "precision (ST has no int8 model path). ceiling = useful GFLOP/s (unpadded tokens, "
                   f"{per_passage / 1e9:.2f} GFLOP a passage) / this CPU's GEMM GFLOP/s at that precision.")
    if not s.quick:
        r.extra["batch_sweep"] = _batch_sweep(model, texts[:256])
        enc = variants["kd fp32"]
        r.extra["profile_kd_fp32"] = profile_top(lambda: enc.encode(texts[:64]))
        if "kd bf16" in variants:
            r.extra["profile_kd_bf16"] = profile_top(lambda: variants["kd bf16"].encode(texts[:64]))
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
    KDQueryEncoder (fp32, bf16, int8), and ONNX Runtime / OpenVINO: single queries in blocks per encoder, the
    encoders taking turns (and, outside --quick, each fast variant alone in a process of its own)."""
    import torch
    from pyserini.encode import AutoQueryEncoder

    r = Result("queries")
    model = str(tasb_model(s))
    queries = dl_queries(s)
    theirs = AutoQueryEncoder(model, device="cpu", pooling="cls", l2_norm=False)
    bf16 = bf16_worth_running(s)
    kd = {p: _kd_query(model, p) for p in (("fp32", "bf16", "int8") if bf16 else ("fp32", "int8"))}
    st = {p: st_encoder(model, 30, p) for p in (("fp32", "bf16") if bf16 else ("fp32",))}
    if not bf16:
        r.notes.append(f"bf16 not timed: this CPU's bf16 GEMM is emulated ({s.ceilings.get('bf16')} GFLOP/s)")
    fns: dict[str, Callable[[str], np.ndarray]] = {"pyserini": lambda q: theirs.encode(q, max_length=30)}
    fns.update({f"st {p}": (lambda q, e=e: np.asarray(e.encode(q, show_progress_bar=False), dtype=np.float32))
                for p, e in st.items()})
    runtimes = _runtime_peers(model, s, 30, tuple(st), "latency", r.notes)
    fns.update({n: e.encode_one for n, e in runtimes.items()})
    fns.update({f"kd {p}": e.encode for p, e in kd.items()})
    names = list(fns)
    # Blocks: each encoder answers QUERY_BLOCK queries in a row (after 3 warm-up queries), as a search box serving
    # one model does; the encoders take turns block by block, in alternating order, so a change of load hits all
    # alike. Until session 6 each query went through every encoder in turn: each model then came back from memory
    # after ~10 others had run. ``alone`` (below) also times the fastest variants each in a process of its own.
    lat: dict[str, list[float]] = {n: [] for n in names}
    vec: dict[str, list[np.ndarray | None]] = {n: [None] * len(queries) for n in names}
    blocks = [range(b, min(b + QUERY_BLOCK, len(queries))) for b in range(0, len(queries), QUERY_BLOCK)]
    for k, block in enumerate(blocks):
        for n in (names if k % 2 == 0 else names[::-1]):
            for q in queries[:3]:
                fns[n](q)
            for i in block:
                t0 = time.perf_counter()
                v = fns[n](queries[i])
                lat[n].append(time.perf_counter() - t0)
                vec[n][i] = v
    qlens = _token_lengths(model, queries, 30)
    per_query = encoder_flops(model, qlens) / len(qlens)
    ceil = s.ceilings or {}
    ours = [n for n in names if n.startswith("kd ")]

    def st_peer(n: str, vals: dict[str, float]) -> dict[str, float | None]:
        return _peer_set(vals, _prec(n))

    for q in (50, 95):
        v = {n: pctl(lat[n], q) * 1e3 for n in names}
        for n in ours:
            r.add(f"single-query p{q}, {n}", v[n], v["pyserini"], "ms", higher_is_better=False, ours_label=n,
                  peers=st_peer(n, v), **(dict(ceiling=fraction_of_ceiling(1e3 / v[n], per_query, ceil.get(_prec(n))),
                                               gflops=useful_gflops(1e3 / v[n], per_query), precision=_prec(n))
                                          if q == 50 else {}))
        r.extra[f"peer_p{q}_ms"] = {n: v[n] for n in names if not n.startswith("kd ")}
        if q == 50:
            lat50 = v
    # the single-query headline: kd's fastest faithful variant against every peer's fastest faithful one
    V = {n: np.stack(v) for n, v in vec.items()}
    ok = [n for n in names if n != "pyserini" and _faithful(V[n], V["kd fp32"])]
    kn, kv = _best(lat50, [n for n in ok if n.startswith("kd ")], higher_is_better=False)
    bn, bv = _best(lat50, [n for n in ok if not n.startswith("kd ")], higher_is_better=False)
    if kn:
        r.add(f"single-query p50, fastest kd ({kn[3:]}) vs the fastest peer", kv, lat50["pyserini"], "ms",
              higher_is_better=False, ours_label=kn, peers={BEST: bv}, note=f"fastest peer: {bn}",
              ceiling=fraction_of_ceiling(1e3 / kv, per_query, ceil.get(_prec(kn))),
              gflops=useful_gflops(1e3 / kv, per_query), precision=_prec(kn))
    if not s.quick:  # each variant alone in a fresh process (the search box that serves one model)
        from .alone import run_alone

        solo_names = [n for n in names if n == "pyserini" or n in ok]
        solo = {n: run_alone(n, model, s.cache_dir, queries, threads=torch.get_num_threads()) for n in solo_names}
        r.extra["alone_in_a_process"] = solo
        p50 = {n: v["p50_ms"] for n, v in solo.items() if "p50_ms" in v}
        kn, kv = _best(p50, [n for n in p50 if n.startswith("kd ")], higher_is_better=False)
        bn, bv = _best(p50, [n for n in p50 if n != "pyserini" and not n.startswith("kd ")],
                       higher_is_better=False)
        if kn:
            r.add(f"single-query p50 alone in a process, fastest kd ({kn[3:]}) vs the fastest peer", kv,
                  p50.get("pyserini"), "ms", higher_is_better=False, ours_label=kn, peers={BEST: bv},
                  note=f"fastest peer: {bn}", precision=_prec(kn))
    r.agreement["kd fp32 vs pyserini"] = vector_agreement(V["kd fp32"], V["pyserini"])
    r.agreement["kd fp32 vs st fp32"] = vector_agreement(V["kd fp32"], V["st fp32"])
    for p in (p for p in kd if p != "fp32"):
        r.agreement[f"kd {p} vs kd fp32"] = vector_agreement(V[f"kd {p}"], V["kd fp32"])
    for n in runtimes:
        r.agreement[f"{n} vs kd fp32"] = vector_agreement(V[n], V["kd fp32"])

    # batched: Pyserini's FaissSearcher.batch_search loops over encode() (AutoQueryEncoder has no encode_batch)
    batch_fns = {"pyserini": lambda: [theirs.encode(q, max_length=30) for q in queries],
                 **{f"st {p}": (lambda e=e: e.encode(queries, batch_size=32, show_progress_bar=False))
                    for p, e in st.items()},
                 **{n: (lambda e=e: e.encode(queries, batch_size=32)) for n, e in runtimes.items()},
                 **{f"kd {p}": (lambda e=e: e.encode_batch(queries)) for p, e in kd.items()}}
    t = interleave(batch_fns, rounds=2 if not s.quick else 1, warmup=0)
    qps = {n: len(queries) / min(ts) for n, ts in t.items()}
    for p in kd:
        n = f"kd {p}"
        r.add(f"batched queries/s, {n}", qps[n], qps["pyserini"], "queries/s", ours_label=n, peers=st_peer(n, qps),
              ceiling=fraction_of_ceiling(qps[n], per_query, ceil.get(p)), gflops=useful_gflops(qps[n], per_query),
              precision=p)
    r.extra["peer_batched_qps"] = {n: qps[n] for n in qps if not n.startswith("kd ")}
    r.extra["gflop_per_query"] = per_query / 1e9

    # threads: 1 vs the default for single queries (small matmuls: thread sync can cost more than it brings)
    default = torch.get_num_threads()
    sweep: dict[str, float] = {}
    sample = queries[: min(60, len(queries))]
    for th in sorted({1, default}):
        torch.set_num_threads(th)
        for n in (n for n in names if n not in runtimes):  # ORT/OpenVINO fix their threads when built
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
    r.notes.append(f"{len(queries)} DL19+DL20 topics, max length 30, {default} threads; single queries in blocks "
                   f"of {QUERY_BLOCK} per encoder (3 warm-up queries each), the encoders taking turns block by block "
                   "in alternating order. Pyserini's batched path = its per-query loop; "
                   "sentence-transformers: "
                   "encode(query) / encode(queries, batch_size=32), CLS pooling, 30 tokens, ratio at the same "
                   "precision (none for int8). ceiling: of the GEMM rate at that precision (single queries are "
                   "bound by memory and per-call overhead, not FLOPs: a small share is expected).")
    return r
