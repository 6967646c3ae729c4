"""What ``kd-search`` records beside a run file ``RUN``: the sidecar ``RUN.json`` (provenance, timing, evaluation).

The ONE latency contract. The sidecar's top level holds:

``queries`` (int)
    queries in the run.
``search_seconds`` (float)
    seconds spent encoding the queries and searching (re-ranking: scoring the candidates; hybrid: both searches and
    the fusion), with the models and indexes already loaded.
``elapsed_seconds`` (float)
    the whole command, loading included.
``run_sha256`` (str)
    the SHA-256 of the run file's bytes as written (gzip bytes for ``RUN.gz``): the sidecar describes that run and
    no other. :func:`read_sidecar` (and so :func:`sidecar_latency`) ignores, with a warning, a sidecar whose run is
    missing or has other bytes, e.g. after a kill between the two writes of
    :func:`kd_pyserini.search.output.write_run_and_sidecar` (sidecar first, then the run renamed into place).
    Sidecars written before the checksum existed are read as they are.

:func:`sidecar_latency` turns them into milliseconds per query; other tools call it instead of reading keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd_pyserini.atomic import atomic_write
from kd_pyserini.search.topics import Topics
from kd_pyserini.trec_io import Run

__all__ = ["SIDECAR_SUFFIX", "QUERIES_KEY", "SEARCH_SECONDS_KEY", "ELAPSED_SECONDS_KEY", "RUN_SHA256_KEY",
           "DEFAULT_MEASURES", "SearchTiming", "sidecar_path", "file_sha256", "write_sidecar", "read_sidecar",
           "sidecar_latency", "index_provenance", "evaluate_run", "qrels_for", "measures_for",
           "missing_query_messages"]

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".json"
QUERIES_KEY = "queries"
SEARCH_SECONDS_KEY = "search_seconds"
ELAPSED_SECONDS_KEY = "elapsed_seconds"
RUN_SHA256_KEY = "run_sha256"
DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100", "R@1000")


@dataclass(frozen=True)
class SearchTiming:
    """The timing a sidecar records (see the module docstring)."""

    queries: int
    search_seconds: float
    elapsed_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {QUERIES_KEY: int(self.queries), SEARCH_SECONDS_KEY: round(float(self.search_seconds), 4),
                ELAPSED_SECONDS_KEY: round(float(self.elapsed_seconds), 3)}

    @property
    def ms_per_query(self) -> float | None:
        return 1000.0 * self.search_seconds / self.queries if self.queries else None


def sidecar_path(run_file: str | os.PathLike) -> Path:
    """``RUN.json`` for the run file ``RUN``."""
    return Path(str(run_file) + SIDECAR_SUFFIX)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_sidecar(run_path: str | os.PathLike, config: Mapping[str, Any],
                  timing: SearchTiming | None = None, *, run_sha256: str | None = None,
                  to: str | os.PathLike | None = None) -> Path:
    """Write ``RUN.json`` next to a run file (atomically), adding versions, time, the command line, ``timing`` and
    the run's checksum.

    Args:
        run_path: the run file ``RUN`` the sidecar describes.
        config: what to record.
        timing: the latency contract's numbers.
        run_sha256: the checksum of the run's bytes (default: that of ``run_path`` as it is now, when it exists).
            :func:`kd_pyserini.search.output.write_run_and_sidecar` passes the checksum of the run it is about to
            rename into place, so that the sidecar can be written first.
        to: write the sidecar there instead of ``RUN.json`` (a temporary name the caller renames).
    """
    from kd_pyserini.index import package_versions

    out = Path(to) if to is not None else sidecar_path(run_path)
    if run_sha256 is None and Path(run_path).is_file():
        run_sha256 = file_sha256(run_path)
    data = {"run": str(Path(run_path).resolve()), **config, **(timing.as_dict() if timing else {})}
    if run_sha256 is not None:
        data[RUN_SHA256_KEY] = run_sha256
    data.setdefault("versions", package_versions())
    data.setdefault("command", list(sys.argv))
    data.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    with atomic_write(out) as f:
        json.dump(data, f, indent=2, default=str)
        f.write("\n")
    return out


def read_sidecar(run_file: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of ``run_file`` as a dict, or ``None`` when it is missing or unreadable, or when it records a
    checksum (``run_sha256``) that the run file on disk does not have (missing, or another run: logged as a
    warning), so that a sidecar is never taken for a run it does not describe."""
    path = sidecar_path(run_file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    want = data.get(RUN_SHA256_KEY)
    if want is not None:
        try:
            have = file_sha256(run_file)
        except OSError:
            have = None
        if have != want:
            log.warning("%s does not describe %s (%s): ignored; run kd-search again to write both", path, run_file,
                        "the run file is missing" if have is None else "the run's SHA-256 differs from the one it "
                        "records, e.g. after an interrupted kd-search")
            return None
    return data


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def sidecar_latency(run_file: str | os.PathLike) -> tuple[float | None, str | None]:
    """Milliseconds per query that ``kd-search`` recorded for ``run_file``, and where the number comes from.

    Returns:
        ``(ms, "kd-search's search time / queries")`` from ``search_seconds``; for a sidecar written before
        ``search_seconds`` existed, ``(ms, "kd-search's elapsed time / queries (loading included)")``; ``(None,
        None)`` without a sidecar or these keys.
    """
    meta = read_sidecar(run_file)
    if meta is None:
        return None, None
    n = meta.get(QUERIES_KEY, meta.get("num_queries"))
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        return None, None
    secs = _number(meta.get(SEARCH_SECONDS_KEY))
    if secs is not None:
        return 1000.0 * secs / n, "kd-search's search time / queries"
    secs = _number(meta.get(ELAPSED_SECONDS_KEY))
    if secs is not None:
        return 1000.0 * secs / n, "kd-search's elapsed time / queries (loading included)"
    return None, None


def index_provenance(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """``{"path", "metadata"}`` of an index folder, as a run's sidecar records it (``None`` for no index); for an
    index's own summary see :func:`kd_pyserini.index_meta.index_info`."""
    from kd_pyserini.index import read_metadata

    if not path:
        return None
    return {"path": str(Path(path).resolve()), "metadata": read_metadata(path)}


# ------------------------------------------------------------------------------------------------------- evaluation

def evaluate_run(run: Run, qrels: Mapping[str, Mapping[str, int]], measures: Sequence[str]) -> dict[str, float]:
    """:func:`kd_pyserini.evaluation.evaluate` (``trec_eval -c`` semantics)."""
    from kd_pyserini.evaluation import evaluate

    return {str(k): float(v) for k, v in evaluate(run, qrels, list(measures)).items()}


def missing_query_messages(run: Run, qrels: Mapping[str, Mapping[str, int]], source: str) -> list[str]:
    """kd-eval's warnings (:func:`kd_pyserini.evaluation.check_inputs`) about the judged queries a run does not
    answer (they count as 0 in the mean, ``trec_eval -c``), e.g. "38 of 43 judged queries have no results"."""
    from dataclasses import replace

    from kd_pyserini.evaluation import check_inputs

    found = check_inputs(run, qrels, source=source)
    return replace(found, unknown_qids=[]).messages()  # run queries without judgements: expected (e.g. DL20)


def qrels_for(topics: Topics, qrels: str | None):
    """``(qrels, name)`` for ``--qrels`` or the topics' own qrels; ``(None, None)`` when the topics have none.

    Raises:
        FormatError: a qrels file that exists but is malformed (``file:line: what``): never taken for "no qrels".
        ResourceNotFound: ``qrels`` was given and cannot be found.
    """
    from kd_pyserini.resources import ResourceNotFound, get_qrels

    if qrels:
        return get_qrels(qrels), qrels
    if topics.name is None:
        return None, None
    try:
        return get_qrels(topics.name), topics.name
    except ResourceNotFound as e:  # no qrels is not an error for a search; a malformed file is
        log.info("no qrels for %s: %s", topics.name, e)
        return None, None


def measures_for(name: str | None, measures: Sequence[str] | None) -> list[str]:
    """``measures`` if given, else the benchmark's official measures, else :data:`DEFAULT_MEASURES`."""
    if measures:
        return list(measures)
    from kd_pyserini.evaluation import official_measures

    if name:
        try:
            return [str(m) for m in official_measures(name)]
        except KeyError:
            pass
    return list(DEFAULT_MEASURES)
