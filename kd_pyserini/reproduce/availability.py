"""What this machine has, checked offline: model weights, Pyserini prebuilt indexes, files, topics and qrels.

Nothing here downloads anything. A folder or file is checked by existence; a Pyserini prebuilt index by its folder
in Pyserini's cache (:func:`kd_pyserini.resources.pyserini_cache`); model weights as a local folder or in the local
Hugging Face cache (:func:`kd_pyserini.encoding.hub_cached`). :func:`check_condition` combines these into the
list of what a condition is missing, and :func:`build_resolver` gathers this machine's placeholder values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kd_pyserini.reproduce.matrix import (COMMAND_MODULES, DEFAULT_PATHS, INDEX_VARIABLES, Condition, Matrix,
                                          MatrixError, Resolver)

__all__ = ["prebuilt_info", "prebuilt_index_path", "model_problem", "index_problem", "file_problem", "Availability",
           "check_condition", "build_resolver"]

_PREBUILT_TABLES = ("TF_INDEX_INFO", "IMPACT_INDEX_INFO", "FAISS_INDEX_INFO", "LUCENE_HNSW_INDEX_INFO",
                    "LUCENE_FLAT_INDEX_INFO")


def prebuilt_info(name: str) -> dict[str, Any] | None:
    """Pyserini's record of a prebuilt index name (without touching the network), or ``None``."""
    try:
        from pyserini import prebuilt_index_info as pii
    except Exception:  # noqa: BLE001  (pyserini missing or broken: treat as "not a prebuilt name")
        return None
    for table in _PREBUILT_TABLES:
        info = getattr(pii, table, {}).get(name)
        if info is not None and info.get("urls"):  # a record without a download URL names no usable index
            return info
    return None


def prebuilt_index_path(name: str) -> Path | None:
    """Where Pyserini keeps prebuilt index ``name`` once downloaded (``indexes/<tarball>.<md5>``), if it is there."""
    from kd_pyserini.resources import pyserini_cache

    info = prebuilt_info(name)
    if info is None:
        return None
    stem = re.sub(r"\.tar\.gz.*$", "", info["urls"][0].split("/")[-1])
    path = pyserini_cache().expanduser() / "indexes" / f"{stem}.{info['md5']}"
    return path if path.exists() else None


def _gb(n_bytes: Any) -> str:
    try:
        return f"{int(n_bytes) / 1e9:.1f} GB"
    except (TypeError, ValueError):
        return "size unknown"


#: whether the Hugging Face hub answered, probed once per process (tests reset it).
_HUB: dict[str, bool] = {}


def _hub_reachable() -> bool:
    if "up" not in _HUB:
        from kd_pyserini.encoding import hub_reachable

        _HUB["up"] = hub_reachable(timeout=3.0)
    return _HUB["up"]


def model_problem(name: str) -> str | None:
    """Why the weights of encoder ``name`` (card, hub id or folder) cannot be loaded offline, or ``None``.

    Nothing is downloaded: a folder must hold ``config.json``; a hub id must be in the local Hugging Face cache.
    """
    from kd_pyserini.cards import UnknownEncoderError, get_card
    from kd_pyserini.encoding import hub_cached

    try:
        card = get_card(name)
    except (UnknownEncoderError, FileNotFoundError) as e:
        return str(e)
    location = card.model_location()
    path = Path(location).expanduser()
    if path.is_dir():
        return None if (path / "config.json").is_file() else f"model folder {path} has no config.json"
    if hub_cached(location):
        return None
    hub = "the hub is unreachable" if not _hub_reachable() else "kd-repro does not download weights"
    return (f"weights {location} not in the local Hugging Face cache and {hub} (fetch them with "
            f"'hf download {location}', or set the model to a local folder)")


def index_problem(value: str) -> str | None:
    """Why index ``value`` (a folder or a Pyserini prebuilt name) is not usable here, or ``None``."""
    from kd_pyserini.resources import pyserini_cache

    if Path(value).expanduser().exists():
        return None
    info = prebuilt_info(value)
    if info is not None:
        if prebuilt_index_path(value) is not None:
            return None
        size = info.get("size compressed (bytes)", info.get("size"))  # the key on Pyserini 1.6 / 2.x
        return (f"prebuilt index {value} ({_gb(size)} compressed) not in Pyserini's "
                f"cache {pyserini_cache().expanduser() / 'indexes'} (kd-repro does not download it; see "
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


def _add(problems: list[str], problem: str | None) -> None:
    if problem and problem not in problems:
        problems.append(problem)


def _check_requires(req: Mapping[str, Sequence[str]], resolver: Resolver, extra: Mapping[str, str | None],
                    creatable: set[str], problems: list[str]) -> None:
    checkers = {"files": file_problem, "indexes": index_problem, "models": model_problem}
    for kind, items in req.items():
        for item in items:
            missing = resolver.missing(item, extra)
            if missing:
                for m in missing:
                    _add(problems, _unset(m))
                continue
            value = resolver.fill(item, extra)
            if kind != "models" and value in creatable:
                continue
            _add(problems, checkers[kind](value))


def _check_topics_qrels(matrix: Matrix, problems: list[str]) -> None:
    from kd_pyserini.resources import qrels_path, topics_path

    for what, name, finder in (("topics", matrix.topics, topics_path), ("qrels", matrix.qrels, qrels_path)):
        try:
            if finder(name) is None:
                problems.append(f"{what} {name} not found locally (set KD_PYSERINI_DATA to the folder holding "
                                "topics-and-qrels/)")
        except FileNotFoundError as e:
            problems.append(str(e))


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
    from importlib.util import find_spec

    av = Availability()
    extra = matrix.placeholders(output, run_paths)
    _check_topics_qrels(matrix, av.problems)
    creatable: set[str] = set()
    for i, step in enumerate(cond.steps):
        if step.creates is None or resolver.missing(step.creates, extra):
            continue  # an unset placeholder is reported through the step's command below
        target = resolver.fill(step.creates, extra)
        if Path(target).expanduser().exists():
            av.skip_steps[i] = "exists, skipped"
        elif prebuilt_info(target) is not None:
            # a Pyserini prebuilt name is fetched, not built (checked as an index requirement)
            av.skip_steps[i] = "prebuilt index, not built"
        elif step.heavy and not allow_heavy:
            av.problems.append(f"{target} does not exist and building it is a long job (step: "
                               f"{step.program} ...); build it first (see docs/full-reproduction.md) or "
                               "pass --allow-heavy")
        else:
            creatable.add(target)
    _check_requires(cond.requires, resolver, extra, creatable, av.problems)
    for i, step in enumerate(cond.steps):
        if i in av.skip_steps:
            continue
        _check_requires(step.requires, resolver, extra, creatable, av.problems)
        for m in resolver.missing(step.command, extra):
            _add(av.problems, _unset(m))
        module = COMMAND_MODULES.get(step.program)
        if module is not None and find_spec(module) is None:
            av.problems.append(f"{step.program} ({module}) is not installed in this kd_pyserini")
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


def _auto_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def build_resolver(paths_file: str | os.PathLike | None = None, overrides: Mapping[str, str | None] | None = None,
                   output_dir: str | os.PathLike = "runs/output") -> Resolver:
    """This machine's placeholder values: :data:`DEFAULT_PATHS` < ``$KD_PYSERINI_DATA`` < the ``--paths`` YAML <
    ``overrides``; ``device: auto`` becomes ``cuda`` or ``cpu``, and a Pyserini prebuilt index name that is in
    Pyserini's cache becomes its folder there (kd-search takes folders; one that is not stays a name, and the
    condition reports it as missing).

    Raises:
        MatrixError: the paths file is not a mapping of names to strings, or names an unknown placeholder.
    """
    from kd_pyserini.resources import data_dir

    variables: dict[str, str | None] = dict(DEFAULT_PATHS)
    variables["output_dir"] = str(Path(output_dir))
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
    for key in INDEX_VARIABLES:
        value = variables.get(key)
        if value and not Path(value).expanduser().exists():
            local = prebuilt_index_path(value)
            if local is not None:
                variables[key] = str(local)
    return Resolver(variables)
