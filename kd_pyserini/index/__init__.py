"""Build and read kd_pyserini's indexes: dense FAISS indexes in Pyserini's layout, and Lucene BM25 indexes.

The rooms:

* :mod:`~kd_pyserini.index.layout` -- the index folder's contract and atomic install: the build errors, the
  output lock that also removes a killed build's leftovers, the metadata written; it re-exports the read side,
  :mod:`kd_pyserini.index_meta` (``kd_pyserini.json``, :func:`read_metadata`, :func:`load_docids`,
  :func:`check_index_compatible`, the read errors), which lives below the Pyserini adapters that use it too;
* :func:`weights_fingerprint` (:mod:`kd_pyserini.encoding.fingerprint`), the SHA-256 of an encoder's weight files
  that an index records and searching compares;
* :mod:`~kd_pyserini.index.faiss_factory` -- FAISS index types (:class:`IndexParams`, :func:`make_faiss_index`,
  :func:`bytes_per_vector`), filling/writing an index from vector blocks, and :func:`read_faiss_index` (one-line
  error for a truncated file);
* :mod:`~kd_pyserini.index.chunks` -- the resumable chunk store ``OUTPUT.partial`` of a dense build;
* :mod:`~kd_pyserini.index.dense` -- :func:`build_dense_index` (resumable, shardable; starts no Java);
* :mod:`~kd_pyserini.index.merge` -- :func:`merge_dense_indexes` and :func:`convert_dense_index`;
* :mod:`~kd_pyserini.index.bm25` -- :func:`build_bm25_index` (Lucene; the only room that imports Pyserini);
* :mod:`~kd_pyserini.index.passage_store` -- precomputed passage sides of ColBERT / PreTTR re-rankers
  (``build_passage_store``, ``PassageStore``; imported on demand, it needs torch only through the re-ranker).

The command line (``kd-index``, ``python -m kd_pyserini.index``: :mod:`kd_pyserini.index.__main__`) is
:mod:`kd_pyserini.cli.index` (the library never imports it: tools/layers.py).
"""

from __future__ import annotations


from kd_pyserini.index.bm25 import DOCS_PER_FILE, build_bm25_index
from kd_pyserini.index.chunks import CRASH_ENV
from kd_pyserini.index.dense import DEFAULT_CHUNK_SIZE, build_dense_index, parse_shard, shard_range
from kd_pyserini.index.faiss_factory import (INDEX_TYPES, IndexParams, bytes_per_vector, make_faiss_index,
                                             read_faiss_index)
from kd_pyserini.encoding.fingerprint import weights_fingerprint
from kd_pyserini.index.layout import (BM25_FORMAT_NAME, FORMAT_NAME, METADATA_FILENAME, CorruptIndexError,
                                      IncompatibleIndexError, IndexBuildError, MissingMetadataError,
                                      check_index_compatible, index_info, load_docids, package_versions,
                                      raw_contents, read_metadata)
from kd_pyserini.index.merge import convert_dense_index, merge_dense_indexes

__all__ = [
    "METADATA_FILENAME", "INDEX_TYPES", "DEFAULT_CHUNK_SIZE", "IndexBuildError", "IncompatibleIndexError",
    "IndexParams", "bytes_per_vector", "make_faiss_index", "build_dense_index", "merge_dense_indexes",
    "convert_dense_index", "raw_contents",
    "build_bm25_index", "read_metadata", "check_index_compatible", "package_versions", "parse_shard",
    "shard_range", "load_docids",
    "MissingMetadataError", "index_info", "FORMAT_NAME", "BM25_FORMAT_NAME", "DOCS_PER_FILE", "CRASH_ENV",
    "CorruptIndexError", "read_faiss_index", "weights_fingerprint",
]

