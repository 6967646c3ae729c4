"""kd-search --reranker with ColBERT and PreTTR (issue #21): a candidates file re-ranked by a tiny hub-layout model of
each kind ranks as the notebooks' reference forward does, with and without a passage store (same scores to fp16
rounding); the sidecar records the re-ranker and the store; a store for a cross-encoder is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kd_pyserini.cli.search import main as kd_search
from kd_pyserini.index.passage_store import build_passage_store
from kd_pyserini.search.cross_rerank import DEFAULT_DEPTHS, default_depth
from kd_pyserini.search.spec import Bm25Stage, SearchSpec, SpecError, spec_from_options
from kd_pyserini.trec_io import read_run

from test_colbert import PASSAGES, QUERIES, build_colbert, reference_colbert, reference_scores  # noqa: E402
from test_prettr import build_prettr, prettr_reference_scores, reference_prettr  # noqa: E402
from test_colbert import tokenizer_of  # noqa: E402

IDS = [f"p{j}" for j in range(len(PASSAGES))]
QIDS = [f"q{i}" for i in range(len(QUERIES))]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("family-rerank")
    top = d / "top1000.tsv"  # every query against every passage, in a first-stage order unrelated to the scores
    top.write_text("".join(f"{q}\t{p}\t{qt}\t{pt}\n" for q, qt in zip(QIDS, QUERIES)
                           for p, pt in zip(IDS, PASSAGES)), encoding="utf-8")
    corpus = d / "collection.tsv"
    corpus.write_text("".join(f"{i}\t{t}\n" for i, t in zip(IDS, PASSAGES)), encoding="utf-8")
    return {"top": top, "corpus": corpus, "dir": d}


@pytest.fixture(scope="module")
def colbert_dir(tmp_path_factory, tiny_distilbert_dir, bert_vocab) -> Path:
    return build_colbert(tmp_path_factory.mktemp("rr-colbert") / "colbert", tiny_distilbert_dir, bert_vocab)


@pytest.fixture(scope="module")
def prettr_dir(tmp_path_factory, bert_vocab) -> Path:
    return build_prettr(tmp_path_factory.mktemp("rr-prettr") / "prettr", bert_vocab)


def _search(args: list[str]) -> dict:
    res = CliRunner().invoke(kd_search, ["--mode", "rerank", "--device", "cpu", "--no-eval", "--no-progress", *args])
    assert res.exit_code == 0, res.output
    out = args[args.index("-o") + 1]
    return {"run": read_run(out), "meta": json.loads(Path(out + ".json").read_text())}


def _as_matrix(run) -> np.ndarray:
    return np.array([[run[q][p] for p in IDS] for q in QIDS], dtype=np.float32)


def _ranking(m: np.ndarray) -> list[list[int]]:
    return [list(np.argsort(-row, kind="stable")) for row in m]


def _fp16_close(a: np.ndarray, b: np.ndarray) -> None:
    assert np.abs(a - b).max() <= 2e-3 * max(1.0, float(np.abs(b).max())), np.abs(a - b).max()


@pytest.mark.parametrize("kind", ["colbert", "prettr"])
def test_kd_search_reranks_a_candidates_file_as_the_notebook_with_and_without_a_store(
        kind, files, colbert_dir, prettr_dir, bert_vocab, tmp_path):
    tok = tokenizer_of(bert_vocab)
    if kind == "colbert":
        folder = colbert_dir
        model, _ = reference_colbert(folder, bert_vocab)
        ref = reference_scores(model, tok, QUERIES, PASSAGES)
    else:
        folder = prettr_dir
        ref = prettr_reference_scores(reference_prettr(folder), tok, QUERIES, PASSAGES)
    plain = _search(["--reranker", str(folder), "--candidates", str(files["top"]), "-o", str(tmp_path / "plain")])
    got = _as_matrix(plain["run"])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert _ranking(got) == _ranking(ref)
    meta = plain["meta"]
    assert meta["reranker"]["kind"] == ("late-interaction" if kind == "colbert" else "split")
    assert meta["reranker"]["passage_store"] is None and meta["passage_store"] is None
    assert meta["params"]["depth"] == 100 and meta["spec"]["passage_store"] is None

    store = build_passage_store(files["corpus"], tmp_path / "store", str(folder), device="cpu")
    stored = _search(["--reranker", str(folder), "--candidates", str(files["top"]), "--passage-store", str(store),
                      "-o", str(tmp_path / "stored")])
    got_s = _as_matrix(stored["run"])
    if kind == "prettr":  # a store holds passage states at one query width: the notebook on a query padded to it
        width = json.loads((store / "store.json").read_text())["encoder"]["query_width"]
        ref = prettr_reference_scores(reference_prettr(folder), tok, QUERIES, PASSAGES, width=width)
    _fp16_close(got_s, ref)
    assert _ranking(got_s) == _ranking(ref)
    meta = stored["meta"]
    assert meta["reranker"]["passage_store"] == str(store)
    assert meta["passage_store"]["path"] == str(store) and meta["passage_store"]["misses"] == 0
    assert meta["passage_store"]["passages"] == len(PASSAGES)
    assert meta["spec"]["passage_store"] == str(store)


def test_a_passage_store_is_only_for_colbert_and_prettr(files, colbert_dir, bert_vocab, tmp_path):
    store = build_passage_store(files["corpus"], tmp_path / "store", str(colbert_dir), device="cpu")
    from test_cross_encoder import build_seqclass  # noqa: E402

    cat = build_seqclass(tmp_path / "cat", bert_vocab)
    res = CliRunner().invoke(kd_search, ["--reranker", str(cat), "--candidates", str(files["top"]), "--no-eval",
                                         "--passage-store", str(store), "-o", str(tmp_path / "r"), "--device", "cpu"])
    assert res.exit_code != 0
    line = [ln for ln in res.output.splitlines() if "passage-store" in ln]
    assert line and "cross-encoder" in line[0] and "drop --passage-store" in line[0], res.output
    assert not (tmp_path / "r").exists()
    with pytest.raises(SpecError, match="use it with --reranker"):
        SearchSpec(output="o", first_stage="bm25", topics="t", bm25=Bm25Stage("b"), passage_store=str(store))


def test_every_reranker_kind_has_a_default_depth(colbert_dir, prettr_dir, files):
    assert set(DEFAULT_DEPTHS) == {"bi-encoder", "cross-encoder", "late-interaction", "split"}
    assert default_depth("late-interaction") == default_depth("split") == default_depth("cross-encoder") == 100
    assert default_depth("bi-encoder") == 1000
    for folder in (colbert_dir, prettr_dir):
        spec = spec_from_options({"reranker": str(folder), "candidates": str(files["top"]), "output": "o"})
        assert spec.rerank[-1].depth == 100
