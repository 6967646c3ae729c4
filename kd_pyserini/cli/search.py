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
    # BM25 -> BERT_Dot (top 1000) -> BERT_CAT (top 100) in one command
    kd-search --mode rerank --bm25-index indexes/bm25 --encoder tas-b --reranker distilbert-cat --topics dl19 ...

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
import time
from pathlib import Path
from typing import Any

import click

from kd_pyserini.cli.options import (KdCommand, batch_size_option, device_option, fusion_options, hits_option,
                                     measures_option, output_option, parse_weights, passage_max_length_option,
                                     precision_option, progress_option, query_max_length_option, run_tag_option,
                                     verbose_option)
from kd_pyserini.search.bm25 import BM25_DEFAULT, Bm25Searcher, bm25_candidates
from kd_pyserini.search.cross_rerank import BI_ENCODER_DEPTH, cross_rerank, default_depth
from kd_pyserini.search.dense import DenseSearcher, check_max_length, resolve_query_encoding
from kd_pyserini.search.hybrid import fuse_searchers, fusion_parameters
from kd_pyserini.search.rerank import read_candidates, rerank
from kd_pyserini.search.output import OutputLock, write_run_and_sidecar
from kd_pyserini.search.sidecar import (SearchTiming, evaluate_run, index_info, measures_for, missing_query_messages,
                                        qrels_for)
from kd_pyserini.search.topics import Topics, resolve_topics
from kd_pyserini.trec_io import Run

__all__ = ["main", "MODES", "OLD_NAMES"]

MODES = ("dense", "bm25", "rerank", "hybrid")
OLD_NAMES = {"--max-length": "--query-max-length", "--ignore-encoder-mismatch": "--allow-encoder-mismatch"}


def _infer_mode(mode: str | None, encoder: str | None, index: str | None, bm25_index: str | None,
                candidates: str | None, reranker: str | None = None) -> str:
    if mode:
        return mode
    if candidates or reranker:
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
@click.option("--corpus", default=None, type=click.Path(exists=True),
              help="rerank: passage texts for a candidate run or a dense/hybrid first stage.")
@click.option("--reranker", default=None, metavar="CARD",
              help="rerank: a cross-encoder (BERT_CAT) card, hub id or folder re-scoring the candidates "
                   "(distilbert-cat-margin-mse, ms-marco-minilm-l6-v2); with --encoder and BM25 candidates, after "
                   "the BERT_Dot re-ranking.")
@click.option("--first-stage", type=click.Choice(["bm25", "dense", "hybrid"]), default=None,
              help="rerank --reranker without --candidates: where the candidates come from [bm25 with --bm25-index, "
                   "else dense].")
@click.option("--depth", type=click.IntRange(min=1), default=None,
              help="rerank: candidates re-scored per query [100 with --reranker, 1000 for a bi-encoder]; hybrid: "
                   "depth of each fused list [1000].")
@fusion_options("--fusion", default_method="interpolation", prefix="hybrid: ")
@click.option("--ef-search", type=int, default=None, help="HNSW efSearch [saved in the index].")
@click.option("--nprobe", type=int, default=None, help="IVF nprobe [saved in the index].")
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
    logging.basicConfig(level=logging.INFO if kw["verbose"] else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with OutputLock(kw["output"]):  # one writer per --output for the whole command
        _run(kw)


def _run(kw: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    mode = _infer_mode(kw["mode"], kw["encoder"], kw["index"], kw["bm25_index"], kw["candidates"], kw["reranker"])
    if kw["reranker"] and mode != "rerank":
        raise click.UsageError(f"--reranker re-ranks candidates: use it with --mode rerank, not --mode {mode}")
    if kw["first_stage"] and not kw["reranker"]:
        raise click.UsageError("--first-stage picks the candidates a --reranker re-scores; without one, use --mode "
                               "bm25|dense|hybrid (or --mode rerank --encoder for a bi-encoder)")
    kw["depth"] = kw["depth"] or default_depth("cross-encoder" if kw["reranker"] else "bi-encoder")
    topics = resolve_topics(kw["topics"]) if kw["topics"] else None
    if topics is None and not (mode == "rerank" and kw["candidates"]):
        raise click.UsageError("--topics is required (a name such as dl19-passage or scifact, or a file)")
    enc_kw = {"batch_size": kw["batch_size"], "device": kw["device"], "precision": kw["precision"]}
    allow = kw["allow_encoder_mismatch"]
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
    if mode == "hybrid" and not encoder:
        raise click.UsageError(f"--mode {mode} needs --encoder")
    if mode == "rerank" and not encoder and not kw["reranker"]:
        raise click.UsageError("--mode rerank needs --encoder (a bi-encoder) or --reranker (a cross-encoder)")

    if mode == "rerank" and kw["reranker"]:
        run, before, stages, card, search_s, extra = _cross_encoder_rerank(kw, topics, encoder, enc_kw, progress)
        config.update(extra)
        components = stages
    elif mode == "dense":
        searcher = DenseSearcher(kw["index"], encoder, threads=kw["threads"], query_max_length=kw["query_max_length"],
                                 ef_search=kw["ef_search"], nprobe=kw["nprobe"], allow_encoder_mismatch=allow,
                                 **enc_kw)
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
        check_max_length(query.encoder, kw["passage_max_length"], "passage")
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
        # "before" over the same queries as "after": the topics asked for (else every query the file carries)
        before = {q: docs for q, docs in cands.run.items() if topics is None or q in topics.queries}
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
                              ef_search=kw["ef_search"], nprobe=kw["nprobe"], allow_encoder_mismatch=allow,
                              **enc_kw)
        card = dense.card
        bm25 = Bm25Searcher(kw["bm25_index"], k1=kw["k1"], b=kw["b"], threads=kw["threads"])
        t_search = time.perf_counter()
        run, components = fuse_searchers(topics, dense, bm25, fusion, kw["hits"], kw["depth"], progress=progress,
                                         return_components=True, **params)
        search_s = time.perf_counter() - t_search
        config["params"] = {"fusion": fusion, "hits": kw["hits"], "depth": kw["depth"], **params,
                            "k1": kw["k1"], "b": kw["b"]}

    tag = kw["run_tag"] or f"kd_pyserini-{mode}"
    evaluation: dict[str, Any] | None = None
    if kw["do_eval"]:
        qt = topics or Topics({})
        qrels, qrels_name = qrels_for(qt, kw["qrels"])
        if qrels is not None:
            measures = measures_for(kw["qrels"] or qt.name,
                                    [m.strip() for m in kw["measures"].split(",")] if kw["measures"] else None)
            evaluation = {"qrels": qrels_name, "measures": measures, "run": evaluate_run(run, qrels, measures)}
            for msg in missing_query_messages(run, qrels, kw["output"]):
                click.echo(f"kd-search: warning: {msg}", err=True)
            if before is not None:
                evaluation["candidates"] = evaluate_run(before, qrels, measures)
                _print_eval("before", evaluation["candidates"])
                for name, comp in components.items():  # BM25 -> BERT_Dot -> BERT_CAT: the middle stage
                    evaluation[name] = evaluate_run(comp, qrels, measures)
                    _print_eval(name, evaluation[name])
                _print_eval("after", evaluation["run"])
            else:
                for name, comp in components.items():
                    evaluation[name] = evaluate_run(comp, qrels, measures)
                    _print_eval(name, evaluation[name])
                _print_eval(mode if not components else fusion, evaluation["run"])
        else:
            click.echo("no qrels found for these topics: not evaluated (give --qrels)", err=True)

    described = card.describe() if card is not None else None
    timing = SearchTiming(len(run), search_s, time.perf_counter() - t0)
    write_run_and_sidecar(run, kw["output"], {
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
    }, timing, tag=tag, k=kw["hits"], msmarco=kw["msmarco_format"])
    elapsed = time.perf_counter() - t0
    ms = timing.ms_per_query
    click.echo(f"{kw['output']}: {len(run)} queries ({mode}) in {elapsed:.1f} s"
               + (f" ({ms:.1f} ms/query searching)" if ms is not None else "")
               + f"; configuration in {kw['output']}.json", err=True)


def _cross_encoder_rerank(kw: dict[str, Any], topics: Topics | None, encoder: str | None, enc_kw: dict[str, Any],
                          progress: bool | None) -> tuple[Run, Run, dict[str, Run], Any, float, dict[str, Any]]:
    """``--reranker``: first-stage candidates (a file, BM25, dense or hybrid), an optional BERT_Dot re-ranking of
    BM25/file candidates (``--encoder``, top :data:`BI_ENCODER_DEPTH`), then the cross-encoder over the top
    ``--depth``. Returns ``(run, first stage, middle stages, bi-encoder card, search seconds, sidecar entries)``."""
    from kd_pyserini.candidates import Candidates
    from kd_pyserini.encoding.cross_encoder import CROSS_PRECISIONS, CrossEncoder
    from kd_pyserini.progress import quiet_third_party

    depth = kw["depth"]
    stage = "candidates" if kw["candidates"] else kw["first_stage"] or ("bm25" if kw["bm25_index"] else "dense")
    if kw["candidates"] and kw["first_stage"]:
        raise click.UsageError("give --candidates or --first-stage, not both")
    if stage != "candidates" and topics is None:
        raise click.UsageError(f"--topics is required to retrieve {stage} candidates")
    if stage in ("bm25", "hybrid") and not kw["bm25_index"]:
        raise click.UsageError(f"--first-stage {stage} needs --bm25-index LUCENE_DIR")
    if stage in ("dense", "hybrid"):
        if not kw["index"]:
            raise click.UsageError(f"--first-stage {stage} needs --index FAISS_DIR (and --encoder)")
        encoder = encoder or _encoder_from_index(kw["index"])
    middle = encoder is not None and stage in ("bm25", "candidates")  # BM25 -> BERT_Dot -> BERT_CAT
    first_depth = max(depth, BI_ENCODER_DEPTH) if middle else depth
    precision = kw["precision"] if kw["precision"] in CROSS_PRECISIONS else "fp32"  # int8: the bi-encoder only
    with quiet_third_party(progress):
        ce = CrossEncoder(kw["reranker"], device=kw["device"], precision=precision, batch_size=kw["batch_size"])
    allow = kw["allow_encoder_mismatch"]
    card, query = None, None
    if middle:
        query = resolve_query_encoding(encoder, query_max_length=kw["query_max_length"], **enc_kw)
        card = query.card
    bm25 = Bm25Searcher(kw["bm25_index"], k1=kw["k1"], b=kw["b"], threads=kw["threads"]) \
        if stage in ("bm25", "hybrid") else None
    dense = None
    if stage in ("dense", "hybrid"):
        dense = DenseSearcher(kw["index"], encoder, threads=kw["threads"], query_max_length=kw["query_max_length"],
                              ef_search=kw["ef_search"], nprobe=kw["nprobe"], allow_encoder_mismatch=allow, **enc_kw)
        card = dense.card
    cands = read_candidates(kw["candidates"], kw["corpus"], first_depth) if stage == "candidates" else None
    t_search = time.perf_counter()
    if stage == "bm25":
        cands = bm25_candidates(topics, bm25, first_depth, progress=progress)
    elif stage in ("dense", "hybrid"):
        if stage == "dense":
            first = dense.search_batch(topics, first_depth, progress=progress)
        else:
            params = dict(alpha=kw["alpha"], normalize=kw["normalize"], weight_on_dense=kw["weight_on_dense"],
                          rrf_k=kw["rrf_k"], weights=parse_weights(kw["weights"], 2), norm=kw["norm"])
            first = fuse_searchers(topics, dense, bm25, kw["method"], first_depth, BI_ENCODER_DEPTH,
                                   progress=progress, **params)
        cands = Candidates(first, _first_stage_texts(first, kw["corpus"], bm25, stage), {},
                           {"first_stage": stage, "depth": first_depth})
    stages: dict[str, Run] = {}
    to_rerank = cands
    if middle:
        mid = rerank(topics, query, cands, depth=BI_ENCODER_DEPTH, hits=BI_ENCODER_DEPTH,
                     passage_max_length=kw["passage_max_length"], progress=progress, **enc_kw)
        stages["bert_dot"] = mid
        to_rerank = Candidates(mid, cands.texts, cands.queries, cands.source)
    hits = min(kw["hits"], depth)
    run = cross_rerank(to_rerank, None, ce, depth=depth, hits=hits, topics=topics, progress=progress)
    search_s = time.perf_counter() - t_search
    before = {q: docs for q, docs in cands.run.items() if topics is None or q in topics.queries}
    extra = {"candidates": cands.source, "first_stage": stage, "reranker": ce.describe(),
             "params": {"depth": depth, "first_stage_depth": first_depth, "hits": hits,
                        "bi_encoder_depth": BI_ENCODER_DEPTH if middle else None, "k1": kw["k1"], "b": kw["b"],
                        "pairs_scored": sum(min(depth, len(d)) for q, d in to_rerank.run.items() if q in run)}}
    return run, before, stages, card, search_s, extra


def _first_stage_texts(run: Run, corpus: str | None, bm25: Bm25Searcher | None, stage: str) -> dict[str, str]:
    """Passage texts of a dense/hybrid first stage: from ``--corpus``, else the Lucene index's raw documents."""
    need = {d for docs in run.values() for d in docs}
    if corpus:
        from kd_pyserini.corpus import load_texts

        texts = load_texts(corpus, need)
    elif bm25 is not None:
        texts = {d: t for d in need if (t := bm25.passage(d)) is not None}
    else:
        raise click.UsageError(f"--first-stage {stage} has no passage text: give --corpus (the indexed collection) "
                               "or --bm25-index with stored raw documents")
    missing = need - texts.keys()
    if missing:
        raise click.UsageError(f"no passage text for {len(missing)} {stage} candidates (e.g. {sorted(missing)[0]!r}); "
                               "give the --corpus the index was built from")
    return texts


if __name__ == "__main__":
    main()
