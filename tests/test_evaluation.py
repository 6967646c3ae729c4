"""kd_pyserini.evaluation and kd-eval: trec_eval -c semantics, checked against Java trec_eval (Anserini's jar)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import types
from importlib.machinery import ModuleSpec
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kd_pyserini.cli.eval import main as kd_eval
from kd_pyserini.evaluation import (BENCHMARK_ALIASES, BENCHMARKS, Measure, MeasureError, check_inputs,
                                    compare_runs, evaluate, evaluate_per_query, official_measures, paired_ttest,
                                    parse_measure, parse_measures, randomization_test, read_run_checked,
                                    resolve_benchmark, trec_eval_args)
from kd_pyserini.jvm import anserini_jar, find_java
from kd_pyserini.trec_io import FormatError, read_qrels, read_run

DL_MEASURES = ["nDCG@10", "RR(rel=2)@10", "R(rel=2)@1000", "AP(rel=2)"]
REAL_RUNS = {  # (year, system): published trec_eval -c nDCG@10 (shared/README.md, Pyserini 2CR)
    ("19", "tas-b"): 0.7210, ("20", "tas-b"): 0.6854,
    ("19", "bm25-default"): 0.5058, ("20", "bm25-default"): 0.4796,
}


# ---------------------------------------------------------------------------------------------- helpers

def java_trec_eval(args: list[str], qrels: Path, run: Path) -> dict[tuple[str, str], str]:
    """Run Anserini's trec_eval (``-c -q`` added): ``{(measure, qid): value string}``, ``qid == "all"`` = mean."""
    java = str(find_java().java)  # the Java >= 21 kd_pyserini would start Anserini with (starts no JVM)
    out = subprocess.run([java, "-cp", str(anserini_jar()), "trec_eval", "-c", "-q", *args, str(qrels), str(run)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip(), f"trec_eval failed: {out.stderr}"
    res = {}
    for line in out.stdout.splitlines():
        name, qid, value = line.split()
        res[(name, qid)] = value
    return res


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def run_text(run: dict[str, dict[str, float]]) -> str:
    return "".join(f"{q} Q0 {d} {i} {s!r} t\n" for q, docs in run.items() for i, (d, s) in enumerate(docs.items(), 1))


def qrels_text(qrels: dict[str, dict[str, int]]) -> str:
    return "".join(f"{q} 0 {d} {g}\n" for q, docs in qrels.items() for d, g in docs.items())


# Synthetic data with every trec_eval corner: ties (also across the RR@k cut), a judged query without results, a run
# query without judgements, a query with no relevant document at rel >= 2, one with only non-relevant judgements.
SYN_QRELS = {
    "1": {"a": 2, "b": 1, "c": 0, "d": 3},
    "2": {"e": 1, "f": 0},          # nothing relevant at rel=2
    "3": {"g": 3},                  # not answered by the run: -c zero
    "4": {"h": 0},                  # nothing relevant at all
    "10": {"x": 1, "y": 2, "z": 1},
}
SYN_RUN = {
    "1": {"c": 1.0, "b": 1.0, "a": 0.5, "q": 0.5, "d": 0.25},
    "2": {"e": 3.0, "f": 2.0},
    "4": {"h": 1.0},
    "5": {"zz": 1.0},               # unjudged query: ignored
    "10": {"x": 2.0, "zz": 2.0, "yy": 2.0, "y": 1.0, "u": 0.0, "z": -1.0},  # trec_eval order: zz, yy, x, y, ...
}


# ---------------------------------------------------------------------------------------------- real runs

@pytest.fixture(scope="module")
def real(data_dir: Path):
    qrels = {y: data_dir / "topics-and-qrels" / f"qrels.dl{y}-passage.txt" for y in ("19", "20")}
    runs = {key: data_dir / "msmarco-dl" / "runs" / f"run.dl{key[0]}.{key[1]}.top100.txt" for key in REAL_RUNS}
    return qrels, runs


@pytest.mark.parametrize("key", list(REAL_RUNS), ids=lambda k: f"dl{k[0]}-{k[1]}")
def test_published_ndcg10(real, key):
    qrels_paths, run_paths = real
    got = evaluate(read_run(run_paths[key]), read_qrels(qrels_paths[key[0]]), ["nDCG@10"])
    assert round(got["nDCG@10"], 4) == REAL_RUNS[key]


@pytest.mark.parametrize("key", list(REAL_RUNS), ids=lambda k: f"dl{k[0]}-{k[1]}")
def test_real_runs_agree_with_java_trec_eval(real, key):
    qrels_paths, run_paths = real
    qrels = read_qrels(qrels_paths[key[0]])
    run, warns = read_run_checked(run_paths[key], qrels)
    assert not warns, warns.messages()
    per_query = evaluate_per_query(run, qrels, DL_MEASURES)
    means = evaluate(run, qrels, DL_MEASURES)
    for name in DL_MEASURES:
        args = trec_eval_args(name)
        ref = java_trec_eval(args, qrels_paths[key[0]], run_paths[key])
        te_name = args[-1].replace(".", "_")
        assert f"{means[name]:.4f}" == ref[(te_name, "all")], name
        assert {q: f"{v:.4f}" for q, v in per_query[name].items()} == \
            {q: v for (m, q), v in ref.items() if m == te_name and q != "all"}, name


def test_benchmark_measures_are_the_dl_measures():
    assert [str(m) for m in official_measures("dl19-passage")] == DL_MEASURES
    assert [str(m) for m in official_measures("trec-dl-20")] == DL_MEASURES
    assert [str(m) for m in official_measures("msmarco-passage-dev-subset")] == ["RR@10", "R@1000", "nDCG@10"]
    assert [str(m) for m in official_measures("beir-v1.0.0-scifact-test")] == ["nDCG@10", "R@100"]
    with pytest.raises(KeyError, match="trec-dl-19"):
        official_measures("robust04")


def test_benchmark_aliases_match_resources():
    from kd_pyserini import resources

    for bench in resources.BENCHMARKS.values():
        names = {resolve_benchmark(n) for n in (bench.name, *bench.aliases)}
        assert len(names) == 1 and None not in names, bench
    assert set(BENCHMARK_ALIASES.values()) <= set(BENCHMARKS)


# ---------------------------------------------------------------------------------------------- trec_eval semantics

SYN_MEASURES = ["nDCG@10", "nDCG@3", "nDCG", "RR", "RR@1", "RR@2", "RR(rel=2)@10", "RR(rel=2)@3", "AP", "AP(rel=2)",
                "AP@3", "R@2", "R(rel=2)@1000", "P@2", "P(rel=2)@5", "Success@1"]


def test_synthetic_agrees_with_java_trec_eval(tmp_path):
    qp = write(tmp_path / "qrels.txt", qrels_text(SYN_QRELS))
    rp = write(tmp_path / "run.txt", run_text(SYN_RUN))
    per_query = evaluate_per_query(SYN_RUN, SYN_QRELS, SYN_MEASURES)
    means = evaluate(SYN_RUN, SYN_QRELS, SYN_MEASURES)
    # the cut is applied after trec_eval's tie-breaking: x is third behind the tied zz, yy
    assert (per_query["RR"]["10"], per_query["RR@2"]["10"], per_query["RR(rel=2)@3"]["10"]) == (1 / 3, 0.0, 0.0)
    for name in SYN_MEASURES:
        args = trec_eval_args(name)
        ref = java_trec_eval(args, qp, rp)
        te_name = args[-1].replace(".", "_")
        assert f"{means[name]:.4f}" == ref[(te_name, "all")], (name, args)
        # trec_eval -q prints no line for the judged query without results (3); -c counts it as 0
        java_pq = {q: v for (m, q), v in ref.items() if m == te_name and q != "all"}
        assert {q: f"{v:.4f}" for q, v in per_query[name].items()} == {**java_pq, "3": "0.0000"}, (name, args)


def test_ties_are_broken_by_docid_descending():
    qrels = {"1": {"a": 1}}
    run = {"1": {"a": 1.0, "b": 1.0}}  # trec_eval order: b, a
    assert evaluate(run, qrels, "RR")["RR"] == 0.5
    assert evaluate(run, qrels, "RR@1")["RR@1"] == 0.0  # the cut is applied after trec_eval's ordering
    assert evaluate({"1": {"a": 1.0, "0": 1.0}}, qrels, "RR@1")["RR@1"] == 1.0  # "a" > "0"
    assert evaluate(run, qrels, "P@1")["P@1"] == 0.0
    # a higher score always wins, whatever the docid
    assert evaluate({"1": {"a": 1.0 + 1e-9, "b": 1.0}}, qrels, "RR@1")["RR@1"] == 1.0


def test_complete_mean_fills_zeros_and_ignores_unjudged():
    qrels = {"1": {"a": 1}, "2": {"b": 1}, "3": {"c": 0}}
    run = {"1": {"a": 1.0}, "9": {"a": 1.0}}
    pq = evaluate_per_query(run, qrels, ["RR@10", "nDCG@10"])
    assert pq["RR@10"] == {"1": 1.0, "2": 0.0, "3": 0.0}
    assert evaluate(run, qrels, "RR@10") == {"RR@10": pytest.approx(1 / 3)}
    assert evaluate({}, qrels, "nDCG@10") == {"nDCG@10": 0.0}
    with pytest.raises(ValueError, match="qrels are empty"):
        evaluate(run, {}, "RR")


def test_relevance_level():
    qrels = {"1": {"a": 1, "b": 2}}
    run = {"1": {"a": 2.0, "b": 1.0}}
    assert evaluate(run, qrels, ["RR@10", "RR(rel=2)@10", "R(rel=2)@1"]) == \
        {"RR@10": 1.0, "RR(rel=2)@10": 0.5, "R(rel=2)@1": 0.0}


# ---------------------------------------------------------------------------------------------- measures

@pytest.mark.parametrize("text,canon,measure", [
    ("nDCG@10", "nDCG@10", Measure("nDCG", 10)),
    ("ndcg @ 20", "nDCG@20", Measure("nDCG", 20)),
    ("nDCG", "nDCG", Measure("nDCG")),
    ("RR(rel=2)@10", "RR(rel=2)@10", Measure("RR", 10, 2)),
    ("MRR@10", "RR@10", Measure("RR", 10)),
    ("R@1K", "R@1000", Measure("R", 1000)),
    ("Recall(rel=2)@1000", "R(rel=2)@1000", Measure("R", 1000, 2)),
    ("MAP", "AP", Measure("AP")),
    ("AP(rel=2)", "AP(rel=2)", Measure("AP", None, 2)),
    ("P@10", "P@10", Measure("P", 10)),
    ("Success@5", "Success@5", Measure("Success", 5)),
])
def test_parse_measure(text, canon, measure):
    assert parse_measure(text) == measure
    assert str(parse_measure(text)) == canon


@pytest.mark.parametrize("bad,why", [
    ("BLEU@4", "unknown measure"), ("R", "needs a cut-off"), ("nDCG(rel=2)@10", "takes no rel"),
    ("RR(gain=2)@10", "unsupported parameter"), ("nDCG@0", ">= 1"), ("nDCG@@10", "cannot parse"),
])
def test_parse_measure_errors_list_supported_forms(bad, why):
    with pytest.raises(MeasureError, match=why) as e:
        parse_measure(bad)
    assert "RR(rel=2)@10" in str(e.value) or "cut-off must be" in str(e.value)


def test_parse_measures_and_trec_eval_args():
    assert [str(m) for m in parse_measures("nDCG@10,RR(rel=2)@10, R@1000,nDCG@10")] == \
        ["nDCG@10", "RR(rel=2)@10", "R@1000"]
    assert trec_eval_args("RR(rel=2)@10") == ["-l", "2", "-M", "10", "-m", "recip_rank"]
    assert trec_eval_args("AP(rel=2)") == ["-l", "2", "-m", "map"]
    assert trec_eval_args("R(rel=2)@1000") == ["-l", "2", "-m", "recall.1000"]
    assert trec_eval_args("nDCG@10") == ["-m", "ndcg_cut.10"]
    with pytest.raises(MeasureError):
        parse_measures("")


# ---------------------------------------------------------------------------------------------- input checks

def test_input_warnings(tmp_path):
    qrels = {"1": {"a": 1}, "2": {"b": 1}, "3": {"c": 1}}
    rp = write(tmp_path / "run.txt", "1 Q0 a 1 2.0 t\n1 Q0 a 2 1.0 t\n1 Q0 z 3 0.5 t\n7 Q0 a 1 1.0 t\n8 Q0 a 1 1 t\n")
    run, w = read_run_checked(rp, qrels)
    assert run["1"] == {"a": 2.0, "z": 0.5}  # first line of a duplicate kept
    assert (w.duplicate_docids, w.unknown_qids, w.missing_qids, w.empty) == (1, ["7", "8"], ["2", "3"], False)
    text = "\n".join(w.messages())
    assert "1 duplicate docid" in text and "2 run queries are not in the qrels" in text
    assert "2 of 3 judged queries have no results" in text and str(rp) in text

    empty = check_inputs({}, qrels, source="e.txt")
    assert empty.empty and "the run is empty" in empty.messages()[0] and len(empty.messages()) == 1
    none = check_inputs({"9": {"a": 1.0}}, qrels)
    assert any("answers none of the 3 judged queries" in m for m in none.messages())
    assert not check_inputs({"1": {"a": 1.0}, "2": {"a": 1.0}, "3": {"a": 1.0}}, qrels)


def test_malformed_run_line_names_file_and_line(tmp_path):
    rp = write(tmp_path / "bad.txt", "1 Q0 a 1 1.0 t\n1 Q0 b 2 high t\n")
    with pytest.raises(FormatError, match=r"bad\.txt:2: score 'high' is not a number"):
        read_run_checked(rp, {"1": {"a": 1}})


# ---------------------------------------------------------------------------------------------- significance

def test_paired_ttest_matches_scipy():
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(1)
    a, b = rng.random(40), rng.random(40)
    assert paired_ttest(a, b) == pytest.approx(ttest_rel(a, b).pvalue)
    assert paired_ttest(a, a) == 1.0


def test_randomization_test_matches_exact_enumeration():
    d = np.array([0.3, -0.1, 0.25, 0.4, 0.05, -0.2, 0.15, 0.35])
    b = np.zeros_like(d)
    obs = abs(d.sum())
    exact = np.mean([abs((np.array(s) * d).sum()) >= obs - 1e-12 for s in itertools.product([-1, 1], repeat=d.size)])
    p = randomization_test(d, b, n_permutations=20_000, seed=3)
    assert p == pytest.approx(exact, abs=0.01)
    assert p == randomization_test(d, b, n_permutations=20_000, seed=3)  # seeded
    assert randomization_test(d, d) == 1.0
    assert randomization_test(np.ones(30), np.zeros(30), n_permutations=999) == pytest.approx(1 / 1000)


def test_compare_runs():
    qrels = {str(q): {"rel": 1} for q in range(30)}
    good = {q: {"rel": 2.0, "x": 1.0} for q in qrels}
    bad = {q: {"x": 2.0, "y": 1.5, "rel": 1.0} for q in qrels}
    cmp = compare_runs({"bad": bad, "good": good}, qrels, ["RR@10", "R@1000"], test="randomization",
                       n_permutations=2000)
    assert cmp.baseline == "bad" and cmp.means["good"]["RR@10"] == 1.0
    assert cmp.significant("good", "RR@10") and not cmp.significant("good", "R@1000")
    assert "bad" not in cmp.p_values and cmp.p_values["good"]["R@1000"] == 1.0


# ---------------------------------------------------------------------------------------------- CLI

@pytest.fixture()
def cli_files(tmp_path):
    qrels = {str(q): {f"d{q}": 1, f"e{q}": 2} for q in range(1, 31)}
    strong = {q: {f"d{q}": 3.0, f"e{q}": 2.0, "junk": 1.0} for q in qrels}
    weak = {q: {"junk": 3.0, "junk2": 2.5, f"d{q}": 2.0} for q in qrels}
    qp = write(tmp_path / "qrels.txt", qrels_text(qrels))
    weak_p = write(tmp_path / "weak.txt", run_text(weak))
    strong_p = write(tmp_path / "strong.txt", run_text(strong))
    return qp, weak_p, strong_p


def test_cli_json_keyed_by_run_path(cli_files):
    qp, weak, strong = cli_files
    res = CliRunner().invoke(kd_eval, ["--qrels", str(qp), "-m", "nDCG@10,RR(rel=2)@10", str(weak), str(strong),
                                       "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert list(data) == [str(weak), str(strong), "_significance"]  # the p-values beside the runs' values
    assert list(data[str(strong)]) == ["nDCG@10", "RR(rel=2)@10"]
    assert data["_significance"]["p_values"][str(strong)]["nDCG@10"]["significant"] is True
    assert data[str(strong)]["RR(rel=2)@10"] == 0.5 and data[str(weak)]["RR(rel=2)@10"] == 0.0

    res = CliRunner().invoke(kd_eval, [str(qp), "-m", "RR@10", str(strong), "--format", "json", "--per-query"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[str(strong)]["RR@10"]["7"] == 1.0


def test_cli_markdown_with_significance_markers(cli_files):
    qp, weak, strong = cli_files
    for test in ("ttest", "randomization"):
        res = CliRunner().invoke(kd_eval, ["--qrels", str(qp), "--measures", "RR@10", "-m", "R@1000", str(weak),
                                           str(strong), "--format", "markdown", "--significance", test])
        assert res.exit_code == 0, res.output
        lines = res.stdout.splitlines()
        assert lines[0] == "| run | RR@10 | R@1000 |"
        assert lines[2] == f"| {weak} | 0.3333 | 0.5000 |"
        assert lines[3] == f"| {strong} | 1.0000\u2020 | 1.0000\u2020 |"
        assert f"p < 0.05 vs {weak}" in res.stdout
    res = CliRunner().invoke(kd_eval, ["--qrels", str(qp), "-m", "RR@10", str(weak), str(strong), "--format",
                                       "markdown", "--significance", "none"])
    assert "\u2020" not in res.stdout


def test_cli_significance_level_and_its_old_spelling(cli_files):
    qp, weak, strong = cli_files
    args = ["--qrels", str(qp), "-m", "RR@10", str(weak), str(strong), "--format", "markdown"]
    res = CliRunner().invoke(kd_eval, [*args, "--significance-level", "0.01"])
    assert res.exit_code == 0, res.output
    assert "p < 0.01 vs" in res.stdout and "deprecated" not in res.output
    res = CliRunner().invoke(kd_eval, [*args, "--alpha", "0.01"])
    assert res.exit_code == 0, res.output
    assert "p < 0.01 vs" in res.stdout
    assert "--alpha is deprecated" in res.stderr and "use --significance-level" in res.stderr
    help_text = CliRunner().invoke(kd_eval, ["--help"]).output
    assert "--significance-level" in help_text and "--alpha" not in help_text


def test_cli_csv_table_and_warnings(cli_files, tmp_path):
    qp, weak, strong = cli_files
    extra = write(tmp_path / "extra.txt", strong.read_text() + "999 Q0 x 1 1.0 t\n")
    res = CliRunner().invoke(kd_eval, [str(qp), "-m", "RR@10", str(weak), str(extra), "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0] == "run,measure,value,p_value,p_adjusted,correction,significant"
    assert res.stdout.splitlines()[2].startswith(f"{extra},RR@10,1.0,") and res.stdout.endswith(",holm,true\n")
    assert "1 run query is not in the qrels" in res.stderr and "999" in res.stderr
    res = CliRunner().invoke(kd_eval, [str(qp), "-m", "RR@10", str(strong), "-q"])
    assert res.exit_code == 0 and res.stdout.splitlines()[-2].split() == ["all", "1.0000"]


def test_cli_errors(cli_files, tmp_path):
    qp, weak, _ = cli_files
    bad = write(tmp_path / "bad.txt", "1 Q0 d1 1 1.0 t\n1 d1\n")
    res = CliRunner().invoke(kd_eval, ["--qrels", str(qp), "-m", "RR@10", str(bad)])
    assert res.exit_code == 1
    assert res.output.strip() == f"Error: {bad}:2: 2 fields (a line cut short, or an MS MARCO line in a TREC run?); " \
                                 "expected 6 ('qid Q0 docid rank score tag') as on line 1: a run is all TREC or all " \
                                 "MS MARCO"
    res = CliRunner().invoke(kd_eval, ["--qrels", str(weak), "-m", "RR@10", str(weak)])
    assert res.exit_code == 1 and f"{weak}:1: 6 fields; expected 4" in res.output
    res = CliRunner().invoke(kd_eval, ["--qrels", str(qp), "-m", "nDCG(rel=2)@10", str(weak)])
    assert res.exit_code == 2 and "supported: nDCG[@k]" in res.output
    res = CliRunner().invoke(kd_eval, ["--qrels", str(qp), str(weak)])
    assert res.exit_code == 2 and "give --measures" in res.output
    res = CliRunner().invoke(kd_eval, ["no-such-benchmark", str(weak)])
    assert res.exit_code == 2 and "neither a benchmark nor a qrels file" in res.output


def test_cli_benchmark_without_runs_uses_reproduce_hook(monkeypatch):
    calls = []
    fake = types.ModuleType("kd_pyserini.reproduce")
    fake.__spec__ = ModuleSpec("kd_pyserini.reproduce", None)
    fake.evaluate_benchmark_runs = lambda b: calls.append(b) or {"tas-b": {"nDCG@10": 0.721}}
    monkeypatch.setitem(sys.modules, "kd_pyserini.reproduce", fake)
    res = CliRunner().invoke(kd_eval, ["dl19-passage", "--format", "markdown"])
    assert res.exit_code == 0, res.output
    assert calls == ["trec-dl-19"] and "| tas-b | 0.7210 |" in res.stdout

    # No reproduction run present: the hook answers an empty table (and says so on stderr); kd-eval prints nothing.
    fake.evaluate_benchmark_runs = lambda b: calls.append(b) or {}
    res = CliRunner().invoke(kd_eval, ["trec-dl-20"])
    assert res.exit_code == 0 and calls[-1] == "trec-dl-20" and res.stdout == ""


def test_cli_benchmark_name_with_real_runs(real, data_dir):
    qrels_paths, runs = real
    bm25, tasb = runs[("19", "bm25-default")], runs[("19", "tas-b")]
    out = subprocess.run([sys.executable, "-m", "kd_pyserini.cli.eval", "dl19-passage", str(bm25), str(tasb)],
                         capture_output=True, text=True, env={**os.environ, "KD_PYSERINI_DATA": str(data_dir)},
                         timeout=120)
    assert out.returncode == 0, out.stderr
    rows = out.stdout.splitlines()
    assert rows[0].split() == ["run", *DL_MEASURES, "Judged@10"]  # the share judged, beside the official measures
    qrels = read_qrels(qrels_paths["19"])
    for row, path, mark in ((rows[1], bm25, ""), (rows[2], tasb, "\u2020")):  # TAS-B beats BM25 on every measure
        expected = evaluate(read_run(path), qrels, [*DL_MEASURES, "Judged@10"])
        assert row.split()[:-1] == [str(path), *(f"{expected[m]:.4f}{mark}" for m in DL_MEASURES)]
        judged = f"{expected['Judged@10']:.4f}"
        assert row.split()[-1] in (judged, judged + "\u2020")
    assert rows[1].split()[-1] == "1.0000" and rows[2].split()[-1].startswith("0.9023")  # BM25 built the pools
    assert rows[2].split()[1] == "0.7210\u2020"
    assert "mean over 43 judged queries" in out.stdout
