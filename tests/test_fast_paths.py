"""The encoders' fast paths keep their results (fidelity only: no timing assertions), and the benchmark suite runs.

* oneDNN linear (CPU fp32 default): the same vectors as the ordinary ``nn.Linear``;
* bf16 / int8: cosine to fp32 above the documented floors (int8 refused on CUDA);
* single-query path (private tokenizer, no mask) and the CUDA pipeline (run here on CPU): the same vectors as
  ``embed``;
* ``tools/benchmarks/run_all.py --quick`` on tiny inputs writes a JSON report with ratio fields.
"""

from __future__ import annotations

import copy
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kd_pyserini import get_document_encoder, get_query_encoder
from kd_pyserini import encoding as E
from kd_pyserini.encoding import int8 as int8_module

ROOT = Path(__file__).resolve().parent.parent

QUERIES = [
    "what is the daily life of thai people",
    "do goldfish grow",
    "how long is life cycle of flea",
    "what types of food can you cook sous vide",
    "causes of left ventricular hypertrophy",
    "why did the us volunterilay enter ww1",
    "who formed the commonwealth of independent states",
    "axon terminals or synaptic knob definition",
    "what is famvir prescribed for",
    "Café résumé naïve — déjà vu? 東京 tokyo!!",
    "anthropological definition of environment",
    "is cdg airport in main paris",
]
PASSAGES = [
    "The Manhattan Project was a research effort during World War II that produced the first nuclear weapons.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "A short one.",
    "Goldfish grow to the size of their tank only when water quality limits them; in ponds they grow much larger "
    "than in bowls, and some reach thirty centimetres. " * 6,
    "Famciclovir (Famvir) is an antiviral drug used to treat herpes zoster (shingles) and herpes simplex.",
    "Left ventricular hypertrophy is a thickening of the wall of the heart's main pumping chamber, most often "
    "caused by long-standing high blood pressure.",
]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture()
def no_fast_linear(monkeypatch):
    monkeypatch.setenv("KD_PYSERINI_FAST_LINEAR", "0")


# --- oneDNN linear ---------------------------------------------------------------------------------------------

def test_fast_linear_same_vectors_as_plain_linear(tiny_distilbert_dir, monkeypatch):
    fast = get_document_encoder(str(tiny_distilbert_dir), device="cpu")
    monkeypatch.setenv("KD_PYSERINI_FAST_LINEAR", "0")
    plain = get_document_encoder(str(tiny_distilbert_dir), device="cpu")
    if E.fast_linear_available():
        assert any(type(m) is E._FastLinear for m in fast.encoder.model.modules())
    assert not any(type(m) is E._FastLinear for m in plain.encoder.model.modules())
    np.testing.assert_allclose(fast.encode(PASSAGES), plain.encode(PASSAGES), atol=1e-5)


def test_fast_linear_minilm_same_vectors(monkeypatch):
    texts = PASSAGES + QUERIES
    fast = get_document_encoder("all-minilm-l6-v2", device="cpu").encode(texts)
    monkeypatch.setenv("KD_PYSERINI_FAST_LINEAR", "0")
    plain = get_document_encoder("all-minilm-l6-v2", device="cpu").encode(texts)
    assert np.abs(fast - plain).max() < 1e-5


def test_fast_linear_follows_weight_changes_copies_and_autograd():
    if not E.fast_linear_available():
        pytest.skip("oneDNN linear is not available in this torch build")
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 8)
    ref = torch.nn.Linear(16, 8)
    ref.load_state_dict(lin.state_dict())
    net = torch.nn.Sequential(lin)
    assert E.use_fast_linear(net) == 1 and type(lin) is E._FastLinear
    x = torch.randn(5, 16)
    with torch.inference_mode():
        torch.testing.assert_close(lin(x), ref(x), atol=1e-5, rtol=1e-5)
        # in-place change (an optimiser step, load_state_dict): the packed weight is rebuilt
        new = {k: v * 2 + 1 for k, v in ref.state_dict().items()}
        lin.load_state_dict(new)
        ref.load_state_dict(new)
        torch.testing.assert_close(lin(x), ref(x), atol=1e-5, rtol=1e-5)
    # copies and pickles leave out the packed (opaque) tensor and rebuild it
    for other in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        with torch.inference_mode():
            torch.testing.assert_close(other(x), ref(x), atol=1e-5, rtol=1e-5)
    # with autograd it is the ordinary F.linear, so training works
    y = lin(x.requires_grad_())
    y.sum().backward()
    assert lin.weight.grad is not None
    assert set(lin.state_dict()) == {"weight", "bias"}


# --- bf16 ------------------------------------------------------------------------------------------------------

def test_bf16_cosine_minilm_and_tiny(tiny_distilbert_dir):
    for name in ("all-minilm-l6-v2", str(tiny_distilbert_dir)):
        fp32 = get_document_encoder(name, device="cpu").encode(PASSAGES)
        bf16 = get_document_encoder(name, device="cpu", precision="bf16").encode(PASSAGES)
        assert _cos(fp32, bf16).min() > 0.999, name
        q32 = get_query_encoder(name, device="cpu")
        q16 = get_query_encoder(name, device="cpu", precision="bf16")
        assert _cos(np.stack([q32.encode(q) for q in QUERIES]), np.stack([q16.encode(q) for q in QUERIES])).min() \
            > 0.999, name


def test_bf16_linear_matches_autocast(monkeypatch):
    """The bf16 oneDNN layers compute what CPU autocast computes (bf16 weights and inputs, bf16 output)."""
    if not E.fast_linear_available(torch.bfloat16):
        pytest.skip("no native bf16 oneDNN linear on this CPU")
    fast = get_document_encoder("all-minilm-l6-v2", device="cpu", precision="bf16").encode(PASSAGES)
    monkeypatch.setenv("KD_PYSERINI_FAST_LINEAR", "0")
    autocast = get_document_encoder("all-minilm-l6-v2", device="cpu", precision="bf16").encode(PASSAGES)
    assert _cos(fast, autocast).min() > 0.9999


# --- int8 ------------------------------------------------------------------------------------------------------

def test_int8_in_precisions_and_refused_on_cuda():
    assert "int8" in E.PRECISIONS
    for device in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(ValueError, match="int8.*CPU only"):
            get_query_encoder("all-minilm-l6-v2", device=device, precision="int8")
        with pytest.raises(ValueError, match="int8.*CPU only"):
            get_document_encoder("all-minilm-l6-v2", device=device, precision="int8")


def test_int8_query_cosine_minilm():
    q32 = get_query_encoder("all-minilm-l6-v2", device="cpu")
    q8 = get_query_encoder("all-minilm-l6-v2", precision="int8")  # device=None: int8 means the CPU
    assert q8.encoder.device.type == "cpu"
    float_linears = [m for m in q8.encoder.model.modules() if type(m) in (torch.nn.Linear, E._FastLinear)]
    assert float_linears and all(m.in_features > m.out_features for m in float_linears)  # only the down-projections
    assert sum(type(m) is int8_module._Int8Linear for m in q8.encoder.model.modules()) == 6 * 4 + 6 + 1
    a = np.stack([q32.encode(q) for q in QUERIES])
    b = np.stack([q8.encode(q) for q in QUERIES])
    assert b.dtype == np.float32 and b.shape == a.shape
    assert _cos(a, b).min() >= 0.99
    assert np.linalg.norm(b, axis=1) == pytest.approx(1.0, abs=1e-5)  # cosine card: still normalised
    # passages too (a looser floor: longer inputs, wider activation ranges)
    d32 = get_document_encoder("all-minilm-l6-v2", device="cpu").encode(PASSAGES)
    d8 = get_document_encoder("all-minilm-l6-v2", device="cpu", precision="int8").encode(PASSAGES)
    assert _cos(d32, d8).min() >= 0.98


_AVX2_SCRIPT = r"""
import json, sys, warnings
import numpy as np
import torch
warnings.simplefilter("ignore")
torch.set_num_threads(int(sys.argv[2]))  # the parent's: int8 rounding may flip with a float sum's order
from kd_pyserini import get_query_encoder
from kd_pyserini.encoding.int8 import int8_full_range, int8_recipe
q8 = get_query_encoder("all-minilm-l6-v2", precision="int8")
print(json.dumps({"full_range": int8_full_range(), "recipe": int8_recipe(q8.encoder.model),
                  "vectors": np.stack([q8.encode(q) for q in json.loads(sys.argv[1])]).tolist()}))
"""


def test_int8_on_avx2_kernels_is_faithful_and_machine_independent(monkeypatch):
    """fbgemm restricted to its AVX2 kernels (as on an AMD EPYC without VNNI), in a child process: the probe finds
    the int16-pair saturation, 7-bit weights are chosen, and the query vectors (a) stay within cosine 0.99 of fp32
    and (b) equal this process's 7-bit-weight vectors, whatever this CPU has: no sum saturated there."""
    import json
    import subprocess

    from kd_pyserini.encoding.int8 import int8_recipe

    env = dict(__import__("os").environ, FBGEMM_ENABLE_INSTRUCTIONS="AVX2")  # fbgemm's own ISA switch
    out = subprocess.run([sys.executable, "-c", _AVX2_SCRIPT, json.dumps(QUERIES), str(torch.get_num_threads())],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["full_range"] is False and "7-bit" in got["recipe"]
    avx2 = np.asarray(got["vectors"], dtype=np.float32)
    a = np.stack([get_query_encoder("all-minilm-l6-v2", device="cpu").encode(q) for q in QUERIES])
    assert _cos(a, avx2).min() >= 0.99
    monkeypatch.setattr(int8_module, "int8_full_range", lambda: False)  # the weight range AVX2 gets
    seven = get_query_encoder("all-minilm-l6-v2", precision="int8")
    assert "7-bit" in int8_recipe(seven.encoder.model)
    np.testing.assert_allclose(np.stack([seven.encode(q) for q in QUERIES]), avx2, atol=1e-5)


def test_int8_query_cosine_tiny(tiny_distilbert_dir):
    q32 = get_query_encoder(str(tiny_distilbert_dir), device="cpu")
    q8 = get_query_encoder(str(tiny_distilbert_dir), device="cpu", precision="int8")
    a = np.stack([q32.encode(q) for q in QUERIES])
    b = np.stack([q8.encode(q) for q in QUERIES])
    assert _cos(a, b).min() >= 0.99
    # batched: activation ranges are per batch (padding included), so close to, not equal to, one at a time
    assert _cos(q8.encode_batch(QUERIES), a).min() >= 0.99


def test_int8_smoothing_keeps_the_function():
    """Smoothing alone (before quantisation) changes nothing: x/s through weights*s."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    ref = lin(x)
    s = torch.rand(8) + 0.5
    with torch.no_grad():
        lin.weight.mul_(s)
    torch.testing.assert_close(E._Smoothed(lin, 1 / s)(x), ref, atol=1e-5, rtol=1e-5)


# --- single-query path and CUDA pipeline -----------------------------------------------------------------------

def test_single_query_path_equals_batch_path(tiny_distilbert_dir):
    q = get_query_encoder(str(tiny_distilbert_dir), device="cpu")
    long_query = " ".join(["goldfish"] * 80)  # longer than the 30-token query length: truncated the same way
    for text in [*QUERIES, long_query, ""]:
        one = q.encode(text)
        assert one.shape == (32,) and one.dtype == np.float32
        np.testing.assert_allclose(one, q.encoder.embed([text], 30)[0], atol=1e-5)
    ids_fast = q.encoder._single_tokenizer(30).encode(long_query).ids
    assert ids_fast == q.encoder.tokenizer(long_query, truncation=True, max_length=30)["input_ids"]
    for text in QUERIES + PASSAGES:
        assert q.encoder._single_tokenizer(200).encode(text).ids == \
            q.encoder.tokenizer(text, truncation=True, max_length=200)["input_ids"]
    pre = get_query_encoder(str(tiny_distilbert_dir), device="cpu", prefix="query:")
    np.testing.assert_allclose(pre.encode("do goldfish grow"), pre.encode_batch(["do goldfish grow"])[0], atol=1e-5)


def test_single_query_minilm_mean_pooling_without_mask():
    q = get_query_encoder("all-minilm-l6-v2", device="cpu")
    for text in QUERIES:
        np.testing.assert_allclose(q.encode(text), q.encoder.embed([text], q.max_length)[0], atol=1e-5)


def test_cuda_pipeline_runs_on_cpu_and_matches(tiny_distilbert_dir):
    enc = get_document_encoder(str(tiny_distilbert_dir), device="cpu").encoder
    texts = PASSAGES * 3 + QUERIES
    ref = enc.embed(texts, 200, batch_size=4)
    enc.cuda_chunk = 5  # several chunks: tokenising the next one overlaps the current one
    got = enc._embed_cuda(texts, 200, batch_size=4, pin=False)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # token-budget batches: short texts go in bigger batches, never more than batch_size * max_length tokens
    ids = enc._tokenize(texts, 200)
    batches = enc._token_batches(ids, 2, 50, pin=False)
    assert sorted(int(i) for b in batches for i in b[0]) == list(range(len(texts)))
    assert all(b[1].numel() <= 2 * 50 or len(b[0]) == 1 for b in batches)
    assert max(len(b[0]) for b in batches) > 2


def test_threads_option(tiny_distilbert_dir):
    before = torch.get_num_threads()
    try:
        get_query_encoder(str(tiny_distilbert_dir), device="cpu", threads=1)
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads"):
            get_query_encoder(str(tiny_distilbert_dir), device="cpu", threads=0)
    finally:
        torch.set_num_threads(before)


# --- the benchmark suite ---------------------------------------------------------------------------------------

def test_bench_run_all_quick_writes_json_with_ratios(data_dir, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from tools.benchmarks import run_all

    out = tmp_path / "bench.json"
    rc = run_all.main(["--quick", "--only", "passages", "--only", "queries", "--only", "dense",
                       "--passages", "8", "--queries", "4", "--dense-size", "3000", "--hnsw-size", "2000",
                       "--cache-dir", str(tmp_path / "cache"), "--data-dir", str(data_dir), "--out", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["quick"] is True and report["machine"]["cpus"] >= 1
    assert set(report["benchmarks"]) == {"passages", "queries", "dense"}
    for name, b in report["benchmarks"].items():
        assert b["skipped"] is None, (name, b["skipped"], b["extra"].get("traceback"))
        assert b["rows"] and all("ratio" in r for r in b["rows"])
        assert any(r["ratio"] is not None and r["ratio"] > 0 for r in b["rows"]), name
    q = report["benchmarks"]["queries"]
    assert q["agreement"]["kd fp32 vs pyserini"]["cos_min"] > 0.9999
    assert q["agreement"]["kd int8 vs kd fp32"]["cos_min"] >= 0.99
    d = report["benchmarks"]["dense"]
    assert d["agreement"]["flat kd vs Pyserini"]["identical_top10"] == 1.0
    assert "extrapolated_msmarco_8.8M" in d["extra"]
    table = run_all.format_result(report["benchmarks"]["queries"])
    assert "single-query p50" in table and "x" in table
    assert "tools.benchmarks" in sys.modules


@pytest.mark.slow
@pytest.mark.parametrize("seven_bit_weights", [False, True], ids=["8-bit-weights", "7-bit-weights-avx2"])
def test_int8_queries_keep_the_dl19_ranking(data_dir, seven_bit_weights, monkeypatch, dl19_minilm_passages):
    """The fast query path is judged by ranking, not by a cosine floor: re-ranking DL19's BM25 top 100 with
    all-MiniLM-L6-v2 (fp32 passages), int8 queries keep nDCG@10 within 0.003 of fp32 queries, with either weight
    range (the one AVX2 kernels get is forced here, so every machine checks both)."""
    from kd_pyserini.evaluation import evaluate
    from kd_pyserini.trec_io import read_qrels

    top, pids, vectors = dl19_minilm_passages
    row = {p: i for i, p in enumerate(pids)}
    qrels = read_qrels(data_dir / "topics-and-qrels" / "qrels.dl19-passage.txt")

    def ndcg10(encoder) -> float:
        run = {}
        for qid, lst in top.lists.items():
            scores = vectors[[row[p] for p in lst]] @ encoder.encode(top.queries[qid])
            run[qid] = {p: float(s) for p, s in zip(lst, scores)}
        return evaluate(run, qrels, "nDCG@10")["nDCG@10"]

    fp32 = ndcg10(get_query_encoder("all-minilm-l6-v2", device="cpu"))
    monkeypatch.setattr(int8_module, "int8_full_range", lambda: not seven_bit_weights)
    q8 = get_query_encoder("all-minilm-l6-v2", precision="int8")
    assert ("7-bit" in int8_module.int8_recipe(q8.encoder.model)) == seven_bit_weights
    assert 0.5 < fp32 < 0.8  # a real ranking (MiniLM re-ranks DL19's BM25 top 100 at about 0.64)
    assert abs(ndcg10(q8) - fp32) <= 0.003


@pytest.mark.slow
def test_bf16_fused_path_keeps_the_dl19_ranking(data_dir, dl19_minilm_passages):
    """The CPU bf16 path (the fused forward, bf16 residual stream: what --precision auto picks on CPUs with native
    bf16) re-ranks DL19's BM25 top 100 with all-MiniLM-L6-v2 within 0.003 nDCG@10 of fp32, bf16 passages and bf16
    queries alike; its passage vectors keep cosine >= 0.999 with fp32."""
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("no native bf16 on this CPU: --precision auto picks fp32 here, and bf16 is not fused")
    from kd_pyserini.evaluation import evaluate
    from kd_pyserini.trec_io import read_qrels

    top, pids, vectors = dl19_minilm_passages
    qrels = read_qrels(data_dir / "topics-and-qrels" / "qrels.dl19-passage.txt")
    doc16 = get_document_encoder("all-minilm-l6-v2", device="cpu", precision="bf16", batch_size=64)
    assert doc16.encoder._fused() is not None
    v16 = doc16.encode([top.passages[p] for p in pids])
    assert _cos(v16, vectors).min() >= 0.999

    def ndcg10(doc_vectors, encoder) -> float:
        row = {p: i for i, p in enumerate(pids)}
        run = {}
        for qid, lst in top.lists.items():
            scores = doc_vectors[[row[p] for p in lst]] @ encoder.encode(top.queries[qid])
            run[qid] = {p: float(s) for p, s in zip(lst, scores)}
        return evaluate(run, qrels, "nDCG@10")["nDCG@10"]

    fp32 = ndcg10(vectors, get_query_encoder("all-minilm-l6-v2", device="cpu"))
    bf16 = ndcg10(v16, get_query_encoder("all-minilm-l6-v2", device="cpu", precision="bf16"))
    assert 0.5 < fp32 < 0.8
    assert abs(bf16 - fp32) <= 0.003, (bf16, fp32)


@pytest.fixture(scope="module")
def dl19_minilm_passages(data_dir, test_cache):
    """DL19's BM25 top-100 candidates and their all-MiniLM-L6-v2 fp32 passage vectors (encoded once; kept in the test
    cache under the candidate file's SHA-256, so CI's second leg reads them)."""
    import hashlib
    import os

    from kd_pyserini.candidates import read_top1000

    path = data_dir / "msmarco-dl" / "candidates.dl19.bm25-top100.tsv.gz"
    top = read_top1000(path)
    pids = sorted(top.passages)
    key = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    cached = test_cache / f"dl19-bm25-top100.all-minilm-l6-v2.fp32.{key}.npy"
    if cached.is_file():
        vectors = np.load(cached)
        assert vectors.shape == (len(pids), 384)
        spot = [0, len(pids) // 2, len(pids) - 1]  # a reused file must still be these passages' fp32 vectors
        again = get_document_encoder("all-minilm-l6-v2", device="cpu").encode([top.passages[pids[i]] for i in spot])
        assert _cos(again, vectors[spot]).min() > 0.9999
        return top, pids, vectors
    vectors = get_document_encoder("all-minilm-l6-v2", device="cpu", batch_size=64).encode(
        [top.passages[p] for p in pids])
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, cached)
    return top, pids, vectors
