"""Entity-level scores against hand-computed counts, with conlleval's reading of ill-formed
predictions."""

import numpy as np
import pytest

from transformer_pl.tasks.tag.metrics import entity_scores, f1_from_counts, sentence_counts

# Four sentences; the entities are read with entity_spans:
#   0: gold PER[0,2) LOC[3,4); predicted PER[0,2) ORG[3,4) → tp PER, fp ORG, fn LOC
#   1: gold ORG[1,4); predicted ORG[1,3) (right start, wrong end) → fp ORG, fn ORG
#   2: gold MISC[0,1) PER[2,3); predicted the same, the PER written I-PER → tp MISC, tp PER
#   3: gold nothing; predicted LOC[0,1) → fp LOC
GOLD = [
    ["B-PER", "I-PER", "O", "B-LOC"],
    ["O", "B-ORG", "I-ORG", "I-ORG"],
    ["B-MISC", "O", "B-PER"],
    ["O", "O"],
]
PREDICTED = [
    ["B-PER", "I-PER", "O", "B-ORG"],
    ["O", "B-ORG", "I-ORG", "O"],
    ["B-MISC", "O", "I-PER"],
    ["B-LOC", "O"],
]


def test_sentence_counts_by_hand() -> None:
    counts = sentence_counts(GOLD, PREDICTED)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, [[1, 1, 1], [0, 1, 1], [2, 0, 0], [0, 1, 0]])


def test_f1_from_counts_by_hand() -> None:
    counts = sentence_counts(GOLD, PREDICTED)
    # tp 3, fp 3, fn 2: P = 3/6, R = 3/5, F1 = 2·3 / (2·3 + 3 + 2) = 6/11.
    assert f1_from_counts(counts) == pytest.approx(600 / 11)
    # A bootstrap resample of rows 2, 2, 3: tp 4, fp 1, fn 0 → 8/9.
    assert f1_from_counts(counts[[2, 2, 3]]) == pytest.approx(800 / 9)
    assert f1_from_counts(counts[[3]]) == 0.0


def test_f1_from_counts_with_nothing_to_find_is_zero() -> None:
    assert f1_from_counts(np.zeros((0, 3), dtype=np.int64)) == 0.0
    assert f1_from_counts(sentence_counts([["O", "O"]], [["O", "O"]])) == 0.0


def test_entity_scores_by_hand() -> None:
    assert entity_scores(GOLD, PREDICTED) == {
        "precision": 50.0,
        "recall": 60.0,
        "f1": 54.5455,  # 600/11 rounded
        "entities_gold": 5,
        "entities_predicted": 6,
        "per_type": {
            "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},  # fp 1, fn 1
            "MISC": {"precision": 100.0, "recall": 100.0, "f1": 100.0, "support": 1},
            "ORG": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},  # fp 2, fn 1
            "PER": {"precision": 100.0, "recall": 100.0, "f1": 100.0, "support": 2},
        },
    }
    assert list(entity_scores(GOLD, PREDICTED)["per_type"]) == ["LOC", "MISC", "ORG", "PER"]


def test_entity_scores_partial_type() -> None:
    # PER: gold 3, predicted 2, 1 correct → P 50, R 33.3333, F1 2·1/(2+1+2) = 40.
    gold = [["B-PER", "O", "B-PER", "I-PER", "O", "B-PER"]]
    predicted = [["B-PER", "O", "B-PER", "O", "O", "O"]]
    scores = entity_scores(gold, predicted)
    assert scores["per_type"]["PER"] == {
        "precision": 50.0,
        "recall": 33.3333,
        "f1": 40.0,
        "support": 3,
    }
    assert (scores["precision"], scores["recall"], scores["f1"]) == (50.0, 33.3333, 40.0)


def test_ill_formed_prediction_is_read_like_conlleval() -> None:
    # ["O", "I-PER", "I-PER"] is one PER over words 1–2, so it matches the gold entity.
    scores = entity_scores([["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]])
    assert (scores["precision"], scores["recall"], scores["f1"]) == (100.0, 100.0, 100.0)
    # A type change splits a chunk: B-PER I-LOC is PER[0,1) and LOC[1,2), neither correct.
    np.testing.assert_array_equal(
        sentence_counts([["B-PER", "I-PER"]], [["B-PER", "I-LOC"]]), [[0, 2, 1]]
    )
    # B- splits a chunk: B-PER B-PER is two entities against one.
    np.testing.assert_array_equal(
        sentence_counts([["B-PER", "I-PER"]], [["B-PER", "B-PER"]]), [[0, 2, 1]]
    )


def test_iob1_gold_scores_like_its_iob2_form() -> None:
    np.testing.assert_array_equal(
        sentence_counts([["I-ORG", "I-ORG", "B-ORG"]], [["B-ORG", "I-ORG", "B-ORG"]]), [[2, 0, 0]]
    )


def test_no_predictions_and_no_gold() -> None:
    all_o = entity_scores([["O", "O"], []], [["O", "O"], []])
    assert all_o == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "entities_gold": 0,
        "entities_predicted": 0,
        "per_type": {},
    }
    nothing_predicted = entity_scores([["B-LOC", "O"]], [["O", "O"]])
    assert (nothing_predicted["precision"], nothing_predicted["recall"]) == (0.0, 0.0)
    assert nothing_predicted["per_type"]["LOC"]["support"] == 1
    nothing_gold = entity_scores([["O", "O"]], [["B-LOC", "O"]])
    assert (nothing_gold["precision"], nothing_gold["recall"]) == (0.0, 0.0)
    assert nothing_gold["per_type"]["LOC"]["support"] == 0


def test_empty_corpus() -> None:
    assert sentence_counts([], []).shape == (0, 3)
    assert entity_scores([], [])["f1"] == 0.0


def test_perfect_prediction_with_entity_at_the_end() -> None:
    tags = [["O", "B-ORG", "I-ORG"], ["B-PER"]]
    assert entity_scores(tags, tags)["f1"] == 100.0


def test_length_mismatch_names_the_sentence() -> None:
    with pytest.raises(ValueError, match="sentence 1: 2 gold tags but 3 predicted"):
        sentence_counts([["O"], ["O", "O"]], [["O"], ["O", "O", "O"]])
    with pytest.raises(ValueError, match="sentence 0"):
        entity_scores([["O"]], [[]])
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted"):
        sentence_counts([["O"], ["O"]], [["O"]])
