"""kd_pyserini.train: teacher files, Margin-MSE, checkpoints, exact resume, NaN handling, validation, CLI."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import sigint_default
import torch

from kd_pyserini.trec_io import FormatError
from kd_pyserini.train.batches import Collator, epoch_order
from kd_pyserini.train.checkpoints import STATE_FILE, find_checkpoint
from kd_pyserini.train.config import NonFiniteLossError, TrainConfig
from kd_pyserini.train.in_batch_margin_mse import InBatchMarginMSELoss, in_batch_negative_mask
from kd_pyserini.train.margin_mse import MarginMSELoss, margin_mse
from kd_pyserini.train.model import BertDotStudent, resolve_student_card
from kd_pyserini.train.objective import batch_loss
from kd_pyserini.offsets import OffsetIndex
from kd_pyserini.train.teacher_files import IdTeacherData, JsonlTeacherData, TextTeacherData, load_teacher
from kd_pyserini.train.trainer import MarginMSETrainer



pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    assert len(coll) == 89 and coll.integer_ids
    lines = (data_dir / "kd-samples" / "collection.head89.tsv").read_text(encoding="utf-8").split("\n")
    expected = dict(x.split("\t", 1) for x in lines if x)  # not splitlines(): texts hold \x85 and friends
    assert all(coll.get(pid) == text for pid, text in expected.items())
    assert "41" not in coll and "99" in coll  # the sample skips some pids
    assert "100" not in coll and coll.row("099") == -1 and coll.row("x") == -1

    f = tmp_path / "docs.tsv"
    f.write_text("doc-b\tbravo\r\nd7\tseven\n\ndoc-a\talpha été\n")
    idx = OffsetIndex(f)
    assert not idx.integer_ids and len(idx) == 3
    assert idx.get("doc-a") == "alpha été" and idx.get("doc-b") == "bravo" and idx.get("d7") == "seven"
    assert "doc-c" not in idx
    with pytest.raises(KeyError):
        idx.get("doc-c")
    # sparse integers fall back to the sorted array too
    g = tmp_path / "sparse.tsv"
    g.write_text("5\tfive\n900000000\tbig\n")
    sp = OffsetIndex(g)
    assert not sp.integer_ids and sp.get("900000000") == "big" and sp.get("5") == "five"
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
    """tools/experiments/distill_demo.py --quick: MiniLM teacher margins on DL20 candidates, a weak DistilBERT student, held-out
    DL19 re-ranking (43 queries). Measured here: nDCG@10 0.2435 -> 0.3343 in ~2 min on 2 CPU cores."""
    import subprocess
    import sys

    import kd_pyserini

    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, str(root / "tools" / "experiments" / "distill_demo.py"), "--quick", "--work", str(tmp_path),
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

    def run(out: Path, *extra: str) -> None:  # --standalone: torchrun picks a free port
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "kd_pyserini.train", "margin-mse", "--teacher", str(jsonl), "--student", str(tiny_distilbert_dir),
               "--output", str(out), "--max-steps", "4", "--batch-size", "8", "--lr", "1e-2", "--save-every", "2",
               "--no-progress", "--log-every", "1", "--cpu-threads", "1", "--grad-accum", "2", "--in-batch-weight",
               "0.5", *extra]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.count("trained 4 steps") == 1  # only rank 0 reports

    run(tmp_path / "a")
    args = json.loads((tmp_path / "a" / "training_args.json").read_text())
    assert args["world_size"] == 2 and args["total_steps"] == 4
    state = torch.load(tmp_path / "a" / "checkpoint-2" / STATE_FILE, weights_only=True)
    assert len(state["rng"]) == 2 and state["batch_in_epoch"] == 4  # 2 steps x grad-accum 2 per rank
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    run(tmp_path / "b", "--resume", "latest")
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------------------
# reliability: non-finite weights, another run's folder, resume settings, Ctrl-C, full disk, bad bytes/scores
# ------------------------------------------------------------------------------------------------------------

def _cli_args(teacher: Path, student: Path, out: Path, *extra: str) -> list[str]:
    return ["margin-mse", "--teacher", str(teacher), "--student", str(student), "--output", str(out),
            "--batch-size", "8", "--lr", "1e-2", "--warmup-steps", "1", "--seed", "7", "--query-max-length", "16",
            "--passage-max-length", "32", "--no-progress", "--cpu-threads", "1", *extra]


def _kd_train(*args: str):
    from click.testing import CliRunner

    from kd_pyserini.cli.train import main

    return CliRunner().invoke(main, list(args))


def _encodes_finite(model_dir: Path) -> bool:
    import kd_pyserini

    q = kd_pyserini.get_query_encoder(str(model_dir), device="cpu").encode_batch(
        ["what was the manhattan project", "atomic bomb"])
    d = kd_pyserini.get_document_encoder(str(model_dir), device="cpu").encode(
        ["The Manhattan Project was a research effort.", "Scientists built the first atomic bombs."])
    return bool(np.isfinite(q).all() and np.isfinite(d).all())


@pytest.mark.parametrize("lr", ["1e3", "1e4"])  # 1e3: the update makes weights inf; 1e4: finite weights, NaN vectors
def test_huge_lr_never_saves_a_nan_model_and_names_a_good_checkpoint(tmp_path, tiny_distilbert_dir, jsonl, lr):
    out = tmp_path / "huge"
    r = _kd_train(*_cli_args(jsonl, tiny_distilbert_dir, out, "--lr", lr, "--warmup-steps", "0", "--save-every",
                             "1", "--save-total-limit", "0", "--max-steps", "30"))
    assert r.exit_code == 3, r.output
    line = [x for x in r.output.splitlines() if x.startswith("kd-train: error:")]
    assert len(line) == 1 and "Traceback" not in r.output, r.output
    named = line[0].split("last good checkpoint: ", 1)[1].split(" (step ")[0]
    left = sorted(out.glob("checkpoint-*"))
    assert left and Path(named) == max(left, key=lambda p: int(p.name.split("-")[1]))
    for ck in left:  # every checkpoint on disk: finite weights that encode finite vectors
        assert all(torch.isfinite(v).all() for v in _weights(ck).values()), ck
        assert _encodes_finite(ck), ck
    assert not (out / "model.safetensors").exists()


def test_output_holding_another_run_is_refused_unless_overwrite(tmp_path, tiny_distilbert_dir, jsonl):
    out = tmp_path / "run"
    r = _kd_train(*_cli_args(jsonl, tiny_distilbert_dir, out, "--max-steps", "4", "--save-every", "2"))
    assert r.exit_code == 0, r.output
    before = sorted(p.name for p in out.iterdir())
    assert "checkpoint-4" in before
    # a new run into the same folder would have its checkpoints pruned in favour of the old run's checkpoint-4
    r = _kd_train(*_cli_args(jsonl, tiny_distilbert_dir, out, "--max-steps", "2", "--save-every", "1", "--seed", "9"))
    assert r.exit_code == 1, r.output
    assert r.output.count("\n") == 1 and r.output.startswith(f"Error: {out} already holds another training run")
    assert "--resume latest" in r.output and "--overwrite" in r.output
    assert sorted(p.name for p in out.iterdir()) == before  # nothing touched
    # --overwrite replaces the old run
    r = _kd_train(*_cli_args(jsonl, tiny_distilbert_dir, out, "--max-steps", "2", "--save-every", "1", "--seed", "9",
                             "--overwrite"))
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert find_checkpoint(out).name == "checkpoint-2"
    assert json.loads((out / "training_args.json").read_text())["seed"] == 9
    # --overwrite never deletes a folder that is not a training run's
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    r = _kd_train(*_cli_args(jsonl, tiny_distilbert_dir, other, "--max-steps", "1", "--overwrite"))
    assert r.exit_code == 1 and "not a kd-train run" in r.output and (other / "mine.txt").read_text() == "keep me"


def test_resume_with_other_settings_is_refused_unless_force(tmp_path, tiny_distilbert_dir, jsonl):
    out = tmp_path / "run"
    base = ("--max-steps", "3", "--save-every", "2")
    r = _kd_train(*_cli_args(jsonl, tiny_distilbert_dir, out, *base))
    assert r.exit_code == 0, r.output
    ckpt = out / "checkpoint-2"
    r = _kd_train(*_cli_args(jsonl, tiny_distilbert_dir, out, *base, "--resume", "latest", "--lr", "2e-2", "--seed",
                             "8", "--passage-max-length", "24"))
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert r.output.startswith(f"Error: {ckpt} was trained with other settings")
    for diff in ("lr: 0.01 -> 0.02", "seed: 7 -> 8", "passage_max_length: 32 -> 24", "--force"):
        assert diff in r.output, (diff, r.output)
    r = _kd_train(*_cli_args(jsonl, tiny_distilbert_dir, out, "--max-steps", "4", "--save-every", "2", "--resume",
                             "latest", "--student", str(tmp_path)))
    assert r.exit_code == 1 and "total_steps: 3 -> 4" in r.output and "student: " in r.output, r.output
    # the same settings resume; --force resumes with different ones
    r = _kd_train(*_cli_args(jsonl, tiny_distilbert_dir, out, *base, "--resume", "latest"))
    assert r.exit_code == 0 and "trained 3 steps" in r.output, r.output
    r = _kd_train(*_cli_args(jsonl, tiny_distilbert_dir, out, *base, "--resume", "latest", "--lr", "2e-2", "--force"))
    assert r.exit_code == 0 and "trained 3 steps" in r.output, r.output
    # resuming an older checkpoint while newer ones exist would mix two timelines
    full = tmp_path / "full"
    four = ("--max-steps", "4", "--save-every", "2")
    assert _kd_train(*_cli_args(jsonl, tiny_distilbert_dir, full, *four)).exit_code == 0
    r = _kd_train(*_cli_args(jsonl, tiny_distilbert_dir, full, *four, "--resume", str(full / "checkpoint-2")))
    assert r.exit_code == 1 and "checkpoint-4, newer than checkpoint-2" in r.output, r.output


def test_ctrl_c_stops_cleanly_and_resume_latest_completes(tmp_path, tiny_distilbert_dir, jsonl):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "kd_pyserini.train", *_cli_args(jsonl, tiny_distilbert_dir, out, "--max-steps",
                                                                 "25", "--save-every", "1")]  # ~20 s
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_default)
    deadline = time.time() + 180
    while not (out / "checkpoint-1" / STATE_FILE).is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    lines = [x for x in stderr.splitlines() if " WARNING " not in x and " INFO " not in x]  # log lines aside
    assert len(lines) == 1 and lines[0].startswith("kd-train: interrupted at step ") and \
        "--resume latest" in lines[0], stderr
    assert not list(tmp_path.glob("hs_err_pid*.log")) and not list(Path.cwd().glob("hs_err_pid*.log"))
    for d in out.glob("checkpoint-*"):  # no half-written checkpoint under a final name
        assert (d / STATE_FILE).is_file() and (d / "model.safetensors").is_file(), d
    last = find_checkpoint(out)
    assert _encodes_finite(last)
    r = subprocess.run(cmd + ["--resume", "latest"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "trained 25 steps" in r.stdout, r.stderr
    assert not list(out.glob(".tmp-*"))


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/3: file "
                 "write failed"),
    OSError(28, "No space left on device"),
])
def test_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, tiny_distilbert_dir, jsonl,
                                                                              monkeypatch, error):
    out = tmp_path / "run"
    real_save = torch.save

    def save(obj, f, *a, **kw):
        if "checkpoint-2" in str(f):
            Path(f).write_bytes(b"partial")
            raise error
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save)
    r = _kd_train(*_cli_args(jsonl, tiny_distilbert_dir, out, "--max-steps", "4", "--save-every", "1"))
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert r.output.startswith(f"Error: could not write checkpoint-2 to {out}: ")
    if isinstance(error, OSError):
        assert "No space left on device" in r.output
    assert f"the previous checkpoint {out / 'checkpoint-1'} is intact" in r.output
    assert not (out / "checkpoint-2").exists() and not list(out.glob(".tmp-*"))
    state = torch.load(out / "checkpoint-1" / STATE_FILE, weights_only=True)
    assert state["step"] == 1 and _encodes_finite(out / "checkpoint-1")
    monkeypatch.setattr(torch, "save", real_save)  # space freed: --resume latest continues
    r = _kd_train(*_cli_args(jsonl, tiny_distilbert_dir, out, "--max-steps", "4", "--save-every", "1", "--resume",
                             "latest"))
    assert r.exit_code == 0 and "trained 4 steps" in r.output, r.output


def _teacher_files(d: Path, rows: list[tuple[str, str]], bom: bool = False) -> dict[str, Path]:
    """The same triples (given scores) as text, jsonl and ids files (+ collection and queries for the ids)."""
    head = "\ufeff" if bom else ""
    files = {"text": d / "t.tsv", "jsonl": d / "t.jsonl", "ids": d / "t.ids.tsv", "collection": d / "c.tsv",
             "queries": d / "q.tsv"}
    files["text"].write_text(head + "".join(f"{p}\t{n}\tquery {i}\tpos {i}\tneg {i}\n"
                                            for i, (p, n) in enumerate(rows)), encoding="utf-8")
    files["jsonl"].write_text(head + "".join(f'{{"query": "query {i}", "pos": ["pos {i}"], "neg": ["neg {i}"], '
                                             f'"pos_scores": [{p}], "neg_scores": [{n}]}}\n'
                                             for i, (p, n) in enumerate(rows)), encoding="utf-8")
    files["ids"].write_text(head + "".join(f"{p}\t{n}\t{i}\t{2 * i}\t{2 * i + 1}\n" for i, (p, n) in enumerate(rows)),
                            encoding="utf-8")
    files["collection"].write_text(head + "".join(f"{2 * i}\tpos {i}\n{2 * i + 1}\tneg {i}\n"
                                                  for i in range(len(rows))), encoding="utf-8")
    files["queries"].write_text(head + "".join(f"{i}\tquery {i}\n" for i in range(len(rows))), encoding="utf-8")
    return files


def _load(files: dict[str, Path], fmt: str, **kw):
    if fmt == "ids":
        return load_teacher(files["ids"], "ids", files["collection"], files["queries"], **kw)
    return load_teacher(files[fmt], fmt, **kw)


@pytest.mark.parametrize("fmt", ["text", "jsonl", "ids"])
def test_teacher_scores_that_overflow_float32_are_refused(tmp_path, fmt):
    name = {"text": "t.tsv", "jsonl": "t.jsonl", "ids": "t.ids.tsv"}[fmt]
    files = _teacher_files(tmp_path, [("3.5", "1.0"), ("1e39", "1.0"), ("2.0", "1.0")])
    with pytest.raises(FormatError, match=rf"{name}:2: score .*1e\+?39.* does not fit in float32") as e:
        _load(files, fmt)
    assert e.value.line_no == 2
    data = _load(files, fmt, skip_bad=True)
    assert len(data) == 2 and data.skipped == 1 and np.isfinite(data.margins()).all()
    # each score fits, but the margin's square overflows float32 in the loss
    files = _teacher_files(tmp_path, [("3e38", "-3e38"), ("1", "0")])
    with pytest.raises(FormatError, match=rf"{name}:1: a teacher margin of .* is too large"):
        _load(files, fmt)


@pytest.mark.parametrize("fmt", ["text", "jsonl", "ids"])
def test_byte_order_marks_are_stripped_and_bad_bytes_are_file_line_errors(tmp_path, fmt):
    files = _teacher_files(tmp_path, [("3.5", "1.0"), ("2.0", "1.5")], bom=True)
    data = _load(files, fmt)
    assert len(data) == 2 and data.skipped == 0
    t = data[0]
    assert (t.query, t.pos, t.neg, t.margin) == ("query 0", "pos 0", "neg 0", 2.5)
    assert data[1].query == "query 1" and detect_format(files, fmt) == fmt
    # bytes that are not UTF-8: file:line, not U+FFFD or a bare UnicodeDecodeError
    target = files[fmt]
    raw = target.read_bytes().split(b"\n")
    raw[1] = raw[1].replace(b"1", b"\xff1", 1)
    target.write_bytes(b"\n".join(raw))
    with pytest.raises(FormatError, match=rf"{target.name}:2: not valid UTF-8 \(byte 0xff"):
        _load(files, fmt)
    assert len(_load(files, fmt, skip_bad=True)) == 1


def detect_format(files: dict[str, Path], fmt: str) -> str:
    from kd_pyserini.train.teacher_files import detect_teacher_format

    if fmt == "ids":
        return detect_teacher_format(files["ids"], files["collection"], files["queries"])
    return detect_teacher_format(files[fmt])


def test_offset_index_strips_bom_and_names_bad_bytes(tmp_path):
    for name, body in (("dense.tsv", "0\tzero\n1\tone\n"), ("strings.tsv", "doc-a\talpha\ndoc-b\tbeta\n")):
        for gz in (False, True):
            f = tmp_path / (name + (".gz" if gz else ""))
            raw = b"\xef\xbb\xbf" + body.encode()
            f.write_bytes(gzip.compress(raw) if gz else raw)
            idx = OffsetIndex(f)
            first, text = body.split("\n")[0].split("\t")
            assert first in idx and idx.get(first) == text and len(idx) == 2, (f, idx.get(first))
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"0\tzero\n1\tcaf\xe9\n2\ttwo\n")
    with pytest.raises(FormatError, match=r"bad\.tsv:2: not valid UTF-8 \(byte 0xe9 at byte 6"):
        OffsetIndex(bad)
    idx = OffsetIndex(bad, skip_bad=True)
    assert idx.skipped == 1 and "1" not in idx and idx.get("2") == "two"


def test_weights_check_is_exact():
    """The per-step weight check: huge but finite weights pass (no false alarm from a sum overflowing), any NaN or
    inf element fails."""
    from kd_pyserini.train.distributed import Dist
    from kd_pyserini.train.guards import weights_finite

    params = [torch.randn(50, 8), torch.randn(8)]
    assert weights_finite(params, Dist())
    params[0].fill_(3e38)  # the sum overflows float32, every element is finite
    assert weights_finite(params, Dist())
    for bad in (float("nan"), float("inf"), -float("inf")):
        p = [x.clone() for x in params]
        p[1][3] = bad
        assert not weights_finite(p, Dist())
