"""Run the kd_pyserini benchmark suite: one table on stdout, one JSON file.

    python tools/benchmarks/run_all.py                    # everything (about 30-40 minutes on 2 cores)
    python tools/benchmarks/run_all.py --quick            # smoke run on tiny inputs (a minute or two)
    python tools/benchmarks/run_all.py --only queries     # one benchmark (repeat --only for more)
    python tools/benchmarks/run_all.py --dense-size 200000 --hnsw-size 100000
    python tools/benchmarks/run_all.py --force-avx2 --only passages --only queries   # AVX2 kernels, in a child process

Each benchmark runs kd_pyserini and the Pyserini equivalent (and sentence-transformers where it has one) in this one
process, on the same inputs, interleaved; the ``ratio`` column is "how many times better kd_pyserini is" (>1 =
better), whatever the metric's direction. Before the benchmarks, the CPU's kind (AVX2 / AVX-512 / VNNI / AMX /
native bf16) is read and its matmul ceiling measured per precision (``tools/benchmarks/ceiling.py``); encoder figures
carry their fraction of that ceiling (``ceil`` column).
Needs the shared data (``$KD_PYSERINI_DATA``, else ``../shared/data``); a benchmark whose inputs or modules are
missing is reported as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``tools.benchmarks`` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "tools.benchmarks"

import kd_pyserini  # noqa: E402,F401  (starts the JVM before anything imports pyserini)

from .common import Result, Settings, Skip, load_avg, machine_info, quiet_pyserini_logs, write_json  # noqa: E402
from .report import format_machine, format_result, to_markdown  # noqa: E402,F401  (re-exported)


def _registry() -> dict[str, Callable[[Settings], Result]]:
    from . import dense, encoding, fidelity, rescore, sparse, train_gap, training

    return {
        "passages": encoding.bench_passages,
        "queries": encoding.bench_queries,
        "fidelity": fidelity.bench_fidelity,
        "dense": dense.bench_dense,
        "rescore": rescore.bench_rescore,
        "sparse": sparse.bench_sparse,
        "training": training.bench_training,
        "training_gap": train_gap.bench_training_gap,
    }


BENCHMARKS = ("passages", "queries", "fidelity", "dense", "rescore", "sparse", "training", "training_gap")


def run(names: Sequence[str] | None = None, settings: Settings | None = None,
        out: str | Path | None = None, echo: bool = True) -> dict:
    """Run benchmarks (all by default); returns the report (also written to ``out`` as JSON when given)."""
    s = settings or Settings.make()
    s.cache_dir.mkdir(parents=True, exist_ok=True)
    with quiet_pyserini_logs():  # restored on return: run() is also called in-process (tests/test_fast_paths.py)
        return _run(names, s, out, echo)


def _run(names: Sequence[str] | None, s: Settings, out: str | Path | None, echo: bool) -> dict:
    if s.threads:
        import faiss
        import torch

        torch.set_num_threads(s.threads)
        faiss.omp_set_num_threads(s.threads)
    reg = _registry()
    names = list(names or BENCHMARKS)
    unknown = [n for n in names if n not in reg]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    from .ceiling import best_ceilings, cpu_kind, measure_ceilings

    machine = machine_info()
    machine["cpu_kind"] = cpu_kind()
    try:  # which int8 weight range kd_pyserini's probe picks with these kernels (8-bit: VNNI/AMX; 7-bit: AVX2)
        from kd_pyserini.encoding.int8 import int8_full_range

        machine["cpu_kind"]["int8_weights"] = "8-bit" if int8_full_range() else "7-bit"
    except Exception as e:  # noqa: BLE001  (kd_pyserini.encoding may be mid-edit: record, go on)
        machine["cpu_kind"]["int8_weights"] = f"unknown ({type(e).__name__})"
    if echo:
        print(f"[bench] CPU kind: {machine['cpu_kind']['kind']}; measuring the GEMM ceilings (load "
              f"{load_avg():.2f}) ...", file=sys.stderr, flush=True)
    measured = [measure_ceilings(seconds=0.3 if s.quick else 2.0)]
    machine["ceilings"] = dict(measured[0])
    s.ceilings = dict(measured[0]["gflops"])
    if echo:
        print(format_machine(machine), flush=True)
    report = {"machine": machine, "quick": s.quick,
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(s).items()},
              "benchmarks": {}}
    for i, name in enumerate(names):
        if i and not s.quick:  # the load changes during a run: measure again, keep each precision's best
            measured.append(measure_ceilings(seconds=0.7))
            s.ceilings = best_ceilings(measured)
        if echo:
            print(f"[bench] {name} (load {load_avg():.2f}) ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            res = reg[name](s)
        except Skip as e:
            res = Result(name, skipped=str(e))
        except Exception as e:  # noqa: BLE001  (one failing benchmark must not lose the others)
            res = Result(name, skipped=f"error: {type(e).__name__}: {e}")
            res.extra["traceback"] = traceback.format_exc()
        res.seconds = time.perf_counter() - t0
        res.extra["load_after"] = round(load_avg(), 2)
        report["benchmarks"][name] = res.as_dict()
        if out is not None:
            write_json(Path(out), report)
        if echo:
            print(format_result(report["benchmarks"][name]), flush=True)
    report["machine"]["load_avg_end"] = [round(load_avg(), 2)]
    if not s.quick:
        measured.append(measure_ceilings(seconds=2.0))
    _final_ceilings(report, measured)
    if out is not None:
        write_json(Path(out), report)
    return report


def _final_ceilings(report: dict, measured: list[dict]) -> None:
    """The run's ceiling = each precision's best over every measurement (start, before each benchmark, end); every
    row's fraction of the ceiling is re-derived from its useful GFLOP/s against it."""
    from .ceiling import best_ceilings

    c = report["machine"]["ceilings"]
    c["gflops"] = best_ceilings(measured)
    c["measurements"] = [{"gflops": m["gflops"]} for m in measured]
    c["kernels"] = {p: {k: max((m["kernels"][p][k] for m in measured if isinstance(m["kernels"][p].get(k), float)),
                               default=measured[0]["kernels"][p][k]) for k in ks}
                    for p, ks in measured[0]["kernels"].items()}
    for b in report["benchmarks"].values():
        for r in b.get("rows", []):
            if r.get("gflops") is not None and c["gflops"].get(r.get("precision")):
                r["ceiling"] = r["gflops"] / c["gflops"][r["precision"]]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run on tiny inputs (tiny model, small samples)")
    p.add_argument("--only", action="append", choices=BENCHMARKS, help="run only this benchmark (repeatable)")
    p.add_argument("--out", default=None, help="JSON report path [bench-results.json, quick: bench-quick.json, "
                                               "in the cache dir]")
    p.add_argument("--cache-dir", type=Path, default=None, help="models, synthetic data and indexes are kept here "
                                                                "between runs [$TMPDIR/kd_pyserini_bench]")
    p.add_argument("--data-dir", type=Path, default=None, help="shared data [$KD_PYSERINI_DATA or ../shared/data]")
    p.add_argument("--model", default=None, help="TAS-B-architecture model dir [a random DistilBERT 6x768]")
    p.add_argument("--threads", type=int, default=None, help="torch and FAISS threads [one per physical core]")
    p.add_argument("--passages", type=int, default=None, help="passages sampled for encoding [512; quick 48]")
    p.add_argument("--queries", type=int, default=None, help="DL topics for query encoding [243; quick 24]")
    p.add_argument("--dense-size", type=int, default=None, help="synthetic collection size [1,000,000]")
    p.add_argument("--hnsw-size", type=int, default=None,
                   help="vectors in the HNSW index [min(dense size, 250,000): building it is slow on 2 cores]")
    p.add_argument("--train-steps", type=int, default=None, help="timed training steps per variant [3]")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--markdown", type=Path, default=None, help="also write the tables as Markdown to this file")
    p.add_argument("--force-avx2", action="store_true",
                   help="re-run this command in a child process whose torch kernels are capped at AVX2 "
                        "(ONEDNN_MAX_CPU_ISA, FBGEMM_ENABLE_INSTRUCTIONS, ATEN_CPU_CAPABILITY, "
                        "MKL_ENABLE_INSTRUCTIONS): an AVX2-like measurement on a newer CPU, labelled as such")
    p.add_argument("--merge-into", type=Path, default=None, metavar="JSON",
                   help="add this run's benchmarks to an earlier report of the same machine (each keeps its own "
                        "load and date in extra.run); the earlier report's other benchmarks are kept")
    p.add_argument("--render", type=Path, default=None, metavar="JSON",
                   help="do not run: print the tables of an earlier JSON report (with --markdown: write them)")
    a = p.parse_args(argv)
    if a.force_avx2:
        return _rerun_forced(list(sys.argv[1:] if argv is None else argv))
    if a.render is not None:
        import json

        report = json.loads(a.render.read_text())
        if a.markdown:
            a.markdown.write_text(to_markdown(report) + "\n")
        for b in report["benchmarks"].values():
            print(format_result(b))
        return 0
    s = Settings.make(quick=a.quick, data_dir=a.data_dir, cache_dir=a.cache_dir, model=a.model, threads=a.threads,
                      passages=a.passages, queries=a.queries, dense_size=a.dense_size, hnsw_size=a.hnsw_size,
                      train_steps=a.train_steps, seed=a.seed)
    forced = bool(os.environ.get("ONEDNN_MAX_CPU_ISA"))
    default = ("bench-quick" if a.quick else "bench-results") + ("-avx2-forced" if forced else "") + ".json"
    out = Path(a.out) if a.out else s.cache_dir / default
    report = run(a.only, s, out)
    if a.merge_into is not None:
        report = _merge(a.merge_into, report)
    if a.markdown:
        a.markdown.write_text(to_markdown(report) + "\n")
    failed = [n for n, b in report["benchmarks"].items() if (b.get("skipped") or "").startswith("error")]
    print(f"\nJSON report: {out}  (machine: {report['machine'].get('cpu_model')}, "
          f"{report['machine'].get('cpus')} CPUs, load {report['machine'].get('load_avg')} -> "
          f"{report['machine'].get('load_avg_end')})")
    return 1 if failed else 0


def _merge(path: Path, report: dict) -> dict:
    """``report``'s benchmarks added to (or replacing) those of the report at ``path``, which is rewritten."""
    import json

    base = json.loads(path.read_text())
    mine, theirs = report["machine"], base["machine"]
    if (mine.get("cpu_model"), (mine.get("cpu_kind") or {}).get("kind")) != \
            (theirs.get("cpu_model"), (theirs.get("cpu_kind") or {}).get("kind")):
        raise SystemExit(f"--merge-into {path}: another CPU kind; not merged")
    for name, b in report["benchmarks"].items():
        b.setdefault("extra", {})["run"] = {"separate_run": True, "date": mine.get("date"),
                                            "load_avg": mine.get("load_avg"), "load_avg_end": mine.get("load_avg_end"),
                                            "ceilings": (mine.get("ceilings") or {}).get("gflops")}
        base["benchmarks"][name] = b
    # one ceiling for the merged report: the best of both runs' measurements (and of the ceilings an interrupted
    # run used, which its rows imply: useful GFLOP/s / fraction)
    from .ceiling import best_ceilings

    bc, mc = base["machine"].get("ceilings"), mine.get("ceilings")
    if bc and mc:
        seen = list(bc.get("measurements") or [{"gflops": bc["gflops"]}]) + list(mc.get("measurements")
                                                                                 or [{"gflops": mc["gflops"]}])
        for b in base["benchmarks"].values():
            for r in b.get("rows", []):
                if r.get("gflops") and r.get("ceiling") and r.get("precision"):
                    seen.append({"gflops": {r["precision"]: round(r["gflops"] / r["ceiling"], 1)}})
        bc["measurements"] = seen
        bc["gflops"] = best_ceilings(seen)
        for b in base["benchmarks"].values():
            for r in b.get("rows", []):
                if r.get("gflops") is not None and bc["gflops"].get(r.get("precision")):
                    r["ceiling"] = r["gflops"] / bc["gflops"][r["precision"]]
    earlier = [{**m, "benchmarks": [n for n in m.get("benchmarks", []) if n not in report["benchmarks"]]}
               for m in base["machine"].get("merged_runs", [])]  # a benchmark measured again: only its last run
    base["machine"]["merged_runs"] = [m for m in earlier if m["benchmarks"]] + [
        {"benchmarks": list(report["benchmarks"]), "date": mine.get("date"), "load_avg": mine.get("load_avg"),
         "load_avg_end": mine.get("load_avg_end")}]
    write_json(path, base)
    return base


def _rerun_forced(argv: list[str]) -> int:
    """This command again in a child process with torch's CPU kernels capped at AVX2 (set before torch loads)."""
    from .ceiling import FORCE_AVX2_ENV

    env = {**os.environ, **FORCE_AVX2_ENV}
    args = [a for a in argv if a != "--force-avx2"]
    print(f"[bench] child process with {' '.join(f'{k}={v}' for k, v in FORCE_AVX2_ENV.items())}",
          file=sys.stderr, flush=True)
    return subprocess.call([sys.executable, str(Path(__file__).resolve()), *args], env=env)


if __name__ == "__main__":
    sys.exit(main())
