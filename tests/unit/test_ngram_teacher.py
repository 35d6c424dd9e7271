"""The n-gram teacher: its features and their naive-Bayes weights, that it learns what decides a
label with two classes or more, that its fit is reproducible, and that a classifier fits its
class probabilities as it fits labels, at a distillation temperature too."""

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
    log_count_ratios,
    ngram_features,
    presence_matrix,
)
from transformer_pl.tasks import ClassifierTask
from transformer_pl.tasks.classifier import distillation_loss

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


def test_distillation_loss_is_cross_entropy_at_temperature_one() -> None:
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.5], [-0.4, 0.4]])
    teacher = torch.tensor([[0.9, 0.1], [0.25, 0.75], [0.5, 0.5]])
    expected = -(teacher * logits.log_softmax(dim=-1)).sum(dim=-1)
    torch.testing.assert_close(distillation_loss(logits, teacher, 1.0), expected)


def test_distillation_loss_softens_both_sides_and_keeps_the_gradient_scale() -> None:
    """τ²·H(softmax(log q/τ), softmax(z/τ)), by hand; its gradient in the logits is
    τ·(softmax(z/τ) − softmax(log q/τ)), so a confident teacher's row the student nearly
    matches still pulls it, harder than at τ = 1."""
    logits = torch.tensor([[4.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[0.999, 0.001]])  # log-odds 6.9 against the student's 4
    tau = 2.0
    softened = (teacher.log() / tau).softmax(dim=-1)
    loss = distillation_loss(logits, teacher, tau)
    torch.testing.assert_close(
        loss, -(tau**2) * (softened * (logits / tau).log_softmax(dim=-1)).sum(dim=-1)
    )
    (gradient,) = torch.autograd.grad(loss.sum(), logits)
    torch.testing.assert_close(gradient, tau * ((logits / tau).softmax(dim=-1) - softened))
    (plain,) = torch.autograd.grad(distillation_loss(logits, teacher, 1.0).sum(), logits)
    assert gradient[0, 1] > 5 * plain[0, 1] > 0  # towards the teacher's confidence


def test_distillation_loss_survives_a_teacher_probability_of_zero() -> None:
    loss = distillation_loss(torch.tensor([[3.0, -3.0]]), torch.tensor([[1.0, 0.0]]), 4.0)
    assert torch.isfinite(loss).all()


def test_classifier_distils_only_the_distilled_rows_at_a_temperature() -> None:
    """Rows without `distilled` fit their one-hot targets as labels; distilled rows fit
    `distillation_loss`; the batch loss is the mean over rows."""
    config = TransformerConfig(
        vocab_size=VOCAB, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=16, dropout=0.0
    )
    torch.manual_seed(0)
    task = ClassifierTask(
        config, num_labels=2, classifier_dropout=0.0, distillation_temperature=3.0
    )
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 1, 0])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7], [0.8, 0.2]])
    batch = {
        "input_ids": torch.randint(FIRST_REGULAR_ID, VOCAB, (4, 7), generator=generator),
        "attention_mask": torch.ones(4, 7, dtype=torch.long),
        "labels": labels,
        "targets": targets,
        "distilled": torch.tensor([False, False, True, True]),
    }
    logits = task(batch["input_ids"], batch["attention_mask"]).logits
    expected = torch.cat(
        [
            torch.nn.functional.cross_entropy(logits[:2], labels[:2], reduction="none"),
            distillation_loss(logits[2:], targets[2:], 3.0),
        ]
    ).mean()
    loss, _, _ = task._step(batch, training=True)
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="distillation_temperature"):
        ClassifierTask(config, num_labels=2, distillation_temperature=0.0)
