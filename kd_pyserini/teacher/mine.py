"""``kd-teacher mine``: training triples from a first-stage run and qrels.

For each judged query (one with at least one passage graded ``>= min_relevance``) that the run ranks: its relevant
passages are the positives; the hard negatives are the run's passages at ranks ``skip_top + 1 .. depth`` that are not
relevant (ranks in trec_eval's order: score descending, ties by docid descending). Each positive gets
``negatives_per_positive`` of them, drawn at random (seeded by ``seed`` and the query id, so the same inputs give the
same triples) or, with ``sample="top"``, the highest ranked. Skipping the top ranks avoids unjudged relevant passages
posing as negatives (a strong first stage ranks many of them first).

``passages`` / ``queries`` (e.g. the collection and queries files kd-teacher score will read) keep only triples whose
texts exist. The output is MS MARCO's ``qidpidtriples`` layout, ``qid<TAB>pos_pid<TAB>neg_pid``, written atomically.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kd_pyserini.atomic import atomic_write
from kd_pyserini.trec_io import qid_order, rank

__all__ = ["SAMPLING", "MinedTriples", "mine_triples", "write_triples", "read_first_stage"]

SAMPLING = ("random", "top")


@dataclass
class MinedTriples:
    """Mined ``(qid, pos_pid, neg_pid)`` triples and what was left out.

    Attributes:
        triples: in query order (numeric ids first), positive by positive.
        queries: queries that gave triples. skipped: ``{reason: count}`` of judged queries that gave none.
        dropped_positives / dropped_negatives: passages left out because ``passages`` has no text for them.
    """

    triples: list[tuple[str, str, str]] = field(default_factory=list)
    queries: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    dropped_positives: int = 0
    dropped_negatives: int = 0

    def describe(self) -> dict[str, Any]:
        return {"triples": len(self.triples), "queries": self.queries, "skipped_queries": dict(self.skipped),
                "dropped_positives": self.dropped_positives, "dropped_negatives": self.dropped_negatives}


def _skip(out: MinedTriples, reason: str) -> None:
    out.skipped[reason] = out.skipped.get(reason, 0) + 1


def mine_triples(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]], *,
                 depth: int = 1000, skip_top: int = 0, negatives_per_positive: int = 1, min_relevance: int = 1,
                 sample: str = "random", seed: int = 42, passages: Container[str] | None = None,
                 queries: Container[str] | None = None) -> MinedTriples:
    """Mine triples (see the module docstring).

    Args:
        run: the first stage, ``{qid: {docid: score}}``.
        qrels: ``{qid: {docid: grade}}``.
        depth: negatives come from the run's top ``depth``; skip_top: minus its first ``skip_top`` ranks.
        negatives_per_positive: negatives per positive (fewer when the query has fewer).
        min_relevance: the lowest grade that counts as relevant (TREC DL: 2 for "highly relevant" only).
        sample: ``random`` (seeded) or ``top`` (the highest ranked negatives).
        passages / queries: keep only passages / queries that are in these (anything supporting ``in``).

    Raises:
        ValueError: impossible settings.
    """
    if sample not in SAMPLING:
        raise ValueError(f"sample {sample!r} is not one of {', '.join(SAMPLING)}")
    if depth < 1 or skip_top < 0 or negatives_per_positive < 1:
        raise ValueError(f"need depth >= 1, skip_top >= 0, negatives_per_positive >= 1 (got {depth}, {skip_top}, "
                         f"{negatives_per_positive})")
    if skip_top >= depth:
        raise ValueError(f"skip_top {skip_top} leaves no rank of the top {depth} to draw negatives from")
    out = MinedTriples()
    for qid in sorted(qrels, key=qid_order):
        judged = qrels[qid]
        relevant = {d for d, g in judged.items() if g >= min_relevance}
        if not relevant:
            continue  # not a judged query for this threshold
        if queries is not None and qid not in queries:
            _skip(out, "query text missing")
            continue
        if qid not in run or not run[qid]:
            _skip(out, "not in the run")
            continue
        positives = sorted(relevant, key=lambda d: (-judged[d], d))
        if passages is not None:
            kept = [d for d in positives if d in passages]
            out.dropped_positives += len(positives) - len(kept)
            positives = kept
        pool = [d for d, _ in rank(run[qid], depth)[skip_top:] if d not in relevant]
        if passages is not None:
            kept = [d for d in pool if d in passages]
            out.dropped_negatives += len(pool) - len(kept)
            pool = kept
        if not positives:
            _skip(out, "no positive with text")
            continue
        if not pool:
            _skip(out, "no negative in the ranks used")
            continue
        k = min(negatives_per_positive, len(pool))
        rng = np.random.default_rng([seed, zlib.crc32(qid.encode("utf-8"))])
        for pos in positives:
            chosen = pool[:k] if sample == "top" else [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]
            out.triples.extend((qid, pos, neg) for neg in chosen)
        out.queries += 1
    return out


def write_triples(triples: MinedTriples | list[tuple[str, str, str]], path: str | os.PathLike) -> Path:
    """Write ``qid<TAB>pos_pid<TAB>neg_pid`` lines atomically."""
    rows = triples.triples if isinstance(triples, MinedTriples) else triples
    with atomic_write(path) as f:
        f.writelines(f"{q}\t{p}\t{n}\n" for q, p, n in rows)
    return Path(path)


def read_first_stage(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """A first-stage run: a TREC / MS MARCO run file, or a top1000-style ``qid<TAB>pid<TAB>query<TAB>passage`` file
    (its order is the ranking)."""
    from kd_pyserini.candidates import is_top1000, read_top1000
    from kd_pyserini.trec_io import read_run

    if is_top1000(path):
        return read_top1000(path).run()
    return read_run(path)
