"""int8 CPU inference: torch dynamic quantisation of the ``nn.Linear`` layers, with SmoothQuant-style smoothing.

:func:`quantize_int8` smooths each linear layer from activation ranges measured on a few built-in texts
(:data:`CALIBRATION_TEXTS`), quantises weights per output channel, and uses 8-bit (not 7-bit) activations on CPUs
with VNNI (:class:`_Int8Linear`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from kd_pyserini.encoding.fast_linear import _FastLinear

__all__ = ["CALIBRATION_TEXTS", "quantize_int8"]


#: Texts that calibrate the int8 path's smoothing factors (which input channels of each linear layer carry large
#: activations). The outlier channels of BERT-style models are a property of the weights, not of the text, so a few
#: generic queries and passages find them; the factors are computed once, when the int8 encoder is made.
CALIBRATION_TEXTS = (
    "what is the daily life of thai people",
    "how long does it take to become a registered nurse",
    "causes of high blood pressure in young adults",
    "who founded the roman empire",
    "define photosynthesis",
    "what is the population of canada in 2019",
    "is caffeine safe during pregnancy",
    "how do vaccines train the immune system",
    "The Manhattan Project was a research and development undertaking during World War II that produced the first "
    "nuclear weapons. It was led by the United States with the support of the United Kingdom and Canada.",
    "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make glucose and "
    "oxygen. It takes place mainly in the chloroplasts of leaf cells.",
    "A registered nurse must complete an accredited nursing program, which takes two to four years, and pass the "
    "national licensing examination before practising.",
    "Interest rates on a 30-year fixed mortgage rose to 4.5% in March, the highest level since 2011, according to "
    "figures released on Thursday.",
    "Symptoms of the flu include fever, cough, sore throat, muscle aches and fatigue; most people recover within a "
    "week without treatment.",
    "The Eiffel Tower, completed in 1889 for the World's Fair, is 330 metres tall and was the tallest man-made "
    "structure in the world for 41 years.",
    "Mutations in the BRCA1 gene increase the risk of breast and ovarian cancer; carriers may be offered earlier "
    "and more frequent screening.",
    "To reset your router, hold the reset button for ten seconds until the lights blink, then wait two minutes "
    "for it to restart.",
)


class _Smoothed(torch.nn.Module):
    """``linear(x / s)`` with ``linear``'s weight columns multiplied by ``s``: the same function, with the input's
    large channels scaled down and the weights' scaled up, so per-tensor int8 activations lose less
    (SmoothQuant, Xiao et al. 2023)."""

    def __init__(self, linear: torch.nn.Module, inv_scale: torch.Tensor):
        super().__init__()
        self.linear = linear
        self.register_buffer("inv_scale", inv_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inv_scale)


def _activation_ranges(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str],
                       max_length: int = 256) -> dict[torch.nn.Module, torch.Tensor]:
    """Per input channel, the largest ``|x|`` each ``nn.Linear`` of ``model`` sees on ``texts`` (one text per call:
    no padding)."""
    ranges: dict[torch.nn.Module, torch.Tensor] = {}

    def hook(module: torch.nn.Module, args: tuple) -> None:
        x = args[0].detach().float()
        m = x.abs().reshape(-1, x.shape[-1]).amax(0)
        ranges[module] = m if module not in ranges else torch.maximum(ranges[module], m)

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.inference_mode():
            for text in texts:
                ids = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")["input_ids"]
                model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    return ranges


def quantize_int8(model: torch.nn.Module, tokenizer: Any | None = None,
                  calibration: Sequence[str] | None = None, alpha: float = 0.65) -> torch.nn.Module:
    """``model`` with its ``nn.Linear`` layers dynamically quantised to int8 (CPU inference only).

    Weights are int8 per output channel; activations are quantised per call, per tensor (``torch.ao`` dynamic
    quantisation, fbgemm/x86 kernels), with all 8 bits on CPUs with VNNI (torch's default is 7). With a
    ``tokenizer``, each layer is first smoothed (SmoothQuant, migration strength ``alpha``) from activation ranges
    measured on ``calibration`` (default :data:`CALIBRATION_TEXTS`). On all-MiniLM-L6-v2 (DL19+DL20 queries), torch's
    default recipe (per-tensor weights, 7-bit activations) gives query cosines to fp32 down to 0.91; per-channel
    weights + 8-bit activations 0.990; + smoothing (alpha 0.65) 0.997. The model is modified in place and returned.
    """
    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as e:  # pragma: no cover  (very old or very new torch)
        raise ValueError("precision='int8' needs torch.ao.quantization.quantize_dynamic, which this torch lacks; "
                         "use 'bf16' or 'fp32'") from e
    for module in model.modules():  # quantize_dynamic matches nn.Linear by exact type
        if type(module) is _FastLinear:
            module.__class__ = torch.nn.Linear
            module.__dict__.pop("_kd_cache", None)
    if tokenizer is not None:
        ranges = _activation_ranges(model, tokenizer, list(calibration or CALIBRATION_TEXTS))
        parents = [(parent, name, child) for parent in model.modules()
                   for name, child in parent.named_children() if child in ranges]
        with torch.no_grad():
            for parent, name, child in parents:
                w = child.weight
                act = ranges[child].clamp(min=1e-5)
                wmax = w.abs().amax(0).float().clamp(min=1e-5)
                scale = (act.pow(alpha) / wmax.pow(1 - alpha)).clamp(min=1e-5)
                w.mul_(scale.to(w.dtype))
                setattr(parent, name, _Smoothed(child, (1.0 / scale).to(w.dtype)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice and the quantisation notes
        model = quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    if _full_range_int8():
        import torch.ao.nn.quantized.dynamic as nnqd

        for module in model.modules():
            if type(module) is nnqd.Linear:
                module.__class__ = _Int8Linear
    return model


def _full_range_int8() -> bool:
    """Whether activations may use all 8 bits: x86 kernels with VNNI accumulate u8*s8 in int32 without the int16
    saturation that makes torch default to 7-bit activations (``reduce_range``)."""
    if torch.backends.quantized.engine not in ("x86", "fbgemm"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    except OSError:
        pass
    return False


try:
    from torch.ao.nn.quantized.dynamic import Linear as _DynamicQuantizedLinear

    class _Int8Linear(_DynamicQuantizedLinear):
        """torch's dynamic int8 linear with 8-bit (not 7-bit) activations; used on CPUs with VNNI only."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params,
                                                      reduce_range=False).to(x.dtype)
except ImportError:  # pragma: no cover
    _Int8Linear = None  # type: ignore[assignment,misc]
