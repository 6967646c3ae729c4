"""IVF-PQ first stage + exact re-scoring from vectors kept on disk (``kd-index dense --keep-vectors``,
``kd-search --rescore K``): equal to flat search when every candidate is re-scored, closer to it than IVF-PQ alone
otherwise, a one-line error without the vectors, and recorded in the sidecar."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from kd_pyserini.index.rescore import VECTORS_FILENAME, RescoreError, RescoringIndex, write_rescore_vectors


def _clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 40 centres (a corpus has topics; uniform noise would make IVF-PQ look worse than it is)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, d)).astype(np.float32)
    x = centres[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _ivfpq(x: np.ndarray, nlist: int = 16, m: int = 4, nprobe: int = 4):
    import faiss

    quantizer = faiss.IndexFlatIP(x.shape[1])
    index = faiss.IndexIVFPQ(quantizer, x.shape[1], nlist, m, 6, faiss.METRIC_INNER_PRODUCT)
    index.own_fields = True  # the index frees its quantizer (as kd-index builds it)
    quantizer.this.disown()
    index.train(x)
    index.add(x)
    index.nprobe = nprobe
    return index


def _blocks(x: np.ndarray, size: int = 700) -> list:
    return [SimpleNamespace(count=len(x[s:s + size]), load=lambda s=s: x[s:s + size]) for s in range(0, len(x), size)]


def _recall(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(r)) / len(r) for g, r in zip(got, ref)]))


def test_rescoring_every_candidate_equals_flat_search_and_fewer_recover_most(tmp_path):
    import faiss

    x, q = _clustered(2000, 32), _clustered(50, 32, seed=1)
    flat = faiss.IndexFlatIP(32)
    flat.add(x)
    ref_s, ref_i = flat.search(q, 10)
    desc = write_rescore_vectors(tmp_path, _blocks(x), 32, "fp32")
    assert desc == {"file": VECTORS_FILENAME, "dtype": "fp32", "count": 2000, "dimension": 32,
                    "file_bytes": (tmp_path / VECTORS_FILENAME).stat().st_size}
    pq = _ivfpq(x)
    # depth = every vector and every cell: the exact scores and the exact order of flat search
    pq.nprobe = 16
    s, i = RescoringIndex(pq, tmp_path, depth=2000).search(q, 10)
    assert np.array_equal(i, ref_i) and np.abs(s - ref_s).max() < 1e-5
    # a coarse PQ (4 codes of 6 bits for 32 dimensions) finds ~1/4 of the exact top 10 by its own scores; exact
    # scores over its top 200 (10 % of the corpus) recover most of them (measured: 0.27 -> 0.95)
    _, alone = pq.search(q, 10)
    _, rescored = RescoringIndex(pq, tmp_path, depth=200).search(q, 10)
    assert _recall(alone, ref_i) < 0.5 and _recall(rescored, ref_i) >= 0.9
    # fp16 vectors: the same order up to fp16 rounding of the scores
    fp16 = tmp_path / "half"
    fp16.mkdir()
    write_rescore_vectors(fp16, _blocks(x), 32, "fp16")
    assert np.load(fp16 / VECTORS_FILENAME, mmap_mode="r").dtype == np.float16
    pq.nprobe = 16
    s16, _ = RescoringIndex(pq, fp16, depth=2000).search(q, 10)
    assert np.abs(s16 - ref_s).max() < 2e-3


def test_rescoring_needs_the_vectors_and_matching_ones(tmp_path):
    x = _clustered(500, 16)
    pq = _ivfpq(x, nlist=4, m=2)
    with pytest.raises(RescoreError, match=r"has no vectors\.npy to re-score from; rebuild it with 'kd-index dense "
                                           r"\.\.\. --keep-vectors fp16'"):
        RescoringIndex(pq, tmp_path, depth=10)
    write_rescore_vectors(tmp_path, _blocks(x[:400]), 16)
    with pytest.raises(RescoreError, match="holds 400 x 16 vectors but the index 500 x 16"):
        RescoringIndex(pq, tmp_path, depth=10)
    with pytest.raises(RescoreError, match="--rescore must be >= 1"):
        RescoringIndex(pq, tmp_path, depth=0)


def test_kd_index_keep_vectors_and_kd_search_rescore(tmp_path, tiny_distilbert_dir):
    """Through the commands: an ivfpq index with its vectors on disk, searched with --rescore deeper than the
    corpus, ranks as the flat index does; the sidecar records the re-scoring depth; Pyserini's layout is kept."""
    from click.testing import CliRunner

    from kd_pyserini.cli.index import main as index_main
    from kd_pyserini.cli.search import main as search_main
    from kd_pyserini.index import read_metadata
    from kd_pyserini.trec_io import read_run

    words = "cell protein virus immune gene tissue blood brain heart lung".split()
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "contents": f"{words[i % 10]} {words[(i * 7) % 10]} {i}"})
                              + "\n" for i in range(400)))
    (tmp_path / "topics.tsv").write_text("1\tprotein cell\n2\tvirus immune\n3\tbrain blood\n")
    common = ["--encoder", str(tiny_distilbert_dir), "--corpus", str(corpus), "--device", "cpu", "--no-progress"]
    r = CliRunner().invoke(index_main, ["dense", *common, "-o", str(tmp_path / "flat")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(index_main, ["dense", *common, "-o", str(tmp_path / "pq"), "--index-type", "ivfpq",
                                        "--nlist", "8", "--nprobe", "2", "--keep-vectors", "fp32"])
    assert r.exit_code == 0, r.output
    meta = read_metadata(tmp_path / "pq")
    assert meta["index"]["keep_vectors"] == "fp32" and meta["index"]["vectors"]["count"] == 400
    assert (tmp_path / "pq" / "index").is_file() and (tmp_path / "pq" / "docid").is_file()

    def search(index: str, *extra: str) -> dict:
        out = tmp_path / f"run.{index}{'.'.join(extra)}.txt"
        res = CliRunner().invoke(search_main, ["--index", str(tmp_path / index), "--encoder", str(tiny_distilbert_dir),
                                               "--topics", str(tmp_path / "topics.tsv"), "--hits", "20", "--device",
                                               "cpu", "-o", str(out), "--no-eval", *extra])
        assert res.exit_code == 0, res.output
        return {"run": read_run(out), "side": json.loads(out.with_name(out.name + ".json").read_text())}

    flat, rescored = search("flat"), search("pq", "--nprobe", "8", "--rescore", "400")
    for qid, docs in flat["run"].items():
        ref = sorted(docs.values(), reverse=True)[:10]
        got = sorted(rescored["run"][qid].values(), reverse=True)[:10]
        # fp32 vectors: flat's top 10 scores (ties among near-duplicate passages may swap their docids)
        assert np.allclose(got, ref, rtol=1e-5, atol=1e-4), qid
        assert all(abs(rescored["run"][qid][d] - docs[d]) < 1e-4 * max(1.0, abs(ref[0]))
                   for d in rescored["run"][qid] if d in docs)
    assert rescored["side"]["params"]["rescore"] == 400 and flat["side"]["params"]["rescore"] is None
    res = CliRunner().invoke(search_main, ["--index", str(tmp_path / "flat"), "--encoder", str(tiny_distilbert_dir),
                                           "--topics", str(tmp_path / "topics.tsv"), "--device", "cpu", "-o",
                                           str(tmp_path / "x.txt"), "--rescore", "50", "--no-eval"])
    assert res.exit_code != 0 and "has no vectors.npy to re-score from" in res.output


def test_rescore_needs_a_dense_stage():
    from kd_pyserini.search.spec import SpecError, spec_from_options

    with pytest.raises(SpecError, match="--rescore re-scores a dense index's candidates: use it with a dense or hybrid "
                                        "first stage"):
        spec_from_options({"mode": "bm25", "index": "some-lucene-dir", "topics": "t.tsv", "output": "o.txt",
                           "rescore": 100})


def test_search_lists_deduplicate_docids_unless_known_unique():
    """A docid stored twice (two rows) counts once; with unique ids (DenseSearcher checks once at load) the fast path
    gives the same lists."""
    import faiss

    from kd_pyserini.search.dense import _search_lists, faiss_search

    x = _clustered(200, 8)
    index = faiss.IndexFlatIP(8)
    index.add(x)
    q = _clustered(5, 8, seed=3)
    ids = [f"d{i}" for i in range(200)]
    assert _search_lists(index, ids, q, 20) == _search_lists(index, ids, q, 20, unique_ids=True)
    dup = ids[:]
    dup[1] = "d0"  # rows 0 and 1 share a docid
    lists = _search_lists(index, dup, q, 200)
    assert all(len(hits) == 199 and len({d for d, _ in hits}) == 199 for hits in lists)
    assert faiss_search(index, ids, ["a", "b"], q[:2], 3, unique_ids=True) == \
        faiss_search(index, ids, ["a", "b"], q[:2], 3)
