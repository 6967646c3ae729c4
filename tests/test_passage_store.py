"""Passage stores of ColBERT / PreTTR re-rankers: built once (fp16, chunked, resumable), re-ranking pays the query
side only, and the scores equal re-ranking without the store to fp16 rounding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kd_pyserini.cli.index import main as kd_index
from kd_pyserini.encoding.rerankers import load_reranker
from kd_pyserini.index.passage_store import PassageStore, PassageStoreError, build_passage_store

from test_colbert import PASSAGES, QUERIES, build_colbert, tokenizer_of  # noqa: E402
from test_prettr import build_prettr, prettr_reference_scores, reference_prettr  # noqa: E402

IDS = [f"p{j}" for j in range(len(PASSAGES))]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store-corpus") / "collection.tsv"
    path.write_text("".join(f"{i}\t{t}\n" for i, t in zip(IDS, PASSAGES)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def colbert_dir(tmp_path_factory, tiny_distilbert_dir, bert_vocab) -> Path:
    return build_colbert(tmp_path_factory.mktemp("store-colbert") / "colbert", tiny_distilbert_dir, bert_vocab)


@pytest.fixture(scope="module")
def prettr_dir(tmp_path_factory, bert_vocab) -> Path:
    return build_prettr(tmp_path_factory.mktemp("store-prettr") / "prettr", bert_vocab)


def _fp16_close(a: np.ndarray, b: np.ndarray) -> None:
    """Equal to fp16 rounding of the stored side: 11 significant bits, relative to the scores' scale."""
    assert np.abs(a - b).max() <= 2e-3 * max(1.0, float(np.abs(b).max())), np.abs(a - b).max()


def test_colbert_store_by_cli_rerank_with_and_without(colbert_dir, corpus, tmp_path):
    out = tmp_path / "store"
    res = CliRunner().invoke(kd_index, ["passage-store", "--reranker", str(colbert_dir), "--corpus", str(corpus),
                                        "-o", str(out), "--chunk-size", "2", "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    store = PassageStore(out)
    assert len(store) == len(PASSAGES) and store.info["chunks"] == 3 and store.dimension == 16
    assert store.info["encoder"]["kind"] == "late-interaction" and len(store.info["encoder"]["weights_sha256"]) == 64
    plain = load_reranker(str(colbert_dir), device="cpu")
    ref = np.stack([plain.score(q, PASSAGES) for q in QUERIES])
    stored = load_reranker(str(colbert_dir), device="cpu", store=str(out))
    stored.encoder_passes = 0
    got = np.stack([stored.score(q, PASSAGES, passage_ids=IDS) for q in QUERIES])
    _fp16_close(got, ref)
    assert stored.encoder_passes == len(QUERIES) and stored.store_misses == 0  # only the queries were encoded
    # a stored row is the passage's token vectors in fp16, [CLS] and [SEP] included
    vec = store.get(["p0"])[0]
    assert vec.dtype == np.float16 and vec.shape == (len(plain.passage_tokens([PASSAGES[0]])[0]), 16)
    # an id the store lacks is encoded on the spot, and counted
    got2 = stored.score(QUERIES[0], PASSAGES[:2], passage_ids=["p0", "unknown"])
    _fp16_close(got2, ref[0, :2])
    assert stored.store_misses == 1
    # rerank_hits hands the hits' docids to the store: only the query is encoded
    from types import SimpleNamespace

    from kd_pyserini.encoding.hits import rerank_hits

    hits = [SimpleNamespace(docid=i, raw=json.dumps({"id": i, "contents": t})) for i, t in zip(IDS, PASSAGES)]
    stored.encoder_passes = 0
    ranked = rerank_hits(QUERIES[1], hits, stored)
    assert stored.encoder_passes == 1 and [h.docid for h in ranked] == [IDS[j] for j in np.argsort(-got[1])]
    # never overwritten
    with pytest.raises(PassageStoreError, match="already exists"):
        build_passage_store(corpus, out, str(colbert_dir), device="cpu")


def test_a_store_is_refused_with_other_weights(colbert_dir, corpus, tmp_path, tiny_distilbert_dir, bert_vocab):
    out = build_passage_store(corpus, tmp_path / "store", str(colbert_dir), device="cpu")
    other = build_colbert(tmp_path / "other", tiny_distilbert_dir, bert_vocab, seed=11)
    with pytest.raises(PassageStoreError, match="weights_sha256"):
        load_reranker(str(other), device="cpu", store=str(out))
    with pytest.raises(PassageStoreError, match="passage_max_length"):
        load_reranker(str(colbert_dir), device="cpu", passage_max_length=50, store=str(out))


def test_prettr_store_equals_the_padded_query_forward(prettr_dir, corpus, tmp_path, bert_vocab):
    out = build_passage_store(corpus, tmp_path / "store", str(prettr_dir), device="cpu", chunk_size=4)
    store = PassageStore(out)
    width = store.info["encoder"]["query_width"]
    assert width == 30 + 8 and store.info["encoder"]["join_layer_idx"] == 2
    stored = load_reranker(str(prettr_dir), device="cpu", store=out)
    assert stored.query_width == width
    got = np.stack([stored.score(q, PASSAGES, passage_ids=IDS) for q in QUERIES])
    same_width = load_reranker(str(prettr_dir), device="cpu", query_width=width)
    _fp16_close(got, np.stack([same_width.score(q, PASSAGES) for q in QUERIES]))
    ref = prettr_reference_scores(reference_prettr(prettr_dir), tokenizer_of(bert_vocab), QUERIES, PASSAGES, width)
    _fp16_close(got, ref)
    with pytest.raises(PassageStoreError, match="query width"):
        load_reranker(str(prettr_dir), device="cpu", query_width=40, store=out)


def test_a_killed_build_resumes_and_gives_the_same_store(colbert_dir, corpus, tmp_path):
    out = tmp_path / "store"
    code = ("import sys; from kd_pyserini.index.passage_store import build_passage_store; "
            f"build_passage_store({str(corpus)!r}, {str(out)!r}, {str(colbert_dir)!r}, device='cpu', chunk_size=2)")
    env = {**os.environ, "KD_PYSERINI_CRASH_AFTER_CHUNK": "0"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 137, proc.stderr[-2000:]
    assert not out.exists() and (Path(str(out) + ".partial") / "chunk-000000.vec.npy").is_file()
    with pytest.raises(PassageStoreError, match="run the same 'kd-index passage-store' command again"):
        PassageStore(out)
    build_passage_store(corpus, out, str(colbert_dir), device="cpu", chunk_size=2)
    info = json.loads((out / "store.json").read_text())
    assert info["chunks_resumed"] == 1 and info["passages_encoded_this_run"] == len(PASSAGES) - 2
    fresh = build_passage_store(corpus, tmp_path / "fresh", str(colbert_dir), device="cpu", chunk_size=2)
    a, b = PassageStore(out), PassageStore(fresh)
    for x, y in zip(a.get(IDS), b.get(IDS)):
        assert np.array_equal(x, y)
    with pytest.raises(PassageStoreError, match="another build"):  # other settings never reuse the chunks
        subprocess.run([sys.executable, "-c", code.replace(str(out), str(tmp_path / "s2"))], env=env, timeout=300)
        build_passage_store(corpus, tmp_path / "s2", str(colbert_dir), device="cpu", chunk_size=3)


def test_cross_encoders_have_no_passage_side(corpus, tmp_path):
    with pytest.raises(PassageStoreError, match="no passage side"):
        build_passage_store(corpus, tmp_path / "s", "distilbert-cat-margin-mse", device="cpu")
