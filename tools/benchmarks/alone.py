"""Single-query latency of one encoder alone in a fresh process: the search box that serves one model.

In the main benchmark process ten encoders are loaded side by side, and each one's weights compete with the others'
for the CPU's caches; a server holds one. Here a child process loads only the variant asked for, answers the queries
one at a time (5 warm-up queries first) and prints one JSON line ``{"p50_ms": ..., "p95_ms": ..., "n": ...}``.

    python -m tools.benchmarks.alone VARIANT MODEL CACHE_DIR QUERIES_JSON [THREADS]

VARIANT: ``pyserini``, ``kd fp32|bf16|int8``, ``st fp32|bf16``, ``ort fp32|int8``, ``ov fp32|bf16``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _encoder(variant: str, model: str, cache: str, threads: int | None = None) -> Callable[[str], object]:
    kind, _, prec = variant.partition(" ")
    if kind == "pyserini":
        import kd_pyserini  # noqa: F401  (starts the JVM before pyserini does)
        from pyserini.encode import AutoQueryEncoder

        enc = AutoQueryEncoder(model, device="cpu", pooling="cls", l2_norm=False)
        return lambda q: enc.encode(q, max_length=30)
    if kind == "kd":
        from kd_pyserini.encoders import get_query_encoder

        return get_query_encoder(model, device="cpu", precision=prec).encode
    if kind == "st":
        from .common import st_encoder

        st = st_encoder(model, 30, prec)
        return lambda q: st.encode(q, show_progress_bar=False)
    if kind == "ort":
        from .runtimes import OrtEncoder

        return OrtEncoder(model, cache, 30, prec, threads=threads).encode_one
    if kind == "ov":
        from .runtimes import OvEncoder

        return OvEncoder(model, cache, 30, prec, mode="latency", threads=threads).encode_one
    raise SystemExit(f"unknown variant {variant!r}")


def main(argv: list[str]) -> int:
    variant, model, cache, queries_json, *rest = argv
    threads = int(rest[0]) if rest else None
    if threads:
        import torch

        torch.set_num_threads(threads)
    queries = json.loads(Path(queries_json).read_text())
    fn = _encoder(variant, model, cache, threads)
    for q in queries[:5]:
        fn(q)
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        lat.append(time.perf_counter() - t0)
    print(json.dumps({"p50_ms": float(np.percentile(lat, 50) * 1e3), "p95_ms": float(np.percentile(lat, 95) * 1e3),
                      "n": len(lat)}))
    return 0


def run_alone(variant: str, model: str, cache: str | Path, queries: list[str], timeout: float = 600,
              threads: int | None = None) -> dict:
    """:func:`main` in a child process (this interpreter, the repository on its path); ``{"error": ...}`` on failure."""
    import os
    import tempfile

    repo = Path(__file__).resolve().parents[2]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(queries, f)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    try:
        out = subprocess.run([sys.executable, "-m", "tools.benchmarks.alone", variant, str(model), str(cache), f.name,
                              *([str(threads)] if threads else [])],
                             capture_output=True, text=True, timeout=timeout, cwd=repo, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    finally:
        Path(f.name).unlink(missing_ok=True)
    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
