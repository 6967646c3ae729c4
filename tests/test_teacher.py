"""``kd-teacher``: mining triples, scoring them with teachers (cross-encoders, bi-encoders, ensembles), resuming after
a kill, shards and merge, and kd-train reading the result unchanged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import sigint_default
import torch

from kd_pyserini.teacher.mine import mine_triples, write_triples
from kd_pyserini.teacher.score import PAUSE_ENV, merge_shards, score_triples, shard_path, work_dir
from kd_pyserini.teacher.triples import read_triples
from kd_pyserini.trec_io import FormatError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_cross_encoder import build_bert_cat, build_seqclass, hf_seqclass_scores, matchmaker_scores  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TEACHER = [sys.executable, "-m", "kd_pyserini.cli.teacher"]
NO_JVM = {"KD_PYSERINI_JVM_OPTIONS": "-XX:+NoSuchOption"}  # any JVM start would fail with this option


def _run(args: list[str], timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    """A real process: for what the process boundary decides (signals, locks, no JVM started)."""
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw)


def _cli(args: list[str], env: dict[str, str] | None = None) -> SimpleNamespace:
    """The same command line run in this process with Click's CliRunner (``returncode``, ``stdout``, ``stderr`` as
    :func:`_run` gives them): for tests where the process boundary is not what is tested."""
    from click.testing import CliRunner

    from kd_pyserini.cli.teacher import main as teacher_main
    from kd_pyserini.cli.train import main as train_main

    mains = {"kd_pyserini.cli.teacher": teacher_main, "kd_pyserini.train": train_main}
    assert args[:2] == [sys.executable, "-m"] and args[2] in mains, args
    r = CliRunner().invoke(mains[args[2]], args[3:], env=env, catch_exceptions=False)
    return SimpleNamespace(returncode=r.exit_code, stdout=r.stdout, stderr=r.stderr)


def _read_teacher(path: Path) -> list[list[str]]:
    return [line.rstrip("\n").split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def seqclass_dir(tmp_path_factory, bert_vocab) -> Path:
    return build_seqclass(tmp_path_factory.mktemp("teachers") / "seqclass", bert_vocab)


@pytest.fixture(scope="module")
def seqclass2_dir(tmp_path_factory, bert_vocab) -> Path:
    return build_seqclass(tmp_path_factory.mktemp("teachers") / "seqclass2", bert_vocab, seed=7)


@pytest.fixture(scope="module")
def cat_dir(tmp_path_factory, bert_vocab) -> Path:
    return build_bert_cat(tmp_path_factory.mktemp("teachers") / "bert-cat", bert_vocab)


@pytest.fixture(scope="module")
def text_triples(data_dir, tmp_path_factory) -> Path:
    """The first 30 lines of MS MARCO triples.train.small.tsv, plus three repeats (pairs seen before)."""
    lines = (data_dir / "kd-samples" / "triples.train.small.head100.tsv").read_text(encoding="utf-8").splitlines()
    q0, p0, n0 = lines[0].split("\t")
    extra = [lines[0], f"{q0}\t{p0}\t{lines[1].split(chr(9))[2]}", f"{q0}\t{n0}\t{p0}"]
    out = tmp_path_factory.mktemp("triples") / "triples.tsv"
    out.write_text("\n".join(lines[:30] + extra) + "\n", encoding="utf-8")
    return out


# ------------------------------------------------------------------------------------------------ score

def test_score_cli_writes_the_cross_encoders_logits(text_triples, seqclass_dir, tmp_path):
    out = tmp_path / "teacher.tsv"
    res = _run([*TEACHER, "score", "--triples", str(text_triples), "--teacher", str(seqclass_dir), "-o", str(out),
                "--no-progress"], env={**os.environ, **NO_JVM})
    assert res.returncode == 0, res.stderr  # and no Java was started (any JVM start fails with NO_JVM)
    assert "33 triples, 61 unique pairs (of 66)" in res.stderr  # repeated pairs are scored once
    rows = _read_teacher(out)
    triples = [line.split("\t") for line in text_triples.read_text(encoding="utf-8").splitlines()]
    assert [r[2:] for r in rows] == triples  # the triple as it was, after the two scores
    q = [t[0] for t in triples] * 2
    p = [t[1] for t in triples] + [t[2] for t in triples]
    ref = hf_seqclass_scores(seqclass_dir, q, p, 128)  # the card in the folder says max_length 128
    got = np.array([float(r[0]) for r in rows] + [float(r[1]) for r in rows])
    assert np.abs(got - ref).max() < 1e-4 and ref.std() > 1e-2
    assert not work_dir(out).exists() and Path(str(out) + ".json").is_file()
    from kd_pyserini.train import load_teacher

    data = load_teacher(out)  # kd-train reads it as a text teacher file, unchanged
    assert data.format == "text" and len(data) == 33 and abs(data[0].pos_score - float(rows[0][0])) < 1e-6


def test_two_teachers_give_their_mean(text_triples, seqclass_dir, cat_dir, tmp_path):
    a, b, both = tmp_path / "a.tsv", tmp_path / "b.tsv", tmp_path / "ab.tsv"
    kw = {"device": "cpu", "progress": False}
    score_triples(text_triples, a, [str(seqclass_dir)], **kw)
    score_triples(text_triples, b, [str(cat_dir)], max_length=128, **kw)
    res = score_triples(text_triples, both, [str(seqclass_dir), str(cat_dir)], max_length=128, **kw)
    ra, rb, rab = _read_teacher(a), _read_teacher(b), _read_teacher(both)
    for x, y, m in zip(ra, rb, rab):
        for c in (0, 1):
            assert abs((float(x[c]) + float(y[c])) / 2 - float(m[c])) < 2e-6
    assert res.pairs == 61 and res.scored_pairs == 122  # each teacher scores each unique pair once
    triples = [line.split("\t") for line in text_triples.read_text(encoding="utf-8").splitlines()]
    ref = matchmaker_scores(cat_dir, [t[0] for t in triples], [t[1] for t in triples], 128)
    assert np.abs(np.array([float(r[0]) for r in rb]) - ref).max() < 1e-4  # the BERT_Cat teacher's own logits


def test_minilm_teacher_on_mined_dl20_triples_trains_kd_train(data_dir, minilm_dir, tiny_distilbert_dir, tmp_path):
    """Real weights: all-MiniLM-L6-v2 as a bi-encoder teacher scores cosine similarities."""
    dl = data_dir / "msmarco-dl"
    pool, topics = dl / "passages.dl19-dl20-pool.tsv.gz", data_dir / "topics-and-qrels" / "topics.dl20.txt"
    mined = tmp_path / "mined.tsv"
    env = {"KD_PYSERINI_DATA": str(data_dir)}
    res = _cli([*TEACHER, "mine", "--run", str(dl / "candidates.dl20.bm25-top100.tsv.gz"), "--qrels", "dl20-passage",
                "-o", str(mined), "--skip-top", "3", "--negatives-per-positive", "2", "--collection", str(pool)],
               env=env)
    assert res.returncode == 0, res.stderr
    lines = mined.read_text().splitlines()
    assert len(lines) > 1000 and all(len(x.split("\t")) == 3 for x in lines)
    triples = tmp_path / "triples.tsv"
    triples.write_text("\n".join(lines[::97][:16]) + "\n")  # 16 triples spread over the queries
    teacher = tmp_path / "teacher.minilm.tsv"
    res = _cli([*TEACHER, "score", "--triples", str(triples), "--collection", str(pool), "--queries", str(topics),
                "--teacher", "all-minilm-l6-v2", "-o", str(teacher), "--no-progress"], env=env)
    assert res.returncode == 0, res.stderr
    rows = _read_teacher(teacher)
    assert [r[2:] for r in rows] == [x.split("\t") for x in triples.read_text().splitlines()]
    from kd_pyserini.offsets import OffsetIndex

    pidx, qidx = OffsetIndex(pool), OffsetIndex(topics)
    q = [qidx.get(r[2]) for r in rows] * 2
    p = [pidx.get(r[3]) for r in rows] + [pidx.get(r[4]) for r in rows]
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(minilm_dir), AutoModel.from_pretrained(minilm_dir).eval()

    def embed(texts):  # sentence-transformers' all-MiniLM-L6-v2: mean pooling, L2 normalisation, 256 tokens
        f = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            h = model(**f).last_hidden_state
        m = f["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)

    cos = (embed(q) * embed(p)).sum(-1).numpy()
    got = np.array([float(r[0]) for r in rows] + [float(r[1]) for r in rows])
    assert np.abs(got - cos).max() < 1e-4 and got.max() <= 1.0
    student = tmp_path / "student"
    res = _cli([sys.executable, "-m", "kd_pyserini.train", "margin-mse", "--teacher", str(teacher), "--collection",
                str(pool), "--queries", str(topics), "--student", str(tiny_distilbert_dir), "-o", str(student),
                "--max-steps", "2", "--batch-size", "4", "--save-every", "0", "--query-max-length", "8",
                "--passage-max-length", "16", "--no-progress"], env=env)
    assert res.returncode == 0, res.stderr
    assert "trained 2 steps" in res.stdout and (student / "config.json").is_file()


# ------------------------------------------------------------------------------------------------ resume, shards

def _score_cmd(triples: Path, teacher: Path, out: Path) -> list[str]:
    return [*TEACHER, "score", "--triples", str(triples), "--teacher", str(teacher), "-o", str(out), "--chunk-pairs",
            "8", "--batch-size", "4", "--device", "cpu", "--no-progress"]


def _start_and_stop(cmd: list[str], work: Path, chunks: int, sig: int) -> subprocess.Popen:
    """Start ``cmd`` with the pause hook after ``chunks`` chunks, wait until they are on disk, then send ``sig``."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, PAUSE_ENV: str(chunks)}, preexec_fn=sigint_default)
    deadline = time.time() + 300
    while len(list(work.glob("t*-c*.npy"))) < chunks:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, "the scoring run never got going"
        time.sleep(0.2)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc


def test_sigkill_then_rerun_gives_a_byte_identical_file(text_triples, cat_dir, tmp_path):
    straight, resumed = tmp_path / "straight.tsv", tmp_path / "resumed.tsv"
    res = _run(_score_cmd(text_triples, cat_dir, straight))  # a process, as the resumed one (same thread count)
    assert res.returncode == 0, res.stderr
    proc = _start_and_stop(_score_cmd(text_triples, cat_dir, resumed), work_dir(resumed), 3, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not resumed.exists()  # nothing under the final name until complete
    assert len(list(work_dir(resumed).glob("t*-c*.npy"))) == 3
    res = _run(_score_cmd(text_triples, cat_dir, resumed))
    assert res.returncode == 0, res.stderr
    assert "3 chunk file(s) resumed" in res.stderr and "scored 37 pair(s)" in res.stderr  # 61 - 3 * 8
    assert resumed.read_bytes() == straight.read_bytes()
    assert not work_dir(resumed).exists()


def test_ctrl_c_is_one_line_exit_130_and_resumable(text_triples, seqclass_dir, tmp_path):
    out = tmp_path / "t.tsv"
    proc = _start_and_stop(_score_cmd(text_triples, seqclass_dir, out), work_dir(out), 2, signal.SIGINT)
    err = proc.stderr.read()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    res = _run(_score_cmd(text_triples, seqclass_dir, out))
    assert res.returncode == 0 and "2 chunk file(s) resumed" in res.stderr, res.stderr


def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(text_triples, seqclass_dir, tmp_path):
    out = tmp_path / "t.tsv"
    cmd = _score_cmd(text_triples, seqclass_dir, out)
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, PAUSE_ENV: "1"})
    try:
        deadline = time.time() + 300
        while not list(work_dir(out).glob("t*-c*.npy")):
            assert first.poll() is None and time.time() < deadline, first.communicate()[1]
            time.sleep(0.2)
        res = _run(cmd)
        assert res.returncode == 1 and "another kd-teacher score is writing" in res.stderr, res.stderr
    finally:
        first.kill()
        first.wait(timeout=60)
    res = _run(cmd)  # the lock died with the first process
    assert res.returncode == 0 and "1 chunk file(s) resumed" in res.stderr, res.stderr


def test_other_options_do_not_resume_silently(text_triples, seqclass_dir, tmp_path):
    out = tmp_path / "t.tsv"
    proc = _start_and_stop(_score_cmd(text_triples, seqclass_dir, out), work_dir(out), 1, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    res = _run([*_score_cmd(text_triples, seqclass_dir, out), "--max-length", "64"])  # stderr: exactly one line
    assert res.returncode == 1 and "another configuration" in res.stderr and "max_length" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_shards_merge_into_the_same_file(text_triples, seqclass_dir, tmp_path):
    kw = {"device": "cpu", "progress": False, "chunk_pairs": 8}
    whole = tmp_path / "whole.tsv"
    score_triples(text_triples, whole, [str(seqclass_dir)], **kw)
    out = tmp_path / "sharded.tsv"
    for i in (1, 2, 3):
        res = score_triples(text_triples, out, [str(seqclass_dir)], shard=f"{i}/3", **kw)
        assert res.output == shard_path(out, (i, 3)) and not out.exists()
    with pytest.raises(ValueError, match="2/3 missing"):
        merge_shards([shard_path(out, (1, 3)), shard_path(out, (3, 3))], out)
    other = tmp_path / "other.tsv"
    score_triples(text_triples, other, [str(seqclass_dir)], shard="2/3", max_length=64, **kw)
    with pytest.raises(ValueError, match="another scoring run"):
        merge_shards([shard_path(out, (1, 3)), shard_path(other, (2, 3)), shard_path(out, (3, 3))], out)
    res = _cli([*TEACHER, "merge", "-o", str(out), *(str(shard_path(out, (i, 3))) for i in (1, 2, 3))])
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == whole.read_bytes()


# ------------------------------------------------------------------------------------------------ bad input

def test_bad_lines_are_file_line_errors(tmp_path, data_dir, seqclass_dir):
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\t2\t3\n4\t5\n", encoding="utf-8")
    coll = data_dir / "kd-samples" / "collection.head89.tsv"
    queries = tmp_path / "q.tsv"
    queries.write_text("1\twhat is x\n4\twhat is y\n", encoding="utf-8")
    res = _run([*TEACHER, "score", "--triples", str(bad), "--collection", str(coll), "--queries", str(queries),
                "--teacher", str(seqclass_dir), "-o", str(tmp_path / "t.tsv")])
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [
        f"Error: {bad}:2: 2 tab-separated fields; expected 3: 'qid<TAB>pos_pid<TAB>neg_pid' (use --skip-bad to skip "
        "and count bad lines)"]
    bad.write_text("1\t2\t3\n4\t5\t999\n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"bad.tsv:2: pid '999' is not in collection.head89.tsv"):
        score_triples(bad, tmp_path / "t.tsv", [str(seqclass_dir)], collection=coll, queries=queries)
    res = score_triples(bad, tmp_path / "t.tsv", [str(seqclass_dir)], collection=coll, queries=queries,
                        skip_bad=True, progress=False)
    assert res.triples == 1 and _read_teacher(tmp_path / "t.tsv")[0][2:] == ["1", "2", "3"]
    with pytest.raises(ValueError, match="--collection"):
        score_triples(bad, tmp_path / "u.tsv", [str(seqclass_dir)], fmt="ids")
    assert read_triples(bad, collection=None).format == "ids"


# ------------------------------------------------------------------------------------------------ mine

def test_mine_positives_and_hard_negatives():
    run = {"1": {f"d{i}": 100.0 - i for i in range(20)}, "2": {"x": 1.0}, "3": {"a": 2.0, "b": 1.0}}
    qrels = {"1": {"d0": 2, "d5": 1, "d7": 0, "dz": 3}, "2": {"x": 1}, "4": {"y": 1}, "3": {"zz": 0}}
    m = mine_triples(run, qrels, depth=10, skip_top=2, negatives_per_positive=3)
    by_pos: dict[str, list[str]] = {}
    for q, p, n in m.triples:
        assert q == "1"
        by_pos.setdefault(p, []).append(n)
    assert list(by_pos) == ["dz", "d0", "d5"]  # grade 3 first, then 2, 1; grade 0 is not a positive
    allowed = {f"d{i}" for i in range(2, 10)} - {"d5"}  # ranks 3..10, relevant ones excluded; d7 (grade 0) allowed
    for negs in by_pos.values():
        assert len(negs) == 3 == len(set(negs)) and set(negs) <= allowed
    assert m.skipped == {"no negative in the ranks used": 1, "not in the run": 1} and m.queries == 1
    assert mine_triples(run, qrels, depth=10, skip_top=2, negatives_per_positive=3).triples == m.triples  # seeded
    top = mine_triples(run, qrels, depth=10, skip_top=2, negatives_per_positive=2, sample="top", min_relevance=2)
    assert top.triples == [("1", "dz", "d2"), ("1", "dz", "d3"), ("1", "d0", "d2"), ("1", "d0", "d3")]
    kept = mine_triples(run, qrels, depth=10, passages={"d0", "d3", "d4"}, sample="top")
    assert kept.triples == [("1", "d0", "d3")] and kept.dropped_positives == 3  # dz, d5; and query 2's x
    with pytest.raises(ValueError, match="skip_top"):
        mine_triples(run, qrels, depth=5, skip_top=5)


def test_mine_cli_writes_qidpidtriples(tmp_path, data_dir, monkeypatch):
    run = data_dir / "msmarco-dl" / "runs" / "run.dl19.bm25-default.top100.txt"
    out = tmp_path / "triples.tsv"
    monkeypatch.setenv("KD_PYSERINI_DATA", str(data_dir))
    res = _cli([*TEACHER, "mine", "--run", str(run), "--qrels", "dl19-passage", "-o", str(out), "--depth", "50",
                "--min-relevance", "2"])
    assert res.returncode == 0, res.stderr
    from kd_pyserini.resources import get_qrels
    from kd_pyserini.trec_io import rank, read_run

    qrels, ranked = get_qrels("dl19-passage"), read_run(run)
    rows = [x.split("\t") for x in out.read_text().splitlines()]
    assert len(rows) > 500
    for q, p, n in rows:
        assert qrels[q][p] >= 2 and qrels[q].get(n, 0) < 2
        assert n in {d for d, _ in rank(ranked[q], 50)}
    write_triples([("1", "2", "3")], tmp_path / "w.tsv")
    assert (tmp_path / "w.tsv").read_text() == "1\t2\t3\n"


def test_help_uses_the_house_vocabulary():
    res = _run([*TEACHER, "score", "--help"], env={**os.environ, **NO_JVM})
    assert res.returncode == 0, res.stderr
    for option in ("--output", "--batch-size", "--query-max-length", "--passage-max-length", "--device",
                   "--precision", "--progress / --no-progress", "--teacher", "--shard", "--chunk-pairs"):
        assert option in res.stdout, option
    res = _run([*TEACHER, "--help"], env={**os.environ, **NO_JVM})
    assert all(c in res.stdout for c in ("score", "mine", "merge"))


# ------------------------------------------------------------------------------------------------ ColBERT / PreTTR

def test_colbert_and_prettr_teachers_write_the_notebooks_scores(text_triples, tiny_distilbert_dir, bert_vocab,
                                                                 tmp_path):
    """kd-teacher score with a ColBERT and a PreTTR teacher (hub layouts), alone and as a mean ensemble: the scores
    are the authors' notebook forwards (lengths raised so that nothing is cut: the notebooks cut nothing)."""
    from test_colbert import build_colbert, reference_colbert, reference_scores, tokenizer_of
    from test_prettr import build_prettr, prettr_reference_scores, reference_prettr

    colbert = build_colbert(tmp_path / "colbert", tiny_distilbert_dir, bert_vocab)
    prettr = build_prettr(tmp_path / "prettr", bert_vocab)
    triples = [line.split("\t") for line in text_triples.read_text(encoding="utf-8").splitlines()]
    qs = [t[0] for t in triples]
    pos, neg = [t[1] for t in triples], [t[2] for t in triples]
    tok = tokenizer_of(bert_vocab)
    cm, _ = reference_colbert(colbert, bert_vocab)
    pm = reference_prettr(prettr)
    ref_c = np.array([reference_scores(cm, tok, [q], [p, n])[0] for q, p, n in zip(qs, pos, neg)])
    ref_p = np.array([prettr_reference_scores(pm, tok, [q], [p, n])[0] for q, p, n in zip(qs, pos, neg)])
    lengths = ["--query-max-length", "64", "--passage-max-length", "400", "--device", "cpu", "--no-progress"]
    for teachers, ref in (([colbert], ref_c), ([prettr], ref_p), ([colbert, prettr], (ref_c + ref_p) / 2)):
        out = tmp_path / f"teacher-{len(teachers)}-{teachers[0].name}.tsv"
        args = [*TEACHER, "score", "--triples", str(text_triples), "-o", str(out), *lengths]
        for t in teachers:
            args += ["--teacher", str(t)]
        res = _run(args, env={**os.environ, **NO_JVM})
        assert res.returncode == 0, res.stderr
        rows = _read_teacher(out)
        got = np.array([[float(r[0]), float(r[1])] for r in rows])
        assert ref.std() > 0.05 and np.abs(got - ref).max() < 1e-4 * max(1.0, float(np.abs(ref).max()))
        assert [r[2:] for r in rows] == triples


# ------------------------------------------------------------------------------------------------ query groups

class _FakeEncoder:
    """``embed`` as a TextEncoder has it: one unit vector per text, from a fixed table."""

    def __init__(self, table: dict[str, list[float]]):
        self.table, self.calls = table, []

    def embed(self, texts, max_length):
        self.calls.append((list(texts), max_length))
        v = np.array([self.table[t] for t in texts], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_query_groups_scored_and_written_as_a_teacher_file(tmp_path):
    from kd_pyserini.teacher.groups import (groups_from_candidates, groups_from_scored_jsonl,
                                            groups_from_text_triples, score_groups, write_group_teacher_file)
    from kd_pyserini.train import load_teacher

    cands = tmp_path / "cands.tsv"
    cands.write_text("10\tp1\tq ten\tone\n10\tp2\tq ten\ttwo\n10\tp3\tq ten\tthree\n2\tp2\tq two\ttwo\n"
                     "2\tp3\tq two\tthree\n")
    assert groups_from_candidates(cands) == [("q two", ["two", "three"]), ("q ten", ["one", "two", "three"])]
    assert groups_from_candidates(cands, max_queries=1, per_query=1) == [("q two", ["two"])]
    (tmp_path / "t.tsv").write_text("q ten\tone\tthree\n\n")
    assert groups_from_text_triples(tmp_path / "t.tsv") == [("q ten", ["one", "three"])]
    (tmp_path / "s.jsonl").write_text('{"query": "q two", "pos": ["two"], "neg": ["one", "three"], "x": 1}\n')
    assert groups_from_scored_jsonl(tmp_path / "s.jsonl") == [("q two", ["two", "one", "three"])]

    groups = groups_from_candidates(cands)
    enc = _FakeEncoder({"q two": [1, 0, 0], "q ten": [0, 1, 0], "one": [0, 1, 0], "two": [1, 1, 0],
                        "three": [0, 0, 1]})
    scores = score_groups(groups, enc, passage_max_length=99, query_max_length=7)
    assert [len(c[0]) for c in enc.calls] == [3, 2] and [c[1] for c in enc.calls] == [99, 7]  # each passage once
    assert np.allclose(scores[0], [2 ** -0.5, 0]) and np.allclose(scores[1], [1, 2 ** -0.5, 0])
    out = tmp_path / "teacher.tsv"
    n = write_group_teacher_file(groups, scores, out, pairs_per_query=3, scale=10.0, seed=1)
    rows = _read_teacher(out)
    assert n == len(rows) == 4  # 1 pair from the 2-passage group, 3 from the 3-passage one
    for r in rows:
        assert float(r[0]) >= float(r[1])  # the teacher's higher-scored passage comes first
    assert {tuple(r[3:]) for r in rows[1:]} == {("one", "two"), ("one", "three"), ("two", "three")}
    assert float(rows[0][0]) == pytest.approx(10 * 2 ** -0.5, abs=1e-5)
    first = out.read_bytes()
    write_group_teacher_file(groups, scores, out, pairs_per_query=3, scale=10.0, seed=1)
    assert out.read_bytes() == first  # a function of groups, scores and seed
    data = load_teacher(out)  # kd-train reads it as a text teacher file
    assert data.format == "text" and len(data) == 4
    assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".*teacher*"))  # nothing left half-written


def test_query_group_readers_name_file_and_line(tmp_path):
    from kd_pyserini.teacher.groups import groups_from_scored_jsonl, groups_from_text_triples, write_group_teacher_file

    (tmp_path / "t.tsv").write_text("q\ta\tb\nq\ta\n")
    with pytest.raises(FormatError, match=r"t\.tsv:2: 2 tab-separated fields"):
        groups_from_text_triples(tmp_path / "t.tsv")
    (tmp_path / "s.jsonl").write_text('{"query": "q", "pos": ["a"], "neg": []}\n{"query": "q", "pos": ["a"]}\n')
    with pytest.raises(FormatError, match=r"s\.jsonl:2: expected a JSON object with 'query', 'pos' and 'neg'"):
        groups_from_scored_jsonl(tmp_path / "s.jsonl")
    (tmp_path / "s.jsonl").write_text('{"query": "q", "pos": [1], "neg": []}\n')
    with pytest.raises(FormatError, match=r"s\.jsonl:1: 'query' must be a string"):
        groups_from_scored_jsonl(tmp_path / "s.jsonl")
    with pytest.raises(ValueError, match="2 groups but 1 score arrays"):
        write_group_teacher_file([("q", ["a", "b"])] * 2, [np.zeros(2)], tmp_path / "x.tsv", 1)
    assert not (tmp_path / "x.tsv").exists()
