"""Recipes in the library and no private fields across modules (issue #17): ``TrainConfig.preset`` and its rules, the
kd-train options generated from the config's fields, the recipe a checkpoint records, ``TrainerState``, and the
public accessors ``OffsetIndex.ids`` / ``TeacherData.query_keys``."""

from __future__ import annotations

import json
from dataclasses import MISSING, fields

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from kd_pyserini.train.config import PRESETS, RecipeError, TrainConfig
from kd_pyserini.offsets import OffsetIndex
from kd_pyserini.train.state import TrainerState
from kd_pyserini.train.teacher_files import IdTeacherData, JsonlTeacherData, TextTeacherData

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------ presets

def test_tas_b_preset_without_a_teacher_is_the_clis_one_line_error(tmp_path):
    from kd_pyserini.cli.train import main

    # the preset's default teacher is the ColBERT of the paper; taken away, the rule names the fix
    assert TrainConfig.preset("tas-b", teacher="t.jsonl", output="out", query_clusters="c.tsv"
                              ).in_batch_teacher == "colbert-distilbert-margin-mse"
    with pytest.raises(RecipeError) as lib:
        TrainConfig.preset("tas-b", teacher="t.jsonl", output="out", query_clusters="c.tsv", in_batch_teacher="")
    teacher = tmp_path / "t.jsonl"
    teacher.write_text("{}\n")
    r = CliRunner().invoke(main, ["tas-b", "--teacher", str(teacher), "--output", str(tmp_path / "o"),
                                  "--query-clusters", str(teacher), "--in-batch-teacher", ""])
    assert r.exit_code == 2 and str(lib.value) in " ".join(r.output.split()).replace("Error: ", "")
    assert "\n" not in str(lib.value) and "needs --in-batch-teacher CARD" in str(lib.value)
    with pytest.raises(RecipeError, match="needs --in-batch-teacher"):  # the label alone is held to the rules
        TrainConfig(teacher="t", output="o", recipe="tas-b")
    with pytest.raises(RecipeError, match="no training preset 'tas-c'; known: margin-mse, tas-b"):
        TrainConfig.preset("tas-c", teacher="t", output="o")
    with pytest.raises(RecipeError, match="recipe 'tas-c' is not one of"):
        TrainConfig(teacher="t", output="o", recipe="tas-c")


def test_preset_values_then_overrides_and_the_applied_recipe():
    cfg = TrainConfig.preset("tas-b", teacher="t", output="o", in_batch_teacher="cat", query_clusters="c.tsv",
                             batch_size=64, query_max_length=None)
    assert (cfg.recipe, cfg.sampling, cfg.clusters, cfg.in_batch_weight, cfg.lr) == ("tas-b", "tas-balanced", 2000,
                                                                                      0.75, 7e-6)
    assert (cfg.batch_size, cfg.query_max_length, cfg.passage_max_length) == (64, 30, 200)  # None: the preset's
    applied = cfg.applied_recipe()
    assert applied == {"name": "tas-b", "overrides": {"batch_size": 64, "query_clusters": "c.tsv",
                                                      "in_batch_teacher": "cat"}}
    plain = TrainConfig.preset("margin-mse", teacher="t", output="o")
    assert plain == TrainConfig(teacher="t", output="o") and plain.applied_recipe() == {"name": "margin-mse",
                                                                                       "overrides": {}}


def test_kd_train_options_are_generated_from_the_config_fields():
    """Every config field (but the recipe) is an option of both commands, with the preset's value as its default:
    each default is written once, in TrainConfig."""
    from kd_pyserini.cli.train import margin_mse_cmd, tas_b_cmd

    for command, preset in ((margin_mse_cmd, PRESETS["margin-mse"]), (tas_b_cmd, PRESETS["tas-b"])):
        params = {p.name: p for p in command.params}
        for f in fields(TrainConfig):
            if f.name == "recipe":
                assert f.name not in params
                continue
            want = preset.default(f.name, f.default)
            got = params[f.name].default
            if f.name == "validation_measures":
                want = ",".join(want)
            if want is MISSING:
                assert params[f.name].required, f.name
            else:
                assert got == want, (command.name, f.name, got, want)
    flags = {o for p in margin_mse_cmd.params for o in p.opts}
    assert {"--format", "-o", "--output", "--measures", "--compile", "--in-batch-teacher"} <= flags


# ------------------------------------------------------------------------------------------------ TrainerState

def test_trainer_state_round_trip_through_torch_save(tmp_path):
    state = TrainerState(step=7, epoch=1, batch_in_epoch=3, best_metric=0.42, best_step=6, bad_validations=1,
                         train_seconds=12.5, triples_seen=224, validations=[{"step": 6, "nDCG@10": 0.42}],
                         rng_to_restore={"python": 1})
    torch.save({"format": 1, **state.state_dict(), "optimizer": {}}, tmp_path / "s.pt")
    back = TrainerState()
    back.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert back == TrainerState(**{**state.__dict__, "rng_to_restore": None})  # the RNG travels separately
    assert back.validations is not state.validations
    with pytest.raises(KeyError, match="not a trainer state: step"):
        TrainerState().load_state_dict({"epoch": 1})


def test_checkpoint_records_the_state_and_the_applied_recipe(tmp_path, tiny_distilbert_dir, jsonl):
    from kd_pyserini.train.checkpoints import STATE_FILE
    from kd_pyserini.train.trainer import MarginMSETrainer

    cfg = TrainConfig.preset("margin-mse", teacher=str(jsonl), output=str(tmp_path / "o"),
                             student=str(tiny_distilbert_dir), batch_size=4, max_steps=2, save_every=2, lr=1e-3,
                             progress=False, query_max_length=16, passage_max_length=32)
    trainer = MarginMSETrainer(cfg)
    trainer.train()
    assert trainer.step == trainer.state.step == 2 and trainer.triples_seen == trainer.state.triples_seen
    saved = torch.load(tmp_path / "o" / "checkpoint-2" / STATE_FILE, weights_only=True)
    assert {k: saved[k] for k in TrainerState.KEYS} == trainer.state.state_dict()
    want = {"name": "margin-mse", "overrides": {"student": str(tiny_distilbert_dir), "batch_size": 4,
                                                "max_steps": 2, "lr": 1e-3, "query_max_length": 16,
                                                "passage_max_length": 32}}
    assert saved["recipe_applied"] == want
    assert json.loads((tmp_path / "o" / "training_args.json").read_text())["recipe_applied"] == want
    info = json.loads((tmp_path / "o" / "checkpoint-2" / "kd_pyserini_train.json").read_text())
    assert info["recipe_applied"] == want


# ------------------------------------------------------------------------------------------------ accessors

@pytest.mark.parametrize("ids", [["3", "10", "7"], ["q-b", "q-a", "q-c"]])
def test_offset_index_ids_are_the_inverse_of_row(tmp_path, ids):
    f = tmp_path / "queries.tsv"
    f.write_text("".join(f"{q}\tquery {q}\n" for q in ids))
    index = OffsetIndex(f)
    rows = np.array([index.row(q) for q in reversed(ids)])
    assert index.ids(rows) == list(reversed(ids)) and index.ids([]) == []
    gz = tmp_path / "queries.tsv.gz"
    import gzip

    gz.write_bytes(gzip.compress(f.read_bytes()))
    with pytest.raises(TypeError, match="no rows"):
        OffsetIndex(gz).ids([0])


def test_teacher_data_query_keys_of_each_format(tmp_path):
    coll, queries = tmp_path / "collection.tsv", tmp_path / "queries.tsv"
    coll.write_text("".join(f"{i}\tpassage {i}\n" for i in range(4)))
    queries.write_text("11\tfirst\n12\tsecond\n")
    ids = tmp_path / "t.ids.tsv"
    ids.write_text("3\t1\t12\t0\t1\n2\t1\t11\t2\t3\n1\t0\t12\t1\t2\n")
    col = IdTeacherData(ids, coll, queries).query_keys()
    assert col.kind == "ids" and [col.names[c] for c in col.codes] == ["12", "11", "12"]
    assert col.rows is not None and len(col.rows) == 2
    text = tmp_path / "t.tsv"
    text.write_text("3\t1\tfirst\tp\tn\n\n2\t1\tsecond\tp\tn\n1\t0\tfirst\tp\tn\n")
    col = TextTeacherData(text).query_keys()
    assert col.kind == "texts" and [col.names[c] for c in col.codes] == ["first", "second", "first"]
    assert col.lines == [1, 3]  # each text's first line (the blank line 2 skipped)
    jl = tmp_path / "t.jsonl"
    jl.write_text(json.dumps({"query": "q", "pos": ["p"], "neg": ["a", "b"], "pos_scores": [2],
                              "neg_scores": [1, 0]}) + "\n")
    col = JsonlTeacherData(jl).query_keys()
    assert col.kind == "texts" and col.names == ["q"] and col.codes.tolist() == [0, 0]
