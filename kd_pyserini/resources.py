"""THE benchmark table, and topics and qrels by name or path, without the network when the files are at hand.

:data:`BENCHMARKS` is the one list of benchmarks that every other part reads (evaluation's official measures,
reproduction, the command-line help): each entry has its short name (``trec-dl-19``), Pyserini's topic-set name
(``dl19-passage``), aliases, the topics and qrels file names and the official measures.

Search order for a named resource:
1. ``$KD_PYSERINI_DATA/topics-and-qrels/<file>`` (the data directory; CI points it at ``../shared/data``);
2. Pyserini's cache (:func:`pyserini_cache`: ``$PYSERINI_CACHE`` or ``~/.cache/pyserini``; on Pyserini 2.x also
   ``./.cache/pyserini`` when ``./.cache`` exists), sub-folder ``topics-and-qrels`` (1.6 and Anserini), then 2.x's
   ``topics`` / ``qrels``;
3. Pyserini's own loader (``pyserini.search.get_topics`` / ``get_qrels_file``), last: it too reads the local folders
   first (:mod:`kd_pyserini.pyserini_compat`), then downloads.

A missing resource raises :class:`ResourceNotFound`, naming every place it looked and how to supply it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kd_pyserini.errors import KdError
from kd_pyserini.trec_io import Qrels, read_qrels, read_topics

__all__ = ["ResourceNotFound", "Benchmark", "BENCHMARKS", "data_dir", "pyserini_cache", "canonical", "topics_path",
           "qrels_path", "get_topics", "get_qrels", "read_topics_file", "qrels_by_name_or_path"]


class ResourceNotFound(KdError, FileNotFoundError):
    """A topics or qrels file could not be found anywhere."""


@dataclass(frozen=True)
class Benchmark:
    """A topic set: Pyserini's name, its topics and qrels file names, the aliases we accept, our short name (``key``,
    what kd-eval and kd-repro print) and its official measures (ir_measures names, as the papers and Pyserini's 2CR
    report them)."""

    name: str
    topics_file: str
    qrels_file: str
    aliases: tuple[str, ...]
    pyserini_qrels: str
    key: str
    measures: tuple[str, ...]


#: TREC-DL: nDCG@10 graded; MRR@10, MAP and R@1000 at relevance >= 2 (the official DL conventions).
DL_MEASURES = ("nDCG@10", "RR(rel=2)@10", "R(rel=2)@1000", "AP(rel=2)")

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("dl19-passage", "topics.dl19-passage.txt", "qrels.dl19-passage.txt",
              ("trec-dl-19", "dl19", "trec-dl-2019", "msmarco-passage-dl19"), "dl19-passage",
              "trec-dl-19", DL_MEASURES),
    Benchmark("dl20", "topics.dl20.txt", "qrels.dl20-passage.txt",
              ("trec-dl-20", "dl20-passage", "trec-dl-2020", "msmarco-passage-dl20"), "dl20-passage",
              "trec-dl-20", DL_MEASURES),
    Benchmark("msmarco-passage-dev-subset", "topics.msmarco-passage.dev-subset.txt",
              "qrels.msmarco-passage.dev-subset.txt",
              ("msmarco-dev", "msmarco-passage-dev", "msmarco-v1-passage.dev", "dev-small"),
              "msmarco-passage-dev-subset", "msmarco-dev", ("RR@10", "R@1000", "nDCG@10")),
    Benchmark("beir-v1.0.0-scifact-test", "topics.beir-v1.0.0-scifact.test.tsv.gz",
              "qrels.beir-v1.0.0-scifact.test.txt", ("scifact", "beir-scifact", "scifact-test"),
              "beir-v1.0.0-scifact-test", "scifact", ("nDCG@10", "R@100")),
]}


def data_dir() -> Path | None:
    """The data directory from ``$KD_PYSERINI_DATA``, or ``None`` when unset."""
    env = os.environ.get("KD_PYSERINI_DATA")
    return Path(env).expanduser() if env else None


def canonical(name: str) -> Benchmark | None:
    """The benchmark for a name or alias (case-insensitive), or ``None``."""
    key = name.strip().lower()
    for b in BENCHMARKS.values():
        if key == b.name or key in b.aliases:
            return b
    return None


def pyserini_cache() -> Path:
    """Pyserini's cache folder, as the installed Pyserini computes it (``$PYSERINI_CACHE`` or ``~/.cache/pyserini``;
    2.x: ``./.cache/pyserini`` when ``./.cache`` exists): the one place every part of kd_pyserini asks."""
    from kd_pyserini.pyserini_compat.local_files import pyserini_cache_home

    return pyserini_cache_home()


def _local_candidates(filename: str) -> list[Path]:
    from kd_pyserini.pyserini_compat.local_files import pyserini_cache_dirs

    out = []
    d = data_dir()
    if d is not None:
        out.append(d / "topics-and-qrels" / filename)
    kind = "qrels" if filename.startswith("qrels.") else "topics"
    out.extend(folder / filename for folder in pyserini_cache_dirs(kind))
    return out


def _known() -> str:
    return ", ".join(f"{b.name} ({', '.join(b.aliases)})" for b in BENCHMARKS.values())


def _resolve(name_or_path: str | os.PathLike, kind: str) -> tuple[Path | None, Benchmark | None, list[str]]:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path, None, []
    bench = canonical(str(name_or_path))
    if bench is None:
        raise ResourceNotFound(f"{kind} {str(name_or_path)!r} is neither a file nor a known topic set; known: "
                               f"{_known()}")
    filename = bench.topics_file if kind == "topics" else bench.qrels_file
    looked = []
    for cand in _local_candidates(filename):
        if cand.is_file():
            return cand, bench, []
        looked.append(str(cand))
    return None, bench, looked


def topics_path(name_or_path: str | os.PathLike) -> Path | None:
    """The local topics file for a name or path, or ``None`` if only the online download could supply it."""
    return _resolve(name_or_path, "topics")[0]


def qrels_path(name_or_path: str | os.PathLike) -> Path | None:
    """The local qrels file for a name or path, or ``None`` if only the online download could supply it."""
    return _resolve(name_or_path, "qrels")[0]


def _missing(kind: str, bench: Benchmark, looked: list[str], err: Exception) -> ResourceNotFound:
    return ResourceNotFound(
        f"{kind} for {bench.name} not found; looked in {', '.join(looked)} and Pyserini's download "
        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'failed'}). Fix: set KD_PYSERINI_DATA to "
        f"a folder whose topics-and-qrels/ holds {bench.topics_file if kind == 'topics' else bench.qrels_file}, "
        "or pass the file's path")


def read_topics_file(path: str | os.PathLike) -> dict[str, str]:
    """Read a ``qid<TAB>query`` topics file (``.gz`` accepted): :func:`kd_pyserini.trec_io.read_topics` (a repeated
    qid, a line without a tab or a non-UTF-8 byte raise FormatError naming file:line)."""
    return read_topics(path)


def get_topics(name_or_path: str | os.PathLike) -> dict[str, str]:
    """Topics as ``{qid: query}`` (string ids), by name (``dl19-passage``, ``trec-dl-19``, ``dl20``, ``msmarco-dev``,
    ``scifact``...) or path.

    Raises:
        ResourceNotFound: not found locally and not downloadable; the message lists where it looked.
    """
    path, bench, looked = _resolve(name_or_path, "topics")
    if path is not None:
        return read_topics_file(path)
    try:
        from pyserini.search import get_topics as pyserini_topics

        raw = pyserini_topics(bench.name)
        return {str(qid): str(t.get("title", "")).strip() for qid, t in raw.items()}
    except Exception as e:  # noqa: BLE001  (any download failure becomes one clear error)
        raise _missing("topics", bench, looked, e) from None


def get_qrels(name_or_path: str | os.PathLike) -> Qrels:
    """Qrels as ``{qid: {docid: grade}}`` (string ids, int grades: what pytrec_eval needs), by name or path.

    Raises:
        ResourceNotFound: not found locally and not downloadable; the message lists where it looked.
        FormatError: the file found (here or by Pyserini) is malformed: ``file:line: what``.
    """
    path, bench, looked = _resolve(name_or_path, "qrels")
    if path is not None:
        return read_qrels(path)
    try:
        from pyserini.search import get_qrels_file

        supplied = get_qrels_file(bench.pyserini_qrels)
    except Exception as e:  # noqa: BLE001  (finding or downloading it failed: one clear "not found")
        raise _missing("qrels", bench, looked, e) from None
    return read_qrels(supplied)  # a malformed file is a FormatError naming file:line, not "not found"


def qrels_by_name_or_path(name_or_path: str | os.PathLike) -> Qrels:
    """Qrels from a file path, else by benchmark name (:func:`get_qrels`): the one helper every command uses for a
    ``--qrels`` value."""
    path = Path(name_or_path).expanduser()
    return read_qrels(path) if path.is_file() else get_qrels(name_or_path)
