"""Peak memory of one encoder or training variant, measured in a fresh process.

In one long process, memory freed by an earlier run often stays resident (allocator arenas), so a later run's
"peak above start" looks smaller than it is. Each variant therefore runs here alone: load the model, note the
resident size, run the work, report the kernel's high-water mark above that.

    python -m tools.benchmarks.memprobe passages VARIANT MODEL TEXTS_JSON
    python -m tools.benchmarks.memprobe train VARIANT MODEL TRIPLES_JSON

prints one JSON line ``{"loaded_rss": bytes, "peak_rss": bytes, "peak_above_loaded": bytes}``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

PASSAGE_VARIANTS = ("pyserini", "kd fp32", "kd bf16", "kd int8")
TRAIN_VARIANTS = ("reference", "kd fp32", "kd bf16")


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _passages(variant: str, model: str, texts: list[str]) -> None:
    import numpy as np

    if variant == "pyserini":
        from pyserini.encode import AutoDocumentEncoder

        enc = AutoDocumentEncoder(model, device="cpu", pooling="cls", l2_norm=False)

        def work():
            return np.concatenate([enc.encode(texts[i:i + 32], max_length=200) for i in range(0, len(texts), 32)])
    else:
        from kd_pyserini.encoders import get_document_encoder

        enc = get_document_encoder(model, device="cpu", precision=variant.split()[-1])

        def work():
            return enc.encode(texts)
    _measure(work)


def _train(variant: str, model: str, triples: list[list[Any]], tmp: str) -> None:
    from kd_pyserini.train.batches import Triple

    data = [Triple(*t) for t in triples]
    if variant == "reference":
        from .train_steps import reference_step

        _measure(lambda: reference_step(model, data, len(data) // 32 - 1))
        return
    from .train_steps import Triples, kd_trainer
    from .common import Settings

    _measure(lambda: kd_trainer(Settings(), model, Triples(data), variant.split()[-1], len(data) // 32 - 1, tmp))


def _measure(work) -> None:
    import gc

    gc.collect()
    loaded = _status("VmRSS")
    _reset_peak()
    work()
    peak = _status("VmHWM")
    print(json.dumps({"loaded_rss": loaded, "peak_rss": peak, "peak_above_loaded": max(0, peak - loaded)}))


def probe(kind: str, variant: str, model: str, payload: Any, tmp: str | None = None, timeout: int = 1800) -> dict:
    """Run one variant in a fresh interpreter; returns its JSON (or ``{"error": ...}``)."""
    root = Path(__file__).resolve().parents[2]
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(payload, f)
        path = f.name
    try:
        r = subprocess.run([sys.executable, "-m", "tools.benchmarks.memprobe", kind, variant, model, path]
                           + ([tmp] if tmp else []), capture_output=True, text=True, timeout=timeout, cwd=root)
    finally:
        Path(path).unlink(missing_ok=True)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        return {"error": (r.stderr or r.stdout)[-500:]}
    return json.loads(lines[-1])


def main(argv: list[str]) -> int:
    kind, variant, model, path = argv[:4]
    import kd_pyserini  # noqa: F401  (JVM before pyserini)

    from .common import quiet_pyserini_logs

    payload = json.loads(Path(path).read_text())
    with quiet_pyserini_logs():
        if kind == "passages":
            _passages(variant, model, payload)
        elif kind == "train":
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                _train(variant, model, payload, argv[4] if len(argv) > 4 else tmp)
        else:
            raise SystemExit(f"unknown kind {kind!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
