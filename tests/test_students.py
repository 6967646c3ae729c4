"""ColBERT and PreTTR as Margin-MSE students (Hofstätter et al. 2020, arXiv 2010.02666): built from a base
DistilBERT, scored differentiably the way the notebooks do, trained a few steps, saved in the hub layout and loaded
back as re-rankers with the same scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kd_pyserini.cards import get_reranker_card
from kd_pyserini.encoding.colbert import (append_query_masks, colbert_pair_scores, new_colbert_student,
                                          save_colbert)
from kd_pyserini.encoding.prettr import new_prettr_student, prettr_pair_scores, save_prettr
from kd_pyserini.encoding.rerankers import load_reranker
from kd_pyserini.train.margin_mse import MarginMSELoss

from test_colbert import PASSAGES, QUERIES, notebook_passage, notebook_query, tokenizer_of  # noqa: E402
from test_prettr import PreTTR, PreTTRConfig  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(tok, queries, passages):
    q = tok(list(queries), padding=True, return_tensors="pt", return_token_type_ids=False)
    p = tok(list(passages), padding=True, return_tensors="pt", return_token_type_ids=False)
    qi, qm = append_query_masks(q["input_ids"], q["attention_mask"], tok.mask_token_id, 8)
    return qi, qm, p["input_ids"], p["attention_mask"]


def test_query_masks_go_after_each_rows_last_token(bert_vocab):
    tok = tokenizer_of(bert_vocab)
    qi, qm, _, _ = _batch(tok, QUERIES, PASSAGES[:3])
    for r, q in enumerate(QUERIES):
        want = notebook_query(tok, q)["input_ids"][0]
        assert qi[r, :len(want)].tolist() == want.tolist() and int(qm[r].sum()) == len(want)
        assert qi[r, len(want):].eq(0).all()  # padding stays at the end


def _train(score, model, tok, steps: int = 12, lr: float = 1e-3) -> tuple[float, float]:
    """A few Margin-MSE steps on 3 (query, pos, neg) triples with teacher margins +2, -1, +3."""
    qi, qm, pi, pm = _batch(tok, QUERIES, PASSAGES[:3])
    ni, nm = _batch(tok, QUERIES, PASSAGES[2:5])[2:]
    margins = torch.tensor([2.0, -1.0, 3.0])
    loss_fn, opt = MarginMSELoss(), torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = loss_fn(score(model, qi, qm, pi, pm), score(model, qi, qm, ni, nm), margins)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses[0], losses[-1]


def test_colbert_student_trains_saves_and_reranks_the_same(tiny_distilbert_dir, bert_vocab, tmp_path):
    torch.manual_seed(0)
    tok = tokenizer_of(bert_vocab)
    model = new_colbert_student(tiny_distilbert_dir, compression_dim=16)
    first, last = _train(colbert_pair_scores, model, tok)
    assert last < 0.5 * first  # Margin-MSE goes down: gradients reach the encoder and the compressor
    out = save_colbert(model, tok, tmp_path / "colbert-student", bert_model=str(tiny_distilbert_dir))
    assert get_reranker_card(str(out)).kind == "late-interaction"
    rr = load_reranker(str(out), device="cpu")
    with torch.no_grad():
        qi, qm, pi, pm = _batch(tok, [QUERIES[0]] * len(PASSAGES), PASSAGES)
        want = colbert_pair_scores(model, qi, qm, pi, pm).numpy()
    np.testing.assert_allclose(rr.score(QUERIES[0], PASSAGES), want, rtol=1e-5, atol=1e-5)


def test_prettr_student_is_the_notebooks_batched_forward_and_round_trips(tiny_distilbert_dir, bert_vocab, tmp_path):
    torch.manual_seed(0)
    tok = tokenizer_of(bert_vocab)
    model = new_prettr_student(tiny_distilbert_dir, join_layer_idx=1)
    first, last = _train(prettr_pair_scores, model, tok, steps=30, lr=3e-3)
    assert last < 0.5 * first
    # the notebook's PreTTR fed the same padded batch gives the same scores
    cfg = PreTTRConfig.from_dict(model.config.to_dict())
    cfg.join_layer_idx = 1
    ref = PreTTR(cfg).eval()
    missing, unexpected = ref.load_state_dict(model.state_dict(), strict=False)
    assert not [k for k in missing if "position_ids" not in k] and not unexpected
    qi, qm, pi, pm = _batch(tok, QUERIES, PASSAGES[:3])
    with torch.no_grad():
        got = prettr_pair_scores(model, qi, qm, pi, pm)
        want = ref.forward({"input_ids": qi, "attention_mask": qm}, {"input_ids": pi, "attention_mask": pm})
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    out = save_prettr(model, tok, tmp_path / "prettr-student")
    card = get_reranker_card(str(out))
    assert card.kind == "split" and card.join_layer_idx == 1
    rr = load_reranker(str(out), device="cpu")  # each query at its own width: the notebook's one-query forward
    with torch.no_grad():
        single = [float(ref.forward(notebook_query(tok, QUERIES[1]), notebook_passage(tok, p))) for p in PASSAGES]
    np.testing.assert_allclose(rr.score(QUERIES[1], PASSAGES), single, rtol=1e-5, atol=1e-5)


def test_bert_cat_student_trains_saves_and_reranks_the_same(tiny_distilbert_dir, bert_vocab, tmp_path):
    from kd_pyserini.encoding.cross_encoder import new_bert_cat_student, save_bert_cat

    torch.manual_seed(0)
    tok = tokenizer_of(bert_vocab)
    model = new_bert_cat_student(tiny_distilbert_dir)

    def cat_scores(m, queries, passages):
        enc = tok(list(queries), list(passages), padding=True, truncation=True, max_length=230, return_tensors="pt",
                  return_token_type_ids=False)
        return m(enc["input_ids"], enc["attention_mask"])

    loss_fn, opt = MarginMSELoss(), torch.optim.Adam(model.parameters(), lr=3e-3)
    margins = torch.tensor([2.0, -1.0, 3.0])
    model.train()
    losses = []
    for _ in range(30):
        loss = loss_fn(cat_scores(model, QUERIES, PASSAGES[:3]), cat_scores(model, QUERIES, PASSAGES[2:5]), margins)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    assert losses[-1] < 0.5 * losses[0]
    out = save_bert_cat(model, tok, tmp_path / "cat-student", bert_model=str(tiny_distilbert_dir))
    rr = load_reranker(str(out), device="cpu")
    assert rr.card.kind == "cross-encoder" and rr.card.family == "bert-cat"
    with torch.no_grad():
        want = cat_scores(model, [QUERIES[0]] * len(PASSAGES), PASSAGES).numpy()
    np.testing.assert_allclose(rr.score(QUERIES[0], PASSAGES), want, rtol=1e-5, atol=1e-5)
