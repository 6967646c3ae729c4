"""``--precision auto``: the fastest precision that is faithful on the machine at hand, and why.

Every command that runs a model takes ``--precision auto`` (the default) or an explicit precision. ``auto`` is
resolved once, at the library entry point (an index build, a search, a scoring run, a training run), so that what is
recorded in an index's or a run's provenance and compared on resume is the precision actually used, never "auto".

The rules (measured figures: PERFORMANCE.md, "Fast paths and their fidelity" and the per-CPU tables):

========================  ===========================================  ==========================================
use                       CUDA                                         CPU
========================  ===========================================  ==========================================
``encode`` (passages,     bf16 where the GPU has it, else fp16         bf16 where the CPU has native bf16 units
queries, re-rankers)                                                   (AMX-BF16 or AVX512-BF16): cosine to fp32
                                                                       >= 0.9999, ~1.8x fp32's passages/s; else
                                                                       fp32 (bf16 would be emulated, slower; int8
                                                                       is not faithful enough for passages)
``train`` (the student)   bf16 where the GPU has it, else fp16 (with   bf16 with native bf16 units: 2.2x fp32's
                          a grad scaler)                               triples/s on a quiet AMX CPU (9.14 vs 4.07,
                                                                       fused AdamW), losses within 0.7 % of
                                                                       fp32's; else fp32 (emulated bf16)
``score`` (teacher files) bf16 where the GPU has it, else fp16         fp32: teacher scores become training
                                                                       targets, and bf16's ~3 significant digits
                                                                       can flip the order of close pairs
========================  ===========================================  ==========================================

``KD_PYSERINI_AUTO_PRECISION=fp32`` (or another precision) pins what ``auto`` means, for every command in that
environment (the test suite pins fp32 so that its reference comparisons do not depend on the CPU it lands on).
An explicit ``bf16`` on a CPU without native bf16 runs, emulated, with one warning that gives the slowdown measured
on this CPU (:func:`warn_if_emulated_bf16`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["AUTO", "AUTO_ENV", "USES", "PrecisionChoice", "cpu_isa", "choose_precision", "resolve_precision",
           "bf16_slowdown", "warn_if_emulated_bf16", "resume_hint"]

log = logging.getLogger(__name__)

AUTO = "auto"
#: pins what ``auto`` resolves to (any explicit precision).
AUTO_ENV = "KD_PYSERINI_AUTO_PRECISION"
#: what a model is run for: ``encode`` (vectors, re-ranking), ``train`` (a student), ``score`` (teacher files).
USES = ("encode", "train", "score")
_PINNABLE = ("fp32", "bf16", "fp16", "int8")
#: the variables that cap the kernels' instruction sets (set before torch starts): a cap at AVX2 hides bf16 units.
_CAPS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision to run and why (``requested`` is what the user asked for, e.g. ``auto``)."""

    precision: str
    reason: str
    requested: str


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_isa(flags: Iterable[str] | None = None, env: Mapping[str, str] | None = None) -> dict[str, bool]:
    """The CPU's instruction sets that matter for precision: ``avx2``, ``avx512``, ``vnni``, ``amx``, ``bf16_native``
    (AMX-BF16 or AVX512-BF16), from ``/proc/cpuinfo`` (or ``flags``), after any cap at AVX2 set in the environment
    (``ONEDNN_MAX_CPU_ISA`` / ``ATEN_CPU_CAPABILITY``), which the kernels obey."""
    fl = set(flags) if flags is not None else _cpu_flags()
    env = os.environ if env is None else env
    isa = {"avx2": "avx2" in fl, "avx512": "avx512f" in fl, "vnni": bool({"avx512_vnni", "avx_vnni"} & fl),
           "amx": bool({"amx_bf16", "amx_int8"} & fl), "bf16_native": bool({"avx512_bf16", "amx_bf16"} & fl)}
    if any(str(env.get(k, "")).upper().startswith("AVX2") for k in _CAPS):
        isa.update(avx512=False, amx=False, bf16_native=False, vnni=isa["vnni"] and "avx_vnni" in fl)
    if flags is None and isa["bf16_native"] and not _onednn_bf16():  # other caps (e.g. ONEDNN_MAX_CPU_ISA=AVX512_CORE)
        isa.update(bf16_native=False, amx=False)
    return isa


def _onednn_bf16() -> bool:
    """Whether torch's oneDNN runs bf16 natively here (it obeys every ISA cap, not only AVX2); ``True`` when torch
    cannot say."""
    try:
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (ImportError, AttributeError, RuntimeError):
        return True


def _bf16_units(isa: Mapping[str, bool]) -> str:
    return "AMX-BF16" if isa.get("amx") else "AVX512-BF16"


def choose_precision(requested: str, device_type: str, use: str = "encode", *, cuda_bf16: bool | None = None,
                     isa: Mapping[str, bool] | None = None, env: Mapping[str, str] | None = None
                     ) -> PrecisionChoice:
    """The precision to run for ``requested`` (``auto`` or an explicit one, returned as is) on a device type.

    Args:
        requested: ``auto`` or a precision.
        device_type: ``"cpu"`` or ``"cuda"`` (a ``torch.device``'s ``type``).
        use: ``encode``, ``train`` or ``score`` (see the module docstring).
        cuda_bf16: whether the GPU has bf16 (default: ``torch.cuda.is_bf16_supported()``).
        isa: the CPU's instruction sets (default: :func:`cpu_isa`).
        env: the environment (default: ``os.environ``), for :data:`AUTO_ENV`.

    Raises:
        ValueError: an unknown ``use``, or :data:`AUTO_ENV` set to something that is not a precision.
    """
    if use not in USES:
        raise ValueError(f"use {use!r} is not one of {', '.join(USES)}")
    if requested != AUTO:
        return PrecisionChoice(requested, "given explicitly", requested)
    env = os.environ if env is None else env
    pinned = str(env.get(AUTO_ENV, "")).strip().lower()
    if pinned:
        if pinned not in _PINNABLE:
            raise ValueError(f"{AUTO_ENV}={env.get(AUTO_ENV)!r} is not a precision; set it to one of "
                             f"{', '.join(_PINNABLE)} or unset it")
        if pinned == "int8" and (use != "encode" or device_type != "cpu"):
            raise ValueError(f"{AUTO_ENV}=int8 cannot serve --precision auto for {use} on {device_type}: int8 is for "
                             "CPU query/passage encoding only; pin fp32 or bf16, or unset it")
        if pinned == "fp16" and device_type != "cuda":
            raise ValueError(f"{AUTO_ENV}=fp16 cannot serve --precision auto on {device_type}: fp16 needs a CUDA "
                             "device; pin fp32 or bf16, or unset it")
        return PrecisionChoice(pinned, f"{AUTO_ENV}={pinned}", AUTO)
    if device_type == "cuda":
        if cuda_bf16 is None:
            import torch

            cuda_bf16 = bool(torch.cuda.is_bf16_supported())
        if cuda_bf16:
            return PrecisionChoice("bf16", "CUDA with bf16: half the memory traffic of fp32, fp32's exponent range",
                                   AUTO)
        return PrecisionChoice("fp16", "CUDA without bf16: fp16" + (" with a grad scaler" if use == "train" else ""),
                               AUTO)
    isa = cpu_isa(env=env) if isa is None else isa
    if use == "train":
        if isa.get("bf16_native"):
            return PrecisionChoice("bf16", f"CPU training with native bf16 ({_bf16_units(isa)}): bf16 autocast, "
                                           "2.2x fp32's triples/s measured on AMX, fp32 master weights", AUTO)
        return PrecisionChoice("fp32", "CPU training without native bf16: bf16 would be emulated and slower", AUTO)
    if use == "score":
        return PrecisionChoice("fp32", "CPU teacher scores: they become training targets, and bf16 can flip the "
                                       "order of close pairs", AUTO)
    if isa.get("bf16_native"):
        return PrecisionChoice("bf16", f"this CPU has native bf16 ({_bf16_units(isa)}): bf16 autocast, cosine to "
                                       "fp32 >= 0.9999 (PERFORMANCE.md)", AUTO)
    return PrecisionChoice("fp32", "this CPU has no native bf16 (bf16 would be emulated and slower; int8 is not "
                                   "faithful enough for passages)", AUTO)


def resolve_precision(requested: str, device: object = None, use: str = "encode") -> PrecisionChoice:
    """:func:`choose_precision` for a device (``None``: CUDA when present, as the encoders pick it); logs the choice
    when it was ``auto``, and warns once when an explicit bf16 will be emulated (:func:`warn_if_emulated_bf16`)."""
    import torch

    if device in (None, ""):
        dtype = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        dtype = torch.device(str(device)).type
    choice = choose_precision(requested, dtype, use)
    if requested == AUTO:
        log.info("--precision auto: %s (%s)", choice.precision, choice.reason)
    elif choice.precision == "bf16" and dtype == "cpu":
        warn_if_emulated_bf16()
    return choice


def resume_hint(saved: object, now: object) -> str:
    """A sentence for a resume/merge refusal whose only cause may be ``--precision auto``'s choice: the finished work
    was made at ``saved``, this run would use ``now``."""
    if saved == now or saved in (None, "") or now in (None, ""):
        return ""
    return (f" (the finished part was made at precision {saved}, this run would use {now}: pass --precision {saved} "
            "to resume it)")


_SLOWDOWN: list[float] = []
_WARNED: list[bool] = []


def bf16_slowdown(seconds: float = 0.2) -> float:
    """How many times slower a bf16-autocast linear layer (768 -> 3072, 256 rows) runs than fp32 on this CPU, timed
    for about ``seconds`` each (cached for the process)."""
    if _SLOWDOWN:
        return _SLOWDOWN[0]
    import torch

    lin = torch.nn.Linear(768, 3072)
    x = torch.randn(256, 768)

    def rate(bf16: bool) -> float:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            lin(x)  # warm-up (oneDNN's first call)
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                lin(x)
                n += 1
        return n / (time.perf_counter() - t0)

    _SLOWDOWN.append(rate(False) / max(rate(True), 1e-9))
    return _SLOWDOWN[0]


def warn_if_emulated_bf16(isa: Mapping[str, bool] | None = None) -> bool:
    """Warn once per process when bf16 runs on a CPU without native bf16, with the slowdown measured here. Returns
    whether it warned now."""
    isa = cpu_isa() if isa is None else isa
    if isa.get("bf16_native") or _WARNED:
        return False
    _WARNED.append(True)
    log.warning("--precision bf16 on a CPU without native bf16 (no AMX-BF16 / AVX512-BF16): emulated, %.1fx slower "
                "than fp32 in a linear layer measured here; --precision auto (or fp32) is faster on this CPU",
                bf16_slowdown())
    return True
