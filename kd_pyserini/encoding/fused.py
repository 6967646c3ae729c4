"""A fused CPU inference forward for the BERT-family bi-encoders (DistilBERT: TAS-B, Margin-MSE; BERT: MiniLM).

The Hugging Face forward of a transformer layer runs ~15 small ops (three projections, reshapes, attention, the
output projection, a residual add, layer norm, the feed-forward pair with GELU, another add and layer norm), each
reading and writing the whole ``(batch, length, 768)`` activation; under CPU autocast every linear also casts its
input to bf16 and layer norm casts back to fp32. This forward computes the same function in fewer passes, with
oneDNN's fused matmul primitives on prepacked weights (``torch.ops.mkldnn._linear_pointwise``):

* one ``768 -> 2304`` projection for Q, K and V (one GEMM instead of three);
* the attention output projection and the second feed-forward projection with the **residual add fused** into the
  matmul (oneDNN ``binary add`` post-op);
* the first feed-forward projection with **GELU fused** (oneDNN ``eltwise gelu`` post-op: exact erf GELU, or tanh
  for ``gelu_new``);
* ``torch.nn.functional.scaled_dot_product_attention`` with the padding mask;
* for CLS pooling, the **last layer computes only the CLS position**: K and V of every token are needed, but the
  query, the attention output, both feed-forward projections and the layer norms only for position 0 (same
  arithmetic, about 14 % fewer FLOPs for a 6-layer model);
* at ``bf16`` the residual stream stays in bf16 (layer norm computes in fp32 inside and returns bf16), so nothing is
  cast back and forth between layers: cosine to fp32 >= 0.9999 on the TAS-B architecture and on all-MiniLM-L6-v2
  (``tests/test_fused.py``); at ``fp32`` the vectors equal the Hugging Face forward's to float rounding.

Measured (PERFORMANCE.md, AMX Xeon, 2 cores, side by side on 128 DL-pool passages): bf16 1.55x and fp32 1.2x the
per-op path; a single query at bf16 (each alone in a process) 5.2 vs 8.5 ms.

Only inference on the CPU takes it (``TextEncoder`` at ``fp32``/``bf16``); training, CUDA, int8, ColBERT/PreTTR and
cross-encoders keep their paths; so do models in training mode or off the CPU. The packed weights are rebuilt when a
parameter changes through torch (its version or storage; like every cached kernel, an edit through ``.data`` is not
seen). ``KD_PYSERINI_FUSED=0`` (or ``KD_PYSERINI_FAST_LINEAR=0``) when the encoder is made turns it off.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.nn.functional as F

from kd_pyserini.encoding.fast_linear import fast_linear_available

__all__ = ["FusedEncoder", "fused_encoder", "fused_enabled"]

log = logging.getLogger(__name__)

#: config activation name -> oneDNN post-op (attr, algorithm)
_ACTIVATIONS = {"gelu": ("gelu", "none"), "gelu_new": ("gelu", "tanh"), "gelu_pytorch_tanh": ("gelu", "tanh"),
                "relu": ("relu", "")}


def fused_enabled() -> bool:
    """``False`` when ``KD_PYSERINI_FUSED`` is ``0``/``false``/``no``/``off``."""
    return os.environ.get("KD_PYSERINI_FUSED", "1").lower() not in ("0", "false", "no", "off")


def _layers(model: torch.nn.Module) -> list[dict[str, Any]] | None:
    """Each layer's modules under common names, or ``None`` for an architecture this forward does not know."""
    cfg = model.config
    kind = getattr(cfg, "model_type", "")
    out = []
    if kind == "distilbert":
        act = cfg.activation
        for blk in model.transformer.layer:
            a = blk.attention
            out.append(dict(q=a.q_lin, k=a.k_lin, v=a.v_lin, o=a.out_lin, ln1=blk.sa_layer_norm, f1=blk.ffn.lin1,
                            f2=blk.ffn.lin2, ln2=blk.output_layer_norm, heads=a.n_heads, act=act))
        return out
    if kind == "bert":
        if getattr(cfg, "position_embedding_type", "absolute") not in (None, "absolute") or cfg.is_decoder:
            return None
        for lay in model.encoder.layer:
            s, o = lay.attention.self, lay.attention.output
            out.append(dict(q=s.query, k=s.key, v=s.value, o=o.dense, ln1=o.LayerNorm, f1=lay.intermediate.dense,
                            f2=lay.output.dense, ln2=lay.output.LayerNorm, heads=cfg.num_attention_heads,
                            act=cfg.hidden_act))
        return out
    return None


class FusedEncoder:
    """The fused forward of one model at one dtype (``torch.float32`` or ``torch.bfloat16``); see the module doc."""

    def __init__(self, model: torch.nn.Module, layers: list[dict[str, Any]], dtype: torch.dtype):
        self.model, self.dtype, self._spec = model, dtype, layers
        self._key: tuple | None = None
        self._packed: list[dict[str, Any]] = []

    def _version_key(self) -> tuple:
        return tuple((p.data_ptr(), p._version) for p in self.model.parameters())

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_packed"], state["_key"] = [], None  # packed oneDNN tensors cannot be copied or pickled; rebuilt on use
        return state

    def _pack(self) -> None:
        dt = self.dtype
        self._spec = _layers(self.model) or self._spec  # modules may have been replaced since (a merge, a reload)

        def lin(w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return (torch.ops.mkldnn._reorder_linear_weight(w.detach().to(dt).contiguous(), None),
                    b.detach().to(dt).contiguous())

        packed = []
        for i, L in enumerate(self._spec):
            wqkv = torch.cat([L["q"].weight, L["k"].weight, L["v"].weight]).detach()
            bqkv = torch.cat([L["q"].bias, L["k"].bias, L["v"].bias]).detach()
            d = L["q"].weight.shape[0]
            last = i == len(self._spec) - 1  # only the last layer has a CLS-only form
            packed.append(dict(
                qkv=lin(wqkv, bqkv), **(dict(q=lin(wqkv[:d], bqkv[:d]), kv=lin(wqkv[d:], bqkv[d:])) if last else {}),
                o=lin(L["o"].weight, L["o"].bias), f1=lin(L["f1"].weight, L["f1"].bias),
                f2=lin(L["f2"].weight, L["f2"].bias), act=_ACTIVATIONS[L["act"]], heads=L["heads"],
                ln1=(L["ln1"].weight.detach().to(dt), L["ln1"].bias.detach().to(dt), L["ln1"].eps),
                ln2=(L["ln2"].weight.detach().to(dt), L["ln2"].bias.detach().to(dt), L["ln2"].eps)))
        self._packed = packed
        self._key = self._version_key()

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 cls_only: bool = False) -> torch.Tensor:
        """Hidden states ``(batch, length, dim)`` in ``self.dtype`` (``(batch, 1, dim)``: position 0 only, when
        ``cls_only``); ``attention_mask`` ``None`` = no padding."""
        # an enclosing autocast (the trainer's, around an fp32 teacher) must not recast what this forward computes
        with torch.autocast("cpu", enabled=False):
            return self._forward(input_ids, attention_mask, cls_only)

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cls_only: bool) -> torch.Tensor:
        if self._key != self._version_key():
            self._pack()
        lp = torch.ops.mkldnn._linear_pointwise
        x = self.model.embeddings(input_ids).to(self.dtype)
        B, T, D = x.shape
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :]
        last = len(self._packed) - 1
        for i, L in enumerate(self._packed):
            H = L["heads"]
            dh = D // H
            if cls_only and i == last:
                q = lp(x[:, :1], *L["q"], "none", [], "").view(B, 1, H, dh).transpose(1, 2)
                kv = lp(x, *L["kv"], "none", [], "").view(B, T, 2, H, dh).permute(2, 0, 3, 1, 4)
                k, v = kv[0], kv[1]
                x = x[:, :1]
            else:
                qkv = lp(x, *L["qkv"], "none", [], "").view(B, T, 3, H, dh).permute(2, 0, 3, 1, 4)
                q, k, v = qkv[0], qkv[1], qkv[2]
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            a = a.transpose(1, 2).reshape(B, x.shape[1], D)
            x = F.layer_norm(lp.binary(a, x, *L["o"], "add"), (D,), *L["ln1"])
            h = lp(x, *L["f1"], L["act"][0], [], L["act"][1])
            x = F.layer_norm(lp.binary(h, x, *L["f2"], "add"), (D,), *L["ln2"])
        return x


def fused_encoder(model: torch.nn.Module, precision: str) -> FusedEncoder | None:
    """A :class:`FusedEncoder` for ``model`` at ``precision`` (``fp32``/``bf16``), or ``None`` when this forward does
    not apply: switched off, another precision, an unknown architecture or activation, biases missing, or oneDNN's
    linear unavailable at that dtype (e.g. bf16 on a CPU without native bf16)."""
    if not fused_enabled() or precision not in ("fp32", "bf16"):
        return None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    try:
        layers = _layers(model)
    except AttributeError as e:  # a model class with the right model_type but another layout
        log.debug("no fused forward: %s", e)
        return None
    if not layers or any(L["act"] not in _ACTIVATIONS for L in layers):
        return None
    if any(L[n].bias is None for L in layers for n in ("q", "k", "v", "o", "f1", "f2")):
        return None
    for L in layers:  # the shapes this forward assumes: square Q/K/V/O of the hidden size, heads dividing it
        d = L["o"].weight.shape[0]
        if any(tuple(L[n].weight.shape) != (d, d) for n in ("q", "k", "v", "o")) or d % L["heads"] \
                or L["f1"].weight.shape[1] != d or tuple(L["f2"].weight.shape) != (d, L["f1"].weight.shape[0]):
            return None
    if model.training or any(p.device.type != "cpu" for p in model.parameters()):
        return None
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise") or not fast_linear_available(dtype):
        return None
    return FusedEncoder(model, layers, dtype)
