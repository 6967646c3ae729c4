"""kd-train's TAS-B wiring: --sampling tas-balanced, --in-batch-teacher, --student-layers, the ``tas-b`` preset;
exact resume and DDP with them (the sampler and the teacher themselves: test_tas_sampling.py,
test_in_batch_teacher.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kd_pyserini.train.checkpoints import STATE_FILE, find_checkpoint
from kd_pyserini.train.config import TrainConfig
from kd_pyserini.train.recipe import CLUSTERS_FILE
from kd_pyserini.train.teacher_files import load_teacher
from kd_pyserini.train.trainer import MarginMSETrainer



pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(out: Path, student: Path, teacher: Path, **kw) -> TrainConfig:
    base = dict(teacher=str(teacher), output=str(out), student=str(student), batch_size=4, lr=1e-2,
                warmup_steps=1, save_every=0, log_every=1, progress=False, seed=7, query_max_length=16,
                passage_max_length=48)
    base.update(kw)
    return TrainConfig(**base)


def _tas(out: Path, student: Path, teacher: Path, encoder: Path, **kw) -> TrainConfig:
    return _cfg(out, student, teacher, sampling="tas-balanced", cluster_encoder=str(encoder), clusters=3,
                in_batch_teacher=str(encoder), in_batch_weight=0.75, in_batch_teacher_scale=2.0, **kw)


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _kd_train(*args: str):
    from click.testing import CliRunner

    from kd_pyserini.cli.train import main

    return CliRunner().invoke(main, list(args))


def test_tas_balanced_with_in_batch_teacher_trains_and_resume_is_bit_identical(tmp_path, tiny_distilbert_dir,
                                                                              jsonl):
    data = load_teacher(jsonl)
    full = MarginMSETrainer(_tas(tmp_path / "full", tiny_distilbert_dir, jsonl, tiny_distilbert_dir, max_steps=8,
                                 save_every=3, save_total_limit=0), data)
    assert full.in_batch_teacher is not None and full.clusters is not None
    clusters_file = tmp_path / "full" / CLUSTERS_FILE
    res = full.train()
    assert res.steps == 8 and clusters_file.is_file()
    # every batch's queries come from the clusters the run recorded (tas-balanced was really used)
    args = json.loads((tmp_path / "full" / "training_args.json").read_text())
    assert args["sampling"] == "tas-balanced" and args["in_batch_weight"] == 0.75
    # --precision auto (the default) is recorded as the precision used (the suite pins auto to fp32)
    assert args["precision_requested"] == "auto" and args["precision"] == "fp32"
    state = torch.load(tmp_path / "full" / "checkpoint-3" / STATE_FILE, weights_only=True)
    assert state["settings"]["sampling"] == "tas-balanced" and state["settings"]["query_clusters_sha256"]
    assert state["settings"]["precision"] == "fp32"
    assert state["settings"]["in_batch_teacher"]

    class Stop(Exception):
        pass

    def interrupt(trainer):
        if trainer.step == 5:
            raise Stop

    part = tmp_path / "part"
    with pytest.raises(Stop):
        MarginMSETrainer(_tas(part, tiny_distilbert_dir, jsonl, tiny_distilbert_dir, max_steps=8, save_every=3),
                         data, on_step=interrupt).train()
    assert find_checkpoint(part).name == "checkpoint-3"
    cached = (part / CLUSTERS_FILE).read_bytes()
    mtime = (part / CLUSTERS_FILE).stat().st_mtime_ns
    resumed = MarginMSETrainer(_tas(part, tiny_distilbert_dir, jsonl, tiny_distilbert_dir, max_steps=8,
                                    save_every=3, resume="latest"), data).train()
    assert resumed.steps == 8
    assert (part / CLUSTERS_FILE).read_bytes() == cached and (part / CLUSTERS_FILE).stat().st_mtime_ns == mtime
    a, b = _weights(res.final_dir), _weights(resumed.final_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # the teacher matters: without it (one-sided approximation) the same run ends elsewhere
    other = MarginMSETrainer(_cfg(tmp_path / "approx", tiny_distilbert_dir, jsonl, sampling="tas-balanced",
                                  cluster_encoder=str(tiny_distilbert_dir), clusters=3, in_batch_weight=0.75,
                                  max_steps=8), data).train()
    c = _weights(other.final_dir)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_resume_with_another_in_batch_teacher_or_sampling_is_refused(tmp_path, tiny_distilbert_dir, jsonl,
                                                                     minilm_dir):
    data = load_teacher(jsonl)
    out = tmp_path / "run"
    MarginMSETrainer(_tas(out, tiny_distilbert_dir, jsonl, tiny_distilbert_dir, max_steps=2, save_every=2),
                     data).train()
    with pytest.raises(ValueError, match="in_batch_teacher"):
        MarginMSETrainer(_cfg(out, tiny_distilbert_dir, jsonl, sampling="tas-balanced",
                              cluster_encoder=str(tiny_distilbert_dir), clusters=3, in_batch_teacher=str(minilm_dir),
                              in_batch_weight=0.75, in_batch_teacher_scale=2.0, max_steps=4, save_every=2,
                              resume="latest"), data)
    with pytest.raises(ValueError, match="sampling"):
        MarginMSETrainer(_cfg(out, tiny_distilbert_dir, jsonl, in_batch_teacher=str(tiny_distilbert_dir),
                              in_batch_weight=0.75, in_batch_teacher_scale=2.0, max_steps=4, save_every=2,
                              resume="latest"), data)


def test_student_layers_cut_is_saved_and_reloads(tmp_path, minilm_dir, jsonl):
    import kd_pyserini
    from transformers import AutoConfig

    r = _kd_train("margin-mse", "--teacher", str(jsonl), "--student", str(minilm_dir), "--student-layers", "3",
                  "--pooling", "cls", "--similarity", "dot", "--output", str(tmp_path / "s"), "--max-steps", "2",
                  "--batch-size", "4", "--no-progress", "--cpu-threads", "1", "--query-max-length", "16",
                  "--passage-max-length", "32")
    assert r.exit_code == 0, r.output
    assert AutoConfig.from_pretrained(tmp_path / "s").num_hidden_layers == 3
    enc = kd_pyserini.get_query_encoder(str(tmp_path / "s"), device="cpu")
    assert enc.encoder.card.pooling == "cls" and enc.encode("what is a dense retriever").shape == (384,)


def test_cli_tas_b_preset_defaults_and_refusals(tmp_path, tiny_distilbert_dir, jsonl):
    r = _kd_train("tas-b", "--help")
    assert r.exit_code == 0
    text = "".join(r.output.split())  # help wraps lines, also at hyphens: compare without whitespace
    for shown in ("--sampling[random|tas-balanced]random:aseeded", "[default:tas-balanced]",
                  "[default:0.75;", "[default:256;", "[default:2000;", "--in-batch-teacherCARD",
                  "--student-layers"):
        assert shown in text, shown
    assert "[default:32;" in "".join(_kd_train("margin-mse", "--help").output.split())
    common = ["--teacher", str(jsonl), "--student", str(tiny_distilbert_dir), "--no-progress"]
    r = _kd_train("tas-b", *common, "--output", str(tmp_path / "a"), "--cluster-encoder", str(tiny_distilbert_dir),
                  "--in-batch-teacher", "")  # the default ColBERT taken away: the rule still names the fix
    assert r.exit_code == 2 and "needs --in-batch-teacher" in r.output
    r = _kd_train("tas-b", *common, "--output", str(tmp_path / "b"), "--in-batch-teacher", str(tiny_distilbert_dir))
    assert r.exit_code == 1 and "--query-clusters FILE" in r.output and "Traceback" not in r.output
    r = _kd_train("margin-mse", *common, "--output", str(tmp_path / "c"), "--query-clusters", str(jsonl))
    assert r.exit_code == 1 and "applies only with --sampling tas-balanced" in r.output
    r = _kd_train("margin-mse", *common, "--output", str(tmp_path / "d"), "--in-batch-teacher",
                  str(tiny_distilbert_dir))
    assert r.exit_code == 1 and "--in-batch-weight W > 0" in r.output
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()  # refused before anything is written


def test_cli_tas_b_trains_with_a_clusters_file(tmp_path, tiny_distilbert_dir, jsonl):
    from kd_pyserini.train.sampling import query_keys

    keys = sorted(set(query_keys(load_teacher(jsonl), None)))
    clusters = tmp_path / "clusters.tsv"
    clusters.write_text("\t".join(keys[:5]) + "\n" + "\t".join(keys[5:]) + "\n")
    r = _kd_train("tas-b", "--teacher", str(jsonl), "--student", str(tiny_distilbert_dir), "--output",
                  str(tmp_path / "o"), "--query-clusters", str(clusters), "--in-batch-teacher",
                  str(tiny_distilbert_dir), "--batch-size", "4", "--max-steps", "3", "--lr", "1e-3", "--no-progress",
                  "--cpu-threads", "1")
    assert r.exit_code == 0, r.output
    assert "trained 3 steps" in r.output
    args = json.loads((tmp_path / "o" / "training_args.json").read_text())
    assert args["recipe"] == "tas-b" and args["sampling"] == "tas-balanced" and args["margin_bins"] == 10
    assert (args["query_max_length"], args["passage_max_length"]) == (30, 200)  # the paper's, not the card's


@pytest.mark.slow
def test_torchrun_ddp_tas_balanced_in_batch_teacher_exact_resume(tmp_path, tiny_distilbert_dir, jsonl):
    """Two CPU processes (gloo): tas-balanced batches dealt to ranks, the in-batch teacher on each, rank 0 builds the
    clusters, and --resume of the DDP run is exact."""
    def run(out: Path, *extra: str) -> None:  # --standalone: torchrun picks a free port
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "kd_pyserini.train", "margin-mse", "--teacher", str(jsonl), "--student", str(tiny_distilbert_dir),
               "--output", str(out), "--max-steps", "4", "--batch-size", "4", "--lr", "1e-2", "--save-every", "2",
               "--no-progress", "--log-every", "1", "--cpu-threads", "1", "--sampling", "tas-balanced",
               "--cluster-encoder", str(tiny_distilbert_dir), "--clusters", "2", "--in-batch-teacher",
               str(tiny_distilbert_dir), "--in-batch-weight", "0.75", "--query-max-length", "16",
               "--passage-max-length", "32", *extra]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.count("trained 4 steps") == 1

    run(tmp_path / "a")
    args = json.loads((tmp_path / "a" / "training_args.json").read_text())
    assert args["world_size"] == 2 and args["sampling"] == "tas-balanced"
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    for name in (CLUSTERS_FILE, CLUSTERS_FILE + ".json"):  # the cache with its record: reused, not rebuilt
        shutil.copy2(tmp_path / "a" / name, tmp_path / "b" / name)
    mtime = (tmp_path / "b" / CLUSTERS_FILE).stat().st_mtime_ns
    run(tmp_path / "b", "--resume", "latest")
    assert (tmp_path / "b" / CLUSTERS_FILE).stat().st_mtime_ns == mtime
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cluster_cache_survives_a_failed_start_and_a_mismatched_resume(tmp_path, tiny_distilbert_dir, jsonl,
                                                                       monkeypatch):
    """An output folder holding only the clusters cache (a run that stopped before training) is reused by the next
    run, not refused; a resume with another --clusters is refused without touching the cache; a teacher given by
    another spelling of the same folder resumes."""
    data = load_teacher(jsonl)
    out = tmp_path / "run"
    MarginMSETrainer(_tas(out, tiny_distilbert_dir, jsonl, tiny_distilbert_dir, max_steps=2, save_every=2),
                     data)  # built the clusters, then "failed" before train()
    assert sorted(p.name for p in out.iterdir()) == [CLUSTERS_FILE, CLUSTERS_FILE + ".json"]
    cached, mtime = (out / CLUSTERS_FILE).read_bytes(), (out / CLUSTERS_FILE).stat().st_mtime_ns
    MarginMSETrainer(_tas(out, tiny_distilbert_dir, jsonl, tiny_distilbert_dir, max_steps=2, save_every=2),
                     data).train()
    assert (out / CLUSTERS_FILE).stat().st_mtime_ns == mtime  # reused, not rebuilt
    with pytest.raises(ValueError, match="clusters: 3 -> 2"):
        MarginMSETrainer(_cfg(out, tiny_distilbert_dir, jsonl, sampling="tas-balanced",
                              cluster_encoder=str(tiny_distilbert_dir), clusters=2,
                              in_batch_teacher=str(tiny_distilbert_dir), in_batch_weight=0.75,
                              in_batch_teacher_scale=2.0, max_steps=4, save_every=2, resume="latest"), data)
    assert (out / CLUSTERS_FILE).read_bytes() == cached and (out / CLUSTERS_FILE).stat().st_mtime_ns == mtime
    monkeypatch.chdir(tiny_distilbert_dir.parent)
    relative = Path(tiny_distilbert_dir.name)
    res = MarginMSETrainer(_tas(out, tiny_distilbert_dir, jsonl, relative, max_steps=2, save_every=2,
                                resume="latest"), data).train()  # no ResumeMismatchError: the same folder
    assert res.steps == 2


@pytest.mark.parametrize("calibration", [256, 8], ids=["mid-fit", "fitted"])
def test_resume_with_in_batch_teacher_scale_auto_is_exact(tmp_path, tiny_distilbert_dir, jsonl, monkeypatch,
                                                          calibration):
    """The fit of --in-batch-teacher-scale auto is saved in each checkpoint: a fit still gathering triples (256 is
    more than the run sees) resumes from the same margins, a final one from its scale; both end bit-identical."""
    import kd_pyserini.train.in_batch_teacher as ibt

    real = ibt.load_in_batch_teacher
    monkeypatch.setattr(ibt, "load_in_batch_teacher",
                        lambda *a, **k: real(*a, **{**k, "calibration_triples": calibration}))
    data = load_teacher(jsonl)

    def cfg(out: Path, **kw) -> TrainConfig:
        return _cfg(out, tiny_distilbert_dir, jsonl, in_batch_teacher=str(tiny_distilbert_dir), in_batch_weight=0.75,
                    in_batch_teacher_scale="auto", max_steps=6, save_every=2, **kw)

    full = MarginMSETrainer(cfg(tmp_path / "full", save_total_limit=0), data)
    res = full.train()
    fitted = full.in_batch_teacher.scale
    assert fitted is not None and fitted != 1.0
    state = torch.load(tmp_path / "full" / "checkpoint-2" / STATE_FILE, weights_only=True)
    saved = state["in_batch_teacher_scale"][0]
    assert saved["calibrated"] is (calibration == 8) and len(saved["in_batch_margins"]) == 8
    info = json.loads((res.final_dir / "kd_pyserini_train.json").read_text())
    assert info["in_batch_teacher_scale"] == "auto" and info["in_batch_teacher_scale_fitted"] == fitted
    readme = (res.final_dir / "README.md").read_text()  # the model card is made with a fitted scale too
    assert '"scale": "auto"' in readme and "scale fitted to the teacher file's margins" in readme

    class Stop(Exception):
        pass

    def interrupt(trainer):
        if trainer.step == 3:
            raise Stop

    with pytest.raises(Stop):
        MarginMSETrainer(cfg(tmp_path / "part"), data, on_step=interrupt).train()
    again = MarginMSETrainer(cfg(tmp_path / "part", resume="latest"), data)
    assert again.in_batch_teacher.scale == (saved["scale"] if calibration == 8 else again.in_batch_teacher.scale)
    resumed = again.train()
    assert again.in_batch_teacher.scale == fitted
    a, b = _weights(res.final_dir), _weights(resumed.final_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_scale_auto_is_checked_where_it_is_given(tmp_path, tiny_distilbert_dir, jsonl):
    from kd_pyserini.train.config import parse_scale

    assert parse_scale(" AUTO ") == "auto" and parse_scale("2.5") == 2.5
    for bad in ("0", "-1", "nan", "inf", "x"):
        with pytest.raises(ValueError, match="a number > 0 or 'auto'"):
            parse_scale(bad)
    with pytest.raises(ValueError, match="give --in-batch-teacher CARD"):
        _cfg(tmp_path / "o", tiny_distilbert_dir, jsonl, in_batch_teacher_scale="auto")
    r = _kd_train("margin-mse", "--teacher", str(jsonl), "--output", str(tmp_path / "p"),
                  "--in-batch-teacher-scale", "zz")
    assert r.exit_code == 2 and "neither a number > 0 nor 'auto'" in r.output


def test_tas_b_defaults_to_the_colbert_in_batch_teacher(tmp_path, tiny_distilbert_dir, jsonl):
    from kd_pyserini.train.config import TAS_B_IN_BATCH_TEACHER

    assert TAS_B_IN_BATCH_TEACHER == "colbert-distilbert-margin-mse"
    help_text = "".join(_kd_train("tas-b", "--help").output.split())
    assert "[default:colbert-distilbert-margin-mse]" in help_text
    assert TrainConfig.preset("tas-b", teacher=str(jsonl), output="o", query_clusters=str(jsonl)
                              ).in_batch_teacher == TAS_B_IN_BATCH_TEACHER
    # offline (no hub, not in the cache): one line naming the model and the fix, nothing written
    r = _kd_train("tas-b", "--teacher", str(jsonl), "--student", str(tiny_distilbert_dir), "--output",
                  str(tmp_path / "o"), "--cluster-encoder", str(tiny_distilbert_dir), "--no-progress")
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    error = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(error) == 1 and "colbert" in error[0].lower() and "fix" in error[0].lower(), r.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
