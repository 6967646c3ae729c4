"""kd_pyserini.pyserini_compat on whichever Pyserini line is installed (1.6 on Python 3.11, 2.x on 3.12+): the same
file runs in both CI legs.

"Offline" is made certain, network or not: ``https_proxy`` points at a closed loopback port, so every HTTPS request
(Pyserini 2.x's GitHub metadata) fails at once, and ``HF_HUB_OFFLINE=1``; ``PYSERINI_CACHE`` is an empty folder, so
topic and qrels names can only come from ``$KD_PYSERINI_DATA``.
"""

from __future__ import annotations

import gzip
import inspect
import io
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kd_pyserini import pyserini_compat as pc
from kd_pyserini.pyserini_compat import metadata

MINILM = "all-minilm-l6-v2"


def _closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: connections are refused at once
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _offline_env(tmp_path: Path, data_dir: Path | None = None) -> dict[str, str]:
    proxy = f"http://127.0.0.1:{_closed_port()}"
    env = {**os.environ, "https_proxy": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy, "HTTP_PROXY": proxy,
           "no_proxy": "", "NO_PROXY": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYSERINI_CACHE": str(tmp_path / "empty-pyserini-cache")}
    if data_dir is not None:
        env["KD_PYSERINI_DATA"] = str(data_dir)
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=str(cwd))


def _python_warnings(stderr: str) -> list[str]:
    """The Python warning lines (``file:line: SomethingWarning: ...``) in a process's stderr."""
    return [line for line in stderr.splitlines() if re.search(r":\d+: \w*Warning: ", line)]


# --- the compat functions' answers on the installed line --------------------------------------------------------

def test_version_and_line_specific_answers():
    from importlib.metadata import version

    installed = version("pyserini")
    assert pc.pyserini_version() == tuple(int(x) for x in installed.split(".")[:2])
    two = pc.is_pyserini2()
    assert two == (pc.pyserini_version()[0] >= 2)
    # The supported pairs: Python 3.11 + Pyserini 1.6, Python >= 3.12 + Pyserini >= 2.4.
    assert (sys.version_info >= (3, 12)) == two
    assert pc.pyserini_version() >= ((2, 4) if two else (1, 6))
    assert pc.openai_key_required_at_import() is (not two)
    opts = pc.jvm_options(has_vector_module=False)
    assert "--add-modules=jdk.incubator.vector" not in opts
    assert "--add-modules=jdk.incubator.vector" in pc.jvm_options(has_vector_module=True)
    assert ("--enable-native-access=ALL-UNNAMED" in opts) is two
    assert pc.pyserini_dir() is not None and (pc.pyserini_dir() / "__init__.py").is_file()


def test_query_encoder_keyword_is_the_installed_one():
    from pyserini.encode import QueryEncoder

    params = inspect.signature(QueryEncoder.__init__).parameters
    assert pc.encoded_queries_keyword() in params
    assert pc.encoded_queries_keyword() == ("encoded_queries_dir" if pc.is_pyserini2() else "encoded_query_dir")
    kwargs = {"encoded_queries_dir": "/a", "device": "cpu"}
    assert pc.pop_encoded_queries_dir(kwargs) == "/a" and kwargs == {"device": "cpu"}
    kwargs = {"encoded_query_dir": "/b"}
    assert pc.pop_encoded_queries_dir(kwargs, "/explicit") == "/explicit" and kwargs == {}


def test_encoder_class_maps_are_pyserinis_own():
    import pyserini.encode as penc

    qmap, dmap = pc.encoder_class_maps()
    assert qmap is penc.query_encoder_class_map and dmap is penc.document_encoder_class_map
    assert {"ance", "dpr", "tct_colbert"} <= set(qmap)


def test_jvm_started_with_the_lines_options():
    import kd_pyserini
    from jnius import autoclass

    rt = kd_pyserini.JAVA
    args = list(autoclass("java.lang.management.ManagementFactory").getRuntimeMXBean().getInputArguments())
    for opt in pc.jvm_options(rt.has_vector_module):
        assert opt in args
    assert "-Xrs" in args
    # Only Pyserini 1.6 needs an OpenAI key at import; kd sets a placeholder only there (and only when unset).
    from kd_pyserini.jvm import OPENAI_PLACEHOLDER

    if not pc.openai_key_required_at_import():
        assert os.environ.get("OPENAI_API_KEY") != OPENAI_PLACEHOLDER


def test_cache_home_matches_pyserinis(tmp_path, monkeypatch):
    from pyserini.util import get_cache_home

    from kd_pyserini.resources import pyserini_cache

    monkeypatch.delenv("PYSERINI_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert pc.pyserini_cache_home() == Path(get_cache_home()) == pyserini_cache()
    (tmp_path / ".cache").mkdir()  # 2.x then uses ./.cache/pyserini; 1.6 ignores it
    assert pc.pyserini_cache_home() == Path(get_cache_home()) == pyserini_cache()
    monkeypatch.setenv("PYSERINI_CACHE", str(tmp_path / "custom"))
    assert pc.pyserini_cache_home() == Path(get_cache_home()) == tmp_path / "custom"


def test_resources_reads_a_topics_file_from_the_2x_cache_folders(tmp_path, monkeypatch):
    from kd_pyserini.resources import topics_path

    monkeypatch.setenv("KD_PYSERINI_DATA", str(tmp_path / "nodata"))
    monkeypatch.setenv("PYSERINI_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "topics").mkdir(parents=True)
    (tmp_path / "cache" / "topics" / "topics.dl19-passage.txt").write_text("1\tq\n")
    assert topics_path("dl19-passage") == tmp_path / "cache" / "topics" / "topics.dl19-passage.txt"


# --- encoders on either line -------------------------------------------------------------------------------------

def test_kd_query_encoder_with_pre_encoded_queries_under_either_keyword(tmp_path):
    import pandas as pd
    from pyserini.encode import QueryEncoder

    from kd_pyserini.encoders import KDQueryEncoder

    vec = np.arange(4, dtype=np.float32)
    pd.DataFrame({"text": ["what is a flea"], "embedding": [vec]}).to_pickle(tmp_path / "embedding.pkl")
    for kwargs in ({"encoded_query_dir": str(tmp_path)}, {"encoded_queries_dir": str(tmp_path)}):
        enc = KDQueryEncoder(**kwargs)
        assert isinstance(enc, QueryEncoder) and pc.has_encoded_queries(enc) and not enc.has_model
        np.testing.assert_array_equal(enc.encode("what is a flea"), vec)
    if pc.is_pyserini2():
        enc = KDQueryEncoder.load_encoded_queries(str(tmp_path), verbose=False)  # 2.x: cls(encoded_queries_dir=)
        np.testing.assert_array_equal(enc.encode("what is a flea"), vec)
    with pytest.raises(ValueError, match="needs an encoder"):
        KDQueryEncoder()


# --- offline metadata, online behaviour kept ------------------------------------------------------------------------

def test_metadata_opener_online_saves_a_copy_and_offline_serves_it(tmp_path, monkeypatch):
    import threading

    monkeypatch.setenv("PYSERINI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(metadata, "_OFFLINE", threading.Event())
    monkeypatch.setattr(metadata, "_WARNED", threading.Event())
    monkeypatch.setattr(metadata, "_FAILURES", [])
    url = "https://raw.githubusercontent.com/castorini/eval/abc/topics.json"
    calls = []

    def online(u, *a, **k):
        calls.append((u, k.get("timeout")))
        return io.BytesIO(b'{"x": 1}')

    assert metadata.MetadataOpener(online, lambda u: None)(url).read() == b'{"x": 1}'
    assert calls == [(url, 30.0)] and metadata.offline_report() == []
    saved = tmp_path / "cache" / "metadata" / "raw.githubusercontent.com" / "castorini" / "eval" / "abc" / "topics.json"
    assert saved.read_bytes() == b'{"x": 1}'

    def offline(u, *a, **k):
        import urllib.error

        raise urllib.error.URLError("no network")

    with pytest.warns(pc.PyseriniOfflineWarning, match="Unavailable offline"):
        assert metadata.MetadataOpener(offline, lambda u: None)(url).read() == b'{"x": 1}'
    assert metadata.offline_report() == [(url, f"saved copy {saved}")]
    # later requests skip the network and never warn again; other URLs pass through untouched
    other = "https://raw.githubusercontent.com/castorini/eval/abc/qrels.json"
    opener = metadata.MetadataOpener(online, lambda u: (b"{}", "built"))
    assert opener(other).read() == b"{}" and len(calls) == 1
    assert opener("https://example.org/x").read() == b'{"x": 1}' and len(calls) == 2


def test_offline_import_of_pyserini_through_kd_pyserini(tmp_path, data_dir):
    code = ("import kd_pyserini\nimport pyserini.encode, pyserini.search.faiss, pyserini.util\n"
            "from pyserini.search import get_topics, get_qrels_file\n"
            "from kd_pyserini import pyserini_compat as pc\n"
            "print(len(get_topics('dl19-passage')), len(get_topics('msmarco-passage.dev-subset')),"
            " len(get_topics('beir-v1.0.0-scifact-test')), get_qrels_file('dl20-passage'))\n"
            "print('served offline:', len(pc.offline_report()))\n")
    r = _run(["-W", "default", "-c", code], _offline_env(tmp_path, data_dir), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    counts, served = r.stdout.strip().splitlines()[-2:]
    assert counts.split() == ["43", "6980", "300",
                              str(data_dir / "topics-and-qrels" / "qrels.dl20-passage.txt")]
    found = _python_warnings(r.stderr)
    assert len(found) <= 1, found
    if pc.is_pyserini2():  # 2.x fetches metadata at import: ONE warning naming what is unavailable offline
        assert len(found) == 1 and "PyseriniOfflineWarning" in found[0] and "Unavailable offline" in found[0]
        assert int(served.split()[-1]) > 0
    else:  # 1.6 has nothing to fetch at import
        assert found == [] and served.endswith(" 0")


# --- Pyserini's own CLIs through python -m kd_pyserini.pyserini, offline ------------------------------------------

@pytest.fixture(scope="module")
def dl19_small(tmp_path_factory, data_dir):
    """A MiniLM FAISS index and a BM25 Lucene index of the passages of DL19's BM25 top-15 candidates."""
    from kd_pyserini.index.bm25 import build_bm25_index
    from kd_pyserini.index.dense import build_dense_index

    out = tmp_path_factory.mktemp("dl19-small")
    seen: dict[str, str] = {}
    per_query: dict[str, int] = {}
    with gzip.open(data_dir / "msmarco-dl" / "candidates.dl19.bm25-top100.tsv.gz", "rt", encoding="utf-8") as f:
        for line in f:
            qid, pid, _query, passage = line.rstrip("\n").split("\t")
            per_query[qid] = per_query.get(qid, 0) + 1
            if per_query[qid] <= 15:
                seen.setdefault(pid, passage)
    corpus = out / "corpus.tsv"
    corpus.write_text("".join(f"{pid}\t{text}\n" for pid, text in seen.items()), encoding="utf-8")
    dense = build_dense_index(corpus, MINILM, out / "dense", device="cpu", progress=False)
    bm25 = build_bm25_index(corpus, out / "bm25", progress=False)
    return {"dense": dense, "bm25": Path(bm25), "n": len(seen)}


def _trec_eval_value(stdout: str, measure: str) -> float:
    rows = [line.split() for line in stdout.splitlines() if line.split()[:2] == [measure, "all"]]
    assert len(rows) == 1, stdout
    return float(rows[0][2])


def test_search_faiss_and_trec_eval_by_name_offline_match_kd_eval(dl19_small, data_dir, tmp_path):
    from kd_pyserini.evaluation import evaluate
    from kd_pyserini.resources import get_qrels, get_topics
    from kd_pyserini.trec_io import read_run

    env = _offline_env(tmp_path, data_dir)
    run = tmp_path / "run.dl19.minilm.txt"
    r = _run(["-m", "kd_pyserini.pyserini", "search.faiss", "--index", str(dl19_small["dense"]),
              "--topics", "dl19-passage", "--encoder", MINILM, "--output", str(run), "--hits", "100",
              "--device", "cpu", "--batch-size", "16", "--threads", "2"], env, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    ranked = read_run(run)
    assert set(ranked) == set(get_topics("dl19-passage"))
    assert all(len(docs) == 100 for docs in ranked.values())

    r = _run(["-m", "kd_pyserini.pyserini", "eval.trec_eval", "-c", "-m", "ndcg_cut.10", "dl19-passage", str(run)],
             env, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    theirs = _trec_eval_value(r.stdout, "ndcg_cut_10")
    ours = evaluate(ranked, get_qrels("dl19-passage"), "nDCG@10")["nDCG@10"]
    assert theirs == pytest.approx(ours, abs=5e-5)
    assert 0.3 < theirs < 1.0  # a real ranking over the candidates, not noise
    # kd's alias works as a qrels name for Pyserini's CLI too, with the same answer
    r = _run(["-m", "kd_pyserini.pyserini", "eval.trec_eval", "-c", "-m", "ndcg_cut.10", "trec-dl-19", str(run)],
             env, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _trec_eval_value(r.stdout, "ndcg_cut_10") == theirs


def test_search_lucene_topics_by_name_offline(dl19_small, data_dir, tmp_path):
    from kd_pyserini.resources import get_topics
    from kd_pyserini.trec_io import read_run

    run = tmp_path / "run.dl19.bm25.txt"
    r = _run(["-m", "kd_pyserini.pyserini", "search.lucene", "--index", str(dl19_small["bm25"]),
              "--topics", "dl19-passage", "--bm25", "--hits", "10", "--output", str(run)],
             _offline_env(tmp_path, data_dir), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    ranked = read_run(run)
    assert set(ranked) == set(get_topics("dl19-passage"))
    assert all(len(docs) == 10 for docs in ranked.values())


def test_unknown_topic_name_offline_is_an_error_not_a_hang(tmp_path, data_dir):
    r = _run(["-c", "import kd_pyserini\nfrom pyserini.search import get_topics\nget_topics('robust04')"],
             _offline_env(tmp_path, data_dir), tmp_path, timeout=300)
    assert r.returncode != 0
    assert re.search(r"robust04|topics", r.stderr.strip().splitlines()[-1], re.I)
