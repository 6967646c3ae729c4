"""String encoders in Pyserini's ``FaissSearcher`` (both lines) and kd indexes behind Pyserini 2.x's own REST and MCP
servers (issue #18).

One pair of small indexes (the bundled toy corpus: a MiniLM FAISS index and a BM25 index, both from kd-index) serves
the whole module; the REST server is started once (a real process on 127.0.0.1 at a free port, stopped at the end).
The rankings are compared with what kd-search computes for the same query (:class:`DenseSearcher`,
:class:`Bm25Searcher`, the classes behind ``kd-search --mode dense|bm25``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import kd_pyserini  # noqa: F401  (the JVM hook first)
import pytest

from kd_pyserini.pyserini_compat import is_pyserini2

QUERIES = ["how big can a goldfish grow", "what causes earthquakes and volcanoes"]  # BM25: no tied scores
NO_SERVER = "Pyserini 1.6 (Python 3.11) has no REST/MCP servers; they came with Pyserini 2.x (Python >= 3.12)"
DOC = "d01"
needs_2x = pytest.mark.skipif(not is_pyserini2(), reason=NO_SERVER)


@pytest.fixture(scope="module")
def toy_indexes(tmp_path_factory, minilm_dir) -> dict[str, Path]:
    from kd_pyserini import toy
    from kd_pyserini.index import build_bm25_index, build_dense_index

    root = tmp_path_factory.mktemp("serve")
    build_dense_index(toy.CORPUS, "all-minilm-l6-v2", root / "dense", device="cpu")
    build_bm25_index(toy.CORPUS, root / "bm25")
    return {"root": root, "dense": root / "dense", "bm25": root / "bm25"}


@pytest.fixture(scope="module")
def kd_rankings(toy_indexes) -> dict[str, dict[str, list[tuple[str, float]]]]:
    """kd-search's top 10 for each query, dense and BM25."""
    from kd_pyserini.search.bm25 import Bm25Searcher
    from kd_pyserini.search.dense import DenseSearcher

    dense = DenseSearcher(toy_indexes["dense"], "all-minilm-l6-v2", device="cpu")
    bm25 = Bm25Searcher(toy_indexes["bm25"])
    return {"dense": {q: dense.search(q, 10) for q in QUERIES}, "bm25": {q: bm25.search(q, 10) for q in QUERIES}}


def _toy_text(docid: str) -> str:
    from kd_pyserini import toy

    with open(toy.CORPUS, encoding="utf-8") as f:
        return next(d["text"] for d in map(json.loads, f) if d["_id"] == docid)


def _same_ranking(served: list[tuple[str, float]], kd: list[tuple[str, float]]) -> None:
    assert [d for d, _ in served] == [d for d, _ in kd]
    assert [s for _, s in served] == pytest.approx([s for _, s in kd], abs=2e-6)


# ------------------------------------------------------------------------------------------- FaissSearcher (both)

def test_faiss_searcher_takes_a_kd_card_name_and_the_recorded_encoder(toy_indexes, kd_rankings):
    from pyserini.search.faiss import FaissSearcher

    from kd_pyserini.encoders import KDQueryEncoder

    named = FaissSearcher(str(toy_indexes["dense"]), "all-minilm-l6-v2")
    recorded = FaissSearcher(str(toy_indexes["dense"]))  # encoder left out: the one kd_pyserini.json records
    for searcher in (named, recorded):
        assert isinstance(searcher.query_encoder, KDQueryEncoder)
        for q in QUERIES:
            _same_ranking([(h.docid, float(h.score)) for h in searcher.search(q, 10)], kd_rankings["dense"][q])


def test_faiss_searcher_refuses_another_encoder_before_loading_it(toy_indexes):
    from pyserini.search.faiss import FaissSearcher

    from kd_pyserini.index import IncompatibleIndexError

    # TAS-B's weights are not on this machine: the refusal must come from the index check, not from a download
    with pytest.raises(IncompatibleIndexError, match="all-minilm-l6-v2"):
        FaissSearcher(str(toy_indexes["dense"]), "distilbert-dot")


def test_pyserini_own_encoder_strings_keep_pyserini_classes(monkeypatch):
    from pyserini.search.faiss import FaissSearcher

    built = []

    class Fake:
        def __init__(self, encoder_dir=None, **kwargs):
            built.append((type(self).__name__, encoder_dir))

    import pyserini.search.faiss._searcher as mod

    monkeypatch.setattr(mod, "AutoQueryEncoder", type("AutoQueryEncoder", (Fake,), {}))
    monkeypatch.setattr(mod, "DprQueryEncoder", type("DprQueryEncoder", (Fake,), {}))
    FaissSearcher._init_encoder_from_str("facebook/dpr-question_encoder-multiset-base")
    FaissSearcher._init_encoder_from_str("BAAI/bge-base-en-v1.5")
    assert built == [("DprQueryEncoder", "facebook/dpr-question_encoder-multiset-base"),
                     ("AutoQueryEncoder", "BAAI/bge-base-en-v1.5")]


def test_hybrid_searcher_with_a_string_encoder_fuses_as_kd_fusion(toy_indexes):
    from pyserini.search.faiss import FaissSearcher
    from pyserini.search.hybrid import HybridSearcher
    from pyserini.search.lucene import LuceneSearcher

    from kd_pyserini.fusion import interpolate

    dense = FaissSearcher(str(toy_indexes["dense"]), "all-minilm-l6-v2")
    sparse = LuceneSearcher(str(toy_indexes["bm25"]))
    hybrid = HybridSearcher(dense, sparse)
    q = QUERIES[0]
    got = {h.docid: h.score for h in hybrid.search(q, k0=10, k=10, alpha=0.5, normalization=True)}
    want = interpolate({"q": {h.docid: h.score for h in sparse.search(q, 10)}},
                       {"q": {h.docid: float(h.score) for h in dense.search(q, 10)}}, alpha=0.5, normalize=True,
                       k=10)["q"]
    assert len(got) == 10 and got == pytest.approx(want)


def test_server_config_entries_are_completed_from_kd_metadata(toy_indexes):
    from kd_pyserini.pyserini_compat.server import complete_index_entries

    raw = {"dl-minilm": {"path": "dense"}, "dl-bm25": {"path": "bm25", "index_type": "tf"},
           "plain": "dense", "theirs": {"path": "dense", "index_type": "faiss", "encoder": "x/y"}}
    out = complete_index_entries(raw, toy_indexes["root"])
    assert out["dl-minilm"] == {"path": "dense", "index_type": "faiss", "encoder": "all-minilm-l6-v2",
                                "base_index": "dl-bm25"}
    assert out["plain"]["encoder"] == "all-minilm-l6-v2" and out["plain"]["base_index"] == "dl-bm25"
    assert out["theirs"]["encoder"] == "x/y"  # what the config names wins
    assert out["dl-bm25"] == raw["dl-bm25"] and raw["dl-minilm"] == {"path": "dense"}  # the input is not changed
    # a kd encoder other than the one that built the index: refused when the config is read, naming the alias
    with pytest.raises(ValueError, match=r'Index alias "wrong": .*all-minilm-l6-v2.*leave "encoder" out'):
        complete_index_entries({"wrong": {"path": "dense", "encoder": "distilbert-dot"}}, toy_indexes["root"])
    assert complete_index_entries({"ok": {"path": "dense", "encoder": "minilm"}}, toy_indexes["root"])["ok"][
        "encoder"] == "minilm"  # an alias of the same card


# ---------------------------------------------------------------------------------- REST and MCP (Pyserini 2.x)

API_KEY = "test-key-3f9c2a"


def _config(root: Path, api_keys: bool) -> Path:
    """The README's config: the dense index names no encoder and no base_index (both come from kd_pyserini.json)."""
    text = ("indexes:\n"
            "  toy-minilm:\n"
            "    path: dense\n"
            "    index_type: faiss\n"
            "  toy-bm25:\n"
            "    path: bm25\n"
            "    index_type: tf\n")
    if api_keys:
        text += f"api_keys:\n  - {API_KEY}\n"
    path = root / ("server-keys.yaml" if api_keys else "server.yaml")
    path.write_text(text, encoding="utf-8")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, key: str | None = API_KEY) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def rest_server(toy_indexes):
    pytest.importorskip("fastapi", reason=NO_SERVER)
    pytest.importorskip("uvicorn", reason=NO_SERVER)
    port = _free_port()
    cfg = _config(toy_indexes["root"], api_keys=True)
    log = toy_indexes["root"] / "rest.log"
    cmd = [sys.executable, "-m", "kd_pyserini.pyserini", "server.rest", "--host", "127.0.0.1", "--port", str(port),
           "--config", str(cfg), "--no-prebuilt-indexes"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=toy_indexes["root"])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the REST server exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the REST server did not answer in 240 s: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@needs_2x
def test_rest_search_answers_with_kd_search_ranking(rest_server, kd_rankings):
    for alias, kind in (("toy-minilm", "dense"), ("toy-bm25", "bm25")):
        for q in QUERIES:
            status, body = _get(f"{rest_server}/v1/{alias}/search?" + urllib.parse.urlencode({"query": q, "hits": 10}))
            assert status == 200, body
            served = [(c["docid"], c["score"]) for c in body["candidates"]]
            _same_ranking(served, kd_rankings[kind][q])
            # documents come from the BM25 index of the same corpus (the base_index kd_pyserini filled in)
            assert all(c["doc"] for c in body["candidates"])


@needs_2x
def test_rest_doc_and_api_keys(rest_server, toy_indexes):
    status, body = _get(f"{rest_server}/v1/toy-minilm/doc/{DOC}")
    assert status == 200, body
    assert _toy_text(DOC)[:60] in json.dumps(body)
    status, body = _get(f"{rest_server}/v1/toy-bm25/search?query=france", key=None)
    assert status == 401 and "Unauthorized" in body["error"]
    status, _ = _get(f"{rest_server}/v1/toy-bm25/search?query=france", key="wrong")
    assert status == 401


@needs_2x
def test_mcp_tools_search_get_document_and_fuse(toy_indexes, kd_rankings):
    fastmcp = pytest.importorskip("fastmcp", reason=NO_SERVER)
    from pyserini.server.backend import SharedSearchBackend
    from pyserini.server.mcp.tools import register_tools

    from kd_pyserini.fusion import interpolate

    # the MCP server has no --no-prebuilt-indexes: its backend opens configured indexes by alias all the same
    backend = SharedSearchBackend(str(_config(toy_indexes["root"], api_keys=False)))
    mcp = fastmcp.FastMCP("kd-test")
    register_tools(mcp, backend)
    q = QUERIES[0]

    def items(result) -> list:
        """The tool's list result (FastMCP sends it as one JSON text block, or as structured content)."""
        if result.structured_content and isinstance(result.structured_content.get("result"), list):
            return result.structured_content["result"]
        out: list = []
        for block in result.content:
            text = getattr(block, "text", "")
            try:
                value = json.loads(text)
            except ValueError:
                value = text
            out.extend(value if isinstance(value, list) else [value])
        return out

    def hits(result) -> list[tuple[str, float]]:
        out = []
        for text in items(result):
            if isinstance(text, str) and text.startswith("DocID: "):
                docid, score = text.removeprefix("DocID: ").split(" | Score: ")
                out.append((docid, float(score)))
        return out

    async def calls():
        async with fastmcp.Client(mcp) as client:
            dense = await client.call_tool("search", {"query": q, "index": "toy-minilm", "hits": 10}, timeout=120)
            sparse = await client.call_tool("search", {"query": q, "index": "toy-bm25", "hits": 10}, timeout=120)
            doc = await client.call_tool("get_document", {"docid": DOC, "index": "toy-minilm"}, timeout=60)
            listed = await client.call_tool("list_indexes", {"index_type": "faiss"}, timeout=60)
            status = await client.call_tool("get_index", {"index_name": "toy-minilm"}, timeout=60)
            assert items(listed)[0] == "toy-minilm"
            info = status.structured_content or json.loads(status.content[0].text)
            assert info["encoder"] == "all-minilm-l6-v2" and info["base_index"] == "toy-bm25"
            d, s = hits(dense), hits(sparse)
            fused = await client.call_tool("fuse_search_results", {
                "results1": [{"docid": x, "score": y} for x, y in d],
                "results2": [{"docid": x, "score": y} for x, y in s], "hits": 10}, timeout=60)
            return d, s, doc, fused

    try:
        d, s, doc, fused = asyncio.run(calls())
    finally:
        backend.close_all()
    _same_ranking(d, kd_rankings["dense"][q])
    _same_ranking(s, kd_rankings["bm25"][q])
    assert len(d) == 10 and len(s) == len(kd_rankings["bm25"][q]) > 2
    assert _toy_text(DOC)[:60] in json.dumps(items(doc))
    got = {r["docid"]: r["score"] for r in items(fused)}
    # Pyserini's fusion (alpha 1, centred min-max) equals kd_pyserini.fusion's, computed independently
    want = interpolate({"q": dict(s)}, {"q": dict(d)}, alpha=1.0, normalize=True, k=10)["q"]
    assert len(got) == 10 and got == pytest.approx(want, abs=1e-5)


# ------------------------------------------------------------------------------ kd-serve: mode=hybrid|rerank (2.x)

@pytest.fixture(scope="module")
def kd_serve(toy_indexes):
    """kd-serve's app (Pyserini's REST app plus the mode route), served by uvicorn in a thread on 127.0.0.1."""
    uvicorn = pytest.importorskip("uvicorn", reason=NO_SERVER)
    import threading

    from kd_pyserini.cli.serve import build_app

    app = build_app(str(_config(toy_indexes["root"], api_keys=True)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "kd-serve did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _mode(base: str, index: str, **params) -> tuple[int, dict]:
    return _get(f"{base}/v1/{index}/search?" + urllib.parse.urlencode(params))


@needs_2x
def test_kd_serve_hybrid_matches_kd_search_hybrid(kd_serve, toy_indexes):
    from kd_pyserini.search.bm25 import Bm25Searcher
    from kd_pyserini.search.dense import DenseSearcher
    from kd_pyserini.search.hybrid import fuse_searchers

    dense = DenseSearcher(toy_indexes["dense"], "all-minilm-l6-v2", device="cpu")
    bm25 = Bm25Searcher(toy_indexes["bm25"])
    for params in ({"fusion": "rrf"}, {"alpha": 0.5}, {"fusion": "interpolation", "alpha": 0.3, "normalize": "true"}):
        for q in QUERIES:
            status, body = _mode(kd_serve, "toy-minilm", query=q, hits=10, mode="hybrid", **params)
            assert status == 200, body
            kw = {k: (v == "true" if k == "normalize" else v) for k, v in params.items() if k != "fusion"}
            want = fuse_searchers({"q": q}, dense, bm25, params.get("fusion", "interpolation"), hits=10, **kw)["q"]
            _same_ranking([(c["docid"], c["score"]) for c in body["candidates"]], list(want.items()))
            assert body["mode"] == "hybrid" and all(c["doc"] for c in body["candidates"])
    # without mode: Pyserini's own search, unchanged
    status, body = _mode(kd_serve, "toy-minilm", query=QUERIES[0], hits=3)
    assert status == 200 and "mode" not in body and len(body["candidates"]) == 3


@needs_2x
def test_kd_serve_rerank_matches_kd_search_rerank(kd_serve, toy_indexes):
    from kd_pyserini.search.bm25 import bm25_candidates
    from kd_pyserini.search.rerank import rerank

    for q in QUERIES:
        status, body = _mode(kd_serve, "toy-minilm", query=q, hits=10, mode="rerank")
        assert status == 200, body
        want = rerank({"q": q}, "all-minilm-l6-v2", bm25_candidates({"q": q}, toy_indexes["bm25"], depth=1000),
                      hits=10, device="cpu")["q"]
        served = [(c["docid"], c["score"]) for c in body["candidates"]]
        assert [d for d, _ in served] == list(want)
        assert [s for _, s in served] == pytest.approx(list(want.values()), abs=1e-4)


@needs_2x
def test_kd_serve_bad_requests_are_one_line_errors(kd_serve):
    assert _mode(kd_serve, "toy-bm25", query="goldfish", mode="hybrid")[1]["error"].startswith(
        "mode=hybrid|rerank needs a dense (faiss) index")
    status, body = _mode(kd_serve, "toy-minilm", query="goldfish", mode="fuse")
    assert status == 400 and "'mode' must be one of hybrid, rerank" in body["error"]
    status, body = _mode(kd_serve, "toy-minilm", query="goldfish", mode="hybrid", fusion="best")
    assert status == 400 and "'fusion' must be one of" in body["error"]
    status, body = _get(f"{kd_serve}/v1/toy-minilm/search?query=goldfish&mode=hybrid", key=None)
    assert status == 401  # the API keys guard the added mode too


@pytest.mark.skipif(is_pyserini2(), reason="the Pyserini 1.6 message; on 2.x kd-serve serves")
def test_kd_serve_on_pyserini_16_says_there_is_no_server(tmp_path):
    from click.testing import CliRunner

    from kd_pyserini.cli.serve import main

    cfg = tmp_path / "server.yaml"
    cfg.write_text("indexes: {}\n")
    r = CliRunner().invoke(main, ["--config", str(cfg)])
    assert r.exit_code == 1 and "Pyserini 1.6 has no REST or MCP server" in r.output
