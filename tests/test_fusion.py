"""Tests for kd_pyserini.fusion and the kd-fuse CLI."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import kd_pyserini  # noqa: F401  (JVM first, before any pyserini import)
import pytest
from click.testing import CliRunner

from kd_pyserini import fusion
from kd_pyserini.fusion import comb_mnz, comb_sum, fuse, interpolate, normalize, rrf, tune
from kd_pyserini.trec_io import read_qrels, read_run, write_run

Hit = namedtuple("Hit", "docid score")


def _close(a, b, tol=0.0) -> bool:
    """Two runs with the same queries and documents and scores within ``tol`` (run files keep scores exactly)."""
    return a.keys() == b.keys() and all(a[q].keys() == b[q].keys() and
                                        all(abs(a[q][d] - b[q][d]) <= tol for d in a[q]) for q in a)


def _evaluation():
    """tune's metric comes from kd_pyserini.evaluation: a broken import must fail these tests, never skip them."""
    import kd_pyserini.evaluation

    return kd_pyserini.evaluation


# ------------------------------------------------------------------------------------------------------------- RRF

def test_rrf_hand_computed():
    a = {"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}}
    b = {"q1": {"d3": 5.0, "d1": 4.0}}
    out = rrf([a, b], k=60)
    expected = {"d1": 1 / 61 + 1 / 62, "d3": 1 / 63 + 1 / 61, "d2": 1 / 62}
    assert list(out["q1"]) == ["d1", "d3", "d2"]
    for d, s in expected.items():
        assert out["q1"][d] == pytest.approx(s, abs=1e-15)


def test_rrf_uses_trec_eval_ranks_and_weights():
    # Tied scores: trec_eval ranks docid-descending first, so "b" is rank 1 and "a" rank 2.
    tied = {"q": {"a": 1.0, "b": 1.0}}
    out = rrf([tied], k=0)
    assert out["q"] == {"b": 1.0, "a": 0.5}
    w = rrf([{"q": {"x": 2.0, "y": 1.0}}, {"q": {"y": 2.0, "x": 1.0}}], k=0, weights=[1.0, 3.0])
    assert w["q"] == {"y": 1.0 / 2 + 3.0, "x": 1.0 + 3.0 / 2}
    assert list(w["q"]) == ["y", "x"]
    with pytest.raises(ValueError):
        rrf([tied], weights=[1, 2])


def test_rrf_query_in_one_run_only_and_cutoff():
    out = rrf([{"q1": {"a": 1.0, "b": 0.5}}, {"q2": {"c": 1.0}}], k=60, cutoff=1)
    assert list(out) == ["q1", "q2"]
    assert out["q1"] == {"a": 1 / 61} and out["q2"] == {"c": 1 / 61}


# --------------------------------------------------------------------------------------------------- interpolation

def _random_lists(seed: int, n: int = 30, overlap: int = 12):
    rng = random.Random(seed)
    shared = [f"s{i}" for i in range(overlap)]
    dense_docs = shared + [f"d{i}" for i in range(n - overlap)]
    sparse_docs = shared + [f"b{i}" for i in range(n - overlap)]
    dense = {d: rng.uniform(60, 110) for d in dense_docs}
    sparse = {d: rng.uniform(2, 25) for d in sparse_docs}
    return sparse, dense


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.37, 1.0, 2.5])
@pytest.mark.parametrize("normalization", [False, True])
@pytest.mark.parametrize("weight_on_dense", [False, True])
def test_interpolation_equals_pyserini_hybrid(alpha, normalization, weight_on_dense):
    from pyserini.search.hybrid._searcher import HybridSearcher

    for seed in range(3):
        sparse, dense = _random_lists(seed)
        for k in (1000, 40):
            theirs = HybridSearcher._hybrid_results([Hit(d, s) for d, s in dense.items()],
                                                    [Hit(d, s) for d, s in sparse.items()],
                                                    alpha, k, normalization, weight_on_dense)
            ours = interpolate({"q": sparse}, {"q": dense}, alpha=alpha, normalize=normalization, k=k,
                               weight_on_dense=weight_on_dense)["q"]
            # The same scores, bit for bit, in the same order and cut at the same depth ...
            assert [h.score for h in theirs] == list(ours.values())
            if k == 1000:  # ... for the same documents (all 48; tied min-filled scores may straddle a cut)
                assert {h.docid: h.score for h in theirs} == ours
            if len(set(ours.values())) == len(ours):  # no ties: the very same ranking
                assert [h.docid for h in theirs] == list(ours)
            else:  # ties (alpha=0, or both lists' tops at 0 after normalising): ours in trec_eval order
                assert list(ours) == [d for d, _ in sorted(ours.items(), key=lambda kv: (kv[1], kv[0]),
                                                           reverse=True)]


def test_interpolation_min_fill_by_hand():
    sparse = {"q": {"a": 10.0, "b": 4.0}}
    dense = {"q": {"b": 90.0, "c": 80.0}}
    out = interpolate(sparse, dense, alpha=0.5)["q"]
    # a: missing from dense -> dense min 80; c: missing from sparse -> sparse min 4.
    assert out == {"b": 0.5 * 4 + 90, "a": 0.5 * 10 + 80, "c": 0.5 * 4 + 80}
    assert list(out) == ["b", "a", "c"]
    # A query one list lacks: the empty list contributes 0 (Pyserini's fill for an empty hit list).
    only = interpolate({"q": {"a": 2.0}}, {}, alpha=0.5)
    assert only == {"q": {"a": 1.0}}


def test_interpolation_degenerate_lists_do_not_divide_by_zero():
    from pyserini.search.hybrid._searcher import HybridSearcher

    one_hit_sparse = {"q": {"a": 7.0}}
    dense = {"q": {"a": 100.0, "b": 99.0, "c": 90.0}}
    # Pyserini itself fails on these.
    with pytest.raises(ZeroDivisionError):
        HybridSearcher._hybrid_results([Hit(d, s) for d, s in dense["q"].items()], [Hit("a", 7.0)], 0.5, 10, True)
    out = interpolate(one_hit_sparse, dense, alpha=0.5, normalize=True)["q"]
    # The one-hit sparse list normalises to 0.0 for every document; dense is centred min-max into [-0.5, 0.5].
    assert out == pytest.approx({"a": 0.5, "b": 0.4, "c": -0.5})
    assert list(out) == ["a", "b", "c"]
    equal = interpolate({"q": {"x": 3.0, "y": 3.0}}, {"q": {"x": 5.0, "y": 5.0}}, alpha=0.3, normalize=True)["q"]
    assert equal == {"y": 0.0, "x": 0.0} and list(equal) == ["y", "x"]
    assert all(math.isfinite(s) for s in out.values())


# --------------------------------------------------------------------------------------------- normalisation / comb

@pytest.mark.parametrize("norm", sorted(fusion.NORMALIZATIONS))
def test_normalisations_on_degenerate_lists(norm):
    one = normalize({"q": {"a": 3.5}}, norm)["q"]
    equal = normalize({"q": {"a": 2.0, "b": 2.0, "c": 2.0}}, norm)["q"]
    expected_constant = {"minmax": 1.0, "zscore": 0.0, "max": 1.0, "sum": None, "none": None}[norm]
    for got in (one, equal):
        assert all(math.isfinite(s) for s in got.values())
        assert len(set(got.values())) == 1
        if expected_constant is not None:
            assert set(got.values()) == {expected_constant}
    if norm == "sum":
        assert one == {"a": 1.0} and equal == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert normalize({"q": {}}, norm) == {"q": {}}


def test_normalisations_values_and_order():
    docs = {"q": {"a": 4.0, "b": 2.0, "c": 0.0}}
    assert normalize(docs, "minmax")["q"] == {"a": 1.0, "b": 0.5, "c": 0.0}
    assert normalize(docs, "max")["q"] == {"a": 1.0, "b": 0.5, "c": 0.0}
    assert normalize(docs, "sum")["q"] == {"a": 4 / 6, "b": 2 / 6, "c": 0.0}
    z = normalize(docs, "zscore")["q"]
    sd = math.sqrt(8 / 3)
    assert z == pytest.approx({"a": 2 / sd, "b": 0.0, "c": -2 / sd})
    assert normalize(docs, "none")["q"] == docs["q"]
    neg = {"q": {"a": -1.0, "b": -2.0}}  # MS MARCO -rank scores: order kept by every normalisation
    for norm in fusion.NORMALIZATIONS:
        n = normalize(neg, norm)["q"]
        assert n["a"] > n["b"], norm
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize(docs, "l2")


def test_comb_sum_and_mnz_counts():
    r1 = {"q": {"a": 1.0, "b": 0.5}}
    r2 = {"q": {"a": 0.5, "c": 1.0}}
    r3 = {"q": {"a": 0.25, "b": 0.25}}
    s = comb_sum([r1, r2, r3], norm="none")["q"]
    m = comb_mnz([r1, r2, r3], norm="none")["q"]
    assert s == {"a": 1.75, "c": 1.0, "b": 0.75}
    assert m == {"a": 1.75 * 3, "b": 0.75 * 2, "c": 1.0 * 1}
    assert list(m) == ["a", "b", "c"]
    w = comb_sum([r1, r2], weights=[2.0, 0.0], norm="none")["q"]
    assert w == {"a": 2.0, "b": 1.0, "c": 0.0}
    mm = comb_mnz([r1, r2], norm="minmax")["q"]  # r1 -> a 1, b 0; r2 -> a 0, c 1
    assert mm == {"a": 2.0, "c": 1.0, "b": 0.0}


def test_determinism_of_tie_order_and_truncation():
    docs = [f"doc{i:02d}" for i in range(20)]
    r1 = {"q": {d: 1.0 for d in docs}}
    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    r2 = {"q": {d: 1.0 for d in shuffled}}
    for method, params in [("rrf", {}), ("combsum", {}), ("combmnz", {"norm": "zscore"}),
                           ("interpolation", {"alpha": 0.5, "normalize": True})]:
        a = fuse([r1, {"q": {}}], method, k=5, **params)
        b = fuse([r2, {"q": {}}], method, k=5, **params)
        assert list(a["q"]) == list(b["q"]), method
        assert len(a["q"]) == 5
        # equal input scores: trec_eval order, docid descending, whatever the input order
        assert list(a["q"]) == sorted(docs, reverse=True)[:5], method


def test_fuse_dispatch_errors():
    r = {"q": {"a": 1.0}}
    assert fuse([r, r], "rrf", rrf_k=0)["q"] == {"a": 2.0}
    with pytest.raises(ValueError, match="unknown fusion method"):
        fuse([r, r], "borda")
    with pytest.raises(ValueError, match="exactly two"):
        fuse([r, r, r], "interpolation")
    with pytest.raises(ValueError, match="rrf"):
        fuse([r, r], "rrf", alpha=0.3)
    assert fuse([r], "combsum", k=0) == {"q": {}}


def test_inputs_not_modified():
    r1 = {"q": {"a": 3.0, "b": 1.0}}
    r2 = {"q": {"b": 2.0, "c": 1.0}}
    before = (repr(r1), repr(r2))
    for method in fusion.METHODS:
        fuse([r1, r2], method)
    assert (repr(r1), repr(r2)) == before


# ----------------------------------------------------------------------------------------------------------- tuning

def _tuning_case():
    # q1: only alpha > 0.5 puts the relevant doc first; q2: only alpha < 2/3 does. Best: 0.5 < alpha < 2/3.
    sparse = {"q1": {"r1": 2.0, "x": 0.0}, "q2": {"r2": 0.0, "y": 1.5}}
    dense = {"q1": {"r1": 0.0, "x": 1.0}, "q2": {"r2": 1.0, "y": 0.0}}
    qrels = {"q1": {"r1": 1, "x": 0}, "q2": {"r2": 1, "y": 0}}
    return sparse, dense, qrels


def test_tune_picks_known_best_alpha():
    _evaluation()
    sparse, dense, qrels = _tuning_case()
    best, table = tune([sparse, dense], qrels, "interpolation",
                       grid=[{"alpha": a} for a in (0.0, 0.25, 0.6, 1.0, 2.0)])
    assert best == {"alpha": 0.6}
    assert [p["alpha"] for p, _ in table] == [0.0, 0.25, 0.6, 1.0, 2.0]
    scores = dict((p["alpha"], s) for p, s in table)
    assert scores[0.6] == pytest.approx(1.0)
    assert all(s < 1.0 for a, s in scores.items() if a != 0.6)
    best, table = tune([sparse, dense], qrels, "interpolation")  # default grid 0.0..2.0 step 0.05
    assert len(table) == 41 and best["alpha"] in (0.55, 0.6, 0.65)
    assert best["alpha"] == 0.55  # first of the equal bests in grid order
    # Fixed parameters are carried into the result.
    best, _ = tune([sparse, dense], qrels, "interpolation", grid=[{"alpha": 0.6}], weight_on_dense=False)
    assert best == {"alpha": 0.6, "weight_on_dense": False}


def test_tune_rejects_unrelated_qrels():
    sparse, dense, _ = _tuning_case()
    with pytest.raises(ValueError, match="none of the qrels"):
        tune([sparse, dense], {"q99": {"r1": 1}}, "interpolation")


def test_tune_weights_and_rrf_k():
    _evaluation()
    sparse, dense, qrels = _tuning_case()
    best, table = tune([sparse, dense], qrels, "combsum", norm="none")
    assert len(table) == 21 and best["norm"] == "none"
    w1, w2 = best["weights"]
    assert w1 + w2 == pytest.approx(1.0) and 0.5 < w1 / max(w2, 1e-12) < 2 / 3 + 1e-9
    best, table = tune([sparse, dense], qrels, "rrf")
    assert "rrf_k" in best and len(table) == len(fusion.default_grid("rrf"))


# ---------------------------------------------------------------------------------------------------- real DL runs

def _ndcg10(run, qrels) -> float:
    import pytrec_eval

    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10"})
    per_q = ev.evaluate(run)
    return sum(v["ndcg_cut_10"] for v in per_q.values()) / len(per_q)


@pytest.mark.slow
def test_fuse_real_dl19_runs(data_dir: Path):
    runs_dir = data_dir / "msmarco-dl" / "runs"
    bm25_path, tasb_path = runs_dir / "run.dl19.bm25-default.top100.txt", runs_dir / "run.dl19.tas-b.top100.txt"
    if not bm25_path.exists() or not tasb_path.exists():
        pytest.skip("DL19 runs not in the shared data")
    bm25, tasb = read_run(bm25_path), read_run(tasb_path)
    qrels = read_qrels(data_dir / "topics-and-qrels" / "qrels.dl19-passage.txt")
    scores = {
        "bm25": _ndcg10(bm25, qrels),
        "tas-b": _ndcg10(tasb, qrels),
        "rrf": _ndcg10(fuse([bm25, tasb], "rrf"), qrels),
        "interp a=0.1": _ndcg10(fuse([bm25, tasb], "interpolation", alpha=0.1), qrels),
        "interp a=1.0": _ndcg10(fuse([bm25, tasb], "interpolation", alpha=1.0), qrels),
        "interp norm a=1.0": _ndcg10(fuse([bm25, tasb], "interpolation", alpha=1.0, normalize=True), qrels),
        "combsum": _ndcg10(fuse([bm25, tasb], "combsum"), qrels),
    }
    print("DL19 nDCG@10:", {k: round(v, 4) for k, v in scores.items()})
    # Pyserini's BM25 (default) DL19 nDCG@10 is 0.5058; TAS-B's published 0.717 (this run measures 0.721).
    assert scores["bm25"] == pytest.approx(0.5058, abs=0.001)
    assert 0.70 < scores["tas-b"] < 0.74
    assert scores["rrf"] > scores["bm25"] + 0.1
    for name in ("interp a=0.1", "interp a=1.0", "interp norm a=1.0", "combsum"):
        assert scores["bm25"] < scores[name] < 0.85, name
    fused = fuse([bm25, tasb], "rrf", k=1000)
    assert all(len(docs) <= 200 for docs in fused.values()) and set(fused) == set(bm25) | set(tasb)


# ------------------------------------------------------------------------------------------------------------- CLI

@pytest.fixture()
def two_runs(tmp_path: Path):
    sparse = {"1": {"a": 9.0, "b": 8.0, "c": 1.0}, "2": {"x": 3.0, "y": 2.0}}
    dense = {"1": {"b": 100.0, "c": 99.0, "d": 50.0}, "2": {"y": 80.0, "z": 70.0}}
    return write_run(sparse, tmp_path / "sparse.trec"), write_run(dense, tmp_path / "dense.trec"), sparse, dense


def test_cli_rrf_and_interpolation(tmp_path: Path, two_runs):
    from kd_pyserini.cli.fuse import main

    s_path, d_path, sparse, dense = two_runs
    out = tmp_path / "out" / "fused.trec"
    res = CliRunner().invoke(main, [str(s_path), str(d_path), "--output", str(out), "--run-tag", "mytag"])
    assert res.exit_code == 0, res.output
    assert _close(read_run(out), rrf([read_run(s_path), read_run(d_path)]))
    lines = out.read_text().splitlines()
    assert lines[0].split() == ["1", "Q0", "b", "1", repr(1 / 62 + 1 / 61), "mytag"]  # the exact double

    res = CliRunner().invoke(main, [str(s_path), str(d_path), "--method", "interpolation", "--alpha", "0.5",
                                    "--hits", "2", "-o", str(out)])
    assert res.exit_code == 0, res.output
    got = read_run(out)
    want = interpolate(read_run(s_path), read_run(d_path), alpha=0.5, k=2)
    assert _close(got, want) and all(len(v) == 2 for v in got.values())

    res = CliRunner().invoke(main, [str(s_path), str(d_path), "--method", "combmnz", "--weights", "1,0.5",
                                    "--norm", "zscore", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert _close(read_run(out), comb_mnz([read_run(s_path), read_run(d_path)], weights=[1, 0.5], norm="zscore"))


def test_cli_old_option_names_still_work_with_a_warning(tmp_path: Path, two_runs):
    from kd_pyserini.cli.fuse import main

    s_path, d_path, sparse, dense = two_runs
    out = tmp_path / "fused.trec"
    res = CliRunner().invoke(main, [str(s_path), str(d_path), "--method", "interpolation", "--k", "2",
                                    "--tag=old", "--metric", "nDCG@10", "-o", str(out)])
    assert res.exit_code == 0, res.output
    for old, new in (("--k", "--hits"), ("--tag", "--run-tag"), ("--metric", "--measures")):
        assert f"{old} is deprecated" in res.output and f"use {new}" in res.output
    got = read_run(out)
    assert _close(got, interpolate(sparse, dense, alpha=0.1, k=2)) and all(len(v) == 2 for v in got.values())
    assert out.read_text().split()[5] == "old"
    help_text = CliRunner().invoke(main, ["--help"]).output
    assert "--hits" in help_text and "--run-tag" in help_text and "--k " not in help_text and "--tag" not in help_text


def test_cli_errors(tmp_path: Path, two_runs):
    from kd_pyserini.cli.fuse import main

    s_path, d_path, *_ = two_runs
    bad = tmp_path / "bad.trec"
    bad.write_text("1 Q0 a 1 2.0 t\n1 Q0 b 2 notanumber t\n")
    out = tmp_path / "fused.trec"
    res = CliRunner().invoke(main, [str(s_path), str(bad), "-o", str(out)])
    assert res.exit_code == 1
    assert f"{bad}:2:" in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists()
    res = CliRunner().invoke(main, [str(s_path), str(d_path), str(d_path), "--method", "interpolation", "-o",
                                    str(out)])
    assert res.exit_code == 2 and "exactly two" in res.output
    res = CliRunner().invoke(main, [str(s_path), str(d_path), "--weights", "1", "-o", str(out)])
    assert res.exit_code == 2 and "--weights" in res.output


def test_cli_tune_on_qrels_file(tmp_path: Path):
    _evaluation()
    from kd_pyserini.cli.fuse import main

    sparse, dense, qrels = _tuning_case()
    s_path, d_path = write_run(sparse, tmp_path / "s.trec"), write_run(dense, tmp_path / "d.trec")
    q_path = tmp_path / "qrels.txt"
    q_path.write_text("".join(f"{q} 0 {d} {g}\n" for q, docs in qrels.items() for d, g in docs.items()))
    out = tmp_path / "fused.trec"
    res = CliRunner().invoke(main, [str(s_path), str(d_path), "--method", "interpolation", "--tune-on",
                                    str(q_path), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "chose alpha=0.55" in res.output
    assert _close(read_run(out), interpolate(sparse, dense, alpha=0.55))


@pytest.mark.slow
def test_cli_tune_on_named_qrels_real_runs(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _evaluation()
    from kd_pyserini.cli.fuse import main

    runs_dir = data_dir / "msmarco-dl" / "runs"
    bm25, tasb = runs_dir / "run.dl20.bm25-default.top100.txt", runs_dir / "run.dl20.tas-b.top100.txt"
    if not bm25.exists() or not tasb.exists():
        pytest.skip("DL20 runs not in the shared data")
    monkeypatch.setenv("KD_PYSERINI_DATA", str(data_dir))
    out = tmp_path / "fused.trec"
    res = CliRunner().invoke(main, [str(bm25), str(tasb), "--method", "rrf", "--tune-on", "dl20", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "rrf_k=60 " in res.output and "<- best" in res.output and "chose rrf_k=" in res.output
    fused = read_run(out)
    assert len(fused) == 54 and all(len(d) <= 200 for d in fused.values())
    # Tuned on the same qrels, so at least as good as the default k=60.
    assert _ndcg10(fused, read_qrels(data_dir / "topics-and-qrels" / "qrels.dl20-passage.txt")) >= 0.6323 - 1e-4
    res = CliRunner().invoke(main, [str(bm25), str(tasb), "--tune-on", "dl19-passage", "-o", str(out)])
    assert res.exit_code == 1 and "none of the qrels" in res.output


def test_cli_python_m_help():
    res = subprocess.run([sys.executable, "-m", "kd_pyserini.cli.fuse", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--method" in res.stdout and "sparse" in res.stdout


# ------------------------------------------------------------------------------------------ exact scores, NaN, .gz

def _written_order(path: Path) -> dict[str, list[str]]:
    order: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        qid, _, docid, *_ = line.split()
        order.setdefault(qid, []).append(docid)
    return order


def test_rrf_scores_survive_write_and_read_exactly(tmp_path: Path):
    # RRF scores ~0.01: 6 decimals keep 4 significant digits and merge these two distinct scores
    runs = [{"1": {"a": 3.0, "b": 2.0, "c": 1.0}}, {"1": {"c": 3.0, "b": 2.0, "a": 1.0}}]
    fused = rrf(runs, k=60, weights=[1.0, 0.9999999])  # a beats c by 5e-11; a tie would put c first
    assert len(set(fused["1"].values())) == 3
    back = read_run(write_run(fused, tmp_path / "f.trec"))
    assert back == fused and len(set(back["1"].values())) == 3
    assert _written_order(tmp_path / "f.trec") == {"1": list(fused["1"])}


@pytest.mark.slow
def test_fused_real_dl19_runs_written_exactly_in_fused_order(data_dir: Path, tmp_path: Path):
    from kd_pyserini.candidates import read_top1000

    runs_dir = data_dir / "msmarco-dl" / "runs"
    runs = [read_run(runs_dir / "run.dl19.bm25-default.top100.txt"), read_run(runs_dir / "run.dl19.tas-b.top100.txt"),
            read_top1000(data_dir / "msmarco-dl" / "candidates.dl19.bm25-top100.tsv.gz").run()]
    fused = fuse(runs, "rrf", k=1000)
    out = write_run(fused, tmp_path / "rrf.trec")
    back = read_run(out)
    assert back == fused  # every score reads back as the same double
    for qid, docs in fused.items():
        assert len(set(back[qid].values())) == len(set(docs.values()))  # distinct scores stay distinct
    assert _written_order(out) == {q: list(d) for q, d in fused.items()}  # written order == in-memory order


@pytest.mark.parametrize("method,params", [("rrf", {}), ("interpolation", {}), ("interpolation", {"normalize": True}),
                                           ("combsum", {}), ("combmnz", {"norm": "zscore"})])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_fusion_refuses_non_finite_scores(method, params, bad):
    sparse = {"1": {"a": 2.0, "b": bad, "c": 1.0}}
    dense = {"1": {"a": 0.5, "b": 0.7, "d": 0.1}}
    with pytest.raises(ValueError, match=rf"{method}: run 1, query 1, document b: score {bad} is not a finite"):
        fuse([sparse, dense], method, **params)


def test_fusion_overflow_is_an_error_not_nan():
    huge = {"1": {"a": 1e308, "b": 1.0}}
    with pytest.raises(ValueError, match=r"interpolation: the fused score of query 1, document a is inf"):
        interpolate(huge, huge, alpha=1.0)
    with pytest.raises(ValueError, match=r"combsum: the fused score"):
        comb_sum([huge, huge], norm="none")


def test_cli_nan_input_run_is_refused(tmp_path: Path, two_runs):
    from kd_pyserini.cli.fuse import main

    s_path, _, _, dense = two_runs
    bad = tmp_path / "nan.trec"
    bad.write_text("1 Q0 b 1 100.0 t\n1 Q0 c 2 nan t\n")
    out = tmp_path / "fused.trec"
    res = CliRunner().invoke(main, [str(s_path), str(bad), "--method", "interpolation", "-o", str(out)])
    assert res.exit_code == 1 and res.output.strip().splitlines() == \
        [f"Error: {bad}:2: score 'nan' is not a finite number; NaN and infinite scores have no defined rank order: "
         "fix the system that wrote the run"]
    assert not out.exists()


def test_cli_gz_output_then_kd_eval(tmp_path: Path, two_runs):
    import gzip
    import json

    from kd_pyserini.cli.eval import main as kd_eval
    from kd_pyserini.cli.fuse import main
    from kd_pyserini.evaluation import evaluate

    s_path, d_path, sparse, dense = two_runs
    out = tmp_path / "fused.txt.gz"
    res = CliRunner().invoke(main, [str(s_path), str(d_path), "--method", "rrf", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:2] == b"\x1f\x8b" and gzip.decompress(out.read_bytes()).decode().startswith("1 Q0 b 1 ")
    qrels = {"1": {"b": 2, "d": 1}, "2": {"z": 1}}
    q_path = tmp_path / "qrels.txt"
    q_path.write_text("".join(f"{q} 0 {d} {g}\n" for q, docs in qrels.items() for d, g in docs.items()))
    res = CliRunner().invoke(kd_eval, ["--qrels", str(q_path), "-m", "nDCG@10,RR@10", str(out), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[str(out)] == evaluate(rrf([sparse, dense]), qrels, ["nDCG@10", "RR@10"])


def test_tuning_tests_fail_instead_of_skipping_when_evaluation_is_broken():
    """Issue #17: the tuning tests once skipped (importorskip) when kd_pyserini.evaluation failed to import, so a
    broken evaluation module passed CI. With the module made unimportable they must FAIL."""
    tests = ["test_tune_picks_known_best_alpha", "test_tune_weights_and_rrf_k", "test_cli_tune_on_qrels_file"]
    script = ("import sys, pytest\n"
              "sys.modules['kd_pyserini.evaluation'] = None  # import kd_pyserini.evaluation -> ImportError\n"
              f"ids = [{__file__!r} + '::' + t for t in {tests!r}]\n"
              "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', *ids]))\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parent.parent)
    assert res.returncode == 1, res.stdout[-2000:]
    assert "3 failed" in res.stdout and "skipped" not in res.stdout, res.stdout[-2000:]
