"""The index folder's contract: what a kd_pyserini index folder holds, how it is read, and how it is installed.

**Dense layout.** A dense index folder holds ``index`` (written by ``faiss.write_index``) and ``docid`` (one id per
line, in vector order) -- exactly what Pyserini's ``FaissSearcher(DIR, query_encoder)`` reads -- plus
``kd_pyserini.json``: the encoder card, the maximum lengths, the dimension, the index type and its parameters, the
corpus (path, format, number of documents) and the versions of the software that built it.
:func:`check_index_compatible` uses it to refuse searching an index with a different encoder.

**BM25 layout.** Lucene's own files (positions, document vectors and the raw JSON ``{"id", "contents"}`` stored),
plus a ``kd_pyserini.json`` of format :data:`BM25_FORMAT_NAME`; :func:`raw_contents` reads a stored document back.

**Install.** Every index is built in a temporary folder beside its final name (``DIR.tmp-xxxx``, see
:func:`new_build_dir`) and moved into place in one rename by :func:`install_dir`, so ``DIR`` exists only when it is
whole. Every build holds the output's lock (:func:`claim_output`, a hidden ``.DIR.lock`` beside it) while it
runs, and first removes what a killed earlier build of ``DIR`` left there (``DIR.tmp-*``, ``DIR.old-*``, hidden
temporary files), restoring the old index when a killed ``--overwrite`` had already moved it aside. This module only
reads files and moves folders: it imports neither FAISS nor Pyserini.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import platform
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kd_pyserini.atomic import atomic_write, replace_dir, temp_dir_for
from kd_pyserini.cards import EncoderCard, get_card
from kd_pyserini.corpus import corpus_files
from kd_pyserini.errors import KdError
from kd_pyserini.index.fingerprint import short, weights_fingerprint

__all__ = ["METADATA_FILENAME", "INDEX_FILENAME", "DOCID_FILENAME", "FORMAT_NAME", "BM25_FORMAT_NAME",
           "IndexBuildError", "IncompatibleIndexError", "MissingMetadataError", "CorruptIndexError", "read_metadata",
           "load_docids", "write_error", "claim_output", "clean_leftovers", "truncated_index_message",
           "CRASH_INSTALL_ENV", "crash_before_install",
           "index_info", "check_index_compatible", "raw_contents", "package_versions", "corpus_fingerprint",
           "corpus_summary", "now", "write_json", "reserve_output", "new_build_dir", "install_dir"]

METADATA_FILENAME = "kd_pyserini.json"
"""kd_pyserini's metadata file, beside the index's own files."""
INDEX_FILENAME = "index"
"""The FAISS index file of a dense index folder (``faiss.write_index``)."""
DOCID_FILENAME = "docid"
"""The ids of a dense index, one per line in vector order."""
FORMAT_NAME = "kd_pyserini.faiss"
"""``format`` of a dense index's metadata."""
BM25_FORMAT_NAME = "kd_pyserini.lucene"
"""``format`` of a BM25 index's metadata."""


class IndexBuildError(KdError, RuntimeError):
    """An index could not be built (bad options, an existing output, leftover chunks from other settings...)."""


class IncompatibleIndexError(KdError, ValueError):
    """An index was built with another encoder (or dimension) than the one asked to search it."""


class MissingMetadataError(KdError, FileNotFoundError):
    """A folder has no ``kd_pyserini.json`` (it was not built by kd-index)."""


class CorruptIndexError(KdError, OSError):
    """An index file is truncated or is not what it should be (e.g. a FAISS ``index`` cut short by a full disk)."""


log = logging.getLogger(__name__)
_warned: set[tuple[str, str]] = set()


def _warn_once(index_dir: Path, kind: str, message: str) -> None:
    key = (str(index_dir.resolve()), kind)
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def truncated_index_message(path: str | os.PathLike, detail: str) -> str:
    """The one line for a FAISS ``index`` file that cannot be read."""
    return f"{path} is truncated or not a FAISS index ({detail}); rebuild it"


def write_error(path: str | os.PathLike, error: BaseException, resume: bool = False) -> IndexBuildError:
    """A one-line :class:`IndexBuildError` for a failed write of ``path`` (``OSError`` from Python and numpy,
    ``RuntimeError`` from FAISS): ``could not write PATH: No space left on device (...)``.

    A short write (numpy's ``N requested and M written``, FAISS's ``write error ... N != M``) happens on a full
    disk (or quota), so it is reported as such."""
    raw = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    code = getattr(error, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        reason = os.strerror(code)
    elif "No space left" in raw:
        reason = "No space left on device"
    elif re.search(r"\d+ requested and \d+ written|write error", raw):
        reason = f"No space left on device ({raw})"
    else:
        reason = raw
    fix = "free some space" if reason.startswith("No space") else "fix that"
    kept = " (finished chunks are kept)" if resume else ""
    return IndexBuildError(f"could not write {path}: {reason}; {fix} and run the same command again{kept}")


# ------------------------------------------------------------------------------------------------------ reading

def read_metadata(index_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The ``kd_pyserini.json`` of an index folder, or ``None`` when it has none (e.g. a Pyserini prebuilt index)."""
    path = Path(index_dir) / METADATA_FILENAME
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def load_docids(index_dir: str | os.PathLike) -> list[str]:
    """The ``docid`` file of a dense index, read as Pyserini reads it (one id per line, right-stripped)."""
    with open(Path(index_dir) / DOCID_FILENAME, encoding="utf-8") as f:
        return [line.rstrip() for line in f]


def index_info(index_dir: str | os.PathLike) -> dict[str, Any]:
    """The metadata of an index built by kd-index (what ``kd-index info`` prints).

    Raises:
        MissingMetadataError: the folder has no ``kd_pyserini.json``.
    """
    meta = read_metadata(index_dir)
    if meta is None:
        raise MissingMetadataError(f"{index_dir} has no {METADATA_FILENAME} (not built by kd-index)")
    return meta


def check_index_compatible(index_dir: str | os.PathLike, card: EncoderCard | str, dimension: int | None = None,
                           *, allow_encoder_mismatch: bool = False) -> dict[str, Any] | None:
    """Refuse to search a dense index with another encoder than the one that built it.

    The encoders are compared by their weights: an index records the SHA-256 of the weight files of the encoder
    that built it (:func:`~kd_pyserini.index.fingerprint.weights_fingerprint`), so two different models that share
    a name (``checkpoint-30`` of two runs) are told apart, and the same weights under another name are accepted.
    When either side has no fingerprint (an index built before fingerprints were recorded: warned about once; an
    encoder whose weight files are not on disk), the names are compared as before. The vector size, similarity and
    (for an index of a FAISS file size on record) a truncated ``index`` file are checked too.

    Args:
        index_dir: the index folder.
        card: the query encoder's card (or name).
        dimension: the query encoder's vector size (default: the card's).
        allow_encoder_mismatch: search anyway, with a warning, when the encoder differs (other weights or another
            name); what ``kd-search --allow-encoder-mismatch`` passes. A different dimension or similarity is
            still refused (the scores would be meaningless).

    Returns:
        The index metadata, or ``None`` for an index without ``kd_pyserini.json`` (e.g. Pyserini's own), which is
        accepted (the caller should still compare the FAISS dimension).

    Raises:
        IncompatibleIndexError: a different encoder or dimension, in one line naming both and what to do.
        CorruptIndexError: the ``index`` file is shorter or longer than when it was built.
        FileNotFoundError: ``index_dir`` is not a dense index folder.
    """
    d = Path(index_dir)
    if not (d / INDEX_FILENAME).is_file() or not (d / DOCID_FILENAME).is_file():
        raise FileNotFoundError(f"{d} is not a dense index folder (it needs 'index' and 'docid'); build one with "
                                "'kd-index dense'")
    card = get_card(card)
    meta = read_metadata(d)
    dim = dimension or card.dimension
    if meta is None:
        return None
    recorded = (meta.get("index") or {}).get("file_bytes")
    if recorded is not None:
        size = (d / INDEX_FILENAME).stat().st_size
        if size != int(recorded):
            raise CorruptIndexError(truncated_index_message(
                d / INDEX_FILENAME, f"{size} bytes, {recorded} when it was built"))
    built = meta.get("encoder") or {}
    built_fp = (meta.get("encoder_weights") or {}).get("sha256")
    query_fp = (weights_fingerprint(card) or {}).get("sha256") if built_fp else None
    same_name = (card.name == built.get("name") or card.model_id == built.get("model_id") or
                 _same_path(card.model_id, built.get("model_id")))
    built_desc = f"'{built.get('name')}' ({built.get('model_id')}, weights sha256 {short(built_fp)})"
    query_desc = f"'{card.name}' ({card.model_id}, weights sha256 {short(query_fp)})"
    if built_fp and query_fp:
        if built_fp == query_fp:
            if built.get("pooling") not in (None, card.pooling):
                raise IncompatibleIndexError(
                    f"index {d} was built with {built['pooling']} pooling, encoder '{card.name}' (same weights) "
                    f"uses {card.pooling}; give the encoder a card with pooling = \"{built['pooling']}\"")
        else:
            message = (f"index {d} was built with encoder {built_desc}, but the query encoder {query_desc} has "
                       "other weights")
            if not allow_encoder_mismatch:
                raise IncompatibleIndexError(
                    f"{message}; queries must be encoded by the same model: search with --encoder "
                    f"{built.get('model_id')}, rebuild the index with this encoder, or pass "
                    "--allow-encoder-mismatch if this is intended")
            _warn_once(d, "mismatch", f"{message}; searching anyway (--allow-encoder-mismatch)")
    else:
        if not same_name:
            message = (f"index {d} was built with encoder '{built.get('name')}' ({built.get('model_id')}), not "
                       f"'{card.name}' ({card.model_id})")
            if not allow_encoder_mismatch:
                raise IncompatibleIndexError(
                    f"{message}; queries must be encoded by the same model: search with --encoder "
                    f"{built.get('name')} or rebuild the index with --encoder {card.name} (or pass "
                    "--allow-encoder-mismatch if this is intended)")
            _warn_once(d, "mismatch", f"{message}; searching anyway (--allow-encoder-mismatch)")
        if not built_fp:
            _warn_once(d, "no-fingerprint",
                       f"index {d} records no fingerprint of its encoder's weights (built by an older kd-index, or "
                       "by an encoder object without weight files), so "
                       f"only the encoder's name '{built.get('name')}' could be compared, not its weights; rebuild "
                       "the index to record one")
        else:
            _warn_once(d, "no-query-fingerprint",
                       f"the weight files of encoder '{card.name}' ({card.model_id}) are not on disk, so its weights "
                       f"could not be compared with those that built index {d}")
    if dim is not None and meta.get("dimension") is not None and int(meta["dimension"]) != int(dim):
        raise IncompatibleIndexError(
            f"index {d} holds {meta['dimension']}-dimensional vectors but encoder '{card.name}' makes "
            f"{dim}-dimensional ones; rebuild the index with this encoder")
    if built.get("similarity") and built.get("similarity") != card.similarity:
        raise IncompatibleIndexError(
            f"index {d} was built with {built['similarity']} similarity, encoder '{card.name}' uses "
            f"{card.similarity}; rebuild the index")
    return meta


def _same_path(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    try:
        pa, pb = Path(a).expanduser(), Path(b).expanduser()
        return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()
    except OSError:
        return False


def raw_contents(raw: str | None) -> str:
    """The passage text from a Lucene document's stored raw JSON (``contents``, or BEIR ``title``/``text``)."""
    if raw is None:
        return ""
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        return raw
    if not isinstance(obj, dict):
        return raw
    if "contents" in obj:
        return str(obj["contents"])
    if "text" in obj:
        title = str(obj.get("title") or "").strip()
        text = str(obj.get("text") or "").strip()
        return f"{title} {text}" if title else text
    return raw


# ----------------------------------------------------------------------------------------------------- metadata

def package_versions() -> dict[str, str | None]:
    """Versions of the software that matters for reproducing an index or a run.

    ``java`` is the runtime of the JVM kd_pyserini started in this process, or ``None`` when none was started (a
    dense index needs no Java; asking would start one).
    """
    from importlib.metadata import PackageNotFoundError, version

    import kd_pyserini
    from kd_pyserini.jvm import current_runtime

    out: dict[str, str | None] = {"kd_pyserini": kd_pyserini.__version__}
    for key, dist in (("pyserini", "pyserini"), ("torch", "torch"), ("faiss", "faiss-cpu"),
                      ("transformers", "transformers"), ("numpy", "numpy")):
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = None
    if out["faiss"] is None:
        try:
            import faiss

            out["faiss"] = faiss.__version__
        except Exception:  # noqa: BLE001
            pass
    out["python"] = platform.python_version()
    java = current_runtime()
    out["java"] = str(java.version) if java is not None else None
    return out


def corpus_fingerprint(corpus: str | os.PathLike) -> list[dict[str, Any]]:
    """Path, size and modification time of each corpus file (a resumed build must read the same files)."""
    out = []
    for f in corpus_files(corpus):
        st = f.stat()
        out.append({"path": str(f.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def corpus_summary(corpus: str | os.PathLike, fmt: str, fingerprint: list[dict[str, Any]],
                   **counts: int) -> dict[str, Any]:
    """The ``corpus`` entry of an index's metadata: path, format, counts (``num_docs``...) and file names/sizes."""
    return {"path": str(Path(corpus).resolve()), "format": fmt, **counts,
            "files": [{"name": Path(f["path"]).name, "size": f["size"]} for f in fingerprint]}


def now() -> str:
    """The current UTC time, ISO 8601 to the second (the ``created`` of metadata)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")


# ------------------------------------------------------------------------------------------------------ install

def reserve_output(output: Path, overwrite: bool) -> None:
    """Refuse an existing ``output`` unless ``overwrite`` (checked before any work starts)."""
    if output.exists() and not overwrite:
        raise IndexBuildError(f"{output} already exists; choose another --output or pass --overwrite to replace it")


def new_build_dir(output: Path) -> Path:
    """A new empty ``OUTPUT.tmp-xxxx`` folder beside ``output``, where the index is built."""
    return temp_dir_for(output, "tmp")


def _lock_path(output: Path) -> Path:
    return output.parent / f".{output.name}.lock"


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def clean_leftovers(output: Path) -> list[str]:
    """Remove what killed builds of ``output`` left beside it; call only while holding :func:`claim_output`.

    ``OUTPUT.tmp-*`` (an index being built), ``OUTPUT.old-*`` (an old index moved aside by ``--overwrite``) and
    hidden ``.OUTPUT.*.tmp`` files (:class:`~kd_pyserini.atomic.atomic_write`). When ``output`` itself is missing
    and an ``OUTPUT.old-*`` still holds the old index (the kill came between the two renames of ``--overwrite``),
    that index is put back first, so nothing that was there is lost. Returns the names removed.
    """
    parent, name = output.parent, output.name
    if not parent.is_dir():
        return []
    olds = sorted((p for p in parent.iterdir() if p.name.startswith(f"{name}.old-") and (p / "old").is_dir()),
                  key=lambda p: p.stat().st_mtime_ns, reverse=True)
    if olds and not output.exists() and not output.is_symlink():
        os.replace(olds[0] / "old", output)
        log.warning("put back %s, which an interrupted --overwrite had moved to %s", output, olds[0])
    removed, freed = [], 0
    for p in sorted(parent.iterdir()):
        n = p.name
        ours = n.startswith((f"{name}.tmp-", f"{name}.old-")) or (n.startswith(f".{name}.") and n.endswith(".tmp"))
        if not ours:
            continue
        freed += _size(p)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        removed.append(n)
    if removed:
        log.warning("removed %s, left beside %s by an interrupted kd-index run (%.1f MB freed)",
                    ", ".join(removed), output, freed / 1e6)
    return removed


@contextlib.contextmanager
def claim_output(output: str | os.PathLike) -> Iterator[Path]:
    """Hold ``output``'s build lock (an ``flock`` on ``.OUTPUT.lock`` beside it, released when the process ends,
    even by a kill) for the whole build, after removing what killed earlier builds left (:func:`clean_leftovers`):
    since every build of ``output`` holds the lock, leftovers found while holding it belong to no live process.

    Raises:
        IndexBuildError: another process is building ``output``.
    """
    import fcntl

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    path = _lock_path(output)
    for _ in range(20):
        f = open(path, "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise IndexBuildError(f"another kd-index process is building {output} (it holds {path}); wait for it "
                                  "to finish (or stop it) before starting this one") from None
        try:  # the holder before us may have removed the file after we opened it: lock the file that is there
            same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        f.close()
    else:  # pragma: no cover
        raise IndexBuildError(f"could not lock {path}; is another kd-index process starting on {output}?")
    try:
        clean_leftovers(output)
        yield output
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        f.close()


CRASH_INSTALL_ENV = "KD_PYSERINI_CRASH_BEFORE_INSTALL"
"""Test hook: when set (to ``1``), a build exits at once with status 137, without any clean-up, right before it moves
its finished ``OUTPUT.tmp-xxxx`` into place, as if killed (``kill -9``) then. Used by the leftover tests."""


def crash_before_install() -> None:
    """The :data:`CRASH_INSTALL_ENV` test hook."""
    if os.environ.get(CRASH_INSTALL_ENV) == "1":
        os._exit(137)


def install_dir(tmp: Path, output: Path, overwrite: bool) -> None:
    """Move a finished ``tmp`` folder to ``output`` in one rename (replacing an old one only with ``overwrite``).

    Raises:
        IndexBuildError: ``output`` appeared during the build and ``overwrite`` is off.
    """
    if output.exists() and not overwrite:
        raise IndexBuildError(f"{output} appeared while the index was being built; the new index is left in {tmp}")
    replace_dir(tmp, output)
