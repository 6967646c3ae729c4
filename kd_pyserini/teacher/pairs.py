"""Which (higher, lower) passage pairs of one query a teacher file keeps, given the teacher's scores.

Margin-MSE (Hofstätter et al. 2020, arXiv:2010.02666) learns from score *margins* of passage pairs; a teacher file
built from a candidate list needs a rule for which of the ``k * (k - 1) / 2`` pairs to keep. :func:`choose_pairs`
alternates two draws, so that a file covers both what the teacher ranks high and the list as a whole: a passage of
the teacher's top 10 against any other, and two passages drawn uniformly. The higher-scored passage comes first
(the file's "positive"). Used by the distillation experiments under ``tools/experiments/``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["choose_pairs"]


def choose_pairs(scores: np.ndarray, want: int, rng: np.random.Generator, top: int = 10) -> list[tuple[int, int]]:
    """Up to ``want`` distinct pairs ``(a, b)`` of indices into ``scores`` with ``scores[a] >= scores[b]``.

    Args:
        scores: the teacher's scores of one query's passages.
        want: pairs wanted (at most ``k * (k - 1) / 2`` for ``k`` passages).
        rng: the random generator (the result is a function of its state).
        top: the even draws take their first passage from the teacher's ``top`` best.

    Returns:
        The pairs in draw order: even draws (teacher top ``top``, any), odd draws uniform; no pair twice.
    """
    order = np.argsort(-scores, kind="stable")
    k = len(scores)
    want = min(want, k * (k - 1) // 2)
    seen: set[tuple[int, int]] = set()
    out: list[tuple[int, int]] = []
    for t in range(want * 4):
        if len(out) >= want:
            break
        if t % 2 == 0:
            a, b = int(order[rng.integers(0, min(top, k))]), int(rng.integers(0, k))
        else:
            a, b = (int(x) for x in rng.choice(k, 2, replace=False))
        if a == b:
            continue
        if scores[a] < scores[b]:
            a, b = b, a
        if (a, b) not in seen:
            seen.add((a, b))
            out.append((a, b))
    return out
