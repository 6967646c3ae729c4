"""``kd-index``: build dense (FAISS, Pyserini layout) and BM25 (Lucene) indexes.

Usage::

    kd-index dense --encoder distilbert-dot-tas-b --corpus collection.tsv -o indexes/tasb
                   [--batch-size 32] [--device cuda] [--precision auto|fp32|fp16|bf16|int8] [--passage-max-length 200]
                   [--chunk-size 50000] [--shard I/N] [--index-type flat|hnsw|ivfpq|sq8|fp16] ...
    kd-index merge indexes/tasb.shard0 indexes/tasb.shard1 ... -o indexes/tasb [--index-type ...]
    kd-index convert indexes/tasb -o indexes/tasb-fp16 --index-type fp16
    kd-index bm25  --corpus corpus.jsonl.gz -o indexes/bm25 [--threads 4]
    kd-index passage-store --reranker colbert-distilbert-margin-mse --corpus collection.tsv -o stores/colbert
                   [--chunk-size 4096] [--query-width 38] [--restart]
    kd-index info  indexes/tasb

Every build takes ``--progress/--no-progress`` (default: bars when stderr is a terminal) and ``--overwrite``.
``kd-index dense`` starts no Java. The layout, index types and resuming are described in :mod:`kd_pyserini.index`
and its rooms. Also runnable as ``python -m kd_pyserini.cli.index`` (or ``python -m kd_pyserini.index``).
Old spellings (one more release, with a warning): ``kd-index dense --max-length`` (``--passage-max-length``).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from kd_pyserini.cli.options import (KdGroup, batch_size_option, compose, device_option, output_option,
                                     passage_max_length_option, precision_option, progress_option, verbose_option)
from kd_pyserini.index.bm25 import build_bm25_index
from kd_pyserini.index.dense import DEFAULT_CHUNK_SIZE, build_dense_index
from kd_pyserini.index.faiss_factory import INDEX_TYPES, IndexParams
from kd_pyserini.index.layout import index_info, read_metadata
from kd_pyserini.index.merge import convert_dense_index, merge_dense_indexes
from kd_pyserini.index.passage_store import DEFAULT_STORE_CHUNK, PassageStore, build_passage_store

__all__ = ["main"]

DENSE_OLD_NAMES = {"--max-length": "--passage-max-length"}
CORPUS_FORMATS = ("jsonl", "beir", "tsv")

_index_options = compose(
    click.option("--index-type", type=click.Choice(INDEX_TYPES), default="flat", show_default=True,
                 help="flat: exact IndexFlatIP (3,072 B/vector at d=768: 27.2 GB for 8.8M passages); "
                      "hnsw: IndexHNSWFlat (~3.3 KB/vector, 29.4 GB); fp16: scalar quantiser QT_fp16 "
                      "(1,536 B, 13.6 GB); sq8: QT_8bit (768 B, 6.8 GB); ivfpq: IVF-PQ (m + 8 = 104 B, 0.92 GB)."),
    click.option("--hnsw-m", type=int, default=32, show_default=True, help="HNSW: neighbours per node (M)."),
    click.option("--ef-construction", type=int, default=200, show_default=True, help="HNSW: efConstruction."),
    click.option("--ef-search", type=int, default=256, show_default=True,
                 help="HNSW: efSearch saved in the index (Pyserini searches with it)."),
    click.option("--nlist", type=int, default=None, help="IVF-PQ: number of cells [4*sqrt(n), at most n/39]."),
    click.option("--pq-m", type=int, default=None, help="IVF-PQ: sub-quantisers [d/8]."),
    click.option("--pq-nbits", type=int, default=8, show_default=True, help="IVF-PQ: bits per code."),
    click.option("--nprobe", type=int, default=32, show_default=True,
                 help="IVF-PQ: cells searched per query, saved in the index."),
    click.option("--train-size", type=int, default=262_144, show_default=True,
                 help="sq8/ivfpq: vectors sampled (evenly) for training."),
    click.option("--keep-vectors", type=click.Choice(["fp16", "fp32"]), default=None,
                 help="Also write the vectors to OUTPUT/vectors.npy (on disk, memory-mapped when searching) so that "
                      "'kd-search --rescore K' re-scores an approximate index's top K exactly (ivfpq + fp16: "
                      "104 B/vector in memory, 1,536 B on disk at d=768)."),
)

_overwrite_option = click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")


def _params_from(kw: dict[str, Any]) -> IndexParams:
    """Take the ``_index_options`` values out of ``kw`` as an :class:`IndexParams`."""
    return IndexParams(index_type=kw.pop("index_type"), hnsw_m=kw.pop("hnsw_m"),
                       ef_construction=kw.pop("ef_construction"), ef_search=kw.pop("ef_search"),
                       nlist=kw.pop("nlist"), pq_m=kw.pop("pq_m"), pq_nbits=kw.pop("pq_nbits"),
                       nprobe=kw.pop("nprobe"), train_size=kw.pop("train_size"),
                       keep_vectors=kw.pop("keep_vectors"))


@click.group(name="kd-index", cls=KdGroup)
@verbose_option()
def main(verbose: bool) -> None:
    """Build dense (FAISS, Pyserini layout) and BM25 (Lucene) indexes for kd_pyserini."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command("dense", old_names=DENSE_OLD_NAMES)
@click.option("--encoder", required=True, help="Card name (distilbert-dot-tas-b, distilbert-dot-margin-mse, "
                                               "all-minilm-l6-v2...), hub id or model directory.")
@click.option("--corpus", required=True, type=click.Path(exists=True),
              help="JsonCollection .jsonl, BEIR corpus.jsonl or MS MARCO .tsv (.gz accepted), or a folder of them.")
@output_option("dir", help="Index folder to create.")
@click.option("--format", "fmt", type=click.Choice(CORPUS_FORMATS), default=None, help="Corpus format [detected].")
@batch_size_option(help="Passages per forward pass.")
@device_option()
@precision_option(help="int8: CPU only, dynamic quantisation (the fast query option; see PERFORMANCE.md).")
@passage_max_length_option("Passage truncation in tokens [the card's; 200 for TAS-B/Margin-MSE].")
@click.option("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, show_default=True,
              help="Passages per resumable chunk (OUTPUT.partial/chunk-NNNNNN.npy).")
@click.option("--shard", default=None, metavar="I/N", help="Encode only shard I (0-based) of N contiguous ranges.")
@_index_options
@_overwrite_option
@click.option("--restart", is_flag=True, help="Discard chunks of an earlier interrupted run instead of resuming.")
@click.option("--keep-chunks", is_flag=True, help="Keep OUTPUT.partial after success.")
@progress_option()
def dense_cmd(**kw: Any) -> None:
    """Encode a corpus into a FAISS index readable by Pyserini's FaissSearcher (resumable, shardable)."""
    params = _params_from(kw)
    out = build_dense_index(kw["corpus"], kw["encoder"], kw["output"], fmt=kw["fmt"], batch_size=kw["batch_size"],
                            device=kw["device"], precision=kw["precision"], max_length=kw["passage_max_length"],
                            chunk_size=kw["chunk_size"], shard=kw["shard"], index=params, overwrite=kw["overwrite"],
                            keep_chunks=kw["keep_chunks"], restart=kw["restart"], progress=kw["progress"],
                            command=sys.argv)
    meta = read_metadata(out)
    enc = meta["encoding"]
    click.echo(f"{out}: {meta['num_vectors']} vectors x {meta['dimension']} ({meta['index']['faiss_class']}); "
               f"encoded {enc['passages_encoded_this_run']} passages"
               + (f" at {enc['passages_per_second']} passages/s" if enc["passages_per_second"] else ""), err=True)


@main.command("merge")
@click.argument("shards", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@output_option("dir", help="Index folder to create.")
@_index_options
@_overwrite_option
@progress_option()
def merge_cmd(shards: tuple[str, ...], output: str, overwrite: bool, progress: bool | None, **kw: Any) -> None:
    """Merge the shard indexes of 'kd-index dense --shard I/N' (any order) into one index."""
    params = _params_from(kw)
    out = merge_dense_indexes(shards, output, index=params, overwrite=overwrite, progress=progress, command=sys.argv)
    meta = read_metadata(out)
    click.echo(f"{out}: {meta['num_vectors']} vectors from {len(shards)} shards ({meta['index']['faiss_class']})",
               err=True)


@main.command("convert")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@output_option("dir", help="Index folder to create.")
@_index_options
@_overwrite_option
@progress_option()
def convert_cmd(source: str, output: str, overwrite: bool, progress: bool | None, **kw: Any) -> None:
    """Re-index a flat (or hnsw) index as another --index-type without re-encoding."""
    params = _params_from(kw)
    out = convert_dense_index(source, output, index=params, overwrite=overwrite, progress=progress, command=sys.argv)
    meta = read_metadata(out)
    click.echo(f"{out}: {meta['num_vectors']} vectors ({meta['index']['faiss_class']}, "
               f"{meta['index']['bytes_per_vector']:.0f} bytes/vector)", err=True)


@main.command("bm25")
@click.option("--corpus", required=True, type=click.Path(exists=True),
              help="JsonCollection .jsonl, BEIR corpus.jsonl or MS MARCO .tsv (.gz accepted).")
@output_option("dir", help="Lucene index folder to create.")
@click.option("--format", "fmt", type=click.Choice(CORPUS_FORMATS), default=None, help="Corpus format [detected].")
@click.option("--threads", type=int, default=1, show_default=True, help="Anserini indexing threads.")
@_overwrite_option
@progress_option()
def bm25_cmd(corpus: str, output: str, fmt: str | None, threads: int, overwrite: bool, progress: bool | None) -> None:
    """Build Pyserini's Lucene BM25 index (positions, docvectors, raw documents) from a corpus."""
    out = build_bm25_index(corpus, output, fmt=fmt, threads=threads, overwrite=overwrite, progress=progress,
                           command=sys.argv)
    meta = read_metadata(out)
    click.echo(f"{out}: {meta['stats']['documents']} documents indexed in {meta['timing']['index_seconds']} s",
               err=True)


@main.command("passage-store")
@click.option("--reranker", required=True,
              help="A ColBERT or PreTTR re-ranker: card name (colbert-distilbert-margin-mse, "
                   "prettr-distilbert-margin-mse), hub id or model folder.")
@click.option("--corpus", required=True, type=click.Path(exists=True),
              help="JsonCollection .jsonl, BEIR corpus.jsonl or MS MARCO .tsv (.gz accepted), or a folder of them.")
@output_option("dir", help="Store folder to create (never replaced).")
@click.option("--format", "fmt", type=click.Choice(CORPUS_FORMATS), default=None, help="Corpus format [detected].")
@batch_size_option(help="Passages per forward pass.")
@device_option()
@precision_option(("auto", "fp32", "bf16", "fp16"), help="Explicit: fp32, bf16, fp16 (CUDA); how the encoder runs "
                  "(the store itself is fp16).")
@passage_max_length_option("Passage truncation in tokens [the card's: 200].")
@click.option("--query-width", type=int, default=None,
              help="PreTTR only: the query width the passage positions are offset by [query max length + 8].")
@click.option("--chunk-size", type=int, default=DEFAULT_STORE_CHUNK, show_default=True,
              help="Passages per resumable chunk (OUTPUT.partial/chunk-NNNNNN.*).")
@click.option("--restart", is_flag=True, help="Discard chunks of an earlier interrupted run instead of resuming.")
@progress_option()
def passage_store_cmd(**kw: Any) -> None:
    """Precompute a ColBERT / PreTTR re-ranker's passage side (fp16, resumable), so that re-ranking pays the query only.

    Use it with load_reranker(CARD, store=OUTPUT) (kd_pyserini.encoding.rerankers); docs/model-family.md gives the cost
    per passage (ColBERT at 768 dims: ~127 KB, ~1.1 TB for MS MARCO's 8.8M passages).
    """
    out = build_passage_store(kw["corpus"], kw["output"], kw["reranker"], fmt=kw["fmt"], chunk_size=kw["chunk_size"],
                              device=kw["device"], precision=kw["precision"], batch_size=kw["batch_size"],
                              passage_max_length=kw["passage_max_length"], query_width=kw["query_width"],
                              restart=kw["restart"], progress=kw["progress"])
    info = PassageStore(out).info
    click.echo(f"{out}: {info['passages']} passages, {info['tokens']} token rows x {info['dimension']} fp16 "
               f"({info['bytes_per_passage']:.0f} bytes/passage, {info['bytes'] / 2**20:.1f} MiB)", err=True)


@main.command("info")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False))
def info_cmd(index_dir: str) -> None:
    """Print an index's kd_pyserini.json."""
    click.echo(json.dumps(index_info(index_dir), indent=2))


if __name__ == "__main__":
    main()
