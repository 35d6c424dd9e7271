"""Paired bootstrap intervals and McNemar's test on examples with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from transformer_pl.significance import compare_accuracy, mcnemar_p_value, paired_bootstrap


def test_interval_excludes_zero_for_a_clear_gain_and_covers_it_for_none():
    rng = np.random.default_rng(0)
    truth_a = rng.random(2000) < 0.90
    clearly_worse = truth_a & (rng.random(2000) < 0.9)  # loses ~9 points, never gains
    gain = paired_bootstrap(truth_a, clearly_worse, resamples=500, seed=1)
    assert gain.difference == pytest.approx(truth_a.mean() - clearly_worse.mean())
    assert 0 < gain.low < gain.difference < gain.high and gain.excludes_zero

    same = paired_bootstrap(truth_a, truth_a, resamples=200, seed=1)
    assert same.difference == same.low == same.high == 0.0 and not same.excludes_zero


def test_pairing_makes_the_interval_narrower_than_independent_errors_would():
    rng = np.random.default_rng(3)
    shared = rng.random(3000) < 0.85
    a = shared | (rng.random(3000) < 0.05)
    paired = paired_bootstrap(a, shared, resamples=500, seed=0)
    independent_se = np.sqrt(a.var() / 3000 + shared.var() / 3000)
    assert paired.high - paired.low < 2 * 1.96 * independent_se


def test_sufficient_statistics_resample_a_ratio_metric():
    # Per example (errors, words): the metric is total errors / total words, not a mean of ratios.
    a = np.array([[1, 10], [0, 10], [2, 20]])
    b = np.array([[2, 10], [1, 10], [4, 20]])
    ratio = paired_bootstrap(a, b, statistic=lambda sums: sums[0] / sums[1], resamples=100)
    assert ratio.difference == pytest.approx(3 / 40 - 7 / 40)
    assert ratio.high < 0


def test_bootstrap_is_seeded_and_refuses_unpaired_input():
    a, b = np.arange(50) % 2, np.arange(50) % 3 == 0
    assert paired_bootstrap(a, b, seed=4) == paired_bootstrap(a, b, seed=4)
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap(a, b[:-1])
    with pytest.raises(ValueError, match="no examples"):
        paired_bootstrap(a[:0], b[:0])


def test_mcnemar_counts_only_the_discordant_pairs():
    a = np.array([True] * 10 + [False] * 0 + [True] * 50)
    b = np.array([False] * 10 + [True] * 0 + [True] * 50)
    # 10 discordant pairs, all for a: two-sided exact p = 2 * 0.5**10.
    assert mcnemar_p_value(a, b) == pytest.approx(2 * 0.5**10)
    assert mcnemar_p_value(a, a) == 1.0
    metrics = compare_accuracy(a, b, "accuracy_minus_baseline", resamples=100, seed=0)
    assert set(metrics) == {
        "accuracy_minus_baseline",
        "accuracy_minus_baseline_ci95_low",
        "accuracy_minus_baseline_ci95_high",
        "accuracy_minus_baseline_mcnemar_p",
    }
