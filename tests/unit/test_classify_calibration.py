"""Temperature scaling: the rescaling keeps every argmax, and the fit recovers a known
miscalibration."""

import numpy as np
import pytest

from transformer_pl.tasks.classify.calibration import (
    TEMPERATURE_BOUNDS,
    apply_temperature,
    fit_temperature,
)
from transformer_pl.tasks.classify.report import expected_calibration_error


def softmax(logits: np.ndarray) -> np.ndarray:
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def miscalibrated_sample(
    n: int, overconfidence: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), and a model that reports softmax(overconfidence · z)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(n, 3))
    true = softmax(logits)
    labels = np.array([rng.choice(3, p=row) for row in true])
    return labels, softmax(overconfidence * logits), true


def test_temperature_one_changes_nothing_and_any_temperature_keeps_the_argmax():
    rng = np.random.default_rng(0)
    probabilities = softmax(rng.normal(scale=3.0, size=(200, 4)))

    np.testing.assert_allclose(apply_temperature(probabilities, 1.0), probabilities, atol=1e-12)
    for temperature in (0.1, 0.5, 2.0, 25.0):
        tempered = apply_temperature(probabilities, temperature)
        np.testing.assert_allclose(tempered.sum(axis=1), 1.0)
        assert (tempered.argmax(axis=1) == probabilities.argmax(axis=1)).all()
    # T > 1 softens: the top probability falls towards 1/n_classes; T < 1 sharpens.
    top = probabilities.max(axis=1)
    assert (apply_temperature(probabilities, 2.0).max(axis=1) <= top + 1e-12).all()
    assert (apply_temperature(probabilities, 0.5).max(axis=1) >= top - 1e-12).all()


def test_temperature_equals_dividing_the_logits():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
    np.testing.assert_allclose(apply_temperature(softmax(logits), 2.5), softmax(logits / 2.5))


def test_a_zero_probability_stays_finite():
    tempered = apply_temperature(np.array([[1.0, 0.0]]), 4.0)
    assert np.isfinite(tempered).all() and tempered[0, 1] > 0


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_a_temperature_must_be_positive(temperature):
    with pytest.raises(ValueError, match="temperature must be positive"):
        apply_temperature(np.array([[0.5, 0.5]]), temperature)


@pytest.mark.parametrize("overconfidence", [0.5, 3.0])
def test_the_fit_recovers_a_known_miscalibration_and_improves_held_out_calibration(
    overconfidence,
):
    labels, reported, _ = miscalibrated_sample(20_000, overconfidence, seed=1)

    temperature = fit_temperature(labels, reported)

    assert temperature == pytest.approx(overconfidence, rel=0.08)
    held_out_labels, held_out, true = miscalibrated_sample(20_000, overconfidence, seed=2)
    calibrated = apply_temperature(held_out, temperature)
    assert expected_calibration_error(held_out_labels, calibrated) < 0.5 * (
        expected_calibration_error(held_out_labels, held_out)
    )
    np.testing.assert_allclose(calibrated, true, atol=0.05)


def test_a_calibrated_model_keeps_a_temperature_near_one():
    labels, reported, _ = miscalibrated_sample(20_000, 1.0, seed=3)
    assert fit_temperature(labels, reported) == pytest.approx(1.0, rel=0.08)


def test_the_fit_stays_within_its_bounds_when_every_answer_is_right():
    labels = np.array([0, 1, 0, 1])
    confident = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    assert fit_temperature(labels, confident) == pytest.approx(TEMPERATURE_BOUNDS[0], rel=0.01)


def test_the_fit_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="probabilities for 3 labels"):
        fit_temperature(np.array([0, 1, 0]), np.array([[0.5, 0.5]]))
