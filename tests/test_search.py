"""kd_pyserini.search: dense, BM25, re-ranking and hybrid search, the held-open searchers, the kd-search CLI
(kd_pyserini.cli.search) and its RUN.json sidecar.

The first part runs on a synthetic corpus with the tiny random DistilBERT (seconds). The ``slow`` part reproduces
the SciFact and TREC-DL numbers from the shared data (skipped when it is absent): the SciFact MiniLM index is
encoded once per session (about 6 minutes on 2 CPU cores). To reuse it across sessions while developing, set
``KD_PYSERINI_TEST_CACHE`` to a folder: the indexes are then kept there (keyed by corpus size and encoder).
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import kd_pyserini  # noqa: F401  (JVM first)
import numpy as np
import pytest
from click.testing import CliRunner

from kd_pyserini.cli.index import main as index_main
from kd_pyserini.index import build_bm25_index, build_dense_index, read_metadata
from kd_pyserini.cli.search import main as search_main
from kd_pyserini.search import (BM25_DEFAULT, Bm25Searcher, Candidates, DenseSearcher, read_candidates, rerank,
                                search_bm25, search_dense, search_hybrid, sidecar_latency)
from kd_pyserini.trec_io import rank, read_run, write_run

WORDS = ("protein cell cancer gene virus immune therapy brain heart blood study patients drug trial risk mouse "
         "model signal kinase receptor tumor infection vaccine dose liver kidney lung muscle bone neuron").split()


# ----------------------------------------------------------------------------------------- synthetic data

@pytest.fixture(scope="module")
def syn(tmp_path_factory, tiny_distilbert_dir):
    """A 200-passage corpus (with two identical passages), topics, qrels, and its dense and BM25 indexes."""
    d = tmp_path_factory.mktemp("syn")
    rng = random.Random(1)
    docs = {f"p{i}": " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for i in range(200)}
    docs["p198"] = docs["p199"] = "identical twin passages about kinase receptor signal"
    corpus = d / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "contents": v}) + "\n" for k, v in docs.items()))
    topics = {f"{i + 1}": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5))) for i in range(25)}
    topics["26"] = "identical twin kinase"
    (d / "topics.tsv").write_text("".join(f"{k}\t{v}\n" for k, v in topics.items()))
    qrels = d / "qrels.txt"
    qrels.write_text("".join(f"{q} 0 p{(int(q) * 7) % 200} 1\n" for q in topics))
    dense = build_dense_index(corpus, str(tiny_distilbert_dir), d / "dense", device="cpu", progress=False)
    bm25 = build_bm25_index(corpus, d / "bm25", progress=False)
    return {"dir": d, "docs": docs, "corpus": corpus, "topics": topics, "topics_file": d / "topics.tsv",
            "qrels": qrels, "dense": dense, "bm25": bm25}


@pytest.fixture(scope="module")
def tiny_qe(tiny_distilbert_dir):
    from kd_pyserini.encoders import get_query_encoder

    return get_query_encoder(str(tiny_distilbert_dir), device="cpu")


def test_search_bm25_matches_lucene_searcher(syn):
    from pyserini.search.lucene import LuceneSearcher

    run = search_bm25(syn["topics"], syn["bm25"], hits=20, threads=2)
    s = LuceneSearcher(str(syn["bm25"]))
    s.set_bm25(*BM25_DEFAULT)
    for qid, q in syn["topics"].items():
        assert {h.docid: float(h.score) for h in s.search(q, k=20)} == run[qid]
    tuned = search_bm25(syn["topics"], syn["bm25"], hits=20, k1=0.82, b=0.68)
    assert tuned["1"] != run["1"]  # the parameters reach Lucene
    # --remove-query drops a hit whose docid is the query id
    r = search_bm25({"p5": syn["docs"]["p5"]}, syn["bm25"], hits=5, remove_query=True)
    assert "p5" not in r["p5"] and len(r["p5"]) == 4


def test_search_dense_equals_exhaustive_dot_products(syn, tiny_qe):
    import faiss

    run = search_dense(syn["topics"], tiny_qe, syn["dense"], hits=1000)
    assert all(len(docs) == 200 for docs in run.values())  # hits capped at the collection size
    index = faiss.read_index(str(syn["dense"] / "index"))
    vecs = index.reconstruct_n(0, index.ntotal)
    q = tiny_qe.encode_batch(list(syn["topics"].values()))
    for (qid, docs), qv in zip(run.items(), q):
        expect = vecs @ qv
        got = np.array([docs[f"p{i}"] for i in range(200)])
        np.testing.assert_allclose(got, expect, rtol=1e-5)


def test_rerank_sources_agree_and_encode_each_passage_once(syn, tiny_distilbert_dir, tmp_path, monkeypatch):
    from kd_pyserini.encoding import TextEncoder
    from kd_pyserini.search import bm25_candidates

    enc = TextEncoder(str(tiny_distilbert_dir), device="cpu")
    calls: list[list[str]] = []
    real = enc.embed

    def spy(texts, max_length, batch_size=None):
        calls.append(list(texts))
        return real(texts, max_length, batch_size)

    monkeypatch.setattr(enc, "embed", spy)
    depth = 30
    # 1. BM25 candidates with text from the Lucene index's raw documents
    c1 = bm25_candidates(syn["topics"], syn["bm25"], depth)
    assert all(c1.texts[d] == syn["docs"][d] for d in c1.texts)
    r1 = rerank(syn["topics"], enc, c1, depth=depth)
    passages = [t for batch in calls for t in batch if t not in syn["topics"].values()]
    unique = {d for docs in c1.run.values() for d in docs}
    assert len(passages) == len(unique)  # each distinct passage encoded once
    # 2. the same candidates as a run file + corpus, 3. as an MS MARCO top1000-style tsv
    write_run(c1.run, tmp_path / "cand.txt")
    c2 = read_candidates(tmp_path / "cand.txt", corpus=syn["corpus"], depth=depth)
    with open(tmp_path / "top.tsv", "w") as f:
        for qid, docs in c1.run.items():
            for d, _ in rank(docs):
                f.write(f"{qid}\t{d}\t{syn['topics'][qid]}\t{syn['docs'][d]}\n")
    c3 = read_candidates(tmp_path / "top.tsv")
    assert c3.queries == syn["topics"]
    r2 = rerank(syn["topics"], enc, c2, depth=depth)
    r3 = rerank(None, enc, c3, depth=depth)  # queries from the file
    assert r1 == r2 == r3
    # score = query . passage, over the top `depth` candidates
    qv = enc.embed([syn["topics"]["3"]], 30)[0]
    for d, s in r1["3"].items():
        assert s == pytest.approx(float(enc.embed([syn["docs"][d]], 200)[0] @ qv), abs=1e-4)
    assert set(r1["3"]) == set(dict(rank(c1.run["3"], depth)))
    with pytest.raises(ValueError, match="--corpus"):
        read_candidates(tmp_path / "cand.txt")


def test_one_top1000_reader_for_search_and_validation(tmp_path):
    from kd_pyserini.candidates import read_top1000
    from kd_pyserini.train.validation import RerankValidator
    from kd_pyserini.trec_io import FormatError

    path = tmp_path / "top.tsv"
    path.write_text("10\tp1\tq ten\tone\n10\tp2\tq ten\ttwo\n10\tp1\tq ten\tone\n2\tp2\tq two\ttwo\n")
    top = read_top1000(path)
    assert top.lists == {"10": ["p1", "p2"], "2": ["p2"]} and top.passages == {"p1": "one", "p2": "two"}
    c = read_candidates(path, depth=1)  # kd_pyserini.search's view: a Candidates, file order as -rank scores
    assert isinstance(c, Candidates) and c.run == {"10": {"p1": -1.0}, "2": {"p2": -1.0}}
    assert c.queries == {"10": "q ten", "2": "q two"} and c.source["format"] == "top1000-tsv"
    # training validation reads the same file with the same reader: topics restrict and allow 3-field rows
    v = RerankValidator(path, {"10": {"p2": 1}, "2": {"p2": 1}})
    assert v.qids == ["2", "10"] and v.candidates == {q: top.lists[q] for q in v.qids}
    (tmp_path / "three.tsv").write_text("10\tp1\tone\n2\tp2\ttwo\n")
    v3 = RerankValidator(tmp_path / "three.tsv", {"2": {"p2": 1}, "10": {"p1": 1}}, topics={"2": "topic two"})
    assert v3.qids == ["2"] and v3.queries == ["topic two"] and v3.candidates == {"2": ["p2"]}
    with pytest.raises(FormatError, match=r"three\.tsv:1: 3 tab-separated fields.*--validation-topics"):
        RerankValidator(tmp_path / "three.tsv", {"2": {"p2": 1}})
    with pytest.raises(FormatError, match=r"three\.tsv:1: 3 tab-separated fields"):
        read_top1000(tmp_path / "three.tsv")


def test_hybrid_is_fusion_of_dense_and_bm25(syn, tiny_qe):
    from kd_pyserini.fusion import fuse

    for method, params in (("interpolation", {"alpha": 0.3, "normalize": True}), ("rrf", {"rrf_k": 60})):
        fused, parts = search_hybrid(syn["topics"], tiny_qe, syn["dense"], syn["bm25"], method, hits=50, depth=100,
                                     return_components=True, **params)
        assert parts["dense"] == search_dense(syn["topics"], tiny_qe, syn["dense"], 100)
        assert parts["bm25"] == search_bm25(syn["topics"], syn["bm25"], 100)
        key = {"rrf_k": params["rrf_k"]} if method == "rrf" else params
        assert fused == fuse([parts["bm25"], parts["dense"]], method, k=50, **key)
    with pytest.raises(ValueError, match="fusion"):
        search_hybrid(syn["topics"], tiny_qe, syn["dense"], syn["bm25"], "borda")


def _cli(args: list[str]):
    r = CliRunner().invoke(search_main, args)
    assert r.exit_code == 0, r.output
    return r


def test_cli_dense_run_sidecar_and_determinism(syn, tiny_distilbert_dir, tmp_path):
    base = ["--topics", str(syn["topics_file"]), "--qrels", str(syn["qrels"]), "--device", "cpu", "--hits", "50"]
    r = _cli(["--encoder", str(tiny_distilbert_dir), "--index", str(syn["dense"]), "--output",
              str(tmp_path / "a.txt"), "--run-tag", "mytag", *base])
    assert "dense" in r.output and "nDCG@10" in r.output
    lines = (tmp_path / "a.txt").read_text().splitlines()
    assert lines[0].split()[1:] == ["Q0", lines[0].split()[2], "1", lines[0].split()[4], "mytag"]
    side = json.loads((tmp_path / "a.txt.json").read_text())
    assert side["mode"] == "dense" and side["encoder"]["model_id"] == str(tiny_distilbert_dir)
    assert side["index"]["path"] == str(syn["dense"].resolve())
    assert side["index"]["metadata"] == read_metadata(syn["dense"])
    assert side["params"]["hits"] == 50 and side["topics"]["num_queries"] == 26
    assert {"kd_pyserini", "pyserini", "torch", "faiss", "transformers"} <= side["versions"].keys()
    assert isinstance(side["command"], list) and side["evaluation"]["run"]["nDCG@10"] >= 0
    # the latency contract: queries, search time (loaded models), whole command; read back by sidecar_latency
    assert side["queries"] == 26 and 0 < side["search_seconds"] <= side["elapsed_seconds"]
    ms, source = sidecar_latency(tmp_path / "a.txt")
    assert ms == pytest.approx(1000 * side["search_seconds"] / 26) and "search time" in source
    assert sidecar_latency(tmp_path / "missing.txt") == (None, None)
    # an --index alone means dense with the encoder its kd_pyserini.json names; same bytes again
    _cli(["--index", str(syn["dense"]), "--output", str(tmp_path / "b.txt"), "--run-tag", "mytag", *base])
    assert (tmp_path / "a.txt").read_bytes() == (tmp_path / "b.txt").read_bytes()
    # MS MARCO format
    _cli(["--index", str(syn["dense"]), "--output", str(tmp_path / "c.tsv"), "--msmarco-format", "--no-eval",
          *base])
    first = (tmp_path / "c.tsv").read_text().splitlines()[0].split("\t")
    assert len(first) == 3 and first[2] == "1"
    # the old --max-length still works for one release, with a warning, as --query-max-length
    r = _cli(["--index", str(syn["dense"]), "--output", str(tmp_path / "d.txt"), "--no-eval", "--max-length", "8",
              *base])
    assert "--max-length is deprecated" in r.output
    assert json.loads((tmp_path / "d.txt.json").read_text())["query_max_length"] == 8


def test_held_open_searchers_match_batch_search(syn, tiny_qe, tiny_distilbert_dir):
    from kd_pyserini.encoding import TextEncoder

    enc = TextEncoder(str(tiny_distilbert_dir), device="cpu")
    dense = DenseSearcher(syn["dense"], enc)
    assert dense.card.model_id == str(tiny_distilbert_dir) and dense.query_max_length == 30
    batch = dense.search_batch(syn["topics"], 10, progress=False)
    assert batch == search_dense(syn["topics"], tiny_qe, syn["dense"], 10)
    for qid, q in list(syn["topics"].items())[:5]:
        v = dense.encode(q)
        assert v.shape == (1, enc.dimension) and v.dtype == np.float32
        np.testing.assert_allclose(v[0], enc.embed([q], 30)[0], rtol=1e-4, atol=1e-5)
        one = dense.search(q, hits=10)
        assert [d for d, _ in one] == list(batch[qid])
        np.testing.assert_allclose([s for _, s in one], list(batch[qid].values()), rtol=1e-4, atol=1e-5)
    lists = dense.search_vectors(dense.encode_batch(["kinase", "virus"]), 3)
    assert len(lists) == 2 and all(len(x) == 3 for x in lists)
    bm25 = Bm25Searcher(syn["bm25"])
    runs = bm25.search_batch(syn["topics"], 20, progress=False)
    assert runs == search_bm25(syn["topics"], syn["bm25"], 20)
    for qid, q in syn["topics"].items():
        assert dict(bm25.search(q, hits=20)) == runs[qid]


def test_dense_search_runs_without_java(tmp_path, tiny_distilbert_dir):
    """kd-search --mode dense must never start the JVM: with a JVM option that makes any start fail, it works."""
    import subprocess

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "contents": f"{WORDS[i]} {WORDS[i + 1]}"}) + "\n"
                              for i in range(20)))
    index = build_dense_index(corpus, str(tiny_distilbert_dir), tmp_path / "dense", device="cpu", progress=False)
    (tmp_path / "topics.tsv").write_text("1\tprotein cell\n2\tvirus immune\n")
    (tmp_path / "qrels.txt").write_text("1 0 d0 1\n2 0 d4 1\n")
    env = {**os.environ, "KD_PYSERINI_JVM_OPTIONS": "-XX:+NoSuchOption"}
    cmd = [sys.executable, "-m", "kd_pyserini.cli.search", "--topics", str(tmp_path / "topics.tsv"), "--qrels",
           str(tmp_path / "qrels.txt"), "--device", "cpu", "--hits", "5"]
    r = subprocess.run([*cmd, "--mode", "dense", "--encoder", str(tiny_distilbert_dir), "--index", str(index),
                        "-o", str(tmp_path / "run.txt")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(read_run(tmp_path / "run.txt")) == 2 and "nDCG@10" in r.stdout
    side = json.loads((tmp_path / "run.txt.json").read_text())
    assert side["queries"] == 2 and side["versions"]["java"] is None
    # the poisoned JVM option does stop Lucene: the same environment cannot search BM25
    bm25 = build_bm25_index(corpus, tmp_path / "bm25", progress=False)
    r = subprocess.run([*cmd, "--mode", "bm25", "--index", str(bm25), "-o", str(tmp_path / "bm25.txt")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0


def test_cli_bm25_ties_in_trec_eval_order(syn, tmp_path):
    _cli(["--mode", "bm25", "--index", str(syn["bm25"]), "--topics", str(syn["topics_file"]), "--output",
          str(tmp_path / "bm25.txt"), "--no-eval"])
    rows = [line.split() for line in (tmp_path / "bm25.txt").read_text().splitlines()]
    run = search_bm25(syn["topics"], syn["bm25"], 1000)
    by_q: dict[str, list[str]] = {}
    for qid, _, docid, r, _, _ in rows:
        by_q.setdefault(qid, []).append(docid)
        assert int(r) == len(by_q[qid])
    for qid, ids in by_q.items():  # trec_eval order: score descending, ties by docid descending
        keys = [(run[qid][d], d) for d in ids]
        assert keys == sorted(keys, reverse=True)
    assert set(by_q["26"][:2]) == {"p198", "p199"}
    side = json.loads((tmp_path / "bm25.txt.json").read_text())
    assert side["params"]["k1"] == 0.9 and side["params"]["b"] == 0.4 and side["bm25_index"]["metadata"]
    r = CliRunner().invoke(search_main, ["--help"])
    assert "0.82" in r.output and "0.68" in r.output


def test_cli_rerank_and_hybrid(syn, tiny_distilbert_dir, tmp_path):
    base = ["--topics", str(syn["topics_file"]), "--qrels", str(syn["qrels"]), "--device", "cpu"]
    r = _cli(["--mode", "rerank", "--encoder", str(tiny_distilbert_dir), "--bm25-index", str(syn["bm25"]),
              "--depth", "20", "--output", str(tmp_path / "rr.txt"), *base])
    assert "before" in r.output and "after" in r.output
    side = json.loads((tmp_path / "rr.txt.json").read_text())
    assert set(side["evaluation"]) >= {"run", "candidates"} and side["params"]["depth"] == 20
    assert max(len(v) for v in read_run(tmp_path / "rr.txt").values()) == 20
    r = _cli(["--mode", "hybrid", "--fusion", "rrf", "--encoder", str(tiny_distilbert_dir), "--index",
              str(syn["dense"]), "--bm25-index", str(syn["bm25"]), "--output", str(tmp_path / "h.txt"), *base])
    assert "bm25" in r.output and "dense" in r.output and "rrf" in r.output
    side = json.loads((tmp_path / "h.txt.json").read_text())
    assert side["params"]["fusion"] == "rrf" and side["params"]["rrf_k"] == 60
    assert side["index"]["metadata"]["encoder"]["model_id"] == str(tiny_distilbert_dir)
    r = CliRunner().invoke(search_main, ["--topics", str(syn["topics_file"]), "--output", str(tmp_path / "x")])
    assert r.exit_code != 0 and "--mode" in r.output


def test_python_m_entry_points(tmp_path):
    import subprocess

    for mod in ("kd_pyserini.index", "kd_pyserini.search", "kd_pyserini.cli.search"):
        r = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "Usage:" in r.stdout, r.stderr[-1000:]


# --------------------------------------------------------------------------------------- real data (slow)

MINILM = "all-minilm-l6-v2"


def _cache(tmp_path_factory, name: str) -> Path:
    root = os.environ.get("KD_PYSERINI_TEST_CACHE")
    return Path(root) / name if root else tmp_path_factory.mktemp("scifact") / name


@pytest.fixture(scope="session")
def scifact(data_dir) -> dict[str, Path]:
    corpus = data_dir / "scifact" / "corpus.jsonl.gz"
    if not corpus.is_file():
        pytest.skip(f"{corpus} not found")
    return {"corpus": corpus}


@pytest.fixture(scope="session")
def scifact_bm25(scifact, tmp_path_factory) -> Path:
    out = _cache(tmp_path_factory, f"scifact-bm25-{scifact['corpus'].stat().st_size}")
    if not (out / "kd_pyserini.json").is_file():
        r = CliRunner().invoke(index_main, ["bm25", "--corpus", str(scifact["corpus"]), "--output", str(out),
                                            "--threads", "2", "--no-progress", "--overwrite"])
        assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="session")
def scifact_dense(scifact_minilm_index) -> Path:
    """SciFact encoded by all-MiniLM-L6-v2 (max length 256), once per session: conftest's index, built by README's
    own quick-start command and shared with tests/test_readme.py."""
    return scifact_minilm_index


@pytest.mark.slow
def test_scifact_bm25_reproduces_pyserini(scifact_bm25, tmp_path):
    from kd_pyserini.evaluation import evaluate
    from kd_pyserini.resources import get_qrels

    meta = read_metadata(scifact_bm25)
    assert meta["stats"]["documents"] == 5183 and meta["corpus"]["format"] == "beir"
    _cli(["--mode", "bm25", "--index", str(scifact_bm25), "--topics", "scifact", "--output",
          str(tmp_path / "bm25.txt"), "--threads", "2"])
    side = json.loads((tmp_path / "bm25.txt.json").read_text())["evaluation"]["run"]
    assert round(side["nDCG@10"], 4) == 0.6789 and round(side["R@100"], 4) == 0.9253
    # the same numbers from the run file as written (6-decimal scores), as trec_eval would read it
    values = evaluate(read_run(tmp_path / "bm25.txt"), get_qrels("scifact"), ["nDCG@10", "R@100", "R@1000"])
    assert (round(values["nDCG@10"], 4), round(values["R@100"], 4), round(values["R@1000"], 4)) == \
        (0.6789, 0.9253, 0.9767)


@pytest.fixture(scope="session")
def scifact_runs(scifact_dense, scifact_bm25, data_dir):
    from kd_pyserini.encoders import get_query_encoder

    qe = get_query_encoder(MINILM, device="cpu")
    dense = search_dense("scifact", qe, scifact_dense, 1000)
    bm25 = search_bm25("scifact", scifact_bm25, 1000, threads=2)
    return {"qe": qe, "dense": dense, "bm25": bm25}


@pytest.mark.slow
def test_scifact_dense_reproduces_minilm_and_pyserini(scifact_dense, scifact_runs, tmp_path):
    from kd_pyserini.evaluation import evaluate
    from kd_pyserini.resources import get_qrels, get_topics
    from pyserini.search.faiss import FaissSearcher

    meta = read_metadata(scifact_dense)
    assert meta["encoder"]["name"] == MINILM and meta["dimension"] == 384 and meta["max_length"]["passage"] == 256
    assert meta["num_vectors"] == 5183
    qrels = get_qrels("scifact")
    values = evaluate(scifact_runs["dense"], qrels, ["nDCG@10", "R@100"])
    assert round(values["nDCG@10"], 4) == 0.6451  # the model's published SciFact figure
    # Pyserini's FaissSearcher on the same folder returns the same top 10 for every query
    topics = get_topics("scifact")
    searcher = FaissSearcher(str(scifact_dense), scifact_runs["qe"])
    theirs = searcher.batch_search(list(topics.values()), list(topics), k=10)
    for qid in topics:
        assert [h.docid for h in theirs[qid]] == list(scifact_runs["dense"][qid])[:10]
    for qid in list(topics)[:25]:  # single-query path too
        assert [h.docid for h in searcher.search(topics[qid], k=10)] == list(scifact_runs["dense"][qid])[:10]
    # and the CLI (dense mode inferred from --encoder + --index) writes the same numbers
    r = _cli(["--encoder", MINILM, "--index", str(scifact_dense), "--topics", "scifact", "--output",
              str(tmp_path / "dense.txt"), "--device", "cpu"])
    assert "nDCG@10 0.6451" in r.output
    assert json.loads((tmp_path / "dense.txt.json").read_text())["encoder"]["name"] == MINILM


def dl19_tuned_alpha() -> float:
    """Normalised-interpolation alpha tuned for nDCG@10 on TREC-DL 2019 (BM25 + TAS-B runs of the shared data).

    SciFact has only a test split, so its hybrid weight is tuned on another topic set (0.45 with the shared runs).
    """
    from kd_pyserini.fusion import tune
    from kd_pyserini.resources import data_dir, get_qrels

    runs = data_dir() / "msmarco-dl" / "runs"
    best, _ = tune([read_run(runs / "run.dl19.bm25-default.top100.txt"), read_run(runs / "run.dl19.tas-b.top100.txt")],
                   get_qrels("dl19-passage"), "interpolation", metric="nDCG@10", normalize=True)
    return best["alpha"]


@pytest.mark.slow
def test_scifact_hybrid_beats_both(scifact_runs, scifact_dense, scifact_bm25, data_dir, monkeypatch):
    from kd_pyserini.evaluation import evaluate
    from kd_pyserini.fusion import fuse
    from kd_pyserini.resources import get_qrels

    monkeypatch.setenv("KD_PYSERINI_DATA", str(data_dir))
    qrels = get_qrels("scifact")
    ndcg = {k: evaluate(scifact_runs[k], qrels, ["nDCG@10"])["nDCG@10"] for k in ("bm25", "dense")}
    alpha = dl19_tuned_alpha()
    assert alpha == pytest.approx(0.45)
    interp = fuse([scifact_runs["bm25"], scifact_runs["dense"]], "interpolation", alpha=alpha, normalize=True)
    rrf = fuse([scifact_runs["bm25"], scifact_runs["dense"]], "rrf", rrf_k=60)
    for fused in (interp, rrf):
        assert evaluate(fused, qrels, ["nDCG@10"])["nDCG@10"] > max(ndcg.values()) + 0.01
    # search_hybrid gives the same fused run
    assert search_hybrid("scifact", scifact_runs["qe"], scifact_dense, scifact_bm25, "rrf", threads=2) == rrf


@pytest.mark.slow
def test_scifact_compressed_index_keeps_quality(scifact_dense, scifact_runs, tmp_path):
    from kd_pyserini.evaluation import evaluate
    from kd_pyserini.index import convert_dense_index
    from kd_pyserini.resources import get_qrels

    qrels = get_qrels("scifact")
    flat = evaluate(scifact_runs["dense"], qrels, ["nDCG@10"])["nDCG@10"]
    for t, tol in (("fp16", 0.001), ("hnsw", 0.005), ("sq8", 0.01)):
        out = convert_dense_index(scifact_dense, tmp_path / t, index=t, progress=False)
        run = search_dense("scifact", scifact_runs["qe"], out, 1000)
        assert abs(evaluate(run, qrels, ["nDCG@10"])["nDCG@10"] - flat) <= tol, t


@pytest.mark.slow
def test_dl19_rerank_bm25_candidates_with_minilm(data_dir, tmp_path):
    cands = data_dir / "msmarco-dl" / "candidates.dl19.bm25-top100.tsv.gz"
    if not cands.is_file():
        pytest.skip(f"{cands} not found")
    r = _cli(["--mode", "rerank", "--encoder", MINILM, "--candidates", str(cands), "--topics", "dl19-passage",
              "--output", str(tmp_path / "rr.txt"), "--device", "cpu", "--batch-size", "64"])
    ev = json.loads((tmp_path / "rr.txt.json").read_text())["evaluation"]
    before, after = ev["candidates"]["nDCG@10"], ev["run"]["nDCG@10"]
    assert round(before, 4) == 0.5058  # the BM25 top 100, as Anserini ranks it
    assert after > before + 0.1, (before, after)
    assert "before" in r.output and "after" in r.output
    run = read_run(tmp_path / "rr.txt")
    assert len(run) == 43 and all(len(d) == 100 for d in run.values())


# ------------------------------------------------------------------------------- reliability (kd-search's output)

def _dense_args(syn, tiny_distilbert_dir, out, hits: int) -> list[str]:
    return ["--encoder", str(tiny_distilbert_dir), "--index", str(syn["dense"]), "--topics", str(syn["topics_file"]),
            "--qrels", str(syn["qrels"]), "--device", "cpu", "--hits", str(hits), "--output", str(out),
            "--no-progress"]


def _docs_per_query(path) -> int:
    return max(len(docs) for docs in read_run(path).values())


def _assert_pair_agrees(out: Path, old: tuple[bytes, bytes] | None = None) -> None:
    """The run and RUN.json as every reader sees them: the sidecar describes the run beside it, or is refused."""
    from kd_pyserini.search import read_sidecar

    side = read_sidecar(out)
    if side is None:  # refused (or none): no latency either, and the old run (if any) is still there
        assert sidecar_latency(out) == (None, None)
        if old is not None:
            assert out.read_bytes() == old[0]
        return
    assert side["params"]["hits"] == _docs_per_query(out)  # the sidecar's run IS the run on disk
    assert side["queries"] == len(read_run(out))
    if old is not None and side["params"]["hits"] == json.loads(old[1])["params"]["hits"]:
        assert (out.read_bytes(), Path(str(out) + ".json").read_bytes()) == old  # the old pair, untouched


def _replace_bomb(outdir: Path, at: int, action):
    """An os.replace that runs ``action`` instead of the ``at``-th rename into ``outdir``."""
    real = os.replace
    count = [0]

    def replace(src, dst, *a, **kw):
        if os.path.dirname(os.path.abspath(dst)) == str(outdir):
            count[0] += 1
            if count[0] == at:
                action()
        return real(src, dst, *a, **kw)

    return replace


@pytest.mark.parametrize("at", [1, 2, 3, 4])
def test_cli_interrupted_write_never_leaves_a_mismatched_pair(syn, tiny_distilbert_dir, tmp_path, monkeypatch, at):
    out = tmp_path / "out" / "run.txt"
    _cli(_dense_args(syn, tiny_distilbert_dir, out, hits=5))  # the old pair
    old = (out.read_bytes(), Path(str(out) + ".json").read_bytes())

    def interrupt():
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", _replace_bomb(out.parent, at, interrupt))
    r = CliRunner().invoke(search_main, _dense_args(syn, tiny_distilbert_dir, out, hits=7))
    monkeypatch.undo()
    if r.exit_code == 0:  # fewer renames than `at`: it simply finished
        assert _docs_per_query(out) == 7
    else:
        assert r.exit_code == 130, r.output
    _assert_pair_agrees(out, old)
    leftovers = sorted(p.name for p in out.parent.iterdir()) if r.exit_code else []
    assert leftovers in ([], ["run.txt", "run.txt.json"])  # no temporary files, no lock file


KILL_SCRIPT = """
import os, sys
real, outdir, at, count = os.replace, os.path.abspath(sys.argv[1]), int(sys.argv[2]), [0]
def replace(src, dst, *a, **kw):
    if os.path.dirname(os.path.abspath(dst)) == outdir:
        count[0] += 1
        if count[0] == at:
            os._exit(137)  # killed: no clean-up runs
    return real(src, dst, *a, **kw)
os.replace = replace
from kd_pyserini.cli.search import main
main(sys.argv[3:])
"""


@pytest.mark.parametrize("at", [2, 4])
def test_cli_killed_between_the_writes_never_leaves_a_mismatched_pair(syn, tiny_distilbert_dir, tmp_path, at):
    import subprocess

    out = tmp_path / "run.txt"
    _cli(_dense_args(syn, tiny_distilbert_dir, out, hits=5))
    old = (out.read_bytes(), Path(str(out) + ".json").read_bytes())
    r = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(tmp_path), str(at),
                        *_dense_args(syn, tiny_distilbert_dir, out, hits=7)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 137, r.stderr[-2000:]
    _assert_pair_agrees(out, old)
    # the next kd-search on this output finishes the job and clears what the killed one left
    _cli(_dense_args(syn, tiny_distilbert_dir, out, hits=7))
    _assert_pair_agrees(out)
    assert _docs_per_query(out) == 7 and sorted(p.name for p in tmp_path.iterdir()) == ["run.txt", "run.txt.json"]


GATED_SCRIPT = """
import sys, time
from pathlib import Path
import kd_pyserini.cli.search as cli, kd_pyserini.search.pipeline as pipeline
inside, go = Path(sys.argv[1]), Path(sys.argv[2])
real = pipeline.resolve_topics
def gated(*a, **kw):  # hold the command (and its lock) until the test says go
    inside.touch()
    t = time.time()
    while not go.exists() and time.time() - t < 240:
        time.sleep(0.05)
    return real(*a, **kw)
pipeline.resolve_topics = gated
cli.main(sys.argv[3:])
"""


def test_cli_second_writer_on_one_output_is_refused(syn, tiny_distilbert_dir, tmp_path):
    import subprocess

    from kd_pyserini.search import read_sidecar
    from kd_pyserini.search.sidecar import file_sha256

    out = tmp_path / "run.txt"
    inside, go = tmp_path / "inside", tmp_path / "go"
    first = subprocess.Popen([sys.executable, "-c", GATED_SCRIPT, str(inside), str(go),
                              *_dense_args(syn, tiny_distilbert_dir, out, hits=5)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = __import__("time").time()
        while not inside.exists():
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert __import__("time").time() - t0 < 240
            __import__("time").sleep(0.05)
        second = subprocess.run([sys.executable, "-m", "kd_pyserini.cli.search",
                                 *_dense_args(syn, tiny_distilbert_dir, out, hits=7)],
                                capture_output=True, text=True, timeout=300)
    finally:
        go.touch()
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 1, second.stderr[-2000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: another kd-search is writing {out} (pid {first.pid}); wait for it or choose another "
                      "--output"]
    assert "Traceback" not in second.stderr
    # exactly one run was written, and its sidecar describes it
    side = read_sidecar(out)
    assert side is not None and side["run_sha256"] == file_sha256(out) and _docs_per_query(out) == 5
    assert side["params"]["hits"] == 5 and not Path(str(out) + ".lock").exists()


def test_sidecar_with_another_runs_checksum_is_refused(syn, tiny_distilbert_dir, tmp_path, caplog):
    from kd_pyserini.search import read_sidecar

    out = tmp_path / "run.txt"
    _cli(_dense_args(syn, tiny_distilbert_dir, out, hits=5))
    assert read_sidecar(out)["run_sha256"] and sidecar_latency(out)[0] is not None
    write_run(read_run(out), out, k=3)  # the run replaced behind the sidecar's back
    assert read_sidecar(out) is None and sidecar_latency(out) == (None, None)
    assert "does not describe" in caplog.text
    out.unlink()
    assert read_sidecar(out) is None


def test_cli_gz_output_is_gzip_with_plain_json_sidecar(syn, tiny_distilbert_dir, tmp_path):
    from kd_pyserini.search import read_sidecar

    _cli(_dense_args(syn, tiny_distilbert_dir, tmp_path / "run.txt", hits=5))
    gz = tmp_path / "run.txt.gz"
    _cli(_dense_args(syn, tiny_distilbert_dir, gz, hits=5))
    assert gz.read_bytes()[:2] == b"\x1f\x8b"  # gzip magic
    assert read_run(gz) == read_run(tmp_path / "run.txt")
    side = json.loads((tmp_path / "run.txt.gz.json").read_text(encoding="utf-8"))  # plain JSON
    assert side["queries"] == 26 and read_sidecar(gz) == side


DL19_CANDIDATES = "msmarco-dl/candidates.dl19.bm25-top100.tsv.gz"


def test_cli_rerank_subset_compares_like_with_like(data_dir, tiny_distilbert_dir, tmp_path):
    from kd_pyserini.candidates import read_top1000
    from kd_pyserini.evaluation import evaluate
    from kd_pyserini.resources import get_qrels, get_topics

    cands = data_dir / DL19_CANDIDATES
    if not cands.is_file():
        pytest.skip(f"{cands} not found")
    five = dict(list(get_topics("dl19-passage").items())[:5])
    (tmp_path / "five.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in five.items()))
    r = _cli(["--mode", "rerank", "--encoder", str(tiny_distilbert_dir), "--candidates", str(cands), "--topics",
              str(tmp_path / "five.tsv"), "--qrels", "dl19-passage", "--output", str(tmp_path / "rr.txt"),
              "--device", "cpu", "--no-progress"])
    run = read_run(tmp_path / "rr.txt")
    assert sorted(run) == sorted(five)  # the topics asked for, not every query the file carries
    qrels = get_qrels("dl19-passage")
    bm25 = read_top1000(cands).run()
    ev = json.loads((tmp_path / "rr.txt.json").read_text())["evaluation"]
    before = evaluate({q: bm25[q] for q in five}, qrels, ["nDCG@10"])["nDCG@10"]
    assert round(before, 4) == 0.0533 and ev["candidates"]["nDCG@10"] == pytest.approx(before)  # not 0.5058
    assert ev["run"]["nDCG@10"] == pytest.approx(evaluate(run, qrels, ["nDCG@10"])["nDCG@10"], abs=1e-6)
    assert "before        nDCG@10 0.0533" in r.output
    assert f"kd-search: warning: {tmp_path / 'rr.txt'}: 38 of 43 judged queries have no results" in r.output


def _one_error_line(r) -> str:
    assert r.exit_code == 1, (r.output, r.exception)
    assert "Traceback" not in r.output
    errors = [line for line in r.output.splitlines() if "Error" in line]
    assert len(errors) == 1 and errors[0].startswith("Error: ") and r.output.rstrip().endswith(errors[0]), r.output
    return errors[0]


def test_cli_offline_hub_encoder_is_one_line(syn, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = CliRunner().invoke(search_main, ["--encoder", "sebastian-hofstaetter/distilbert-dot-tas_b-b256-msmarco",
                                         "--index", str(syn["dense"]), "--topics", str(syn["topics_file"]),
                                         "--output", str(tmp_path / "run.txt")])
    line = _one_error_line(r)
    assert "hf download" in line and not (tmp_path / "run.txt").exists()


def test_cli_max_length_above_position_limit_is_refused(syn, tiny_distilbert_dir, tmp_path, monkeypatch):
    from kd_pyserini.encoding import TextEncoder

    calls = []
    real = TextEncoder.embed
    monkeypatch.setattr(TextEncoder, "embed", lambda self, *a, **kw: calls.append(1) or real(self, *a, **kw))
    monkeypatch.setattr(TextEncoder, "embed_one", lambda self, *a, **kw: calls.append(1))
    base = ["--encoder", str(tiny_distilbert_dir), "--topics", str(syn["topics_file"]), "--device", "cpu",
            "--output", str(tmp_path / "run.txt")]
    line = _one_error_line(CliRunner().invoke(search_main, [*base, "--index", str(syn["dense"]),
                                                            "--query-max-length", "600"]))
    assert "--query-max-length" in line and "512" in line
    line = _one_error_line(CliRunner().invoke(search_main, [*base, "--mode", "rerank", "--bm25-index",
                                                            str(syn["bm25"]), "--passage-max-length", "513"]))
    assert "--passage-max-length" in line and "512" in line
    assert calls == [] and not (tmp_path / "run.txt").exists()  # refused before encoding anything
    _cli([*base, "--index", str(syn["dense"]), "--query-max-length", "512", "--no-eval"])  # the limit itself is fine


@pytest.mark.parametrize("metadata", [True, False])
def test_cli_truncated_faiss_index_is_one_line(syn, tiny_distilbert_dir, tmp_path, metadata):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(syn["dense"], broken)
    data = (broken / "index").read_bytes()
    (broken / "index").write_bytes(data[:len(data) // 2])
    if not metadata:  # e.g. Pyserini's own index: nothing on record, FAISS itself finds the short read
        (broken / "kd_pyserini.json").unlink()
    r = CliRunner().invoke(search_main, ["--encoder", str(tiny_distilbert_dir), "--index", str(broken), "--topics",
                                         str(syn["topics_file"]), "--device", "cpu", "--output",
                                         str(tmp_path / "run.txt")])
    line = _one_error_line(r)
    assert str(broken / "index") in line and "truncated" in line and not (tmp_path / "run.txt").exists()


def test_cli_allow_encoder_mismatch_and_its_old_name(syn, tiny_distilbert_dir, tmp_path):
    import shutil

    from transformers import AutoModel

    other = tmp_path / "other-encoder"  # the same architecture and size, other weights
    shutil.copytree(tiny_distilbert_dir, other)
    model = AutoModel.from_pretrained(other)
    with __import__("torch").no_grad():
        for w in model.parameters():
            w.mul_(-1.0)
    model.save_pretrained(other)
    base = ["--encoder", str(other), "--index", str(syn["dense"]), "--topics", str(syn["topics_file"]),
            "--device", "cpu", "--no-eval"]
    line = _one_error_line(CliRunner().invoke(search_main, [*base, "--output", str(tmp_path / "a.txt")]))
    assert "built with encoder" in line and "--allow-encoder-mismatch" in line
    _cli([*base, "--output", str(tmp_path / "b.txt"), "--allow-encoder-mismatch"])
    r = _cli([*base, "--output", str(tmp_path / "c.txt"), "--ignore-encoder-mismatch"])
    assert "--ignore-encoder-mismatch is deprecated" in r.output and "--allow-encoder-mismatch" in r.output
    assert read_run(tmp_path / "b.txt") == read_run(tmp_path / "c.txt")
    r = CliRunner().invoke(search_main, ["--help"])
    assert "--allow-encoder-mismatch" in r.output and "--ignore-encoder-mismatch" not in r.output


def test_candidates_are_read_strictly(tmp_path, tiny_distilbert_dir):
    import gzip

    from kd_pyserini.trec_io import FormatError

    rows = "1\tp1\tq one\tpassage one\n1\tp2\tq one\tpassage two\n2\tp1\tq two\tpassage one\n"
    bom = tmp_path / "bom.tsv"
    bom.write_bytes(b"\xef\xbb\xbf" + rows.encode("utf-8"))
    c = read_candidates(bom)
    assert c.queries == {"1": "q one", "2": "q two"} and list(c.run) == ["1", "2"]  # no '\ufeff1'
    r = _cli(["--mode", "rerank", "--encoder", str(tiny_distilbert_dir), "--candidates", str(bom), "--device",
              "cpu", "--output", str(tmp_path / "rr.txt"), "--no-eval"])
    assert sorted(read_run(tmp_path / "rr.txt")) == ["1", "2"], r.output
    for name, bad, msg in (("fields.tsv", "2\tp2\tq two\tpassage\textra\n", "5 tab-separated fields"),
                           ("nopid.tsv", "2\t \tq two\tpassage two\n", "empty pid")):
        (tmp_path / name).write_text(rows + bad)
        with pytest.raises(FormatError, match=rf"{name}:4: {msg}"):
            read_candidates(tmp_path / name)
        r = CliRunner().invoke(search_main, ["--mode", "rerank", "--encoder", str(tiny_distilbert_dir),
                                             "--candidates", str(tmp_path / name), "--output",
                                             str(tmp_path / "x.txt")])
        assert _one_error_line(r).startswith(f"Error: {tmp_path / name}:4: {msg}")
    data = gzip.compress((rows * 2000).encode("utf-8"))
    (tmp_path / "cut.tsv.gz").write_bytes(data[:len(data) // 2])
    with pytest.raises(FormatError, match=r"cut\.tsv\.gz:\d+: .*gzip"):
        read_candidates(tmp_path / "cut.tsv.gz")
    # a run as candidates goes through the shared strict run reader: file:line
    (tmp_path / "cands.txt").write_text("1 Q0 p1 1 2.0 t\n1 Q0 p2 2 oops t\n")
    with pytest.raises(FormatError, match=r"cands\.txt:2:"):
        read_candidates(tmp_path / "cands.txt", corpus=tmp_path / "unused.jsonl")
