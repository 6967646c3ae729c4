"""kd-fuse ``--ranks file`` against ``python -m pyserini.fusion`` itself, line for line, on runs with tied scores.

Pyserini's fusion runs once, through kd_pyserini's wrapper (``kd_pyserini.pyserini.main``, which starts the JVM the way
kd_pyserini must before Pyserini does), in ONE subprocess for every case (module fixture ``pyserini_outputs``).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kd_pyserini.cli.fuse import main as kd_fuse
from kd_pyserini.fusion import fuse, read_fusion_run, rrf
from kd_pyserini.fusion_files import kahan_sum, pyserini_topic_order
from kd_pyserini.trec_io import read_run


def _tied_run(rng: random.Random, qids: list[str], n: int, pool: int, levels: list[float], shuffle_ranks: bool = False):
    """Lines ``qid Q0 docid rank score tag``: scores from a few ``levels`` (many ties), ranks 1..n in file order; the
    file lists tied documents in a random order (not docid order), or, with ``shuffle_ranks``, every document in a
    random order whatever its score (a rank column that is not the score order, as after a re-ranker)."""
    lines = []
    for q in qids:
        docs = rng.sample([f"d{i:03d}" for i in range(pool)], n)
        scored = [(d, rng.choice(levels)) for d in docs]
        if not shuffle_ranks:
            rng.shuffle(scored)
            scored.sort(key=lambda ds: -ds[1])  # stable: ties stay in the shuffled order
        lines += [f"{q} Q0 {d} {r} {s!r} sys\n" for r, (d, s) in enumerate(scored, 1)]
    return "".join(lines)


@pytest.fixture(scope="module")
def tied_runs(tmp_path_factory) -> list[Path]:
    rng = random.Random(19)
    tmp = tmp_path_factory.mktemp("tied")
    texts = [
        _tied_run(rng, ["1", "2", "10", "3"], 40, 60, [3.5, 2.25, 2.25, 1.0, 0.5]),
        _tied_run(rng, ["1", "2", "3"], 30, 60, [12.0, 11.0, 11.0, 9.5]),
        _tied_run(rng, ["1", "10", "3", "20"], 45, 60, [0.9, 0.8, 0.7, 0.31, 0.123456789], shuffle_ranks=True),
    ]
    paths = []
    for i, text in enumerate(texts):
        paths.append(tmp / f"run{i}.txt")
        paths[-1].write_text(text)
    return paths


# (name, pyserini.fusion arguments, kd-fuse arguments); the output files are compared byte for byte
CASES = [
    ("rrf-defaults", ["--method", "rrf"], ["--method", "rrf"], 2),
    ("rrf-depth-k-3runs", ["--method", "rrf", "--rrf.k", "10", "--depth", "7", "--k", "9"],
     ["--method", "rrf", "--rrf-k", "10", "--depth", "7", "--hits", "9"], 3),
    ("interpolation", ["--method", "interpolation", "--alpha", "0.3"],
     ["--method", "combsum", "--norm", "none", "--weights", "0.3,0.7"], 2),
    ("average-3runs", ["--method", "average", "--depth", "20"],
     ["--method", "combsum", "--norm", "none", "--weights", ",".join([repr(1 / 3)] * 3), "--depth", "20"], 3),
    ("normalize-3runs", ["--method", "normalize", "--k", "12"],
     ["--method", "combsum", "--norm", "minmax", "--hits", "12"], 3),
]


@pytest.fixture(scope="module")
def pyserini_outputs(tied_runs, tmp_path_factory) -> dict[str, str]:
    out_dir = tmp_path_factory.mktemp("pyserini-fusion")
    argvs = {name: ["fusion", "--runs", *map(str, tied_runs[:n]), "--output", str(out_dir / f"{name}.txt"), *args]
             for name, args, _, n in CASES}
    script = ("import json, sys\nfrom kd_pyserini.pyserini import main\n"
              "for argv in json.loads(sys.argv[1]).values():\n    main(argv)\n")
    res = subprocess.run([sys.executable, "-c", script, json.dumps(argvs)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return {name: (out_dir / f"{name}.txt").read_text() for name, *_ in CASES}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_kd_fuse_ranks_file_equals_pyserini_fusion_line_for_line(case, tied_runs, pyserini_outputs, tmp_path):
    name, _, kd_args, n = case
    out = tmp_path / "kd.txt"
    res = CliRunner().invoke(kd_fuse, [*map(str, tied_runs[:n]), *kd_args, "--run-tag", "pyserini.fusion",
                                       "-o", str(out)])
    assert res.exit_code == 0, res.output
    theirs = pyserini_outputs[name]
    assert len(theirs.splitlines()) > 20
    assert out.read_text() == theirs  # every line: topic order, tie order, ranks, every digit of every score


def test_the_tied_runs_exercise_what_matters(tied_runs, pyserini_outputs, tmp_path):
    """The cases really contain what distinguishes the conventions: fused ties, a rank column that is not the score
    order, and sums where pandas' compensated summation differs from the naive sum."""
    theirs = [line.split() for line in pyserini_outputs["rrf-defaults"].splitlines()]
    scores = [(q, float(s)) for q, _, _, _, s, _ in theirs]
    assert len(set(scores)) < len(scores)  # tied fused scores
    # --ranks score (trec_eval order) gives other fused scores on these runs: the rank column decides
    runs = [read_fusion_run(p) for p in tied_runs[:2]]
    by_file, by_score = rrf(runs, ranks="file"), rrf(runs, ranks="score")
    assert any(by_file[q] != by_score[q] for q in by_file)
    assert any(list(by_file[q]) != list(by_score[q]) for q in by_file)
    # the rank column of run 3 is not its score order
    third = read_fusion_run(tied_runs[2])
    assert any(sorted(third[q], key=lambda d: third.ranks[q][d]) != [d for d, _ in sorted(
        third[q].items(), key=lambda kv: (kv[1], kv[0]), reverse=True)] for q in third)
    # averaging three runs: Kahan's sum is not always the naive one, and Pyserini's numbers are Kahan's
    three = [read_fusion_run(p) for p in tied_runs]
    avg = [line.split() for line in pyserini_outputs["average-3runs"].splitlines()]
    differ = 0
    for q, _, d, _, s, _ in avg:
        parts = [run[q][d] * (1 / 3) for run in three if q in run and d in list(run[q])[:20]]
        naive = 0.0
        for v in parts:  # left to right, no compensation
            naive += v
        differ += naive != kahan_sum(parts)
        assert float(s) == kahan_sum(parts)
    assert differ > 0


def test_ranks_file_in_python_and_its_errors(tied_runs):
    runs = [read_fusion_run(p) for p in tied_runs[:2]]
    fused = fuse(runs, "rrf", k=5, ranks="file", depth=3)
    assert list(fused) == pyserini_topic_order(list(fused)) == ["1", "2", "3", "10"]
    for docs in fused.values():
        items = list(docs.items())
        assert items == sorted(items, key=lambda kv: (-kv[1], kv[0]))  # ties by docid ascending
    plain = [read_run(p) for p in tied_runs[:2]]  # no rank column
    with pytest.raises(ValueError, match=r"run 1 has no rank column .* ranks='score'"):
        rrf(plain, ranks="file")
    with pytest.raises(ValueError, match="ranks must be one of file, score"):
        rrf(runs, ranks="column")
    assert pyserini_topic_order(["10", "9", "b", "a"]) == ["10", "9", "a", "b"]  # not all numeric: as strings


def test_kd_fuse_ranks_score_and_option_errors(tied_runs, tmp_path):
    out = tmp_path / "s.txt"
    res = CliRunner().invoke(kd_fuse, [*map(str, tied_runs[:2]), "--ranks", "score", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert read_run(out) == rrf([read_run(p) for p in tied_runs[:2]], ranks="score", depth=1000)
    res = CliRunner().invoke(kd_fuse, [*map(str, tied_runs[:2]), "--method", "interpolation", "--ranks", "file",
                                       "-o", str(out)])
    assert res.exit_code == 2 and "--ranks does not apply to --method interpolation" in res.output
    dup = tmp_path / "dup.txt"
    dup.write_text("1 Q0 a 1 2.0 t\n1 Q0 a 2 1.0 t\n")
    res = CliRunner().invoke(kd_fuse, [str(tied_runs[0]), str(dup), "-o", str(out)])
    assert res.exit_code == 1 and f"{dup}:2: document 'a' listed again" in res.output
    bad_rank = tmp_path / "bad_rank.txt"
    bad_rank.write_text("1 Q0 a 1 2.0 t\n1 Q0 b two 1.0 t\n")
    res = CliRunner().invoke(kd_fuse, [str(tied_runs[0]), str(bad_rank), "-o", str(out)])
    assert res.exit_code == 1 and res.output.strip().splitlines() == [
        f"Error: {bad_rank}:2: rank 'two' is not an integer; fusion with ranks from the file needs the rank column "
        "(or re-rank by score: --ranks score)"]
    res = CliRunner().invoke(kd_fuse, [str(tied_runs[0]), str(bad_rank), "--ranks", "score", "-o", str(out)])
    assert res.exit_code == 0, res.output
    extra = tmp_path / "extra.txt"
    extra.write_text("1 Q0 a 1 2.0 t # comment\n1 Q0 b 2 1.0 t\n")
    res = CliRunner().invoke(kd_fuse, [str(tied_runs[0]), str(extra), "-o", str(out)])
    assert res.exit_code == 0 and "1 line has fields after the run tag" in res.output
