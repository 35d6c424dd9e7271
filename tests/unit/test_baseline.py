"""The TF-IDF baseline learns a separable synthetic task and picks C by validation accuracy; the
unigram baseline scores tokens by their smoothed training frequencies."""

from __future__ import annotations

import numpy as np
import pytest

from transformer_pl.tasks.classify.baselines import (
    MAX_GRID_EXTENSIONS,
    bracketed_search,
    fit_tfidf_baseline,
)
from transformer_pl.tasks.lm.perplexity import unigram_nll

POSITIVE = ["great", "superb", "moving", "brilliant", "delightful", "wonderful"]
NEGATIVE = ["awful", "boring", "dreadful", "clumsy", "tedious", "terrible"]
NEUTRAL = [f"word{i}" for i in range(40)]
C_GRID = [1e-4, 1e-2, 10.0]


def synthetic_reviews(
    n: int, positive_fraction: float, seed: int, misleading: float = 0.2
) -> tuple[list[str], list[int]]:
    """Reviews of neutral filler plus two sentiment words, the second misleading at that rate."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < positive_fraction).astype(int).tolist()
    texts = []
    for label in labels:
        cues = [POSITIVE, NEGATIVE] if label else [NEGATIVE, POSITIVE]
        words = list(rng.choice(NEUTRAL, size=8))
        words += [
            rng.choice(cues[0]),
            rng.choice(cues[1] if rng.random() < misleading else cues[0]),
        ]
        rng.shuffle(words)
        texts.append(" ".join(words))
    return texts, labels


# Imbalanced (30% positive), so an over-regularised model predicts "negative" for everything.
TRAIN = synthetic_reviews(400, positive_fraction=0.3, seed=0)
VAL = synthetic_reviews(150, positive_fraction=0.3, seed=1)
TEST = synthetic_reviews(300, positive_fraction=0.3, seed=2)


def test_baseline_learns_the_task():
    model = fit_tfidf_baseline(*TRAIN, *VAL, c_grid=C_GRID, seed=0)
    probabilities = model.predict_proba(TEST[0])

    assert probabilities.shape == (len(TEST[0]), 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    accuracy = (probabilities.argmax(axis=1) == np.array(TEST[1])).mean()
    assert accuracy > 0.9  # majority class: 0.7
    assert model.fit_seconds > 0


def test_c_is_chosen_by_validation_accuracy():
    honest = fit_tfidf_baseline(*TRAIN, *VAL, c_grid=C_GRID, seed=0)
    assert honest.val_accuracy_by_c[1e-4] < honest.val_accuracy_by_c[10.0]
    assert honest.chosen_c == 10.0
    assert honest.val_accuracy == honest.val_accuracy_by_c[10.0]

    # With inverted validation labels the model that ignores the text scores best there.
    inverted = [1 - label for label in VAL[1]]
    contrarian = fit_tfidf_baseline(*TRAIN, VAL[0], inverted, c_grid=C_GRID, seed=0)
    assert contrarian.chosen_c <= 1e-4  # the grid's low end, or below it once extended
    assert contrarian.val_accuracy == max(contrarian.val_accuracy_by_c.values())


def test_ties_go_to_the_smallest_c_and_an_empty_grid_is_refused():
    clean_train = synthetic_reviews(200, positive_fraction=0.5, seed=3, misleading=0.0)
    clean_val = synthetic_reviews(100, positive_fraction=0.5, seed=4, misleading=0.0)
    model = fit_tfidf_baseline(*clean_train, *clean_val, c_grid=[1000.0, 100.0], seed=0)

    perfect = [c for c, accuracy in model.val_accuracy_by_c.items() if accuracy == 1.0]
    assert {100.0, 1000.0} <= set(perfect)
    assert model.chosen_c == min(perfect)
    with pytest.raises(ValueError, match="c_grid"):
        fit_tfidf_baseline(*TRAIN, *VAL, c_grid=[], seed=0)


def test_unigram_nll_uses_add_one_smoothed_training_frequencies():
    train = np.array([3, 3, 3, 4])  # vocabulary of 6: counts + 1 = [1, 1, 1, 4, 2, 1], sum 10
    nll = unigram_nll(train, np.array([3, 4, 5]), vocab_size=6)
    assert nll == pytest.approx(-(np.log(0.4) + np.log(0.2) + np.log(0.1)))
    # With no training tokens every id is equally likely: the uniform bound.
    assert unigram_nll(np.array([], dtype=int), np.array([0, 1]), 4) == pytest.approx(2 * np.log(4))


def test_bracketed_search_extends_the_grid_until_the_best_is_inside_it():
    peak = 64.0
    search = bracketed_search([0.25, 1.0, 4.0], lambda c: -abs(np.log(c / peak)))

    assert search.best == peak and not search.at_edge
    assert sorted(search.scores) == [0.25, 1.0, 4.0, 16.0, 64.0, 256.0]


def test_bracketed_search_extends_downwards_and_stops_after_its_budget():
    downwards = bracketed_search([1.0, 4.0, 16.0], lambda c: -abs(np.log(c / 0.25)))
    assert downwards.best == 0.25 and not downwards.at_edge

    runaway = bracketed_search([1.0, 2.0], lambda c: c)  # always better further up
    assert len(runaway.scores) == 2 + MAX_GRID_EXTENSIONS
    assert runaway.best == 2.0 * 2**MAX_GRID_EXTENSIONS and runaway.at_edge


def test_bracketed_search_keeps_a_single_value_and_refuses_a_bad_grid():
    single = bracketed_search([3.0], lambda c: 0.5)
    assert single.best == 3.0 and single.scores == {3.0: 0.5} and not single.at_edge
    with pytest.raises(ValueError, match="positive"):
        bracketed_search([0.0, 1.0], lambda c: 0.0)
