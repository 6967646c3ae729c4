"""ColBERT re-ranker (card kind ``late-interaction``): cards, loading, scores equal to the authors' notebook code.

The reference is ``minimal_colbert_usage_example.ipynb`` of github.com/sebastian-hofstaetter/neural-ranking-kd,
re-typed below (``ColBERTConfig`` / ``ColBERT``, unchanged but for formatting). A tiny random ColBERT is built with
those classes on the tiny DistilBERT of conftest and saved in the hub layout (config ``model_type: "ColBERT"``,
``pytorch_model.bin`` with ``bert_model.*`` and ``compressor.*``, ``vocab.txt``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Dict

import numpy as np
import pytest
import torch
from transformers import AutoModel, BertTokenizerFast, PretrainedConfig, PreTrainedModel

from kd_pyserini.cards import (UnknownEncoderError, UnknownRerankerError, get_card, get_cross_encoder_card,
                               get_reranker_card, resolve_any_card)
from kd_pyserini.encoding.hits import rerank_hits
from kd_pyserini.encoding.loading import ModelLoadError
from kd_pyserini.encoding.rerankers import load_reranker

QUERIES = ["what is the transformers library", "how do robots move", "define late interaction"]
PASSAGES = [
    "We are very happy to show you the Transformers library for pre-trained language models. We are helping the "
    "community work together towards the goal of advancing NLP.",
    "Hmm I don't like this new movie about transformers that i got from my local library. Those transformers are "
    "robots?",
    "Late interaction scores a query against a passage token by token after encoding both apart.",
    "Robots move with motors and wheels.",
    "short",
]


# ------------------------------------------------------------------------ the notebook's classes, re-typed

class ColBERTConfig(PretrainedConfig):
    model_type = "ColBERT"
    bert_model: str
    compression_dim: int = 768
    dropout: float = 0.0
    return_vecs: bool = False
    trainable: bool = True


class ColBERT(PreTrainedModel):
    """ColBERT model from: https://arxiv.org/pdf/2004.12832.pdf
    We use a dot-product instead of cosine per term (slightly better)"""

    config_class = ColBERTConfig
    base_model_prefix = "bert_model"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.bert_model = AutoModel.from_pretrained(cfg.bert_model)
        for p in self.bert_model.parameters():
            p.requires_grad = cfg.trainable
        self.compressor = torch.nn.Linear(self.bert_model.config.hidden_size, cfg.compression_dim)

    def forward(self, query: Dict[str, torch.LongTensor], document: Dict[str, torch.LongTensor]):
        query_vecs = self.forward_representation(query)
        document_vecs = self.forward_representation(document)
        score = self.forward_aggregation(query_vecs, document_vecs, query["attention_mask"],
                                         document["attention_mask"])
        return score

    def forward_representation(self, tokens, sequence_type=None) -> torch.Tensor:
        vecs = self.bert_model(**tokens)[0]  # assuming a distilbert model here
        vecs = self.compressor(vecs)
        # if encoding only, zero-out the mask values so we can compress storage
        if sequence_type == "doc_encode" or sequence_type == "query_encode":
            vecs = vecs * tokens["tokens"]["mask"].unsqueeze(-1)
        return vecs

    def forward_aggregation(self, query_vecs, document_vecs, query_mask, document_mask):
        # create initial term-x-term scores (dot-product)
        score = torch.bmm(query_vecs, document_vecs.transpose(2, 1))
        # mask out padding on the doc dimension (mask by -1000, because max should not select those)
        exp_mask = document_mask.bool().unsqueeze(1).expand(-1, score.shape[1], -1)
        score[~exp_mask] = - 10000
        # max pooling over document dimension
        score = score.max(-1).values
        # mask out paddding query values
        score[~(query_mask.bool())] = 0
        # sum over query values
        score = score.sum(-1)
        return score


# ------------------------------------------------------------------------ builders and the reference forward

def tokenizer_of(vocab: Path) -> BertTokenizerFast:
    tok = BertTokenizerFast(str(vocab), do_lower_case=True)  # positional: transformers 5 ignores vocab_file=
    assert len(tok) > 30000, "tokenizer did not load the BERT vocabulary"
    return tok


def build_colbert(out: Path, base_dir: Path, vocab: Path, compression_dim: int = 16, seed: int = 3) -> Path:
    """A tiny random ColBERT saved as the hub checkpoint is: config.json, pytorch_model.bin, vocab.txt."""
    torch.manual_seed(seed)
    model = ColBERT(ColBERTConfig(bert_model=str(base_dir), compression_dim=compression_dim)).eval()
    with torch.no_grad():  # a spread-out compressor, so scores differ clearly between passages
        model.compressor.weight.normal_(0, 0.5)
        model.compressor.bias.normal_(0, 0.1)
    out.mkdir(parents=True, exist_ok=True)
    model.config.architectures = ["ColBERT"]
    model.config.save_pretrained(out)
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    tok = tokenizer_of(vocab)
    tok.save_pretrained(out)
    # the hub folder has vocab.txt and tokenizer_config.json only (transformers 5 saves tokenizer.json instead)
    (out / "tokenizer.json").unlink(missing_ok=True)
    shutil.copy(vocab, out / "vocab.txt")
    return out


def reference_colbert(folder: Path, vocab: Path) -> tuple[ColBERT, BertTokenizerFast]:
    cfg = ColBERTConfig.from_pretrained(str(folder))
    model = ColBERT(cfg).eval()
    model.load_state_dict(torch.load(folder / "pytorch_model.bin", weights_only=True))
    return model, tokenizer_of(vocab)


def notebook_query(tok: BertTokenizerFast, query: str) -> dict[str, torch.Tensor]:
    """The notebook's query input: the tokenizer's ids, then 8 [MASK] (id 103) with attention 1."""
    q = tok(query, return_token_type_ids=False)
    ids, mask = q["input_ids"] + [103] * 8, q["attention_mask"] + [1] * 8
    return {"input_ids": torch.LongTensor(ids).unsqueeze(0), "attention_mask": torch.LongTensor(mask).unsqueeze(0)}


def notebook_passage(tok: BertTokenizerFast, passage: str) -> dict[str, torch.Tensor]:
    return dict(tok(passage, return_tensors="pt", return_token_type_ids=False))


@torch.no_grad()
def reference_scores(model: ColBERT, tok: BertTokenizerFast, queries, passages) -> np.ndarray:
    """One notebook forward per (query, passage) pair, as the notebook calls it."""
    return np.array([[float(model.forward(notebook_query(tok, q), notebook_passage(tok, p)).squeeze(0))
                      for p in passages] for q in queries], dtype=np.float32)


@pytest.fixture(scope="module")
def colbert_dir(tmp_path_factory, tiny_distilbert_dir, bert_vocab) -> Path:
    return build_colbert(tmp_path_factory.mktemp("colbert") / "colbert-hub", tiny_distilbert_dir, bert_vocab)


@pytest.fixture(scope="module")
def colbert_reference(colbert_dir, bert_vocab) -> np.ndarray:
    model, tok = reference_colbert(colbert_dir, bert_vocab)
    return reference_scores(model, tok, QUERIES, PASSAGES)


# ------------------------------------------------------------------------ tests

def test_hub_layout_is_recognised_by_its_config(colbert_dir):
    card = get_reranker_card(str(colbert_dir))
    assert card.kind == "late-interaction" and card.compression_dim == 16
    assert resolve_any_card(str(colbert_dir)).kind == "late-interaction"
    with pytest.raises(UnknownEncoderError, match="late-interaction"):
        get_card(str(colbert_dir))  # never taken for a BERT_Dot
    with pytest.raises(UnknownRerankerError, match="load_reranker"):
        get_cross_encoder_card(str(colbert_dir))
    shipped = get_reranker_card("colbert")
    assert shipped.model_id == "sebastian-hofstaetter/colbert-distilbert-margin_mse-T2-msmarco"
    assert shipped.query_mask_tokens == 8 and shipped.compression_dim == 768 and shipped.published == {}


def test_offline_hub_id_is_one_line_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as e:
        load_reranker("colbert-distilbert-margin-mse", device="cpu")
    msg = str(e.value)
    assert "\n" not in msg and "hf download sebastian-hofstaetter/colbert-distilbert-margin_mse-T2-msmarco" in msg


def test_query_gets_eight_mask_tokens(colbert_dir):
    rr = load_reranker(str(colbert_dir), device="cpu")
    ids = rr.query_tokens(["what is the transformers library"])[0]
    assert ids[-8:] == [103] * 8 and ids[0] == 101 and ids[-9] == 102


def test_fp32_scores_equal_the_notebook_forward(colbert_dir, colbert_reference):
    rr = load_reranker(str(colbert_dir), device="cpu", batch_size=2)
    got = np.stack([rr.score(q, PASSAGES) for q in QUERIES])
    assert colbert_reference.std() > 0.1  # well-spread scores
    np.testing.assert_allclose(got, colbert_reference, rtol=1e-5, atol=1e-5)
    # zipped pairs, repeated texts and another batch size give the same numbers
    pairs = [(i, j) for i in range(len(QUERIES)) for j in range(len(PASSAGES))][::-1]
    rr2 = load_reranker(str(colbert_dir), device="cpu", batch_size=7)
    flat = rr2.score_pairs(QUERIES, PASSAGES, pairs)
    np.testing.assert_allclose(flat, [colbert_reference[i, j] for i, j in pairs], rtol=1e-5, atol=1e-5)
    rr2.block_passages = 2  # pairs cut into blocks of 2 passages: same scores
    np.testing.assert_allclose(rr2.score_pairs(QUERIES, PASSAGES, pairs), flat, rtol=1e-6, atol=1e-6)


def test_bf16_autocast_is_close(colbert_dir, colbert_reference):
    """CPU bf16 (8 mantissa bits) through a 2-layer model: within 3% of the largest score."""
    got = np.stack([load_reranker(str(colbert_dir), device="cpu", precision="bf16").score(q, PASSAGES)
                    for q in QUERIES])
    assert np.abs(got - colbert_reference).max() < 0.03 * np.abs(colbert_reference).max()
    with pytest.raises(ValueError, match="fp16"):
        load_reranker(str(colbert_dir), device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="max_length"):
        load_reranker(str(colbert_dir), device="cpu", max_length=64)


def test_rerank_hits_builds_it_through_load_reranker(colbert_dir, colbert_reference):
    hits = [SimpleNamespace(docid=f"d{j}", raw=json.dumps({"id": f"d{j}", "contents": p}), score=0.0)
            for j, p in enumerate(PASSAGES)]
    ranked = rerank_hits(QUERIES[0], hits, str(colbert_dir))
    want = sorted(range(len(PASSAGES)), key=lambda j: -colbert_reference[0, j])
    assert [h.docid for h in ranked] == [f"d{j}" for j in want]
    assert abs(ranked[0].score - colbert_reference[0, want[0]]) < 1e-5


def test_score_matrix_encodes_each_text_once(colbert_dir, colbert_reference):
    rr = load_reranker(str(colbert_dir), device="cpu", batch_size=2)
    rows: list[int] = []
    rr.model.bert_model.register_forward_hook(lambda m, a, kw, out: rows.append(int(kw["input_ids"].shape[0])),
                                              with_kwargs=True)
    mat = rr.score_matrix(QUERIES, PASSAGES)
    np.testing.assert_allclose(mat, colbert_reference, rtol=1e-5, atol=1e-5)
    assert sum(rows) == len(QUERIES) + len(PASSAGES) == rr.encoder_passes  # Q + P passes, not Q x P


def test_cuda_batches_fill_a_token_budget(colbert_dir):
    """Only the batching rule is exercised (no GPU needed): CPU batches are fixed-size, CUDA batches hold up to
    batch_size x (query + [MASK] + passage) max length padded tokens, longest first."""
    rr = load_reranker(str(colbert_dir), device="cpu", batch_size=4)
    lengths = [300, 10, 150, 10, 10, 10, 10, 10, 10, 10]
    assert [len(b) for b in rr._batches(lengths)] == [4, 4, 2]
    rr.device = torch.device("cuda")
    batches = rr._batches(lengths)  # budget 4 * (200 + 30 + 8) = 952 tokens: 952 // 300 = 3 items first
    assert list(batches[0]) == [0, 2, 1] and sum(len(b) for b in batches) == len(lengths)
