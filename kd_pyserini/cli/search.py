"""``kd-search``: dense (FAISS), BM25 (Lucene), re-ranking and hybrid search; a TREC run and its ``RUN.json``.

Usage (also ``python -m kd_pyserini.cli.search`` or ``python -m kd_pyserini.search``)::

    # dense retrieval over an index from 'kd-index dense' (no Java needed)
    kd-search --mode dense --encoder distilbert-dot-tas-b --index indexes/tasb --topics dl19-passage -o run.txt
    # BM25 over an index from 'kd-index bm25' (or any Pyserini Lucene index)
    kd-search --mode bm25 --index indexes/bm25 --topics scifact -o bm25.txt [--k1 0.9 --b 0.4]
    # re-rank BM25's top 1000 (text from the Lucene index's stored raw documents)
    kd-search --mode rerank --encoder distilbert-dot-tas-b --bm25-index indexes/bm25 --topics dl19-passage ...
    # re-rank a candidate run (text from a corpus), or an MS MARCO top1000-style qid<TAB>pid<TAB>query<TAB>passage
    kd-search --mode rerank --encoder tas-b --candidates top1000.dl19.tsv.gz --topics dl19-passage -o rr.txt
    # hybrid: dense + BM25 fused by kd_pyserini.fusion
    kd-search --mode hybrid --encoder tas-b --index indexes/tasb --bm25-index indexes/bm25 --fusion rrf ...
    # a cross-encoder (BERT_CAT) re-ranks the top 100 of any first stage: a candidates file, BM25, dense, hybrid
    kd-search --mode rerank --reranker distilbert-cat-margin-mse --candidates top1000.dl19.tsv.gz -o cat.txt
    kd-search --mode rerank --reranker distilbert-cat --first-stage dense --encoder tas-b --index indexes/tasb \
              --corpus collection.tsv --topics dl19-passage -o cat.txt
    # ColBERT / PreTTR re-rank the same way; a passage store (kd-index passage-store) leaves only the query side
    kd-search --mode rerank --reranker colbert-distilbert-margin-mse --passage-store stores/colbert \
              --candidates top1000.dl19.tsv.gz -o colbert.txt
    # BM25 -> BERT_Dot (top 1000) -> BERT_CAT (top 100) in one command
    kd-search --mode rerank --bm25-index indexes/bm25 --encoder tas-b --reranker distilbert-cat --topics dl19 ...

The command is thin: its options become a :class:`kd_pyserini.search.spec.SearchSpec` (:func:`~kd_pyserini.search.
spec.spec_from_options`), :func:`kd_pyserini.search.pipeline.run_search` runs it, and the result is printed.

Without ``--mode``: ``--reranker`` or ``--candidates`` means rerank; ``--encoder`` with ``--index`` means dense; an
``--index`` alone is searched densely (with the encoder recorded in its ``kd_pyserini.json``) when it is a FAISS
folder, else by BM25. ``--depth`` defaults to 100 with a ``--reranker`` (one forward pass per pair) and 1000 for a
bi-encoder re-ranker and hybrid lists.

Every run file ``RUN`` gets a sidecar ``RUN.json`` (:mod:`kd_pyserini.search.sidecar`) with the exact
configuration, ``queries``, ``search_seconds`` (encoding and searching, models and indexes loaded) and
``elapsed_seconds`` (the whole command) and the run's SHA-256: the two are written as one unit
(:func:`kd_pyserini.search.output.write_run_and_sidecar`) while the command holds ``RUN.lock``, so a second kd-search
on the same ``--output`` stops with an error instead of mixing two runs. ``RUN.gz`` is written gzip-compressed (its
sidecar ``RUN.gz.json`` is plain JSON). When qrels for the topics are found, the official measures are printed at
the end (``--no-eval`` to skip), re-ranking's "before" and "after" over the same queries (the topics asked for),
with a warning when judged queries have no results (they count as 0, as in kd-eval). Old spellings (one more
release, with a warning): ``--max-length`` (``--query-max-length``), ``--ignore-encoder-mismatch``
(``--allow-encoder-mismatch``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import click

from kd_pyserini.cli.options import (KdCommand, batch_size_option, device_option, fusion_options, hits_option,
                                     measures_option, output_option, passage_max_length_option, precision_option,
                                     progress_option, query_max_length_option, run_tag_option, verbose_option)
from kd_pyserini.search.bm25 import BM25_DEFAULT
from kd_pyserini.search.spec import MODES, SpecError, spec_from_options

__all__ = ["main", "MODES", "OLD_NAMES"]

OLD_NAMES = {"--max-length": "--query-max-length", "--ignore-encoder-mismatch": "--allow-encoder-mismatch"}


def _print_eval(label: str, values: dict[str, float]) -> None:
    click.echo(f"{label:<13} " + "  ".join(f"{m} {v:.4f}" for m, v in values.items()))


@click.command(name="kd-search", cls=KdCommand, old_names=OLD_NAMES)
@click.option("--topics", default=None, help="Topic set name (dl19-passage, dl20, msmarco-dev, scifact...) or a "
                                             "qid<TAB>query file. Optional with a top1000-style --candidates file.")
@output_option("file", help="Run file to write (+ RUN.json).")
@click.option("--mode", type=click.Choice(MODES), default=None,
              help="dense | bm25 | rerank | hybrid [--encoder with --index: dense].")
@click.option("--encoder", default=None, help="Card name, hub id or model folder [dense: the index's encoder].")
@click.option("--index", default=None, type=click.Path(exists=True, file_okay=False),
              help="dense/hybrid: FAISS index folder; bm25: Lucene index folder.")
@click.option("--bm25-index", default=None, type=click.Path(exists=True, file_okay=False),
              help="Lucene index for rerank/hybrid (kd-index bm25 or a Pyserini index with raw documents).")
@hits_option()
@batch_size_option()
@click.option("--threads", type=int, default=os.cpu_count() or 1, show_default="all CPU cores",
              help="Lucene search / FAISS threads.")
@device_option()
@precision_option(help="int8: CPU only, dynamic quantisation (the fast query option; see PERFORMANCE.md).")
@query_max_length_option(help="Query truncation in tokens [the card's; 30 for TAS-B/Margin-MSE].")
@passage_max_length_option(help="rerank: passage truncation in tokens [the card's].")
@click.option("--k1", type=float, default=BM25_DEFAULT[0], show_default=True,
              help="BM25 k1. Anserini default 0.9 (BEIR, Pyserini --bm25); MS MARCO passage tuned: 0.82.")
@click.option("--b", "b", type=float, default=BM25_DEFAULT[1], show_default=True,
              help="BM25 b. Anserini default 0.4; MS MARCO passage tuned: 0.68.")
@click.option("--remove-query", is_flag=True, help="bm25: drop hits whose docid equals the query id (Pyserini's "
                                                   "--remove-query).")
@click.option("--candidates", default=None, type=click.Path(exists=True, dir_okay=False),
              help="rerank: a TREC/MS MARCO run (with --corpus) or a qid<TAB>pid<TAB>query<TAB>passage tsv(.gz).")
@click.option("--corpus", default=None, type=click.Path(exists=True),
              help="rerank: passage texts for a candidate run or a dense/hybrid first stage.")
@click.option("--reranker", default=None, metavar="CARD",
              help="rerank: a re-ranker card, hub id or folder re-scoring the candidates: BERT_CAT "
                   "(distilbert-cat-margin-mse, ms-marco-minilm-l6-v2), ColBERT (colbert-distilbert-margin-mse) or "
                   "PreTTR; with --encoder and BM25 candidates, after the BERT_Dot re-ranking.")
@click.option("--passage-store", default=None, type=click.Path(exists=True, file_okay=False),
              help="rerank: a 'kd-index passage-store' folder of the --reranker's passage side (ColBERT/PreTTR "
                   "only): re-ranking then pays only the query side and the interaction.")
@click.option("--first-stage", type=click.Choice(["bm25", "dense", "hybrid"]), default=None,
              help="rerank --reranker without --candidates: where the candidates come from [bm25 with --bm25-index, "
                   "else dense].")
@click.option("--depth", type=click.IntRange(min=1), default=None,
              help="rerank: candidates re-scored per query [100 with --reranker, 1000 for a bi-encoder]; hybrid: "
                   "depth of each fused list [1000].")
@fusion_options("--fusion", default_method="interpolation", prefix="hybrid: ")
@click.option("--ef-search", type=int, default=None, help="HNSW efSearch [saved in the index].")
@click.option("--nprobe", type=int, default=None, help="IVF nprobe [saved in the index].")
@click.option("--rescore", type=click.IntRange(min=1), default=None, metavar="K",
              help="Re-score the approximate index's top K per query exactly, from the vectors it kept on disk "
                   "(kd-index dense --index-type ivfpq --keep-vectors fp16) [off].")
@run_tag_option("kd_pyserini-MODE")
@click.option("--msmarco-format", is_flag=True, help="Write qid<TAB>docid<TAB>rank instead of TREC format.")
@click.option("--eval/--no-eval", "do_eval", default=True, show_default=True,
              help="Print the evaluation at the end when qrels for the topics are found.")
@click.option("--qrels", default=None, help="Qrels name or file for --eval [the topics' own].")
@measures_option("Comma-separated measures for --eval [the benchmark's official ones].")
@click.option("--allow-encoder-mismatch", is_flag=True,
              help="Search a dense index built with another encoder anyway (with a warning); a different dimension "
                   "or similarity is still refused.")
@progress_option()
@verbose_option()
def main(**kw: Any) -> None:
    """Search with a dense encoder, BM25, re-ranking or a hybrid; write a TREC run and RUN.json."""
    from kd_pyserini.search.pipeline import run_search

    logging.basicConfig(level=logging.INFO if kw["verbose"] else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        spec = spec_from_options(kw)
    except SpecError as e:
        raise click.UsageError(str(e)) from None
    result = run_search(spec)  # one writer per --output for the whole search (RUN.lock)
    for msg in result.warnings:
        click.echo(f"kd-search: warning: {msg}", err=True)
    for label, values in result.eval_rows:
        _print_eval(label, values)
    for note in result.notes:
        click.echo(note, err=True)
    timing = result.timing
    ms = timing.ms_per_query if timing else None
    click.echo(f"{spec.output}: {len(result.run)} queries ({spec.mode}) in "
               f"{timing.elapsed_seconds if timing else 0.0:.1f} s"
               + (f" ({ms:.1f} ms/query searching)" if ms is not None else "")
               + f"; configuration in {spec.output}.json", err=True)


if __name__ == "__main__":
    main()
