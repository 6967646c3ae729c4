"""The CUDA benchmark, one command (about 5-8 minutes on one H100/H200): kd_pyserini against Pyserini's ``encode``
CLI and sentence-transformers on the same GPU, in one process run.

    python tools/benchmarks/gpu.py                       # everything, JSON to tools/benchmarks/results/gpu-<name>.json
    python tools/benchmarks/gpu.py --dry-run             # no GPU needed: check inputs, imports and print the plan
    python tools/benchmarks/gpu.py --only passages --passages 5000

Measures, on ``cuda:0``:

* ``passages``: passages/s for kd_pyserini fp16 and bf16 (``get_document_encoder(device="cuda")``: token-budget
  batches, pinned-memory prefetch) vs sentence-transformers (the model cast to fp16 / bf16) vs Pyserini's CLI
  (``python -m pyserini.encode ... --device cuda:0 --fp16``, a subprocess; its rate is start-up corrected: two runs,
  a small and the full corpus, and the difference divided by the difference in passages). Vectors agree check:
  kd vs sentence-transformers (cosine).
* ``queries``: single-query p50/p95 (ms) for kd fp16/bf16, sentence-transformers and Pyserini's AutoQueryEncoder,
  interleaved query by query.
* ``training``: ``kd-train margin-mse`` triples/s at bf16 (batch 32, lengths 30/200) vs sentence-transformers'
  trainer with ``MarginMSELoss`` (bf16), the same batches in the same order (:mod:`tools.benchmarks.st_train`).

Without CUDA it stops at once with a message (exit 2), unless ``--dry-run``. The model is the random TAS-B-architecture
DistilBERT of the CPU suite (``--model`` for another folder); data from ``$KD_PYSERINI_DATA``. Each section checks the
time left against ``--budget-s`` and is skipped (with the reason in the JSON) rather than overrun it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``tools.benchmarks`` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "tools.benchmarks"

SECTIONS = ("passages", "queries", "training")
_RUN_CLI = ("import sys, runpy, kd_pyserini; sys.argv = sys.argv[1:]; "
            "runpy.run_module('pyserini.encode', run_name='__main__', alter_sys=True)")
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (kept free of CUDA and heavy imports: tested on CPU)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="no GPU: check inputs and imports, print the plan, exit")
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    p.add_argument("--passages", type=int, default=20_000, help="DL-pool passages to encode [20,000]")
    p.add_argument("--small", type=int, default=1_000, help="passages of the start-up run of Pyserini's CLI [1,000]")
    p.add_argument("--batch-size", type=int, default=64, help="encoding batch for all three [64]")
    p.add_argument("--queries", type=int, default=243, help="DL topics for single-query latency [243]")
    p.add_argument("--train-steps", type=int, default=20, help="timed training steps, after one warm-up [20]")
    p.add_argument("--model", default=None, help="TAS-B-architecture model folder [a random DistilBERT 6x768]")
    p.add_argument("--data-dir", type=Path, default=None, help="shared data [$KD_PYSERINI_DATA]")
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "kd_pyserini_bench")
    p.add_argument("--budget-s", type=float, default=480.0, help="stop starting sections after this [480 = 8 min]")
    p.add_argument("--out", type=Path, default=None, help="JSON report [tools/benchmarks/results/gpu-<device>.json]")
    p.add_argument("--cpu-smoke", action="store_true", help=argparse.SUPPRESS)  # tests: every section on CPU,
    # tiny model and inputs, bf16 only (kd refuses fp16 on CPU), Pyserini's CLI with --device cpu: nothing measured
    a = p.parse_args(argv)
    for name in ("passages", "small", "batch_size", "queries", "train_steps"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.small >= a.passages:
        p.error("--small must be below --passages (the start-up correction needs two sizes)")
    a.only = list(dict.fromkeys(a.only or SECTIONS))
    return a


def require_cuda() -> str:
    """The CUDA device's name; exits with code 2 and a clear message when there is none."""
    import torch

    if not torch.cuda.is_available():
        sys.stderr.write(f"tools/benchmarks/gpu.py needs a CUDA device: torch.cuda.is_available() is False (torch "
                         f"{torch.__version__}, built with CUDA {torch.version.cuda}). Run it on a GPU machine, or "
                         "use --dry-run to check the inputs and the plan here.\n")
        raise SystemExit(2)
    return torch.cuda.get_device_name(0)


def pyserini_cli(corpus: Path, out_dir: Path, model: str, batch: int, device: str = "cuda:0") -> list[str]:
    """The ``python -m pyserini.encode`` command line that encodes ``corpus`` as Pyserini's docs describe.

    Run through ``runpy`` after ``import kd_pyserini``: the same module and arguments as ``-m pyserini.encode``, but
    the JVM is started with a Java >= 21 (kd_pyserini's start-up) where the machine's default ``java`` is older
    (Anserini's jar refuses it at ``import pyserini.encode``)."""
    return [sys.executable, "-c", _RUN_CLI, "pyserini.encode",
            "input", "--corpus", str(corpus), "--fields", "text", "--delimiter", "\n",
            "output", "--embeddings", str(out_dir),
            "encoder", "--encoder", model, "--fields", "text", "--batch-size", str(batch), "--max-length", "200",
            "--device", device, "--pooling", "cls", "--fp16"]


def write_corpus(texts: Sequence[str], path: Path) -> Path:
    """A JSONL corpus (``id``, ``contents``) for Pyserini's CLI; newlines in texts become spaces."""
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": str(i), "contents": t.replace("\n", " ")}) + "\n")
    return path


def plan(a: argparse.Namespace) -> list[str]:
    """What a run would do, one line each (printed by --dry-run and stored in the report)."""
    lines = [f"sections: {', '.join(a.only)}; time budget {a.budget_s:.0f} s"]
    if "passages" in a.only:
        lines.append(f"passages: {a.passages} DL-pool passages, batch {a.batch_size}, max length 200; kd fp16, kd bf16,"
                     f" sentence-transformers fp16 and bf16 (in-process, interleaved, 2 rounds), Pyserini CLI on "
                     f"{a.small} and {a.passages} passages (start-up corrected)")
        lines.append("  " + shlex.join(pyserini_cli(Path("CORPUS.jsonl"), Path("EMB_DIR"), a.model or "MODEL",
                                                   a.batch_size)))
    if "queries" in a.only:
        lines.append(f"queries: {a.queries} DL19+DL20 topics, one at a time: kd fp16, kd bf16, ST fp16, Pyserini "
                     "AutoQueryEncoder (fp32: it has no half-precision query path), p50/p95 ms")
    if "training" in a.only:
        lines.append(f"training: {a.train_steps} timed steps + 1 warm-up, batch 32, bf16: kd MarginMSETrainer vs "
                     "SentenceTransformerTrainer + MarginMSELoss, same batches in the same order")
    return lines


# -------------------------------------------------------------------------------------------------------- sections

def _sync(dev: str) -> None:
    if dev.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _dtype(p: str) -> Any:
    import torch

    return torch.float16 if p == "fp16" else torch.bfloat16


def bench_passages(a: argparse.Namespace, model: str, texts: list[str], tmp: Path, dev: str = "cuda",
                   precs: Sequence[str] = ("fp16", "bf16")) -> dict[str, Any]:
    """kd vs sentence-transformers in-process (interleaved, best of 2 rounds), then Pyserini's CLI."""
    import numpy as np

    from kd_pyserini.encoders import get_document_encoder

    from .common import st_encoder, vector_agreement

    bs = a.batch_size
    encs: dict[str, Callable[[list[str]], Any]] = {}
    for p in precs:
        e = get_document_encoder(model, device=dev.split(":")[0], precision=p, batch_size=bs)
        encs[f"kd {p}"] = e.encode
        st = st_encoder(model, 200).to(dev)
        st.to(_dtype(p))
        encs[f"st {p}"] = lambda t, st=st: st.encode(t, batch_size=bs, show_progress_bar=False,
                                                     convert_to_numpy=True)
    for fn in encs.values():  # warm-up
        fn(texts[:256])
    _sync(dev)
    secs: dict[str, list[float]] = {n: [] for n in encs}
    vecs: dict[str, Any] = {}
    names = list(encs)
    for rnd in range(2):
        for n in (names if rnd == 0 else names[::-1]):
            t0 = time.perf_counter()
            vecs[n] = encs[n](texts)
            _sync(dev)
            secs[n].append(time.perf_counter() - t0)
    rate = {n: len(texts) / min(t) for n, t in secs.items()}
    # Pyserini's CLI, start-up corrected
    small = write_corpus(texts[: a.small], tmp / "small.jsonl")
    full = write_corpus(texts, tmp / "full.jsonl")
    cli: dict[str, Any] = {}
    for name, corpus, n in (("small", small, a.small), ("full", full, len(texts))):
        cmd = pyserini_cli(corpus, tmp / f"emb-{name}", model, bs, "cuda:0" if dev.startswith("cuda") else dev)
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        cli[name] = {"seconds": time.perf_counter() - t0, "passages": n, "rc": r.returncode,
                     "stderr_tail": (r.stderr or r.stdout)[-600:] if r.returncode else ""}
        if r.returncode:
            raise RuntimeError(f"Pyserini's CLI failed (rc {r.returncode}): {shlex.join(cmd)}\n"
                               f"{cli[name]['stderr_tail']}")
    written = sorted(p.name for p in (tmp / "emb-full").glob("*"))
    cli["full"]["output_files"] = written
    if not written:
        raise RuntimeError(f"Pyserini's CLI wrote nothing to {tmp / 'emb-full'}")
    if cli["small"]["rc"] == 0 and cli["full"]["rc"] == 0:
        rate["pyserini cli"] = (len(texts) - a.small) / max(1e-9, cli["full"]["seconds"] - cli["small"]["seconds"])
        rate["pyserini cli (incl. start-up)"] = len(texts) / cli["full"]["seconds"]
    agree = {p: vector_agreement(np.asarray(vecs[f"kd {p}"], dtype=np.float32),
                                 np.asarray(vecs[f"st {p}"], dtype=np.float32)) for p in precs}
    py = rate.get("pyserini cli")
    rows = [{"metric": f"passages/s, kd {p}", "ours": rate[f"kd {p}"], "pyserini": py,
             "ratio": rate[f"kd {p}"] / py if py else None, "sentence-transformers": rate[f"st {p}"],
             "ratio_st": rate[f"kd {p}"] / rate[f"st {p}"]} for p in precs]
    return {"rows": rows, "rates": rate, "cli": cli, "agreement_kd_vs_st": agree, "passages": len(texts)}


def bench_queries(a: argparse.Namespace, model: str, queries: list[str], dev: str = "cuda",
                  precs: Sequence[str] = ("fp16", "bf16")) -> dict[str, Any]:
    """Single-query latency, query by query over all encoders in turn (order alternating)."""
    import numpy as np
    from pyserini.encode import AutoQueryEncoder

    from kd_pyserini.encoders import get_query_encoder

    from .common import st_encoder

    fns: dict[str, Callable[[str], Any]] = {}
    for p in precs:
        fns[f"kd {p}"] = get_query_encoder(model, device=dev.split(":")[0], precision=p).encode
    st_p = precs[0]
    st = st_encoder(model, 30).to(dev).to(_dtype(st_p))
    fns[f"st {st_p}"] = lambda q: st.encode(q, show_progress_bar=False)
    theirs = AutoQueryEncoder(model, device=dev, pooling="cls", l2_norm=False)
    fns["pyserini"] = lambda q: theirs.encode(q, max_length=30)
    names = list(fns)
    for q in queries[:10]:
        for n in names:
            fns[n](q)
    lat: dict[str, list[float]] = {n: [] for n in names}
    for i, q in enumerate(queries):
        for n in (names if i % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            np.asarray(fns[n](q))  # results come back to the host: the latency a searcher sees
            lat[n].append(time.perf_counter() - t0)
    p50 = {n: float(np.percentile(v, 50)) * 1e3 for n, v in lat.items()}
    p95 = {n: float(np.percentile(v, 95)) * 1e3 for n, v in lat.items()}
    rows = [{"metric": f"single-query p50, kd {p}", "ours": p50[f"kd {p}"], "pyserini": p50["pyserini"],
             "ratio": p50["pyserini"] / p50[f"kd {p}"], "sentence-transformers": p50[f"st {st_p}"],
             "ratio_st": p50[f"st {st_p}"] / p50[f"kd {p}"]} for p in precs]
    return {"rows": rows, "p50_ms": p50, "p95_ms": p95, "queries": len(queries)}


def bench_training(a: argparse.Namespace, model: str, s: Any, tmp: Path, dev: str = "cuda") -> dict[str, Any]:
    """kd's trainer then sentence-transformers' trainer, bf16, the same batches in the same order."""
    from .st_train import st_trainer
    from .train_steps import Triples, kd_trainer
    from .training import _triples

    data = Triples(_triples(s, 32 * (a.train_steps + 1)))
    kd = kd_trainer(s, model, data, "bf16", a.train_steps, str(tmp / "kd"), device=dev)
    st = st_trainer(model, list(data), kd["order"], "bf16", a.train_steps, lr=kd["lr"],
                    weight_decay=kd["weight_decay"], seed=kd["seed"], device=dev, out=str(tmp))
    rows = [{"metric": "Margin-MSE triples/s, batch 32, bf16", "ours": kd["triples_per_s"], "pyserini": None,
             "ratio": None, "sentence-transformers": st["triples_per_s"],
             "ratio_st": kd["triples_per_s"] / st["triples_per_s"]}]
    return {"rows": rows, "kd": {k: v for k, v in kd.items() if k != "order"}, "st": st}


# ------------------------------------------------------------------------------------------------------------ main

def format_rows(rows: list[dict[str, Any]]) -> str:
    """``metric | kd_pyserini | Pyserini | x | sentence-transformers | x``, fixed width."""
    def num(v: Any) -> str:
        return "-" if v is None else f"{v:,.2f}"

    def times(v: Any) -> str:
        return "-" if v is None else f"{v:.2f}x"

    out = [f"{'metric':<40} {'kd_pyserini':>12} {'Pyserini':>12} {'x':>7} {'sent-trans':>12} {'x':>7}"]
    for r in rows:
        out.append(f"{r['metric']:<40} {num(r['ours']):>12} {num(r['pyserini']):>12} {times(r['ratio']):>7} "
                   f"{num(r['sentence-transformers']):>12} {times(r['ratio_st']):>7}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    from .common import Settings, dl_queries, machine_info, sample_passages, tasb_model

    s = Settings.make(quick=False, data_dir=a.data_dir, cache_dir=a.cache_dir, model=a.model,
                      passages=a.passages, queries=a.queries)
    if a.dry_run:
        import kd_pyserini  # noqa: F401  (sets up the JVM and JAVA_HOME Pyserini needs, also for its CLI)

        missing = []
        for parts in (("msmarco-dl", "passages.dl19-dl20-pool.tsv.gz"), ("topics-and-qrels",),
                      ("kd-samples", "triples.train.small.head100.tsv")):
            if s.data_dir is None or not s.data_dir.joinpath(*parts).exists():
                missing.append("/".join(parts))
        for mod in ("pyserini.encode", "sentence_transformers", "kd_pyserini.encoders", "datasets", "accelerate"):
            try:
                __import__(mod)
            except ImportError as e:
                missing.append(f"module {mod} ({e})")
        print("\n".join(["tools/benchmarks/gpu.py --dry-run (nothing measured)", *plan(a),
                         f"data: {s.data_dir}", f"missing: {', '.join(missing) or 'nothing'}"]))
        return 1 if missing else 0
    if a.cpu_smoke:
        device, dev, precs = "cpu (smoke run: nothing measured)", "cpu", ("bf16",)
        s.quick = True  # tasb_model() then makes the tiny 2-layer model
    else:
        device, dev, precs = require_cuda(), "cuda", ("fp16", "bf16")
    import kd_pyserini  # noqa: F401  (JVM before pyserini; its JAVA_HOME also serves Pyserini's CLI subprocess)

    from .common import quiet_pyserini_logs, write_json

    t_start = time.perf_counter()
    out = a.out or RESULTS / f"gpu-{device.replace(' ', '-').lower()}.json"
    report: dict[str, Any] = {"machine": {**machine_info(), "gpu": device}, "plan": plan(a), "sections": {}}
    with quiet_pyserini_logs(), tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        model = str(tasb_model(s))
        for name in a.only:
            left = a.budget_s - (time.perf_counter() - t_start)
            if left < 60:
                report["sections"][name] = {"skipped": f"time budget: {left:.0f} s left of {a.budget_s:.0f}"}
                continue
            t0 = time.perf_counter()
            try:
                if name == "passages":
                    res = bench_passages(a, model, sample_passages(s, a.passages), tmp, dev, precs)
                elif name == "queries":
                    res = bench_queries(a, model, dl_queries(s, a.queries), dev, precs)
                else:
                    res = bench_training(a, model, s, tmp, dev)
            except Exception as e:  # noqa: BLE001  (one failing section must not lose the others)
                import traceback

                res = {"skipped": f"error: {type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            res["seconds"] = round(time.perf_counter() - t0, 1)
            report["sections"][name] = res
            write_json(out, report)
            print(f"== {name} ({res['seconds']:.0f} s)")
            print(format_rows(res["rows"]) if "rows" in res else f"   skipped: {res['skipped']}", flush=True)
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    write_json(out, report)
    print(f"\nJSON report: {out} ({device}, {report['seconds']:.0f} s)")
    return 1 if any("skipped" in v for v in report["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
