"""Cross-encoders (re-rankers): cards, loading both families, scores equal to a plain Hugging Face forward pass,
re-ranking candidate lists and Pyserini hit lists.

The models are tiny random ones built here with the real BERT vocabulary: a one-label ``BertForSequenceClassification``
and two checkpoints in Hofstätter's matchmaker ``BERT_Cat`` layout (a DistilBERT base whose configuration is not
available offline, and a BERT base in a local folder, scored on its pooler output).
"""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from kd_pyserini.cards import (UnknownEncoderError, UnknownRerankerError, get_card,
                               get_cross_encoder_card, list_cards, list_cross_encoder_cards, resolve_any_card)
from kd_pyserini.encoding.cross_encoder import CrossEncoder
from kd_pyserini.encoding.hits import hit_text, rerank_hits
from kd_pyserini.encoding.loading import ModelLoadError

SEED_SCALE = 0.3  # initializer_range: large enough that random models give well-spread scores


# ------------------------------------------------------------------------------------------------ builders

def _tokenizer(vocab: Path):
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast(str(vocab), do_lower_case=True)  # positional: transformers 5 ignores vocab_file=
    assert len(tok) > 30000, "tokenizer did not load the BERT vocabulary"
    return tok


def build_seqclass(out: Path, vocab: Path, seed: int = 0, max_length: int | None = 128) -> Path:
    """A 2-layer, 32-dim one-label BertForSequenceClassification (family sequence-classification)."""
    from transformers import BertConfig, BertForSequenceClassification

    tok = _tokenizer(vocab)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, num_labels=1, initializer_range=SEED_SCALE)
    BertForSequenceClassification(cfg).eval().save_pretrained(out)
    tok.save_pretrained(out)
    if max_length is not None:
        (out / "kd_pyserini_card.toml").write_text(
            f'name = "tiny-seqclass-{seed}"\nkind = "cross-encoder"\nfamily = "sequence-classification"\n'
            f"max_length = {max_length}\n", encoding="utf-8")
    return out


def build_bert_cat(out: Path, vocab: Path, base: str = "distilbert", seed: int = 1) -> Path:
    """A checkpoint in matchmaker's BERT_Cat layout: config.json {model_type: BERT_Cat, bert_model}, weights
    bert_model.* + _classification_layer.* in pytorch_model.bin, vocab.txt and a tokenizer config without
    tokenizer_class (as the published 2021 checkpoint). ``base="distilbert"``: bert_model names the hub id
    (unreachable here: the configuration is read off the weights); ``base="bert"``: bert_model is a local folder
    (``out/../NAME-base``) and the score comes from the pooler output."""
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

    torch.manual_seed(seed)
    if base == "distilbert":
        model = DistilBertModel(DistilBertConfig(vocab_size=30522, dim=128, hidden_dim=256, n_layers=2, n_heads=2,
                                                 initializer_range=SEED_SCALE)).eval()
        bert_model = "distilbert-base-uncased"
    else:
        model = BertModel(BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=128, initializer_range=SEED_SCALE)).eval()
        base_dir = out.parent / f"{out.name}-base"
        model.save_pretrained(base_dir)
        bert_model = str(base_dir)
    head = torch.nn.Linear(model.config.hidden_size if base == "bert" else model.config.dim, 1)
    out.mkdir(parents=True, exist_ok=True)
    sd = {f"bert_model.{k}": v for k, v in model.state_dict().items()}
    sd["_classification_layer.weight"], sd["_classification_layer.bias"] = head.weight.detach(), head.bias.detach()
    torch.save(sd, out / "pytorch_model.bin")
    (out / "config.json").write_text(json.dumps({"architectures": ["BERT_Cat"], "bert_model": bert_model,
                                                 "model_type": "BERT_Cat", "trainable": True}), encoding="utf-8")
    shutil.copy(vocab, out / "vocab.txt")
    (out / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    torch.save({"model": model.state_dict(), "head": head.state_dict(), "config": model.config.to_dict()},
               out.parent / f"{out.name}.reference.pt")
    return out


def hf_seqclass_scores(model_dir: Path, queries, passages, max_length: int) -> np.ndarray:
    """The plain Hugging Face forward pass: tokenizer(q, p) + AutoModelForSequenceClassification, logits[:, 0]."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(queries), 16):
            feats = tok(list(queries[s:s + 16]), list(passages[s:s + 16]), padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
            if "token_type_ids" not in inspect.signature(model.forward).parameters:
                feats.pop("token_type_ids", None)
            out.append(model(**feats).logits[:, 0])
    return torch.cat(out).numpy()


def matchmaker_scores(cat_dir: Path, queries, passages, max_length: int) -> np.ndarray:
    """matchmaker's BERT_Cat forward, rebuilt from the base model the checkpoint was made from: tokenizer(q, d,
    max_length, truncation=True), CLS vector (DistilBERT) or pooler output (BERT), then the linear layer."""
    from transformers import AutoConfig, AutoModel

    ref = torch.load(cat_dir.parent / f"{cat_dir.name}.reference.pt", weights_only=False)
    cfg = AutoConfig.for_model(**ref["config"])
    base = AutoModel.from_config(cfg).eval()
    base.load_state_dict(ref["model"])
    head = torch.nn.Linear(ref["head"]["weight"].shape[1], 1)
    head.load_state_dict(ref["head"])
    tok = _tokenizer(cat_dir / "vocab.txt")
    out = []
    with torch.inference_mode():
        for s in range(0, len(queries), 16):
            feats = tok(list(queries[s:s + 16]), list(passages[s:s + 16]), padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
            if cfg.model_type == "distilbert":
                feats.pop("token_type_ids")
                vec = base(**feats)[0][:, 0, :]
            else:
                _, vec = base(**feats, return_dict=False)
            out.append(head(vec).squeeze(-1))
    return torch.cat(out).numpy()


def dl_pairs(data_dir: Path, name: str = "dl19", n: int | None = None) -> tuple[list[str], list[str], list[str],
                                                                                   list[str]]:
    """(qids, pids, queries, passages) of the shared BM25 top-100 candidates, in file order."""
    import gzip

    rows = []
    with gzip.open(data_dir / "msmarco-dl" / f"candidates.{name}.bm25-top100.tsv.gz", "rt", encoding="utf-8") as f:
        for line in f:
            rows.append(line.rstrip("\n").split("\t"))
            if n is not None and len(rows) >= n:
                break
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]


# ------------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def seqclass_dir(tmp_path_factory, bert_vocab) -> Path:
    return build_seqclass(tmp_path_factory.mktemp("ce") / "seqclass", bert_vocab)


@pytest.fixture(scope="module")
def cat_dir(tmp_path_factory, bert_vocab) -> Path:
    return build_bert_cat(tmp_path_factory.mktemp("ce") / "bert-cat", bert_vocab)


@pytest.fixture(scope="module")
def cat_bert_dir(tmp_path_factory, bert_vocab) -> Path:
    return build_bert_cat(tmp_path_factory.mktemp("ce") / "bert-cat-bert", bert_vocab, base="bert", seed=2)


@pytest.fixture(scope="module")
def pairs50(data_dir):
    return dl_pairs(data_dir, "dl19", 50)


# ------------------------------------------------------------------------------------------------ cards

def test_reranker_cards_are_their_own_kind():
    cross = list_cross_encoder_cards()
    cat = cross["distilbert-cat-margin-mse"]
    assert (cat.family, cat.max_length, cat.model_id, cat.kind) == \
        ("bert-cat", 230, "sebastian-hofstaetter/distilbert-cat-margin_mse-T2-msmarco", "cross-encoder")
    assert cat.published["trec-dl-19"]["nDCG@10"] == 0.747  # the model card's figure
    assert get_cross_encoder_card("distilbert-cat") is cat
    assert cross["ms-marco-minilm-l6-v2"].family == "sequence-classification"
    assert not set(cross) & set(list_cards())  # bi-encoder listing unchanged
    assert resolve_any_card("all-minilm-l6-v2").kind == "bi-encoder"
    assert resolve_any_card("distilbert-cat").kind == "cross-encoder"
    with pytest.raises(UnknownEncoderError) as e:
        get_card("distilbert-cat")
    assert "\n" not in str(e.value) and "--reranker" in str(e.value)
    with pytest.raises(UnknownRerankerError) as e:
        get_cross_encoder_card("tas-b")
    assert "--encoder tas-b" in str(e.value)
    with pytest.raises(UnknownRerankerError):
        get_cross_encoder_card("no-such-reranker")


def test_directories_are_detected(seqclass_dir, cat_dir, tiny_distilbert_dir):
    assert get_cross_encoder_card(str(seqclass_dir)).max_length == 128  # its own kd_pyserini_card.toml
    card = get_cross_encoder_card(str(cat_dir))
    assert (card.family, card.tokenizer) == ("bert-cat", "distilbert-base-uncased") and card.note
    with pytest.raises(UnknownEncoderError, match="cross-encoder"):
        get_card(str(cat_dir))  # a BERT_Cat folder is never a bi-encoder
    with pytest.raises(UnknownRerankerError, match="not a cross-encoder folder"):
        get_cross_encoder_card(str(tiny_distilbert_dir))
    assert resolve_any_card(str(tiny_distilbert_dir)).kind == "bi-encoder"


def test_offline_hub_is_one_line_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as e:
        CrossEncoder("distilbert-cat-margin-mse", device="cpu")
    assert "\n" not in str(e.value) and "hf download sebastian-hofstaetter/distilbert-cat-margin_mse-T2-msmarco" \
        in str(e.value)


def test_a_checkpoint_without_a_trained_head_is_refused(tmp_path, tiny_distilbert_dir):
    d = tmp_path / "not-a-cross-encoder"
    shutil.copytree(tiny_distilbert_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(architectures=["DistilBertForSequenceClassification"], num_labels=1)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="random"):
        CrossEncoder(str(d), device="cpu")  # the head would be freshly initialised: refused, not silently random


def test_precisions_checked(seqclass_dir):
    with pytest.raises(ValueError, match="CUDA"):
        CrossEncoder(str(seqclass_dir), device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="int8"):
        CrossEncoder(str(seqclass_dir), device="cpu", precision="int8")


# ------------------------------------------------------------------------------------------------ scores

def test_sequence_classification_scores_equal_hf_forward(seqclass_dir, pairs50):
    _, _, queries, passages = pairs50
    ce = CrossEncoder(str(seqclass_dir), device="cpu", batch_size=8, max_length=48)  # 48: many pairs are cut
    got = ce.score_pairs(queries, passages)
    ref = hf_seqclass_scores(seqclass_dir, queries, passages, 48)
    assert np.abs(got - ref).max() < 1e-4 and ref.std() > 1e-2  # well-spread scores, equal to the plain pass
    ids = ce.encode_pairs(queries, passages, [(i, i) for i in range(len(queries))])
    assert [x for x, _ in ids] == ce.tokenizer(queries, passages, truncation=True, max_length=48)["input_ids"]
    assert ce.token_types  # BERT takes token type ids


def test_bert_cat_distilbert_base_read_off_the_weights(cat_dir, pairs50, caplog):
    _, _, queries, passages = pairs50
    caplog.set_level("INFO")
    ce = CrossEncoder(str(cat_dir), device="cpu", max_length=64)
    assert "read off the weights" in caplog.text  # distilbert-base-uncased is not reachable here
    assert not ce.token_types and not ce.model.use_pooler  # DistilBERT: CLS vector, no token types
    got = ce.score_pairs(queries, passages)
    ref = matchmaker_scores(cat_dir, queries, passages, 64)
    assert np.abs(got - ref).max() < 1e-4 and ref.std() > 1e-2


def test_bert_cat_bert_base_uses_the_pooler(cat_bert_dir, pairs50):
    _, _, queries, passages = pairs50
    ce = CrossEncoder(str(cat_bert_dir), device="cpu", max_length=96)
    assert ce.token_types and ce.model.use_pooler
    got = ce.score_pairs(queries, passages)
    ref = matchmaker_scores(cat_bert_dir, queries, passages, 96)
    assert np.abs(got - ref).max() < 1e-4 and ref.std() > 1e-3


def test_scores_do_not_depend_on_batching_or_duplicates(seqclass_dir, pairs50):
    _, _, queries, passages = pairs50
    a = CrossEncoder(str(seqclass_dir), device="cpu", batch_size=1).score_pairs(queries, passages)
    b = CrossEncoder(str(seqclass_dir), device="cpu", batch_size=32).score_pairs(queries, passages)
    assert np.abs(a - b).max() < 1e-5
    ce = CrossEncoder(str(seqclass_dir), device="cpu")
    uq = list(dict.fromkeys(queries))
    pairs = [(uq.index(q), j) for j, q in enumerate(queries)]
    assert np.abs(ce.score_pairs(uq, passages, pairs) - a).max() < 1e-5  # texts tokenised once, same scores


def test_query_and_passage_cuts(seqclass_dir, pairs50):
    _, _, queries, passages = pairs50
    ce = CrossEncoder(str(seqclass_dir), device="cpu", max_length=128, query_max_length=3, passage_max_length=10)
    ids, types = ce.encode_pairs(queries[:1], passages[:1], [(0, 0)])[0]
    tok = ce.tokenizer
    q = tok(queries[0], add_special_tokens=False)["input_ids"][:3]
    p = tok(passages[0], add_special_tokens=False)["input_ids"][:10]
    assert ids == [tok.cls_token_id, *q, tok.sep_token_id, *p, tok.sep_token_id]
    assert types == [0] * (len(q) + 2) + [1] * (len(p) + 1)


def test_bf16_is_close_and_cuda_batches_fill_a_token_budget(seqclass_dir, pairs50):
    _, _, queries, passages = pairs50
    fp32 = CrossEncoder(str(seqclass_dir), device="cpu").score_pairs(queries, passages)
    bf16 = CrossEncoder(str(seqclass_dir), device="cpu", precision="bf16").score_pairs(queries, passages)
    assert np.abs(bf16 - fp32).max() < 0.05 * max(1.0, float(np.abs(fp32).max()))
    ce = CrossEncoder(str(seqclass_dir), device="cpu", batch_size=4)
    lengths = [100, 10, 50, 10, 10, 10, 10, 10, 10, 10]
    assert [len(b) for b in ce._batches(lengths)] == [4, 4, 2]  # CPU: fixed size, longest first
    ce.device = torch.device("cuda")  # only the batching rule is exercised: budget 4 * 128 padded tokens
    batches = ce._batches(lengths)
    assert [list(b) for b in batches][0] == [0, 2, 1, 3, 4]  # 100+50+... sorted; 512 // 100 = 5 pairs
    assert sum(len(b) for b in batches) == 10


# ------------------------------------------------------------------------------------------------ re-ranking

def test_rerank_hits_from_a_pyserini_hit_list(seqclass_dir, pairs50):
    _, pids, queries, passages = pairs50
    hits = [SimpleNamespace(docid=p, raw=json.dumps({"id": p, "contents": t}), score=0.0)
            for p, t in zip(pids[:20], passages[:20])]
    ce = CrossEncoder(str(seqclass_dir), device="cpu")
    out = rerank_hits(queries[0], hits, ce)
    direct = dict(zip(pids[:20], ce.score(queries[0], passages[:20]).tolist()))
    assert [h.docid for h in out] == sorted(direct, key=lambda d: (direct[d], d), reverse=True)
    assert all(abs(h.score - direct[h.docid]) < 1e-6 for h in out) and out[0].hit.docid == out[0].docid
    dense_hits = [SimpleNamespace(docid=p, score=1.0) for p in pids[:5]]  # no text: a mapping gives it
    out = rerank_hits(queries[0], dense_hits, ce, texts=dict(zip(pids, passages)), depth=3)
    assert len(out) == 3 and {h.docid for h in out} == set(pids[:3])
    with pytest.raises(ValueError, match="carries no text"):
        rerank_hits(queries[0], dense_hits, ce)
    assert hit_text(SimpleNamespace(docid="x", raw=None, contents="plain")) == "plain"
    assert hit_text(SimpleNamespace(docid="x", raw='{"title": "T", "text": "body"}')) == "T body"


@pytest.mark.parametrize("model", ["seqclass", "bert-cat"])
def test_cross_rerank_orders_dl19_bm25_candidates_by_the_cross_encoder(model, seqclass_dir, cat_dir, data_dir):
    from kd_pyserini.search.cross_rerank import CROSS_ENCODER_DEPTH, cross_rerank
    from kd_pyserini.search.rerank import read_candidates

    cands = read_candidates(data_dir / "msmarco-dl" / "candidates.dl19.bm25-top100.tsv.gz")
    if model == "bert-cat":  # the larger tiny model: ten queries keep the test quick
        keep = sorted(cands.run)[:10]
        cands.run = {q: cands.run[q] for q in keep}
    ce = CrossEncoder(str(seqclass_dir if model == "seqclass" else cat_dir), device="cpu", max_length=128)
    run = cross_rerank(cands, None, ce, depth=CROSS_ENCODER_DEPTH)
    assert set(run) == set(cands.run) and all(len(docs) == 100 for docs in run.values())
    checked = sorted(run)[:4]  # the plain forward pass on four queries' 400 pairs (it is the slow part)
    qids = [q for q in checked for _ in run[q]]
    pids = [d for q in checked for d in run[q]]
    queries = [cands.queries[q] for q in qids]
    passages = [cands.texts[d] for d in pids]
    ref = (hf_seqclass_scores(seqclass_dir, queries, passages, 128) if model == "seqclass"
           else matchmaker_scores(cat_dir, queries, passages, 128))
    got = np.array([run[q][d] for q, d in zip(qids, pids)])
    assert np.abs(got - ref).max() < 1e-4
    for q in run:  # each query's passages in the cross-encoder's order (trec_eval's: score desc, docid desc)
        order = list(run[q])
        assert order == sorted(order, key=lambda d: (run[q][d], d), reverse=True)
        first_stage = [d for d, _ in sorted(cands.run[q].items(), key=lambda kv: -kv[1])]
        assert order != first_stage  # really re-ordered
    shallow = cross_rerank(cands, None, ce, depth=10, hits=5)
    assert all(len(d) == 5 and set(d) <= set(sorted(cands.run[q], key=lambda x: -cands.run[q][x])[:10])
               for q, d in shallow.items())


# ------------------------------------------------------------------------------------------------ kd-search

NO_JVM = {"KD_PYSERINI_JVM_OPTIONS": "-XX:+NoSuchOption"}  # any JVM start would fail with this option


def test_kd_search_reranker_on_dl19_candidates(seqclass_dir, data_dir, tmp_path):
    """``kd-search --mode rerank --reranker``: the cross-encoder's order, depth 100 by default, no Java."""
    import os
    import subprocess
    import sys

    from kd_pyserini.search.rerank import read_candidates
    from kd_pyserini.trec_io import read_run

    cands_file = data_dir / "msmarco-dl" / "candidates.dl19.bm25-top100.tsv.gz"
    out = tmp_path / "cat.txt"
    res = subprocess.run([sys.executable, "-m", "kd_pyserini.cli.search", "--mode", "rerank", "--reranker",
                          str(seqclass_dir), "--candidates", str(cands_file), "--topics", "dl19-passage", "--device",
                          "cpu", "-o", str(out), "--no-progress"], capture_output=True, text=True, timeout=900,
                         env={**os.environ, **NO_JVM, "KD_PYSERINI_DATA": str(data_dir)})
    assert res.returncode == 0, res.stderr
    assert "before" in res.stdout and "after" in res.stdout
    side = json.loads(Path(str(out) + ".json").read_text())
    assert side["params"]["depth"] == 100 and side["first_stage"] == "candidates"
    assert side["reranker"]["name"] == "tiny-seqclass-0" and side["reranker"]["max_length"] == 128
    assert side["evaluation"]["candidates"]["nDCG@10"] == pytest.approx(0.5058, abs=1e-4)  # BM25, as published
    run = read_run(out)
    cands = read_candidates(cands_file)
    ce = CrossEncoder(str(seqclass_dir), device="cpu")
    for q in sorted(run)[:3]:
        docs = list(cands.run[q])
        direct = dict(zip(docs, ce.score(cands.queries[q], [cands.texts[d] for d in docs]).tolist()))
        ranked = sorted(run[q], key=lambda d: -run[q][d])  # the file's order
        assert ranked == sorted(direct, key=lambda d: (direct[d], d), reverse=True)
        assert all(abs(run[q][d] - direct[d]) < 1e-4 for d in ranked)


@pytest.fixture(scope="module")
def small_indexes(tmp_path_factory, tiny_distilbert_dir):
    """A 60-passage corpus with its BM25 (Lucene) and dense (tiny DistilBERT) indexes, 5 topics, qrels."""
    import random

    from kd_pyserini.index import build_bm25_index, build_dense_index

    d = tmp_path_factory.mktemp("small")
    words = ("protein cell gene virus heart brain cancer drug trial enzyme blood insulin dna rna signal tumor "
             "vaccine dose liver kidney lung muscle bone neuron").split()
    rng = random.Random(3)
    docs = {f"p{i}": " ".join(rng.choice(words) for _ in range(rng.randint(6, 25))) for i in range(60)}
    corpus = d / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "contents": v}) + "\n" for k, v in docs.items()))
    topics = {str(i): " ".join(rng.choice(words) for _ in range(3)) for i in range(1, 6)}
    (d / "topics.tsv").write_text("".join(f"{k}\t{v}\n" for k, v in topics.items()))
    (d / "qrels.txt").write_text("".join(f"{q} 0 p{int(q) * 5} 1\n" for q in topics))
    return {"corpus": corpus, "topics": d / "topics.tsv", "qrels": d / "qrels.txt", "docs": docs,
            "bm25": build_bm25_index(corpus, d / "bm25", progress=False),
            "dense": build_dense_index(corpus, str(tiny_distilbert_dir), d / "dense", device="cpu", progress=False)}


def test_kd_search_bm25_then_bert_dot_then_bert_cat_in_one_command(small_indexes, tiny_distilbert_dir, cat_dir,
                                                                      tmp_path):
    from click.testing import CliRunner

    from kd_pyserini.cli.search import main as search_main
    from kd_pyserini.search import bm25_candidates, rerank
    from kd_pyserini.trec_io import read_run

    s = small_indexes
    base = ["--topics", str(s["topics"]), "--qrels", str(s["qrels"]), "--device", "cpu", "--no-progress"]
    out = tmp_path / "three.txt"
    r = CliRunner().invoke(search_main, ["--mode", "rerank", "--bm25-index", str(s["bm25"]), "--encoder",
                                         str(tiny_distilbert_dir), "--reranker", str(cat_dir), "--depth", "10",
                                         "-o", str(out), *base])
    assert r.exit_code == 0, r.output
    assert all(x in r.output for x in ("before", "bert_dot", "after"))
    side = json.loads(Path(str(out) + ".json").read_text())
    assert (side["first_stage"], side["params"]["bi_encoder_depth"], side["params"]["depth"]) == ("bm25", 1000, 10)
    run = read_run(out)
    # the cross-encoder re-scored exactly the BERT_Dot stage's top 10 of BM25's candidates
    topics = dict(line.split("\t") for line in s["topics"].read_text().splitlines())
    dot = rerank(topics, str(tiny_distilbert_dir), bm25_candidates(topics, s["bm25"], 1000), depth=1000,
                 device="cpu")
    ce = CrossEncoder(str(cat_dir), device="cpu")
    for q, docs in run.items():
        top10 = sorted(dot[q], key=lambda d: (dot[q][d], d), reverse=True)[:10]
        assert set(docs) == set(top10)
        direct = dict(zip(top10, ce.score(topics[q], [s["docs"][d] for d in top10]).tolist()))
        assert all(abs(docs[d] - direct[d]) < 1e-4 for d in docs)
    for stage in ("dense", "hybrid"):  # a dense or hybrid first stage, texts from --corpus / the Lucene index
        out = tmp_path / f"{stage}.txt"
        extra = ["--corpus", str(s["corpus"])] if stage == "dense" else ["--bm25-index", str(s["bm25"])]
        r = CliRunner().invoke(search_main, ["--mode", "rerank", "--first-stage", stage, "--index", str(s["dense"]),
                                             "--encoder", str(tiny_distilbert_dir), "--reranker", str(cat_dir),
                                             "-o", str(out), *extra, *base])
        assert r.exit_code == 0, r.output
        side = json.loads(Path(str(out) + ".json").read_text())
        assert side["first_stage"] == stage and side["params"]["depth"] == 100 and side["reranker"]["family"] == \
            "bert-cat"
        assert all(len(docs) == 60 for docs in read_run(out).values())  # depth 100 > the 60 passages
    r = CliRunner().invoke(search_main, ["--mode", "dense", "--index", str(s["dense"]), "--reranker", str(cat_dir),
                                         "-o", str(tmp_path / "x.txt"), *base])
    assert r.exit_code != 0 and "--mode rerank" in r.output
    r = CliRunner().invoke(search_main, ["--mode", "rerank", "--first-stage", "dense", "--index", str(s["dense"]),
                                         "--encoder", str(tiny_distilbert_dir), "-o", str(tmp_path / "y.txt"), *base])
    assert r.exit_code != 0 and "--first-stage picks the candidates a --reranker re-scores" in r.output
