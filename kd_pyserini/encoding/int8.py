"""int8 CPU inference: torch dynamic quantisation of the ``nn.Linear`` layers, with SmoothQuant-style smoothing.

:func:`quantize_int8` smooths each linear layer from activation ranges measured on a few built-in texts
(:data:`CALIBRATION_TEXTS`), quantises weights per output channel, and always quantises activations to all 8 bits
(:class:`_Int8Linear`). Which weight range is safe depends on the CPU's int8 kernels, measured by a probe
(:func:`int8_full_range`), never guessed from a CPU name:

* kernels that accumulate ``u8 * s8`` in int32 (VNNI, AMX): 8-bit weights;
* kernels that add pairs of ``u8 * s8`` products in int16 with saturation (AVX2's ``vpmaddubsw``): 7-bit weights
  (``[-64, 63]``, so that ``2 * 255 * 64 < 2**15`` and no sum saturates). torch's own answer there is 7-bit
  *activations* (``reduce_range``), which loses more.

The layers that reduce the width (the feed-forward block's down-projection, which reads GELU outputs: the widest
activation ranges, badly served by one scale per tensor) stay in fp32. Measured on all-MiniLM-L6-v2 (the 12 test
queries; DL19's BM25 top 100 re-ranked with fp32 passages, nDCG@10 0.6424 with fp32 queries):

=========================================  ===========  ==================
recipe                                     min cosine   nDCG@10 - fp32's
=========================================  ===========  ==================
7-bit activations (torch's AVX2 default)   0.985        --
all linears, 8-bit weights (VNNI)          0.9966       +0.0035
all linears, 7-bit weights (AVX2)          0.9931       -0.0002
down-projection fp32, 8-bit weights        0.9995       -0.0013
down-projection fp32, 7-bit weights        0.9986       -0.0003
=========================================  ===========  ==================
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from kd_pyserini.encoding.fast_linear import _FastLinear, use_fast_linear

__all__ = ["CALIBRATION_TEXTS", "int8_full_range", "int8_recipe", "quantize_int8", "reduces_width"]

log = logging.getLogger(__name__)


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


def reduces_width(linear: torch.nn.Linear) -> bool:
    """The default :func:`quantize_int8` keeps in fp32: linears with more inputs than outputs (the feed-forward
    down-projection of BERT / DistilBERT / MiniLM)."""
    return linear.in_features > linear.out_features


def quantize_int8(model: torch.nn.Module, tokenizer: Any | None = None,
                  calibration: Sequence[str] | None = None, alpha: float = 0.65,
                  seven_bit_weights: bool | None = None,
                  keep_fp32: Callable[[torch.nn.Linear], bool] | None = reduces_width) -> torch.nn.Module:
    """``model`` with its ``nn.Linear`` layers dynamically quantised to int8 (CPU inference only).

    Weights are quantised per output channel, to 8 bits where the CPU's int8 kernels accumulate in int32 and to
    7 bits where they would saturate (:func:`int8_full_range`); activations are quantised per call, per tensor, to
    all 8 bits (``torch.ao`` dynamic quantisation, fbgemm/x86 kernels; torch's default is 7-bit activations). With a
    ``tokenizer``, each layer is first smoothed (SmoothQuant, migration strength ``alpha``) from activation ranges
    measured on ``calibration`` (default :data:`CALIBRATION_TEXTS`). On all-MiniLM-L6-v2 (DL19+DL20 queries), torch's
    default recipe (per-tensor weights, 7-bit activations) gives query cosines to fp32 down to 0.91; per-channel
    weights + 8-bit activations 0.990; + smoothing (alpha 0.65) 0.997. The model is modified in place and returned;
    ``int8_recipe(model)`` says which weight range it got.

    Args:
        seven_bit_weights: ``None`` (default) decides by the probe; ``True``/``False`` force a weight range (tests
            use ``True`` to compare the AVX2 recipe across machines).
        keep_fp32: which ``nn.Linear`` layers stay in fp32 (oneDNN fast linear where available); default
            :func:`reduces_width`; ``None`` quantises them all.
    """
    try:
        from torch.ao.quantization import QConfig, default_dynamic_quant_observer, quantize_dynamic
        from torch.ao.quantization.observer import PerChannelMinMaxObserver
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
                   for name, child in parent.named_children()
                   if child in ranges and not (keep_fp32 is not None and keep_fp32(child))]
        with torch.no_grad():
            for parent, name, child in parents:
                w = child.weight
                act = ranges[child].clamp(min=1e-5)
                wmax = w.abs().amax(0).float().clamp(min=1e-5)
                scale = (act.pow(alpha) / wmax.pow(1 - alpha)).clamp(min=1e-5)
                w.mul_(scale.to(w.dtype))
                setattr(parent, name, _Smoothed(child, (1.0 / scale).to(w.dtype)))
    if seven_bit_weights is None:
        seven_bit_weights = not int8_full_range()
    qmin, qmax = (-64, 63) if seven_bit_weights else (-128, 127)
    qconfig = QConfig(activation=default_dynamic_quant_observer,
                      weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                                quant_min=qmin, quant_max=qmax))
    names = {name: qconfig for name, m in model.named_modules()
             if type(m) is torch.nn.Linear and not (keep_fp32 is not None and keep_fp32(m))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice and the quantisation notes
        model = quantize_dynamic(model, names, dtype=torch.qint8)
    use_fast_linear(model, torch.float32)  # the layers left in fp32 (only they are plain nn.Linear now)
    import torch.ao.nn.quantized.dynamic as nnqd

    for module in model.modules():
        if type(module) is nnqd.Linear:
            module.__class__ = _Int8Linear
    n_kept = sum(1 for m in model.modules() if type(m) in (torch.nn.Linear, _FastLinear))
    model._kd_int8_recipe = (_RECIPES[bool(seven_bit_weights)]  # type: ignore[assignment]
                             + (f"; {n_kept} width-reducing linears in fp32" if n_kept else ""))
    log.debug("int8: %s", model._kd_int8_recipe)
    return model


_RECIPES = {False: "int8: 8-bit activations, 8-bit per-channel weights (int32-accumulating int8 kernels)",
            True: "int8: 8-bit activations, 7-bit per-channel weights (int16-pair int8 kernels, e.g. AVX2)"}


def int8_recipe(model: torch.nn.Module) -> str | None:
    """The int8 recipe :func:`quantize_int8` applied to ``model`` (a sentence), or ``None`` for a float model."""
    return getattr(model, "_kd_int8_recipe", None)


@functools.cache
def int8_full_range() -> bool:
    """Whether this process's int8 linear kernels multiply 8-bit activations by 8-bit weights without saturating.

    Measured, not guessed from CPU flags (which fbgemm itself may override, e.g. ``FBGEMM_ENABLE_INSTRUCTIONS``):
    one dynamic int8 linear with activations at 255 and weights at 127, whose exact output is known. Kernels that
    add two ``u8 * s8`` products in int16 (AVX2's ``vpmaddubsw``) saturate at 32767 per pair and return about half.
    """
    try:
        import torch.ao.nn.quantized.dynamic as nnqd

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lin = nnqd.Linear(64, 1, dtype=torch.qint8)
            w = torch.quantize_per_channel(torch.ones(1, 64), torch.tensor([1.0 / 127], dtype=torch.double),
                                           torch.zeros(1, dtype=torch.long), 0, torch.qint8)
            lin.set_weight_bias(w, None)
            x = torch.ones(2, 64)
            x[1] = 0.0  # the activation range is [0, 1]: ones quantise to 255 with zero point 0
            y = torch.ops.quantized.linear_dynamic(x, lin._packed_params._packed_params, reduce_range=False)
        return abs(float(y[0, 0]) - 64.0) < 0.5
    except Exception:  # pragma: no cover  (no quantised engine at all: the safe weight range)
        return False


try:
    from torch.ao.nn.quantized.dynamic import Linear as _DynamicQuantizedLinear

    class _Int8Linear(_DynamicQuantizedLinear):
        """torch's dynamic int8 linear with 8-bit (not torch's 7-bit) activations; the weight range chosen by
        :func:`quantize_int8` keeps the kernels' sums from saturating."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params,
                                                      reduce_range=False).to(x.dtype)
except ImportError:  # pragma: no cover
    _Int8Linear = None  # type: ignore[assignment,misc]
