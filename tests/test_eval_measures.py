"""The trec_eval measures added in issue #19 (Rprec, Bpref, IPrec, NumRet, NumRel, NumRelRet), Judged@k, and the
multiple-comparison corrections, checked against the Java trec_eval that Pyserini ships (Anserini's jar) and, for
Judged@k, against Pyserini's own ``judged.k``.

Java is started as few times as possible: one ``trec_eval -c -q -m all_trec`` per (run, options) case, computed once
per session (:func:`java_all_trec` is cached), and every measure is read from that one output.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kd_pyserini.cli.eval import main as kd_eval
from kd_pyserini.eval_measures import IPREC_LEVELS, Measure, MeasureError, parse_measure, parse_measures, trec_eval_args
from kd_pyserini.evaluation import (adjust_p_values, aggregate, compare_runs, default_measures, evaluate,
                                    evaluate_per_query, official_measures)
from kd_pyserini.trec_io import rank, read_qrels, read_run

NEW_REL1 = ["Rprec", "Bpref", "IPrec", "NumRet", "NumRel", "NumRelRet"]
NEW_REL2 = ["Rprec(rel=2)", "Bpref(rel=2)", "IPrec(rel=2)", "NumRet", "NumRel(rel=2)", "NumRelRet(rel=2)"]


@functools.lru_cache(maxsize=None)
def java_all_trec(qrels: str, run: str, options: tuple[str, ...] = (), complete: bool = True
                  ) -> dict[tuple[str, str], str]:
    """Anserini's trec_eval ``[-c] -q -m all_trec [options] QRELS RUN``: ``{(trec_eval measure, qid): value text}``
    (``qid == "all"``: the all-queries line). Cached: each case starts one JVM per session."""
    from kd_pyserini.jvm import anserini_jar, find_java

    out = subprocess.run([str(find_java().java), "-cp", str(anserini_jar()), "trec_eval", *(["-c"] if complete else []),
                          "-q", "-m", "all_trec", *options, qrels, run], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip(), f"trec_eval failed: {out.stderr}"
    res = {}
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) == 3:
            res[(fields[0], fields[1])] = fields[2]
    return res


def _text(measure: str, value: float) -> str:
    """How trec_eval prints a value: counts as integers, everything else with 4 decimals."""
    return f"{value:.0f}" if parse_measure(measure).aggregate == "sum" else f"{value:.4f}"


def assert_matches_java(java: dict, run: dict, qrels: dict, measures: list[str], missing_ok: bool = True) -> int:
    """Every measure, per query and all-queries, equals Java's text; returns the number of values compared.

    A judged query the run does not answer has no ``-q`` line in trec_eval; ours is 0 there (-c), and for NumRel its
    number of relevant documents (what trec_eval's ``all`` line adds for it at ``-l 1``)."""
    per_query = evaluate_per_query(run, qrels, measures)
    means = evaluate(run, qrels, measures)
    n = 0
    for name in per_query:
        m = parse_measure(name)
        key = m._key
        java_pq = {q: v for (k, q), v in java.items() if k == key and q != "all"}
        ours = {q: _text(name, v) for q, v in per_query[name].items()}
        unanswered = {q for q in qrels if not run.get(q)}
        assert {q: v for q, v in ours.items() if q not in unanswered} == java_pq, (name, key)
        for q in unanswered:
            want = sum(g >= m.rel for g in qrels[q].values()) if m.name == "NumRel" else 0
            assert per_query[name][q] == want, (name, q)
        if m.name == "NumRel" and m.rel != 1:  # trec_eval -c's all line ignores -l here: test_num_rel_with_rel_levels
            assert means[name] == sum(int(v) for v in java_pq.values()) + sum(per_query[name][q] for q in unanswered)
        else:
            assert _text(name, means[name]) == java[(key, "all")], (name, key)
        n += len(java_pq) + 1
    return n


# ---------------------------------------------------------------------------------------------- hand-made cases

EDGE_QRELS = {
    "1": {"a": 2, "b": 1, "c": 0, "d": 3, "e": 1},   # graded, with ties in the run
    "2": {"f": 0, "g": 0},                           # no relevant document at all
    "3": {"h": 1, "i": 2},                           # all relevant retrieved, nothing else
    "4": {"j": 2, "k": 1},                           # judged, not answered: -c zeros
    "5": {"l": 1, "m": 0, "n": 2},                   # every retrieved score tied
    "6": {"o": 1, "o2": 2},                          # relevant far down: cut by -M
    "7": {"p": 1, "q": 0},                           # nothing relevant at rel=2
    "9": {"r": 1, "s": 1, "t": 1},                   # all retrieved relevant, but fewer than R retrieved
}
EDGE_RUN = {
    "1": {"c": 1.0, "b": 1.0, "a": 0.5, "x": 0.5, "d": 0.25, "y": 0.1, "e": 0.05},
    "2": {"f": 2.0, "z": 1.0, "g": 0.5},
    "3": {"i": 2.0, "h": 1.0},
    "5": {"l": 1.0, "m": 1.0, "n": 1.0, "u": 1.0, "v": 1.0},
    "6": {**{f"w{i:02d}": 100.0 - i for i in range(60)}, "o": 50.5, "o2": 3.0, "w_tie": 96.0},
    "7": {"q": 3.0, "p": 2.0, "w": 1.0},
    "8": {"zz": 1.0},                                # unjudged query: ignored
    "9": {"s": 2.0, "r": 1.0},
}


def _files(tmp: Path, run: dict, qrels: dict, name: str = "run") -> tuple[str, str]:
    qp, rp = tmp / f"{name}.qrels", tmp / f"{name}.txt"
    qp.write_text("".join(f"{q} 0 {d} {g}\n" for q, docs in qrels.items() for d, g in docs.items()))
    rp.write_text("".join(f"{q} Q0 {d} {i} {s!r} t\n" for q, docs in run.items()
                          for i, (d, s) in enumerate(docs.items(), 1)))
    return str(qp), str(rp)


@pytest.fixture(scope="module")
def edge_files(tmp_path_factory) -> tuple[str, str]:
    return _files(tmp_path_factory.mktemp("edge"), EDGE_RUN, EDGE_QRELS)


@pytest.mark.parametrize("options,measures", [((), NEW_REL1), (("-l", "2"), NEW_REL2)], ids=["l1", "l2"])
def test_new_measures_equal_java_trec_eval_on_edge_cases(edge_files, options, measures):
    qp, rp = edge_files
    java = java_all_trec(qp, rp, options)
    assert assert_matches_java(java, EDGE_RUN, EDGE_QRELS, measures) > 100
    # the hand-made corners really are there (values by hand from the definitions)
    pq = evaluate_per_query(EDGE_RUN, EDGE_QRELS, measures)
    rel2 = bool(options)
    assert pq["NumRet"]["6"] == 63 and pq["NumRet"]["4"] == 0
    if not rel2:
        assert pq["Rprec"]["3"] == 1.0 and pq["IPrec@1.0"]["3"] == 1.0  # all relevant, nothing else
        assert pq["Rprec"]["2"] == 0.0 and pq["Bpref"]["2"] == 0.0 and pq["NumRel"]["2"] == 0  # nothing relevant
        assert pq["Rprec"]["9"] == 2 / 3 and pq["IPrec@0.5"]["9"] == 1.0 and pq["IPrec@1.0"]["9"] == 0.0
    else:
        assert pq["NumRel(rel=2)"]["7"] == 0 and pq["Rprec(rel=2)"]["7"] == 0.0


@pytest.mark.parametrize("options,measures", [(("-M", "5"), NEW_REL1), (("-l", "2", "-M", "3"), NEW_REL2)],
                         ids=["M5", "l2-M3"])
def test_truncated_runs_equal_java_trec_eval_max_retrieved(edge_files, options, measures):
    """``trec_eval -M k`` evaluates each query's top k in trec_eval order (ties by docid descending): the same as
    evaluating the run cut with :func:`kd_pyserini.trec_io.rank` (the tie across the cut in query 5 decides)."""
    qp, rp = edge_files
    k = int(options[-1])
    java = java_all_trec(qp, rp, options)
    cut = {q: dict(rank(docs, k)) for q, docs in EDGE_RUN.items()}
    assert list(cut["5"]) == ["v", "u", "n", "m", "l"][:k]
    assert assert_matches_java(java, cut, EDGE_QRELS, measures) > 100


def test_num_rel_with_rel_levels(tmp_path, edge_files):
    """NumRel(rel=N) is the number of documents of grade >= N, whether the run answers the query or not, and the
    all-queries figure is the sum of the per-query values. trec_eval agrees per query, and in its ``all`` line at
    ``-l 1`` or without ``-c``; with ``-c`` and ``-l 2`` its ``all`` line counts grade >= 1 instead, unlike its own
    per-query lines (a deliberate difference, docs/evaluation.md). The reference for ours: trec_eval without ``-c``
    on the same run with an unjudged document for the unanswered query, so that every judged query is evaluated."""
    qp, rp = edge_files
    filled = {**EDGE_RUN, "4": {"not-judged": 1.0}}
    fqp, frp = _files(tmp_path, filled, EDGE_QRELS, "filled")
    for options, name in (((), "NumRel"), (("-l", "2"), "NumRel(rel=2)")):
        ours = evaluate(EDGE_RUN, EDGE_QRELS, [name])[name]
        assert evaluate_per_query(EDGE_RUN, EDGE_QRELS, [name])[name]["4"] == (2 if not options else 1)
        assert f"{ours:.0f}" == java_all_trec(fqp, frp, options, complete=False)[("num_rel", "all")]
    num_rel = evaluate(EDGE_RUN, EDGE_QRELS, ["NumRel"])["NumRel"]
    assert f"{num_rel:.0f}" == java_all_trec(qp, rp, ())[("num_rel", "all")]
    # trec_eval -c -l 2: the all line is the grade >= 1 count (what this test pins as the reason for the difference)
    grade1 = sum(g >= 1 for docs in EDGE_QRELS.values() for g in docs.values())
    assert java_all_trec(qp, rp, ("-l", "2"))[("num_rel", "all")] == str(grade1)
    assert evaluate(EDGE_RUN, EDGE_QRELS, ["NumRel(rel=2)"])["NumRel(rel=2)"] == 6 < grade1


def test_judged_at_k_definition():
    """ir_measures' Judged@k: judged documents (any grade) in the top k over min(k, retrieved); -c: 0 unanswered."""
    pq = evaluate_per_query(EDGE_RUN, EDGE_QRELS, ["Judged@3", "Judged@10", "Judged@2"])
    # query 1, trec_eval order: c, b (tied 1.0, docid descending), x, a (tied 0.5), d, y, e
    assert pq["Judged@3"]["1"] == 2 / 3 and pq["Judged@10"]["1"] == 5 / 7
    assert pq["Judged@10"]["3"] == 1.0          # 2 retrieved, both judged: 2 / min(10, 2)
    assert pq["Judged@10"]["4"] == 0.0          # unanswered judged query (-c)
    assert pq["Judged@2"]["5"] == 0.0           # all tied: v, u first (docid descending), both unjudged
    assert pq["Judged@10"]["5"] == 3 / 5
    assert "8" not in pq["Judged@10"]           # unjudged run query: ignored
    assert evaluate(EDGE_RUN, EDGE_QRELS, ["Judged@3"])["Judged@3"] == pytest.approx(
        sum(pq["Judged@3"].values()) / len(EDGE_QRELS))
    with pytest.raises(MeasureError, match="not a trec_eval measure"):
        trec_eval_args("Judged@10")


# ---------------------------------------------------------------------------------------------- real DL runs

REAL = [("19", "tas-b"), ("19", "bm25-default"), ("20", "tas-b"), ("20", "bm25-default")]


@pytest.fixture(scope="module")
def real_paths(data_dir: Path):
    def paths(year: str, system: str) -> tuple[str, str]:
        return (str(data_dir / "topics-and-qrels" / f"qrels.dl{year}-passage.txt"),
                str(data_dir / "msmarco-dl" / "runs" / f"run.dl{year}.{system}.top100.txt"))
    return paths


@pytest.mark.parametrize("key", REAL, ids=lambda k: f"dl{k[0]}-{k[1]}")
@pytest.mark.parametrize("options,measures", [((), NEW_REL1), (("-l", "2"), NEW_REL2)], ids=["l1", "l2"])
def test_new_measures_equal_java_trec_eval_on_real_runs(real_paths, key, options, measures):
    qp, rp = real_paths(*key)
    run, qrels = read_run(rp), read_qrels(qp)
    assert assert_matches_java(java_all_trec(qp, rp, options), run, qrels, measures) > 43 * 16


def test_judged_at_10_equals_pyserini_on_a_real_run(real_paths, data_dir):
    """Pyserini's ``eval.trec_eval -m judged.k`` (micro-averaged over the run's top-k lines) equals ir_measures'
    macro average when every query has at least k results and is judged, as on the DL runs."""
    qp, rp = real_paths("19", "tas-b")
    out = subprocess.run([sys.executable, "-m", "kd_pyserini.pyserini", "eval.trec_eval", "-c", "-m", "judged.10,100",
                          qp, rp], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "KD_PYSERINI_DATA": str(data_dir)})
    assert out.returncode == 0, out.stderr
    theirs = {f[0]: f[2] for f in (line.split() for line in out.stdout.splitlines()) if len(f) == 3}
    ours = evaluate(read_run(rp), read_qrels(qp), ["Judged@10", "Judged@100"])
    assert f"{ours['Judged@10']:.4f}" == theirs["judged_10"] and f"{ours['Judged@100']:.4f}" == theirs["judged_100"]
    assert ours["Judged@10"] < 1.0  # TAS-B retrieves unjudged passages in the top 10 of the BM25-heavy DL pools


# ---------------------------------------------------------------------------------------------- names

@pytest.mark.parametrize("text,canon", [
    ("Rprec", "Rprec"), ("R-prec(rel=2)", "Rprec(rel=2)"), ("bpref", "Bpref"), ("IPrec@0.5", "IPrec@0.5"),
    ("IPrec@.5", "IPrec@0.5"), ("iprec(rel=2)@1", "IPrec(rel=2)@1.0"), ("IPrec@0", "IPrec@0.0"),
    ("NumRet", "NumRet"), ("NumRet(rel=2)", "NumRelRet(rel=2)"), ("NumRet(rel=1)", "NumRelRet"),
    ("numrelret", "NumRelRet"), ("NumRel(rel=2)", "NumRel(rel=2)"), ("Judged@10", "Judged@10"),
])
def test_parse_new_measures(text, canon):
    assert str(parse_measure(text)) == canon
    assert parse_measure(canon) == parse_measure(text)


@pytest.mark.parametrize("bad,why", [
    ("Rprec@10", "takes no cut-off"), ("IPrec@0.55", "one of 0.0, 0.1"), ("IPrec", "needs a recall level"),
    ("Judged", "needs a cut-off"), ("Judged(rel=2)@10", "takes no rel"), ("NumRet@10", "takes no cut-off"),
    ("P@2.5", "must be an integer"), ("Bpref@5", "takes no cut-off"),
])
def test_new_measure_errors(bad, why):
    with pytest.raises(MeasureError, match=why):
        parse_measure(bad)


def test_iprec_expands_to_eleven_points_and_counts_are_summed():
    assert [str(m) for m in parse_measures("IPrec")] == [f"IPrec@{lv:.1f}" for lv in IPREC_LEVELS]
    assert [str(m) for m in parse_measures("IPrec(rel=2),IPrec(rel=2)@0.5")][5] == "IPrec(rel=2)@0.5"
    assert Measure("NumRelRet").aggregate == "sum" and Measure("Rprec").aggregate == "mean"
    assert aggregate("NumRet", {"1": 3.0, "2": 4.0}) == 7.0 and aggregate("Rprec", {"1": 0.5, "2": 0.0}) == 0.25


def test_dl_benchmarks_show_judged_at_10_beside_the_official_measures():
    for bench in ("trec-dl-19", "dl20"):
        assert [str(m) for m in default_measures(bench)] == [*map(str, official_measures(bench)), "Judged@10"]
    assert default_measures("msmarco-dev") == official_measures("msmarco-dev")


# ---------------------------------------------------------------------------------------------- corrections

def test_adjust_p_values_by_the_definitions():
    ps = [0.01, 0.04, 0.03, 0.005]
    # Bonferroni: m * p; Holm: sorted 0.005 (x4), 0.01 (x3), 0.03 (x2), 0.04 (x1), then the running maximum
    assert adjust_p_values(ps, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert adjust_p_values(ps, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust_p_values(ps, "none") == ps
    assert adjust_p_values([0.3, 0.6], "bonferroni") == [0.6, 1.0]  # capped at 1
    assert adjust_p_values([0.02], "holm") == [0.02] and adjust_p_values([], "holm") == []
    with pytest.raises(ValueError, match="unknown correction"):
        adjust_p_values(ps, "fdr")
    with pytest.raises(ValueError, match=r"not in \[0, 1\]"):
        adjust_p_values([float("nan")], "holm")


def _three_runs():
    """A baseline and two runs a little better on 4 (different) of 30 queries: a paired t-test p = 0.043 each, so
    both are significant uncorrected, neither after Holm or Bonferroni over the 2 comparisons (2 * 0.043 > 0.05)."""
    qrels = {str(q): {"rel": 1} for q in range(30)}
    base = {q: {"x": 3.0, "y": 2.0, "rel": 1.0} for q in qrels}                            # RR = 1/3 everywhere
    better = {"x": 3.0, "rel": 2.0, "y": 1.0}                                              # RR = 1/2
    weak_a = {q: (better if int(q) < 4 else base[q]) for q in qrels}
    weak_b = {q: (better if 10 <= int(q) < 14 else base[q]) for q in qrels}
    return qrels, {"base": base, "weak_a": weak_a, "weak_b": weak_b}


def test_compare_runs_corrections_change_the_markers():
    qrels, runs = _three_runs()
    raw = compare_runs(runs, qrels, ["RR"], correction="none")
    holm = compare_runs(runs, qrels, ["RR"], correction="holm")
    bonf = compare_runs(runs, qrels, ["RR"], correction="bonferroni")
    pa, pb = raw.p_values["weak_a"]["RR"], raw.p_values["weak_b"]["RR"]
    assert 0.025 < pa < 0.05 and pa == pb
    assert holm.p_values == raw.p_values  # the raw p-values are kept beside the adjusted ones
    # Holm: the smaller p times 2, the larger times 1, then the running maximum; Bonferroni: both times 2
    assert holm.p_adjusted == bonf.p_adjusted == {"weak_a": {"RR": pytest.approx(2 * pa)},
                                                  "weak_b": {"RR": pytest.approx(2 * pb)}}
    assert raw.significant("weak_a", "RR") and raw.significant("weak_b", "RR")
    assert not any(c.significant(r, "RR") for c in (holm, bonf) for r in ("weak_a", "weak_b"))
    # a strong run beside a weak one: Holm keeps the weak one (its p times 1), Bonferroni does not (times 2)
    strong = {q: {"rel": 2.0, "x": 1.0} for q in qrels}
    mixed = {"base": runs["base"], "strong": strong, "weak_a": runs["weak_a"]}
    holm2 = compare_runs(mixed, qrels, ["RR"], correction="holm")
    bonf2 = compare_runs(mixed, qrels, ["RR"], correction="bonferroni")
    assert holm2.p_adjusted["weak_a"]["RR"] == pytest.approx(pa) and holm2.significant("weak_a", "RR")
    assert bonf2.p_adjusted["weak_a"]["RR"] == pytest.approx(2 * pa) and not bonf2.significant("weak_a", "RR")
    two = compare_runs({"base": runs["base"], "weak_a": runs["weak_a"]}, qrels, ["RR"], correction="holm")
    assert two.p_adjusted == two.p_values and two.significant("weak_a", "RR")  # one comparison: nothing to correct
    with pytest.raises(ValueError, match="unknown correction"):
        compare_runs(runs, qrels, ["RR"], correction="sidak")


def test_cli_correction_in_table_json_and_csv(tmp_path):
    qrels, runs = _three_runs()
    qp, _ = _files(tmp_path, {}, qrels, "q")
    paths = []
    for name, run in runs.items():
        paths.append(str(tmp_path / f"{name}.txt"))
        Path(paths[-1]).write_text("".join(f"{q} Q0 {d} {i} {s!r} t\n" for q, docs in run.items()
                                           for i, (d, s) in enumerate(docs.items(), 1)))
    args = ["--qrels", qp, "-m", "RR,NumRelRet", *paths]
    table = {c: CliRunner().invoke(kd_eval, [*args, "--correction", c]) for c in ("none", "holm", "bonferroni")}
    for c, res in table.items():
        assert res.exit_code == 0, res.output
    weak_row = {c: res.stdout.splitlines()[2].split() for c, res in table.items()}
    assert weak_row["none"][1] == "0.3556\u2020" and weak_row["holm"][1] == weak_row["bonferroni"][1] == "0.3556"
    assert table["holm"].stdout.splitlines()[3].split()[1] == "0.3556"  # the other weak run: not marked either
    assert weak_row["holm"][2] == "30"  # NumRelRet: a sum, printed as an integer
    assert "Holm-Bonferroni-corrected over 2 comparisons per measure" in table["holm"].stdout
    assert "Bonferroni-corrected over 2 comparisons" in table["bonferroni"].stdout
    assert "no correction" in table["none"].stdout and "NumRelRet: sums (as trec_eval)" in table["holm"].stdout

    res = CliRunner().invoke(kd_eval, [*args, "--format", "json"])  # default: holm
    data = json.loads(res.stdout)
    assert list(data) == [*paths, "_significance"]
    sig = data["_significance"]
    assert (sig["baseline"], sig["test"], sig["correction"], sig["comparisons_per_measure"]) == \
        (paths[0], "ttest", "holm", 2)
    cmp = compare_runs({p: read_run(p) for p in paths}, read_qrels(qp), ["RR", "NumRelRet"])
    assert sig["p_values"][paths[1]]["RR"] == {"p": cmp.p_values[paths[1]]["RR"],
                                               "p_adjusted": cmp.p_adjusted[paths[1]]["RR"], "significant": False}
    assert data[paths[1]] == {"RR": pytest.approx(1 / 3 + 4 / 30 * (1 / 2 - 1 / 3)), "NumRelRet": 30.0}

    res = CliRunner().invoke(kd_eval, [*args, "--format", "csv", "--correction", "bonferroni"])
    lines = res.stdout.splitlines()
    assert lines[0] == "run,measure,value,p_value,p_adjusted,correction,significant"
    weak_rr = next(line for line in lines if line.startswith(f"{paths[1]},RR,")).split(",")
    assert float(weak_rr[4]) == pytest.approx(2 * float(weak_rr[3])) and weak_rr[5:] == ["bonferroni", "false"]
