"""The bag-of-n-grams teacher: its features, that it learns what decides a label, that its fit is
seeded, and that a classifier fits its class probabilities as it fits labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transformer_pl.config import TeacherParams
from transformer_pl.data.tokenizer import CLS_ID, FIRST_REGULAR_ID, SEP_ID
from transformer_pl.model import TransformerConfig
from transformer_pl.ngram_teacher import (
    BIGRAM_MULTIPLIER,
    TeacherFit,
    fit_teacher,
    ngram_features,
)
from transformer_pl.tasks import ClassifierTask

VOCAB = 50
BUCKETS = 97


def test_features_are_regular_tokens_then_their_hashed_bigrams() -> None:
    a, b, c = FIRST_REGULAR_ID, FIRST_REGULAR_ID + 5, FIRST_REGULAR_ID + 9
    features = ngram_features([CLS_ID, a, b, c, SEP_ID], VOCAB, BUCKETS)
    bigrams = [VOCAB + (x * BIGRAM_MULTIPLIER + y) % BUCKETS for x, y in ((a, b), (b, c))]
    assert features.tolist() == [a, b, c, *bigrams]
    assert ngram_features([CLS_ID, SEP_ID], VOCAB, BUCKETS).size == 0
    assert all(VOCAB <= row < VOCAB + BUCKETS for row in bigrams)


def reviews(count: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Texts of neutral tokens with one of two cue tokens that decides the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    texts = []
    for label in labels:
        neutral = rng.integers(FIRST_REGULAR_ID + 2, VOCAB, rng.integers(3, 8))
        cue = FIRST_REGULAR_ID + int(label)
        texts.append(
            np.array([CLS_ID, *np.insert(neutral, rng.integers(0, len(neutral)), cue), SEP_ID])
        )
    return texts, labels


def fit(seed: int = 0) -> TeacherFit:
    return fit_teacher(
        reviews(600, 1),
        reviews(100, 2),
        VOCAB,
        num_labels=2,
        settings=TeacherParams(buckets=BUCKETS, epochs=6, learning_rate=0.1, batch_size=16),
        seed=seed,
    )


def test_teacher_learns_the_cue_and_keeps_its_best_epoch_on_val() -> None:
    result = fit()
    assert result.val_accuracy >= 0.95 and result.train_accuracy >= 0.95  # chance: 0.5
    assert 1 <= result.epoch <= 6
    texts, labels = reviews(100, 3)
    probabilities = result.teacher.probabilities(result.teacher.features(texts))
    assert probabilities.shape == (100, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert (probabilities.argmax(axis=1) == labels).mean() >= 0.95


def test_teacher_fit_is_seeded() -> None:
    texts, _ = reviews(30, 4)
    first, again, other = fit(0), fit(0), fit(1)
    probabilities = [
        r.teacher.probabilities(r.teacher.features(texts)) for r in (first, again, other)
    ]
    np.testing.assert_array_equal(probabilities[0], probabilities[1])
    assert not np.array_equal(probabilities[0], probabilities[2])


@pytest.mark.parametrize("epsilon", [0.0, 0.3])
def test_classifier_fits_class_probabilities_as_it_fits_labels(epsilon: float) -> None:
    config = TransformerConfig(
        vocab_size=VOCAB, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=16, dropout=0.0
    )
    torch.manual_seed(0)
    task = ClassifierTask(config, num_labels=2, classifier_dropout=0.0, adversarial_epsilon=epsilon)
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
    if epsilon == 0.0:
        logits = task(batch["input_ids"], batch["attention_mask"]).logits
        expected = -(soft * logits.log_softmax(dim=-1)).sum(dim=-1).mean()
        fitted, _, _ = task._step({**batch, "targets": soft}, training=True)
        torch.testing.assert_close(fitted, expected)
