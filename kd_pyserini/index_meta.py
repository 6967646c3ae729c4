"""The read side of an index folder's contract: ``kd_pyserini.json``, the ``docid`` file, and the encoder check.

What every kd_pyserini index folder holds is described in :mod:`kd_pyserini.index.layout` (which builds and installs
them); this module only reads them, so that the Pyserini adapters (:mod:`kd_pyserini.pyserini_compat`), dense search
and ``kd-index info`` can read an index without importing the build side. It sits in the models layer because
:func:`check_index_compatible` compares encoder cards and their weights fingerprints
(:func:`~kd_pyserini.encoding.fingerprint.weights_fingerprint`). It imports neither FAISS nor Pyserini.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from kd_pyserini.cards import EncoderCard, get_card
from kd_pyserini.encoding.fingerprint import short, weights_fingerprint
from kd_pyserini.errors import KdError

__all__ = ["METADATA_FILENAME", "INDEX_FILENAME", "DOCID_FILENAME", "FORMAT_NAME", "BM25_FORMAT_NAME",
           "IncompatibleIndexError", "MissingMetadataError", "CorruptIndexError", "truncated_index_message",
           "read_metadata", "load_docids", "index_info", "check_index_compatible", "raw_contents"]

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
    that built it (:func:`~kd_pyserini.encoding.fingerprint.weights_fingerprint`), so two different models that share
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
