"""The n-gram teacher: its features and their naive-Bayes weights, that it learns what decides a
label with two classes or more, that its fit is reproducible, and that a classifier fits its
class probabilities as it fits labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transformer_pl.data.tokenizer import CLS_ID, FIRST_REGULAR_ID, SEP_ID
from transformer_pl.model import TransformerConfig
from transformer_pl.tasks.classify.module import ClassifierModule
from transformer_pl.tasks.classify.settings import TeacherParams
from transformer_pl.tasks.classify.teacher import (
    BIGRAM_MULTIPLIER,
    TeacherFit,
    fit_teacher,
    log_count_ratios,
    ngram_features,
    presence_matrix,
)

VOCAB = 50
BUCKETS = 97


def test_features_are_regular_tokens_then_their_hashed_bigrams() -> None:
    a, b, c = FIRST_REGULAR_ID, FIRST_REGULAR_ID + 5, FIRST_REGULAR_ID + 9
    features = ngram_features([CLS_ID, a, b, c, SEP_ID], VOCAB, BUCKETS)
    bigrams = [VOCAB + (x * BIGRAM_MULTIPLIER + y) % BUCKETS for x, y in ((a, b), (b, c))]
    assert features.tolist() == [a, b, c, *bigrams]
    assert ngram_features([CLS_ID, SEP_ID], VOCAB, BUCKETS).size == 0
    assert all(VOCAB <= row < VOCAB + BUCKETS for row in bigrams)


def test_presence_counts_a_repeated_feature_once() -> None:
    a, b = FIRST_REGULAR_ID, FIRST_REGULAR_ID + 1
    presence = presence_matrix([[a, a, b], [CLS_ID, SEP_ID]], VOCAB, BUCKETS)
    assert presence.shape == (2, VOCAB + BUCKETS)
    row = presence[0].toarray().ravel()
    expected = {a, b, *ngram_features([a, a, b], VOCAB, BUCKETS)[2:].tolist()}  # (a,a), (a,b)
    assert set(np.flatnonzero(row).tolist()) == expected and set(row[row > 0]) == {1.0}
    assert presence[1].nnz == 0


def test_log_count_ratios_compare_smoothed_feature_frequencies() -> None:
    a, b = FIRST_REGULAR_ID, FIRST_REGULAR_ID + 1
    presence = presence_matrix([[a], [a], [b]], VOCAB, BUCKETS)
    ratios = log_count_ratios(presence, np.array([True, True, False]), smoothing=1.0)
    columns = VOCAB + BUCKETS
    p = np.ones(columns)
    p[a] += 2
    q = np.ones(columns)
    q[b] += 1
    np.testing.assert_allclose(ratios, np.log(p / p.sum()) - np.log(q / q.sum()), atol=1e-6)
    assert ratios[a] > 0 > ratios[b]


def reviews(count: int, seed: int, classes: int = 2) -> tuple[list[np.ndarray], np.ndarray]:
    """Texts of neutral tokens with one cue token per class that decides the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, count)
    texts = []
    for label in labels:
        neutral = rng.integers(FIRST_REGULAR_ID + classes, VOCAB, rng.integers(3, 8))
        cue = FIRST_REGULAR_ID + int(label)
        texts.append(
            np.array([CLS_ID, *np.insert(neutral, rng.integers(0, len(neutral)), cue), SEP_ID])
        )
    return texts, labels


def fit(classes: int = 2, seed: int = 0, calibrate: bool = True) -> TeacherFit:
    return fit_teacher(
        reviews(600, 1, classes),
        reviews(100, 2, classes),
        VOCAB,
        num_labels=classes,
        settings=TeacherParams(buckets=BUCKETS, c_grid=[0.01, 1.0], calibrate=calibrate),
        seed=seed,
    )


@pytest.mark.parametrize("classes", [2, 3])
def test_teacher_learns_the_cue_and_keeps_its_best_c_on_val(classes: int) -> None:
    result = fit(classes)
    assert result.val_accuracy >= 0.95 and result.train_accuracy >= 0.95  # chance: 1 / classes
    assert result.c in (0.01, 1.0)
    texts, labels = reviews(100, 3, classes)
    probabilities = result.teacher.probabilities(texts)
    assert probabilities.shape == (100, classes)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert (probabilities.argmax(axis=1) == labels).mean() >= 0.95


def test_calibration_tempers_the_teacher_to_fit_val() -> None:
    raw, tempered = fit(calibrate=False), fit(calibrate=True)
    assert raw.teacher.temperature == 1.0 and tempered.teacher.temperature != 1.0
    texts, labels = reviews(100, 2)  # val

    def val_log_loss(result: TeacherFit) -> float:
        probabilities = result.teacher.probabilities(texts)
        return float(-np.log(probabilities[np.arange(len(labels)), labels]).mean())

    assert val_log_loss(tempered) < val_log_loss(raw)
    np.testing.assert_array_equal(  # the most probable class stays
        tempered.teacher.probabilities(texts).argmax(axis=1),
        raw.teacher.probabilities(texts).argmax(axis=1),
    )


def test_teacher_fit_is_reproducible() -> None:
    texts, _ = reviews(30, 4)
    first, again = fit(seed=0), fit(seed=0)
    np.testing.assert_array_equal(
        first.teacher.probabilities(texts), again.teacher.probabilities(texts)
    )


def test_classifier_fits_class_probabilities_as_it_fits_labels() -> None:
    config = TransformerConfig(
        vocab_size=VOCAB, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=16, dropout=0.0
    )
    torch.manual_seed(0)
    task = ClassifierModule(config, num_labels=2, classifier_dropout=0.0)
    generator = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(FIRST_REGULAR_ID, VOCAB, (6, 9), generator=generator),
        "attention_mask": torch.ones(6, 9, dtype=torch.long),
        "labels": torch.tensor([0, 1, 1, 0, 1, 0]),
    }
    hard, _, _ = task._step(batch, training=True)
    one_hot = torch.nn.functional.one_hot(batch["labels"], 2).float()
    same, _, targets = task._step({**batch, "targets": one_hot}, training=True)
    torch.testing.assert_close(same, hard)
    assert torch.equal(targets, batch["labels"])  # accuracy stays against the labels
    soft = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.7, 0.3], [0.0, 1.0], [0.6, 0.4]])
    evaluated, _, _ = task._step({**batch, "targets": soft}, training=False)
    torch.testing.assert_close(evaluated, task._step(batch, training=False)[0])  # val: labels
    logits = task(batch["input_ids"], batch["attention_mask"]).logits
    expected = -(soft * logits.log_softmax(dim=-1)).sum(dim=-1).mean()
    fitted, _, _ = task._step({**batch, "targets": soft}, training=True)
    torch.testing.assert_close(fitted, expected)
