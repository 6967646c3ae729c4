"""Run the kd_pyserini benchmark suite: one table on stdout, one JSON file.

    python tools/bench/run_all.py                    # everything (about 30-40 minutes on 2 cores)
    python tools/bench/run_all.py --quick            # smoke run on tiny inputs (a minute or two)
    python tools/bench/run_all.py --only queries     # one benchmark (repeat --only for more)
    python tools/bench/run_all.py --dense-size 200000 --hnsw-size 100000

Each benchmark runs kd_pyserini and the Pyserini equivalent in this one process, on the same inputs, interleaved;
the ``ratio`` column is "how many times better kd_pyserini is" (>1 = better), whatever the metric's direction.
Needs the shared data (``$KD_PYSERINI_DATA``, else ``../shared/data``); a benchmark whose inputs or modules are
missing is reported as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``tools.bench`` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "tools.bench"

import kd_pyserini  # noqa: E402,F401  (starts the JVM before anything imports pyserini)

from .common import Result, Settings, Skip, load_avg, machine_info, quiet_pyserini_logs, write_json  # noqa: E402


def _registry() -> dict[str, Callable[[Settings], Result]]:
    from . import dense, encoding, fidelity, sparse, training

    return {
        "passages": encoding.bench_passages,
        "queries": encoding.bench_queries,
        "fidelity": fidelity.bench_fidelity,
        "dense": dense.bench_dense,
        "sparse": sparse.bench_sparse,
        "training": training.bench_training,
    }


BENCHMARKS = ("passages", "queries", "fidelity", "dense", "sparse", "training")


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
    report = {"machine": machine_info(), "quick": s.quick,
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(s).items()},
              "benchmarks": {}}
    for name in names:
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
    if out is not None:
        write_json(Path(out), report)
    return report


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    if 0.01 <= abs(x) < 1:
        return f"{x:.{max(digits, 4)}f}"
    return f"{x:.{digits}f}" if abs(x) >= 0.01 or x == 0 else f"{x:.2e}"


def format_result(b: dict) -> str:
    """A benchmark's rows as a fixed-width table (metric | kd_pyserini | Pyserini | ratio | unit)."""
    lines = [f"== {b['name']} ({b['seconds']:.0f} s)"]
    if b.get("skipped"):
        lines.append(f"   skipped: {b['skipped']}")
        return "\n".join(lines)
    w = max([len(r["metric"]) for r in b["rows"]] + [10])
    lines.append(f"   {'metric':<{w}}  {'kd_pyserini':>12}  {'Pyserini':>12}  {'ratio':>7}  unit")
    for r in b["rows"]:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        lines.append(f"   {r['metric']:<{w}}  {_fmt(r['ours']):>12}  {_fmt(r['pyserini']):>12}  {ratio:>7}  "
                     f"{r['unit']}{('  (' + r['note'] + ')') if r.get('note') else ''}")
    for k, v in b.get("agreement", {}).items():
        if isinstance(v, dict):
            v = ", ".join(f"{kk} {_fmt(vv, 6) if isinstance(vv, float) else vv}" for kk, vv in v.items())
        lines.append(f"   agreement {k}: {v}")
    for n in b.get("notes", []):
        lines.append(f"   note: {n}")
    return "\n".join(lines)


def to_markdown(report: dict) -> str:
    """The report as Markdown tables (what PERFORMANCE.md pastes), one per benchmark."""
    m = report["machine"]
    out = [f"Machine: {m.get('cpu_model')}, {m.get('cpus')} CPUs ({', '.join(m.get('cpu_flags', []))}), "
           f"{m.get('mem_gib')} GiB; torch {m.get('torch')} ({m.get('torch_threads')} threads), faiss "
           f"{m.get('faiss')}, pyserini {m.get('pyserini')}; {m.get('date')}; load average at start "
           f"{m.get('load_avg')}, at end {m.get('load_avg_end')}.", ""]
    for b in report["benchmarks"].values():
        out.append(f"#### {b['name']} ({b['seconds']:.0f} s)")
        out.append("")
        if b.get("skipped"):
            out += [f"Skipped: {b['skipped']}", ""]
            continue
        out.append("| metric | kd_pyserini | Pyserini | ratio | unit |")
        out.append("|---|---:|---:|---:|---|")
        for r in b["rows"]:
            ratio = f"**{r['ratio']:.2f}x**" if r["ratio"] is not None else "-"
            unit = r["unit"] + (f" ({r['note']})" if r.get("note") else "")
            out.append(f"| {r['metric']} | {_fmt(r['ours'], 3)} | {_fmt(r['pyserini'], 3)} | {ratio} | {unit} |")
        out.append("")
        for k, v in b.get("agreement", {}).items():
            if isinstance(v, dict):
                v = ", ".join(f"{kk} {_fmt(vv, 5) if isinstance(vv, float) else vv}" for kk, vv in v.items())
            elif isinstance(v, float):
                v = _fmt(v, 4)
            out.append(f"- agreement, {k}: {v}")
        for n in b.get("notes", []):
            out.append(f"- {n}")
        out.append("")
    return "\n".join(out)


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
    p.add_argument("--train-steps", type=int, default=None, help="timed training steps per variant [2]")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--markdown", type=Path, default=None, help="also write the tables as Markdown to this file")
    p.add_argument("--render", type=Path, default=None, metavar="JSON",
                   help="do not run: print the tables of an earlier JSON report (with --markdown: write them)")
    a = p.parse_args(argv)
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
    out = Path(a.out) if a.out else s.cache_dir / ("bench-quick.json" if a.quick else "bench-results.json")
    report = run(a.only, s, out)
    if a.markdown:
        a.markdown.write_text(to_markdown(report) + "\n")
    failed = [n for n, b in report["benchmarks"].items() if (b.get("skipped") or "").startswith("error")]
    print(f"\nJSON report: {out}  (machine: {report['machine'].get('cpu_model')}, "
          f"{report['machine'].get('cpus')} CPUs, load {report['machine']['load_avg']} -> "
          f"{report['machine']['load_avg_end']})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
