"""kd_pyserini benchmark suite: each benchmark runs kd_pyserini and the Pyserini equivalent in one process, on the
same inputs, interleaved, checks that they agree, and reports the ratio.

Run everything with ``python tools/benchmarks/run_all.py`` (``--quick`` for a smoke run, ``--only NAME`` for one
benchmark); results go to a table on stdout and a JSON file. Benchmarks:

* ``passages``  — passage encoding throughput and peak memory (TAS-B architecture, MS MARCO DL pool passages);
* ``queries``   — single-query latency p50/p95 and batched query throughput (DL19 + DL20 topics);
* ``fidelity``  — bf16 / int8 vectors against fp32 and SciFact nDCG@10 (all-MiniLM-L6-v2, real weights);
* ``dense``     — FAISS flat / HNSW / fp16 / IVF-PQ on a synthetic 1M x 768 collection vs Pyserini's FaissSearcher;
* ``sparse``    — BM25 and hybrid latency per query on SciFact vs Pyserini's LuceneSearcher / HybridSearcher;
* ``training``  — Margin-MSE training throughput (triples/s) at batch 32 with a TAS-B-sized student, against a plain
  PyTorch step and sentence-transformers' own trainer (``MarginMSELoss``, same batches in the same order, loss
  curves side by side); the in-batch teacher's cost a step;
* ``training_gap`` — where the training gap comes from: padding, tokenisation, fused AdamW, bf16 autocast.

Every run first reads the CPU's kind and measures its GEMM ceiling per precision (``ceiling.py``); encoder and
training figures carry their fraction of it, and ratios to sentence-transformers where it has the same thing.
``run_all.py --force-avx2`` repeats a run in a child process with torch's kernels capped at AVX2.

Peak memory is measured per variant in a fresh process (``memprobe.py``). The reports are kept in ``results/``, one
per CPU kind; ``make_performance_md.py`` writes PERFORMANCE.md's per-CPU section from them (``run_all.py --render
FILE`` re-prints one). ``gpu.py`` is the CUDA benchmark (one command; ``--dry-run`` without a GPU).
"""
