"""Significance tests of several runs against a baseline, with multiple-comparison corrections.

Each run is compared with the FIRST run (the baseline), per measure, over per-query values (``trec_eval -c``
semantics: the judged queries a run does not answer count as 0):

* tests: a two-sided paired t-test (:func:`paired_ttest`, ``scipy.stats.ttest_rel``) or a seeded two-sided paired
  randomisation (sign-flip) test (:func:`randomization_test`; Smucker, Allan & Carterette, CIKM 2007);
* corrections (:func:`adjust_p_values`): ``holm`` (Holm 1979, step-down; never less powerful than Bonferroni and
  controls the same family-wise error rate), ``bonferroni`` (``min(1, m * p)``) or ``none``. The family is one
  measure's comparisons with the baseline: ``m`` = number of runs - 1 for every measure (each measure is one column
  of a results table, one question asked of the data). With two runs all three give the same p-values.

A run is marked significant on a measure when its (adjusted) p-value is below ``alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SIGNIFICANCE_TESTS", "CORRECTIONS", "paired_ttest", "randomization_test", "adjust_p_values",
           "Comparison"]

SIGNIFICANCE_TESTS = ("ttest", "randomization")
CORRECTIONS = ("holm", "bonferroni", "none")


def _diffs(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired tests need two 1-d arrays of equal length, got shapes {x.shape} and {y.shape}")
    return x - y


def paired_ttest(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided paired t-test p-value (``scipy.stats.ttest_rel``) of per-query values ``a`` vs ``b``.

    Returns:
        The p-value; 1.0 when all differences are 0, 0.0 when they are all equal and non-zero.
    """
    d = _diffs(a, b)
    if d.size < 2 or np.all(d == d[0]):
        return 1.0 if d.size == 0 or d[0] == 0 else 0.0
    from scipy.stats import ttest_rel

    return float(ttest_rel(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)).pvalue)


def randomization_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                       n_permutations: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired randomisation (sign-flip) test p-value of per-query values ``a`` vs ``b``.

    Each permutation swaps the two runs' values of every query with probability 1/2 (flips the sign of its
    difference); the p-value is ``(1 + #{|mean perm. diff| >= |observed mean diff|}) / (1 + n_permutations)``.
    Vectorised with numpy in chunks; deterministic for a given ``seed``.

    Args:
        a, b: per-query values in the same query order.
        n_permutations: number of random sign assignments.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        The p-value (1.0 when all differences are 0).
    """
    d = _diffs(a, b)
    if d.size == 0 or not np.any(d):
        return 1.0
    rng = np.random.default_rng(seed)
    observed = abs(math.fsum(d))
    tol = 1e-9 * max(1.0, observed)
    chunk = max(1, min(n_permutations, 4_000_000 // d.size))
    hits = 0
    done = 0
    while done < n_permutations:
        c = min(chunk, n_permutations - done)
        signs = rng.integers(0, 2, size=(c, d.size), dtype=np.int8).astype(np.float64) * 2.0 - 1.0
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
        done += c
    return (hits + 1) / (n_permutations + 1)


def adjust_p_values(p_values: Sequence[float], method: str = "holm") -> list[float]:
    """Adjust a family of p-values for multiple comparisons.

    * ``bonferroni``: ``min(1, m * p_i)``.
    * ``holm`` (Holm, "A simple sequentially rejective multiple test procedure", Scand. J. Statist. 1979): with the
      p-values sorted ascending, ``p~_(i) = max_{j <= i} min(1, (m - j + 1) * p_(j))`` (1-based ``i``, ``j``);
      the adjusted values are returned in the input order (as ``statsmodels``' ``multipletests`` does).
    * ``none``: unchanged.

    Rejecting where the adjusted p-value is below ``alpha`` controls the family-wise error rate at ``alpha``.

    Raises:
        ValueError: an unknown method, or a p-value outside [0, 1] (NaN included).
    """
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; use one of {', '.join(CORRECTIONS)}")
    ps = [float(p) for p in p_values]
    for p in ps:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-value {p} is not in [0, 1]")
    m = len(ps)
    if method == "none" or m == 0:
        return ps
    if method == "bonferroni":
        return [min(1.0, m * p) for p in ps]
    order = sorted(range(m), key=lambda i: ps[i])
    out = [0.0] * m
    running = 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (m - j) * ps[i]))
        out[i] = running
    return out


@dataclass
class Comparison:
    """Several runs evaluated on the same qrels, with significance tests against the first (the baseline).

    Attributes:
        measures: canonical measure names, in order.
        means: ``{run: {measure: value}}``: the all-queries figure (the mean; the sum for NumRet, NumRel,
            NumRelRet, as trec_eval's ``all`` line).
        per_query: ``{run: {measure: {qid: value}}}`` (all qrels queries, ``-c`` zeros included).
        p_values: ``{run: {measure: p}}`` (raw) for every run but the baseline (empty when no test was run).
        test: ``"ttest"``, ``"randomization"`` or ``None``.
        alpha: significance level for :meth:`significant`.
        correction: ``"holm"``, ``"bonferroni"`` or ``"none"`` (the family: one measure's comparisons).
        p_adjusted: ``{run: {measure: p}}`` after the correction (equal to ``p_values`` with ``"none"``).
    """

    measures: list[str]
    means: dict[str, dict[str, float]]
    per_query: dict[str, dict[str, dict[str, float]]]
    p_values: dict[str, dict[str, float]]
    test: str | None
    alpha: float
    correction: str = "none"
    p_adjusted: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def baseline(self) -> str:
        return next(iter(self.means))

    @property
    def n_comparisons(self) -> int:
        """Comparisons per measure (the size of each corrected family): runs - 1."""
        return max(0, len(self.means) - 1)

    def p(self, run: str, measure: str, adjusted: bool = True) -> float | None:
        """The (adjusted) p-value of ``run`` vs the baseline on ``measure``, or ``None`` (baseline, no test)."""
        table = self.p_adjusted if adjusted and self.p_adjusted else self.p_values
        return table.get(run, {}).get(measure)

    def significant(self, run: str, measure: str) -> bool:
        """Whether ``run`` differs from the baseline on ``measure``: the corrected p-value is below ``alpha``."""
        p = self.p(run, measure)
        return p is not None and p < self.alpha
