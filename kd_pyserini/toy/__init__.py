"""A tiny toy corpus shipped with kd_pyserini (40 passages, 12 queries, graded qrels), written for the offline demo.

Paths: :data:`CORPUS` (BEIR jsonl), :data:`TOPICS` (``qid<TAB>query``), :data:`QRELS` (TREC qrels).
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus.jsonl"
TOPICS = HERE / "topics.tsv"
QRELS = HERE / "qrels.txt"
