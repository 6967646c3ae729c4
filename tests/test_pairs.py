"""The teacher file's pair chooser (kd_pyserini.teacher.pairs), which the distillation experiments share."""

from __future__ import annotations

import numpy as np

from kd_pyserini.teacher.pairs import choose_pairs


def test_pairs_are_distinct_ordered_and_half_from_the_teachers_top():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=40)
    pairs = choose_pairs(scores, 30, np.random.default_rng(1))
    assert len(pairs) == 30 and len(set(pairs)) == 30
    assert all(a != b and scores[a] >= scores[b] for a, b in pairs)
    top10 = set(np.argsort(-scores)[:10].tolist())
    # even draws put a top-10 passage in the pair (first or second after ordering); most pairs touch the top 10
    assert sum(a in top10 or b in top10 for a, b in pairs) >= 15


def test_pairs_are_a_function_of_the_generator_and_capped_by_what_exists():
    s = np.array([0.3, 0.1, 0.2])
    assert choose_pairs(s, 10, np.random.default_rng(5)) == choose_pairs(s, 10, np.random.default_rng(5))
    assert sorted(choose_pairs(s, 10, np.random.default_rng(5))) == [(0, 1), (0, 2), (2, 1)]
