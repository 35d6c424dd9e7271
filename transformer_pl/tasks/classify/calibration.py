"""Temperature scaling (Guo et al., 2017): one scalar T, fitted on held-out data, that turns a
classifier's probabilities p into softmax(log p / T). T > 1 softens overconfident predictions,
T < 1 sharpens underconfident ones; the most probable class never changes, so accuracy does not
either. evaluate fits T on the val split, register stores it in the served model's config.
"""

from __future__ import annotations

import math

import numpy as np

# Probabilities are clipped here before the log: a hard 0 would stay 0 at any temperature.
_SMALLEST_PROBABILITY = 1e-12
# The search range of T; beyond it, a fit says more about the held-out set than the model.
TEMPERATURE_BOUNDS = (0.05, 20.0)


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) row by row; `probabilities` is (n_examples, n_classes)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    scaled = np.log(np.clip(probabilities, _SMALLEST_PROBABILITY, 1.0)) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)  # exp stays finite
    exponentials = np.exp(scaled)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def fit_temperature(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """The T within TEMPERATURE_BOUNDS that minimises the mean negative log-likelihood of
    `y_true` (class indices) under apply_temperature(probabilities, T)."""
    from scipy.optimize import minimize_scalar

    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or len(probabilities) != len(y_true) or not len(y_true):
        raise ValueError(
            f"need (n_examples, n_classes) probabilities for {len(y_true)} labels, "
            f"got shape {probabilities.shape}"
        )
    rows = np.arange(len(y_true))

    def negative_log_likelihood(log_temperature: float) -> float:
        tempered = apply_temperature(probabilities, math.exp(log_temperature))
        return float(-np.log(np.clip(tempered[rows, y_true], _SMALLEST_PROBABILITY, 1.0)).mean())

    low, high = (math.log(bound) for bound in TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        negative_log_likelihood, bounds=(low, high), method="bounded", options={"xatol": 1e-4}
    )
    return float(math.exp(result.x))
