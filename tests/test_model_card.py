"""Students that publish (issue #18): every folder kd-train saves carries a Hugging Face model card with the figures
measured during training, and ``kd-train export`` writes a folder the hub takes as is."""

from __future__ import annotations

import csv
import json
import logging
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml

from kd_pyserini.train.config import TrainConfig
from kd_pyserini.train.model_card import MODEL_CARD, ExportError, export_student, model_card_text
from kd_pyserini.train.trainer import MarginMSETrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(out: Path, student: Path, teacher: Path, data_dir: Path, **kw) -> TrainConfig:
    base = dict(teacher=str(teacher), output=str(out), student=str(student), batch_size=8, lr=1e-3, warmup_steps=1,
                max_steps=6, save_every=3, save_total_limit=0, log_every=2, progress=False, seed=7,
                query_max_length=16, passage_max_length=32, eval_every=2,
                validation_candidates=str(data_dir / "msmarco-dl" / "candidates.dl19.bm25-top100.tsv.gz"),
                validation_qrels="dl19-passage", validation_max_queries=2)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_distilbert_dir, jsonl, data_dir) -> Path:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("card") / "run"
        MarginMSETrainer(_cfg(out, tiny_distilbert_dir, jsonl, data_dir)).train()
    finally:
        torch.set_num_threads(threads)
    return out


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def _measured(run: Path) -> dict[int, dict[str, float]]:
    with open(run / "train_log.csv", newline="") as f:
        return {int(r["step"]): {"nDCG@10": float(r["val_nDCG@10"]), "RR@10": float(r["val_RR@10"])}
                for r in csv.DictReader(f) if r["val_nDCG@10"]}


def test_every_saved_folder_has_a_model_card_with_its_measured_figures(trained):
    measured = _measured(trained)
    assert len(measured) == 4  # steps 0, 2, 4, 6
    for folder, step in ((trained / "checkpoint-3", 3), (trained / "checkpoint-6", 6), (trained, 6),
                         (trained / "best", json.loads((trained / "best" / "kd_pyserini_train.json").read_text())
                          ["step"])):
        text = (folder / MODEL_CARD).read_text(encoding="utf-8")
        meta = _front_matter(text)
        assert meta["library_name"] == "transformers" and meta["language"] == ["en"]
        assert "margin-mse" in meta["tags"] and meta["datasets"] == ["microsoft/ms_marco"]
        assert "| distilbert | 2 | 32 | cls | dot | 32 | 16 | 32 |" in text  # architecture, pooling, lengths
        assert "msmarco-10q-teacher-scores.jsonl" in text and "hofstaetter2020" in text and "hofstaetter2021" in text
        rows = [s for s in measured if s <= step]
        for s in rows:  # each validation up to this folder's step, with the figures train_log.csv recorded
            cells = f"{measured[s]['nDCG@10']:.4f} | {measured[s]['RR@10']:.4f}"
            assert (f"| **{s}** | **{measured[s]['nDCG@10']:.4f}**" if s == step else f"| {s} | {cells} |") in text
        assert not any(f"\n| {s} |" in text for s in measured if s > step)
    best = json.loads((trained / "best" / "kd_pyserini_train.json").read_text())
    assert f"**{best['validation']['nDCG@10']:.4f}**" in (trained / "best" / MODEL_CARD).read_text()


def test_reproduce_command_parses_back_to_the_run_settings(trained):
    from kd_pyserini.cli.train import margin_mse_cmd

    text = (trained / MODEL_CARD).read_text(encoding="utf-8")
    line = text.split("## Reproduce")[1].split("```bash\n")[1].split("\n")[0]
    argv = shlex.split(line)
    assert argv[:2] == ["kd-train", "margin-mse"]
    params = margin_mse_cmd.make_context("margin-mse", argv[2:]).params
    args = json.loads((trained / "training_args.json").read_text())
    for key in ("teacher", "student", "lr", "batch_size", "max_steps", "warmup_steps", "seed", "query_max_length",
                "passage_max_length", "validation_candidates", "validation_qrels", "validation_max_queries",
                "eval_every", "save_every", "sampling", "in_batch_weight"):
        assert params[key] == args[key], key


def test_export_reloads_with_plain_transformers_and_get_query_encoder(trained, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    import kd_pyserini

    dest = export_student(trained / "best", tmp_path / "hub", repo_id="someone/tiny-kd")
    names = sorted(p.name for p in dest.iterdir())
    assert "model.safetensors" in names and "README.md" in names and "kd_pyserini_card.toml" in names
    assert "tokenizer.json" in names and "config.json" in names and "trainer_state.pt" not in names
    assert '"someone/tiny-kd"' in (dest / "README.md").read_text() and "# tiny-kd" in (dest / "README.md").read_text()
    a, b = load_file(str(trained / "best" / "model.safetensors")), load_file(str(dest / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    query = "what was the manhattan project"
    tok = AutoTokenizer.from_pretrained(str(dest))
    model = AutoModel.from_pretrained(str(dest)).eval()
    with torch.inference_mode():
        cls = model(**tok([query], truncation=True, max_length=16, return_tensors="pt")).last_hidden_state[0, 0]
    enc = kd_pyserini.get_query_encoder(str(dest), device="cpu")
    assert enc.card.note is None and enc.card.name == "tiny-kd" and enc.max_length == 16
    np.testing.assert_allclose(enc.encode(query), cls.numpy(), atol=1e-5)

    with pytest.raises(ExportError, match="not empty"):  # nothing already written is lost
        export_student(trained / "best", dest)
    with pytest.raises(ExportError, match="holds no model"):
        export_student(tmp_path, tmp_path.parent / "elsewhere")


def test_export_command_line(trained, tmp_path):
    from click.testing import CliRunner

    from kd_pyserini.cli.train import main

    r = CliRunner().invoke(main, ["export", str(trained / "checkpoint-3"), "--to", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert "huggingface-cli upload OWNER/NAME" in r.output and (tmp_path / "out" / "model.safetensors").is_file()
    r = CliRunner().invoke(main, ["export", str(trained / "checkpoint-3"), "--to", str(tmp_path / "out")])
    assert r.exit_code == 1 and r.output.startswith("Error:") and "--overwrite" in r.output


def test_a_card_that_cannot_be_made_never_costs_the_checkpoint(tmp_path, tiny_distilbert_dir, jsonl, data_dir,
                                                                monkeypatch, caplog):
    from kd_pyserini.train import model_card

    def broken(*args, **kwargs):
        raise ValueError("broken card")

    monkeypatch.setattr(model_card, "model_card_text", broken)
    cfg = _cfg(tmp_path / "o", tiny_distilbert_dir, jsonl, data_dir, max_steps=3, eval_every=0,
               validation_candidates=None, validation_qrels=None)
    with caplog.at_level(logging.WARNING, logger="kd_pyserini"):
        res = MarginMSETrainer(cfg).train()
    assert (tmp_path / "o" / "checkpoint-3" / "model.safetensors").is_file() and res.steps == 3
    assert not (tmp_path / "o" / "checkpoint-3" / MODEL_CARD).exists()
    assert "no model card (README.md)" in caplog.text and "broken card" in caplog.text


def test_card_without_validation_says_so(tmp_path, tiny_distilbert_dir, jsonl, data_dir):
    cfg = _cfg(tmp_path / "o", tiny_distilbert_dir, jsonl, data_dir, max_steps=2, save_every=0, eval_every=0,
               validation_candidates=None, validation_qrels=None)
    MarginMSETrainer(cfg).train()
    text = model_card_text(tmp_path / "o")
    assert "No validation was run" in text and "| step |" not in text
