"""kd_pyserini benchmark suite: each benchmark runs kd_pyserini and the Pyserini equivalent in one process, on the
same inputs, interleaved, checks that they agree, and reports the ratio.

Run everything with ``python tools/bench/run_all.py`` (``--quick`` for a smoke run, ``--only NAME`` for one
benchmark); results go to a table on stdout and a JSON file. Benchmarks:

* ``passages``  — passage encoding throughput and peak memory (TAS-B architecture, MS MARCO DL pool passages);
* ``queries``   — single-query latency p50/p95 and batched query throughput (DL19 + DL20 topics);
* ``fidelity``  — bf16 / int8 vectors against fp32 and SciFact nDCG@10 (all-MiniLM-L6-v2, real weights);
* ``dense``     — FAISS flat / HNSW / fp16 / IVF-PQ on a synthetic 1M x 768 collection vs Pyserini's FaissSearcher;
* ``sparse``    — BM25 and hybrid latency per query on SciFact vs Pyserini's LuceneSearcher / HybridSearcher;
* ``training``  — Margin-MSE training throughput (triples/s) at batch 32 with a TAS-B-sized student.

Peak memory is measured per variant in a fresh process (``memprobe.py``). The latest full report is kept in
``results/latest.json`` and summarised in PERFORMANCE.md (``run_all.py --render results/latest.json`` re-prints it).
"""
