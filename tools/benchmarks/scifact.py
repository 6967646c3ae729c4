"""SciFact inputs shared by the ``sparse`` and ``fidelity`` benchmarks: corpus (or a fixed subset in quick mode),
topics, qrels, and the BM25 / all-MiniLM-L6-v2 dense indexes, built once with ``kd_pyserini.index`` and kept in the
cache folder."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from .common import Settings, Skip, data_env, need_data


def corpus(s: Settings) -> Path:
    """The BEIR corpus file; with ``s.scifact_docs``, its first N documents plus every judged one, in a cache file."""
    full = need_data(s, "scifact", "corpus.jsonl.gz")
    if not s.scifact_docs:
        return full
    out = s.cache_dir / f"scifact-subset-{s.scifact_docs}-{s.scifact_queries or 'all'}.jsonl"
    if not out.is_file():
        wanted = set(topics(s))
        judged = {d for q, docs in qrels(s).items() if q in wanted for d in docs}
        keep = []
        with gzip.open(full, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                doc = json.loads(line)
                if i < s.scifact_docs or doc["_id"] in judged:
                    keep.append(line if line.endswith("\n") else line + "\n")
        tmp = out.with_suffix(".tmp")
        tmp.write_text("".join(keep), encoding="utf-8")
        tmp.replace(out)
    return out


def topics(s: Settings) -> dict[str, str]:
    need_data(s, "topics-and-qrels")
    with data_env(s):
        from kd_pyserini import get_topics

        t = get_topics("scifact")
    qids = sorted(t, key=lambda q: int(q) if q.isdigit() else q)
    if s.scifact_queries:
        qids = qids[: s.scifact_queries]
    return {q: t[q] for q in qids}


def qrels(s: Settings) -> dict[str, dict[str, int]]:
    need_data(s, "topics-and-qrels")
    with data_env(s):
        from kd_pyserini import get_qrels

        return get_qrels("scifact")


def _tag(s: Settings) -> str:
    return f"{s.scifact_docs}-{s.scifact_queries or 'all'}" if s.scifact_docs else "full"


def bm25_index(s: Settings) -> Path:
    try:
        from kd_pyserini.index import build_bm25_index
    except ImportError as e:
        raise Skip(f"kd_pyserini.index is not ready ({e})") from e
    out = s.cache_dir / f"scifact-bm25-{_tag(s)}"
    if not (out / "kd_pyserini.json").is_file() and not any(out.glob("segments_*")):
        build_bm25_index(corpus(s), out, threads=2, overwrite=True, progress=False)
    return out


def dense_index(s: Settings, encoder: str = "all-minilm-l6-v2") -> Path:
    """A flat index of the corpus encoded by kd_pyserini in fp32 (what every other figure is compared with)."""
    try:
        from kd_pyserini.index import build_dense_index
    except ImportError as e:
        raise Skip(f"kd_pyserini.index is not ready ({e})") from e
    name = Path(encoder).name if "/" in encoder else encoder
    out = s.cache_dir / f"scifact-dense-{name}-{_tag(s)}"
    if not (out / "index").is_file():
        build_dense_index(corpus(s), encoder, out, device="cpu", precision="fp32", overwrite=True, progress=False)
    return out
