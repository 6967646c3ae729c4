"""This CPU's kind (instruction sets) and its own matmul ceiling per precision, and the FLOPs an encoder call does.

Every encoder figure of the suite is reported as a fraction of the ceiling measured here, in the same process run,
so a figure from an AVX2-only CPU and one from an AMX CPU can be read side by side: "kd fp32 runs at 45 % of what
this CPU's best fp32 GEMM reaches" says more than "48.7 passages/s".

* :func:`cpu_kind`: the instruction sets from ``/proc/cpuinfo`` (AVX2, AVX-512, VNNI, AMX, native bf16), torch's
  own dispatch level (``torch.backends.cpu.get_cpu_capability()``) and any ISA caps forced through the environment
  (``ONEDNN_MAX_CPU_ISA``, ``FBGEMM_ENABLE_INSTRUCTIONS``, ``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS``).
* :func:`measure_ceilings`: GFLOP/s of a large GEMM (``2048 x 768 x 3072``: a batch of 32 passages of 64 tokens
  through a feed-forward up-projection) for fp32, bf16 and int8, best of the kernels torch offers for each
  (MKL ``mm``, oneDNN's matmul on a prepacked weight, fbgemm's dynamic int8 linear, ``torch._int_mm``).
* :func:`encoder_flops`: multiply-adds x 2 of a BERT/DistilBERT forward over sequences of given lengths (linear
  layers plus attention scores and weighted sums), from the model's ``config.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["FORCE_AVX2_ENV", "best_ceilings", "cpu_kind", "encoder_flops", "fraction_of_ceiling", "kind_label",
           "measure_ceilings", "useful_gflops"]

#: The environment that caps torch's CPU kernels at AVX2 (set before torch is imported: a child process).
FORCE_AVX2_ENV: dict[str, str] = {"ONEDNN_MAX_CPU_ISA": "AVX2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
                                  "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}

_FLAGS = {"avx2": "avx2", "avx512f": "avx512", "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni",
          "avx512_bf16": "avx512_bf16", "amx_bf16": "amx_bf16", "amx_int8": "amx_int8", "avx512_fp16": "avx512_fp16"}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_kind(flags: Iterable[str] | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The CPU's instruction sets and what torch is allowed to use of them.

    ``isa``: booleans avx2 / avx512 / vnni / amx / bf16_native (AVX512-BF16 or AMX-BF16) from the CPU flags;
    ``forced``: the ISA-capping variables set in the environment; ``effective``: the same booleans after the caps
    (what the kernels can use); ``torch_capability``: ATen's dispatch level; ``kind``: a short label
    (:func:`kind_label`).
    """
    fl = set(flags) if flags is not None else _cpu_flags()
    env = dict(os.environ) if env is None else env
    isa = {"avx2": "avx2" in fl, "avx512": "avx512f" in fl,
           "vnni": bool({"avx512_vnni", "avx_vnni"} & fl), "amx": bool({"amx_bf16", "amx_int8"} & fl),
           "bf16_native": bool({"avx512_bf16", "amx_bf16"} & fl)}
    forced = {k: env[k] for k in FORCE_AVX2_ENV if env.get(k)}
    capped = any(v.upper().startswith("AVX2") for v in forced.values())
    effective = dict(isa)
    if capped:
        effective.update(avx512=False, amx=False, bf16_native=False, vnni=isa["vnni"] and "avx_vnni" in fl)
    out: dict[str, Any] = {"isa": isa, "forced": forced, "effective": effective,
                           "flags": sorted(f for f in fl if f in _FLAGS)}
    try:
        import torch

        out["torch_capability"] = torch.backends.cpu.get_cpu_capability()
    except (ImportError, AttributeError):
        out["torch_capability"] = None
    out["kind"] = kind_label(isa, forced)
    return out


def kind_label(isa: dict[str, bool], forced: dict[str, str] | None = None) -> str:
    """``"AMX (AVX-512, VNNI, bf16)"``, ``"AVX-512 (VNNI, bf16)"``, ``"AVX2 only"``, ...; a forced cap says so."""
    if isa.get("amx"):
        base = "AMX"
    elif isa.get("avx512"):
        base = "AVX-512"
    elif isa.get("avx2"):
        base = "AVX2"
    else:
        base = "pre-AVX2"
    extras = [n for n, k in (("AVX-512", "avx512"), ("VNNI", "vnni"), ("bf16", "bf16_native"))
              if isa.get(k) and n != base]
    label = f"{base} ({', '.join(extras)})" if extras else f"{base} only"
    if forced and any(v.upper().startswith("AVX2") for v in forced.values()):
        label = f"AVX2 kernels forced on an {base} CPU"
    return label


# ---------------------------------------------------------------------------------------------------- ceilings

def _rate(fn: Callable[[], Any], flops: float, seconds: float) -> float:
    """Best GFLOP/s of ``fn`` over repeated calls for about ``seconds`` (after two warm-up calls)."""
    fn()
    fn()
    best = float("inf")
    t_end = time.perf_counter() + seconds
    n = 0
    while n < 3 or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        n += 1
    return flops / best / 1e9


def measure_ceilings(m: int = 2048, k: int = 768, n: int = 3072, seconds: float = 1.0) -> dict[str, Any]:
    """GFLOP/s of an ``m x k`` by ``k x n`` GEMM, per precision and kernel; ``best`` = each precision's ceiling.

    Kernels: fp32 ``torch.mm`` (MKL) and oneDNN matmul on a prepacked weight (what kd_pyserini's fast linear
    calls); bf16 the same two in bf16; int8 fbgemm's ``quantized::linear_dynamic`` (activations quantised per call,
    what the int8 path calls) and ``torch._int_mm`` (int8 x int8 -> int32, no quantisation). A kernel that fails
    here is recorded with its error instead of a rate. The best of each precision is taken as its ceiling
    (best of a few calls: on a busy machine that is closer to the cores' rate than a mean).
    """
    import torch

    torch.manual_seed(0)
    flops = 2.0 * m * k * n
    x = torch.randn(m, k)
    w = torch.randn(n, k) * 0.05
    kernels: dict[str, dict[str, Any]] = {"fp32": {}, "bf16": {}, "int8": {}}

    def attempt(prec: str, name: str, make: Callable[[], Callable[[], Any]]) -> None:
        try:
            kernels[prec][name] = round(_rate(make(), flops, seconds), 1)
        except Exception as e:  # noqa: BLE001  (a kernel this build/CPU lacks is a finding, not a crash)
            kernels[prec][name] = f"error: {type(e).__name__}: {str(e)[:120]}"

    def mm(dtype: torch.dtype) -> Callable[[], Any]:
        a, b = x.to(dtype), w.t().contiguous().to(dtype)
        return lambda: torch.mm(a, b)

    def onednn(dtype: torch.dtype) -> Callable[[], Any]:
        a = x.to(dtype)
        packed = torch.ops.mkldnn._reorder_linear_weight(w.to(dtype).contiguous(), None)
        return lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")

    def fbgemm_dynamic() -> Callable[[], Any]:
        import warnings

        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        torch.backends.quantized.engine = "fbgemm"
        qw = torch.quantize_per_channel(w, w.abs().amax(1) / 127, torch.zeros(n, dtype=torch.long), 0, torch.qint8)
        packed = torch.ops.quantized.linear_prepack(qw, None)
        return lambda: torch.ops.quantized.linear_dynamic(x, packed, False)

    def int_mm() -> Callable[[], Any]:
        a = torch.randint(-127, 127, (m, k), dtype=torch.int8)
        b = torch.randint(-127, 127, (k, n), dtype=torch.int8)
        return lambda: torch._int_mm(a, b)

    with torch.inference_mode():
        attempt("fp32", "mkl mm", lambda: mm(torch.float32))
        attempt("fp32", "onednn prepacked", lambda: onednn(torch.float32))
        attempt("bf16", "mm", lambda: mm(torch.bfloat16))
        attempt("bf16", "onednn prepacked", lambda: onednn(torch.bfloat16))
        attempt("int8", "fbgemm linear_dynamic", fbgemm_dynamic)
        attempt("int8", "_int_mm", int_mm)
    best = {p: max((v for v in ks.values() if isinstance(v, float)), default=None) for p, ks in kernels.items()}
    return {"shape": [m, k, n], "gflops": best, "kernels": kernels, "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------------------------------ FLOPs

def _arch(model_dir: str | Path) -> tuple[int, int, int]:
    """(layers, hidden, intermediate) from a BERT/DistilBERT ``config.json``."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    layers = cfg.get("n_layers", cfg.get("num_hidden_layers"))
    dim = cfg.get("dim", cfg.get("hidden_size"))
    hidden = cfg.get("hidden_dim", cfg.get("intermediate_size"))
    return int(layers), int(dim), int(hidden)


def encoder_flops(model_dir: str | Path, lengths: Iterable[int]) -> float:
    """FLOPs (2 per multiply-add) of one forward over sequences of these token lengths, unpadded.

    Per layer and sequence of ``L`` tokens: ``L * (4 d^2 + 2 d h)`` multiply-adds in the linear layers (Q, K, V,
    output; the feed-forward pair) plus ``2 L^2 d`` in attention (scores and weighted sum). Layer norms, softmax,
    GELU and embeddings are left out (under 2 % here). TAS-B architecture, 82 tokens: 7.1 GFLOP.
    """
    layers, d, h = _arch(model_dir)
    total = 0
    for length in lengths:
        total += layers * (length * (4 * d * d + 2 * d * h) + 2 * length * length * d)
    return 2.0 * total


def useful_gflops(items_per_s: float | None, flops_per_item: float) -> float | None:
    """GFLOP/s of useful work (unpadded tokens) at this rate."""
    return None if not items_per_s else items_per_s * flops_per_item / 1e9


def best_ceilings(measurements: Iterable[dict[str, Any]]) -> dict[str, float | None]:
    """Per precision, the highest GFLOP/s of several :func:`measure_ceilings` results (on a shared machine the load
    changes during a run: the ceiling is the best the cores gave at any point)."""
    best: dict[str, float | None] = {}
    for m in measurements:
        for p, v in (m.get("gflops") or {}).items():
            if v is not None and (best.get(p) is None or v > best[p]):
                best[p] = v
            best.setdefault(p, None)
    return best


def fraction_of_ceiling(items_per_s: float | None, flops_per_item: float, ceiling_gflops: float | None) \
        -> float | None:
    """The share of the GEMM ceiling an encoder reaches: useful GFLOP/s divided by the ceiling's GFLOP/s."""
    if not items_per_s or not ceiling_gflops:
        return None
    return items_per_s * flops_per_item / 1e9 / ceiling_gflops
