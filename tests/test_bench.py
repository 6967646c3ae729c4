"""The benchmark tooling itself (tools/benchmarks): CPU kind and ceilings, FLOP counts, ratios to peers, the PERFORMANCE.md
generator, the forced-AVX2 child, the sentence-transformers trainer alignment and the CUDA script's CPU-side parts.

No timing is asserted anywhere (speeds live in the benchmarks, as ratios); these tests check structure, arithmetic
and that the comparisons compare like with like.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.benchmarks import ceiling, make_performance_md as mkmd  # noqa: E402
from tools.benchmarks.common import Row  # noqa: E402

AMX_FLAGS = ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"]


# --- CPU kind and ceilings ----------------------------------------------------------------------------------------

def test_cpu_kind_labels_each_instruction_set_and_a_forced_cap():
    assert ceiling.cpu_kind(["avx2", "fma"], env={})["kind"] == "AVX2 only"
    avx512 = ceiling.cpu_kind(["avx2", "avx512f", "avx512_vnni", "avx512_bf16"], env={})
    assert avx512["kind"] == "AVX-512 (VNNI, bf16)" and not avx512["isa"]["amx"]
    amx = ceiling.cpu_kind(AMX_FLAGS, env={})
    assert amx["kind"] == "AMX (AVX-512, VNNI, bf16)"
    assert amx["isa"] == {"avx2": True, "avx512": True, "vnni": True, "amx": True, "bf16_native": True}
    forced = ceiling.cpu_kind(AMX_FLAGS, env=dict(ceiling.FORCE_AVX2_ENV))
    assert forced["kind"] == "AVX2 kernels forced on an AMX CPU"
    assert forced["forced"] == ceiling.FORCE_AVX2_ENV
    assert forced["effective"]["amx"] is False and forced["effective"]["avx512"] is False
    assert forced["isa"]["amx"] is True  # the hardware is still recorded as it is


def test_measure_ceilings_reports_every_precision_and_kernel():
    c = ceiling.measure_ceilings(m=256, k=256, n=256, seconds=0.01)
    assert c["shape"] == [256, 256, 256] and set(c["gflops"]) == {"fp32", "bf16", "int8"}
    assert set(c["kernels"]["fp32"]) == {"mkl mm", "onednn prepacked"}
    assert c["gflops"]["fp32"] > 0  # fp32 mm exists everywhere
    for prec, kernels in c["kernels"].items():
        for v in kernels.values():  # a number, or the error that kernel gave here
            assert isinstance(v, float) or str(v).startswith("error:"), (prec, v)


def test_encoder_flops_match_the_tasb_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"n_layers": 6, "dim": 768, "hidden_dim": 3072}))
    per_passage = ceiling.encoder_flops(tmp_path, [82])
    assert 7.0e9 < per_passage < 7.2e9  # the "82 tokens, 7.1 GFLOP a passage"
    assert ceiling.encoder_flops(tmp_path, [82, 82]) == 2 * per_passage
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 6, "hidden_size": 768,
                                                      "intermediate_size": 3072}))
    assert ceiling.encoder_flops(tmp_path, [82]) == per_passage  # BERT's key names give the same count
    assert ceiling.fraction_of_ceiling(10.0, 7.1e9, 142.0) == pytest.approx(0.5)
    assert ceiling.fraction_of_ceiling(10.0, 7.1e9, None) is None


def test_rows_give_ratios_to_every_peer_in_the_metric_direction():
    r = Row("passages/s", 20.0, 10.0, "p/s", peers={"sentence-transformers": 16.0, "onnx": None})
    assert r.ratio == 2.0 and r.ratios == {"sentence-transformers": 1.25, "onnx": None}
    lat = Row("p50", 5.0, 20.0, "ms", higher_is_better=False, peers={"sentence-transformers": 10.0})
    assert lat.ratio == 4.0 and lat.ratios["sentence-transformers"] == 2.0
    d = lat.as_dict()
    assert d["ratios"] == {"sentence-transformers": 2.0} and d["ceiling"] is None


# --- PERFORMANCE.md generator -------------------------------------------------------------------------------------

def _report(kind: dict | None, ceilings: dict | None) -> dict:
    machine = {"cpu_model": "Test CPU", "cpus": 2, "date": "2026-12-07T05:00:00+00:00", "load_avg": [1.0, 1.0, 1.0],
               "load_avg_end": [1.5], "cpu_flags": ["avx2", "avx512f", "avx512_bf16", "avx512_vnni"]}
    if kind:
        machine["cpu_kind"] = kind
    if ceilings:
        machine["ceilings"] = ceilings
    row = Row("passages/s, kd fp32", 40.0, 10.0, "passages/s", peers={"sentence-transformers": 32.0,
              "ONNX Runtime": 20.0, "OpenVINO": None}, ceiling=0.42).as_dict()
    best = Row("passages/s, kd auto (bf16) vs the fastest faithful peer", 130.0, 10.0, "passages/s",
               peers={"best other runtime": 100.0}, note="fastest faithful peer: ov bf16", ceiling=0.3).as_dict()
    return {"machine": machine, "quick": False, "benchmarks": {
        "passages": {"name": "passages", "skipped": None, "seconds": 10.0, "rows": [row, best], "agreement": {},
                     "notes": ["a note"], "extra": {}},
        "sparse": {"name": "sparse", "skipped": "error: something", "seconds": 0.0, "rows": [], "agreement": {},
                   "notes": [], "extra": {}}}}


def test_performance_md_section_per_cpu_kind_and_splice_keeps_the_hand_written_text(tmp_path):
    new = _report(ceiling.cpu_kind(AMX_FLAGS, env=dict(ceiling.FORCE_AVX2_ENV)),
                  {"shape": [2048, 768, 3072], "threads": 2, "gflops": {"fp32": 100.0, "bf16": 1.0, "int8": 90.0},
                   "kernels": {"fp32": {"mkl mm": 100.0}, "bf16": {"mm": 1.0}, "int8": {"_int_mm": 90.0}}})
    old = _report(None, None)
    sec = mkmd.section([("new.json", new), ("old.json", old)])
    assert sec.startswith(mkmd.BEGIN) and sec.endswith(mkmd.END)
    assert "Test CPU: AVX2 kernels forced on an AMX CPU" in sec and "Test CPU: AVX-512 (VNNI, bf16)" in sec
    assert "`ONEDNN_MAX_CPU_ISA=AVX2`" in sec and "not a measurement of an AVX2-only CPU" in sec
    assert "| fp32 | 100.0 |" in sec and "No GEMM ceiling was measured" in sec
    assert "| passages/s, kd fp32 | 40.000 | 10.569" not in sec
    assert "| passages/s, kd fp32 | 40.000 | 10.000 | 4.00x | 1.25x | 2.00x | - |  | 42% | passages/s |" in sec
    assert ("| passages/s, kd auto (bf16) vs the fastest faithful peer | 130.0 | 10.000 | 13.00x | - | - | - | "
            "1.30x (ov bf16: 100.0) | 30% | passages/s |") in sec
    assert "1.30x the fastest peer (ov bf16)" in sec  # the across-CPU table
    assert "Skipped: error: something" in sec
    doc = "# Performance\n\nhand-written intro\n\n" + mkmd.BEGIN + "\nstale\n" + mkmd.END + "\n\n## After\nkept\n"
    out = mkmd.splice(doc, sec)
    assert "hand-written intro" in out and "## After\nkept" in out and "stale" not in out
    assert mkmd.splice(out, sec) == out  # idempotent
    assert mkmd.splice("# P\n", sec).endswith(mkmd.END + "\n")  # no markers yet: appended
    path = tmp_path / "r.json"
    path.write_text(json.dumps(new))
    md = tmp_path / "PERF.md"
    md.write_text(doc)
    assert mkmd.main([str(path), "--doc", str(md)]) == 0
    assert mkmd.main([str(path), "--doc", str(md), "--check"]) == 0
    md.write_text(md.read_text().replace("42%", "41%"))
    assert mkmd.main([str(path), "--doc", str(md), "--check"]) == 1


def test_performance_md_is_generated_from_the_stored_results():
    """PERFORMANCE.md's per-CPU section is what the generator writes from tools/benchmarks/results/ (not typed)."""
    assert mkmd.default_paths(), "no benchmark reports in tools/benchmarks/results/"
    assert mkmd.main(["--check"]) == 0, "PERFORMANCE.md is stale: run python tools/benchmarks/make_performance_md.py"


# --- run_all --force-avx2 -----------------------------------------------------------------------------------------

def test_force_avx2_reruns_in_a_child_with_the_kernel_caps(monkeypatch):
    pytest.importorskip("pyserini")
    from tools.benchmarks import run_all

    seen = {}

    def fake_call(cmd, env):
        seen["cmd"], seen["env"] = cmd, env
        return 0

    monkeypatch.setattr(run_all.subprocess, "call", fake_call)
    assert run_all.main(["--force-avx2", "--quick", "--only", "queries"]) == 0
    assert "--force-avx2" not in seen["cmd"] and seen["cmd"][-3:] == ["--quick", "--only", "queries"]
    for k, v in ceiling.FORCE_AVX2_ENV.items():
        assert seen["env"][k] == v


def test_merge_into_keeps_one_ceiling_and_rederives_every_fraction(tmp_path):
    pytest.importorskip("pyserini")
    from tools.benchmarks import run_all

    kind = ceiling.cpu_kind(AMX_FLAGS, env={})
    base = _report(kind, {"gflops": {"fp32": 100.0, "bf16": 400.0, "int8": None}})
    row = base["benchmarks"]["passages"]["rows"][0]
    row.update(gflops=60.0, precision="fp32", ceiling=0.5)  # an interrupted run's row: its ceiling was 120
    path = tmp_path / "base.json"
    path.write_text(json.dumps(base))
    extra = _report(kind, {"gflops": {"fp32": 110.0, "bf16": 500.0, "int8": 50.0},
                           "measurements": [{"gflops": {"fp32": 110.0, "bf16": 500.0, "int8": 50.0}}]})
    extra["benchmarks"] = {"training_gap": {"name": "training_gap", "skipped": None, "seconds": 1.0, "rows": [],
                                            "agreement": {}, "notes": [], "extra": {}}}
    merged = run_all._merge(path, extra)
    assert set(merged["benchmarks"]) == {"passages", "sparse", "training_gap"}
    assert merged["machine"]["ceilings"]["gflops"] == {"fp32": 120.0, "bf16": 500.0, "int8": 50.0}
    assert merged["benchmarks"]["passages"]["rows"][0]["ceiling"] == pytest.approx(0.5)
    assert merged["benchmarks"]["training_gap"]["extra"]["run"]["separate_run"] is True
    assert json.loads(path.read_text())["machine"]["merged_runs"][0]["benchmarks"] == ["training_gap"]
    other = _report(ceiling.cpu_kind(["avx2"], env={}), None)
    with pytest.raises(SystemExit):
        run_all._merge(path, other)


# --- the CUDA script, CPU side ------------------------------------------------------------------------------------

def test_gpu_script_arguments_and_plan():
    from tools.benchmarks import gpu

    a = gpu.parse_args([])
    assert a.only == list(gpu.SECTIONS) and a.budget_s <= 480 and a.passages > a.small
    a = gpu.parse_args(["--only", "queries", "--only", "queries", "--queries", "10"])
    assert a.only == ["queries"] and a.queries == 10
    for bad in (["--small", "20000"], ["--passages", "0"], ["--only", "nope"]):
        with pytest.raises(SystemExit):
            gpu.parse_args(bad)
    plan = "\n".join(gpu.plan(gpu.parse_args([])))
    assert "pyserini.encode" in plan and "--device cuda:0" in plan and "--fp16" in plan
    assert "MarginMSELoss" in plan and "bf16" in plan
    cmd = gpu.pyserini_cli(Path("c.jsonl"), Path("e"), "m", 64)
    assert cmd[cmd.index("--batch-size") + 1] == "64" and cmd[cmd.index("--max-length") + 1] == "200"


def test_gpu_script_fails_fast_without_cuda(monkeypatch, capsys):
    import torch

    from tools.benchmarks import gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        gpu.require_cuda()
    assert e.value.code == 2
    assert "needs a CUDA device" in capsys.readouterr().err


def test_gpu_script_without_cuda_exits_2_and_dry_run_passes(data_dir):
    import torch

    script = str(ROOT / "tools" / "benchmarks" / "gpu.py")
    env_data = {"KD_PYSERINI_DATA": str(data_dir)}
    import os

    env = {**os.environ, **env_data}
    if not torch.cuda.is_available():
        r = subprocess.run([sys.executable, script, "--only", "queries"], capture_output=True, text=True, env=env,
                           timeout=120)
        assert r.returncode == 2 and "needs a CUDA device" in r.stderr
    r = subprocess.run([sys.executable, script, "--dry-run"], capture_output=True, text=True, env=env, timeout=300)
    import importlib.util

    absent = [m for m in ("sentence_transformers", "datasets", "accelerate") if importlib.util.find_spec(m) is None]
    assert "nothing measured" in r.stdout
    if absent:  # the dry run is a readiness check: it names what this environment lacks and says no
        assert r.returncode == 1 and all(f"module {m}" in r.stdout for m in absent), r.stdout + r.stderr
    else:
        assert r.returncode == 0 and "missing: nothing" in r.stdout, r.stdout + r.stderr


def test_gpu_script_cpu_smoke_runs_every_section(data_dir, tmp_path):
    """Every section of the CUDA script on CPU (tiny model, bf16, Pyserini's CLI with --device cpu): the code paths
    and the report, not the speeds."""
    import os

    out = tmp_path / "gpu.json"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "benchmarks" / "gpu.py"), "--cpu-smoke", "--passages", "24",
                        "--small", "8", "--batch-size", "8", "--queries", "3", "--train-steps", "1",
                        "--cache-dir", str(tmp_path / "cache"), "--out", str(out)],
                       capture_output=True, text=True, timeout=900,
                       env={**os.environ, "KD_PYSERINI_DATA": str(data_dir)})
    import importlib.util

    trainer_here = importlib.util.find_spec("accelerate") is not None  # sentence-transformers' trainer needs it
    assert r.returncode == (0 if trainer_here else 1), r.stdout[-2000:] + r.stderr[-2000:]
    rep = json.loads(out.read_text())
    assert set(rep["sections"]) == {"passages", "queries", "training"}
    p = rep["sections"]["passages"]
    assert p["cli"]["full"]["rc"] == 0 and p["cli"]["full"]["output_files"]
    assert p["agreement_kd_vs_st"]["bf16"]["cos_min"] > 0.99
    measured = rep["sections"] if trainer_here else {k: v for k, v in rep["sections"].items() if k != "training"}
    if not trainer_here:  # skipped with the reason, never reported as measured
        assert "accelerate" in json.dumps(rep["sections"]["training"])
    for sec in measured.values():
        assert sec["rows"] and all(row["ratio_st"] > 0 for row in sec["rows"])


# --- the training comparison is like with like --------------------------------------------------------------------

def test_sentence_transformers_trainer_replays_kd_batches_with_equal_losses(data_dir, tmp_path):
    """With dropout off (the one RNG stream the two trainers cannot share), kd's trainer and sentence-transformers'
    trainer with MarginMSELoss give the same per-step losses: same data order, loss, optimizer and schedule."""
    pytest.importorskip("accelerate")
    import shutil

    from tools.benchmarks.common import Settings, tasb_model
    from tools.benchmarks.st_train import st_trainer
    from tools.benchmarks.train_steps import Triples, kd_trainer
    from tools.benchmarks.training import _triples

    s = Settings.make(quick=True, data_dir=data_dir, cache_dir=tmp_path / "cache")
    model = Path(shutil.copytree(tasb_model(s), tmp_path / "nodrop"))
    cfg = json.loads((model / "config.json").read_text())
    cfg.update(dropout=0.0, attention_dropout=0.0)
    (model / "config.json").write_text(json.dumps(cfg))
    data = Triples(_triples(s, 32 * 3))
    kd = kd_trainer(s, str(model), data, "fp32", 2, str(tmp_path / "kd"))
    st = st_trainer(str(model), list(data), kd["order"], "fp32", 2, lr=kd["lr"], weight_decay=kd["weight_decay"],
                    seed=kd["seed"], out=str(tmp_path))
    assert len(kd["losses"]) == len(st["losses"]) == 3
    for a, b in zip(kd["losses"], st["losses"]):
        assert a == pytest.approx(b, rel=1e-4)


def test_the_rescore_benchmark_tiles_real_vectors_reproducibly():
    """tools/benchmarks/rescore.py: the first B vectors are the real ones; the copies are unit length, seeded by block,
    and spread along the real vectors' own principal directions (no variance where the real ones have none)."""
    import numpy as np

    from tools.benchmarks import rescore

    rng = np.random.default_rng(0)
    base = np.zeros((300, 8), dtype=np.float32)
    base[:, :3] = rng.standard_normal((300, 3))  # real vectors living in 3 of 8 dimensions
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    tiled = rescore.Tiled(base, 1000, seed=1)
    x = tiled.block(0)
    assert x.shape == (1000, 8) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert np.allclose(x[:300], base, atol=1e-6) and not np.allclose(x[300:600], base, atol=1e-2)
    assert np.abs(x[:, 3:]).max() < 1e-3  # the copies stay in the real vectors' subspace
    assert np.array_equal(x, rescore.Tiled(base, 1000, seed=1).block(0))
    assert [b.count for b in tiled.blocks()] == [1000]


def test_onnx_runtime_and_openvino_peers_give_the_hugging_face_cls_vectors(tiny_distilbert_dir, tmp_path):
    """The benchmark's other runtimes (tools/benchmarks/runtimes.py) compute the same CLS vectors as the model folder,
    in input order, one text or many (length-sorted batches put back)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import torch
    from transformers import AutoModel, AutoTokenizer

    from tools.benchmarks.runtimes import OrtEncoder, OvEncoder

    texts = ["a short one", "a much longer passage about dense retrieval " * 5, "x", "medium length text here"]
    tok = AutoTokenizer.from_pretrained(str(tiny_distilbert_dir))
    model = AutoModel.from_pretrained(str(tiny_distilbert_dir)).eval()
    with torch.inference_mode():
        ref = np.stack([model(**tok([t], return_tensors="pt")).last_hidden_state[0, 0].numpy() for t in texts])
    encoders = [OrtEncoder(tiny_distilbert_dir, tmp_path, 200, "fp32")]
    try:
        encoders.append(OvEncoder(tiny_distilbert_dir, tmp_path, 200, "fp32"))
    except Exception as e:  # noqa: BLE001  (openvino not installed: Skip)
        assert "openvino" in str(e)
    for enc in encoders:
        got = enc.encode(texts, batch_size=2)
        assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4, type(enc).__name__
        assert np.abs(enc.encode_one(texts[1]) - ref[1]).max() < 1e-4
    int8 = OrtEncoder(tiny_distilbert_dir, tmp_path, 200, "int8").encode(texts)
    cos = (int8 * ref).sum(1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.99
