"""kd_pyserini.train: teacher files, Margin-MSE, checkpoints, exact resume, NaN handling, validation, CLI."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kd_pyserini.trec_io import FormatError
from kd_pyserini.train.data import (Collator, IdTeacherData, JsonlTeacherData, OffsetIndex, TextTeacherData,
                                    epoch_order, load_teacher)
from kd_pyserini.train.in_batch_margin_mse import InBatchMarginMSELoss, in_batch_negative_mask
from kd_pyserini.train.margin_mse import MarginMSELoss, margin_mse
from kd_pyserini.train.model import BertDotStudent, resolve_student_card
from kd_pyserini.train.trainer import (STATE_FILE, MarginMSETrainer, NonFiniteLossError, TrainConfig, batch_loss,
                                       find_checkpoint)

JSONL = "kd-samples/msmarco-10q-teacher-scores.jsonl"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models train far faster on one thread (OpenMP barriers dominate on a shared 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def jsonl(data_dir: Path) -> Path:
    return data_dir / JSONL


@pytest.fixture(scope="module")
def id_files(tmp_path_factory, data_dir: Path) -> dict[str, Path]:
    """A Hofstätter-format id teacher file over the shared 89-passage collection sample and made-up qids."""
    d = tmp_path_factory.mktemp("ids")
    coll = data_dir / "kd-samples" / "collection.head89.tsv"
    queries = d / "queries.train.tsv"
    qtexts = {"1000": "manhattan project success impact", "1001": "what is the atomic bomb",
              "1002": "scientists of the manhattan project"}
    queries.write_text("".join(f"{q}\t{t}\n" for q, t in qtexts.items()))
    rng = np.random.default_rng(0)
    pids = [line.split("\t", 1)[0] for line in coll.read_text(encoding="utf-8").split("\n") if line]
    lines = []
    for i in range(60):
        q = list(qtexts)[i % 3]
        p, n = rng.choice(pids, 2, replace=False)
        lines.append(f"{rng.normal(5, 1):.3f}\t{rng.normal(0, 1):.3f}\t{q}\t{p}\t{n}\n")
    teacher = d / "teacher.ids.tsv"
    teacher.write_text("".join(lines))
    return {"collection": coll, "queries": queries, "teacher": teacher, "dir": d}


def _cfg(tmp: Path, student: Path, teacher: Path, **kw) -> TrainConfig:
    base = dict(teacher=str(teacher), output=str(tmp), student=str(student), batch_size=8, lr=1e-2,
                warmup_steps=1, save_every=0, log_every=1, progress=False, seed=7, query_max_length=16,
                passage_max_length=48)
    base.update(kw)
    return TrainConfig(**base)


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


# ------------------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------------------

def test_offset_index_dense_and_string_ids(tmp_path, data_dir):
    coll = OffsetIndex(data_dir / "kd-samples" / "collection.head89.tsv")
    assert len(coll) == 89 and coll._dense
    lines = (data_dir / "kd-samples" / "collection.head89.tsv").read_text(encoding="utf-8").split("\n")
    expected = dict(x.split("\t", 1) for x in lines if x)  # not splitlines(): texts hold \x85 and friends
    assert all(coll.get(pid) == text for pid, text in expected.items())
    assert "41" not in coll and "99" in coll  # the sample skips some pids
    assert "100" not in coll and coll.row("099") == -1 and coll.row("x") == -1

    f = tmp_path / "docs.tsv"
    f.write_text("doc-b\tbravo\r\nd7\tseven\n\ndoc-a\talpha été\n")
    idx = OffsetIndex(f)
    assert not idx._dense and len(idx) == 3
    assert idx.get("doc-a") == "alpha été" and idx.get("doc-b") == "bravo" and idx.get("d7") == "seven"
    assert "doc-c" not in idx
    with pytest.raises(KeyError):
        idx.get("doc-c")
    # sparse integers fall back to the sorted array too
    g = tmp_path / "sparse.tsv"
    g.write_text("5\tfive\n900000000\tbig\n")
    sp = OffsetIndex(g)
    assert not sp._dense and sp.get("900000000") == "big" and sp.get("5") == "five"
    dup = tmp_path / "dup.tsv"
    dup.write_text("1\ta\n1\tb\n")
    with pytest.raises(ValueError, match="more than once"):
        OffsetIndex(dup)


def test_id_teacher_file_expands_to_text(id_files):
    data = load_teacher(id_files["teacher"], collection=id_files["collection"], queries=id_files["queries"])
    assert isinstance(data, IdTeacherData) and len(data) == 60
    t = data[0]
    line = id_files["teacher"].read_text().splitlines()[0].split("\t")
    assert t.query == "manhattan project success impact"
    assert t.pos == data.collection.get(line[3]) and t.neg == data.collection.get(line[4])
    assert t.margin == pytest.approx(float(line[0]) - float(line[1]), abs=1e-5)
    # gzip works too (and, for the tsv side, falls back to memory)
    gz = id_files["dir"] / "teacher.ids.tsv.gz"
    gz.write_bytes(gzip.compress(id_files["teacher"].read_bytes()))
    data_gz = load_teacher(gz, collection=id_files["collection"], queries=id_files["queries"])
    assert [data_gz[i] for i in range(5)] == [data[i] for i in range(5)]


def test_bad_lines_name_file_and_line_or_are_counted(tmp_path, id_files):
    lines = id_files["teacher"].read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.tsv"
    bad.write_text("".join(lines[:3]) + "1.0\tnot-a-number\t1000\t1\t2\n" + "".join(lines[3:6])
                   + "1.0\t0.5\t1000\t1\t999999\n" + "1.0\t0.5\t1000\n")
    with pytest.raises(FormatError, match=r"bad\.tsv:4: scores") as e:
        load_teacher(bad, collection=id_files["collection"], queries=id_files["queries"])
    assert e.value.line_no == 4
    data = load_teacher(bad, collection=id_files["collection"], queries=id_files["queries"], skip_bad=True)
    assert len(data) == 6 and data.skipped == 3
    assert "bad.tsv:8: pid '999999' is not in collection.head89.tsv" in data.bad_examples[1]
    assert "bad.tsv:9: 3 tab-separated fields" in data.bad_examples[2]

    text = tmp_path / "text.tsv"
    text.write_text("3\t1\tq one\tgood passage\tbad passage\n2\t1\tq two\tonly four fields\n")
    with pytest.raises(FormatError, match=r"text\.tsv:2: 4 tab-separated fields"):
        load_teacher(text)
    td = load_teacher(text, skip_bad=True)
    assert isinstance(td, TextTeacherData) and len(td) == 1 and td.skipped == 1
    assert td[0].query == "q one" and td[0].neg == "bad passage" and td[0].margin == 2.0

    js = tmp_path / "t.jsonl"
    js.write_text('{"query": "q", "pos": ["a"], "neg": ["b", "c"], "pos_scores": [3], "neg_scores": [1, 2]}\n'
                  '{"query": "q", "pos": ["a"], "neg": ["b"], "pos_scores": [3]}\n'
                  "{not json\n")
    with pytest.raises(FormatError, match=r"t\.jsonl:2: missing field\(s\) neg_scores"):
        load_teacher(js)
    jd = load_teacher(js, skip_bad=True)
    assert jd.skipped == 2 and len(jd) == 2 and [jd[i].margin for i in range(2)] == [2.0, 1.0]


def test_jsonl_expands_pos_times_neg(jsonl):
    data = load_teacher(jsonl)
    assert isinstance(data, JsonlTeacherData)
    rows = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert len(data) == sum(len(r["pos"]) * len(r["neg"]) for r in rows) == 250
    t = data[3]
    assert t.query == rows[0]["query"] and t.pos == rows[0]["pos"][0] and t.neg == rows[0]["neg"][3]
    assert t.margin == pytest.approx(rows[0]["pos_scores"][0] - rows[0]["neg_scores"][3])


def test_epoch_order_is_seeded_and_sharded():
    a, b = epoch_order(100, 0, 1), epoch_order(100, 0, 1)
    assert np.array_equal(a, b) and sorted(a) == list(range(100))
    assert not np.array_equal(a, epoch_order(100, 1, 1))
    shards = [epoch_order(101, 0, 1, rank=r, world_size=2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 50 and not set(shards[0]) & set(shards[1])


def test_collator_dedups_and_pads_to_longest(tiny_distilbert_dir, jsonl):
    student, tok = BertDotStudent.from_card(resolve_student_card(str(tiny_distilbert_dir)))
    data = load_teacher(jsonl)
    triples = [data[i] for i in range(8)]  # one query, one positive, eight negatives
    batch = Collator(tok, 30, 200)(triples)
    assert batch.q_ids.shape[0] == 1 and len(batch.p_ids) == 1 and batch.p_ids[0].shape[0] == 9
    assert batch.q_index.tolist() == [0] * 8
    assert batch.p_ids[0].shape[1] == int(batch.p_mask[0].sum(1).max()) <= 200  # padded to the longest, not 200
    assert torch.allclose(batch.teacher_margin, torch.tensor([t.margin for t in triples]))

    # length buckets: fewer padded tokens, same passages behind pos_index/neg_index, same loss
    bucketed = Collator(tok, 30, 200, passage_buckets=3)(triples)
    assert len(bucketed.p_ids) == 3 and sum(x.shape[0] for x in bucketed.p_ids) == 9
    assert bucketed.padded_tokens < batch.padded_tokens
    lengths = [int(m.sum()) for chunk in bucketed.p_mask for m in chunk]
    assert lengths == sorted(lengths)
    flat = [row[m.bool()].tolist() for ids, mask in zip(bucketed.p_ids, bucketed.p_mask) for row, m in zip(ids, mask)]
    for i, t in enumerate(triples):
        assert flat[int(bucketed.neg_index[i])] == tok(t.neg, truncation=True, max_length=200)["input_ids"]
    student.eval()
    with torch.no_grad():
        assert batch_loss(student, batch)[0].item() == pytest.approx(batch_loss(student, bucketed)[0].item(),
                                                                     rel=1e-5)


# ------------------------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------------------------

def test_margin_mse_formula():
    sp, sn, tm = torch.tensor([3.0, 1.0]), torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.0])
    assert margin_mse(sp, sn, tm).item() == pytest.approx(((2 - 1) ** 2 + (-1 - 0) ** 2) / 2)
    assert MarginMSELoss()(sp, sn, torch.tensor([2.0, -1.0])).item() == 0.0


def test_in_batch_margin_mse():
    # 2 triples, distinct queries; passages: 0=p1+, 1=p1-, 2=p2+, 3=p2-
    qi, pi, ni = torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor([1, 3])
    mask = in_batch_negative_mask(qi, pi, ni, 4)
    assert mask.tolist() == [[False, False, True, True], [True, True, False, False]]
    scores = torch.tensor([[5.0, 1.0, 0.0, 2.0], [0.0, 9.0, 4.0, 3.0]])
    margin = torch.tensor([3.0, 1.0])
    # one-sided: q1: 5-0=5>=3 ok, 5-2=3>=3 ok -> 0; q2: 4-0=4 ok, 4-9=-5 -> (1+5)^2=36 -> mean over 4 = 9
    assert InBatchMarginMSELoss()(scores, qi, pi, ni, margin).item() == pytest.approx(9.0)
    teacher = torch.tensor([[4.0, 1.0, 1.0, 1.0], [1.0, 1.0, 2.0, 1.0]])
    exact = InBatchMarginMSELoss()(scores, qi, pi, ni, margin, teacher_scores=teacher).item()
    want = ((5 - 0 - 3) ** 2 + (5 - 2 - 3) ** 2 + (4 - 0 - 1) ** 2 + (4 - 9 - 1) ** 2) / 4
    assert exact == pytest.approx(want)
    # same query twice: the other triple's positive is not an in-batch negative
    m2 = in_batch_negative_mask(torch.tensor([0, 0]), torch.tensor([0, 2]), torch.tensor([1, 3]), 4)
    assert m2.tolist() == [[False, False, False, True], [False, True, False, False]]


# ------------------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------------------

def _fixed_batch_loss(model_dir: Path, data) -> float:
    """Margin-MSE on a fixed batch (every 8th triple: all 10 queries), dropout off."""
    student, tok = BertDotStudent.from_card(resolve_student_card(str(model_dir)))
    student.eval()
    batch = Collator(tok, 16, 48)([data[i] for i in range(0, len(data), 8)])
    with torch.no_grad():
        return batch_loss(student, batch)[0].item()


def test_training_lowers_loss_checkpoints_load_and_resume_is_exact(tmp_path, tiny_distilbert_dir, jsonl):
    import kd_pyserini

    data = load_teacher(jsonl)
    before = _fixed_batch_loss(tiny_distilbert_dir, data)

    # uninterrupted: 30 steps of 16 triples, checkpoint every 8
    full = _cfg(tmp_path / "full", tiny_distilbert_dir, jsonl, max_steps=30, batch_size=16, save_every=8,
                save_total_limit=0)
    res = MarginMSETrainer(full, data).train()
    assert res.steps == 30 and res.final_dir == tmp_path / "full"
    after = _fixed_batch_loss(res.final_dir, data)
    assert after < 0.5 * before, (before, after)  # measured: 37.6 -> 5.0

    # every checkpoint and the final folder are plain HF dirs with our card: get_query_encoder loads them
    ckpt = tmp_path / "full" / "checkpoint-16"
    assert (ckpt / STATE_FILE).is_file() and (ckpt / "kd_pyserini_card.toml").is_file()
    enc = kd_pyserini.get_query_encoder(str(ckpt), device="cpu")
    assert enc.encoder.card.pooling == "cls" and enc.max_length == 16
    vec = enc.encode("what was the manhattan project")
    assert vec.shape == (32,) and np.isfinite(vec).all()
    final_enc = kd_pyserini.get_query_encoder(str(res.final_dir), device="cpu")
    assert final_enc.encoder.card.note is None
    from pyserini.encode import AutoQueryEncoder  # Pyserini's own class loads it too (CLS, no normalisation)

    auto = AutoQueryEncoder(str(res.final_dir), device="cpu", pooling="cls", l2_norm=False)
    assert np.allclose(auto.encode("what was the manhattan project", max_length=16),
                       final_enc.encode("what was the manhattan project"), atol=1e-5)

    # interrupted after step 19 (last checkpoint at 16; the epoch of 250 triples ends at step 16), then --resume:
    # the same weights as the uninterrupted run, bit for bit
    part = _cfg(tmp_path / "part", tiny_distilbert_dir, jsonl, max_steps=30, batch_size=16, save_every=8)

    class Stop(Exception):
        pass

    def interrupt(trainer):
        if trainer.step == 19:
            raise Stop

    with pytest.raises(Stop):
        MarginMSETrainer(part, data, on_step=interrupt).train()
    assert find_checkpoint(tmp_path / "part").name == "checkpoint-16"
    resumed = MarginMSETrainer(_cfg(tmp_path / "part", tiny_distilbert_dir, jsonl, max_steps=30, batch_size=16,
                                    save_every=8, resume="latest"), data).train()
    assert resumed.steps == 30
    a, b = _weights(res.final_dir), _weights(resumed.final_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the CSV log continues without duplicated steps
    with open(tmp_path / "part" / "train_log.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == list(range(1, 31))


def test_id_teacher_training_with_grad_accum_in_batch_and_bf16(tmp_path, tiny_distilbert_dir, id_files):
    cfg = _cfg(tmp_path / "o", tiny_distilbert_dir, id_files["teacher"], collection=str(id_files["collection"]),
               queries=str(id_files["queries"]), max_steps=3, grad_accum=2, in_batch_weight=0.5,
               precision="bf16", grad_checkpointing=True)
    trainer = MarginMSETrainer(cfg)
    assert trainer.data.format == "ids" and trainer.total_steps == 3
    res = trainer.train()
    assert res.steps == 3 and trainer.triples_seen == 3 * 2 * 8
    assert all(torch.isfinite(v).all() for v in _weights(res.final_dir).values())


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_distilbert_dir, jsonl, monkeypatch):
    from kd_pyserini.train import margin_mse as mm

    calls = {"n": 0}
    real = mm.margin_mse

    def poisoned(sp, sn, tm):
        calls["n"] += 1
        loss = real(sp, sn, tm)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(mm.MarginMSELoss, "forward", lambda self, sp, sn, tm: poisoned(sp, sn, tm))
    out = tmp_path / "nan"
    cfg = _cfg(out, tiny_distilbert_dir, jsonl, max_steps=10, save_every=2)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 5 .*last good checkpoint: .*checkpoint-4"):
        MarginMSETrainer(cfg).train()
    assert find_checkpoint(out).name == "checkpoint-4"
    good = _weights(out / "checkpoint-4")
    assert all(torch.isfinite(v).all() for v in good.values())
    assert not (out / "model.safetensors").exists()  # no final model from the poisoned run
    state = torch.load(out / "checkpoint-4" / STATE_FILE, weights_only=True)
    assert state["step"] == 4


def test_huge_learning_rate_is_caught(tmp_path, tiny_distilbert_dir, jsonl):
    cfg = _cfg(tmp_path / "huge", tiny_distilbert_dir, jsonl, max_steps=20, lr=1e30, warmup_steps=0, save_every=1,
               save_total_limit=0)
    with pytest.raises(NonFiniteLossError, match="learning rate too high"):
        MarginMSETrainer(cfg).train()
    for _, ck in sorted((int(p.name.split("-")[1]), p) for p in (tmp_path / "huge").glob("checkpoint-*")):
        assert all(torch.isfinite(v).all() for v in _weights(ck).values())


def test_validation_best_checkpoint_early_stopping_and_cli(tmp_path, tiny_distilbert_dir, jsonl, data_dir):
    from click.testing import CliRunner

    from kd_pyserini.cli.train import main

    out = tmp_path / "cli"
    args = ["margin-mse", "--teacher", str(jsonl), "--student", str(tiny_distilbert_dir), "--output", str(out),
            "--max-steps", "6", "--batch-size", "8", "--lr", "1e-3", "--warmup-steps", "1", "--save-every", "0",
            "--query-max-length", "16", "--passage-max-length", "32", "--no-progress", "--log-every", "2",
            "--validation-candidates", str(data_dir / "msmarco-dl" / "candidates.dl19.bm25-top100.tsv.gz"),
            "--validation-qrels", "dl19-passage", "--validation-max-queries", "2", "--eval-every", "2",
            "--early-stopping-patience", "1"]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "best nDCG@10" in r.output
    rows = list(csv.DictReader(open(out / "train_log.csv")))
    assert rows[0]["step"] == "0" and rows[0]["val_nDCG@10"] and rows[0]["val_RR@10"]
    vals = [(int(x["step"]), float(x["val_nDCG@10"])) for x in rows if x["val_nDCG@10"]]
    best_step, best = max(vals, key=lambda sv: (sv[1], -sv[0]))
    info = json.loads((out / "best" / "kd_pyserini_train.json").read_text())
    assert info["step"] == best_step and info["validation"]["nDCG@10"] == pytest.approx(best, abs=1e-6)
    # patience 1: training stops at the first validation that does not improve on the best
    stopped = [s for s, v in vals if s > 0 and v <= max(v2 for s2, v2 in vals if s2 < s)]
    if stopped:
        assert "stopped early" in r.output and vals[-1][0] == stopped[0]

    # a bad teacher line is a file:line error on the command line
    bad = tmp_path / "bad.jsonl"
    bad.write_text(jsonl.read_text().splitlines()[0] + "\n{oops\n")
    r = CliRunner().invoke(main, ["margin-mse", "--teacher", str(bad), "--student", str(tiny_distilbert_dir),
                                  "--output", str(tmp_path / "bad"), "--max-steps", "1"])
    assert r.exit_code == 1 and "bad.jsonl:2: not valid JSON" in r.output and "--skip-bad" in r.output
    # the id format without --collection is refused with a clear message
    r = CliRunner().invoke(main, ["margin-mse", "--teacher", str(bad), "--format", "ids", "--student",
                                  str(tiny_distilbert_dir), "--output", str(tmp_path / "bad")])
    assert r.exit_code == 1 and "--collection" in r.output


@pytest.mark.slow
def test_distill_demo_quick_improves_held_out_dl19(tmp_path, data_dir, minilm_dir):
    """tools/distill_demo.py --quick: MiniLM teacher margins on DL20 candidates, a weak DistilBERT student, held-out
    DL19 re-ranking (43 queries). Measured here: nDCG@10 0.2435 -> 0.3343 in ~2 min on 2 CPU cores."""
    import subprocess
    import sys

    import kd_pyserini

    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, str(root / "tools" / "distill_demo.py"), "--quick", "--work", str(tmp_path),
                        "--data", str(data_dir)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    before, after = summary["before"]["nDCG@10"], summary["after"]["nDCG@10"]
    assert after > before + 0.05, summary
    assert summary["train_loss_last"] < 0.5 * summary["train_loss_first"]
    assert summary["command"].startswith("kd-train margin-mse --teacher ")
    enc = kd_pyserini.get_query_encoder(str(tmp_path / "student"), device="cpu")
    assert enc.encoder.card.pooling == "mean" and enc.encode("what is a dense retriever").shape == (128,)


@pytest.mark.slow
def test_torchrun_ddp_on_cpu_and_exact_resume(tmp_path, tiny_distilbert_dir, jsonl):
    """Two processes with torchrun (gloo on CPU): sharded data, one writer, and --resume of a DDP run is exact."""
    import shutil
    import subprocess
    import sys

    def run(out: Path, port: int, *extra: str) -> None:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               "-m", "kd_pyserini.train", "margin-mse", "--teacher", str(jsonl), "--student", str(tiny_distilbert_dir),
               "--output", str(out), "--max-steps", "4", "--batch-size", "8", "--lr", "1e-2", "--save-every", "2",
               "--no-progress", "--log-every", "1", "--cpu-threads", "1", "--grad-accum", "2", "--in-batch-weight",
               "0.5", *extra]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.count("trained 4 steps") == 1  # only rank 0 reports

    run(tmp_path / "a", 29611)
    args = json.loads((tmp_path / "a" / "training_args.json").read_text())
    assert args["world_size"] == 2 and args["total_steps"] == 4
    state = torch.load(tmp_path / "a" / "checkpoint-2" / STATE_FILE, weights_only=True)
    assert len(state["rng"]) == 2 and state["batch_in_epoch"] == 4  # 2 steps x grad-accum 2 per rank
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    run(tmp_path / "b", 29612, "--resume", "latest")
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
