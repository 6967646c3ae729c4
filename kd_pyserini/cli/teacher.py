"""``kd-teacher``: teacher files for Margin-MSE distillation (``score``, ``mine``, ``merge``).

Usage (also ``python -m kd_pyserini.cli.teacher``)::

    # hard-negative triples from a first-stage run and qrels: qid<TAB>pos_pid<TAB>neg_pid
    kd-teacher mine --run bm25.train.txt --qrels qrels.train.tsv -o triples.tsv [--depth 1000] [--skip-top 0]
               [--negatives-per-positive 1] [--min-relevance 1] [--sample random|top] [--seed 42]
               [--collection collection.tsv] [--queries queries.train.tsv]
    # teacher scores: one teacher (T1), or several whose mean is written (T2)
    kd-teacher score --triples triples.tsv --collection collection.tsv --queries queries.train.tsv
               --teacher distilbert-cat-margin-mse [--teacher DIR ...] -o teacher.tsv [--batch-size 32]
               [--max-length N] [--query-max-length N] [--passage-max-length N] [--device cuda]
               [--precision auto|fp32|bf16|fp16] [--chunk-pairs 16384] [--shard I/N] [--skip-bad] [--progress]
    # ColBERT / PreTTR teachers (the paper's other architectures), alone or in an ensemble
    kd-teacher score --triples triples.tsv ... --teacher colbert-distilbert-margin-mse --teacher prettr -o t.tsv
    # text triples (triples.train.small.tsv): query<TAB>pos<TAB>neg, no collection needed
    kd-teacher score --triples triples.train.small.tsv --teacher ms-marco-minilm-l6-v2 -o teacher.tsv
    # several GPUs or machines: one shard each, then merge
    kd-teacher score ... --shard 2/4 -o teacher.tsv      # -> teacher.tsv.shard-2-of-4.npz
    kd-teacher merge -o teacher.tsv teacher.tsv.shard-*-of-4.npz

``kd-train margin-mse --teacher teacher.tsv [--collection ... --queries ...]`` reads the file unchanged. A killed
``score`` resumes when run again with the same options (finished chunks are kept in ``OUTPUT.parts/``); the teacher
file appears only when complete.
"""

from __future__ import annotations

import logging

import click

from kd_pyserini.cli.options import (KdCommand, KdGroup, batch_size_option, device_option, output_option,
                                     passage_max_length_option, precision_option, progress_option,
                                     query_max_length_option, verbose_option)

__all__ = ["main"]


@click.group(name="kd-teacher", cls=KdGroup)
@verbose_option()
def main(verbose: bool) -> None:
    """Teacher files for Margin-MSE distillation: mine triples, score them with re-rankers, merge shards."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


@main.command("score", cls=KdCommand)
@click.option("--triples", required=True, type=click.Path(exists=True, dir_okay=False),
              help="qid<TAB>pos_pid<TAB>neg_pid (with --collection/--queries) or query<TAB>pos<TAB>neg (.gz ok).")
@click.option("--format", "fmt", type=click.Choice(["auto", "ids", "text"]), default="auto", show_default=True,
              help="Triples layout (auto: ids when --collection/--queries are given or the fields hold no spaces).")
@click.option("--collection", type=click.Path(exists=True, dir_okay=False), default=None,
              help="pid<TAB>passage (MS MARCO collection.tsv), read lazily by byte offset.")
@click.option("--queries", type=click.Path(exists=True, dir_okay=False), default=None,
              help="qid<TAB>query (queries.train.tsv).")
@click.option("--teacher", "teachers", multiple=True, required=True, metavar="CARD",
              help="Re-ranker (cross-encoder, ColBERT, PreTTR) or bi-encoder card, hub id or folder; repeat for an "
                   "ensemble (their mean).")
@output_option("file", help="Teacher file to write: ids in, pos<TAB>neg<TAB>qid<TAB>pos_pid<TAB>neg_pid out; text "
                            "in, pos<TAB>neg<TAB>query<TAB>pos<TAB>neg out.")
@batch_size_option(help="Pairs (cross-encoders) or texts (bi-encoders) per forward pass.")
@click.option("--max-length", type=click.IntRange(min=4), default=None,
              help="Cross-encoders: pair length in tokens, special tokens included [the card's].")
@query_max_length_option("Query truncation in tokens [bi-encoders, ColBERT, PreTTR: the card's; cross-encoders: "
                         "only the pair length].")
@passage_max_length_option("Passage truncation in tokens [bi-encoders, ColBERT, PreTTR: the card's; cross-encoders: "
                           "only the pair length].")
@device_option()
@precision_option(("auto", "fp32", "bf16", "fp16"), help="Explicit: fp32, bf16 (CPU autocast or CUDA), fp16 (CUDA).")
@click.option("--chunk-pairs", type=click.IntRange(min=1), default=16384, show_default=True,
              help="Pairs per saved chunk: the unit a killed run resumes from (keep it when resuming).")
@click.option("--shard", default=None, metavar="I/N",
              help="Score shard I of N (1-based) into OUTPUT.shard-I-of-N.npz; then 'kd-teacher merge'.")
@click.option("--skip-bad", is_flag=True, help="Skip and count malformed triple lines instead of stopping.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads [torch's default].")
@progress_option()
def score_cmd(triples: str, fmt: str, collection: str | None, queries: str | None, teachers: tuple[str, ...],
              output: str, batch_size: int, max_length: int | None, query_max_length: int | None,
              passage_max_length: int | None, device: str | None, precision: str, chunk_pairs: int,
              shard: str | None, skip_bad: bool, threads: int | None, progress: bool | None) -> None:
    """Score training triples with one or more teachers (several: their mean) and write a teacher file.

    Each unique (query, passage) pair is scored once. Finished chunks are kept in OUTPUT.parts/, so the same
    command resumes after a kill; the teacher file appears only when complete.
    """
    from kd_pyserini.teacher.score import parse_shard, score_triples

    res = score_triples(triples, output, list(teachers), fmt=fmt, collection=collection, queries=queries,
                        batch_size=batch_size, query_max_length=query_max_length,
                        passage_max_length=passage_max_length, max_length=max_length, device=device,
                        precision=precision, chunk_pairs=chunk_pairs, shard=parse_shard(shard), skip_bad=skip_bad,
                        threads=threads, progress=progress)
    rate = f", {res.pairs_per_second:,.0f} pairs/s" if res.pairs_per_second else ""
    resumed = f" ({res.resumed_chunks} chunk file(s) resumed)" if res.resumed_chunks else ""
    click.echo(f"{res.output}: {res.triples:,} triples, {res.pairs:,} unique pairs (of {res.pair_references:,}); "
               f"scored {res.scored_pairs:,} pair(s) in {res.seconds:.1f} s{rate}{resumed}", err=True)
    if res.shard[1] > 1:
        click.echo(f"shard {res.shard[0]}/{res.shard[1]} done; when all are: kd-teacher merge -o {output} "
                   f"{output}.shard-*-of-{res.shard[1]}.npz", err=True)


@main.command("mine", cls=KdCommand)
@click.option("--run", "run_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="First-stage run: TREC/MS MARCO run, or qid<TAB>pid<TAB>query<TAB>passage candidates.")
@click.option("--qrels", required=True, help="Qrels name (dl19-passage, dl20, ...) or file.")
@output_option("file", help="Triples to write: qid<TAB>pos_pid<TAB>neg_pid.")
@click.option("--depth", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Hard negatives come from the run's top DEPTH.")
@click.option("--skip-top", type=click.IntRange(min=0), default=0, show_default=True,
              help="Leave out the run's first N ranks (unjudged relevant passages hide there).")
@click.option("--negatives-per-positive", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--min-relevance", type=int, default=1, show_default=True,
              help="Lowest grade counted as relevant (TREC DL: 2 for 'highly relevant' only).")
@click.option("--sample", type=click.Choice(["random", "top"]), default="random", show_default=True,
              help="random: seeded draw from the ranks used; top: the highest-ranked negatives.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--collection", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Keep only passages in this pid<TAB>passage file (those 'score' can read).")
@click.option("--queries", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Keep only queries in this qid<TAB>query file.")
def mine_cmd(run_path: str, qrels: str, output: str, depth: int, skip_top: int, negatives_per_positive: int,
             min_relevance: int, sample: str, seed: int, collection: str | None, queries: str | None) -> None:
    """Mine hard-negative triples from a first-stage run and qrels (relevant passages as positives, the run's
    non-relevant ones as negatives)."""
    from kd_pyserini.resources import get_qrels
    from kd_pyserini.teacher.mine import mine_triples, read_first_stage, write_triples
    from kd_pyserini.offsets import OffsetIndex

    run = read_first_stage(run_path)
    judged = get_qrels(qrels)
    mined = mine_triples(run, judged, depth=depth, skip_top=skip_top, negatives_per_positive=negatives_per_positive,
                         min_relevance=min_relevance, sample=sample, seed=seed,
                         passages=OffsetIndex(collection) if collection else None,
                         queries=OffsetIndex(queries) if queries else None)
    if not mined.triples:
        raise click.ClickException(f"no triples: {mined.describe()} (do the run's query ids match the qrels'?)")
    write_triples(mined, output)
    skipped = ", ".join(f"{n} {why}" for why, n in mined.skipped.items())
    dropped = (f"; left out for want of text: {mined.dropped_positives} positive(s), {mined.dropped_negatives} "
               "negative(s)") if collection else ""
    click.echo(f"{output}: {len(mined.triples):,} triples from {mined.queries} queries"
               + (f" (skipped queries: {skipped})" if skipped else "") + dropped, err=True)


@main.command("merge", cls=KdCommand)
@click.argument("shards", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@output_option("file", help="Teacher file to write from all the shards.")
@click.option("--triples", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The scored triples file, if it moved since scoring [the path the shards recorded].")
@progress_option()
def merge_cmd(shards: tuple[str, ...], output: str, triples: str | None, progress: bool | None) -> None:
    """Merge the OUTPUT.shard-I-of-N.npz files of 'kd-teacher score --shard' into the teacher file."""
    from kd_pyserini.teacher.score import merge_shards

    out = merge_shards(list(shards), output, triples=triples, progress=progress)
    click.echo(f"{out}: merged {len(shards)} shard(s)", err=True)


if __name__ == "__main__":
    main()
