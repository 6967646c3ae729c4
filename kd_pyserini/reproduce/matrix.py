"""The reproduction matrix: its schema, the YAML loader, and the ``${...}`` placeholder templating.

The matrix lives in the top-level ``runs/`` folder, one YAML file per benchmark; ``runs/README.md`` describes the
format. Every *condition* carries the commands that produce its run and the published figures it should reach.
This module only reads and validates; what can run here is :mod:`kd_pyserini.reproduce.availability`, running is
:mod:`kd_pyserini.reproduce.runner`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kd_pyserini.errors import KdError

__all__ = ["ROOT", "DEFAULT_PATHS", "INDEX_VARIABLES", "COMMAND_MODULES", "CONDITION_TYPES", "MatrixError",
           "Expected", "Step", "Condition", "Matrix", "matrix_dir", "load_matrix", "load_matrices", "Resolver"]

ROOT = Path(__file__).resolve().parent.parent.parent

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
    # the published figures are fp32 ones: the matrix pins fp32 (--set precision=auto to use the machine's fastest)
    "precision": "fp32",
}

#: Placeholders that name an index: a Pyserini prebuilt name is replaced by its folder in Pyserini's cache.
INDEX_VARIABLES = ("bm25_index", "tasb_index", "margin_mse_index")

#: Console scripts used in the matrix commands -> the module run as ``python -m``.
COMMAND_MODULES: dict[str, str] = {
    "kd-index": "kd_pyserini.cli.index",
    "kd-search": "kd_pyserini.cli.search",
    "kd-fuse": "kd_pyserini.cli.fuse",
    "kd-eval": "kd_pyserini.cli.eval",
    "kd-train": "kd_pyserini.cli.train",
    "kd-pyserini": "kd_pyserini.pyserini",
}

CONDITION_TYPES = ("reference-run", "bm25", "dense", "rerank", "hybrid")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.:-]+)\}")


class MatrixError(KdError, ValueError):
    """A malformed matrix file (the message names the file and the condition), or a selection it does not have."""


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

    @property
    def program(self) -> str:
        """The command's first word (``kd-search``, ``kd-index``, ``python``...)."""
        return self.command.split()[0] if self.command.split() else ""


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

    def run_file(self, output_dir: str | os.PathLike, condition: str) -> Path:
        """Where ``kd-repro`` writes the run of ``condition``:
        ``<output_dir>/<benchmark>/run.<benchmark>.<condition>.txt``."""
        return Path(output_dir) / self.benchmark / f"run.{self.benchmark}.{condition}.txt"

    def placeholders(self, output: str | os.PathLike, run_paths: Mapping[str, os.PathLike | str]) -> dict[str, str]:
        """The placeholders the matrix itself fills: ``${output}`` (the condition's own run file), ``${topics}``,
        ``${qrels}``, ``${benchmark}`` and ``${run:NAME}`` (the run files of the conditions produced so far)."""
        extra = {"output": str(output), "topics": self.topics, "qrels": self.qrels, "benchmark": self.benchmark}
        extra.update({f"run:{k}": str(v) for k, v in run_paths.items()})
        return extra


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
    from kd_pyserini.evaluation import parse_measure

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


def _condition(c: Any, i: int, bench: str, path: Path) -> Condition:
    where = f"{path}: condition {c.get('name', i)!r}"
    if "name" not in c or "type" not in c:
        raise MatrixError(f"{where}: needs 'name' and 'type'")
    if c["type"] not in CONDITION_TYPES:
        raise MatrixError(f"{where}: type {c['type']!r} is not one of {', '.join(CONDITION_TYPES)}")
    if c["type"] == "reference-run" and "run" not in c:
        raise MatrixError(f"{where}: a reference-run condition needs 'run' (the run file)")
    if c["type"] != "reference-run" and not c.get("steps"):
        raise MatrixError(f"{where}: needs 'steps' (the commands that produce ${{output}})")
    latency = c.get("published_latency_ms")
    return Condition(
        benchmark=bench, name=str(c["name"]), display=str(c.get("display", c["name"])), type=c["type"],
        steps=tuple(_step(s, where) for s in c.get("steps") or []), run=str(c.get("run", "${output}")),
        depth=int(c.get("depth", 1000)), requires=_requires(c.get("requires"), where),
        depends=tuple(c.get("depends") or ()), expected=_expected(c.get("expected"), where),
        pyserini_condition=c.get("pyserini_condition"),
        published_latency_ms=float(latency) if latency is not None else None,
        note=(" ".join(str(c["note"]).split()) if c.get("note") else None))


def load_matrix(path: str | os.PathLike) -> Matrix:
    """Read and validate one matrix YAML file.

    Raises:
        MatrixError: a missing key, an unknown condition type or measure, a duplicate condition name, or a
            dependency on an unknown condition.
    """
    import yaml

    from kd_pyserini.evaluation import official_measures, parse_measures

    path = Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for key in ("benchmark", "topics", "qrels", "conditions"):
        if key not in data:
            raise MatrixError(f"{path}: missing top-level key {key!r}")
    bench = str(data["benchmark"])
    measures = tuple(str(m) for m in (parse_measures(data["measures"]) if data.get("measures")
                                      else official_measures(bench)))
    conditions = [_condition(c, i, bench, path) for i, c in enumerate(data["conditions"])]
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
    """All matrix files of ``directory`` (default :func:`matrix_dir`), optionally only some benchmarks, in the
    order of :data:`kd_pyserini.resources.BENCHMARKS` (benchmarks it does not know last, by name).

    Raises:
        MatrixError: no matrix files, or an unknown benchmark name (the message lists the known ones).
    """
    from kd_pyserini.evaluation import resolve_benchmark
    from kd_pyserini.resources import BENCHMARKS

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
    order = {b.key: i for i, b in enumerate(BENCHMARKS.values())}
    return sorted(matrices, key=lambda m: (order.get(m.benchmark, len(order)), m.benchmark))


class Resolver:
    """Fills ``${name}`` placeholders from a variables mapping (values may use other placeholders).

    ``${output}`` is the condition's own run file and ``${run:NAME}`` the run file of condition ``NAME`` of the same
    benchmark; ``${topics}``/``${qrels}``/``${benchmark}`` come from the matrix (:meth:`Matrix.placeholders`).
    """

    def __init__(self, variables: Mapping[str, str | None]):
        self.variables: dict[str, str | None] = dict(variables)

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
            def sub(m: re.Match[str]) -> str:
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
