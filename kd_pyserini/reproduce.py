"""``kd-repro``: the reproduction matrix — run what this machine has, compare with the published numbers.

The matrix lives in the top-level ``runs/`` folder, one YAML file per benchmark (``msmarco-dev``, ``trec-dl-19``,
``trec-dl-20``, ``scifact``), in the spirit of Pyserini's two-click reproductions (2CR): every *condition* (BM25,
TAS-B / Margin-MSE dense retrieval, re-ranking, hybrid, Pyserini's own reference runs) carries the exact commands
that produce its run and the expected scores with their source and tolerance. ``runs/README.md`` describes the
format.

For each selected condition ``kd-repro``

1. fills the placeholders of its commands (``${msmarco_collection}``, ``${index_root}``, ``${tasb_index}``...) from
   the defaults (:data:`DEFAULT_PATHS`), a YAML file of local paths (``--paths``) and the command-line options;
2. checks, **without downloading anything**, that its inputs exist: files and folders by existence, Pyserini
   prebuilt indexes in Pyserini's cache, model weights as a local directory, an installed package or in the local
   Hugging Face cache; topics and qrels in ``$KD_PYSERINI_DATA`` or Pyserini's cache;
3. runs the commands (``kd-index`` / ``kd-search`` / ``kd-fuse``, each as ``python -m`` of its module) or, for a
   reference run, evaluates the given run file directly;
4. evaluates the run with :func:`kd_pyserini.evaluation.evaluate` (``trec_eval -c``) and compares every published
   figure within its tolerance.

A condition whose inputs are missing is reported as **not runnable**, with exactly what is missing; it is never
reported as passed. A run of depth ``d`` (e.g. Pyserini's top-100 reference runs) can only check measures whose
cut-off is at most ``d``: ``R@1000`` or ``AP`` on a top-100 run is marked *not checkable*, not failed.

Outputs (``--output-dir``, default ``runs/output``): the run files (``<benchmark>/run.<benchmark>.<condition>.txt``),
``leaderboard.md`` (benchmark, condition, measure, expected, measured, delta, verdict), ``leaderboard.json`` and
``efficiency.png`` (query latency vs nDCG@10 / RR@10, as the Margin-MSE paper's figure; published points without a
latency are drawn as labelled horizontal lines).

Usage::

    kd-repro                                   # every benchmark and condition; runs what exists here
    kd-repro --benchmark trec-dl-19 --dry-run  # what would run, with the filled-in commands, and what is missing
    kd-repro -b scifact                        # SciFact end to end (indexes built under --index-root)
    kd-repro -b trec-dl-19 -c 'tas-b*'         # conditions by name (shell-style patterns)
    kd-repro --paths local-paths.yaml          # msmarco_collection: ..., index_root: ..., tasb_model: ...
    kd-repro --collection /data/msmarco/collection.tsv --index-root /data/indexes --set threads=16

Also ``python -m kd_pyserini.reproduce``. ``kd-eval BENCHMARK`` without run files calls
:func:`evaluate_benchmark_runs`, which evaluates the reproduction runs present for that benchmark beside the
published numbers.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

__all__ = [
    "DEFAULT_PATHS", "COMMAND_MODULES", "MatrixError", "Expected", "Step", "Condition", "Matrix",
    "load_matrix", "load_matrices", "matrix_dir", "Resolver", "Availability", "check_condition",
    "Row", "Result", "run_condition", "reproduce", "write_leaderboard", "plot_efficiency",
    "evaluate_benchmark_runs", "main",
]

ROOT = Path(__file__).resolve().parent.parent

#: Default values of the placeholders. ``None`` means "no default: give it with --paths / --set / an option".
DEFAULT_PATHS: dict[str, str | None] = {
    # inputs
    "data": None,  # $KD_PYSERINI_DATA (shared/data: topics, qrels, reference runs, SciFact corpus)
    "msmarco_collection": None,  # MS MARCO passage collection.tsv (8,841,823 passages)
    "scifact_corpus": "${data}/scifact/corpus.jsonl.gz",
    # indexes: Pyserini prebuilt names (looked up in Pyserini's cache, never downloaded) or folders
    "bm25_index": "msmarco-v1-passage",
    "tasb_index": "msmarco-v1-passage.distilbert-dot-tas_b-b256",
    "margin_mse_index": "msmarco-v1-passage.distilbert-dot-margin-mse-t2",
    "index_root": "${output_dir}/indexes",
    "scifact_bm25_index": "${index_root}/lucene.beir-v1.0.0-scifact.flat",
    "scifact_minilm_index": "${index_root}/faiss.beir-v1.0.0-scifact.all-minilm-l6-v2",
    # encoders: card names, hub ids or local model folders
    "tasb_model": "distilbert-dot-tas-b",
    "margin_mse_model": "distilbert-dot-margin-mse",
    "minilm_model": "all-minilm-l6-v2",
    # execution
    "threads": str(min(16, os.cpu_count() or 1)),
    "batch_size": "64",
    "device": "auto",
}

#: Placeholders that name an index: a Pyserini prebuilt name is replaced by its folder in Pyserini's cache.
INDEX_VARIABLES = ("bm25_index", "tasb_index", "margin_mse_index")

#: Console scripts used in the matrix commands -> the module run as ``python -m``.
COMMAND_MODULES: dict[str, str] = {
    "kd-index": "kd_pyserini.index",
    "kd-search": "kd_pyserini.search",
    "kd-fuse": "kd_pyserini.fusion_cli",
    "kd-eval": "kd_pyserini.eval_cli",
    "kd-pyserini": "kd_pyserini.pyserini",
}

CONDITION_TYPES = ("reference-run", "bm25", "dense", "rerank", "hybrid")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.:-]+)\}")
PASS, FAIL, NOT_CHECKABLE, NO_REFERENCE, NOT_RUNNABLE, ERROR = (
    "pass", "fail", "not checkable", "no published figure", "not runnable", "error")


class MatrixError(ValueError):
    """A malformed matrix file; the message names the file and the condition."""


# --------------------------------------------------------------------------------------------------------------
# The matrix
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Expected:
    """One published figure: ``measure`` should be ``value`` within ``tolerance``, according to ``source``."""

    measure: str
    value: float
    tolerance: float
    source: str


@dataclass(frozen=True)
class Step:
    """One command of a condition.

    Attributes:
        command: the command line with ``${...}`` placeholders (``kd-index ...``, ``kd-search ...``).
        creates: a path the step produces; when it already exists the step is skipped (index builds).
        heavy: a step too long for an ordinary run (encoding all of MS MARCO); only run with ``--allow-heavy``.
        requires: what the step needs (same keys as :attr:`Condition.requires`).
    """

    command: str
    creates: str | None = None
    heavy: bool = False
    requires: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Condition:
    """One row group of the matrix: how to produce a run and what it should score.

    Attributes:
        benchmark: the matrix's benchmark (``trec-dl-19``...).
        name: the condition's id (``tas-b``, ``bm25-default``, ``tas-b-reference-run``...).
        display: a human-readable name.
        type: one of :data:`CONDITION_TYPES`.
        steps: the commands, in order (none for a reference run).
        run: the run file: a path with placeholders (reference runs) or ``${output}`` (the default).
        depth: documents per query in the run (100 for the reference runs, 1000 otherwise).
        requires: ``{"files": [...], "indexes": [...], "models": [...]}`` — the inputs to check.
        depends: conditions whose run files this one reads (``${run:NAME}``); they are run first.
        expected: the published figures.
        pyserini_condition: the matching condition of Pyserini's 2CR matrix, if any.
        published_latency_ms: a published query latency to plot the published point at (optional, with a source).
        note: free text shown in the leaderboard.
    """

    benchmark: str
    name: str
    display: str
    type: str
    steps: tuple[Step, ...] = ()
    run: str = "${output}"
    depth: int = 1000
    requires: Mapping[str, Sequence[str]] = field(default_factory=dict)
    depends: tuple[str, ...] = ()
    expected: tuple[Expected, ...] = ()
    pyserini_condition: str | None = None
    published_latency_ms: float | None = None
    note: str | None = None

    @property
    def key(self) -> str:
        return f"{self.benchmark}/{self.name}"


@dataclass(frozen=True)
class Matrix:
    """A benchmark's matrix file: topics, qrels, measures, and its conditions in file order."""

    benchmark: str
    path: Path
    topics: str
    qrels: str
    measures: tuple[str, ...]
    primary: str
    conditions: tuple[Condition, ...]
    description: str = ""

    def condition(self, name: str) -> Condition:
        for c in self.conditions:
            if c.name == name:
                return c
        raise KeyError(f"{self.path}: no condition {name!r}; known: {', '.join(c.name for c in self.conditions)}")


def matrix_dir() -> Path:
    """The matrix folder: ``$KD_PYSERINI_RUNS``, else the repository's ``runs/``, else ``./runs``."""
    env = os.environ.get("KD_PYSERINI_RUNS")
    if env:
        return Path(env).expanduser()
    for cand in (ROOT / "runs", Path.cwd() / "runs"):
        if any(cand.glob("*.yaml")):
            return cand
    return ROOT / "runs"


def _requires(raw: Any, where: str) -> dict[str, tuple[str, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise MatrixError(f"{where}: 'requires' must be a mapping of files/indexes/models to lists")
    out = {}
    for kind, items in raw.items():
        if kind not in ("files", "indexes", "models"):
            raise MatrixError(f"{where}: unknown requirement kind {kind!r}; use files, indexes or models")
        out[kind] = tuple(str(i) for i in ([items] if isinstance(items, str) else items or []))
    return out


def _expected(raw: Any, where: str) -> tuple[Expected, ...]:
    out: list[Expected] = []
    for i, group in enumerate(raw or []):
        gwhere = f"{where}: expected[{i}]"
        if not isinstance(group, Mapping) or "scores" not in group or "source" not in group:
            raise MatrixError(f"{gwhere}: each expected group needs 'source', 'tolerance' and 'scores'")
        try:
            tol = float(group.get("tolerance"))
        except (TypeError, ValueError):
            raise MatrixError(f"{gwhere}: 'tolerance' must be a number") from None
        for measure, value in (group["scores"] or {}).items():
            try:
                from kd_pyserini.evaluation import parse_measure

                canon = str(parse_measure(str(measure)))
            except ValueError as e:
                raise MatrixError(f"{gwhere}: {e}") from None
            out.append(Expected(canon, float(value), tol, str(group["source"]).strip()))
    return tuple(out)


def _step(raw: Any, where: str) -> Step:
    if isinstance(raw, str):
        return Step(command=" ".join(raw.split()))
    if not isinstance(raw, Mapping) or "run" not in raw:
        raise MatrixError(f"{where}: a step is a command string or a mapping with 'run' (and optional 'creates', "
                          "'heavy', 'requires')")
    return Step(command=" ".join(str(raw["run"]).split()), creates=raw.get("creates"), heavy=bool(raw.get("heavy")),
                requires=_requires(raw.get("requires"), where))


def load_matrix(path: str | os.PathLike) -> Matrix:
    """Read and validate one matrix YAML file.

    Raises:
        MatrixError: a missing key, an unknown condition type or measure, a duplicate condition name, or a
            dependency on an unknown condition.
    """
    import yaml

    path = Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for key in ("benchmark", "topics", "qrels", "conditions"):
        if key not in data:
            raise MatrixError(f"{path}: missing top-level key {key!r}")
    from kd_pyserini.evaluation import official_measures, parse_measures

    bench = str(data["benchmark"])
    measures = tuple(str(m) for m in (parse_measures(data["measures"]) if data.get("measures")
                                      else official_measures(bench)))
    conditions: list[Condition] = []
    for i, c in enumerate(data["conditions"]):
        where = f"{path}: condition {c.get('name', i)!r}"
        if "name" not in c or "type" not in c:
            raise MatrixError(f"{where}: needs 'name' and 'type'")
        if c["type"] not in CONDITION_TYPES:
            raise MatrixError(f"{where}: type {c['type']!r} is not one of {', '.join(CONDITION_TYPES)}")
        if c["type"] == "reference-run" and "run" not in c:
            raise MatrixError(f"{where}: a reference-run condition needs 'run' (the run file)")
        if c["type"] != "reference-run" and not c.get("steps"):
            raise MatrixError(f"{where}: needs 'steps' (the commands that produce ${{output}})")
        conditions.append(Condition(
            benchmark=bench, name=str(c["name"]), display=str(c.get("display", c["name"])), type=c["type"],
            steps=tuple(_step(s, where) for s in c.get("steps") or []), run=str(c.get("run", "${output}")),
            depth=int(c.get("depth", 1000)), requires=_requires(c.get("requires"), where),
            depends=tuple(c.get("depends") or ()), expected=_expected(c.get("expected"), where),
            pyserini_condition=c.get("pyserini_condition"),
            published_latency_ms=(float(c["published_latency_ms"]) if c.get("published_latency_ms") is not None
                                  else None),
            note=(" ".join(str(c["note"]).split()) if c.get("note") else None)))
    names = [c.name for c in conditions]
    dups = {n for n in names if names.count(n) > 1}
    if dups:
        raise MatrixError(f"{path}: duplicate condition names {', '.join(sorted(dups))}")
    for c in conditions:
        for d in c.depends:
            if d not in names:
                raise MatrixError(f"{path}: condition {c.name!r} depends on unknown condition {d!r}")
    primary = str(data.get("primary", measures[0]))
    return Matrix(benchmark=bench, path=path, topics=str(data["topics"]), qrels=str(data["qrels"]),
                  measures=measures, primary=str(parse_measures(primary)[0]), conditions=tuple(conditions),
                  description=" ".join(str(data.get("description", "")).split()))


def load_matrices(directory: str | os.PathLike | None = None,
                  benchmarks: Iterable[str] | None = None) -> list[Matrix]:
    """All matrix files of ``directory`` (default :func:`matrix_dir`), optionally only some benchmarks.

    Raises:
        MatrixError: no matrix files, or an unknown benchmark name (the message lists the known ones).
    """
    from kd_pyserini.evaluation import resolve_benchmark

    d = Path(directory) if directory is not None else matrix_dir()
    matrices = [load_matrix(p) for p in sorted(d.glob("*.yaml"))]
    if not matrices:
        raise MatrixError(f"no matrix files (*.yaml) in {d}; set KD_PYSERINI_RUNS or --matrix-dir to the runs/ folder")
    if benchmarks:
        wanted = []
        for b in benchmarks:
            canon = resolve_benchmark(b) or b
            if canon not in {m.benchmark for m in matrices}:
                raise MatrixError(f"unknown benchmark {b!r}; the matrix has {', '.join(m.benchmark for m in matrices)}")
            wanted.append(canon)
        matrices = [m for m in matrices if m.benchmark in wanted]
    order = {"msmarco-dev": 0, "trec-dl-19": 1, "trec-dl-20": 2, "scifact": 3}
    return sorted(matrices, key=lambda m: (order.get(m.benchmark, 9), m.benchmark))


# --------------------------------------------------------------------------------------------------------------
# Placeholders and availability
# --------------------------------------------------------------------------------------------------------------

class Resolver:
    """Fills ``${name}`` placeholders from a variables mapping (values may use other placeholders).

    ``${output}`` is the condition's own run file and ``${run:NAME}`` the run file of condition ``NAME`` of the same
    benchmark; ``${topics}``/``${qrels}``/``${benchmark}`` come from the matrix.
    """

    def __init__(self, variables: Mapping[str, str | None]):
        self.variables = dict(variables)

    def missing(self, text: str, extra: Mapping[str, str | None] | None = None) -> list[str]:
        """Placeholders in ``text`` (recursively) that have no value."""
        env = {**self.variables, **(extra or {})}
        out: list[str] = []

        def walk(s: str, depth: int) -> None:
            for name in _PLACEHOLDER.findall(s):
                val = env.get(name)
                if val is None:
                    if name not in out:
                        out.append(name)
                elif depth < 10:
                    walk(val, depth + 1)
        walk(text, 0)
        return out

    def fill(self, text: str, extra: Mapping[str, str | None] | None = None, partial: bool = False) -> str:
        """``text`` with every placeholder replaced (with ``partial``, those without a value are left as they are).

        Raises:
            KeyError: a placeholder has no value (see :meth:`missing`) and ``partial`` is false.
        """
        env = {**self.variables, **(extra or {})}
        for _ in range(10):
            def sub(m: re.Match) -> str:
                val = env.get(m.group(1))
                if val is None:
                    if partial:
                        return m.group(0)
                    raise KeyError(m.group(1))
                return str(val)
            new = _PLACEHOLDER.sub(sub, text)
            if new == text:
                break
            text = new
        return text


def _prebuilt_info(name: str) -> dict[str, Any] | None:
    """Pyserini's record of a prebuilt index name (without touching the network), or ``None``."""
    try:
        from pyserini import prebuilt_index_info as pii
    except Exception:  # noqa: BLE001  (pyserini missing or broken: treat as "not a prebuilt name")
        return None
    for table in ("TF_INDEX_INFO", "IMPACT_INDEX_INFO", "FAISS_INDEX_INFO", "LUCENE_HNSW_INDEX_INFO",
                  "LUCENE_FLAT_INDEX_INFO"):
        info = getattr(pii, table, {}).get(name)
        if info is not None:
            return info
    return None


def _pyserini_cache() -> Path:
    custom = os.environ.get("PYSERINI_CACHE")
    return Path(custom).expanduser() if custom else Path.home() / ".cache" / "pyserini"


def prebuilt_index_path(name: str) -> Path | None:
    """Where Pyserini keeps prebuilt index ``name`` once downloaded (``indexes/<tarball>.<md5>``), if it is there."""
    info = _prebuilt_info(name)
    if info is None:
        return None
    url = info["urls"][0]
    stem = re.sub(r"\.tar\.gz.*$", "", url.split("/")[-1])
    path = _pyserini_cache() / "indexes" / f"{stem}.{info['md5']}"
    return path if path.exists() else None


def _gb(n_bytes: Any) -> str:
    try:
        return f"{int(n_bytes) / 1e9:.1f} GB"
    except (TypeError, ValueError):
        return "size unknown"


_HUB: dict[str, bool] = {}


def _hub_reachable() -> bool:
    if "up" not in _HUB:
        from kd_pyserini.encoding import hub_reachable as probe

        _HUB["up"] = probe(timeout=3.0)
    return _HUB["up"]


def model_problem(name: str) -> str | None:
    """Why the weights of encoder ``name`` (card, hub id or folder) cannot be loaded offline, or ``None``.

    Nothing is downloaded: a folder must hold ``config.json``; a hub id must be in the local Hugging Face cache.
    """
    from kd_pyserini.cards import UnknownEncoderError, get_card

    try:
        card = get_card(name)
    except (UnknownEncoderError, FileNotFoundError) as e:
        return str(e)
    location = card.model_location()
    path = Path(location).expanduser()
    if path.is_dir():
        return None if (path / "config.json").is_file() else f"model folder {path} has no config.json"
    from kd_pyserini.encoding import hub_cached as _hub_cached

    if _hub_cached(location):
        return None
    hub = "the hub is unreachable" if not _hub_reachable() else "kd-repro does not download weights"
    return (f"weights {location} not in the local Hugging Face cache and {hub} (fetch them with "
            f"'hf download {location}', or set the model to a local folder)")


def index_problem(value: str) -> str | None:
    """Why index ``value`` (a folder or a Pyserini prebuilt name) is not usable here, or ``None``."""
    path = Path(value).expanduser()
    if path.exists():
        return None
    info = _prebuilt_info(value)
    if info is not None:
        if prebuilt_index_path(value) is not None:
            return None
        return (f"prebuilt index {value} ({_gb(info.get('size compressed (bytes)'))} compressed) not in Pyserini's "
                f"cache {_pyserini_cache() / 'indexes'} (kd-repro does not download it; see "
                "docs/full-reproduction.md)")
    return f"index {value} not found"


def file_problem(value: str) -> str | None:
    """Why input file/folder ``value`` is missing, or ``None``."""
    return None if Path(value).expanduser().exists() else f"{value} not found"


@dataclass
class Availability:
    """Whether a condition can run here: ``problems`` lists every missing input (empty = runnable)."""

    problems: list[str] = field(default_factory=list)
    skip_steps: dict[int, str] = field(default_factory=dict)  # step index -> why it is skipped

    @property
    def runnable(self) -> bool:
        return not self.problems


_SET_HINT = {
    "data": "set KD_PYSERINI_DATA (or --data)",
    "msmarco_collection": "give --collection PATH (or 'msmarco_collection:' in --paths)",
}


def _unset(name: str) -> str | None:
    """The problem line for an unset placeholder (``None`` for ``run:X``, reported as a missing dependency)."""
    if name.startswith("run:"):
        return None
    return f"${{{name}}} is not set: {_SET_HINT.get(name, f'give --set {name}=VALUE or put it in --paths')}"


def _check_requires(req: Mapping[str, Sequence[str]], resolver: Resolver, extra: Mapping[str, str | None],
                    creatable: set[str], problems: list[str]) -> None:
    checkers = {"files": file_problem, "indexes": index_problem, "models": model_problem}
    for kind, items in req.items():
        for item in items:
            missing = resolver.missing(item, extra)
            if missing:
                for m in missing:
                    msg = _unset(m)
                    if msg and msg not in problems:
                        problems.append(msg)
                continue
            value = resolver.fill(item, extra)
            if kind != "models" and value in creatable:
                continue
            problem = checkers[kind](value)
            if problem and problem not in problems:
                problems.append(problem)


def check_condition(cond: Condition, matrix: Matrix, resolver: Resolver, output: Path,
                    run_paths: Mapping[str, Path], allow_heavy: bool = False,
                    planned: Iterable[str] = ()) -> Availability:
    """Check, without running or downloading anything, whether ``cond`` can run here.

    Args:
        cond: the condition.
        matrix: its matrix (for topics and qrels).
        resolver: the placeholders.
        output: the condition's own run file (``${output}``).
        run_paths: the run files of the benchmark's conditions (``${run:NAME}``).
        allow_heavy: whether steps marked ``heavy`` may run (else their ``creates`` must already exist).
        planned: conditions whose run files do not exist yet but will (a dry run's runnable dependencies).
    """
    from kd_pyserini.resources import qrels_path, topics_path

    av = Availability()
    extra = _extra(matrix, output, run_paths)
    for what, name, finder in (("topics", matrix.topics, topics_path), ("qrels", matrix.qrels, qrels_path)):
        try:
            if finder(name) is None:
                av.problems.append(f"{what} {name} not found locally (set KD_PYSERINI_DATA to the folder holding "
                                   "topics-and-qrels/)")
        except FileNotFoundError as e:
            av.problems.append(str(e))
    creatable: set[str] = set()
    for i, step in enumerate(cond.steps):
        if step.creates is None:
            continue
        missing = resolver.missing(step.creates, extra)
        if missing:
            continue  # reported through the step's command below
        target = resolver.fill(step.creates, extra)
        if Path(target).expanduser().exists():
            av.skip_steps[i] = "exists, skipped"
        elif _prebuilt_info(target) is not None:
            # a Pyserini prebuilt name is fetched, not built (checked as an index requirement)
            av.skip_steps[i] = "prebuilt index, not built"
        elif step.heavy and not allow_heavy:
            av.problems.append(f"{target} does not exist and building it is a long job (step: "
                               f"{step.command.split()[0]} ...); build it first (see docs/full-reproduction.md) or "
                               "pass --allow-heavy")
        else:
            creatable.add(target)
    _check_requires(cond.requires, resolver, extra, creatable, av.problems)
    for i, step in enumerate(cond.steps):
        if i in av.skip_steps:
            continue
        _check_requires(step.requires, resolver, extra, creatable, av.problems)
        for m in resolver.missing(step.command, extra):
            msg = _unset(m)
            if msg and msg not in av.problems:
                av.problems.append(msg)
        head = step.command.split()[0]
        if head in COMMAND_MODULES:
            from importlib.util import find_spec

            if find_spec(COMMAND_MODULES[head]) is None:
                av.problems.append(f"{head} ({COMMAND_MODULES[head]}) is not installed in this kd_pyserini")
    if cond.type == "reference-run":
        missing = resolver.missing(cond.run, extra)
        if missing:
            av.problems.extend(p for p in map(_unset, missing) if p)
        else:
            problem = file_problem(resolver.fill(cond.run, extra))
            if problem:
                av.problems.append(f"reference run {problem}")
    planned = set(planned)
    deps = [d for d in cond.depends if d not in planned and (d not in run_paths or not Path(run_paths[d]).is_file())]
    if deps:
        av.problems.insert(0, f"needs the run{'s' if len(deps) > 1 else ''} of {', '.join(deps)} "
                              f"(not runnable here)")
    return av


def _extra(matrix: Matrix, output: Path, run_paths: Mapping[str, Path]) -> dict[str, str]:
    extra = {"output": str(output), "topics": matrix.topics, "qrels": matrix.qrels, "benchmark": matrix.benchmark}
    extra.update({f"run:{k}": str(v) for k, v in run_paths.items()})
    return extra


# --------------------------------------------------------------------------------------------------------------
# Running and checking
# --------------------------------------------------------------------------------------------------------------

@dataclass
class Row:
    """One leaderboard line: a measure of a condition, its expected and measured value and the verdict."""

    benchmark: str
    condition: str
    measure: str
    expected: float | None
    measured: float | None
    tolerance: float | None
    source: str | None
    verdict: str
    detail: str = ""

    @property
    def delta(self) -> float | None:
        """measured - expected, for checked rows only (a not-checkable difference means nothing)."""
        if self.expected is None or self.measured is None or self.verdict not in (PASS, FAIL):
            return None
        return self.measured - self.expected


@dataclass
class Result:
    """What happened to one condition."""

    condition: Condition
    status: str  # pass / fail / no published figure / not runnable / error
    rows: list[Row] = field(default_factory=list)
    run_file: str | None = None
    commands: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    wall_s: float | None = None
    latency_ms: float | None = None
    latency_source: str | None = None
    n_queries: int | None = None
    log: str = ""


def _checkable(measure: str, depth: int) -> str | None:
    """Why ``measure`` cannot be checked on a run of ``depth`` documents per query, or ``None``."""
    from kd_pyserini.evaluation import parse_measure

    m = parse_measure(measure)
    if m.cutoff is None and m.name in ("AP", "nDCG") and depth < 1000:
        return f"top-{depth} run: {measure} needs the full ranking (published at depth 1000)"
    if m.cutoff is not None and m.cutoff > depth:
        return f"top-{depth} run: {measure} needs {m.cutoff} documents per query"
    return None


def compare(cond: Condition, measured: Mapping[str, float], measures: Sequence[str]) -> list[Row]:
    """Leaderboard rows of one evaluated condition: each published figure checked within its tolerance, and the
    matrix's measures that have no published figure reported as measured."""
    rows: list[Row] = []
    covered = set()
    for exp in cond.expected:
        covered.add(exp.measure)
        got = measured.get(exp.measure)
        why = _checkable(exp.measure, cond.depth)
        if why:
            rows.append(Row(cond.benchmark, cond.name, exp.measure, exp.value, got, exp.tolerance, exp.source,
                            NOT_CHECKABLE, why))
            continue
        ok = got is not None and abs(got - exp.value) <= exp.tolerance + 1e-9
        rows.append(Row(cond.benchmark, cond.name, exp.measure, exp.value, got, exp.tolerance, exp.source,
                        PASS if ok else FAIL))
    for m in measures:
        if m in covered:
            continue
        why = _checkable(m, cond.depth)
        rows.append(Row(cond.benchmark, cond.name, m, None, measured.get(m), None, None,
                        NOT_CHECKABLE if why else NO_REFERENCE, why or ""))
    return rows


def _status(rows: Sequence[Row]) -> str:
    verdicts = {r.verdict for r in rows}
    if FAIL in verdicts:
        return FAIL
    if PASS in verdicts:
        return PASS
    return NO_REFERENCE


def _argv(command: str) -> list[str]:
    """A matrix command as an argv: ``kd-xxx`` becomes ``python -m <module>`` of this interpreter."""
    argv = shlex.split(command)
    if argv and argv[0] in COMMAND_MODULES:
        return [sys.executable, "-m", COMMAND_MODULES[argv[0]], *argv[1:]]
    if argv and argv[0] == "python":
        return [sys.executable, *argv[1:]]
    return argv


def _sidecar_latency(run_file: Path) -> tuple[float | None, str | None]:
    """Query latency (ms per query) from the JSON sidecar ``kd-search`` writes beside the run, if it records one."""
    for cand in (run_file.with_name(run_file.name + ".json"), run_file.with_suffix(".json")):
        if not cand.is_file():
            continue
        try:
            meta = json.loads(cand.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        flat = dict(meta)
        for sub in ("timing", "timings", "efficiency", "stats"):
            if isinstance(meta.get(sub), Mapping):
                flat.update(meta[sub])
        for key in ("latency_ms_per_query", "ms_per_query", "latency_ms", "query_latency_ms"):
            if isinstance(flat.get(key), (int, float)):
                return float(flat[key]), f"{cand.name}: {key}"
        n = next((flat[k] for k in ("queries", "n_queries", "num_queries") if isinstance(flat.get(k), int)), None)
        secs = next((flat[k] for k in ("search_seconds", "search_s") if isinstance(flat.get(k), (int, float))), None)
        if secs is not None and n:
            return 1000.0 * float(secs) / n, "kd-search's search time / queries"
        secs = next((flat[k] for k in ("elapsed_seconds", "elapsed_s") if isinstance(flat.get(k), (int, float))),
                    None)
        if secs is not None and n:
            return (1000.0 * float(secs) / n,
                    "kd-search's elapsed time / queries (model and index loading included)")
    return None, None


def run_condition(cond: Condition, matrix: Matrix, resolver: Resolver, output_dir: Path,
                  run_paths: dict[str, Path], *, dry_run: bool = False, allow_heavy: bool = False,
                  reuse: bool = False, echo=print, planned: Iterable[str] = (),
                  dep_latencies: Mapping[str, float | None] | None = None, latency_queries: int = 100) -> Result:
    """Check, run (unless ``dry_run``) and evaluate one condition.

    Args:
        cond: the condition.
        matrix: its matrix.
        resolver: the placeholders.
        output_dir: where run files go (``<output_dir>/<benchmark>/run.<benchmark>.<condition>.txt``).
        run_paths: run files of the benchmark's conditions produced so far (updated with this one's).
        dry_run: only check and show the commands.
        allow_heavy: allow steps marked ``heavy`` (full MS MARCO encoding).
        reuse: evaluate an existing run file instead of producing it again.
        echo: where progress lines go.
        planned: dependencies that a dry run counts as available (they would run first).
        dep_latencies: latencies (ms/query) of the dependencies; a condition made only by fusing their runs gets
            their sum (fusion itself is negligible), or none when one is unknown.
        latency_queries: queries timed one by one by :func:`probe_latency` after a dense/bm25 search (0: only use
            what the run's sidecar records).

    Returns:
        The :class:`Result`; ``status`` is ``not runnable`` with ``problems`` when an input is missing.
    """
    output = output_dir / matrix.benchmark / f"run.{matrix.benchmark}.{cond.name}.txt"
    extra = _extra(matrix, output, run_paths)
    av = check_condition(cond, matrix, resolver, output, run_paths, allow_heavy=allow_heavy, planned=planned)
    commands = []
    for i, step in enumerate(cond.steps):
        cmd = resolver.fill(step.command, extra, partial=True)
        commands.append((f"# {av.skip_steps[i]}: " if i in av.skip_steps else "") + cmd)
    result = Result(cond, NOT_RUNNABLE, commands=commands, problems=list(av.problems))
    if not av.runnable:
        short = _short(av.problems)
        result.rows = [Row(cond.benchmark, cond.name, e.measure, e.value, None, e.tolerance, e.source,
                           NOT_RUNNABLE, short) for e in cond.expected]
        if not result.rows:
            result.rows = [Row(cond.benchmark, cond.name, matrix.primary, None, None, None, None, NOT_RUNNABLE,
                               short)]
        return result
    run_file = Path(resolver.fill(cond.run, extra)).expanduser()
    result.run_file = str(run_file)
    if dry_run:
        result.status = "runnable"
        return result
    t0 = time.perf_counter()
    search_wall = None
    logs = []
    if cond.type != "reference-run" and not (reuse and run_file.is_file()):
        run_file.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if resolver.variables.get("data"):
            env["KD_PYSERINI_DATA"] = resolver.fill(resolver.variables["data"])
        for i, step in enumerate(cond.steps):
            if i in av.skip_steps:
                continue
            cmd = resolver.fill(step.command, extra)
            echo(f"  $ {cmd}")
            ts = time.perf_counter()
            proc = subprocess.run(_argv(cmd), capture_output=True, text=True, env=env)
            took = time.perf_counter() - ts
            logs.append(f"$ {cmd}\n{proc.stdout}{proc.stderr}")
            if proc.returncode != 0:
                tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
                result.status = ERROR
                result.problems = [f"command failed (exit {proc.returncode}): {cmd} -> {tail}"]
                result.log = "\n".join(logs)
                result.rows = [Row(cond.benchmark, cond.name, e.measure, e.value, None, e.tolerance, e.source, ERROR,
                                   result.problems[0]) for e in cond.expected] or [
                    Row(cond.benchmark, cond.name, matrix.primary, None, None, None, None, ERROR, result.problems[0])]
                return result
            if cmd.split()[0] == "kd-search":
                search_wall = (search_wall or 0.0) + took
        if not run_file.is_file():
            result.status = ERROR
            result.problems = [f"the commands ran but wrote no run file at {run_file}"]
            result.rows = [Row(cond.benchmark, cond.name, matrix.primary, None, None, None, None, ERROR,
                               result.problems[0])]
            result.log = "\n".join(logs)
            return result
    result.wall_s = time.perf_counter() - t0
    result.log = "\n".join(logs)
    measured = _evaluate_file(run_file, matrix, [e.measure for e in cond.expected])
    result.rows = compare(cond, measured, matrix.measures)
    result.status = _status(result.rows)
    run_paths[cond.name] = run_file
    if cond.type != "reference-run":
        from kd_pyserini.resources import get_topics

        result.n_queries = len(get_topics(matrix.topics))
        lat, src = None, None
        search_cmds = [resolver.fill(s.command, extra) for s in cond.steps if s.command.split()[0] == "kd-search"]
        if latency_queries > 0 and len(search_cmds) == 1:
            from kd_pyserini.resources import get_topics

            try:
                lat = probe_latency(search_cmds[0], list(get_topics(matrix.topics).values()), n=latency_queries)
                src = (f"dense/bm25: median of {latency_queries} single-query searches (encoding + search) in "
                       "process, after loading (kd_pyserini.reproduce.probe_latency)") if lat is not None else None
            except Exception as e:  # noqa: BLE001  (timing is a bonus: never fail the reproduction over it)
                echo(f"  latency probe failed ({type(e).__name__}: {e}); using the run's sidecar")
        if lat is None:
            lat, src = _sidecar_latency(run_file)
        fuse_only = all(s.command.split()[0] == "kd-fuse" for s in cond.steps)
        if lat is None and fuse_only and cond.depends:
            lats = [(dep_latencies or {}).get(d) for d in cond.depends]
            if all(x is not None for x in lats):
                lat, src = float(sum(lats)), "hybrids: sum of the fused runs' latencies"
        elif lat is None and search_wall is not None and result.n_queries:
            lat, src = (1000.0 * search_wall / result.n_queries,
                        "wall time of the search command / queries (includes start-up and model loading)")
        result.latency_ms, result.latency_source = lat, src
    return result


def _options(argv: Sequence[str]) -> dict[str, str]:
    """``--name value`` pairs of a command line (flags map to ``""``)."""
    out: dict[str, str] = {}
    for i, a in enumerate(argv):
        if a.startswith("--"):
            key, eq, val = a[2:].partition("=")
            if eq:
                out[key] = val
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                out[key] = argv[i + 1]
            else:
                out[key] = ""
    return out


def _median_ms(fn, items: Sequence[Any], warmup: int) -> tuple[float, list[Any]]:
    """Call ``fn`` on each item (the first ``warmup`` untimed); the median time in ms and the results."""
    for x in items[:warmup]:
        fn(x)
    times, out = [], []
    for x in items[warmup:] or items:
        t0 = time.perf_counter()
        out.append(fn(x))
        times.append(time.perf_counter() - t0)
    times.sort()
    mid = len(times) // 2
    return 1000.0 * (times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2), out


def probe_latency(command: str, queries: Sequence[str], n: int = 100, warmup: int = 3) -> float | None:
    """Median single-query latency (ms) of a ``kd-search --mode dense|bm25`` command, measured in this process.

    The encoder, index and searcher are loaded first (not timed); then up to ``n`` queries are sent one at a time,
    as a user would send them, after ``warmup`` untimed ones, and the median is taken (robust to other load on the
    machine). Dense: median query-encoding time + median FAISS search time of one query vector (timed in two
    passes, so torch's and FAISS's thread pools do not fight over the cores; encoding on one torch thread, after a
    warm-up pass over the sample); BM25: one Lucene search. This is the
    *query latency* of the Margin-MSE paper's efficiency figure, without the start-up costs that the command's own
    elapsed time includes.

    Returns:
        Milliseconds per query, or ``None`` for other modes (re-ranking, hybrid) or commands it cannot read.
    """
    argv = shlex.split(command)
    if not argv or argv[0] != "kd-search" or not queries or n <= 0:
        return None
    opts = _options(argv[1:])
    mode, hits = opts.get("mode"), int(opts.get("hits") or 1000)
    sample = list(queries)[: warmup + n]
    if mode == "dense" and opts.get("encoder") and opts.get("index"):
        import faiss
        import numpy as np

        from kd_pyserini.encoders import get_query_encoder
        from kd_pyserini.search import load_dense_index

        import torch

        qe = get_query_encoder(opts["encoder"], device=opts.get("device") or None,
                               precision=opts.get("precision") or "fp32")
        index, _ = load_dense_index(opts["index"])
        if opts.get("threads"):
            faiss.omp_set_num_threads(int(opts["threads"]))
        encode = lambda q: np.ascontiguousarray(qe.encode(q)[None, :], dtype=np.float32)  # noqa: E731
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one query per core: intra-op threads only add overhead for a 30-token query
        try:
            for q in sample:  # warm-up pass: the first query of each length pays for kernel set-up
                encode(q)
            encode_ms, vectors = _median_ms(encode, sample[warmup:] or sample, 0)
        finally:
            torch.set_num_threads(torch_threads)
        search_ms, _ = _median_ms(lambda v: index.search(v, hits), vectors, min(warmup, len(vectors) - 1))
        return encode_ms + search_ms
    if mode == "bm25" and opts.get("index"):
        from pyserini.search.lucene import LuceneSearcher

        searcher = LuceneSearcher(opts["index"])
        searcher.set_bm25(float(opts.get("k1") or 0.9), float(opts.get("b") or 0.4))
        return _median_ms(lambda q: searcher.search(q, k=hits), sample, warmup)[0]
    return None


_QRELS_CACHE: dict[str, Any] = {}


def _evaluate_file(run_file: Path, matrix: Matrix, extra_measures: Sequence[str] = ()) -> dict[str, float]:
    """The matrix's measures (and ``extra_measures``) of a run file, ``trec_eval -c``."""
    from kd_pyserini.evaluation import evaluate
    from kd_pyserini.resources import get_qrels
    from kd_pyserini.trec_io import read_run

    if matrix.qrels not in _QRELS_CACHE:
        _QRELS_CACHE[matrix.qrels] = get_qrels(matrix.qrels)
    measures = list(dict.fromkeys([*matrix.measures, *extra_measures]))
    return evaluate(read_run(run_file), _QRELS_CACHE[matrix.qrels], measures)


def build_resolver(paths_file: str | os.PathLike | None = None, overrides: Mapping[str, str | None] | None = None,
                   output_dir: str | os.PathLike = "runs/output") -> Resolver:
    """Placeholder values: :data:`DEFAULT_PATHS` < ``$KD_PYSERINI_DATA`` < the ``--paths`` YAML < ``overrides``.

    Raises:
        MatrixError: the paths file is not a mapping of names to strings.
    """
    variables: dict[str, str | None] = dict(DEFAULT_PATHS)
    variables["output_dir"] = str(Path(output_dir))
    from kd_pyserini.resources import data_dir

    d = data_dir()
    if d is not None:
        variables["data"] = str(d)
    if paths_file is not None:
        import yaml

        raw = yaml.safe_load(Path(paths_file).read_text(encoding="utf-8")) or {}
        if not isinstance(raw, Mapping):
            raise MatrixError(f"{paths_file}: expected a mapping like 'msmarco_collection: /data/collection.tsv'")
        unknown = [k for k in raw if k not in variables]
        if unknown:
            raise MatrixError(f"{paths_file}: unknown names {', '.join(map(str, unknown))}; known: "
                              f"{', '.join(sorted(variables))}")
        variables.update({str(k): (None if v is None else str(v)) for k, v in raw.items()})
    for k, v in (overrides or {}).items():
        if v is not None:
            variables[k] = str(v)
    if variables.get("device") == "auto":
        variables["device"] = _auto_device()
    # kd-search takes index folders: a Pyserini prebuilt name that is in Pyserini's cache becomes its folder there
    # (one that is not stays a name, and the condition reports it as missing).
    for key in INDEX_VARIABLES:
        value = variables.get(key)
        if value and not Path(value).expanduser().exists():
            local = prebuilt_index_path(value)
            if local is not None:
                variables[key] = str(local)
    return Resolver(variables)


def _auto_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def reproduce(matrices: Sequence[Matrix], resolver: Resolver, output_dir: str | os.PathLike, *,
              conditions: Sequence[str] = (), dry_run: bool = False, allow_heavy: bool = False, reuse: bool = False,
              echo=print, latency_queries: int = 100) -> list[Result]:
    """Run the selected conditions of ``matrices`` (dependencies first) and return their results in matrix order.

    Args:
        matrices: the benchmarks' matrices.
        resolver: the placeholders (:func:`build_resolver`).
        output_dir: where run files go.
        conditions: condition names or shell-style patterns (``tas-b*``); empty = all.
        dry_run: only check and list the commands.
        allow_heavy: allow steps marked ``heavy``.
        reuse: evaluate existing run files instead of producing them again.
        echo: progress output.
        latency_queries: queries timed by :func:`probe_latency` per dense/bm25 condition (0: sidecar only).

    Raises:
        MatrixError: a pattern that matches no condition.
    """
    out = Path(output_dir)
    results: list[Result] = []
    for pat in conditions:
        if not any(fnmatch.fnmatchcase(c.name, pat) for m in matrices for c in m.conditions):
            known = sorted({c.name for m in matrices for c in m.conditions})
            raise MatrixError(f"no condition matches {pat!r}; known: {', '.join(known)}")
    for matrix in matrices:
        selected = [c for c in matrix.conditions
                    if not conditions or any(fnmatch.fnmatchcase(c.name, p) for p in conditions)]
        # dependencies first (a dependency not selected is still run, it is needed)
        order: list[Condition] = []

        def add(c: Condition, stack: tuple[str, ...] = ()) -> None:
            if c in order:
                return
            if c.name in stack:
                raise MatrixError(f"{matrix.path}: dependency cycle through {c.name!r}")
            for d in c.depends:
                add(matrix.condition(d), (*stack, c.name))
            order.append(c)
        for c in selected:
            add(c)
        run_paths: dict[str, Path] = {}
        by_name: dict[str, Result] = {}
        for c in order:
            echo(f"[{matrix.benchmark}] {c.name}")
            # in a dry run a dependency counts as available when it is itself runnable
            planned = {d for d, r in by_name.items() if r.status == "runnable"}
            for d in planned:
                run_paths[d] = out / matrix.benchmark / f"run.{matrix.benchmark}.{d}.txt"
            res = run_condition(c, matrix, resolver, out, run_paths, dry_run=dry_run, allow_heavy=allow_heavy,
                                reuse=reuse, echo=echo, planned=planned,
                                dep_latencies={d: by_name[d].latency_ms for d in c.depends if d in by_name},
                                latency_queries=latency_queries)
            if res.status == NOT_RUNNABLE:
                echo("  not runnable: " + "; ".join(res.problems))
            elif res.status == ERROR:
                echo("  error: " + "; ".join(res.problems))
            elif not dry_run:
                checked = [r for r in res.rows if r.verdict in (PASS, FAIL)]
                ok = sum(r.verdict == PASS for r in checked)
                echo(f"  {res.status}: {ok}/{len(checked)} published figures within tolerance")
            by_name[c.name] = res
        results.extend(by_name[c.name] for c in order if c in selected or by_name[c.name].status != NOT_RUNNABLE)
    return results


# --------------------------------------------------------------------------------------------------------------
# Leaderboard and plot
# --------------------------------------------------------------------------------------------------------------

def _f(x: float | None, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if signed:
        return "±0.0000" if abs(x) < 0.00005 else f"{x:+.4f}"
    return f"{x:.4f}"


def _verdict_text(row: Row) -> str:
    if row.verdict == PASS:
        return f"yes (±{row.tolerance:g})"
    if row.verdict == FAIL:
        return f"**NO** (±{row.tolerance:g})"
    if row.verdict == NOT_CHECKABLE:
        return f"not checkable: {row.detail}"
    if row.verdict == NO_REFERENCE:
        return "no published figure (measured only)"
    if row.verdict == NOT_RUNNABLE:
        return f"not runnable: {row.detail}"
    return f"error: {row.detail}"


def _short(problems: Sequence[str]) -> str:
    """The first problem without its trailing fix hint, plus how many more (the Conditions table lists them all)."""
    if not problems:
        return ""
    first = re.sub(r"\s*\([^()]*(\([^()]*\)[^()]*)*\)\s*$", "", problems[0])
    more = len(problems) - 1
    return first + (f" (+{more} more, see Conditions)" if more else "")


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _machine() -> str:
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f"GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f} at the end (latencies are inflated on a busy machine)"
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, "
            f"Python {platform.python_version()}{load}")


def leaderboard_markdown(results: Sequence[Result], resolver: Resolver | None = None) -> str:
    """The leaderboard as Markdown: a summary per condition, then one row per (condition, measure)."""
    lines = ["# kd_pyserini reproduction leaderboard", "",
             f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `kd-repro` on: {_machine()}.",
             "",
             "Verdicts: *yes* = measured within the tolerance of the published figure; *NO* = outside it; "
             "*not checkable* = the run cannot compute that measure (a top-100 run and a depth-1000 measure); "
             "*not runnable* = an input is missing here (never counted as passed); *no published figure* = measured "
             "only. Measures follow ir_measures names (`RR(rel=2)@10` = `trec_eval -l 2 -M 10 -m recip_rank`), "
             "means over all judged queries (`trec_eval -c`).", ""]
    counts = {s: sum(r.status == s for r in results) for s in (PASS, FAIL, NO_REFERENCE, NOT_RUNNABLE, ERROR)}
    lines += [f"**{len(results)} conditions: {counts[PASS]} reproduced, {counts[FAIL]} outside tolerance, "
              f"{counts[NO_REFERENCE]} measured without a published figure, {counts[ERROR]} failed to run, "
              f"{counts[NOT_RUNNABLE]} not runnable here.**", "", "## Conditions", "",
              "| benchmark | condition | status | latency (ms/query) | run file / what is missing |",
              "|:---|:---|:---|---:|:---|"]
    for r in results:
        status = {PASS: "reproduced", FAIL: "**outside tolerance**", NO_REFERENCE: "measured (no published figure)",
                  NOT_RUNNABLE: "not runnable", ERROR: "**error**"}.get(r.status, r.status)
        what = r.run_file or ""
        if r.status in (NOT_RUNNABLE, ERROR):
            what = "; ".join(r.problems)
        lat = _f(r.latency_ms).rstrip("0").rstrip(".") if r.latency_ms is not None else ""
        if r.latency_ms is not None:
            lat = f"{r.latency_ms:.1f}"
        lines.append(f"| {r.condition.benchmark} | {_md_escape(r.condition.name)} | {status} | {lat} | "
                     f"{_md_escape(what)} |")
    lines += ["", "## Scores", "",
              "| benchmark | condition | measure | expected | measured | delta | within tolerance | source |",
              "|:---|:---|:---|---:|---:|---:|:---|:---|"]
    for r in results:
        for row in r.rows:
            lines.append(f"| {row.benchmark} | {_md_escape(row.condition)} | `{row.measure}` | {_f(row.expected)} | "
                         f"{_f(row.measured)} | {_f(row.delta, signed=True)} | {_md_escape(_verdict_text(row))} | "
                         f"{_md_escape(row.source or '')} |")
    lat_notes = sorted({r.latency_source for r in results if r.latency_source})
    if lat_notes:
        lines += ["", "Latency: " + "; ".join(lat_notes) + "."]
    cmds = [r for r in results if r.commands]
    if cmds:
        lines += ["", "## Commands", ""]
        for r in cmds:
            lines.append(f"- `{r.condition.key}`:")
            lines += [f"  `{_md_escape(c)}`" + ("  " if j < len(r.commands) - 1 else "")
                      for j, c in enumerate(r.commands)]
    return "\n".join(lines) + "\n"


def leaderboard_json(results: Sequence[Result]) -> list[dict[str, Any]]:
    """The leaderboard as JSON-able records (one per condition, with its rows)."""
    out = []
    for r in results:
        out.append({
            "benchmark": r.condition.benchmark, "condition": r.condition.name, "display": r.condition.display,
            "type": r.condition.type, "status": r.status, "run_file": r.run_file, "problems": r.problems,
            "commands": r.commands, "latency_ms": r.latency_ms, "latency_source": r.latency_source,
            "wall_s": r.wall_s, "n_queries": r.n_queries,
            "rows": [{"measure": w.measure, "expected": w.expected, "measured": w.measured, "delta": w.delta,
                      "tolerance": w.tolerance, "source": w.source, "verdict": w.verdict, "detail": w.detail}
                     for w in r.rows]})
    return out


_TYPE_MARKERS = {"bm25": "s", "dense": "o", "rerank": "^", "hybrid": "D", "reference-run": "*"}


def _points(results: Sequence[Result], matrices: Mapping[str, Matrix]):
    """Per benchmark: measured points (latency, score), published points with a latency, and lines (no latency)."""
    by_bench: dict[str, dict[str, list]] = {}
    for r in results:
        m = matrices.get(r.condition.benchmark)
        if m is None:
            continue
        d = by_bench.setdefault(m.benchmark, {"measured": [], "published": [], "lines": []})
        measured = next((w.measured for w in r.rows if w.measure == m.primary and w.measured is not None), None)
        published = next((e.value for e in r.condition.expected if e.measure == m.primary), None)
        label = r.condition.name
        if measured is not None and r.latency_ms is not None:
            d["measured"].append((r.latency_ms, measured, label, r.condition.type))
        elif measured is not None:
            d["lines"].append((measured, f"{label} (measured, no latency)", "measured"))
        elif published is not None and r.condition.published_latency_ms is not None:
            d["published"].append((r.condition.published_latency_ms, published, label, r.condition.type))
        elif published is not None:
            d["lines"].append((published, f"{label} (published)", "published"))
    return by_bench


def plot_efficiency(results: Sequence[Result], matrices: Sequence[Matrix], path: str | os.PathLike) -> Path:
    """Efficiency-effectiveness plot: query latency (ms, log scale) vs the benchmark's primary measure.

    One panel per benchmark. Conditions run here are filled markers at (measured latency, measured score);
    published figures with a published latency are hollow markers labelled *published*; figures without a latency
    (published numbers of conditions not run here, and reference runs, which have no timing) are dashed horizontal
    lines labelled at the right.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mats = {m.benchmark: m for m in matrices}
    data = _points(results, mats)
    benches = [b for b in mats if b in data and any(data[b].values())]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = max(1, len(benches))
    cols = 2 if n > 1 else 1
    rows_n = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(7.5 * cols, 4.8 * rows_n), squeeze=False)
    colors = {"bm25": "#1f77b4", "dense": "#d62728", "rerank": "#2ca02c", "hybrid": "#9467bd",
              "reference-run": "#7f7f7f"}
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    if not benches:
        ax = axes.flat[0]
        ax.text(0.5, 0.5, "no condition has a score to plot", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    for ax, bench in zip(axes.flat, benches):
        d, primary = data[bench], mats[bench].primary
        xs = [p[0] for p in d["measured"] + d["published"]]
        for lat, score, label, typ in d["measured"]:
            ax.scatter([lat], [score], marker=_TYPE_MARKERS.get(typ, "o"), s=70, color=colors.get(typ, "k"),
                       zorder=3, label=f"{typ} (measured here)")
            ax.annotate(f"{label}\n{score:.4f}", (lat, score), textcoords="offset points", xytext=(7, 4), fontsize=8)
        for lat, score, label, typ in d["published"]:
            ax.scatter([lat], [score], marker=_TYPE_MARKERS.get(typ, "o"), s=70, facecolors="none",
                       edgecolors=colors.get(typ, "k"), zorder=3, label="published")
            ax.annotate(f"{label} (published)\n{score:.4f}", (lat, score), textcoords="offset points",
                        xytext=(7, -12), fontsize=8, color="#555555")
        ys = [p[1] for p in d["measured"] + d["published"]] + [p[0] for p in d["lines"]]
        lo, hi = min(ys), max(ys)
        pad = max(0.03, 0.12 * (hi - lo))
        ax.set_ylim(lo - pad, hi + pad)
        if xs:
            ax.set_xscale("log")
            ax.set_xlim(min(xs) / 3, max(xs) * 10)
        else:
            ax.set_xscale("log")
            ax.set_xlim(1, 1000)
        # lines: merge equal values, draw them, then label them at the left, spread so labels never overlap
        merged: dict[float, list[str]] = {}
        kinds: dict[float, str] = {}
        for score, label, kind in d["lines"]:
            key = round(score, 4)
            merged.setdefault(key, []).append(label)
            kinds[key] = "measured" if kind == "measured" or kinds.get(key) == "measured" else kind
        for score in merged:
            style = dict(color="#555555", ls="--", lw=0.9) if kinds[score] == "published" else \
                dict(color="#555555", ls=":", lw=1.4)
            ax.axhline(score, zorder=1, **style)
        ymin, ymax = ax.get_ylim()
        gap = 0.06 * (ymax - ymin)
        targets = sorted(merged, reverse=True)
        ys: list[float] = []
        for score in targets:  # top-down: each label at its line, or just below the previous label
            ys.append(min(score, ys[-1] - gap) if ys else score)
        if ys and ys[-1] < ymin + gap / 2:  # ran off the bottom: shift the whole stack up
            shift = ymin + gap / 2 - ys[-1]
            ys = [y + shift for y in ys]
            for i in range(len(ys) - 2, -1, -1):  # keep the order after shifting
                ys[i] = max(ys[i], ys[i + 1] + gap)
        for score, y in zip(targets, ys):
            text = f"{' / '.join(merged[score])}: {score:.4f}"
            box = dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85)
            ax.annotate(text, xy=(0.30, score), xycoords=("axes fraction", "data"), xytext=(0.015, y),
                        textcoords=("axes fraction", "data"), ha="left", va="center", fontsize=7, color="#222222",
                        bbox=box, zorder=4, arrowprops=None if abs(y - score) < 1e-9 else
                        dict(arrowstyle="-", color="#999999", lw=0.6, shrinkA=0, shrinkB=0))
        if ys and max(ys) > ymax - gap / 2:
            ax.set_ylim(ymin, max(ys) + gap)
        if not (d["measured"] or d["published"]):
            ax.text(0.5, 0.5, "no condition timed here:\nscores shown without a latency", transform=ax.transAxes,
                    ha="center", va="center", fontsize=8, color="#999999", style="italic")
        ax.set_title(f"{bench}", fontsize=11)
        ax.set_xlabel("query latency (ms per query, log scale)")
        ax.set_ylabel(primary)
        ax.grid(True, which="both", alpha=0.25)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        if uniq:
            ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="lower left")
    fig.suptitle("Efficiency vs effectiveness — filled markers: run and timed here; dashed lines: published, "
                 "no latency;\ndotted lines: measured here without a latency (reference runs)", fontsize=9, y=0.995)
    fig.tight_layout(rect=(0, 0, 1, 0.965))
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def write_leaderboard(results: Sequence[Result], matrices: Sequence[Matrix], output_dir: str | os.PathLike,
                      resolver: Resolver | None = None, plot: bool = True) -> dict[str, Path]:
    """Write ``leaderboard.md``, ``leaderboard.json`` and (``plot``) ``efficiency.png`` into ``output_dir``."""
    from kd_pyserini.trec_io import atomic_write

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "leaderboard.md", "json": out / "leaderboard.json"}
    with atomic_write(paths["markdown"]) as f:
        f.write(leaderboard_markdown(results, resolver))
    with atomic_write(paths["json"]) as f:
        json.dump(leaderboard_json(results), f, indent=2)
        f.write("\n")
    logs = [r for r in results if r.log]
    if logs:
        with atomic_write(out / "commands.log") as f:
            for r in logs:
                f.write(f"### {r.condition.key}\n{r.log}\n")
        paths["log"] = out / "commands.log"
    if plot:
        paths["plot"] = plot_efficiency(results, matrices, out / "efficiency.png")
    return paths


# --------------------------------------------------------------------------------------------------------------
# kd-eval hook
# --------------------------------------------------------------------------------------------------------------

def evaluate_benchmark_runs(benchmark: str, output_dir: str | os.PathLike | None = None,
                            directory: str | os.PathLike | None = None) -> dict[str, dict[str, float]]:
    """The reproduction runs present for ``benchmark``, evaluated, beside the published numbers (``kd-eval BENCH``).

    Looks for each condition's run file: a reference run's file, or
    ``<output_dir>/<benchmark>/run.<benchmark>.<condition>.txt`` written by ``kd-repro`` (``output_dir`` defaults to
    ``$KD_PYSERINI_REPRO_OUTPUT`` or ``runs/output``). Nothing is run.

    Returns:
        ``{row: {measure: value}}`` with, per condition found, a row ``<condition>`` (measured, the matrix's
        measures) followed by ``<condition> [published]`` (its published figures), in matrix order. Empty when no
        run is present (a note goes to stderr).
    """
    matrix = load_matrices(directory, [benchmark])[0]
    out = Path(output_dir or os.environ.get("KD_PYSERINI_REPRO_OUTPUT") or (matrix.path.parent / "output"))
    resolver = build_resolver(output_dir=out)
    table: dict[str, dict[str, float]] = {}
    run_paths: dict[str, Path] = {}
    for c in matrix.conditions:
        own = out / matrix.benchmark / f"run.{matrix.benchmark}.{c.name}.txt"
        extra = _extra(matrix, own, run_paths)
        if resolver.missing(c.run, extra):
            continue
        path = Path(resolver.fill(c.run, extra)).expanduser()
        if not path.is_file():
            continue
        run_paths[c.name] = path
        measured = _evaluate_file(path, matrix, [e.measure for e in c.expected])
        table[c.name] = {m: v for m, v in measured.items() if not _checkable(m, c.depth)}
        published = {e.measure: e.value for e in c.expected}
        if published:
            table[f"{c.name} [published]"] = published
    if not table:
        print(f"kd-eval: no reproduction runs for {matrix.benchmark} under {out}; run 'kd-repro -b "
              f"{matrix.benchmark}' first", file=sys.stderr)
    return table


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------

_PATH_OPTIONS = {
    "data": "data", "collection": "msmarco_collection", "scifact_corpus": "scifact_corpus",
    "index_root": "index_root", "bm25_index": "bm25_index", "tasb_index": "tasb_index",
    "margin_mse_index": "margin_mse_index", "tasb_model": "tasb_model", "margin_mse_model": "margin_mse_model",
    "threads": "threads", "batch_size": "batch_size", "device": "device",
}


def _parse_sets(values: Sequence[str]) -> dict[str, str]:
    out = {}
    for v in values:
        key, eq, val = v.partition("=")
        if not eq or not key.strip():
            raise click.BadParameter(f"{v!r} is not NAME=VALUE", param_hint="--set")
        out[key.strip()] = val
    return out


@click.command(name="kd-repro", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--benchmark", "-b", "benchmarks", multiple=True, metavar="NAME",
              help="msmarco-dev, trec-dl-19, trec-dl-20, scifact (or aliases: dl19-passage, dl20, ...); repeatable "
                   "[default: all].")
@click.option("--condition", "-c", "conditions", multiple=True, metavar="PATTERN",
              help="Condition names or shell patterns (tas-b, 'bm25-*'); repeatable [default: all].")
@click.option("--output-dir", "-o", default="runs/output", show_default=True, type=click.Path(file_okay=False),
              help="Run files, leaderboard.md/.json, efficiency.png.")
@click.option("--dry-run", is_flag=True, help="Check inputs and print the filled-in commands; run nothing.")
@click.option("--list", "list_only", is_flag=True, help="List the benchmarks and conditions and exit.")
@click.option("--paths", "paths_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML of local paths: msmarco_collection, index_root, bm25_index, tasb_index, tasb_model, ...")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="Any placeholder value; repeatable.")
@click.option("--data", type=click.Path(), help="The data folder (default $KD_PYSERINI_DATA).")
@click.option("--collection", type=click.Path(), help="MS MARCO passage collection.tsv (${msmarco_collection}).")
@click.option("--scifact-corpus", type=click.Path(), help="BEIR SciFact corpus.jsonl[.gz].")
@click.option("--index-root", type=click.Path(), help="Folder for indexes kd-repro builds [default: OUTPUT/indexes].")
@click.option("--bm25-index", help="MS MARCO Lucene index: folder or prebuilt name [msmarco-v1-passage].")
@click.option("--tasb-index", help="TAS-B Faiss index: folder or prebuilt name.")
@click.option("--margin-mse-index", help="Margin-MSE Faiss index: folder or prebuilt name.")
@click.option("--tasb-model", help="TAS-B weights: card, hub id or local folder.")
@click.option("--margin-mse-model", help="Margin-MSE weights: card, hub id or local folder.")
@click.option("--threads", help="Threads for the searches.")
@click.option("--batch-size", help="Query/passage batch size.")
@click.option("--device", help="cpu, cuda, cuda:1 [default: cuda when present].")
@click.option("--matrix-dir", type=click.Path(file_okay=False, exists=True),
              help="Folder of matrix YAML files [default: the repository's runs/].")
@click.option("--allow-heavy", is_flag=True, help="Also run steps marked heavy (encoding all of MS MARCO).")
@click.option("--reuse", is_flag=True, help="Evaluate existing run files instead of producing them again.")
@click.option("--no-plot", is_flag=True, help="Do not draw efficiency.png.")
@click.option("--latency-queries", type=click.IntRange(min=0), default=100, show_default=True,
              help="Queries timed one at a time (after loading) per dense/BM25 condition, for the latency column "
                   "and plot; 0 = use kd-search's elapsed time instead.")
@click.option("--strict", is_flag=True, help="Exit 1 also when a condition is not runnable.")
def main(benchmarks, conditions, output_dir, dry_run, list_only, paths_file, sets, matrix_dir, allow_heavy, reuse,
         no_plot, latency_queries, strict, **path_opts):
    """Run the reproduction matrix (runs/*.yaml): every condition whose inputs exist here, checked against the
    published scores; the others are listed as not runnable with what is missing.

    Exit status: 0 when every condition that ran is within tolerance (or has no published figure), 1 when one is
    outside tolerance or a command failed (and with --strict, when one is not runnable), 2 on usage errors.

    \b
    Examples:
      kd-repro --dry-run
      kd-repro -b trec-dl-19 -b trec-dl-20
      kd-repro -b scifact --output-dir runs/output
      kd-repro --paths local.yaml --allow-heavy
    """
    overrides = {_PATH_OPTIONS[k]: v for k, v in path_opts.items() if v is not None}
    overrides.update(_parse_sets(sets))
    try:
        matrices = load_matrices(matrix_dir, benchmarks)
        resolver = build_resolver(paths_file, overrides, output_dir)
    except MatrixError as e:
        raise click.UsageError(str(e)) from None
    unknown = [k for k in _parse_sets(sets) if k not in DEFAULT_PATHS and k != "output_dir"]
    if unknown:
        raise click.UsageError(f"--set: unknown names {', '.join(unknown)}; known: {', '.join(sorted(DEFAULT_PATHS))}")
    if list_only:
        for m in matrices:
            click.echo(f"{m.benchmark} ({m.path}): topics {m.topics}, qrels {m.qrels}, measures {', '.join(m.measures)}")
            for c in m.conditions:
                click.echo(f"  {c.name:34s} {c.type:13s} {c.display}")
        return
    echo = lambda s: click.echo(s, err=True)  # noqa: E731
    try:
        results = reproduce(matrices, resolver, output_dir, conditions=conditions, dry_run=dry_run,
                            allow_heavy=allow_heavy, reuse=reuse, echo=echo, latency_queries=latency_queries)
    except MatrixError as e:
        raise click.UsageError(str(e)) from None
    if dry_run:
        for r in results:
            state = "RUNNABLE" if r.status == "runnable" else "NOT RUNNABLE: " + "; ".join(r.problems)
            click.echo(f"{r.condition.key}: {state}")
            for c in r.commands:
                click.echo(f"    {c}")
            if r.condition.type == "reference-run" and r.run_file:
                click.echo(f"    (evaluate {r.run_file})")
        return
    paths = write_leaderboard(results, matrices, output_dir, resolver, plot=not no_plot)
    click.echo(leaderboard_markdown(results, resolver))
    click.echo(f"kd-repro: wrote {', '.join(str(p) for p in paths.values())}", err=True)
    bad = any(r.status in (FAIL, ERROR) for r in results) or (strict and any(r.status == NOT_RUNNABLE
                                                                              for r in results))
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
