"""kd_pyserini.index: dense FAISS indexes in Pyserini's layout (resumable, sharded, compressed), BM25 indexes;
kd_pyserini.cli.index: the kd-index command.

Most tests use a deterministic bag-of-words "encoder" (hashed random projections: meaningful neighbours, exact
per-text vectors, countable calls) or the tiny random DistilBERT; the real-data checks are in test_search.py.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import subprocess
import sys
import zlib
from pathlib import Path

import kd_pyserini  # noqa: F401  (JVM first)
import numpy as np
import pytest
from conftest import sigint_default
from click.testing import CliRunner

from kd_pyserini.cards import EncoderCard
from kd_pyserini.cli.index import main
from kd_pyserini.corpus import DuplicateIdError
from kd_pyserini.errors import KdError
from kd_pyserini.index import (METADATA_FILENAME, IncompatibleIndexError, IndexBuildError, IndexParams,
                               build_bm25_index, build_dense_index, bytes_per_vector, check_index_compatible,
                               convert_dense_index, load_docids, merge_dense_indexes, parse_shard,
                               read_metadata, shard_range)
from kd_pyserini.trec_io import FormatError

WORDS = ("protein cell cancer gene virus immune therapy brain heart blood study patients drug trial risk mouse "
         "model signal kinase receptor tumor infection vaccine dose liver kidney lung muscle bone neuron").split()


class BowEncoder:
    """A deterministic stand-in for TextEncoder: hashed bag-of-words random projection, unit length (cosine).

    Records every text it encodes, so tests can tell which passages were (re-)encoded.
    """

    def __init__(self, dim: int = 48, name: str = "bow-test"):
        self.card = EncoderCard(name=name, model_id=f"test/{name}", pooling="mean", similarity="cosine",
                                query_max_length=64, passage_max_length=64, dimension=dim)
        self.dimension = dim
        self.encoded: list[str] = []
        self.calls = 0

    def _word(self, w: str) -> np.ndarray:
        return np.random.default_rng(zlib.crc32(w.encode())).standard_normal(self.dimension).astype(np.float32)

    def embed(self, texts, max_length, batch_size=None) -> np.ndarray:
        self.calls += 1
        self.encoded.extend(texts)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.split()[:max_length]:
                out[i] += self._word(w)
            out[i] /= max(np.linalg.norm(out[i]), 1e-9)
        return out


def _write_corpus(path: Path, n: int, seed: int = 0, fmt: str = "jsonl") -> list[tuple[str, str]]:
    rng = random.Random(seed)
    docs = [(f"d{i}", " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 30)))) for i in range(n)]
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        for i, (d, t) in enumerate(docs):
            if fmt == "jsonl":
                f.write(json.dumps({"id": d, "contents": t}) + "\n")
            elif fmt == "beir":
                f.write(json.dumps({"_id": d, "title": f"title {i}" if i % 2 else "", "text": t}) + "\n")
            else:
                f.write(f"{d}\t{t}\n")
    return docs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    _write_corpus(p, 300)
    return p


@pytest.fixture(scope="module")
def queries() -> dict[str, str]:
    rng = random.Random(7)
    return {f"q{i}": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) for i in range(40)}


@pytest.fixture(scope="module")
def tiny_encoder(tiny_distilbert_dir):
    from kd_pyserini.encoding import TextEncoder

    return TextEncoder(str(tiny_distilbert_dir), device="cpu")


def _leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(name))


# --------------------------------------------------------------------------------------------------- helpers

def test_parse_shard_and_ranges():
    assert parse_shard("0/4") == (0, 4) and parse_shard(None) is None
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    ranges = [shard_range(10, (i, 3)) for i in range(3)]
    assert ranges == [(0, 3), (3, 6), (6, 10)]
    assert shard_range(10, None) == (0, 10)


def test_bytes_per_vector_msmarco_table():
    n = 8_841_823
    gb = {t: bytes_per_vector(t, 768) * n / 1e9 for t in ("flat", "hnsw", "fp16", "sq8", "ivfpq")}
    assert round(gb["flat"], 1) == 27.2 and round(gb["fp16"], 1) == 13.6 and round(gb["sq8"], 1) == 6.8
    assert round(gb["ivfpq"], 2) == 0.92 and 29 < gb["hnsw"] < 30


# ------------------------------------------------------------------------------------- layout & Pyserini

def test_dense_index_layout_metadata_and_faiss_searcher(tmp_path, corpus, queries, tiny_distilbert_dir,
                                                        tiny_encoder):
    from kd_pyserini.encoders import KDQueryEncoder
    from kd_pyserini.search import search_dense
    from kd_pyserini.trec_io import rank
    from pyserini.search.faiss import FaissSearcher

    out = tmp_path / "tiny"
    build_dense_index(corpus, str(tiny_distilbert_dir), out, device="cpu", chunk_size=64, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["docid", "index", METADATA_FILENAME]
    assert _leftovers(tmp_path, "tiny") == ["tiny"]  # no .partial, no .tmp-
    assert load_docids(out) == [f"d{i}" for i in range(300)]
    meta = read_metadata(out)
    assert meta["encoder"]["name"] == tiny_distilbert_dir.name and meta["dimension"] == 32
    assert meta["max_length"] == {"query": 30, "passage": 200}
    assert meta["index"]["faiss_class"] == "IndexFlatIP" and meta["num_vectors"] == 300
    assert meta["corpus"]["num_docs"] == 300 and meta["corpus"]["path"] == str(corpus.resolve())
    assert {"kd_pyserini", "pyserini", "torch", "faiss", "transformers"} <= meta["versions"].keys()
    assert meta["encoding"]["passages_encoded_this_run"] == 300 and meta["encoding"]["passages_per_second"] > 0

    # Pyserini reads the folder unchanged and returns exactly our top 10.
    qe = KDQueryEncoder(encoder=tiny_encoder)
    ours = search_dense(queries, qe, out, hits=10)
    searcher = FaissSearcher(str(out), qe)
    theirs = searcher.batch_search(list(queries.values()), list(queries), k=10)
    for qid in queries:
        assert [(h.docid, float(h.score)) for h in theirs[qid]] == list(ours[qid].items())
        # One query at a time (Pyserini's FaissSearcher.search, no padding): the random tiny model scores every
        # passage 32.0 +- 1e-5, so the last float bits of the unpadded query vector can swap near-ties; any
        # difference must be such a near-tie (< 1e-4), nothing more.
        single = [(h.docid, float(h.score)) for h in searcher.search(queries[qid], k=10)]
        mine = rank(ours[qid])
        for (d1, s1), (d2, s2) in zip(single, mine):
            assert d1 == d2 or abs(s1 - s2) < 1e-4
            assert s1 == pytest.approx(s2, abs=1e-4)
    # the vectors are the encoder's, in corpus order
    texts = [json.loads(line)["contents"] for line in corpus.read_text().splitlines()]
    vec = searcher.index.reconstruct_n(0, 300)
    np.testing.assert_allclose(vec[:5], tiny_encoder.embed(texts[:5], 200), rtol=0, atol=1e-5)


def test_index_types_recall_against_flat(tmp_path, corpus, queries):
    import faiss
    from pyserini.search.faiss import FaissSearcher

    enc = BowEncoder()
    flat = build_dense_index(corpus, enc, tmp_path / "flat", chunk_size=100, progress=False)
    q = enc.embed(list(queries.values()), 64)
    ref = faiss.read_index(str(flat / "index")).search(q, 10)[1]
    recalls = {}
    for t in ("hnsw", "fp16", "sq8", "ivfpq"):
        out = convert_dense_index(flat, tmp_path / t, index=IndexParams(t), progress=False)
        meta = read_metadata(out)
        assert meta["index"]["index_type"] == t and meta["converted_from"]["path"] == str(flat.resolve())
        index = faiss.read_index(str(out / "index"))
        got = index.search(q, 10)[1]
        recalls[t] = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ref, got)])
        assert load_docids(out) == load_docids(flat)
    assert recalls["hnsw"] >= 0.99 and recalls["fp16"] >= 0.99 and recalls["sq8"] >= 0.95, recalls
    assert recalls["ivfpq"] >= 0.5, recalls

    # built directly as HNSW: efSearch is stored, Pyserini reads it
    h = build_dense_index(corpus, BowEncoder(), tmp_path / "h2", index=IndexParams("hnsw", ef_search=77),
                          progress=False)
    assert faiss.read_index(str(h / "index")).hnsw.efSearch == 77
    assert read_metadata(h)["index"]["faiss_class"] == "IndexHNSWFlat"
    assert FaissSearcher(str(h), _StubQE(enc)).num_docs == 300

    # compressed shards cannot be merged/converted (their vectors are lossy)
    with pytest.raises(IndexBuildError, match="compressed"):
        convert_dense_index(tmp_path / "sq8", tmp_path / "x", index="flat", progress=False)


class _StubQE:
    """Enough of a Pyserini QueryEncoder for FaissSearcher's constructor."""

    def __init__(self, enc):
        self.enc = enc

    def encode(self, q):
        return self.enc.embed([q], 64)[0]


# ----------------------------------------------------------------------------------------------- resume

def test_resume_after_crash_does_not_reencode(tmp_path, corpus):
    texts = [json.loads(line)["contents"] for line in corpus.read_text().splitlines()]
    full = build_dense_index(corpus, BowEncoder(), tmp_path / "full", chunk_size=64, progress=False)

    class Killed(Exception):
        pass

    def crash(k):
        if k == 1:
            raise Killed

    first = BowEncoder()
    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        build_dense_index(corpus, first, out, chunk_size=64, progress=False, on_chunk=crash)
    assert not out.exists()
    partial = Path(str(out) + ".partial")
    assert sorted(p.name for p in partial.glob("chunk-*")) == [
        "chunk-000000.ids", "chunk-000000.npy", "chunk-000001.ids", "chunk-000001.npy"]
    assert first.encoded == texts[:128]

    second = BowEncoder()
    build_dense_index(corpus, second, out, chunk_size=64, progress=False)
    assert second.encoded == texts[128:]  # chunks 0-1 were not encoded again
    assert read_metadata(out)["encoding"]["resumed_chunks"] == 2
    assert (out / "index").read_bytes() == (full / "index").read_bytes()
    assert (out / "docid").read_bytes() == (full / "docid").read_bytes()
    assert not partial.exists()


def test_resume_refuses_other_settings(tmp_path, corpus):
    out = tmp_path / "x"

    def crash(k):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_dense_index(corpus, BowEncoder(), out, chunk_size=64, progress=False, on_chunk=crash)
    with pytest.raises(IndexBuildError, match="chunk_size"):
        build_dense_index(corpus, BowEncoder(), out, chunk_size=32, progress=False)
    with pytest.raises(IndexBuildError, match="max_length"):
        build_dense_index(corpus, BowEncoder(), out, chunk_size=64, max_length=10, progress=False)
    enc = BowEncoder()
    build_dense_index(corpus, enc, out, chunk_size=32, restart=True, progress=False)  # --restart starts over
    assert len(enc.encoded) == 300


def test_killed_process_resumes_byte_identical(tmp_path, corpus, tiny_distilbert_dir):
    """A real kill (the process dies with no clean-up after chunk 1), then the same command again."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "kd_pyserini.cli.index", "dense", "--encoder", str(tiny_distilbert_dir),
           "--corpus", str(corpus), "-o", str(out), "--chunk-size", "64", "--device", "cpu", "--no-progress"]
    env = {**os.environ, "KD_PYSERINI_CRASH_AFTER_CHUNK": "1"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 137, r.stderr[-2000:]
    assert not out.exists()
    assert len(list(Path(str(out) + ".partial").glob("chunk-*.npy"))) == 2
    env.pop("KD_PYSERINI_CRASH_AFTER_CHUNK")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = read_metadata(out)
    assert meta["encoding"]["resumed_chunks"] == 2 and meta["encoding"]["passages_encoded_this_run"] == 300 - 128
    ref = build_dense_index(corpus, str(tiny_distilbert_dir), tmp_path / "ref", chunk_size=64, device="cpu",
                            progress=False)
    assert (out / "index").read_bytes() == (ref / "index").read_bytes()
    assert (out / "docid").read_bytes() == (ref / "docid").read_bytes()


# -------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kind", ["dense", "bm25"])
def test_malformed_line_leaves_nothing(tmp_path, kind):
    bad = tmp_path / "bad.jsonl"
    lines = [json.dumps({"id": f"d{i}", "contents": f"text {i}"}) for i in range(5)]
    lines[2] = '{"id": "d2", "contents": "unterminated'
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    with pytest.raises(FormatError, match=rf"{bad}:3: invalid JSON"):
        if kind == "dense":
            build_dense_index(bad, BowEncoder(), out, progress=False)
        else:
            build_bm25_index(bad, out, progress=False)
    assert _leftovers(tmp_path, "out") == []


@pytest.mark.parametrize("kind", ["dense", "bm25"])
def test_duplicate_ids_refused(tmp_path, kind):
    dup = tmp_path / "dup.tsv"
    dup.write_text("1\tfirst\n2\tsecond\n1\tagain\n")
    out = tmp_path / "out"
    with pytest.raises(DuplicateIdError, match=r"dup.tsv:3: duplicate id '1' \(first at .*dup.tsv:1\)"):
        if kind == "dense":
            build_dense_index(dup, BowEncoder(), out, progress=False)
        else:
            build_bm25_index(dup, out, progress=False)
    assert _leftovers(tmp_path, "out") == []


def test_cli_reports_file_and_line(tmp_path, tiny_distilbert_dir):
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\tok\nno tab here\n")
    r = CliRunner().invoke(main, ["dense", "--encoder", str(tiny_distilbert_dir), "--corpus", str(bad),
                                  "--output", str(tmp_path / "o")])
    assert r.exit_code == 1 and f"{bad}:2: no tab" in r.output
    assert _leftovers(tmp_path, "o") == []


def test_existing_output_refused_unless_overwrite(tmp_path, corpus):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep").write_text("x")
    with pytest.raises(IndexBuildError, match="already exists"):
        build_dense_index(corpus, BowEncoder(), out, progress=False)
    assert (out / "keep").exists()
    build_dense_index(corpus, BowEncoder(), out, overwrite=True, progress=False)
    assert not (out / "keep").exists() and (out / "index").is_file()
    assert _leftovers(tmp_path, "o") == ["o"]


# ------------------------------------------------------------------------------------------ shard/merge

def test_shards_merge_to_the_full_index(tmp_path, corpus):
    full = build_dense_index(corpus, BowEncoder(), tmp_path / "full", chunk_size=50, progress=False)
    shards = []
    for i in (2, 0, 1):  # any order
        enc = BowEncoder()
        s = build_dense_index(corpus, enc, tmp_path / f"s{i}", shard=f"{i}/3", chunk_size=50, progress=False)
        meta = read_metadata(s)
        assert meta["shard"] == {"index": i, "count": 3, "start": i * 100, "end": (i + 1) * 100}
        assert len(enc.encoded) == 100 and load_docids(s) == [f"d{j}" for j in range(i * 100, (i + 1) * 100)]
        shards.append(s)
    merged = merge_dense_indexes(shards, tmp_path / "merged", progress=False)
    assert (merged / "index").read_bytes() == (full / "index").read_bytes()
    assert (merged / "docid").read_bytes() == (full / "docid").read_bytes()
    assert read_metadata(merged)["shard"] is None and len(read_metadata(merged)["merged_from"]) == 3

    with pytest.raises(IndexBuildError, match=r"missing \[1\]"):
        merge_dense_indexes([shards[0], shards[1]], tmp_path / "m2", progress=False)
    with pytest.raises(IndexBuildError, match="not a shard"):
        merge_dense_indexes([full], tmp_path / "m3", progress=False)
    # the index type can be chosen at merge time, through the CLI too
    r = CliRunner().invoke(main, ["merge", *map(str, shards), "--output", str(tmp_path / "m16"), "--index-type",
                                  "fp16", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert read_metadata(tmp_path / "m16")["index"]["faiss_class"] == "IndexScalarQuantizer"
    other = build_dense_index(corpus, BowEncoder(name="bow-other"), tmp_path / "o1", shard="1/3", progress=False)
    with pytest.raises(IndexBuildError, match="encoder"):
        merge_dense_indexes([shards[1], other, shards[2]], tmp_path / "m4", progress=False)


# --------------------------------------------------------------------------------------------- mismatch

def test_encoder_mismatch_refused(tmp_path, corpus, queries, tiny_distilbert_dir):
    from kd_pyserini.cards import get_card
    from kd_pyserini.cli.search import main as search_main
    from kd_pyserini.search import search_dense

    out = build_dense_index(corpus, BowEncoder(), tmp_path / "bow", progress=False)
    assert check_index_compatible(out, BowEncoder().card)["dimension"] == 48
    with pytest.raises(IncompatibleIndexError, match="built with encoder 'bow-test'.*not 'all-minilm-l6-v2'"):
        check_index_compatible(out, get_card("all-minilm-l6-v2"))
    with pytest.raises(IncompatibleIndexError, match="48-dimensional.*32-dimensional"):
        check_index_compatible(out, BowEncoder(name="bow-test").card.replace(dimension=None), dimension=32)
    with pytest.raises(IncompatibleIndexError, match="bow-test"):
        search_dense(queries, str(tiny_distilbert_dir), out, hits=5, device="cpu")
    topics = tmp_path / "t.tsv"
    topics.write_text("".join(f"{k}\t{v}\n" for k, v in queries.items()))
    r = CliRunner().invoke(search_main, ["--encoder", str(tiny_distilbert_dir), "--index", str(out), "--topics",
                                         str(topics), "--output", str(tmp_path / "run.txt"), "--device", "cpu"])
    assert r.exit_code == 1
    msg = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(msg) == 1 and "was built with encoder 'bow-test'" in msg[0]
    assert not (tmp_path / "run.txt").exists()


# ------------------------------------------------------------------------------------------------- BM25

@pytest.mark.parametrize("fmt,name", [("jsonl", "c.jsonl"), ("beir", "corpus.jsonl.gz"), ("tsv", "c.tsv.gz")])
def test_bm25_index_formats(tmp_path, fmt, name):
    from kd_pyserini.index import raw_contents
    from pyserini.search.lucene import LuceneSearcher

    path = tmp_path / name
    docs = _write_corpus(path, 60, seed=3, fmt=fmt)
    out = build_bm25_index(path, tmp_path / "bm25", threads=2, progress=False)
    assert _leftovers(tmp_path, "bm25") == ["bm25"]
    meta = read_metadata(out)
    assert meta["corpus"]["format"] == fmt and meta["stats"]["documents"] == 60
    s = LuceneSearcher(str(out))
    assert s.num_docs == 60
    raw = json.loads(s.doc("d1").raw())
    expected = f"title 1 {docs[1][1]}" if fmt == "beir" else docs[1][1]
    assert raw == {"id": "d1", "contents": expected} and raw_contents(s.doc("d1").raw()) == expected
    hits = s.search(docs[5][1], k=3)
    assert hits[0].docid == "d5"
    # positions and document vectors are stored
    from pyserini.index.lucene import LuceneIndexReader

    r = LuceneIndexReader(str(out))
    assert r.get_document_vector("d5") and r.get_term_positions("d5")


def test_concurrent_writer_is_refused(tmp_path, corpus):
    import fcntl

    out = tmp_path / "locked"
    partial = Path(str(out) + ".partial")
    partial.mkdir()
    with open(partial / ".lock", "a") as f:  # another process holds the chunks
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(IndexBuildError, match="another kd-index process"):
            build_dense_index(corpus, BowEncoder(), out, progress=False)
    build_dense_index(corpus, BowEncoder(), out, progress=False)  # once released, it proceeds
    assert (out / "index").is_file() and not partial.exists()


def test_bm25_splits_collection_for_threads(tmp_path, monkeypatch):
    import kd_pyserini.index.bm25 as kidx
    from pyserini.search.lucene import LuceneSearcher

    monkeypatch.setattr(kidx, "DOCS_PER_FILE", 7)
    seen = {}
    real = kidx._anserini_index

    def spy(input_dir, index_dir, threads, extra=()):
        seen["files"] = sorted(p.name for p in input_dir.iterdir())
        return real(input_dir, index_dir, threads, extra)

    monkeypatch.setattr(kidx, "_anserini_index", spy)
    path = tmp_path / "c.jsonl"
    _write_corpus(path, 30)
    out = build_bm25_index(path, tmp_path / "bm", threads=2, progress=False)
    assert seen["files"] == [f"docs{i:04d}.jsonl" for i in range(5)]
    assert LuceneSearcher(str(out)).num_docs == 30


# ------------------------------------------------------------------------------------------ command line

def test_dense_cli_starts_no_java(tmp_path, tiny_distilbert_dir):
    """Dense indexing never starts the JVM: with a JVM option that makes any start fail, it still succeeds."""
    small = tmp_path / "small.jsonl"
    _write_corpus(small, 20)
    env = {**os.environ, "KD_PYSERINI_JVM_OPTIONS": "-XX:+NoSuchOption"}
    control = subprocess.run([sys.executable, "-c", "import kd_pyserini, jnius"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert control.returncode != 0  # the option does break a JVM start
    out = tmp_path / "nojava"
    r = subprocess.run([sys.executable, "-m", "kd_pyserini.cli.index", "dense", "--encoder", str(tiny_distilbert_dir),
                        "--corpus", str(small), "-o", str(out), "--device", "cpu", "--no-progress"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = read_metadata(out)
    assert meta["num_vectors"] == 20 and load_docids(out) == [f"d{i}" for i in range(20)]
    assert meta["versions"]["java"] is None


def test_dense_cli_vocabulary_and_old_max_length(tmp_path, tiny_distilbert_dir):
    help_text = CliRunner().invoke(main, ["dense", "--help"]).output
    for shown in ("--passage-max-length", "-o, --output", "--progress / --no-progress", "--batch-size",
                  "--device", "--precision"):
        assert shown in help_text, shown
    assert not re.search(r"(?<![\w-])--max-length", help_text)
    defaults = {p.name: p.default for p in main.commands["dense"].params}
    assert defaults["batch_size"] == 32 and defaults["progress"] is None  # ENCODE_BATCH_SIZE; on when a tty

    small = tmp_path / "small.jsonl"
    _write_corpus(small, 12)
    r = CliRunner().invoke(main, ["dense", "--encoder", str(tiny_distilbert_dir), "--corpus", str(small), "-o",
                                  str(tmp_path / "old"), "--max-length", "16", "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "--max-length is deprecated" in r.stderr and "--passage-max-length" in r.stderr
    assert read_metadata(tmp_path / "old")["max_length"]["passage"] == 16


def test_index_errors_are_kd_errors_and_one_cli_line(tmp_path, corpus):
    assert issubclass(IndexBuildError, KdError) and issubclass(IndexBuildError, RuntimeError)
    assert issubclass(IncompatibleIndexError, KdError) and issubclass(IncompatibleIndexError, ValueError)
    out = tmp_path / "taken"
    out.mkdir()
    r = CliRunner().invoke(main, ["bm25", "--corpus", str(corpus), "-o", str(out), "--no-progress"])
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert r.exit_code == 1 and len(errors) == 1
    assert "already exists; choose another --output or pass --overwrite" in errors[0]
    r = CliRunner().invoke(main, ["info", str(out)])
    assert r.exit_code == 1 and f"Error: {out} has no {METADATA_FILENAME} (not built by kd-index)" in r.output


def test_rooms_and_entry_points():
    from kd_pyserini.index import layout

    for name in ("METADATA_FILENAME", "IncompatibleIndexError", "check_index_compatible", "load_docids",
                 "read_metadata", "package_versions", "raw_contents"):
        assert getattr(layout, name) is getattr(__import__("kd_pyserini.index", fromlist=[name]), name)
    from kd_pyserini import index_meta  # the read side, below the Pyserini adapters that use it too
    from kd_pyserini.encoding.fingerprint import weights_fingerprint

    for name in ("METADATA_FILENAME", "IncompatibleIndexError", "check_index_compatible", "read_metadata"):
        assert getattr(index_meta, name) is getattr(layout, name)
    assert __import__("kd_pyserini.index", fromlist=["x"]).weights_fingerprint is weights_fingerprint
    assert not hasattr(__import__("kd_pyserini.index", fromlist=["x"]), "main")  # the library leaves cli alone
    for mod in ("kd_pyserini.cli.index", "kd_pyserini.index"):
        r = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "Usage:" in r.stdout and "dense" in r.stdout, r.stderr[-1000:]


# ================================================================================== reliability (issue fixes)

def _tiny_model(dest: Path, like: Path, seed: int, nan: bool = False) -> Path:
    """A tiny DistilBERT like ``like`` (same config and tokenizer) with its own random weights (or all NaN)."""
    import shutil

    import torch
    from transformers import DistilBertConfig, DistilBertModel

    dest.mkdir(parents=True, exist_ok=True)
    for f in like.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(f, dest / f.name)
    torch.manual_seed(seed)
    model = DistilBertModel(DistilBertConfig.from_pretrained(like)).eval()
    if nan:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
    model.save_pretrained(dest)
    return dest


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


# -------------------------------------------------------------------------------------- 1. non-finite vectors

def test_nan_model_refused_by_encoder_and_kd_index(tmp_path, tiny_distilbert_dir):
    from kd_pyserini.encoding import NonFiniteVectorError, TextEncoder

    nan_dir = _tiny_model(tmp_path / "diverged", tiny_distilbert_dir, seed=0, nan=True)
    enc = TextEncoder(str(nan_dir), device="cpu")
    with pytest.raises(NonFiniteVectorError, match=rf"encoder {nan_dir} produced non-finite vectors \(NaN/inf\) "
                                                   r"for 3 of 3 texts, first text #0: the weights are broken"):
        enc.embed(["a b", "c", "d e f"], 16)
    with pytest.raises(NonFiniteVectorError, match="non-finite"):
        enc.embed_one("a query", 16)

    small = tmp_path / "small.jsonl"
    _write_corpus(small, 40)
    out = tmp_path / "idx"
    r = CliRunner().invoke(main, ["dense", "--encoder", str(nan_dir), "--corpus", str(small), "-o", str(out),
                                  "--device", "cpu", "--no-progress"])
    assert r.exit_code == 1, r.output
    assert _error_lines(r.output) == [
        f"Error: encoder {nan_dir} produced non-finite vectors (NaN/inf) for 40 of 40 passages, first id d0: the "
        "weights are broken (a diverged checkpoint?)"]
    assert "Traceback" not in r.output and _leftovers(tmp_path, "idx") == []

    class HalfNan(BowEncoder):  # an encoder object that does not check: kd-index still does, naming the passage
        def embed(self, texts, max_length, batch_size=None):
            out = super().embed(texts, max_length, batch_size)
            out[texts.index(self.poison) if self.poison in texts else len(out):] = np.inf
            return out

    enc2 = HalfNan()
    enc2.poison = json.loads(small.read_text().splitlines()[25])["contents"]
    with pytest.raises(IndexBuildError, match=r"non-finite vectors \(NaN/inf\) for 15 of 40 passages, first id "
                                              r"d25"):
        build_dense_index(small, enc2, tmp_path / "idx2", progress=False)


# ------------------------------------------------------------------------------- 2. weights, not names

def test_same_name_other_weights_refused(tmp_path, corpus, tiny_distilbert_dir, caplog):
    import hashlib

    from kd_pyserini.cards import get_card
    from kd_pyserini.search import DenseSearcher

    a = _tiny_model(tmp_path / "run-a" / "checkpoint-30", tiny_distilbert_dir, seed=1)
    b = _tiny_model(tmp_path / "run-b" / "checkpoint-30", tiny_distilbert_dir, seed=2)
    out = build_dense_index(corpus, str(a), tmp_path / "idx-a", device="cpu", chunk_size=100, progress=False)
    meta = read_metadata(out)
    weights = (a / "model.safetensors").read_bytes()
    expected = hashlib.sha256(f"model.safetensors\0{len(weights)}\0".encode() + weights).hexdigest()
    assert meta["encoder_weights"]["sha256"] == expected and meta["encoder"]["name"] == "checkpoint-30"
    assert meta["index"]["file_bytes"] == (out / "index").stat().st_size

    # as kd-search calls it (DenseSearcher -> check_index_compatible(index, card, dimension)): refused, one line
    with pytest.raises(IncompatibleIndexError) as err:
        DenseSearcher(out, str(b), device="cpu")
    msg = str(err.value)
    assert "\n" not in msg and str(a) in msg and str(b) in msg and "other weights" in msg
    assert "--allow-encoder-mismatch" in msg
    card_b = get_card(str(b))
    with pytest.raises(IncompatibleIndexError, match="other weights"):
        check_index_compatible(out, card_b, 32)
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert check_index_compatible(out, card_b, 32, allow_encoder_mismatch=True)["dimension"] == 32
    assert any("other weights" in r.getMessage() and "searching anyway" in r.getMessage() for r in caplog.records)
    with pytest.raises(IncompatibleIndexError, match="32-dimensional.*16-dimensional"):  # never overridable
        check_index_compatible(out, card_b, 16, allow_encoder_mismatch=True)

    # the same weights pass under another name and at another precision (the files are hashed, not the vectors)
    import shutil

    copy = shutil.copytree(a, tmp_path / "renamed-copy")
    assert check_index_compatible(out, get_card(str(copy)), 32)["num_vectors"] == 300
    DenseSearcher(out, str(a), device="cpu", precision="bf16")

    # an index from before fingerprints: warned once, not refused
    old = shutil.copytree(out, tmp_path / "idx-old")
    m = read_metadata(old)
    del m["encoder_weights"]
    (old / METADATA_FILENAME).write_text(json.dumps(m))
    caplog.clear()
    with caplog.at_level("WARNING"):
        check_index_compatible(old, get_card(str(a)), 32)
        check_index_compatible(old, get_card(str(a)), 32)
    warned = [r for r in caplog.records if "records no fingerprint" in r.getMessage()]
    assert len(warned) == 1


def test_merge_refuses_shards_of_other_weights(tmp_path, corpus, tiny_distilbert_dir):
    model = tmp_path / "ckpt"
    _tiny_model(model, tiny_distilbert_dir, seed=1)
    s0 = build_dense_index(corpus, str(model), tmp_path / "s0", shard="0/2", device="cpu", progress=False)
    _tiny_model(model, tiny_distilbert_dir, seed=2)  # retrained in place: same path, same name, other weights
    s1 = build_dense_index(corpus, str(model), tmp_path / "s1", shard="1/2", device="cpu", progress=False)
    assert read_metadata(s0)["encoder"] == read_metadata(s1)["encoder"]
    with pytest.raises(IndexBuildError, match=r"s1 was encoded by 'ckpt'.*other weights; rebuild the shards"):
        merge_dense_indexes([s0, s1], tmp_path / "merged", progress=False)
    assert _leftovers(tmp_path, "merged") == []


# -------------------------------------------------------------------------------- 3. chunks and their record

def test_half_deleted_partial_is_not_reused_by_another_encoder(tmp_path, corpus, tiny_distilbert_dir, caplog):
    model = tmp_path / "checkpoint-30"
    _tiny_model(model, tiny_distilbert_dir, seed=1)
    out = tmp_path / "idx"

    def crash(k):
        if k == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_dense_index(corpus, str(model), out, chunk_size=64, device="cpu", progress=False, on_chunk=crash)
    partial = Path(str(out) + ".partial")
    (partial / "state.json").unlink()  # killed while OUT.partial was being deleted: four chunk files are left
    assert len(list(partial.glob("chunk-*"))) == 4

    _tiny_model(model, tiny_distilbert_dir, seed=2)  # another encoder under the same name and path
    caplog.clear()
    with caplog.at_level("WARNING"):
        build_dense_index(corpus, str(model), out, chunk_size=64, device="cpu", overwrite=True, progress=False)
    assert read_metadata(out)["encoding"]["resumed_chunks"] == 0
    assert read_metadata(out)["encoding"]["passages_encoded_this_run"] == 300
    assert any("discarded 2 chunks" in r.getMessage() for r in caplog.records)
    clean = build_dense_index(corpus, str(model), tmp_path / "clean", chunk_size=64, device="cpu", progress=False)
    assert (out / "index").read_bytes() == (clean / "index").read_bytes()


def test_corpus_edited_in_place_is_reencoded_not_mixed(tmp_path):
    path = tmp_path / "c.jsonl"
    _write_corpus(path, 300)
    out = tmp_path / "idx"

    def crash(k):
        if k == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_dense_index(path, BowEncoder(), out, chunk_size=64, progress=False, on_chunk=crash)
    st = path.stat()
    lines = path.read_text().splitlines()
    doc = json.loads(lines[5])
    words = doc["contents"].split()
    for pos, w in enumerate(words):  # swap one word for another of the same length: the file keeps its size
        alts = [x for x in WORDS if len(x) == len(w) and x != w]
        if alts:
            words[pos] = alts[0]
            break
    lines[5] = json.dumps({"id": doc["id"], "contents": " ".join(words)})
    assert lines[5] != path.read_text().splitlines()[5]
    path.write_text("\n".join(lines) + "\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)

    enc = BowEncoder()
    build_dense_index(path, enc, out, chunk_size=64, progress=False)
    texts = [json.loads(line)["contents"] for line in lines]
    assert enc.encoded == texts[:64] + texts[128:]  # chunk 0 (edited) again, chunk 1 reused
    assert read_metadata(out)["encoding"]["resumed_chunks"] == 1
    clean = build_dense_index(path, BowEncoder(), tmp_path / "clean", chunk_size=64, progress=False)
    assert (out / "index").read_bytes() == (clean / "index").read_bytes()


# ------------------------------------------------------------------------------------------------ 4. leftovers

def test_killed_final_write_leftover_is_removed_by_the_next_run(tmp_path, tiny_distilbert_dir):
    """A real process killed right before its finished OUT.tmp-xxxx is renamed: the next run removes it."""
    small = tmp_path / "small.jsonl"
    _write_corpus(small, 30)
    out = tmp_path / "idx"
    cmd = [sys.executable, "-m", "kd_pyserini.cli.index", "dense", "--encoder", str(tiny_distilbert_dir), "--corpus",
           str(small), "-o", str(out), "--device", "cpu", "--no-progress"]
    env = {**os.environ, "KD_PYSERINI_CRASH_BEFORE_INSTALL": "1"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 137, r.stderr[-2000:]
    tmps = list(tmp_path.glob("idx.tmp-*"))
    assert len(tmps) == 1 and (tmps[0] / "index").is_file() and not out.exists()
    env.pop("KD_PYSERINI_CRASH_BEFORE_INSTALL")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "removed idx.tmp-" in r.stderr and "interrupted kd-index run" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if "idx" in p.name) == ["idx"]  # no .tmp-, .partial, lock
    assert read_metadata(out)["encoding"]["resumed_chunks"] == 1  # the chunks were kept: nothing re-encoded


def test_killed_overwrite_leftovers_old_index_put_back(tmp_path, corpus):
    out = build_dense_index(corpus, BowEncoder(), tmp_path / "idx", progress=False)
    before = (out / "index").read_bytes()
    # killed between the two renames of --overwrite: the old index moved aside, the new one complete beside it,
    # and a hidden temporary file of an interrupted atomic write
    old = tmp_path / "idx.old-k1ll3d"
    old.mkdir()
    os.replace(out, old / "old")
    (tmp_path / "idx.tmp-n3wb1d").mkdir()
    (tmp_path / "idx.tmp-n3wb1d" / "index").write_bytes(b"x" * 1000)
    (tmp_path / ".idx.a1b2c3.tmp").write_text("partial")
    with pytest.raises(IndexBuildError, match="already exists"):  # without --overwrite: the old index is back
        build_dense_index(corpus, BowEncoder(), out, progress=False)
    assert (out / "index").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if "idx" in p.name) == ["idx"]

    # killed while the old index was being deleted (the new one in place): the old one is garbage
    trash = tmp_path / "idx.old-d3l3t1"
    trash.mkdir()
    (trash / "old").mkdir()
    (trash / "old" / "index").write_bytes(b"old")
    build_dense_index(corpus, BowEncoder(name="bow-2"), out, overwrite=True, progress=False)
    assert read_metadata(out)["encoder"]["name"] == "bow-2"
    assert sorted(p.name for p in tmp_path.iterdir() if "idx" in p.name) == ["idx"]


def test_leftovers_of_a_live_build_are_not_touched(tmp_path, corpus):
    import fcntl

    out = tmp_path / "idx"
    live = tmp_path / "idx.tmp-l1v3"
    live.mkdir()
    with open(tmp_path / ".idx.lock", "a") as f:  # a live kd-index process building idx holds this
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for build in (lambda: build_dense_index(corpus, BowEncoder(), out, progress=False),
                      lambda: build_bm25_index(corpus, out, progress=False),
                      lambda: merge_dense_indexes([tmp_path], out, progress=False)):
            with pytest.raises(IndexBuildError, match="another kd-index process is building"):
                build()
            assert live.is_dir()
    build_bm25_index(corpus, out, progress=False)  # released: the dead process's folder goes
    assert not live.exists() and not (tmp_path / ".idx.lock").exists()


def test_hidden_temp_files_in_the_chunk_store_are_removed(tmp_path, corpus):
    out = tmp_path / "idx"

    def crash(k):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_dense_index(corpus, BowEncoder(), out, chunk_size=64, progress=False, on_chunk=crash)
    partial = Path(str(out) + ".partial")
    (partial / ".chunk-000001.npy.x1y2.tmp").write_bytes(b"\0" * 100)  # a write cut short by a kill / full disk
    build_dense_index(corpus, BowEncoder(), out, chunk_size=64, keep_chunks=True, progress=False)
    assert list(partial.glob(".*.tmp")) == []


# ------------------------------------------------------------------------------------------------- 5. Ctrl-C

def test_ctrl_c_during_dense_exits_130_and_resumes(tmp_path, tiny_distilbert_dir):
    import signal
    import time

    big = tmp_path / "big.jsonl"
    _write_corpus(big, 4000)
    out = tmp_path / "idx"
    cmd = [sys.executable, "-m", "kd_pyserini.cli.index", "dense", "--encoder", str(tiny_distilbert_dir), "--corpus",
           str(big), "-o", str(out), "--chunk-size", "200", "--device", "cpu", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_default)
    first = Path(str(out) + ".partial") / "chunk-000000.npy"
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.exists() and proc.poll() is None, "no chunk was written while the process ran"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.glob("hs_err_pid*.log")) == [] and not out.exists()
    done = len(list(first.parent.glob("chunk-*.npy")))
    assert 1 <= done < 20

    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert read_metadata(out)["encoding"]["resumed_chunks"] == done
    ref = build_dense_index(big, str(tiny_distilbert_dir), tmp_path / "ref", chunk_size=200, device="cpu",
                            progress=False)
    assert (out / "index").read_bytes() == (ref / "index").read_bytes()
    assert (out / "docid").read_bytes() == (ref / "docid").read_bytes()


def test_ctrl_c_during_bm25_with_the_jvm_running_exits_130(tmp_path):
    import signal
    import threading
    import time

    big = tmp_path / "big.jsonl"
    _write_corpus(big, 30000)
    out = tmp_path / "bm25"
    proc = subprocess.Popen([sys.executable, "-m", "kd_pyserini.cli.index", "bm25", "--corpus", str(big), "-o",
                             str(out), "--no-progress"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    lines: list[str] = []
    started = threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if "Starting to index" in line:  # Anserini's IndexCollection is running in the JVM
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(240), "".join(lines)[-2000:]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=300)
    reader.join(10)
    err = "".join(lines)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err and "fatal error" not in err
    assert list(tmp_path.glob("hs_err_pid*.log")) == []
    assert not out.exists() and list(tmp_path.glob("bm25.tmp-*")) == []


# -------------------------------------------------------------------------------- 6. one-line write/read errors

def test_full_disk_while_writing_is_one_line_and_resumable(tmp_path, tiny_distilbert_dir, monkeypatch):
    import faiss

    small = tmp_path / "small.jsonl"
    _write_corpus(small, 50)
    out = tmp_path / "idx"
    args = ["dense", "--encoder", str(tiny_distilbert_dir), "--corpus", str(small), "-o", str(out), "--chunk-size",
            "20", "--device", "cpu", "--no-progress"]
    real_save = np.save
    calls = []

    def save_fills_disk(f, arr, **kw):  # what numpy raises when the disk fills during a write
        calls.append(1)
        if len(calls) == 2:
            raise OSError(f"{arr.nbytes} requested and {arr.nbytes // 2} written")
        return real_save(f, arr, **kw)

    monkeypatch.setattr(np, "save", save_fills_disk)
    r = CliRunner().invoke(main, args)
    partial = Path(str(out) + ".partial")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert _error_lines(r.output) == [
        f"Error: could not write {partial / 'chunk-000001.npy'}: No space left on device (2560 requested and 1280 "
        "written); free some space and run the same command again (finished chunks are kept)"]
    assert list(partial.glob(".*.tmp")) == [] and [p.name for p in partial.glob("*.npy")] == ["chunk-000000.npy"]
    monkeypatch.setattr(np, "save", real_save)

    def write_index_fills_disk(index, path):  # FAISS's error for a short write
        raise RuntimeError(f"Error in void faiss::FileIOWriter::operator() at impl/io.cpp:123: Error: 'ret == (n)' "
                           f"failed: write error in {path}: 16352 != 32000 (No space left on device)")

    monkeypatch.setattr(faiss, "write_index", write_index_fills_disk)
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "Traceback" not in r.output
    [line] = _error_lines(r.output)
    assert re.fullmatch(rf"Error: could not write {re.escape(str(tmp_path))}/idx\.tmp-\w+/index: No space left on "
                        r"device; free some space and run the same command again", line), line
    assert _leftovers(tmp_path, "idx") == ["idx.partial"]  # the chunks are kept, no half-written index
    monkeypatch.undo()
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert read_metadata(out)["encoding"]["resumed_chunks"] == 3


def test_truncated_faiss_index_is_one_line(tmp_path, corpus, queries):
    import shutil

    from kd_pyserini.index import CorruptIndexError, read_faiss_index
    from kd_pyserini.search import DenseSearcher
    from kd_pyserini.search.dense import QueryEncoding

    out = build_dense_index(corpus, BowEncoder(), tmp_path / "idx", progress=False)
    data = (out / "index").read_bytes()
    (out / "index").write_bytes(data[:len(data) // 2])
    msg = rf"{out / 'index'} is truncated or not a FAISS index \(\d+ bytes.*\); rebuild it"
    with pytest.raises(CorruptIndexError, match=msg):
        check_index_compatible(out, BowEncoder().card)
    with pytest.raises(CorruptIndexError, match=msg):  # the kd-search path
        DenseSearcher(out, QueryEncoding(BowEncoder(), 64))
    bare = tmp_path / "bare"  # no kd_pyserini.json (as Pyserini's own): caught when FAISS reads it
    bare.mkdir()
    shutil.copy(out / "index", bare / "index")
    shutil.copy(out / "docid", bare / "docid")
    with pytest.raises(CorruptIndexError, match=r"bare/index is truncated or not a FAISS index \(.*FAISS read "):
        read_faiss_index(bare)
    (bare / "index").write_bytes(b"not an index at all")
    with pytest.raises(CorruptIndexError, match=r"not a FAISS index \(19 bytes; FAISS: Index type"):
        read_faiss_index(bare)
    r = CliRunner().invoke(main, ["convert", str(out), "-o", str(tmp_path / "c"), "--index-type", "fp16"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert len(_error_lines(r.output)) == 1 and "is truncated or not a FAISS index" in r.output


def test_passage_max_length_above_the_position_limit_refused(tmp_path, tiny_distilbert_dir):
    small = tmp_path / "small.jsonl"
    _write_corpus(small, 10)
    r = CliRunner().invoke(main, ["dense", "--encoder", str(tiny_distilbert_dir), "--corpus", str(small), "-o",
                                  str(tmp_path / "idx"), "--passage-max-length", "600", "--device", "cpu"])
    assert r.exit_code == 1
    assert _error_lines(r.output) == [
        f"Error: --passage-max-length 600 is more than encoder {tiny_distilbert_dir} can take: its "
        "max_position_embeddings is 512 tokens; use --passage-max-length 512 or less"]
    assert _leftovers(tmp_path, "idx") == []
    r = CliRunner().invoke(main, ["dense", "--encoder", str(tiny_distilbert_dir), "--corpus", str(small), "-o",
                                  str(tmp_path / "idx"), "--passage-max-length", "512", "--device", "cpu"])
    assert r.exit_code == 0, r.output


# ------------------------------------------------------------------------------------------------- 7. umask

@pytest.mark.parametrize("mask,dir_mode,file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_index_files_follow_the_umask(tmp_path, corpus, mask, dir_mode, file_mode):
    old = os.umask(mask)
    try:
        dense = build_dense_index(corpus, BowEncoder(), tmp_path / "dense", progress=False)
        bm25 = build_bm25_index(corpus, tmp_path / "bm25", progress=False)
    finally:
        os.umask(old)
    for folder in (dense, bm25):
        assert folder.stat().st_mode & 0o777 == dir_mode, folder
        files = [p for p in folder.iterdir() if p.is_file()]
        assert files and {p.name: p.stat().st_mode & 0o777 for p in files} == {p.name: file_mode for p in files}


# ---------------------------------------------------------------------------------------- 8. empty passages

def test_empty_passages_are_warned_with_their_ids(tmp_path, tiny_distilbert_dir, caplog):
    path = tmp_path / "c.jsonl"
    docs = _write_corpus(path, 30)
    lines = path.read_text().splitlines()
    for i in (3, 8, 9, 14, 20, 27):
        lines[i] = json.dumps({"id": docs[i][0], "contents": "  "})
    path.write_text("\n".join(lines) + "\n")

    r = subprocess.run([sys.executable, "-m", "kd_pyserini.cli.index", "dense", "--encoder", str(tiny_distilbert_dir),
                        "--corpus", str(path), "-o", str(tmp_path / "dense"), "--device", "cpu", "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "6 passages have empty text (d3, d8, d9, d14, d20, ...)" in r.stderr
    assert read_metadata(tmp_path / "dense")["corpus"]["empty_docs"] == 6

    caplog.clear()
    with caplog.at_level("WARNING"):
        build_bm25_index(path, tmp_path / "bm25", progress=False)
    assert any("6 documents have empty contents (d3, d8, d9, d14, d20, ...)" in r.getMessage()
               for r in caplog.records)
    assert read_metadata(tmp_path / "bm25")["corpus"]["empty_docs"] == 6
