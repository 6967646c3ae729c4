"""PreTTR re-ranker (card kind ``split``): cards, loading, scores equal to the authors' notebook code.

The reference is ``minimal_prettr_usage_example.ipynb`` of github.com/sebastian-hofstaetter/neural-ranking-kd,
re-typed below. One adaptation to transformers 5: a ``TransformerBlock`` is now called as ``layer(hidden_states,
attention_mask=...)`` with an additive ``(B, 1, 1, L)`` mask (the notebook's transformers 4 called
``layer(x=..., attn_mask=<2-D mask>, head_mask=None, output_attentions=...)[-1]``); the reference model runs eager
attention with that mask, the re-ranker under test the model's own mask code. Everything else is the notebook's.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from transformers import DistilBertConfig, DistilBertModel
from transformers.models.distilbert.modeling_distilbert import TransformerBlock

from kd_pyserini.cards import UnknownEncoderError, get_card, get_reranker_card, resolve_any_card
from kd_pyserini.encoding.loading import ModelLoadError
from kd_pyserini.encoding.rerankers import load_reranker

from test_colbert import PASSAGES, QUERIES, notebook_passage, notebook_query, tokenizer_of  # noqa: E402


# ------------------------------------------------------------------------ the notebook's classes, re-typed

def _layer(layer_module: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The transformers 5 call of a ``TransformerBlock`` with the notebook's 2-D mask (see the module docstring)."""
    additive = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
    return layer_module(x, attention_mask=additive)


class PreTTRConfig(DistilBertConfig):
    join_layer_idx = 3


class PreTTR(DistilBertModel):
    """PreTTR changes the distilbert model from huggingface to be able to split query and document until a set
    layer, we skipped compression present in the original (MacAvaney et al., arXiv 2004.14255)."""

    config_class = PreTTRConfig

    def __init__(self, config):
        super().__init__(config)
        self.transformer = SplitTransformer(config)
        self.embeddings = PosOffsetEmbeddings(config)
        self._classification_layer = torch.nn.Linear(self.config.hidden_size, 1, bias=False)
        self.join_layer_idx = config.join_layer_idx

    def forward(self, query, document, use_fp16: bool = False) -> torch.Tensor:
        query_input_ids = query["input_ids"]
        query_attention_mask = query["attention_mask"]
        document_input_ids = document["input_ids"][:, 1:]
        document_attention_mask = document["attention_mask"][:, 1:]
        query_embs = self.embeddings(query_input_ids)  # (bs, seq_length, dim)
        document_embs = self.embeddings(document_input_ids, query_input_ids.shape[-1])  # (bs, seq_length, dim)
        tfmr_output = self.transformer(query_embs=query_embs, query_mask=query_attention_mask,
                                       doc_embs=document_embs, doc_mask=document_attention_mask,
                                       join_layer_idx=self.join_layer_idx)
        hidden_state = tfmr_output[0]
        score = self._classification_layer(hidden_state[:, 0, :]).squeeze()
        return score


class PosOffsetEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.dim, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.dim)
        self.LayerNorm = nn.LayerNorm(config.dim, eps=1e-12)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids, pos_offset=0):
        seq_length = input_ids.size(1)
        position_ids = torch.arange(seq_length, dtype=torch.long, device=input_ids.device)  # (max_seq_length)
        position_ids = position_ids.unsqueeze(0).expand_as(input_ids) + pos_offset  # (bs, max_seq_length)
        word_embeddings = self.word_embeddings(input_ids)  # (bs, max_seq_length, dim)
        position_embeddings = self.position_embeddings(position_ids)  # (bs, max_seq_length, dim)
        embeddings = word_embeddings + position_embeddings  # (bs, max_seq_length, dim)
        embeddings = self.LayerNorm(embeddings)  # (bs, max_seq_length, dim)
        embeddings = self.dropout(embeddings)  # (bs, max_seq_length, dim)
        return embeddings


class SplitTransformer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_layers = config.n_layers
        layer = TransformerBlock(config)
        self.layer = nn.ModuleList([copy.deepcopy(layer) for _ in range(config.n_layers)])

    def forward(self, query_embs, query_mask, doc_embs, doc_mask, join_layer_idx, output_attentions=False,
                output_hidden_states=False):
        # query / doc sep.
        hidden_state_q = query_embs
        hidden_state_d = doc_embs
        for layer_module in self.layer[:join_layer_idx]:
            hidden_state_q = _layer(layer_module, hidden_state_q, query_mask)
            hidden_state_d = _layer(layer_module, hidden_state_d, doc_mask)
        # combine
        x = torch.cat([hidden_state_q, hidden_state_d], dim=1)
        attn_mask = torch.cat([query_mask, doc_mask], dim=1)
        # combined
        hidden_state = x
        for layer_module in self.layer[join_layer_idx:]:
            hidden_state = _layer(layer_module, hidden_state, attn_mask)
        return (hidden_state,)


# ------------------------------------------------------------------------ builders and the reference forward

def build_prettr(out: Path, vocab: Path, seed: int = 5, layers: int = 4, join: int = 2) -> Path:
    """A tiny random PreTTR saved as the hub checkpoint is: a DistilBERT config with ``architectures: ["PreTTR"]``
    (``join_layer_idx`` is a class attribute of the notebook's config, so the hub config.json does not hold it:
    the card says 3; this tiny one records its own), ``pytorch_model.bin``, ``vocab.txt``."""
    torch.manual_seed(seed)
    tok = tokenizer_of(vocab)
    cfg = PreTTRConfig(vocab_size=len(tok), dim=32, hidden_dim=64, n_layers=layers, n_heads=2,
                       max_position_embeddings=512)
    cfg.join_layer_idx = join
    model = PreTTR(cfg).eval()
    with torch.no_grad():
        model._classification_layer.weight.normal_(0, 1.0)
    out.mkdir(parents=True, exist_ok=True)
    d = cfg.to_dict()
    d["architectures"] = ["PreTTR"]
    d["join_layer_idx"] = join
    import json

    (out / "config.json").write_text(json.dumps(d, indent=2))
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    tok.save_pretrained(out)
    (out / "tokenizer.json").unlink(missing_ok=True)
    shutil.copy(vocab, out / "vocab.txt")
    return out


def reference_prettr(folder: Path) -> PreTTR:
    import json

    d = json.loads((folder / "config.json").read_text())
    cfg = PreTTRConfig.from_dict({k: v for k, v in d.items() if k != "architectures"})
    cfg.join_layer_idx = d["join_layer_idx"]
    model = PreTTR(cfg).eval()
    missing, unexpected = model.load_state_dict(torch.load(folder / "pytorch_model.bin", weights_only=True),
                                                strict=False)
    assert not [k for k in missing if "position_ids" not in k] and not unexpected
    return model


@torch.no_grad()
def prettr_reference_scores(model: PreTTR, tok, queries, passages, width: int | None = None) -> np.ndarray:
    """The notebook's forward per pair; ``width``: the query padded to that many tokens (masked), as a batch pads."""
    out = []
    for q in queries:
        qi = notebook_query(tok, q)
        if width is not None:
            pad = width - qi["input_ids"].shape[1]
            qi = {k: torch.cat([v, torch.zeros(1, pad, dtype=v.dtype)], 1) for k, v in qi.items()}
        out.append([float(model.forward(qi, notebook_passage(tok, p))) for p in passages])
    return np.array(out, dtype=np.float32)


@pytest.fixture(scope="module")
def prettr_dir(tmp_path_factory, bert_vocab) -> Path:
    return build_prettr(tmp_path_factory.mktemp("prettr") / "prettr-hub", bert_vocab)


@pytest.fixture(scope="module")
def prettr_reference(prettr_dir, bert_vocab) -> np.ndarray:
    return prettr_reference_scores(reference_prettr(prettr_dir), tokenizer_of(bert_vocab), QUERIES, PASSAGES)


# ------------------------------------------------------------------------ tests

def test_hub_layout_is_recognised_by_its_config(prettr_dir, tmp_path):
    card = get_reranker_card(str(prettr_dir))
    assert card.kind == "split" and card.join_layer_idx == 2
    assert resolve_any_card(str(prettr_dir)).kind == "split"
    with pytest.raises(UnknownEncoderError, match="split"):
        get_card(str(prettr_dir))  # a PreTTR folder is a DistilBERT config, but never a BERT_Dot
    shipped = get_reranker_card("prettr")
    assert shipped.join_layer_idx == 3 and shipped.query_mask_tokens == 8
    assert shipped.model_id == "sebastian-hofstaetter/prettr-distilbert-split_at_3-margin_mse-T2-msmarco"
    # the hub config.json has no join_layer_idx (a class attribute): the card's 3 applies
    bare = tmp_path / "bare"
    shutil.copytree(prettr_dir, bare)
    import json

    cfg = json.loads((bare / "config.json").read_text())
    del cfg["join_layer_idx"]
    (bare / "config.json").write_text(json.dumps(cfg))
    assert get_reranker_card(str(bare)).join_layer_idx == 3


def test_offline_hub_id_is_one_line_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as e:
        load_reranker("prettr", device="cpu")
    msg = str(e.value)
    assert "\n" not in msg and \
        "hf download sebastian-hofstaetter/prettr-distilbert-split_at_3-margin_mse-T2-msmarco" in msg


def test_fp32_scores_equal_the_notebook_forward(prettr_dir, prettr_reference):
    rr = load_reranker(str(prettr_dir), device="cpu", batch_size=2)
    got = np.stack([rr.score(q, PASSAGES) for q in QUERIES])
    assert prettr_reference.std() > 0.05
    np.testing.assert_allclose(got, prettr_reference, rtol=1e-5, atol=1e-5)
    pairs = [(i, j) for i in range(len(QUERIES)) for j in range(len(PASSAGES))][::-1]
    flat = load_reranker(str(prettr_dir), device="cpu", batch_size=4).score_pairs(QUERIES, PASSAGES, pairs)
    np.testing.assert_allclose(flat, [prettr_reference[i, j] for i, j in pairs], rtol=1e-5, atol=1e-5)


def test_fixed_query_width_equals_the_notebook_on_a_padded_query(prettr_dir, bert_vocab):
    width = 30 + 8
    ref = prettr_reference_scores(reference_prettr(prettr_dir), tokenizer_of(bert_vocab), QUERIES, PASSAGES, width)
    rr = load_reranker(str(prettr_dir), device="cpu", query_width=width)
    got = np.stack([rr.score(q, PASSAGES) for q in QUERIES])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="shorter than the longest query"):
        load_reranker(str(prettr_dir), device="cpu", query_width=10)


def test_bf16_autocast_is_close(prettr_dir, prettr_reference):
    """CPU bf16 through 4 layers: within 5% of the largest score."""
    rr = load_reranker(str(prettr_dir), device="cpu", precision="bf16")
    got = np.stack([rr.score(q, PASSAGES) for q in QUERIES])
    assert np.abs(got - prettr_reference).max() < 0.05 * np.abs(prettr_reference).max()
