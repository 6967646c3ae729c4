"""``--precision auto``: what it chooses on each kind of CPU and GPU, that it is every command's default, that what is
recorded (index metadata, a run's sidecar, training_args.json) is the precision used, and the one warning for an
emulated bf16. The session pins ``auto`` to fp32 (conftest); these tests remove the pin where they need the rule."""

from __future__ import annotations

import json
import logging

import pytest

from kd_pyserini.encoding import precision as P

AMX = {"avx2": True, "avx512": True, "vnni": True, "amx": True, "bf16_native": True}
AVX512_BF16 = {"avx2": True, "avx512": True, "vnni": True, "amx": False, "bf16_native": True}
AVX2 = {"avx2": True, "avx512": False, "vnni": False, "amx": False, "bf16_native": False}


@pytest.mark.parametrize("isa, encode", [(AMX, "bf16"), (AVX512_BF16, "bf16"), (AVX2, "fp32")])
def test_auto_on_cpu_kinds(isa, encode):
    no_pin: dict[str, str] = {}
    got = P.choose_precision("auto", "cpu", "encode", isa=isa, env=no_pin)
    assert got.precision == encode and got.requested == "auto" and got.reason
    assert ("AMX-BF16" in got.reason) == isa["amx"] and ("no native bf16" in got.reason) == (encode == "fp32")
    # training follows the native units too (bf16 autocast, fp32 master weights); teacher scores stay fp32 on every
    # CPU (they become training targets)
    assert P.choose_precision("auto", "cpu", "train", isa=isa, env=no_pin).precision == encode
    assert P.choose_precision("auto", "cpu", "score", isa=isa, env=no_pin).precision == "fp32"


@pytest.mark.parametrize("use", P.USES)
def test_auto_on_gpus(use):
    assert P.choose_precision("auto", "cuda", use, cuda_bf16=True, env={}).precision == "bf16"
    older = P.choose_precision("auto", "cuda", use, cuda_bf16=False, env={})
    assert older.precision == "fp16" and ("grad scaler" in older.reason) == (use == "train")


def test_explicit_precisions_pass_through_and_the_pin():
    assert P.choose_precision("int8", "cpu", isa=AMX, env={}) == P.PrecisionChoice("int8", "given explicitly", "int8")
    pinned = P.choose_precision("auto", "cpu", isa=AMX, env={P.AUTO_ENV: " FP32 "})
    assert pinned.precision == "fp32" and P.AUTO_ENV in pinned.reason
    with pytest.raises(ValueError, match=rf"{P.AUTO_ENV}='fast' is not a precision; set it to one of fp32"):
        P.choose_precision("auto", "cpu", env={P.AUTO_ENV: "fast"})
    with pytest.raises(ValueError, match="use 'index' is not one of encode, train, score"):
        P.choose_precision("auto", "cpu", "index", env={})
    # a pin must fit the use and the device: int8 only encodes on CPUs, fp16 needs CUDA
    assert P.choose_precision("auto", "cpu", "encode", env={P.AUTO_ENV: "int8"}).precision == "int8"
    with pytest.raises(ValueError, match=rf"{P.AUTO_ENV}=int8 cannot serve --precision auto for train on cpu"):
        P.choose_precision("auto", "cpu", "train", env={P.AUTO_ENV: "int8"})
    with pytest.raises(ValueError, match=rf"{P.AUTO_ENV}=fp16 cannot serve --precision auto on cpu"):
        P.choose_precision("auto", "cpu", "score", env={P.AUTO_ENV: "fp16"})
    assert P.choose_precision("auto", "cuda", "train", cuda_bf16=True, env={P.AUTO_ENV: "fp16"}).precision == "fp16"


def test_cpu_isa_reads_flags_and_obeys_an_avx2_cap():
    amx_flags = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"]
    assert P.cpu_isa(amx_flags, env={}) == AMX
    assert P.cpu_isa(["avx2", "fma"], env={}) == AVX2
    capped = P.cpu_isa(amx_flags, env={"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert not capped["bf16_native"] and not capped["amx"] and not capped["avx512"] and capped["avx2"]
    # so auto picks fp32 where the kernels are capped at AVX2 (as tests/test_fast_paths forces them)
    assert P.choose_precision("auto", "cpu", isa=capped, env={}).precision == "fp32"


def test_explicit_bf16_without_native_units_warns_once_with_the_measured_slowdown(caplog, monkeypatch):
    monkeypatch.setattr(P, "_WARNED", [])
    monkeypatch.setattr(P, "_SLOWDOWN", [])
    with caplog.at_level(logging.WARNING, logger=P.__name__):
        assert P.warn_if_emulated_bf16(AVX2) is True
        assert P.warn_if_emulated_bf16(AVX2) is False  # once per process
    (rec,) = [r for r in caplog.records if r.name == P.__name__]
    msg = rec.getMessage()
    assert "emulated" in msg and "slower than fp32" in msg and "--precision auto" in msg
    slowdown = P.bf16_slowdown()  # cached: the figure the warning gave
    assert slowdown > 0 and f"{slowdown:.1f}x" in msg
    monkeypatch.setattr(P, "_WARNED", [])
    assert P.warn_if_emulated_bf16(AMX) is False  # native bf16: nothing to warn about


def test_every_command_defaults_to_auto():
    from kd_pyserini.cli.index import main as index_main
    from kd_pyserini.cli.search import main as search_main
    from kd_pyserini.cli.teacher import main as teacher_main
    from kd_pyserini.cli.train import main as train_main
    from kd_pyserini.search.spec import Encoding
    from kd_pyserini.train.config import TrainConfig

    def default(cmd, *path):
        for name in path:
            cmd = cmd.commands[name]
        (opt,) = [p for p in cmd.params if p.name == "precision"]
        return opt.default, list(opt.type.choices)

    for cmd, path in ((index_main, ("dense",)), (index_main, ("passage-store",)), (search_main, ()),
                      (teacher_main, ("score",)), (train_main, ("margin-mse",)), (train_main, ("tas-b",))):
        value, choices = default(cmd, *path)
        assert value == "auto" and "auto" in choices, (cmd.name, path)
    assert Encoding().precision == "auto" and TrainConfig.__dataclass_fields__["precision"].default == "auto"


def test_an_index_built_with_auto_records_the_precision_used(tmp_path, tiny_distilbert_dir, monkeypatch):
    """kd-index dense without --precision: on a CPU with native bf16 the index is bf16's, without it fp32's; the
    metadata never says "auto" (a resume compares the precision used)."""
    from click.testing import CliRunner

    from kd_pyserini.cli.index import main as index_main
    from kd_pyserini.index import read_metadata

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "contents": f"passage number {i} about cells"}) + "\n"
                              for i in range(6)))
    monkeypatch.delenv(P.AUTO_ENV, raising=False)
    for isa, want in ((AMX, "bf16"), (AVX2, "fp32")):
        monkeypatch.setattr(P, "cpu_isa", lambda *a, _isa=isa, **k: dict(_isa))
        out = tmp_path / want
        r = CliRunner().invoke(index_main, ["dense", "--encoder", str(tiny_distilbert_dir), "--corpus", str(corpus),
                                            "-o", str(out), "--device", "cpu", "--no-progress"])
        assert r.exit_code == 0, r.output
        assert read_metadata(out)["precision"] == want


def test_a_search_records_the_resolved_precision(tmp_path, tiny_distilbert_dir, monkeypatch):
    from kd_pyserini.index import build_dense_index
    from kd_pyserini.search import SearchSpec, run_search
    from kd_pyserini.search.spec import DenseStage, Encoding

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "contents": f"passage number {i} about cells"}) + "\n"
                              for i in range(6)))
    index = build_dense_index(corpus, str(tiny_distilbert_dir), tmp_path / "idx", device="cpu", progress=False)
    (tmp_path / "topics.tsv").write_text("1\tcells\n")
    monkeypatch.delenv(P.AUTO_ENV, raising=False)
    monkeypatch.setattr(P, "cpu_isa", lambda *a, **k: dict(AMX))
    spec = SearchSpec(output=str(tmp_path / "run.txt"), first_stage="dense", topics=str(tmp_path / "topics.tsv"),
                      dense=DenseStage(index=str(index), encoder=str(tiny_distilbert_dir)), hits=3, progress=False,
                      evaluate=False, encoding=Encoding(device="cpu"))
    assert spec.encoding.precision == "auto"
    run_search(spec)
    side = json.loads((tmp_path / "run.txt.json").read_text())
    assert side["encoding"]["precision"] == "bf16"  # what ran, never "auto"


def test_a_resume_refused_for_precision_says_which_to_pass(tmp_path):
    """Work started at one precision and resumed where auto picks another: the refusal names --precision to pass."""
    from kd_pyserini.index.chunks import check_state
    from kd_pyserini.index.layout import IndexBuildError
    from kd_pyserini.train.checkpoints import ResumeMismatchError, check_resume_settings

    assert P.resume_hint("fp32", "fp32") == "" and P.resume_hint(None, "bf16") == ""
    state = {"encoder": "e", "max_length": 200, "precision": "fp32", "format": "jsonl", "corpus": "c", "shard": None,
             "chunk_size": 8}
    with pytest.raises(IndexBuildError, match=r"precision differ\) \(the finished part was made at precision fp32, "
                                              r"this run would use bf16: pass --precision fp32 to resume it\)"):
        check_state(tmp_path, state, {**state, "precision": "bf16"})
    with pytest.raises(ResumeMismatchError, match=r"precision: fp32 -> bf16\) \(the finished part .*pass "
                                                  r"--precision fp32"):
        check_resume_settings(tmp_path, {"precision": "fp32", "lr": 1}, {"precision": "bf16", "lr": 1}, False)
