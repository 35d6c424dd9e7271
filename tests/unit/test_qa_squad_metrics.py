"""The official SQuAD v1.1 metrics, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from transformer_pl.tasks.qa.squad_metrics import (
    best_over_references,
    exact_match,
    normalize_answer,
    question_scores,
    squad_scores,
    token_f1,
)


def test_normalize_drops_case_punctuation_articles_and_extra_space() -> None:
    assert normalize_answer("The  Quick, brown-fox!") == "quick brownfox"
    assert normalize_answer("an apple a day") == "apple day"
    # Articles go only as whole words.
    assert normalize_answer("Theater anatomy") == "theater anatomy"
    assert normalize_answer("  ") == ""


def test_exact_match_after_normalisation() -> None:
    assert exact_match("the Denver Broncos", "Denver Broncos.")
    assert not exact_match("Denver", "Denver Broncos")
    # Both normalise to the empty string (as in the official script).
    assert exact_match("the", "a")


def test_token_f1_counts_shared_tokens_with_multiplicity() -> None:
    # P = 2/3, R = 1: F1 = 0.8.
    assert token_f1("Denver Broncos win", "the Denver Broncos") == pytest.approx(0.8)
    # Common bag {x: 1, y: 1}: P = R = 2/3.
    assert token_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert token_f1("Denver", "Denver") == 1.0
    assert token_f1("cat", "dog") == 0.0


def test_empty_prediction_scores_zero() -> None:
    assert token_f1("", "Denver") == 0.0
    assert token_f1("", "") == 0.0
    assert not exact_match("", "Denver")


def test_best_over_references_takes_the_best_reference() -> None:
    references = ["Denver Broncos", "Carolina"]
    assert best_over_references(token_f1, "Broncos", references) == pytest.approx(2 / 3)
    assert best_over_references(exact_match, "carolina", references)
    assert not best_over_references(exact_match, "Broncos", references)


def test_question_scores_and_squad_scores() -> None:
    predictions = ["Denver Broncos", "Broncos", ""]
    references = [["the Denver Broncos"], ["Denver Broncos", "Carolina"], ["x"]]
    np.testing.assert_allclose(
        question_scores(predictions, references), [[1, 1], [0, 2 / 3], [0, 0]]
    )
    scores = squad_scores(predictions, references)
    assert scores["questions"] == 3
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * 5 / 9)


def test_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="2 predictions for 1 questions"):
        squad_scores(["a", "b"], [["a"]])
