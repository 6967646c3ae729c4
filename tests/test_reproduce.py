"""kd-repro: the reproduction matrix in runs/, what runs offline, what is reported as not runnable, and the outputs.

On this machine (no network, no MS MARCO, no TAS-B/Margin-MSE weights) the runnable conditions are Pyserini's
reference runs (TAS-B and BM25 top 100 on DL19/DL20), their fusion, and SciFact end to end; everything else must be
listed as not runnable with the reason, never as passed.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from kd_pyserini import reproduce as rp
from kd_pyserini.cli.repro import main as kd_repro
from kd_pyserini.reproduce import availability

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MSMARCO_CONDITIONS = {"bm25-default", "bm25-tuned", "tas-b", "margin-mse", "tas-b-rerank-bm25",
                      "margin-mse-rerank-bm25", "hybrid-bm25-tas-b", "hybrid-bm25-margin-mse"}


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """Empty Pyserini and Hugging Face caches and an offline hub, so availability does not depend on the host."""
    monkeypatch.setenv("PYSERINI_CACHE", str(tmp_path / "pyserini-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(availability, "_HUB", {})
    return tmp_path


@pytest.fixture()
def data(data_dir, monkeypatch):
    monkeypatch.setenv("KD_PYSERINI_DATA", str(data_dir))
    return data_dir


def _rows(results, benchmark, condition):
    res = next(r for r in results if r.condition.benchmark == benchmark and r.condition.name == condition)
    return res, {row.measure: row for row in res.rows}


# ------------------------------------------------------------------------------------------------ the matrix files

def test_matrix_has_every_benchmark_and_condition():
    matrices = {m.benchmark: m for m in rp.load_matrices(ROOT / "runs")}
    # in the order of the one benchmark table, kd_pyserini.resources.BENCHMARKS
    assert list(matrices) == ["trec-dl-19", "trec-dl-20", "msmarco-dev", "scifact"]
    for bench in ("msmarco-dev", "trec-dl-19", "trec-dl-20"):
        names = {c.name for c in matrices[bench].conditions}
        assert MSMARCO_CONDITIONS <= names, MSMARCO_CONDITIONS - names
    for bench in ("trec-dl-19", "trec-dl-20"):
        refs = {c.name: c for c in matrices[bench].conditions if c.type == "reference-run"}
        assert set(refs) == {"tas-b-reference-run", "bm25-default-reference-run"}
        assert all(c.depth == 100 for c in refs.values())
    assert {c.name for c in matrices["scifact"].conditions} == {"bm25-flat", "all-minilm-l6-v2",
                                                                "hybrid-bm25-all-minilm-l6-v2"}
    bm25 = {c.name: c for c in matrices["trec-dl-19"].conditions}
    assert "--k1 0.9 --b 0.4" in bm25["bm25-default"].steps[0].command
    assert "--k1 0.82 --b 0.68" in bm25["bm25-tuned"].steps[0].command
    assert matrices["msmarco-dev"].primary == "RR@10" and matrices["trec-dl-19"].primary == "nDCG@10"


def test_every_placeholder_is_known_and_every_command_is_ours():
    fixed = {"output", "topics", "qrels", "benchmark", "output_dir"}
    for m in rp.load_matrices(ROOT / "runs"):
        names = {c.name for c in m.conditions}
        for c in m.conditions:
            texts = [s.command for s in c.steps] + [c.run] + [s.creates or "" for s in c.steps]
            texts += [x for req in (c.requires, *[s.requires for s in c.steps]) for v in req.values() for x in v]
            for text in texts:
                for ph in re.findall(r"\$\{([^}]+)\}", text):
                    if ph.startswith("run:"):
                        assert ph[4:] in c.depends and ph[4:] in names, f"{c.key}: {ph} is not a dependency"
                    else:
                        assert ph in rp.DEFAULT_PATHS or ph in fixed, f"{c.key}: unknown placeholder ${{{ph}}}"
            for s in c.steps:
                assert s.command.split()[0] in rp.COMMAND_MODULES, s.command


@pytest.mark.parametrize("script", ["kd-search", "kd-index", "kd-fuse"])
def test_matrix_commands_use_only_options_the_clis_have(script):
    """Every --option in the matrix exists in the real command (guards against CLI drift)."""
    import importlib

    import click

    cmd = importlib.import_module(rp.COMMAND_MODULES[script]).main
    seen = 0
    for m in rp.load_matrices(ROOT / "runs"):
        for c in m.conditions:
            for s in c.steps:
                argv = shlex.split(s.command)
                if argv[0] != script:
                    continue
                target = cmd.commands[argv[1]] if isinstance(cmd, click.Group) else cmd
                known = {o for p in target.params for o in (*p.opts, *p.secondary_opts)}
                used = {a.split("=")[0] for a in argv if a.startswith("--")}
                assert used <= known, f"{c.key}: {script} has no {sorted(used - known)}"
                seen += 1
    assert seen > 0


def test_expected_scores_equal_pyserini_2cr(data_dir):
    """The 2CR figures in runs/ are exactly those of Pyserini's 2CR file (MAP/R@1K on DL are rel=2)."""
    ref = data_dir.parent / "reference" / "pyserini-2cr-msmarco-v1-passage.yaml"
    if not ref.is_file():
        pytest.skip(f"{ref} not found")
    conds = {c["name"]: c for c in yaml.safe_load(ref.read_text())["conditions"]}
    names = {"msmarco-dev": {"MRR@10": "RR@10", "R@1K": "R@1000"},
             "trec-dl-19": {"MAP": "AP(rel=2)", "nDCG@10": "nDCG@10", "R@1K": "R(rel=2)@1000"}}
    names["trec-dl-20"] = names["trec-dl-19"]
    topic = {"msmarco-dev": "msmarco-v1-passage.dev", "trec-dl-19": "dl19-passage", "trec-dl-20": "dl20-passage"}
    checked = 0
    for m in rp.load_matrices(ROOT / "runs", ["msmarco-dev", "trec-dl-19", "trec-dl-20"]):
        for c in m.conditions:
            ours = {e.measure: e.value for e in c.expected if e.source.startswith("Pyserini 2CR")}
            if not ours:
                continue
            assert c.pyserini_condition in conds, c.key
            published = next(t["scores"][0] for t in conds[c.pyserini_condition]["topics"]
                             if t["topic_key"] == topic[m.benchmark])
            theirs = {names[m.benchmark][k]: v for k, v in published.items()}
            assert ours == theirs, c.key
            checked += 1
    assert checked >= 12  # bm25-default/-tuned, tas-b, margin-mse x 3 benchmarks, plus the reference runs


def test_checkable_by_run_depth():
    assert rp.checkable("nDCG@10", 100) is None
    assert rp.checkable("RR(rel=2)@10", 100) is None
    assert "needs 1000" in rp.checkable("R(rel=2)@1000", 100)
    assert "full ranking" in rp.checkable("AP(rel=2)", 100)
    assert rp.checkable("AP(rel=2)", 1000) is None and rp.checkable("R@1000", 1000) is None


def test_resolver_paths_file_and_prebuilt_cache(tmp_path, monkeypatch):
    paths = tmp_path / "local.yaml"
    paths.write_text("msmarco_collection: /data/collection.tsv\nindex_root: /fast/indexes\n")
    r = rp.build_resolver(paths, {"threads": "8"}, tmp_path / "out")
    assert r.fill("${msmarco_collection} ${scifact_bm25_index} ${threads}") == \
        "/data/collection.tsv /fast/indexes/lucene.beir-v1.0.0-scifact.flat 8"
    assert r.missing("${nope} ${threads}") == ["nope"]
    (tmp_path / "bad.yaml").write_text("colection: x\n")
    with pytest.raises(rp.MatrixError, match="unknown names colection"):
        rp.build_resolver(tmp_path / "bad.yaml")
    # a prebuilt index already in Pyserini's cache is used from there (kd-search takes folders)
    info = rp.prebuilt_info("msmarco-v1-passage")
    stem = re.sub(r"\.tar\.gz.*$", "", info["urls"][0].split("/")[-1])
    cached = tmp_path / "cache" / "indexes" / f"{stem}.{info['md5']}"
    monkeypatch.setenv("PYSERINI_CACHE", str(tmp_path / "cache"))
    assert "not in Pyserini's cache" in rp.index_problem("msmarco-v1-passage")
    cached.mkdir(parents=True)
    assert rp.index_problem("msmarco-v1-passage") is None
    assert rp.build_resolver(output_dir=tmp_path).variables["bm25_index"] == str(cached)


def _shipped_prebuilt() -> dict[str, dict]:
    from kd_pyserini.pyserini_compat.metadata import shipped_prebuilt_entries

    files = shipped_prebuilt_entries()
    shipped = {r["name"]: r for r in files["lucene/msmarco-v1-passage-inverted.json"]}
    shipped.update(files["faiss/msmarco-faiss.json"])
    return shipped


def test_matrix_prebuilt_indexes_are_known_offline_on_both_pyserini_lines(tmp_path, monkeypatch):
    """The prebuilt indexes the matrix names by default are known without the network on both lines: Pyserini 1.6
    from its static tables, 2.x (whose tables come from GitHub) from the entries kd_pyserini ships, and both agree
    with them; Pyserini's own check_downloaded finds an index in the folder kd computes."""
    from pyserini.util import check_downloaded

    shipped = _shipped_prebuilt()
    names = [rp.DEFAULT_PATHS[k] for k in rp.INDEX_VARIABLES]
    assert sorted(names) == sorted(shipped)
    monkeypatch.setenv("PYSERINI_CACHE", str(tmp_path / "cache"))
    for name in names:
        info, want = rp.prebuilt_info(name), shipped[name]
        assert info is not None, name
        assert (info["filename"], info["md5"], info.get("size compressed (bytes)", info.get("size"))) == \
            (want["filename"], want["md5"], want["size"]), name
        assert f"prebuilt index {name} ({want['size'] / 1e9:.1f} GB compressed) not in" in rp.index_problem(name)
        assert rp.prebuilt_index_path(name) is None and not check_downloaded(name)
        folder = tmp_path / "cache" / "indexes" / f"{want['filename'].removesuffix('.tar.gz')}.{want['md5']}"
        folder.mkdir(parents=True)
        assert rp.prebuilt_index_path(name) == folder and check_downloaded(name)
        assert rp.index_problem(name) is None
    # a name only Pyserini's online tables know is "not found", never a crash (2.x offline: no record at all)
    problem = rp.index_problem("msmarco-v1-passage.unicoil")
    assert problem.startswith(("prebuilt index msmarco-v1-passage.unicoil (", "index msmarco-v1-passage.unicoil not "
                                                                              "found")), problem


def test_prebuilt_fallback_serves_the_shipped_entries_and_placeholders_only_during_import():
    """Pyserini 2.x offline, no saved copy: each prebuilt-indexes file gets kd_pyserini's shipped entries for it (or
    an empty table); the placeholders for the names prebuilt_index_info reads at import are gone once it is imported
    (they used to stay in every table loaded later: index_problem('msmarco-v1-passage.unicoil') raised IndexError)."""
    from kd_pyserini.pyserini_compat import metadata

    base = "https://raw.githubusercontent.com/castorini/prebuilt-indexes/0123abc/"
    fallback = metadata.prebuilt_fallback({"msmarco-v1-passage.unicoil"})
    data, served = fallback(base + "lucene/msmarco-v1-passage-inverted.json")
    records = json.loads(data)
    assert [r["name"] for r in records] == ["msmarco-v1-passage", "msmarco-v1-passage.unicoil"]
    assert records[0] == _shipped_prebuilt()["msmarco-v1-passage"] and records[1]["urls"] == []
    assert served == "kd_pyserini's shipped entries (msmarco-v1-passage)"
    fallback.keys.clear()  # what the import hook does once prebuilt_index_info is imported
    assert [r["name"] for r in json.loads(fallback(base + "lucene/msmarco-v1-passage-inverted.json")[0])] == \
        ["msmarco-v1-passage"]
    assert fallback(base + "lucene/beir-inverted.json") == (b"[]", "empty table")
    faiss = json.loads(fallback(base + "faiss/msmarco-faiss.json")[0])
    assert sorted(faiss) == ["msmarco-v1-passage.distilbert-dot-margin-mse-t2",
                             "msmarco-v1-passage.distilbert-dot-tas_b-b256"]
    assert fallback(base + "faiss/beir-faiss.json") == (b"{}", "empty table")
    assert fallback("https://raw.githubusercontent.com/castorini/eval/abc/topics.json") is None


# ------------------------------------------------------------------------------------------- running what is here

def test_reference_runs_reproduce_exactly(data, offline):
    matrices = rp.load_matrices(ROOT / "runs", ["trec-dl-19", "trec-dl-20"])
    results = rp.reproduce(matrices, rp.build_resolver(output_dir=offline / "out"), offline / "out",
                           conditions=["*-reference-run"], echo=lambda s: None)
    assert len(results) == 4 and all(r.status == rp.PASS for r in results)
    expected = {("trec-dl-19", "tas-b-reference-run"): 0.7210, ("trec-dl-20", "tas-b-reference-run"): 0.6854,
                ("trec-dl-19", "bm25-default-reference-run"): 0.5058,
                ("trec-dl-20", "bm25-default-reference-run"): 0.4796}
    for (bench, cond), value in expected.items():
        res, rows = _rows(results, bench, cond)
        assert round(rows["nDCG@10"].measured, 4) == value
        assert rows["nDCG@10"].verdict == rp.PASS and abs(rows["nDCG@10"].delta) < 5e-5
        # a top-100 run cannot check depth-1000 measures: reported, not failed
        for m in ("AP(rel=2)", "R(rel=2)@1000"):
            assert rows[m].verdict == rp.NOT_CHECKABLE and rows[m].delta is None
        assert res.latency_ms is None  # nothing was run, so nothing was timed
    _, rows = _rows(results, "trec-dl-19", "tas-b-reference-run")
    assert rows["RR(rel=2)@10"].verdict == rp.PASS and rows["RR(rel=2)@10"].expected == 0.883  # model card, ±0.01


def test_kd_repro_offline_leaderboard_and_plot(data, offline):
    """The whole DL matrix on this machine: reference runs pass, their fusion is measured, the rest not runnable."""
    out = offline / "out"
    res = CliRunner().invoke(kd_repro, ["-b", "trec-dl-19", "-b", "dl20", "-o", str(out)])
    assert res.exit_code == 0, res.output
    md = (out / "leaderboard.md").read_text()
    assert "| trec-dl-19 | tas-b-reference-run | `nDCG@10` | 0.7210 | 0.7210 | ±0.0000 | yes (±0.0005) |" in md
    assert "| trec-dl-20 | tas-b-reference-run | `nDCG@10` | 0.6854 | 0.6854 | ±0.0000 | yes (±0.0005) |" in md
    assert "| trec-dl-19 | bm25-default-reference-run | `nDCG@10` | 0.5058 | 0.5058 |" in md
    assert "| trec-dl-20 | bm25-default-reference-run | `nDCG@10` | 0.4796 | 0.4796 |" in md
    not_runnable = [line for line in md.splitlines() if "not runnable: " in line]
    assert len(not_runnable) > 20
    assert any("| tas-b | `nDCG@10` | 0.7210 |  |  | not runnable: weights sebastian-hofstaetter/distilbert-dot-"
               "tas_b-b256-msmarco not in the local Hugging Face cache" in line for line in not_runnable)
    assert any("| bm25-default | `nDCG@10` | 0.5058 |  |  | not runnable: prebuilt index msmarco-v1-passage" in line
               and "not in Pyserini's cache" in line for line in not_runnable)
    assert (out / "efficiency.png").read_bytes()[:8] == PNG_MAGIC

    records = json.loads((out / "leaderboard.json").read_text())
    by = {(r["benchmark"], r["condition"]): r for r in records}
    assert len(records) == 2 * 13
    for r in records:
        if r["status"] == rp.NOT_RUNNABLE:
            assert r["problems"] and all(row["measured"] is None and row["verdict"] == rp.NOT_RUNNABLE
                                         for row in r["rows"])
    runnable = {k for k, r in by.items() if r["status"] != rp.NOT_RUNNABLE}
    assert runnable == {(b, c) for b in ("trec-dl-19", "trec-dl-20") for c in
                        ("tas-b-reference-run", "bm25-default-reference-run", "hybrid-bm25-tas-b-reference-runs")}
    # the small runnable condition: kd-fuse of the two reference runs, checked against fusion + evaluation here
    from kd_pyserini.evaluation import evaluate
    from kd_pyserini.fusion import fuse
    from kd_pyserini.resources import get_qrels
    from kd_pyserini.trec_io import read_run

    runs = data / "msmarco-dl" / "runs"
    fused = fuse([read_run(runs / "run.dl19.bm25-default.top100.txt"), read_run(runs / "run.dl19.tas-b.top100.txt")],
                 "interpolation", k=1000, alpha=0.1)
    want = evaluate(fused, get_qrels("dl19-passage"), ["nDCG@10"])["nDCG@10"]
    hybrid = by[("trec-dl-19", "hybrid-bm25-tas-b-reference-runs")]
    assert hybrid["status"] == rp.NO_REFERENCE  # no published figure: measured, never "reproduced"
    got = next(row["measured"] for row in hybrid["rows"] if row["measure"] == "nDCG@10")
    assert got == pytest.approx(want, abs=1e-6) and round(got, 4) == 0.7206
    assert Path(hybrid["run_file"]).is_file()
    # full-depth conditions name what is missing
    assert any("needs the runs of bm25-default, tas-b" in p for p in by[("trec-dl-19", "hybrid-bm25-tas-b")]["problems"])


def test_strict_and_failures_set_the_exit_status(data, offline):
    """A figure outside its tolerance fails the command; --strict also fails on not-runnable conditions."""
    mdir = offline / "matrix"
    mdir.mkdir()
    (mdir / "dl19.yaml").write_text(
        "benchmark: trec-dl-19\ntopics: dl19-passage\nqrels: dl19-passage\nmeasures: [nDCG@10]\nconditions:\n"
        "  - name: wrong\n    type: reference-run\n    depth: 100\n"
        "    run: ${data}/msmarco-dl/runs/run.dl19.tas-b.top100.txt\n"
        "    expected: [{source: made up, tolerance: 0.0005, scores: {nDCG@10: 0.7300}}]\n"
        "  - name: missing\n    type: reference-run\n    run: ${data}/no/such/run.txt\n"
        "    expected: [{source: made up, tolerance: 0.0005, scores: {nDCG@10: 0.5}}]\n")
    runner = CliRunner()
    res = runner.invoke(kd_repro, ["--matrix-dir", str(mdir), "-o", str(offline / "o1"), "-c", "wrong", "--no-plot"])
    assert res.exit_code == 1
    assert "| trec-dl-19 | wrong | `nDCG@10` | 0.7300 | 0.7210 | -0.0090 | **NO** (±0.0005) |" in res.output
    res = runner.invoke(kd_repro, ["--matrix-dir", str(mdir), "-o", str(offline / "o2"), "-c", "missing"])
    assert res.exit_code == 0, res.output  # not runnable is not a failure...
    assert "not runnable: reference run" in res.output and "no/such/run.txt not found" in res.output
    res = runner.invoke(kd_repro, ["--matrix-dir", str(mdir), "-o", str(offline / "o3"), "-c", "missing", "--strict"])
    assert res.exit_code == 1  # ...unless asked
    res = runner.invoke(kd_repro, ["--matrix-dir", str(mdir), "-c", "nope"])
    assert res.exit_code == 2 and "no condition matches 'nope'" in res.output


def test_dry_run_fills_commands_and_runs_nothing(data, offline):
    out = offline / "out"
    res = CliRunner().invoke(kd_repro, ["-b", "scifact", "-b", "trec-dl-19", "--dry-run", "-o", str(out),
                                       "--set", "threads=3"])
    assert res.exit_code == 0, res.output
    assert "scifact/bm25-flat: RUNNABLE" in res.output
    assert f"kd-index bm25 --corpus {data}/scifact/corpus.jsonl.gz --output {out}/indexes/" in res.output
    assert "--threads 3" in res.output
    assert "scifact/hybrid-bm25-all-minilm-l6-v2: RUNNABLE" in res.output  # its inputs would be produced first
    assert "trec-dl-19/tas-b: NOT RUNNABLE: weights" in res.output
    assert "# prebuilt index, not built: kd-index dense" in res.output
    assert not out.exists() or not any(out.rglob("run.*"))


def test_kd_eval_without_runs_lists_reproduction_runs(data, offline, monkeypatch):
    monkeypatch.setenv("KD_PYSERINI_REPRO_OUTPUT", str(offline / "none"))
    table = rp.evaluate_benchmark_runs("dl19-passage")
    assert round(table["tas-b-reference-run"]["nDCG@10"], 4) == 0.7210
    assert table["tas-b-reference-run [published]"]["nDCG@10"] == 0.7210
    assert "R(rel=2)@1000" not in table["tas-b-reference-run"]  # not measurable on a top-100 run
    assert round(table["bm25-default-reference-run"]["nDCG@10"], 4) == 0.5058
    from kd_pyserini.cli.eval import main as kd_eval

    res = CliRunner().invoke(kd_eval, ["trec-dl-20"])
    assert res.exit_code == 0, res.output
    assert re.search(r"tas-b-reference-run\s+0\.6854", res.output)
    assert re.search(r"tas-b-reference-run \[published\]\s+0\.6854", res.output)


# ------------------------------------------------------------------------------------ latency probe and progress

class _FakeBm25:
    made: list = []

    def __init__(self, index_dir, *, k1=0.9, b=0.4, threads=1):
        self.made.append({"index": str(index_dir), "k1": k1, "b": b, "threads": threads})
        self.queries = []

    def search(self, query, hits=1000):
        self.made[-1].setdefault("searches", []).append((query, hits))
        return [("d1", 1.0)]


class _FakeDense:
    made: list = []

    def __init__(self, index_dir, encoder, **kw):
        self.made.append({"index": str(index_dir), "encoder": encoder, **kw, "encoded": 0, "searched": []})

    def encode(self, query):
        import numpy as np

        self.made[-1]["encoded"] += 1
        return np.zeros((1, 4), dtype=np.float32)

    def search_vectors(self, vectors, hits):
        self.made[-1]["searched"].append((vectors.shape, hits))
        return [[("d1", 1.0)]]


def test_latency_probe_takes_a_search_spec(tmp_path, monkeypatch):
    """The probe takes a SearchSpec (the one a kd-search run records in its sidecar; no command line is parsed) and
    calls the searchers the pipeline builds with it; re-rank stages, hybrids, no spec and no queries: None."""
    from kd_pyserini.search import pipeline
    from kd_pyserini.search.spec import Bm25Stage, DenseStage, Encoding, RerankStage, SearchSpec

    index = tmp_path / "index"
    index.mkdir()
    a = SearchSpec(output="run.txt", first_stage="bm25", topics="dl19-passage", hits=7,
                   bm25=Bm25Stage(str(index), k1=1.2, b=0.5))
    monkeypatch.setattr(pipeline, "Bm25Searcher", _FakeBm25)
    _FakeBm25.made = []
    queries = [f"query {i}" for i in range(20)]
    ms = rp.probe_latency(a, queries, n=5, warmup=1)
    assert isinstance(ms, float) and ms >= 0
    (made,) = _FakeBm25.made
    assert (made["index"], made["k1"], made["b"], made["threads"]) == (str(index), 1.2, 0.5, 1)
    assert made["searches"] == [(q, 7) for q in queries[:6]]  # 1 untimed + 5 timed, one at a time

    monkeypatch.setattr(pipeline, "DenseSearcher", _FakeDense)
    _FakeDense.made = []
    dense = SearchSpec(output="run.txt", first_stage="dense", topics="dl19-passage", hits=10, threads=2,
                       dense=DenseStage(str(index), "my-encoder"),
                       encoding=Encoding(device="cpu", precision="fp16", query_max_length=24))
    assert rp.probe_latency(dense, queries, n=4, warmup=2) is not None
    (made,) = _FakeDense.made
    assert (made["index"], made["encoder"], made["query_max_length"], made["threads"], made["precision"],
            made["device"]) == (str(index), "my-encoder", 24, 2, "fp16", "cpu")
    assert made["encoded"] == 6 + 4  # a warm-up pass over the sample, then the timed pass
    assert made["searched"] == [((1, 4), 10)] * 4  # the first vectors, timed after 2 untimed

    reranked = SearchSpec(output="run.txt", first_stage="bm25", topics="dl19-passage", bm25=Bm25Stage(str(index)),
                          rerank=(RerankStage("bi-encoder", "my-encoder", 100),), first_stage_depth=100)
    assert rp.probe_latency(reranked, queries) is None and rp.probe_latency(None, queries) is None
    assert rp.probe_latency(a, [], n=5) is None and rp.probe_latency(a, queries, n=0) is None
    assert len(_FakeBm25.made) == 1  # nothing was built for the searches it does not time


def test_probe_spec_is_the_spec_the_run_records(tmp_path):
    """The runner's probe reads the spec kd-search wrote into the run's sidecar: what was searched, not a parse of
    the command; a run without one (another program, an older kd-search) gives None."""
    from kd_pyserini.search.sidecar import write_sidecar
    from kd_pyserini.search.spec import Bm25Stage, SearchSpec

    spec = SearchSpec(output=str(tmp_path / "run.txt"), first_stage="bm25", topics="scifact", hits=9,
                      bm25=Bm25Stage("idx", k1=1.2, b=0.75), measures=("nDCG@10",))
    run = tmp_path / "run.txt"
    run.write_text("1 Q0 d1 1 2.0 t\n")
    write_sidecar(run, {"spec": spec.to_dict()})
    assert rp.probe_spec(run) == spec
    write_sidecar(run, {"mode": "bm25"})
    assert rp.probe_spec(run) is None
    assert rp.probe_spec(tmp_path / "missing.txt") is None


_STUB = """import os, shutil, sys
sys.stderr.write("stub progress env=" + os.environ.get("KD_PYSERINI_PROGRESS", "unset") + "\\n")
sys.stderr.write("encoding 50%\\rencoding 100%\\n")
sys.stderr.flush()
if sys.argv[1] == "fail":
    sys.stderr.write("boom: the stub failed\\n")
    sys.exit(3)
shutil.copy(sys.argv[1], sys.argv[2])
"""


def _stub_matrix(tmp_path: Path, fail: bool = False) -> Path:
    mdir = tmp_path / ("matrix-fail" if fail else "matrix")
    mdir.mkdir()
    stub = tmp_path / "stub.py"
    stub.write_text(_STUB)
    src = "fail" if fail else "${data}/msmarco-dl/runs/run.dl19.tas-b.top100.txt"
    (mdir / "dl19.yaml").write_text(
        "benchmark: trec-dl-19\ntopics: dl19-passage\nqrels: dl19-passage\nmeasures: [nDCG@10]\nconditions:\n"
        f"  - name: stub\n    type: bm25\n    depth: 100\n    steps:\n      - python {stub} {src} ${{output}}\n"
        "    expected: [{source: Pyserini 2CR, tolerance: 0.0005, scores: {nDCG@10: 0.7210}}]\n")
    return mdir


def test_children_progress_is_passed_through(data, offline, capsys):
    """With progress on, a command's stderr (its progress bars) is streamed to ours and KD_PYSERINI_PROGRESS=1 is in
    its environment; off, it is captured and KD_PYSERINI_PROGRESS=0. Either way the log keeps it, redraws folded."""
    matrices = rp.load_matrices(_stub_matrix(offline))
    resolver = rp.build_resolver(output_dir=offline / "out")
    (res,) = rp.reproduce(matrices, resolver, offline / "on", progress=True, echo=lambda s: None)
    err = capsys.readouterr().err
    assert "stub progress env=1\n" in err and "encoding 50%\rencoding 100%\n" in err
    assert res.status == rp.PASS and "stub progress env=1\nencoding 100%\n" in res.log and "50%" not in res.log

    (res,) = rp.reproduce(matrices, resolver, offline / "off", progress=False, echo=lambda s: None)
    assert "stub progress" not in capsys.readouterr().err
    assert res.status == rp.PASS and "stub progress env=0" in res.log

    (offline / "cli").mkdir()
    res = CliRunner().invoke(kd_repro, ["--matrix-dir", str(_stub_matrix(offline / "cli")), "-o",
                                        str(offline / "cli" / "out"), "--progress", "--no-plot"])
    assert res.exit_code == 0, res.output
    assert "stub progress env=1" in res.output

    # an error is still reported with the tail of the command's stderr, progress on or off
    failing = rp.load_matrices(_stub_matrix(offline, fail=True))
    for progress in (True, False):
        (res,) = rp.reproduce(failing, resolver, offline / f"fail-{progress}", progress=progress, echo=lambda s: None)
        assert res.status == rp.ERROR and "exit 3" in res.problems[0] and "boom: the stub failed" in res.problems[0]
        assert res.rows[0].verdict == rp.ERROR


# ---------------------------------------------------------------------------------------------- end to end (slow)

@pytest.mark.slow
def test_scifact_bm25_end_to_end(data, offline):
    """Index the SciFact corpus with kd-index, search with kd-search, time it, and match Pyserini's BEIR 2CR."""
    out = offline / "out"
    res = CliRunner().invoke(kd_repro, ["-b", "scifact", "-c", "bm25-flat", "-o", str(out), "--latency-queries", "20"])
    assert res.exit_code == 0, res.output
    records = json.loads((out / "leaderboard.json").read_text())
    (rec,) = records
    assert rec["status"] == rp.PASS
    got = {row["measure"]: round(row["measured"], 4) for row in rec["rows"]}
    assert got == {"nDCG@10": 0.6789, "R@100": 0.9253, "R@1000": 0.9767}
    assert rec["latency_ms"] is not None and 0 < rec["latency_ms"] < 5000
    assert (out / "scifact" / "run.scifact.bm25-flat.txt.json").is_file()  # kd-search's provenance sidecar
    assert (out / "efficiency.png").read_bytes()[:8] == PNG_MAGIC
    # a second run reuses the index it built (the step is skipped)
    res = CliRunner().invoke(kd_repro, ["-b", "scifact", "-c", "bm25-flat", "-o", str(out), "--dry-run"])
    assert "# exists, skipped: kd-index bm25" in res.output


FAMILY = {"benchmark": "dl19-passage", "depth": 100, "architectures": {
    "bert-dot": {"after": {"nDCG@10": 0.41}, "latency_ms": 900.0, "latency_ms_precomputed": 12.0},
    "colbert": {"after": {"nDCG@10": 0.45}, "latency_ms": 950.0, "latency_ms_precomputed": 60.0},
    "prettr": {"after": {"nDCG@10": 0.43}, "latency_ms": 1000.0, "latency_ms_precomputed": 300.0},
    "bert-cat": {"after": {"nDCG@10": 0.47}, "latency_ms": 1500.0, "latency_ms_precomputed": None}}}


def test_the_efficiency_plot_gains_one_marker_per_family_architecture(tmp_path):
    from kd_pyserini.reproduce.plot import FamilyFileError, family_points

    points = family_points(FAMILY)
    assert [(p[3], p[0], p[1]) for p in points] == [("bert-dot", 12.0, 0.41), ("colbert", 60.0, 0.45),
                                                    ("prettr", 300.0, 0.43), ("bert-cat", 1500.0, 0.47)]
    assert points[3][2] == "BERT_CAT (no precomputation)" and points[1][2] == "ColBERT (precomputed passages)"
    plain = rp.plot_efficiency([], [], tmp_path / "plain.png")
    with_family = rp.plot_efficiency([], [], tmp_path / "family.png", family=FAMILY)
    assert with_family.read_bytes()[:8] == PNG_MAGIC and with_family.read_bytes() != plain.read_bytes()
    # kd-repro's leaderboard draws the family.json found in its output folder
    out = tmp_path / "out"
    out.mkdir()
    (out / "family.json").write_text(json.dumps(FAMILY))
    paths = rp.write_leaderboard([], [], out)
    assert paths["plot"].read_bytes() == with_family.read_bytes()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FamilyFileError, match=r"bad\.json: not a family JSON .*family_distill\.py wrote"):
        family_points(bad)
    with pytest.raises(FamilyFileError, match="'colbert' has no after/nDCG@10"):
        family_points({"architectures": {"colbert": {"latency_ms": 3.0}}})
    # before-training scores (hollow markers with an arrow) and BM25's order (a line) when the file has them
    from kd_pyserini.reproduce.plot import _family_extras

    assert _family_extras(FAMILY) == ({}, None)
    richer = json.loads(json.dumps(FAMILY))
    richer["bm25"] = {"nDCG@10": 0.5}
    richer["architectures"]["colbert"]["before"] = {"nDCG@10": 0.3}
    assert _family_extras(richer) == ({"colbert": 0.3}, 0.5)
    drawn = rp.plot_efficiency([], [], tmp_path / "richer.png", family=richer)
    assert drawn.read_bytes()[:8] == PNG_MAGIC and drawn.read_bytes() != with_family.read_bytes()
