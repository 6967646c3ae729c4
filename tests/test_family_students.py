"""kd-train --architecture bert-cat|colbert|prettr (issue #21): Margin-MSE students of every re-ranker kind train from
the same teacher files, resume exactly, save in the hub layout of their kind and load back through load_reranker
with the scores of the trained module; the in-batch term is refused for them (one line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kd_pyserini.cards import get_reranker_card
from kd_pyserini.encoding.rerankers import load_reranker
from kd_pyserini.train.config import TrainConfig
from kd_pyserini.train.teacher_files import load_teacher
from kd_pyserini.train.trainer import MarginMSETrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KINDS = {"bert-cat": "cross-encoder", "colbert": "late-interaction", "prettr": "split"}


def _cfg(out: Path, student: Path, teacher: Path, arch: str, **kw) -> TrainConfig:
    base = dict(teacher=str(teacher), output=str(out), student=str(student), architecture=arch, batch_size=4,
                lr=3e-4, warmup_steps=0, save_every=0, log_every=1, progress=False, seed=3, query_max_length=16,
                passage_max_length=48)
    base.update(kw)
    return TrainConfig(**base)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("arch", ["bert-cat", "colbert", "prettr"])
def test_each_architecture_trains_resumes_exactly_and_reloads_as_its_reranker(arch, tmp_path, tiny_distilbert_dir,
                                                                             jsonl):
    data = load_teacher(jsonl)
    # the loss falls over a few steps on a fixed batch of triples (one batch per epoch: the same 4 triples)
    trainer = MarginMSETrainer(_cfg(tmp_path / "fit", tiny_distilbert_dir, jsonl, arch, max_steps=12, lr=1e-3), data)
    assert trainer.student.architecture == arch
    batch = trainer.collator([data[i] for i in range(4)])
    from kd_pyserini.train.objective import batch_loss

    with torch.no_grad():
        before = float(batch_loss(trainer.student.eval(), batch)[0])
    trainer.student.train()
    res = trainer.train()
    with torch.no_grad():
        after = float(batch_loss(trainer.student.eval(), batch)[0])
    assert after < before, (before, after)

    # a checkpoint is the hub layout of its kind and scores as the trained module does
    folder = res.final_dir
    assert get_reranker_card(str(folder)).kind == KINDS[arch]
    assert json.loads((folder / "kd_pyserini_train.json").read_text())["architecture"] == arch
    readme = (folder / "README.md").read_text()  # the model card describes a re-ranker, not a dense retriever
    assert f"kd-train --architecture {arch}" in readme and "load_reranker" in readme and "get_query_encoder" \
        not in readme and f"--architecture {arch}" in readme.split("## Reproduce")[1]
    rr = load_reranker(str(folder), device="cpu")
    q = "what is a dense retriever"
    # short passages: a BERT_CAT re-ranker cuts the pair at query + passage length, training cuts each text apart
    passages = ["a dense retriever encodes queries and passages", "bm25 counts the words of a passage",
                "robots move with motors", "short"]
    tok = trainer.tokenizer
    enc_q = tok([q], truncation=True, max_length=16, padding=True, return_tensors="pt",
                return_token_type_ids=False)
    enc_p = tok(passages, truncation=True, max_length=48, padding=True, return_tensors="pt",
                return_token_type_ids=False)
    rows = torch.zeros(len(passages), dtype=torch.long)
    with torch.no_grad():
        want = trainer.student.eval()(enc_q["input_ids"], enc_q["attention_mask"], enc_p["input_ids"],
                                      enc_p["attention_mask"], rows, torch.arange(len(passages))).numpy()
    got = rr.score(q, passages)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert rr.describe()["query_max_length" if arch != "bert-cat" else "max_length"] in (16, 64)

    # exact resume: interrupted at step 3 with a checkpoint at 2, continued, equals the uninterrupted run
    full = MarginMSETrainer(_cfg(tmp_path / "full", tiny_distilbert_dir, jsonl, arch, max_steps=5, save_every=2),
                            data).train()

    class Stop(Exception):
        pass

    def stop(t):
        if t.step == 3:
            raise Stop

    with pytest.raises(Stop):
        MarginMSETrainer(_cfg(tmp_path / "part", tiny_distilbert_dir, jsonl, arch, max_steps=5, save_every=2), data,
                         on_step=stop).train()
    resumed = MarginMSETrainer(_cfg(tmp_path / "part", tiny_distilbert_dir, jsonl, arch, max_steps=5, save_every=2,
                                    resume="latest"), data).train()
    a, b = _weights(full.final_dir), _weights(resumed.final_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pair_students_refuse_the_in_batch_term_and_bi_encoder_options(tmp_path, tiny_distilbert_dir, jsonl):
    from click.testing import CliRunner

    from kd_pyserini.cli.train import main

    for extra, message in ((["--in-batch-weight", "0.5"], "has no in-batch term: drop --in-batch-weight"),
                           (["--pooling", "mean"], "--pooling apply to bert-dot students only")):
        r = CliRunner().invoke(main, ["margin-mse", "--teacher", str(jsonl), "--student", str(tiny_distilbert_dir),
                                      "--architecture", "colbert", "--output", str(tmp_path / "o"), *extra])
        assert r.exit_code == 1 and message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "o").exists()
    help_text = "".join(CliRunner().invoke(main, ["margin-mse", "--help"]).output.split())
    assert "--architecture[bert-dot|bert-cat|colbert|prettr]" in help_text and "[default:bert-dot]" in help_text


def test_a_prettr_student_starts_from_minilm_with_fewer_layers(tmp_path, minilm_dir):
    """all-MiniLM-L6-v2 is a BERT: rewritten as the DistilBERT it equals, cut to 3 layers, split at layer 2."""
    from transformers import AutoModel

    from kd_pyserini.train.pair_students import bert_as_distilbert, new_pair_student

    bert = AutoModel.from_pretrained(str(minilm_dir)).eval()
    dist = bert_as_distilbert(bert).eval()
    ids = torch.tensor([[101, 2054, 2003, 1037, 7020, 102]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        a = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        b = dist(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    student, tok = new_pair_student("prettr", str(minilm_dir), student_layers=3)
    assert student.model.config.n_layers == 3 and student.model.join_layer_idx == 2
    out = student.save(tmp_path / "p", tok, type("C", (), {"query_max_length": 16, "passage_max_length": 48})())
    rr = load_reranker(str(out), device="cpu")
    assert rr.describe()["kind"] == "split" and np.isfinite(rr.score("a query", ["a passage", "b"])).all()


@pytest.mark.slow
def test_torchrun_ddp_colbert_student_exact_resume(tmp_path, tiny_distilbert_dir, jsonl):
    """Two CPU processes (gloo, torchrun --standalone: a free port each time): a ColBERT student trains under DDP,
    and --resume from its step-2 checkpoint ends with the same weights."""
    import shutil

    def run(out: Path, *extra: str) -> None:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "kd_pyserini.train", "margin-mse", "--architecture", "colbert", "--teacher", str(jsonl),
               "--student", str(tiny_distilbert_dir), "--output", str(out), "--max-steps", "4", "--batch-size", "2",
               "--lr", "1e-3", "--save-every", "2", "--no-progress", "--log-every", "1", "--cpu-threads", "1",
               "--query-max-length", "16", "--passage-max-length", "32", *extra]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert r.returncode == 0, "\n".join(ln for ln in r.stderr.splitlines() if "Error" in ln)[-3000:]
        assert r.stdout.count("trained 4 steps") == 1

    run(tmp_path / "a")
    args = json.loads((tmp_path / "a" / "training_args.json").read_text())
    assert args["world_size"] == 2 and args["architecture"] == "colbert"
    assert get_reranker_card(str(tmp_path / "a")).kind == "late-interaction"
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    run(tmp_path / "b", "--resume", "latest")
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
