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
whole. This module only reads files and moves folders: it imports neither FAISS nor Pyserini.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any

from kd_pyserini.atomic import atomic_write, replace_dir, temp_dir_for
from kd_pyserini.cards import EncoderCard, get_card
from kd_pyserini.corpus import corpus_files
from kd_pyserini.errors import KdError

__all__ = ["METADATA_FILENAME", "INDEX_FILENAME", "DOCID_FILENAME", "FORMAT_NAME", "BM25_FORMAT_NAME",
           "IndexBuildError", "IncompatibleIndexError", "MissingMetadataError", "read_metadata", "load_docids",
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


def check_index_compatible(index_dir: str | os.PathLike, card: EncoderCard | str,
                           dimension: int | None = None) -> dict[str, Any] | None:
    """Refuse to search a dense index with another encoder than the one that built it.

    Args:
        index_dir: the index folder.
        card: the query encoder's card (or name).
        dimension: the query encoder's vector size (default: the card's).

    Returns:
        The index metadata, or ``None`` for an index without ``kd_pyserini.json`` (e.g. Pyserini's own), which is
        accepted (the caller should still compare the FAISS dimension).

    Raises:
        IncompatibleIndexError: a different encoder or dimension, in one line saying what to do.
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
    built = meta.get("encoder") or {}
    same = (card.name == built.get("name") or card.model_id == built.get("model_id") or
            _same_path(card.model_id, built.get("model_id")))
    if not same:
        raise IncompatibleIndexError(
            f"index {d} was built with encoder '{built.get('name')}' ({built.get('model_id')}), not "
            f"'{card.name}' ({card.model_id}); queries must be encoded by the same model: search with --encoder "
            f"{built.get('name')} or rebuild the index with --encoder {card.name}")
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


def install_dir(tmp: Path, output: Path, overwrite: bool) -> None:
    """Move a finished ``tmp`` folder to ``output`` in one rename (replacing an old one only with ``overwrite``).

    Raises:
        IndexBuildError: ``output`` appeared during the build and ``overwrite`` is off.
    """
    if output.exists() and not overwrite:
        raise IndexBuildError(f"{output} appeared while the index was being built; the new index is left in {tmp}")
    replace_dir(tmp, output)
