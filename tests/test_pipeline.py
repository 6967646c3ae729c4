"""The one search pipeline (issue #17): SearchSpec validation, run_search called directly, the spec recorded in the
sidecar, kd-search as parse -> spec -> run -> print, and a malformed qrels file named by file:line."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import kd_pyserini  # noqa: F401  (JVM first)
import pytest
from click.testing import CliRunner

from kd_pyserini.search.spec import (Bm25Stage, DenseStage, Encoding, Fusion, RerankStage, SearchSpec, SpecError,
                                     read_spec, spec_from_options)
from kd_pyserini.trec_io import FormatError, read_run

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon").split()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_distilbert_dir):
    """A 40-passage corpus with a BM25 and a dense index, 6 topics and their qrels."""
    import random

    from kd_pyserini.index import build_bm25_index, build_dense_index

    d = tmp_path_factory.mktemp("pipeline")
    rng = random.Random(7)
    docs = {f"d{i}": " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 15))) for i in range(40)}
    corpus = d / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "contents": v}) + "\n" for k, v in docs.items()))
    topics = {str(i): " ".join(rng.choice(WORDS) for _ in range(3)) for i in range(1, 7)}
    (d / "topics.tsv").write_text("".join(f"{k}\t{v}\n" for k, v in topics.items()))
    (d / "qrels.txt").write_text("".join(f"{q} 0 d{int(q) * 3} 1\n" for q in topics))
    return {"dir": d, "corpus": str(corpus), "topics": str(d / "topics.tsv"), "qrels": str(d / "qrels.txt"),
            "bm25": str(build_bm25_index(corpus, d / "bm25", progress=False)),
            "dense": str(build_dense_index(corpus, str(tiny_distilbert_dir), d / "dense", device="cpu",
                                           progress=False)),
            "encoder": str(tiny_distilbert_dir)}


# ------------------------------------------------------------------------------------------------ validation

@pytest.mark.parametrize("kwargs, message", [
    (dict(first_stage="nonsense"), "first stage 'nonsense' is not one of"),
    (dict(first_stage="bm25"), "needs a BM25 index (--bm25-index"),
    (dict(first_stage="dense", bm25=Bm25Stage("b")), "needs a dense index and encoder"),
    (dict(first_stage="hybrid", bm25=Bm25Stage("b"), dense=DenseStage("i", "e")), "needs a fusion method"),
    (dict(first_stage="bm25", bm25=Bm25Stage("b"), fusion=Fusion()), "fusion applies to a hybrid first stage"),
    (dict(first_stage="candidates"), "needs a candidates file (--candidates"),
    (dict(first_stage="candidates", candidates="c.tsv"), "add a re-rank stage"),
    (dict(first_stage="bm25", bm25=Bm25Stage("b"), candidates="c.tsv"), "give --candidates or --first-stage"),
    (dict(first_stage="bm25", bm25=Bm25Stage("b"), topics=None), "--topics is required"),
    (dict(first_stage="bm25", bm25=Bm25Stage("b"), hits=0), "hits must be >= 1"),
    (dict(first_stage="bm25", bm25=Bm25Stage("b"), rerank=(RerankStage("colbert?", "m", 10),)),
     "re-rank stage kind 'colbert?' is not one of"),
    (dict(first_stage="bm25", bm25=Bm25Stage("b"), rerank=(RerankStage("reranker", "m", 0),)),
     "re-rank depth must be >= 1"),
    (dict(first_stage="hybrid", bm25=Bm25Stage("b"), dense=DenseStage("i", "e"), fusion=Fusion("max")),
     "fusion 'max' is not one of"),
    (dict(first_stage="hybrid", bm25=Bm25Stage("b"), dense=DenseStage("i", "e"), fusion=Fusion("rrf",
                                                                                               weights=(1.0,))),
     "1 fusion weights for 2 runs"),
    (dict(first_stage="bm25", bm25=Bm25Stage("b"), mode="sparse"), "mode 'sparse' is not one of"),
    (dict(first_stage="dense", dense=DenseStage("i", "e"), rerank=(RerankStage("reranker", "cat", 100),)),
     "--first-stage dense has no passage text: give --corpus"),
])
def test_a_spec_that_cannot_run_is_one_line_when_made(kwargs, message):
    kw = {"output": "run.txt", "topics": "dl19-passage", **kwargs}
    with pytest.raises(SpecError) as e:
        SearchSpec(**kw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_spec_derives_mode_depths_and_round_trips_through_a_dict():
    spec = SearchSpec("run.txt", "bm25", topics="dl19-passage", bm25=Bm25Stage("b", k1=0.82, b=0.68),
                      first_stage_depth=1000, hits=1000, measures=["nDCG@10"],
                      rerank=[RerankStage("bi-encoder", "tas-b", 1000), RerankStage("reranker", "cat", 100)])
    assert spec.mode == "rerank" and spec.tag == "kd_pyserini-rerank" and spec.output_hits == 100
    assert spec.depth == 1000 and spec.bi_encoder == "tas-b" and spec.measures == ("nDCG@10",)
    back = SearchSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec
    hybrid = SearchSpec("run.txt", "hybrid", topics="t", bm25=Bm25Stage("b"), dense=DenseStage("i", "e"),
                        fusion=Fusion("rrf", depth=50, weights=(1.0, 0.5)), hits=20)
    assert hybrid.mode == "hybrid" and hybrid.depth == 20 and SearchSpec.from_dict(hybrid.to_dict()) == hybrid
    assert SearchSpec.from_dict({**hybrid.to_dict(), "added_later": 1}) == hybrid  # newer keys are ignored


def test_kd_search_options_become_the_spec(tiny):
    """The option rules of kd-search live in spec_from_options: modes inferred, depths defaulted, the encoder read
    from the dense index; kd-search itself only turns SpecError into a usage error."""
    base = {"output": "r.txt", "topics": tiny["topics"], "hits": 1000}
    dense = spec_from_options({**base, "index": tiny["dense"]})  # the index names its encoder
    assert (dense.mode, dense.first_stage, dense.dense.encoder) == ("dense", "dense", tiny["encoder"])
    assert spec_from_options({**base, "index": tiny["bm25"]}).first_stage == "bm25"  # not a FAISS folder
    rr = spec_from_options({**base, "bm25_index": tiny["bm25"], "encoder": "e", "reranker": "cat", "depth": 10})
    assert [(s.kind, s.model, s.depth) for s in rr.rerank] == [("bi-encoder", "e", 1000), ("reranker", "cat", 10)]
    assert rr.first_stage_depth == 1000 and rr.output_hits == 10
    bi = spec_from_options({**base, "bm25_index": tiny["bm25"], "encoder": "e"})
    assert (bi.mode, bi.first_stage, bi.rerank, bi.depth) == ("rerank", "bm25", (RerankStage("bi-encoder", "e",
                                                                                             1000),), 1000)
    hy = spec_from_options({**base, "mode": "hybrid", "index": tiny["dense"], "bm25_index": tiny["bm25"],
                            "method": "rrf", "weights": "1,0.5"})
    assert hy.fusion == Fusion("rrf", 1000, weights=(1.0, 0.5))
    for opts, message in (({"mode": "dense", "reranker": "c"}, "use it with --mode rerank"),
                          ({"bm25_index": tiny["bm25"], "first_stage": "dense"}, "--first-stage picks"),
                          ({"mode": "hybrid", "index": tiny["dense"]}, "--mode hybrid needs --bm25-index"),
                          ({"mode": "hybrid", "index": tiny["dense"], "bm25_index": tiny["bm25"],
                            "weights": "1,x"}, "not a comma-separated list"),
                          ({}, "say what to search")):
        with pytest.raises(SpecError, match=message.replace("-", r"\-")):
            spec_from_options({**base, **opts})


# ------------------------------------------------------------------------------------------------ running

def test_run_search_directly_writes_run_sidecar_and_spec(tiny, tmp_path):
    from kd_pyserini.search.pipeline import run_search

    spec = SearchSpec(str(tmp_path / "bm25.txt"), "bm25", topics=tiny["topics"], bm25=Bm25Stage(tiny["bm25"]),
                      hits=5, qrels=tiny["qrels"], measures=("nDCG@10", "R@100"))
    res = run_search(spec)
    assert res.output == tmp_path / "bm25.txt" and read_run(res.output) == res.run
    assert len(res.run) == 6 and all(len(d) <= 5 for d in res.run.values())
    assert [label for label, _ in res.eval_rows] == ["bm25"] and set(res.evaluation["run"]) == {"nDCG@10", "R@100"}
    side = json.loads(res.sidecar.read_text())
    assert side["mode"] == "bm25" and side["params"]["hits"] == 5 and side["queries"] == 6
    assert read_spec(res.output) == spec  # the spec it ran is the one the run records
    assert not Path(str(res.output) + ".lock").exists()


def test_run_search_reranks_in_stages_with_one_constructor_each(tiny, tmp_path, monkeypatch):
    """BM25 -> bi-encoder, then the hybrid, each through the pipeline's own builders (counted), evaluated before,
    at the middle stage and after."""
    from kd_pyserini.search import pipeline

    built = []
    for name in ("open_bm25", "open_dense", "open_query_encoder"):
        real = getattr(pipeline, name)
        monkeypatch.setattr(pipeline, name, lambda *a, _real=real, _name=name, **kw: built.append(_name)
                            or _real(*a, **kw))
    spec = SearchSpec(str(tmp_path / "rr.txt"), "bm25", topics=tiny["topics"], bm25=Bm25Stage(tiny["bm25"]),
                      first_stage_depth=20, rerank=(RerankStage("bi-encoder", tiny["encoder"], 20),), hits=10,
                      qrels=tiny["qrels"], encoding=Encoding(device="cpu"))
    res = pipeline.run_search(spec)
    assert built == ["open_query_encoder", "open_bm25"]
    assert [label for label, _ in res.eval_rows] == ["before", "after"] and res.before is not None
    assert all(len(d) == 10 for d in res.run.values())
    side = json.loads(res.sidecar.read_text())
    assert side["params"]["depth"] == 20 and side["encoder"]["model_id"] == tiny["encoder"]
    built.clear()
    hybrid = SearchSpec(str(tmp_path / "hy.txt"), "hybrid", topics=tiny["topics"], bm25=Bm25Stage(tiny["bm25"]),
                        dense=DenseStage(tiny["dense"], tiny["encoder"]), fusion=Fusion("rrf", depth=20), hits=7,
                        qrels=tiny["qrels"], encoding=Encoding(device="cpu"), evaluate=True)
    res = pipeline.run_search(hybrid)
    assert built == ["open_bm25", "open_dense"]
    assert [label for label, _ in res.eval_rows] == ["bm25", "dense", "rrf"]
    assert all(len(d) <= 7 for d in res.run.values())


def test_kd_search_is_parse_spec_run_print(tiny, tmp_path, monkeypatch):
    """kd-search hands run_search the spec its options make and prints what comes back; nothing else runs."""
    from kd_pyserini.cli.search import main
    from kd_pyserini.search import pipeline

    seen = []
    real = pipeline.run_search
    monkeypatch.setattr(pipeline, "run_search", lambda spec, **kw: seen.append(spec) or real(spec, **kw))
    out = tmp_path / "run.txt"
    r = CliRunner().invoke(main, ["--index", tiny["bm25"], "--topics", tiny["topics"], "--qrels", tiny["qrels"],
                                  "--hits", "3", "-o", str(out), "-m", "nDCG@10"])
    assert r.exit_code == 0, r.output
    (spec,) = seen
    assert spec == spec_from_options({"index": tiny["bm25"], "topics": tiny["topics"], "qrels": tiny["qrels"],
                                      "hits": 3, "output": str(out), "measures": "nDCG@10",
                                      "threads": spec.threads})
    assert "bm25          nDCG@10" in r.output and read_spec(out) == spec


# ------------------------------------------------------------------------------------------------ item 8: qrels

def _malformed_data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data" / "topics-and-qrels"
    d.mkdir(parents=True)
    (d / "topics.dl19-passage.txt").write_text("1\tfirst query\n2\tsecond query\n")
    (d / "qrels.dl19-passage.txt").write_text("1 0 d1 1\n2 0 d2\n")  # line 2 has 3 fields
    return d


def test_malformed_topic_qrels_is_a_file_line_error_not_no_qrels(tmp_path, monkeypatch):
    """A search whose topics' own qrels file is malformed stops with the file:line error read_qrels gives (it used
    to be reported as "no qrels found")."""
    from kd_pyserini.search.sidecar import qrels_for
    from kd_pyserini.search.topics import resolve_topics

    d = _malformed_data_dir(tmp_path)
    monkeypatch.setenv("KD_PYSERINI_DATA", str(d.parent))
    with pytest.raises(FormatError) as e:
        qrels_for(resolve_topics("dl19-passage"), None)
    assert f"{d / 'qrels.dl19-passage.txt'}:2:" in str(e.value) and "3 fields; expected 4" in str(e.value)


def test_missing_topic_qrels_is_still_no_qrels(tmp_path, monkeypatch):
    from kd_pyserini import resources
    from kd_pyserini.search.sidecar import qrels_for
    from kd_pyserini.search.topics import Topics

    def unreachable(name):
        raise OSError("no network")

    monkeypatch.setitem(sys.modules, "pyserini.search", types.SimpleNamespace(get_qrels_file=unreachable))
    monkeypatch.setattr(resources, "_local_candidates", lambda filename: [tmp_path / filename])
    assert qrels_for(Topics({"1": "q"}, "dl19-passage"), None) == (None, None)


def test_malformed_qrels_from_pyserini_is_a_file_line_error_not_not_found(tmp_path, monkeypatch):
    """resources.get_qrels: a qrels file Pyserini supplies (its cache or a download) that is malformed gives the
    file:line error, not "qrels for dl19-passage not found"."""
    from kd_pyserini import resources

    bad = tmp_path / "qrels.dl19-passage.txt"
    bad.write_text("1 0 d1 one\n")
    monkeypatch.setitem(sys.modules, "pyserini.search", types.SimpleNamespace(get_qrels_file=lambda name: str(bad)))
    monkeypatch.setattr(resources, "_local_candidates", lambda filename: [tmp_path / "elsewhere" / filename])
    with pytest.raises(FormatError) as e:
        resources.get_qrels("dl19-passage")
    assert str(e.value).startswith(f"{bad}:1: grade 'one' is not an integer")


def test_kd_search_with_malformed_topic_qrels_names_file_and_line(tiny, tmp_path, monkeypatch):
    from kd_pyserini.cli.search import main

    d = _malformed_data_dir(tmp_path)
    monkeypatch.setenv("KD_PYSERINI_DATA", str(d.parent))
    out = tmp_path / "run.txt"
    r = CliRunner().invoke(main, ["--index", tiny["bm25"], "--topics", "dl19-passage", "-o", str(out)])
    assert r.exit_code == 1 and "qrels.dl19-passage.txt:2: 3 fields; expected 4" in r.output, r.output
    assert "no qrels found" not in r.output and not out.exists()
