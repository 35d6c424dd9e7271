"""Paired comparisons of two systems scored on the same examples: is a difference real?

A headline figure is only worth its uncertainty. Two systems evaluated on one test set make
correlated errors, so the interval of their difference comes from resampling the *examples*
(each resample scores both systems on the same rows: a paired bootstrap, Koehn 2004) rather
than from two independent intervals. For accuracy, McNemar's exact test on the discordant
pairs gives a p-value without resampling.

A corpus metric that is not a mean of per-example scores (BLEU, perplexity) is resampled
through its sufficient statistics: each example contributes a row of counts, a resample sums
the rows it drew, and the metric is computed from the sums (`statistic`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

DEFAULT_RESAMPLES = 1000
CONFIDENCE = 0.95

# Summed sufficient statistics of a resample -> the corpus metric.
Statistic = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class PairedDifference:
    """`difference` = metric(a) − metric(b) on all examples, and its 95% bootstrap interval."""

    difference: float
    low: float
    high: float
    resamples: int

    def as_metrics(self, prefix: str) -> dict[str, float]:
        """Flat metric keys: `<prefix>`, `<prefix>_ci95_low`, `<prefix>_ci95_high`."""
        return {
            prefix: self.difference,
            f"{prefix}_ci95_low": self.low,
            f"{prefix}_ci95_high": self.high,
        }

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap(
    stats_a: np.ndarray,
    stats_b: np.ndarray,
    statistic: Statistic | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> PairedDifference:
    """The difference statistic(a) − statistic(b) and its percentile interval over `resamples`
    resamples of the examples (rows), drawn with replacement and shared by both systems.

    stats_a, stats_b: one row per example, (n,) or (n, k) sufficient statistics in the same
    example order. statistic: summed rows -> metric; default the mean (per-example scores such
    as correctness).
    """
    a, b = np.asarray(stats_a, dtype=np.float64), np.asarray(stats_b, dtype=np.float64)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"paired systems need the same examples: {a.shape[0]} vs {b.shape[0]}")
    n = a.shape[0]
    if n == 0:
        raise ValueError("no examples to compare")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")

    def metric(sums: np.ndarray) -> float:
        return float(sums / n) if statistic is None else statistic(sums)

    generator = np.random.default_rng(seed)
    differences = np.empty(resamples)
    for index in range(resamples):
        rows = generator.integers(0, n, size=n)
        differences[index] = metric(a[rows].sum(axis=0)) - metric(b[rows].sum(axis=0))
    tail = (1.0 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return PairedDifference(
        difference=metric(a.sum(axis=0)) - metric(b.sum(axis=0)),
        low=float(low),
        high=float(high),
        resamples=resamples,
    )


def mcnemar_p_value(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Two-sided exact McNemar test: under "equally accurate", the examples only one system
    gets right split evenly between the two (a binomial with p = 1/2). 1.0 when none differ."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired systems need the same examples: {a.shape} vs {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def compare_accuracy(
    correct_a: np.ndarray, correct_b: np.ndarray, name: str, resamples: int, seed: int
) -> dict[str, float]:
    """`<name>`: accuracy(a) − accuracy(b), its 95% paired-bootstrap interval and McNemar's
    p-value, as flat metric keys."""
    difference = paired_bootstrap(correct_a, correct_b, resamples=resamples, seed=seed)
    return {
        **difference.as_metrics(name),
        f"{name}_mcnemar_p": mcnemar_p_value(correct_a, correct_b),
    }
