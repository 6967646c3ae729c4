"""Teacher files from *query groups*: one query with several passages, scored by a teacher, turned into pairs.

Where :mod:`~kd_pyserini.teacher.score` scores given triples, a group-based teacher file starts from passages a
query came with (a first stage's candidate list, training triples, a scored sample) and lets the teacher's scores
decide which passage of each pair is the "positive": for each group, :func:`~kd_pyserini.teacher.pairs.choose_pairs`
keeps pairs from the teacher's top 10 and uniform ones, and the file's two scores are ``scale x`` the teacher's
(Margin-MSE learns from their difference; Hofstätter et al. 2020, arXiv:2010.02666). No relevance judgement is used.

The distillation experiments under ``tools/experiments/`` (``distill_demo.py``, ``family_distill.py``) build their
teacher files with these functions:

>>> groups = groups_from_candidates("candidates.dl20.bm25-top100.tsv.gz", per_query=30)   # doctest: +SKIP
>>> scores = score_groups(groups, TextEncoder("all-minilm-l6-v2"))                          # doctest: +SKIP
>>> write_group_teacher_file(groups, scores, "teacher.tsv", pairs_per_query=10, scale=10.0)  # doctest: +SKIP

Readers are strict (a malformed line is a ``file:line`` :class:`~kd_pyserini.trec_io.FormatError`); the teacher file
is written under a temporary name and renamed, so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from kd_pyserini.candidates import read_top1000
from kd_pyserini.teacher.pairs import choose_pairs
from kd_pyserini.trec_io import FormatError, atomic_write_text, open_text, qid_order

__all__ = ["QueryGroup", "groups_from_candidates", "groups_from_text_triples", "groups_from_scored_jsonl",
           "score_groups", "write_group_teacher_file"]

QueryGroup = tuple[str, list[str]]
"""``(query text, [passage text, ...])``."""


def groups_from_candidates(path: str | os.PathLike, max_queries: int | None = None,
                           per_query: int | None = None) -> list[QueryGroup]:
    """One group per query of a top1000-style candidates file (numeric qid order), its passages in rank order.

    Args:
        path: ``qid<TAB>pid<TAB>query<TAB>passage`` rows (:func:`kd_pyserini.candidates.read_top1000`).
        max_queries: keep the first ``n`` queries (numeric qid order).
        per_query: keep each query's top ``k`` candidates.
    """
    top = read_top1000(path)
    qids = sorted(top.lists, key=qid_order)[:max_queries]
    return [(top.queries[q], [top.passages[p] for p in top.lists[q][:per_query]]) for q in qids]


def groups_from_text_triples(path: str | os.PathLike) -> list[QueryGroup]:
    """One group ``(query, [pos, neg])`` per line of a text triples file ``query<TAB>pos<TAB>neg`` (MS MARCO's
    ``triples.train.small.tsv`` form; ``.gz`` accepted). Empty lines are skipped."""
    out: list[QueryGroup] = []
    with open_text(path) as f:
        for no, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                raise FormatError(path, no, f"{len(parts)} tab-separated fields; expected "
                                            "'query<TAB>positive passage<TAB>negative passage'")
            out.append((parts[0], [parts[1], parts[2]]))
    return out


def groups_from_scored_jsonl(path: str | os.PathLike) -> list[QueryGroup]:
    """One group ``(query, pos + neg)`` per line of a JSON-lines file with ``query``, ``pos`` and ``neg`` (lists of
    passage texts), e.g. the shared sample ``msmarco-10q-teacher-scores.jsonl``; other keys are ignored."""
    out: list[QueryGroup] = []
    with open_text(path) as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                query, pos, neg = obj["query"], list(obj["pos"]), list(obj["neg"])
            except (ValueError, KeyError, TypeError) as e:
                raise FormatError(path, no, f"expected a JSON object with 'query', 'pos' and 'neg' lists ({e})") \
                    from None
            if not isinstance(query, str) or not all(isinstance(p, str) for p in pos + neg):
                raise FormatError(path, no, "'query' must be a string and 'pos'/'neg' lists of passage strings")
            out.append((query, pos + neg))
    return out


def score_groups(groups: Sequence[QueryGroup], encoder: Any, passage_max_length: int = 128,
                 query_max_length: int = 64) -> list[np.ndarray]:
    """The teacher's score of every passage of every group with its query: ``q . p`` with the encoder's vectors
    (cosine for a cosine card, whose vectors are unit length).

    Args:
        groups: the query groups.
        encoder: a :class:`kd_pyserini.encoding.TextEncoder` (anything with ``embed(texts, max_length)``).
        passage_max_length / query_max_length: token limits.

    Returns:
        One float32 array per group, aligned with its passages. Each distinct passage is encoded once.
    """
    texts = sorted({p for _, ps in groups for p in ps})
    pvec = np.asarray(encoder.embed(texts, passage_max_length), dtype=np.float32)
    qvec = np.asarray(encoder.embed([q for q, _ in groups], query_max_length), dtype=np.float32)
    row = {t: i for i, t in enumerate(texts)}
    return [pvec[[row[p] for p in ps]] @ qvec[i] if ps else np.zeros(0, np.float32)
            for i, (_, ps) in enumerate(groups)]


def _clean(text: str) -> str:
    return " ".join(text.replace("\t", " ").splitlines())


def write_group_teacher_file(groups: Sequence[QueryGroup], scores: Sequence[np.ndarray], path: str | os.PathLike,
                             pairs_per_query: int, scale: float = 1.0, seed: int = 0) -> int:
    """Write a text teacher file ``score_pos<TAB>score_neg<TAB>query<TAB>pos<TAB>neg`` (kd-train's format), the
    higher-scored passage first, pairs chosen by :func:`~kd_pyserini.teacher.pairs.choose_pairs`.

    Args:
        groups / scores: the groups and :func:`score_groups`' scores (aligned).
        path: the file (written atomically; ``.gz`` compresses).
        pairs_per_query: pairs wanted per group (fewer when the group is small).
        scale: the written scores are ``scale x`` the teacher's (e.g. 10 for a cosine teacher, so that margins reach
            the size of a cross-encoder's).
        seed: the pair draw's seed (the file is a function of groups, scores and seed).

    Returns:
        The number of pairs written. Groups with fewer than two passages are skipped.
    """
    if len(groups) != len(scores):
        raise ValueError(f"{len(groups)} groups but {len(scores)} score arrays")
    rng = np.random.default_rng(seed)
    n = 0
    with atomic_write_text(path) as f:
        for (query, passages), s in zip(groups, scores):
            s = np.asarray(s)
            if len(s) != len(passages):
                raise ValueError(f"a group of {len(passages)} passages has {len(s)} scores")
            if len(passages) < 2:
                continue
            for a, b in choose_pairs(s, pairs_per_query, rng):
                f.write(f"{scale * s[a]:.5f}\t{scale * s[b]:.5f}\t{_clean(query)}\t{_clean(passages[a])}\t"
                        f"{_clean(passages[b])}\n")
                n += 1
    return n
