"""``python -m kd_pyserini.demo`` (or ``python -m kd_pyserini.cli.demo``): the offline demo's command.

Indexes a corpus (default: the bundled toy corpus) with BM25 and a dense encoder, runs every retrieval mode and
prints one evaluation table on stdout (:func:`kd_pyserini.demo.run_demo`).
"""

from __future__ import annotations

import click

from kd_pyserini import toy
from kd_pyserini.cli.options import KdCommand, progress_option
from kd_pyserini.demo import format_table, run_demo

__all__ = ["main"]


@click.command(name="kd-demo", cls=KdCommand)
@click.option("--corpus", default=str(toy.CORPUS), show_default="bundled toy corpus",
              help="JsonCollection, BEIR corpus.jsonl or MS MARCO tsv (.gz accepted).")
@click.option("--topics", default=str(toy.TOPICS), show_default="bundled toy topics", help="Topic-set name or file.")
@click.option("--qrels", default=str(toy.QRELS), show_default="bundled toy qrels", help="Qrels name or file.")
@click.option("--encoder", default="all-minilm-l6-v2", show_default=True, help="Encoder name, hub id or directory.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Where indexes and runs go (default: a new temporary folder); existing indexes are reused.")
@click.option("--hits", type=click.IntRange(min=1), default=100, show_default=True, help="Documents per query.")
@progress_option()
def main(corpus: str, topics: str, qrels: str, encoder: str, workdir: str | None, hits: int,
         progress: bool | None) -> None:
    """BM25, dense, re-ranking and hybrid retrieval end to end, offline, with one evaluation table."""
    from kd_pyserini.progress import progress_enabled

    results = run_demo(corpus, topics, qrels, encoder, workdir, hits, progress=progress_enabled(progress))
    for line in format_table(results):
        click.echo(line)


if __name__ == "__main__":
    main()
