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

Without ``--mode``: ``--encoder`` with ``--index`` means dense; ``--candidates`` means rerank; an ``--index`` alone
is searched densely (with the encoder recorded in its ``kd_pyserini.json``) when it is a FAISS folder, else by BM25.

Every run file ``RUN`` gets a sidecar ``RUN.json`` (:mod:`kd_pyserini.search.sidecar`) with the exact
configuration, ``queries``, ``search_seconds`` (encoding and searching, models and indexes loaded) and
``elapsed_seconds`` (the whole command). When qrels for the topics are found, the official measures are printed at
the end (``--no-eval`` to skip). Old spelling (one more release, with a warning): ``--max-length``
(``--query-max-length``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import click

from kd_pyserini.cli.options import (KdCommand, batch_size_option, device_option, fusion_options, hits_option,
                                     measures_option, output_option, parse_weights, passage_max_length_option,
                                     precision_option, progress_option, query_max_length_option, run_tag_option,
                                     verbose_option)
from kd_pyserini.search.bm25 import BM25_DEFAULT, Bm25Searcher, bm25_candidates
from kd_pyserini.search.dense import DenseSearcher, resolve_query_encoding
from kd_pyserini.search.hybrid import fuse_searchers, fusion_parameters
from kd_pyserini.search.rerank import read_candidates, rerank
from kd_pyserini.search.sidecar import (SearchTiming, evaluate_run, index_info, measures_for, qrels_for,
                                        write_sidecar)
from kd_pyserini.search.topics import Topics, resolve_topics
from kd_pyserini.trec_io import Run, write_run

__all__ = ["main", "MODES", "OLD_NAMES"]

MODES = ("dense", "bm25", "rerank", "hybrid")
OLD_NAMES = {"--max-length": "--query-max-length"}


def _infer_mode(mode: str | None, encoder: str | None, index: str | None, bm25_index: str | None,
                candidates: str | None) -> str:
    if mode:
        return mode
    if candidates:
        return "rerank"
    if index:
        if encoder or (Path(index) / "index").is_file():
            return "dense"
        return "bm25"
    if encoder and bm25_index:
        return "rerank"
    if bm25_index:
        return "bm25"
    raise click.UsageError("say what to search: --mode dense|bm25|rerank|hybrid with --index / --bm25-index / "
                           "--candidates (e.g. --encoder ENC --index FAISS_DIR for dense)")


def _encoder_from_index(index: str) -> str:
    from kd_pyserini.cards import _lookup
    from kd_pyserini.index import METADATA_FILENAME, read_metadata

    meta = read_metadata(index)
    if meta is None or "encoder" not in meta:
        raise click.UsageError(f"--encoder is required: {index} has no {METADATA_FILENAME} naming its encoder")
    enc = meta["encoder"]
    return enc["name"] if _lookup(enc["name"]) else enc["model_id"]


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
@click.option("--corpus", default=None, type=click.Path(exists=True), help="rerank: passage texts for a run.")
@click.option("--depth", type=int, default=1000, show_default=True,
              help="rerank: candidates re-scored per query; hybrid: depth of each fused list.")
@fusion_options("--fusion", default_method="interpolation", prefix="hybrid: ")
@click.option("--ef-search", type=int, default=None, help="HNSW efSearch [saved in the index].")
@click.option("--nprobe", type=int, default=None, help="IVF nprobe [saved in the index].")
@run_tag_option("kd_pyserini-MODE")
@click.option("--msmarco-format", is_flag=True, help="Write qid<TAB>docid<TAB>rank instead of TREC format.")
@click.option("--eval/--no-eval", "do_eval", default=True, show_default=True,
              help="Print the evaluation at the end when qrels for the topics are found.")
@click.option("--qrels", default=None, help="Qrels name or file for --eval [the topics' own].")
@measures_option("Comma-separated measures for --eval [the benchmark's official ones].")
@click.option("--ignore-encoder-mismatch", is_flag=True,
              help="Search a dense index even if its kd_pyserini.json names another encoder.")
@progress_option()
@verbose_option()
def main(**kw: Any) -> None:
    """Search with a dense encoder, BM25, re-ranking or a hybrid; write a TREC run and RUN.json."""
    logging.basicConfig(level=logging.INFO if kw["verbose"] else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _run(kw)


def _run(kw: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    mode = _infer_mode(kw["mode"], kw["encoder"], kw["index"], kw["bm25_index"], kw["candidates"])
    topics = resolve_topics(kw["topics"]) if kw["topics"] else None
    if topics is None and not (mode == "rerank" and kw["candidates"]):
        raise click.UsageError("--topics is required (a name such as dl19-passage or scifact, or a file)")
    enc_kw = {"batch_size": kw["batch_size"], "device": kw["device"], "precision": kw["precision"]}
    check = not kw["ignore_encoder_mismatch"]
    progress = kw["progress"]
    encoder = kw["encoder"]
    fusion = kw["method"]
    config: dict[str, Any] = {"mode": mode}
    components: dict[str, Run] = {}
    before: Run | None = None
    card = None

    if mode in ("dense", "hybrid"):
        if not kw["index"]:
            raise click.UsageError(f"--mode {mode} needs --index FAISS_DIR")
        encoder = encoder or _encoder_from_index(kw["index"])
    if mode in ("rerank", "hybrid") and not encoder:
        raise click.UsageError(f"--mode {mode} needs --encoder")

    if mode == "dense":
        searcher = DenseSearcher(kw["index"], encoder, threads=kw["threads"], query_max_length=kw["query_max_length"],
                                 ef_search=kw["ef_search"], nprobe=kw["nprobe"], check=check, **enc_kw)
        card = searcher.card
        t_search = time.perf_counter()
        run = searcher.search_batch(topics, kw["hits"], progress=progress)
        search_s = time.perf_counter() - t_search
        config["params"] = {"hits": kw["hits"], "ef_search": kw["ef_search"], "nprobe": kw["nprobe"]}
    elif mode == "bm25":
        index = kw["index"] or kw["bm25_index"]
        if not index:
            raise click.UsageError("--mode bm25 needs --index LUCENE_DIR")
        kw["bm25_index"], kw["index"] = index, None
        bm25 = Bm25Searcher(index, k1=kw["k1"], b=kw["b"], threads=kw["threads"])
        t_search = time.perf_counter()
        run = bm25.search_batch(topics, kw["hits"], progress=progress, remove_query=kw["remove_query"])
        search_s = time.perf_counter() - t_search
        config["params"] = {"hits": kw["hits"], "k1": kw["k1"], "b": kw["b"], "remove_query": kw["remove_query"]}
    elif mode == "rerank":
        if not kw["candidates"] and not kw["bm25_index"]:
            raise click.UsageError("--mode rerank needs --bm25-index LUCENE_DIR or --candidates FILE")
        if not kw["candidates"] and topics is None:
            raise click.UsageError("--topics is required to retrieve BM25 candidates")
        query = resolve_query_encoding(encoder, query_max_length=kw["query_max_length"], **enc_kw)
        card = query.card
        bm25 = None if kw["candidates"] else Bm25Searcher(kw["bm25_index"], k1=kw["k1"], b=kw["b"],
                                                          threads=kw["threads"])
        cands = read_candidates(kw["candidates"], kw["corpus"], kw["depth"]) if kw["candidates"] else None
        t_search = time.perf_counter()
        if cands is None:
            cands = bm25_candidates(topics, bm25, kw["depth"], progress=progress)
        hits = min(kw["hits"], kw["depth"])
        run = rerank(topics, query, cands, depth=kw["depth"], hits=hits,
                     passage_max_length=kw["passage_max_length"], progress=progress, **enc_kw)
        search_s = time.perf_counter() - t_search
        before = cands.run
        config["candidates"] = cands.source
        config["params"] = {"depth": kw["depth"], "hits": hits, "passage_max_length": kw["passage_max_length"],
                            "k1": kw["k1"], "b": kw["b"],
                            "unique_passages_encoded": len({d for ds in cands.run.values() for d in ds})}
    else:  # hybrid
        if not kw["bm25_index"]:
            raise click.UsageError("--mode hybrid needs --bm25-index LUCENE_DIR (and --index FAISS_DIR)")
        weights = parse_weights(kw["weights"], 2)
        params = dict(alpha=kw["alpha"], normalize=kw["normalize"], weight_on_dense=kw["weight_on_dense"],
                      rrf_k=kw["rrf_k"], weights=weights, norm=kw["norm"])
        fusion_parameters(fusion, **params)
        dense = DenseSearcher(kw["index"], encoder, threads=kw["threads"], query_max_length=kw["query_max_length"],
                              ef_search=kw["ef_search"], nprobe=kw["nprobe"], check=check, **enc_kw)
        card = dense.card
        bm25 = Bm25Searcher(kw["bm25_index"], k1=kw["k1"], b=kw["b"], threads=kw["threads"])
        t_search = time.perf_counter()
        run, components = fuse_searchers(topics, dense, bm25, fusion, kw["hits"], kw["depth"], progress=progress,
                                         return_components=True, **params)
        search_s = time.perf_counter() - t_search
        config["params"] = {"fusion": fusion, "hits": kw["hits"], "depth": kw["depth"], **params,
                            "k1": kw["k1"], "b": kw["b"]}

    tag = kw["run_tag"] or f"kd_pyserini-{mode}"
    write_run(run, kw["output"], tag=tag, k=kw["hits"], msmarco=kw["msmarco_format"])
    elapsed = time.perf_counter() - t0

    evaluation: dict[str, Any] | None = None
    if kw["do_eval"]:
        qt = topics or Topics({})
        qrels, qrels_name = qrels_for(qt, kw["qrels"])
        if qrels is not None:
            measures = measures_for(kw["qrels"] or qt.name,
                                    [m.strip() for m in kw["measures"].split(",")] if kw["measures"] else None)
            evaluation = {"qrels": qrels_name, "measures": measures, "run": evaluate_run(run, qrels, measures)}
            if before is not None:
                evaluation["candidates"] = evaluate_run(before, qrels, measures)
                _print_eval("before", evaluation["candidates"])
                _print_eval("after", evaluation["run"])
            else:
                for name, comp in components.items():
                    evaluation[name] = evaluate_run(comp, qrels, measures)
                    _print_eval(name, evaluation[name])
                _print_eval(mode if not components else fusion, evaluation["run"])
        else:
            click.echo("no qrels found for these topics: not evaluated (give --qrels)", err=True)

    described = card.describe() if card is not None else None
    timing = SearchTiming(len(run), search_s, elapsed)
    write_sidecar(kw["output"], {
        **config,
        "run_tag": tag,
        "format": "msmarco" if kw["msmarco_format"] else "trec",
        "topics": topics.describe() if topics else None,
        "encoder": described,
        "query_max_length": kw["query_max_length"] or (described or {}).get("query_max_length"),
        "encoding": {"batch_size": kw["batch_size"], "device": kw["device"], "precision": kw["precision"]}
        if described else None,
        "index": index_info(kw["index"]) if mode != "bm25" else None,
        "bm25_index": index_info(kw["bm25_index"]),
        "threads": kw["threads"],
        "num_queries": len(run),
        "evaluation": evaluation,
    }, timing)
    ms = timing.ms_per_query
    click.echo(f"{kw['output']}: {len(run)} queries ({mode}) in {elapsed:.1f} s"
               + (f" ({ms:.1f} ms/query searching)" if ms is not None else "")
               + f"; configuration in {kw['output']}.json", err=True)


if __name__ == "__main__":
    main()
