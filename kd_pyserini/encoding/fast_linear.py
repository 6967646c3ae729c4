"""oneDNN's prepacked matmul for the ``nn.Linear`` layers of a CPU model (``KD_PYSERINI_FAST_LINEAR=0`` turns it off).

The default CPU ``nn.Linear`` calls the BLAS sgemm; oneDNN's matmul on a prepacked weight is 2-3x faster on AMD CPUs
with the same fp32 results up to float rounding. :func:`use_fast_linear` switches a model's layers in place.
"""

from __future__ import annotations

import logging
import os

import torch

__all__ = ["fast_linear_available", "use_fast_linear"]

log = logging.getLogger(__name__)


class _FastLinear(torch.nn.Linear):
    """An ``nn.Linear`` whose CPU inference forward is oneDNN's matmul on a prepacked weight.

    The default CPU ``nn.Linear`` calls the BLAS sgemm (MKL), which on AMD CPUs reaches under half of what oneDNN's
    matmul reaches on the same cores. Only the forward without autograd takes the fast route; with gradients (training)
    or on another device it is the ordinary ``F.linear``. The packed weight is rebuilt when the parameter is changed
    in place or replaced (``load_state_dict``, an optimiser step), and is left out of copies and pickles.
    ``_kd_dtype`` is ``torch.bfloat16`` for the bf16 path (weights cast once, input cast at each call, bf16 output:
    what CPU autocast computes).
    """

    _kd_dtype: torch.dtype = torch.float32

    def _kd_pack(self) -> tuple:
        w = self.weight.detach()
        b = None if self.bias is None else self.bias.detach()
        if self._kd_dtype != w.dtype:
            w = w.to(self._kd_dtype)
            b = None if b is None else b.to(self._kd_dtype)
        packed = torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), None) if _PACK_WEIGHTS else w.contiguous()
        key = (self.weight.data_ptr(), self.weight._version,
               None if self.bias is None else (self.bias.data_ptr(), self.bias._version))
        self.__dict__["_kd_cache"] = (key, packed, b)
        return self.__dict__["_kd_cache"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return torch.nn.functional.linear(x, self.weight, self.bias)
        cache = self.__dict__.get("_kd_cache")
        key = (self.weight.data_ptr(), self.weight._version,
               None if self.bias is None else (self.bias.data_ptr(), self.bias._version))
        if cache is None or cache[0] != key:
            cache = self._kd_pack()
        if x.dtype != self._kd_dtype:
            x = x.to(self._kd_dtype)
        return torch.ops.mkldnn._linear_pointwise(x, cache[1], cache[2], "none", [], "")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_kd_cache", None)  # packed oneDNN tensors cannot be copied or pickled; rebuilt on first use
        return state


_PACK_WEIGHTS = True
_FAST_LINEAR_OK: dict[torch.dtype, bool] = {}


def fast_linear_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether this torch build runs oneDNN linear on CPU at ``dtype`` with the same results as ``F.linear``.

    Checked once per dtype on a small random layer; ``KD_PYSERINI_FAST_LINEAR=0`` forces ``False``. bf16 also needs
    a CPU with native bf16 (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) to be worth it.
    """
    if os.environ.get("KD_PYSERINI_FAST_LINEAR", "1").lower() in ("0", "false", "no", "off"):
        return False
    if dtype not in _FAST_LINEAR_OK:
        ok = False
        try:
            if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
                if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
                    raise RuntimeError("no native bf16")
                g = torch.Generator().manual_seed(0)
                x, w, b = (torch.randn(5, 48, generator=g), torch.randn(24, 48, generator=g),
                           torch.randn(24, generator=g))
                with torch.inference_mode():
                    ref = torch.nn.functional.linear(x.to(dtype), w.to(dtype), b.to(dtype)).float()
                    pw = torch.ops.mkldnn._reorder_linear_weight(w.to(dtype), None) if _PACK_WEIGHTS else w.to(dtype)
                    got = torch.ops.mkldnn._linear_pointwise(x.to(dtype), pw, b.to(dtype), "none", [], "").float()
                tol = 1e-4 if dtype == torch.float32 else 0.1
                ok = got.shape == ref.shape and bool((got - ref).abs().max() <= tol * ref.abs().max())
        except Exception as e:  # noqa: BLE001  (any failure: keep the ordinary path)
            log.debug("oneDNN linear unavailable for %s: %s", dtype, e)
            ok = False
        _FAST_LINEAR_OK[dtype] = ok
    return _FAST_LINEAR_OK[dtype]


def use_fast_linear(model: torch.nn.Module, dtype: torch.dtype = torch.float32) -> int:
    """Switch the plain ``nn.Linear`` layers of ``model`` to :class:`_FastLinear` (in place); returns how many.

    Parameters and ``state_dict`` are untouched; nothing happens when :func:`fast_linear_available` says no.
    """
    if not fast_linear_available(dtype):
        return 0
    n = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear or type(module) is _FastLinear:
            module.__class__ = _FastLinear
            module._kd_dtype = dtype
            module.__dict__.pop("_kd_cache", None)
            n += 1
    return n
