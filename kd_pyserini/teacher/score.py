"""``kd-teacher score``: teacher scores for training triples, chunked, resumable, shardable.

The triples' unique (query, passage) pairs (:func:`~kd_pyserini.teacher.triples.read_triples`) are cut into chunks
of ``chunk_pairs`` pairs. Each teacher scores chunk after chunk; a finished chunk is saved at once (``.npy``, written
under a temporary name and renamed) in a work folder beside the output, ``OUTPUT.parts/``, with a ``manifest.json``
holding everything the scores depend on (triples fingerprint, teachers and their lengths, precision, chunk size). Run
the same command again after a kill and it checks the manifest and scores only the missing chunks; since a chunk's
batches depend only on the chunk, the finished file is byte-identical to an uninterrupted run's. The teacher file
appears under its final name only when complete (written to a temporary name, then renamed); the work folder is then
removed. With several teachers the file holds their mean (Hofstätter et al.'s T2 ensemble).

``shard=(i, n)`` scores the chunks ``k`` with ``k % n == i - 1`` and writes ``OUTPUT.shard-i-of-n.npz``;
:func:`merge_shards` (``kd-teacher merge``) reads the triples again and writes the teacher file from all ``n``
shards, byte-identical to an unsharded run on the same kind of device.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kd_pyserini.atomic import atomic_write
from kd_pyserini.encoding.scorers import TeacherSpec, load_scorer, teacher_spec
from kd_pyserini.locks import ProcessLock
from kd_pyserini.progress import progress_bar, quiet_third_party
from kd_pyserini.teacher.triples import TripleSet, read_triples, write_teacher_file

__all__ = ["DEFAULT_CHUNK_PAIRS", "TEACHER_PRECISIONS", "PAUSE_ENV", "ScoreResult", "parse_shard", "score_triples",
           "merge_shards", "work_dir", "shard_path"]

log = logging.getLogger(__name__)

DEFAULT_CHUNK_PAIRS = 16384
TEACHER_PRECISIONS = ("fp32", "fp16", "bf16")
_FORMAT_VERSION = 1
PAUSE_ENV = "KD_PYSERINI_TEACHER_PAUSE_AFTER_CHUNKS"
"""Test hook: after saving this many chunks, the process sleeps (so a test can kill it from outside at a known
point, with ``kill -9`` or Ctrl-C)."""


@dataclass
class ScoreResult:
    """What one :func:`score_triples` call did.

    Attributes:
        output: the teacher file, or the shard file for a shard.
        triples / pairs / pair_references: triples, unique pairs, and the 2 x triples pairs they stand for.
        scored_pairs: pairs scored by this call (all teachers); resumed_chunks: chunks found done on disk.
        seconds: the whole call; scoring_seconds: the teachers' forward passes (loading excluded).
    """

    output: Path
    triples: int
    pairs: int
    pair_references: int
    scored_pairs: int
    resumed_chunks: int
    seconds: float
    scoring_seconds: float
    shard: tuple[int, int]

    @property
    def pairs_per_second(self) -> float | None:
        return self.scored_pairs / self.scoring_seconds if self.scoring_seconds > 0 and self.scored_pairs else None


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)`` (shards are numbered from 1); ``None`` -> ``(1, 1)``."""
    if text is None:
        return 1, 1
    if isinstance(text, tuple):
        i, n = text
    else:
        try:
            i_s, n_s = str(text).split("/")
            i, n = int(i_s), int(n_s)
        except ValueError:
            raise ValueError(f"shard {text!r} is not I/N (e.g. 1/4: the first of four shards)") from None
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"shard {i}/{n}: I must be between 1 and N (shards are numbered from 1)")
    return i, n


def work_dir(output: str | os.PathLike, shard: tuple[int, int] = (1, 1)) -> Path:
    """The folder of finished chunks: ``OUTPUT.parts`` (``OUTPUT.shard-i-of-n.parts`` for a shard)."""
    i, n = shard
    return Path(f"{output}.parts") if n == 1 else Path(f"{output}.shard-{i}-of-{n}.parts")


def shard_path(output: str | os.PathLike, shard: tuple[int, int]) -> Path:
    """``OUTPUT.shard-i-of-n.npz``: a finished shard's scores."""
    return Path(f"{output}.shard-{shard[0]}-of-{shard[1]}.npz")


def _normalised(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _first_difference(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                return _first_difference(a, b, f"{prefix}{key}.")
            if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
                return _first_difference(dict(enumerate(a)), dict(enumerate(b)), f"{prefix}{key}.")
            return f"{prefix}{key}: {json.dumps(a)[:80]} then, {json.dumps(b)[:80]} now"
    return "?"


def _chunk_name(teacher: int, chunk: int) -> str:
    return f"t{teacher}-c{chunk:07d}.npy"


def _save_chunk(path: Path, scores: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.asarray(scores, dtype=np.float32))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _lock(work: Path) -> ProcessLock:
    """Hold ``work/.lock`` until closed (released by the OS even after ``kill -9``), so two runs never write the
    same chunks."""

    def busy(pid: int | None) -> ValueError:
        return ValueError(f"another kd-teacher score is writing {work} right now; wait for it (or stop it) before "
                          "running the same command again")

    return ProcessLock(work / ".lock", busy).acquire()


def _prepare(work: Path, config: dict[str, Any], soft: dict[str, Any]) -> int:
    """Check that an existing work folder holds chunks of this very configuration (or start it); returns how many
    chunk files it already has."""
    manifest = work / "manifest.json"
    if work.is_dir() and manifest.is_file():
        old = json.loads(manifest.read_text(encoding="utf-8"))
        if old.get("config") != config:
            why = _first_difference(old.get("config") or {}, config)
            from kd_pyserini.encoding.precision import resume_hint

            hint = resume_hint((old.get("config") or {}).get("precision"), config.get("precision"))
            raise ValueError(f"{work} holds scores of another configuration ({why}){hint}; run with the same options "
                             "to resume, or delete the folder to start over")
        for key, value in soft.items():
            if old.get("soft", {}).get(key) != value:
                log.warning("resuming %s with %s=%s (the finished chunks were made with %s): scores agree to float "
                            "rounding, but the file will not be byte-identical to a run made in one go", work, key,
                            value, old.get("soft", {}).get(key))
        for tmp in work.glob("*.tmp"):
            tmp.unlink()
        return len(list(work.glob("t*-c*.npy")))
    if work.exists() and any(work.glob("t*-c*.npy")):
        raise ValueError(f"{work} has chunk files but no manifest.json; delete the folder to start over")
    work.mkdir(parents=True, exist_ok=True)
    with atomic_write(manifest) as f:
        json.dump({"config": config, "soft": soft}, f, indent=2)
    return 0


class _Texts:
    """Texts of a triple set's queries and passages by index (ids: looked up in the collection/queries files)."""

    def __init__(self, triples: TripleSet, collection: Any, queries: Any):
        self.t, self.collection, self.queries = triples, collection, queries

    def query(self, i: int) -> str:
        key = self.t.queries[i]
        return self.queries.get(key) if self.t.format == "ids" else key

    def passage(self, j: int) -> str:
        key = self.t.passages[j]
        return self.collection.get(key) if self.t.format == "ids" else key


def _index(path: str | os.PathLike | None) -> Any:
    if path is None:
        return None
    # the lazy id<TAB>text reader kd-train uses too (io layer: teacher/ and train/ share it, not each other)
    from kd_pyserini.offsets import OffsetIndex

    return OffsetIndex(path)


def _config(triples: TripleSet, specs: Sequence[TeacherSpec], precision: str, chunk_pairs: int,
            shards: int) -> dict[str, Any]:
    return _normalised({
        "format_version": _FORMAT_VERSION,
        "triples": {"fingerprint": triples.fingerprint, "format": triples.format, "triples": triples.num_triples,
                    "pairs": triples.num_pairs, "skipped_lines": list(triples.skipped_lines)},
        "teachers": [s.key() for s in specs],
        "precision": precision,
        "chunk_pairs": chunk_pairs,
        "shards": shards,
    })


def _write_sidecar(output: Path, data: dict[str, Any]) -> None:
    from kd_pyserini.index.layout import package_versions

    with atomic_write(Path(str(output) + ".json")) as f:
        json.dump({"output": str(output.resolve()), **data, "versions": package_versions(), "command": list(sys.argv),
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, f, indent=2, default=str)
        f.write("\n")


def score_triples(triples: str | os.PathLike, output: str | os.PathLike, teachers: Sequence[str | Any], *,
                  fmt: str = "auto", collection: str | os.PathLike | None = None,
                  queries: str | os.PathLike | None = None, batch_size: int = 32,
                  query_max_length: int | None = None, passage_max_length: int | None = None,
                  max_length: int | None = None, device: str | None = None, precision: str = "auto",
                  chunk_pairs: int = DEFAULT_CHUNK_PAIRS, shard: str | tuple[int, int] | None = None,
                  skip_bad: bool = False, threads: int | None = None, progress: bool | None = None) -> ScoreResult:
    """Score the triples' unique pairs with one or more teachers and write a teacher file kd-train reads unchanged.

    Args:
        triples: ``qid<TAB>pos_pid<TAB>neg_pid`` (with ``collection`` and ``queries``) or
            ``query<TAB>pos<TAB>neg``.
        output: the teacher file (ids layout: ``pos<TAB>neg<TAB>qid<TAB>pos_pid<TAB>neg_pid``; text layout:
            ``pos<TAB>neg<TAB>query<TAB>pos<TAB>neg``).
        teachers: card names, hub ids or folders, cross-encoders or bi-encoders; several give their mean.
        fmt: ``auto``, ``ids`` or ``text``.
        batch_size: pairs (cross-encoders) or texts (bi-encoders) per forward pass.
        query_max_length / passage_max_length / max_length: see :class:`~kd_pyserini.encoding.scorers.TeacherSpec`.
        device / precision: where and how the teachers run (``fp32``, ``bf16``, ``fp16`` on CUDA, or ``auto``: bf16
            or fp16 on CUDA, fp32 on CPU; :mod:`kd_pyserini.encoding.precision`).
        chunk_pairs: pairs per saved chunk (the unit of resumption; part of the configuration).
        shard: ``"i/n"``: score every n-th chunk and write ``OUTPUT.shard-i-of-n.npz`` (see :func:`merge_shards`).
        skip_bad: skip and count bad triple lines instead of stopping at the first.
        progress: bars on stderr (pairs/s and time left); ``None``: when stderr is a terminal.

    Raises:
        FormatError: a bad triple line (``file:line``). ValueError: options that do not fit, or a work folder left
        by a run with other options.
    """
    t0 = time.perf_counter()
    if precision in TEACHER_PRECISIONS or precision == "auto":  # resolved before anything is recorded
        from kd_pyserini.encoding.precision import resolve_precision

        precision = resolve_precision(precision, device, "score").precision
    if precision not in TEACHER_PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(TEACHER_PRECISIONS)} for a teacher")
    if chunk_pairs < 1:
        raise ValueError(f"chunk_pairs must be >= 1, not {chunk_pairs}")
    if not teachers:
        raise ValueError("give at least one teacher (--teacher CARD)")
    i, n = parse_shard(shard)
    specs = [teacher_spec(t, query_max_length, passage_max_length, max_length) for t in teachers]
    output = Path(output)
    coll, qs = _index(collection), _index(queries)
    ts = read_triples(triples, fmt, collection=coll, queries=qs, skip_bad=skip_bad, progress=progress)
    if ts.format == "ids" and (coll is None or qs is None):
        raise ValueError(f"{ts.path} holds ids (qid<TAB>pos_pid<TAB>neg_pid): give --collection (pid<TAB>passage) and "
                         "--queries (qid<TAB>query) to read their texts, or --format text for text triples")
    if ts.format == "text" and (coll is not None or qs is not None):
        log.warning("--collection/--queries are not used for text triples (the texts are in %s)", ts.path)
    if ts.skipped_lines:
        log.warning("%s: skipped %d bad line(s) (--skip-bad); first: %s", ts.path, len(ts.skipped_lines),
                    ts.bad_examples[0] if ts.bad_examples else "-")
    num_chunks = math.ceil(ts.num_pairs / chunk_pairs)
    mine = [k for k in range(num_chunks) if k % n == i - 1]
    config = _config(ts, specs, precision, chunk_pairs, n)
    soft = _normalised({"device": _device_type(device), "batch_size": batch_size, "triples_path": str(ts.path)})
    work = work_dir(output, (i, n))
    size = {k: min(ts.num_pairs, (k + 1) * chunk_pairs) - k * chunk_pairs for k in mine}
    with contextlib.closing(_lock(work)):
        resumed = _prepare(work, config, soft)
        scored, scoring_s = _score_chunks(work, ts, _Texts(ts, coll, qs), specs, size, chunk_pairs, resumed,
                                          dict(device=device, precision=precision, batch_size=batch_size,
                                               threads=threads), progress)
        if n == 1:
            pair_scores = _assemble(work, len(specs), mine, size, chunk_pairs, ts.num_pairs)
            write_teacher_file(ts, _mean(pair_scores), output, progress=progress)
            final = output
        else:
            final = shard_path(output, (i, n))
            _write_shard(work, final, config, (i, n), len(specs), mine, size, chunk_pairs)
        seconds = time.perf_counter() - t0
        result = ScoreResult(final, ts.num_triples, ts.num_pairs, 2 * ts.num_triples, scored, resumed, seconds,
                             scoring_s, (i, n))
        _write_sidecar(final, {"config": config, "soft": soft, "triples": ts.describe(), "shard": [i, n],
                               "teachers": [{**s.key(), "card": s.card.describe()} for s in specs],
                               "scored_pairs": scored, "resumed_chunks": resumed, "seconds": round(seconds, 3),
                               "scoring_seconds": round(scoring_s, 3), "pairs_per_second": result.pairs_per_second})
        shutil.rmtree(work, ignore_errors=True)
    return result


def _score_chunks(work: Path, ts: TripleSet, texts: _Texts, specs: Sequence[TeacherSpec], size: dict[int, int],
                  chunk_pairs: int, resumed: int, load: dict[str, Any], progress: bool | None) -> tuple[int, float]:
    """Score the chunks not yet on disk, teacher by teacher; returns (pairs scored, seconds in forward passes)."""
    todo = {j: [k for k in size if not (work / _chunk_name(j, k)).is_file()] for j in range(len(specs))}
    total = sum(size[k] for ks in todo.values() for k in ks)
    if resumed:
        log.warning("resuming from %s: %d chunk(s) already scored, %d pairs to go", work, resumed, total)
    scoring_s = 0.0
    saved, pause_after = 0, int(os.environ[PAUSE_ENV]) if os.environ.get(PAUSE_ENV) else None
    with progress_bar(total=total, desc="scoring", unit="pair", progress=progress) as bar:
        for j, spec in enumerate(specs):
            if not todo[j]:
                continue
            bar.set_description(f"teacher {j + 1}/{len(specs)} {spec.card.name}")
            with quiet_third_party(progress):
                scorer = load_scorer(spec, **load)
            for k in todo[j]:
                lo, hi = k * chunk_pairs, k * chunk_pairs + size[k]
                uq, q_local = np.unique(ts.pair_query[lo:hi], return_inverse=True)
                up, p_local = np.unique(ts.pair_passage[lo:hi], return_inverse=True)
                q_texts = [texts.query(int(x)) for x in uq]
                p_texts = [texts.passage(int(x)) for x in up]
                t_chunk = time.perf_counter()
                scores = scorer.score_pairs(q_texts, p_texts, list(zip(q_local.tolist(), p_local.tolist())),
                                            on_batch=bar.update)
                scoring_s += time.perf_counter() - t_chunk
                if not np.isfinite(scores).all():
                    raise ValueError(f"teacher {spec.card.name} gave a non-finite score in pairs {lo}-{hi} (an fp16 "
                                     "overflow?); use --precision bf16 or fp32")
                _save_chunk(work / _chunk_name(j, k), scores)
                saved += 1
                if pause_after is not None and saved >= pause_after:
                    time.sleep(3600)
            del scorer
    return total, scoring_s


def _mean(pair_scores: np.ndarray) -> np.ndarray:
    """The teachers' mean per pair, in float64 (one teacher: its own scores)."""
    return pair_scores.astype(np.float64).mean(axis=0)


def _device_type(device: str | None) -> str:
    if device:
        return str(device).split(":")[0]
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _assemble(work: Path, teachers: int, chunks: Sequence[int], size: dict[int, int], chunk_pairs: int,
              num_pairs: int) -> np.ndarray:
    out = np.full((teachers, num_pairs), np.nan, dtype=np.float32)
    for j in range(teachers):
        for k in chunks:
            scores = np.load(work / _chunk_name(j, k))
            if len(scores) != size[k]:
                raise ValueError(f"{work / _chunk_name(j, k)} holds {len(scores)} scores, expected {size[k]}")
            out[j, k * chunk_pairs:k * chunk_pairs + size[k]] = scores
    return out


def _write_shard(work: Path, final: Path, config: dict[str, Any], shard: tuple[int, int], teachers: int,
                 chunks: Sequence[int], size: dict[int, int], chunk_pairs: int) -> None:
    parts = [np.concatenate([np.load(work / _chunk_name(j, k)) for k in chunks]) if chunks
             else np.zeros(0, np.float32) for j in range(teachers)]
    with atomic_write(final, "wb") as f:
        np.savez(f, manifest=np.array(json.dumps({"config": config, "shard": list(shard)})),
                 chunks=np.asarray(list(chunks), dtype=np.int64), scores=np.stack(parts).astype(np.float32))


def merge_shards(shard_files: Sequence[str | os.PathLike], output: str | os.PathLike,
                 triples: str | os.PathLike | None = None, progress: bool | None = None) -> Path:
    """Write the teacher file from the ``n`` shard files of one sharded scoring run.

    Args:
        shard_files: every ``OUTPUT.shard-i-of-n.npz``, ``i = 1..n``.
        output: the teacher file to write (atomically).
        triples: the triples file, if it is no longer where the scoring run read it (its fingerprint is checked).

    Raises:
        ValueError: shards of different runs, a missing or repeated shard, or triples that are not the scored ones.
    """
    if not shard_files:
        raise ValueError("give the shard files to merge (OUTPUT.shard-I-of-N.npz)")
    loaded = []
    for path in shard_files:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"shard file {path} does not exist (is that shard finished?)")
        with np.load(path) as z:
            manifest = json.loads(str(z["manifest"]))
            loaded.append((path, manifest, z["chunks"].copy(), z["scores"].copy()))
    config = loaded[0][1]["config"]
    n = int(config["shards"])
    seen: dict[int, Path] = {}
    for path, manifest, _, _ in loaded:
        if manifest["config"] != config:
            raise ValueError(f"{path} comes from another scoring run than {loaded[0][0]} "
                             f"({_first_difference(config, manifest['config'])})")
        i = int(manifest["shard"][0])
        if i in seen:
            raise ValueError(f"shard {i}/{n} is given twice: {seen[i]} and {path}")
        seen[i] = path
    missing = sorted(set(range(1, n + 1)) - set(seen))
    if missing:
        raise ValueError(f"shard(s) {', '.join(f'{m}/{n}' for m in missing)} missing: score them with --shard I/{n} "
                         "and give every shard file")
    recorded = json.loads(Path(str(loaded[0][0]) + ".json").read_text(encoding="utf-8")).get("triples", {}) \
        if Path(str(loaded[0][0]) + ".json").is_file() else {}
    source = triples or recorded.get("path")
    if source is None:
        raise ValueError("give --triples: the shard files do not say where the triples file is")
    tc = config["triples"]
    ts = read_triples(source, tc["format"], skip_lines=tc["skipped_lines"], progress=progress)
    if ts.fingerprint != tc["fingerprint"] or ts.num_pairs != tc["pairs"]:
        raise ValueError(f"{source} is not the triples file the shards scored (its content differs); give the "
                         "original with --triples")
    chunk_pairs = int(config["chunk_pairs"])
    pair_scores = np.full((len(config["teachers"]), ts.num_pairs), np.nan, dtype=np.float32)
    for path, _, chunks, scores in loaded:
        at = 0
        for k in chunks.tolist():
            lo, hi = k * chunk_pairs, min(ts.num_pairs, (k + 1) * chunk_pairs)
            pair_scores[:, lo:hi] = scores[:, at:at + hi - lo]
            at += hi - lo
        if at != scores.shape[1]:
            raise ValueError(f"{path} holds {scores.shape[1]} scores for chunks of {at} pairs")
    if np.isnan(pair_scores).any():
        raise ValueError("the shards do not cover every pair (shards of different chunk sizes?)")
    output = Path(output)
    write_teacher_file(ts, _mean(pair_scores), output, progress=progress)
    _write_sidecar(output, {"config": config, "triples": ts.describe(), "merged_from": [str(p) for p, *_ in loaded]})
    return output
