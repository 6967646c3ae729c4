"""TAS-B pieces of kd_pyserini.train: the in-batch teacher, the exact in-batch term, batch texts, and students cut
from a checkpoint's layers (issue 12, items 2 and 4).

The in-batch term is checked against plain Python loops over the documented rule, and (without duplicate queries)
against matchmaker's own tensor form; a bi-encoder teacher's scores against a plain Hugging Face forward pass with
the card's pooling and similarity; a cross-encoder teacher's against ``logits[:, 0]`` of every (query, passage) pair.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kd_pyserini.train.batches import Collator, Triple
from kd_pyserini.train.in_batch_margin_mse import (InBatchMarginMSELoss, in_batch_pair_masks,
                                                   in_batch_teacher_margin_mse)
from kd_pyserini.train.in_batch_teacher import (InBatchTeacherError, default_teacher_device, in_batch_teacher_key,
                                                load_in_batch_teacher)
from kd_pyserini.train.model import BertDotStudent, StudentLayersError, keep_layers, resolve_student_card
from kd_pyserini.train.objective import batch_loss
from kd_pyserini.train.teacher_files import load_teacher

JSONL = "kd-samples/msmarco-10q-teacher-scores.jsonl"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def triples(data_dir: Path) -> list[Triple]:
    """Real MS MARCO texts with a duplicate query (triples 0 and 1: same query, same positive) and a passage that is
    one query's positive and another query's negative (triple 4's negative = triple 2's positive)."""
    data = load_teacher(data_dir / JSONL)
    t = [data[0], data[1], data[25], data[50], data[75]]
    t[4] = Triple(t[4].query, t[4].pos, t[2].pos, t[4].pos_score, 80.0)
    assert t[0].query == t[1].query and t[0].pos == t[1].pos and len({x.query for x in t}) == 4
    return t


@pytest.fixture(scope="module")
def minilm_teacher(minilm_dir):
    return load_in_batch_teacher(str(minilm_dir), device="cpu", precision="fp32", scale=10.0)


# ------------------------------------------------------------------------------------------------------------------
# batch texts
# ------------------------------------------------------------------------------------------------------------------

def test_collator_texts_line_up_with_indices(tiny_distilbert_dir, triples):
    _, tok = BertDotStudent.from_card(resolve_student_card(str(tiny_distilbert_dir)))
    for buckets in (1, 3):
        batch = Collator(tok, 30, 200, passage_buckets=buckets)(triples)
        assert isinstance(batch.q_texts, tuple) and isinstance(batch.p_texts, tuple)
        assert len(batch.q_texts) == batch.q_ids.shape[0] == 4
        assert len(batch.p_texts) == sum(x.shape[0] for x in batch.p_ids) == len({*(t.pos for t in triples),
                                                                                    *(t.neg for t in triples)})
        for i, t in enumerate(triples):
            assert batch.q_texts[int(batch.q_index[i])] == t.query
            assert batch.p_texts[int(batch.pos_index[i])] == t.pos
            assert batch.p_texts[int(batch.neg_index[i])] == t.neg
        # row r of the (bucketed, length-sorted) passage tensors is the tokenised p_texts[r]
        flat = [row[m.bool()].tolist() for ids, mask in zip(batch.p_ids, batch.p_mask) for row, m in zip(ids, mask)]
        assert flat == [tok(p, truncation=True, max_length=200)["input_ids"] for p in batch.p_texts]
        moved = batch.to("cpu")
        assert moved.q_texts == batch.q_texts and moved.p_texts == batch.p_texts


# ------------------------------------------------------------------------------------------------------------------
# the in-batch term
# ------------------------------------------------------------------------------------------------------------------

def _hand_in_batch(S, T, q, pos, neg) -> float:
    """The documented rule with plain Python loops: j has another query text than i, and its passage is not a
    positive of q_i's query text; 0.5 * (mean over p_j + mean over n_j)."""
    positives = {}
    for qi, pi in zip(q, pos):
        positives.setdefault(qi, set()).add(pi)
    means = []
    for cols in (pos, neg):
        errs = []
        for i in range(len(q)):
            for j in range(len(q)):
                if q[j] == q[i] or cols[j] in positives[q[i]]:
                    continue
                s_margin = S[i][pos[i]] - S[i][cols[j]]
                t_margin = T[i][pos[i]] - T[i][cols[j]]
                errs.append((s_margin - t_margin) ** 2)
        means.append(sum(errs) / len(errs) if errs else 0.0)
    return 0.5 * (means[0] + means[1])


def test_in_batch_term_with_teacher_equals_hand_computation():
    # 5 triples over 4 query texts and 6 passages: triples 0 and 2 share query 0 and negative 1; passage 0 is the
    # positive of query 0 and of query 2; triple 4's negative (2) is query 1's positive.
    q, pos, neg = [0, 1, 0, 2, 3], [0, 2, 4, 0, 5], [1, 3, 1, 3, 2]
    g = torch.Generator().manual_seed(0)
    S, T = torch.randn(5, 6, generator=g) * 3, torch.randn(5, 6, generator=g) * 3
    qi, pi, ni = torch.tensor(q), torch.tensor(pos), torch.tensor(neg)
    want = _hand_in_batch(S.tolist(), T.tolist(), q, pos, neg)
    got = in_batch_teacher_margin_mse(S, T, qi, pi, ni)
    assert got.item() == pytest.approx(want, rel=1e-6)
    assert InBatchMarginMSELoss()(S, qi, pi, ni, torch.zeros(5), teacher_scores=T).item() == pytest.approx(want,
                                                                                                          rel=1e-6)
    j_p, j_n = in_batch_pair_masks(qi, pi, ni, 6)
    assert not j_p[0, 2] and not j_n[0, 2]  # same query text: not an in-batch pair
    assert not j_p[0, 3] and not j_p[3, 0]  # passage 0 is a positive of both queries 0 and 2
    assert not j_n[1, 4] and j_p[4, 1]  # n_4 = q_1's positive; p_1 is a fine negative for q_3
    assert j_n[0, 1] and j_n[2, 4]  # n_j == a negative of q_i's own: kept
    # the teacher scores are the target: a student equal to the teacher has no in-batch loss
    assert in_batch_teacher_margin_mse(T, T, qi, pi, ni).item() == 0.0
    # a batch of one query has no in-batch pairs: 0, with a gradient path
    S1 = S[:2].clone().requires_grad_(True)
    zero = in_batch_teacher_margin_mse(S1, T[:2], torch.tensor([0, 0]), torch.tensor([0, 0]), torch.tensor([1, 3]))
    assert zero.item() == 0.0 and zero.requires_grad


def test_without_duplicates_it_is_matchmakers_in_batch_loss():
    """matchmaker/train.py (in_batch_negatives with a dynamic teacher): ib_select = all j != i, MSMarginLoss on
    (s_ii, s_ij, T_ii, T_ij) for the positives and for the negatives, times 0.5."""
    b = 4
    g = torch.Generator().manual_seed(1)
    S, T = torch.randn(b, 2 * b, generator=g), torch.randn(b, 2 * b, generator=g)
    qi, pi, ni = torch.arange(b), torch.arange(0, 2 * b, 2), torch.arange(1, 2 * b, 2)
    ib_pos, ib_neg = S[:, pi], S[:, ni]  # torch.mm(query_vecs, doc_vecs_pos / neg)
    t_pos, t_neg = T[:, pi], T[:, ni]  # dyn_teacher_scores_pos / neg
    sel = ~torch.eye(b, dtype=torch.bool)
    ranking_pos = ib_pos.diagonal()
    expanded = ranking_pos.unsqueeze(-1).expand(-1, b - 1).reshape(-1)
    label_own = t_pos[~sel].unsqueeze(-1).expand(-1, b - 1).reshape(-1)

    def msmargin(sp, sn, lp, ln):
        return torch.mean(((sp - sn) - (lp - ln)) ** 2)

    mm = 0.5 * (msmargin(expanded, ib_pos[sel], label_own, t_pos[sel]) +
                msmargin(expanded, ib_neg[sel], label_own, t_neg[sel]))
    assert in_batch_teacher_margin_mse(S, T, qi, pi, ni).item() == pytest.approx(mm.item(), rel=1e-6)


# ------------------------------------------------------------------------------------------------------------------
# teachers
# ------------------------------------------------------------------------------------------------------------------

def _mean_pool_cosine(model_dir: Path, texts, max_length: int) -> torch.Tensor:
    """all-MiniLM-L6-v2 the sentence-transformers way, by hand: masked mean of the last hidden state, L2 norm."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        enc = tok(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)


def test_bi_encoder_teacher_scores_are_the_cards_similarity_times_scale(tiny_distilbert_dir, minilm_dir, triples,
                                                                         minilm_teacher):
    _, tok = BertDotStudent.from_card(resolve_student_card(str(tiny_distilbert_dir)))
    batch = Collator(tok, 8, 24, passage_buckets=2)(triples)  # the student's short cuts: the teacher uses its own
    teacher = minilm_teacher
    assert teacher.kind == "bi-encoder" and teacher.spec.query_max_length == 256
    scores = teacher.scores(batch)
    assert scores.dtype == torch.float32 and scores.shape == (5, len(batch.p_texts)) and not scores.requires_grad
    qv = _mean_pool_cosine(minilm_dir, batch.q_texts, 256)
    pv = _mean_pool_cosine(minilm_dir, batch.p_texts, 256)
    want = 10.0 * (qv @ pv.T)[batch.q_index]
    assert torch.allclose(scores, want, atol=1e-4), (scores - want).abs().max()
    for i, t in enumerate(triples):  # row i, column pos_index[i] is 10 x cos(query, positive)
        v = _mean_pool_cosine(minilm_dir, [t.query, t.pos], 256)
        assert scores[i, batch.pos_index[i]].item() == pytest.approx(10.0 * float(v[0] @ v[1]), abs=1e-4)
    assert torch.equal(teacher.scores(batch), scores)  # deterministic (resume replays the same batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the trainer's bf16 autocast does not reach an fp32 teacher
        assert torch.equal(teacher.scores(batch), scores)

    key = teacher.key()
    assert key == in_batch_teacher_key(str(minilm_dir), scale=10.0)
    assert key["scale"] == 10.0 and key["similarity"] == "cosine" and len(key["weights_sha256"]) == 64
    assert in_batch_teacher_key(str(minilm_dir), scale=1.0) != key
    assert in_batch_teacher_key(str(minilm_dir), scale=10.0, query_max_length=64) != key


def test_cross_encoder_teacher_scores_every_query_passage_pair(tmp_path, bert_vocab, tiny_distilbert_dir, triples):
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, BertConfig,
                              BertForSequenceClassification, BertTokenizerFast)

    d = tmp_path / "tiny-cross"
    tok = BertTokenizerFast(str(bert_vocab), do_lower_case=True)
    torch.manual_seed(3)
    BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=64, num_labels=1,
                                             initializer_range=0.3)).eval().save_pretrained(d)
    tok.save_pretrained(d)
    (d / "kd_pyserini_card.toml").write_text('name = "tiny-cross"\nkind = "cross-encoder"\n'
                                             'family = "sequence-classification"\nmax_length = 96\n')
    teacher = load_in_batch_teacher(str(d), device="cpu", precision="fp32", scale=2.0)
    assert teacher.kind == "cross-encoder" and teacher.key()["max_length"] == 96 and teacher.key()["scale"] == 2.0

    _, stok = BertDotStudent.from_card(resolve_student_card(str(tiny_distilbert_dir)))
    batch = Collator(stok, 30, 200, passage_buckets=2)(triples)
    scores = teacher.scores(batch)
    hf_tok, hf = AutoTokenizer.from_pretrained(d), AutoModelForSequenceClassification.from_pretrained(d).eval()
    with torch.inference_mode():
        for i in range(len(triples)):
            q = batch.q_texts[int(batch.q_index[i])]
            enc = hf_tok([q] * len(batch.p_texts), list(batch.p_texts), padding=True, truncation=True,
                         max_length=96, return_tensors="pt")
            want = 2.0 * hf(**enc).logits[:, 0]
            assert torch.allclose(scores[i], want, atol=1e-4), (i, (scores[i] - want).abs().max())


def test_teacher_settings_are_checked(minilm_dir):
    with pytest.raises(InBatchTeacherError, match="fp16 needs a CUDA device"):
        load_in_batch_teacher(str(minilm_dir), device="cpu", precision="fp16")
    with pytest.raises(InBatchTeacherError, match="scale"):
        load_in_batch_teacher(str(minilm_dir), device="cpu", scale=0)
    with pytest.raises(InBatchTeacherError, match="not one of"):
        load_in_batch_teacher(str(minilm_dir), device="cpu", precision="int8")

    class Empty:
        q_texts, p_texts, q_ids, p_ids = (), (), torch.zeros(2, 3), [torch.zeros(4, 3)]

    teacher = load_in_batch_teacher(str(minilm_dir), device="cpu")
    assert teacher.precision == "fp32"  # auto on the CPU
    with pytest.raises(InBatchTeacherError, match="Collator"):
        teacher.scores(Empty())


def test_default_device_is_the_last_gpu_unless_ddp(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_teacher_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert default_teacher_device() == torch.device("cuda", 3)  # matchmaker: the last GPU
    assert default_teacher_device("cuda:0") == torch.device("cuda", 3)
    assert default_teacher_device("cpu") == torch.device("cpu")  # a CPU student keeps its teacher on the CPU
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert default_teacher_device() == torch.device("cuda", 1)  # DDP: each rank's own GPU


# ------------------------------------------------------------------------------------------------------------------
# batch_loss
# ------------------------------------------------------------------------------------------------------------------

class _NeverCalled:
    def scores(self, batch):
        raise AssertionError("the in-batch teacher must not run when the in-batch weight is 0")


def test_batch_loss_with_an_in_batch_teacher(tiny_distilbert_dir, triples, minilm_teacher):
    student, tok = BertDotStudent.from_card(resolve_student_card(str(tiny_distilbert_dir)))
    student.eval()
    batch = Collator(tok, 30, 200, passage_buckets=2)(triples)
    with torch.no_grad():
        plain, parts = batch_loss(student, batch)
        zero, zparts = batch_loss(student, batch, 0.0, in_batch_teacher=_NeverCalled())
        assert zero.item() == plain.item() and zparts.keys() == parts.keys() == {"margin_mse"}
        # weight 0.75 with the teacher: margin_mse + 0.75 * the exact term on the teacher's scores
        loss, parts = batch_loss(student, batch, 0.75, in_batch_teacher=minilm_teacher)
        q, p = student(batch.q_ids, batch.q_mask, batch.p_ids, batch.p_mask)
        inb = in_batch_teacher_margin_mse(q[batch.q_index] @ p.T, minilm_teacher.scores(batch), batch.q_index,
                                          batch.pos_index, batch.neg_index)
        assert parts["in_batch"].item() == pytest.approx(inb.item(), rel=1e-6)
        assert loss.item() == pytest.approx(plain.item() + 0.75 * inb.item(), rel=1e-6)
        _, oparts = batch_loss(student, batch, 0.75)  # no teacher: the approximation, another number
        assert oparts["in_batch"].item() != pytest.approx(inb.item())
    student.train()
    loss, _ = batch_loss(student, batch, 0.75, in_batch_teacher=minilm_teacher)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------------------------------------
# students cut from a checkpoint's layers
# ------------------------------------------------------------------------------------------------------------------

def test_keep_layers_distilbert_keeps_every_other_layer(tmp_path):
    from transformers import AutoModel, DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    model = DistilBertModel(DistilBertConfig(vocab_size=100, dim=32, hidden_dim=64, n_layers=6, n_heads=2))
    original = [{k: v.clone() for k, v in layer.state_dict().items()} for layer in model.transformer.layer]
    assert keep_layers(model, 3) == [1, 3, 5]  # the 2nd, 4th and 6th
    assert len(model.transformer.layer) == 3 and model.config.n_layers == 3
    for new, old in enumerate([1, 3, 5]):
        for k, v in model.transformer.layer[new].state_dict().items():
            assert torch.equal(v, original[old][k]), (new, k)
    model.eval()
    ids = torch.tensor([[1, 2, 3]])
    out = model(input_ids=ids).last_hidden_state
    assert out.shape == (1, 3, 32)
    model.save_pretrained(tmp_path / "cut")
    reloaded = AutoModel.from_pretrained(tmp_path / "cut").eval()
    assert reloaded.config.n_layers == 3 and len(reloaded.transformer.layer) == 3
    assert torch.equal(reloaded(input_ids=ids).last_hidden_state, out)
    assert keep_layers(model, 3) == [0, 1, 2] and len(model.transformer.layer) == 3  # all kept: a no-op
    for bad in (0, 4):
        with pytest.raises(StudentLayersError, match=r"has 3 transformer layers; choose a number from 1 to 3"):
            keep_layers(model, bad)


def test_student_layers_out_of_range_is_one_line_naming_the_checkpoint(tiny_distilbert_dir):
    card = resolve_student_card(str(tiny_distilbert_dir))
    for bad in (0, 3):
        with pytest.raises(StudentLayersError) as e:
            BertDotStudent.from_card(card, student_layers=bad)
        msg = str(e.value)
        assert "\n" not in msg and str(tiny_distilbert_dir) in msg and "choose a number from 1 to 2" in msg
    student, _ = BertDotStudent.from_card(card, student_layers=2)  # all of them: unchanged
    assert len(student.model.transformer.layer) == 2


def test_minilm_cut_to_three_layers_saves_and_reloads(tmp_path, minilm_dir, monkeypatch):
    import kd_pyserini
    from safetensors.torch import load_file
    from transformers import AutoModel

    from kd_pyserini.encoding import TextEncoder

    card = resolve_student_card(str(minilm_dir), pooling="cls", similarity="dot")
    student, tok = BertDotStudent.from_card(card, student_layers=3)
    layers = student.model.encoder.layer
    assert len(layers) == 3 and student.model.config.num_hidden_layers == 3
    full = load_file(str(minilm_dir / "model.safetensors"))
    for new, old in enumerate([1, 3, 5]):  # the 2nd, 4th and 6th layers of all-MiniLM-L6-v2
        for k, v in layers[new].state_dict().items():
            assert torch.equal(v, full[f"encoder.layer.{old}.{k}"]), (new, k)
    assert [m.layer_idx for m in student.model.modules() if hasattr(m, "layer_idx")] == [0, 1, 2]

    out = student.save(tmp_path / "student", tok, card.replace(query_max_length=30, passage_max_length=200))
    reloaded = AutoModel.from_pretrained(out)
    assert reloaded.config.num_hidden_layers == 3 and len(reloaded.encoder.layer) == 3

    texts = ["what was the immediate impact of the manhattan project", "amber urine colour"]
    student.eval()
    with torch.no_grad():
        enc = tok(texts, padding=True, truncation=True, max_length=30, return_tensors="pt")
        want = student.encode(enc["input_ids"], enc["attention_mask"]).numpy()
    qenc = kd_pyserini.get_query_encoder(str(out), device="cpu")
    assert qenc.encoder.card.pooling == "cls" and qenc.encoder.card.similarity == "dot"
    np.testing.assert_allclose(qenc.encode(texts[0]), want[0], atol=1e-5)  # oneDNN linear: float rounding only
    monkeypatch.setenv("KD_PYSERINI_FAST_LINEAR", "0")  # the plain torch linear layers: bit-identical vectors
    assert np.array_equal(TextEncoder(str(out), device="cpu").embed(texts, 30), want)


# ------------------------------------------------------------------------------------------------------------------
# ColBERT / PreTTR in-batch teachers and the scale check
# ------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def colbert_hub(tmp_path_factory, tiny_distilbert_dir, bert_vocab) -> Path:
    from test_colbert import build_colbert

    return build_colbert(tmp_path_factory.mktemp("inb-colbert") / "colbert", tiny_distilbert_dir, bert_vocab)


@pytest.fixture(scope="module")
def colbert_batch(tiny_distilbert_dir, triples):
    _, stok = BertDotStudent.from_card(resolve_student_card(str(tiny_distilbert_dir)))
    return Collator(stok, 30, 200, passage_buckets=2)(triples)


@pytest.fixture(scope="module")
def colbert_full_matrix(colbert_hub, bert_vocab, colbert_batch) -> np.ndarray:
    """Q x P separate forwards of the notebook's ColBERT over the batch's unique texts (nothing cut)."""
    from test_colbert import reference_colbert, reference_scores

    model, tok = reference_colbert(colbert_hub, bert_vocab)
    return reference_scores(model, tok, colbert_batch.q_texts, colbert_batch.p_texts)


def _load_colbert_teacher(path: Path, **kw):
    # lengths raised so nothing is cut: the notebook's forward cuts nothing
    return load_in_batch_teacher(str(path), device="cpu", precision="fp32", query_max_length=64,
                                 passage_max_length=400, **kw)


def test_colbert_teacher_is_q_times_p_maxsim_at_q_plus_p_passes(colbert_hub, colbert_batch, colbert_full_matrix):
    teacher = _load_colbert_teacher(colbert_hub, scale=0.5)
    assert teacher.kind == "late-interaction" and teacher.key()["query_mask_tokens"] == 8
    rows: list[int] = []
    enc = teacher.scorer.encoder
    enc.model.bert_model.register_forward_hook(lambda m, a, kw, out: rows.append(int(kw["input_ids"].shape[0])),
                                               with_kwargs=True)
    got = teacher.scores(colbert_batch)
    want = 0.5 * torch.from_numpy(colbert_full_matrix)[colbert_batch.q_index]
    assert colbert_full_matrix.std() > 0.1
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-4), (got - want).abs().max()
    q, p = len(colbert_batch.q_texts), len(colbert_batch.p_texts)
    assert sum(rows) == q + p and q * p > q + p  # each text once: Q + P encoder passes, not Q x P


def test_prettr_teacher_scores_every_pair(tmp_path, bert_vocab, colbert_batch):
    from test_colbert import tokenizer_of
    from test_prettr import build_prettr, prettr_reference_scores, reference_prettr

    d = build_prettr(tmp_path / "prettr", bert_vocab)
    teacher = load_in_batch_teacher(str(d), device="cpu", precision="fp32", query_max_length=64,
                                    passage_max_length=400)
    assert teacher.kind == "split"
    got = teacher.scores(colbert_batch)
    ref = prettr_reference_scores(reference_prettr(d), tokenizer_of(bert_vocab), colbert_batch.q_texts,
                                  colbert_batch.p_texts)
    assert torch.allclose(got, torch.from_numpy(ref)[colbert_batch.q_index], rtol=1e-5, atol=1e-4)


def _margins(mat: np.ndarray, batch) -> tuple[np.ndarray, np.ndarray]:
    qi = batch.q_index.numpy()
    inb = mat[qi, batch.pos_index.numpy()] - mat[qi, batch.neg_index.numpy()]
    return inb.astype(np.float64), (batch.pos_scores - batch.neg_scores).double().numpy()


def test_scale_check_warns_once_and_auto_fits(colbert_hub, colbert_batch, colbert_full_matrix, caplog):
    from kd_pyserini.train.in_batch_teacher import fit_margin_scale

    a, b = _margins(colbert_full_matrix, colbert_batch)
    s_star = float((a * b).sum() / (a * a).sum())  # least squares through 0, by hand
    assert s_star > 0
    fit = fit_margin_scale(a, b)
    assert fit.triples == len(a) and fit.scale == pytest.approx(s_star, rel=1e-9)

    far = s_star * 10  # a fixed scale 10x too large: one warning, naming the factor and the scale that fits
    teacher = _load_colbert_teacher(colbert_hub, scale=far, calibration_triples=5)
    with caplog.at_level("WARNING", logger="kd_pyserini.train.in_batch_teacher"):
        teacher.scores(colbert_batch)
        teacher.scores(colbert_batch)
    warned = [r.getMessage() for r in caplog.records if "would match" in r.getMessage()]
    assert len(warned) == 1 and "10.0x larger" in warned[0] and f"{s_star:.4g}" in warned[0]
    caplog.clear()
    near = _load_colbert_teacher(colbert_hub, scale=s_star * 1.5, calibration_triples=5)
    with caplog.at_level("WARNING", logger="kd_pyserini.train.in_batch_teacher"):
        near.scores(colbert_batch)
    assert not [r for r in caplog.records if "would match" in r.getMessage()]  # within a factor of 2: quiet

    auto = _load_colbert_teacher(colbert_hub, scale="auto", calibration_triples=5)
    assert auto.key()["scale"] == "auto" and auto.scale is None
    got = auto.scores(colbert_batch)
    assert auto.scale == pytest.approx(s_star, rel=1e-4)
    want = s_star * torch.from_numpy(colbert_full_matrix)[colbert_batch.q_index]
    assert torch.allclose(got, want.float(), rtol=1e-4, atol=1e-3)
    auto.restore_scale(2.0)  # a resumed run restores the fitted scale
    assert auto.scale == 2.0 and torch.allclose(auto.scores(colbert_batch), 2.0 / s_star * want.float(),
                                                rtol=1e-4, atol=1e-3)
    with pytest.raises(InBatchTeacherError, match="no positive scale"):
        fit_margin_scale(a, -b)
