"""The fused CPU inference forward (kd_pyserini/encoding/fused.py): the same vectors as the Hugging Face forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kd_pyserini.encoding.fast_linear import fast_linear_available
from kd_pyserini.encoding.fused import fused_encoder

TEXTS = ["what is the capital of france", "a much longer passage about the history of the french capital city " * 6,
         "x", "dense retrieval with distilled bert models", "the"]


def _hf(model, tok, texts):
    enc = tok(texts, padding=True, truncation=True, max_length=200, return_tensors="pt")
    with torch.inference_mode():
        return model(**enc).last_hidden_state, enc["input_ids"], enc["attention_mask"]


def _load(path):
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(str(path)).eval(), AutoTokenizer.from_pretrained(str(path))


needs_onednn = pytest.mark.skipif(not fast_linear_available(torch.float32), reason="oneDNN linear unavailable")


@needs_onednn
def test_fused_fp32_equals_hf_distilbert(tiny_distilbert_dir):
    model, tok = _load(tiny_distilbert_dir)
    ref, ids, mask = _hf(model, tok, TEXTS)
    fwd = fused_encoder(model, "fp32")
    assert fwd is not None
    got = fwd(ids, mask)
    real = mask.bool()
    assert torch.allclose(got[real], ref[real], atol=1e-5, rtol=1e-4)  # padding positions are not compared
    cls = fwd(ids, mask, cls_only=True)
    assert cls.shape == (len(TEXTS), 1, ref.shape[-1])
    assert torch.allclose(cls[:, 0], ref[:, 0], atol=1e-5, rtol=1e-4)
    one = tok(["dense retrieval"], return_tensors="pt")  # no padding: no mask at all
    assert torch.allclose(fwd(one["input_ids"], None)[0], _hf(model, tok, ["dense retrieval"])[0][0], atol=1e-5)


@needs_onednn
def test_fused_fp32_equals_hf_bert_minilm(minilm_dir):
    model, tok = _load(minilm_dir)
    ref, ids, mask = _hf(model, tok, TEXTS)
    fwd = fused_encoder(model, "fp32")
    assert fwd is not None
    got = fwd(ids, mask)
    real = mask.bool()
    assert (got[real] - ref[real]).abs().max() < 1e-4


@needs_onednn
def test_fused_repacks_after_weight_change(tiny_distilbert_dir):
    model, tok = _load(tiny_distilbert_dir)
    fwd = fused_encoder(model, "fp32")
    _, ids, mask = _hf(model, tok, TEXTS[:2])
    before = fwd(ids, mask, cls_only=True)
    with torch.no_grad():
        model.transformer.layer[1].ffn.lin2.weight.mul_(3.0)  # in place: a new version, the same storage
    ref = _hf(model, tok, TEXTS[:2])[0]
    after = fwd(ids, mask, cls_only=True)
    assert not torch.allclose(before, after)
    assert torch.allclose(after[:, 0], ref[:, 0], atol=1e-5, rtol=1e-4)


def test_fused_not_taken_where_it_does_not_apply(tiny_distilbert_dir, monkeypatch):
    model, _ = _load(tiny_distilbert_dir)
    assert fused_encoder(model, "int8") is None
    assert fused_encoder(model, "fp16") is None
    monkeypatch.setenv("KD_PYSERINI_FUSED", "0")
    assert fused_encoder(model, "fp32") is None
    monkeypatch.delenv("KD_PYSERINI_FUSED")
    monkeypatch.setenv("KD_PYSERINI_FAST_LINEAR", "0")
    from kd_pyserini.encoding import fast_linear

    monkeypatch.setattr(fast_linear, "_FAST_LINEAR_OK", {})
    assert fused_encoder(model, "fp32") is None
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():  # bf16 would be emulated: the fused bf16 forward is off
        monkeypatch.delenv("KD_PYSERINI_FAST_LINEAR")
        assert fused_encoder(model, "bf16") is None


@needs_onednn
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_text_encoder_fused_vs_unfused_minilm(minilm_dir, monkeypatch, precision):
    """End to end through TextEncoder (mean pooling, normalised): the fused forward against the Hugging Face
    forward at the same precision and against fp32; fp32 to float rounding, bf16 within bf16's own error."""
    from kd_pyserini.encoding.text_encoder import TextEncoder

    if precision == "bf16" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("no native bf16 on this CPU: the fused bf16 forward is not used here")
    fused = TextEncoder("all-minilm-l6-v2", device="cpu", precision=precision)
    assert fused._fused() is not None
    monkeypatch.setenv("KD_PYSERINI_FUSED", "0")
    plain = TextEncoder("all-minilm-l6-v2", device="cpu", precision=precision)
    assert plain._fused() is None
    ref32 = TextEncoder("all-minilm-l6-v2", device="cpu", precision="fp32")
    a, b, r = fused.embed(TEXTS, 128), plain.embed(TEXTS, 128), ref32.embed(TEXTS, 128)
    cos = lambda x, y: (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)  # noqa: E731
    if precision == "fp32":
        assert np.abs(a - b).max() < 1e-5
    else:
        assert cos(a, r).min() >= 0.9999, cos(a, r)
        assert cos(b, r).min() >= 0.9999
    one = fused.embed_one(TEXTS[3], 128)
    assert cos(one[None], a[3:4])[0] > (0.99999 if precision == "fp32" else 0.9999)  # one text vs in a batch


@needs_onednn
def test_tasb_architecture_cls_fused_bf16_fidelity(tmp_path):
    """The TAS-B architecture (6 x 768, CLS): the fused bf16 vectors keep cosine >= 0.9999 with fp32."""
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("no native bf16 on this CPU")
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    model = DistilBertModel(DistilBertConfig(vocab_size=1000, n_layers=2)).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 1000, (6, 90), generator=g)
    mask = torch.ones_like(ids)
    mask[3:, 60:] = 0
    with torch.inference_mode():
        ref = model(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
    got = fused_encoder(model, "bf16")(ids, mask, cls_only=True)[:, 0].float()
    assert torch.nn.functional.cosine_similarity(got, ref).min() >= 0.9999


_AVX2_SCRIPT = r"""
import json, sys, torch
from transformers import AutoModel, AutoTokenizer
from kd_pyserini.encoding.fused import fused_encoder
model = AutoModel.from_pretrained(sys.argv[1]).eval()
tok = AutoTokenizer.from_pretrained(sys.argv[1])
enc = tok(json.loads(sys.argv[2]), padding=True, return_tensors="pt")
with torch.inference_mode():
    ref = model(**enc).last_hidden_state[:, 0]
f32, b16 = fused_encoder(model, "fp32"), fused_encoder(model, "bf16")
got = f32(enc["input_ids"], enc["attention_mask"], cls_only=True)[:, 0]
print(json.dumps({"fp32_max_diff": float((got - ref).abs().max()), "bf16_fused": b16 is not None}))
"""


def test_fused_forward_with_kernels_capped_at_avx2(tiny_distilbert_dir):
    """On an AVX2-only CPU (approximated here: oneDNN/fbgemm/ATen/MKL capped at AVX2 in a child process) the fused
    fp32 forward gives the Hugging Face vectors, and no fused bf16 forward is built (bf16 would be emulated)."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", FBGEMM_ENABLE_INSTRUCTIONS="AVX2", ATEN_CPU_CAPABILITY="avx2",
               MKL_ENABLE_INSTRUCTIONS="AVX2")
    out = subprocess.run([sys.executable, "-c", _AVX2_SCRIPT, str(tiny_distilbert_dir), json.dumps(TEXTS)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["fp32_max_diff"] < 1e-4
    assert got["bf16_fused"] is False


@needs_onednn
def test_fused_forward_ignores_an_enclosing_autocast(tiny_distilbert_dir):
    """The trainer's bf16 autocast around an fp32 teacher: the fused fp32 forward still computes in fp32 (it failed
    with a dtype mismatch before: autocast recast the attention output to bf16)."""
    model, tok = _load(tiny_distilbert_dir)
    ref, ids, mask = _hf(model, tok, TEXTS)
    fwd = fused_encoder(model, "fp32")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fwd(ids, mask, cls_only=True)
    assert got.dtype == torch.float32
    assert torch.allclose(got[:, 0], ref[:, 0], atol=1e-5, rtol=1e-4)


def test_the_choice_is_made_when_the_encoder_is_made(minilm_dir, monkeypatch):
    """KD_PYSERINI_FUSED=0 / KD_PYSERINI_FAST_LINEAR=0 count at construction, as for the linear layers: an encoder made
    with it off stays off after the variable is gone (the benchmark's unfused baselines were silently fused before)."""
    from kd_pyserini.encoding import fast_linear
    from kd_pyserini.encoding.text_encoder import TextEncoder

    for var in ("KD_PYSERINI_FUSED", "KD_PYSERINI_FAST_LINEAR"):
        monkeypatch.setenv(var, "0")
        monkeypatch.setattr(fast_linear, "_FAST_LINEAR_OK", {})
        enc = TextEncoder("all-minilm-l6-v2", device="cpu", precision="fp32")
        monkeypatch.delenv(var)
        monkeypatch.setattr(fast_linear, "_FAST_LINEAR_OK", {})
        enc.embed(TEXTS[:2], 64)
        assert enc._fused() is None, var


@needs_onednn
def test_fused_encoder_pickles_without_its_packed_weights(tiny_distilbert_dir):
    import copy
    import pickle

    model, tok = _load(tiny_distilbert_dir)
    fwd = fused_encoder(model, "fp32")
    ref, ids, mask = _hf(model, tok, TEXTS[:2])
    fwd(ids, mask)
    again = pickle.loads(pickle.dumps(fwd))
    assert torch.allclose(again(ids, mask, cls_only=True)[:, 0], ref[:, 0], atol=1e-5, rtol=1e-4)
    assert copy.deepcopy(fwd)._packed == []


def test_no_fused_forward_for_a_model_in_training_mode(tiny_distilbert_dir):
    model, _ = _load(tiny_distilbert_dir)
    assert fused_encoder(model.train(), "fp32") is None
