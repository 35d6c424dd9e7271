"""An n-gram teacher whose class probabilities label the unlabelled texts a classifier is then
distilled on (tasks.classify.teacher).

The teacher is a logistic regression over the presence of a text's tokens and hashed token
bigrams, each presence scaled by the feature's naive-Bayes log-count ratio between the class's
texts and the others' (NBSVM, Wang & Manning, 2012, with a logistic loss for probabilities).
With more than two classes there is one such model per class (one against the rest), their
probabilities normalised. It is fitted on train with its C and temperature chosen on val, and
it never sees test. How it compares with the same features unweighted and with the TF-IDF
baseline is in bench/RESULTS.md.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from transformer_pl.data.tokenizer import FIRST_REGULAR_ID
from transformer_pl.tasks.classify.calibration import apply_temperature, fit_temperature
from transformer_pl.tasks.classify.settings import TeacherParams

# Bigram (a, b) -> a * BIGRAM_MULTIPLIER + b before the modulo: a prime above any vocabulary
# size, so distinct bigrams collide only through the bucket count.
BIGRAM_MULTIPLIER = 1_000_003


def ngram_features(ids: Sequence[int] | np.ndarray, vocab_size: int, buckets: int) -> np.ndarray:
    """Feature columns of one text: its regular tokens' ids, then each bigram of consecutive
    regular tokens hashed into `buckets` columns after the vocabulary's. Special tokens ([CLS],
    [SEP], …) carry no content and are dropped."""
    tokens = np.asarray(ids, dtype=np.int64)
    tokens = tokens[tokens >= FIRST_REGULAR_ID]
    bigrams = vocab_size + (tokens[:-1] * BIGRAM_MULTIPLIER + tokens[1:]) % buckets
    return np.concatenate([tokens, bigrams])


def presence_matrix(
    texts: Sequence[Sequence[int] | np.ndarray], vocab_size: int, buckets: int
) -> sp.csr_matrix:
    """(texts, vocab_size + buckets): 1 where a text has the feature (`ngram_features`)."""
    columns = [np.unique(ngram_features(ids, vocab_size, buckets)) for ids in texts]
    indptr = np.cumsum([0] + [len(row) for row in columns])
    indices = np.concatenate(columns) if columns else np.zeros(0, dtype=np.int64)
    data = np.ones(len(indices), dtype=np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(len(texts), vocab_size + buckets))


def log_count_ratios(presence: sp.csr_matrix, positive: np.ndarray, smoothing: float) -> np.ndarray:
    """Each feature's log(p / |p|₁) − log(q / |q|₁), p and q its smoothed counts over the
    `positive` rows and over the others."""
    p = smoothing + np.asarray(presence[positive].sum(axis=0)).ravel()
    q = smoothing + np.asarray(presence[~positive].sum(axis=0)).ravel()
    return (np.log(p / p.sum()) - np.log(q / q.sum())).astype(np.float32)


@dataclass(frozen=True)
class NaiveBayesLogisticTeacher:
    """One (ratios, logistic regression) pair per class scored against the rest; a single pair,
    for class 1, when there are two classes. Probabilities are tempered by `temperature`."""

    vocab_size: int
    buckets: int
    num_labels: int
    ratios: tuple[np.ndarray, ...]
    models: tuple[LogisticRegression, ...]
    temperature: float = 1.0

    def probabilities(self, texts: Sequence[Sequence[int] | np.ndarray]) -> np.ndarray:
        """(N, num_labels) class probabilities of the texts' token ids, in their order."""
        return self.probabilities_of(presence_matrix(texts, self.vocab_size, self.buckets))

    def probabilities_of(self, presence: sp.csr_matrix) -> np.ndarray:
        scores = np.stack(
            [
                model.predict_proba(presence @ sp.diags(ratios))[:, 1]
                for ratios, model in zip(self.ratios, self.models, strict=True)
            ],
            axis=1,
        )
        if self.num_labels == 2:
            probabilities = np.concatenate([1.0 - scores, scores], axis=1)
        else:
            probabilities = scores / scores.sum(axis=1, keepdims=True)
        return apply_temperature(probabilities, self.temperature)


@dataclass(frozen=True)
class TeacherFit:
    """The fitted teacher (the inverse regularisation strength best on val, its probabilities
    tempered on val) and what its fit measured."""

    teacher: NaiveBayesLogisticTeacher
    c: float
    val_accuracy: float
    train_accuracy: float
    seconds: float


def fit_teacher(
    train: tuple[Sequence[Sequence[int] | np.ndarray], np.ndarray],
    val: tuple[Sequence[Sequence[int] | np.ndarray], np.ndarray],
    vocab_size: int,
    num_labels: int,
    settings: TeacherParams,
    seed: int,
) -> TeacherFit:
    """Fit on `train` (token ids of each text, labels) once per C of settings.c_grid, keeping
    the C with the best `val` accuracy (the smallest on a tie); with settings.calibrate, then
    fit the temperature that makes its probabilities fit val's labels best: a teacher that fits
    train perfectly is overconfident, and its students inherit that. Seeded: liblinear's
    coordinate order is the only randomness."""
    started = time.perf_counter()
    train_presence = presence_matrix(train[0], vocab_size, settings.buckets)
    val_presence = presence_matrix(val[0], vocab_size, settings.buckets)
    classes = [1] if num_labels == 2 else list(range(num_labels))
    ratios = tuple(
        log_count_ratios(train_presence, train[1] == label, settings.smoothing) for label in classes
    )
    weighted = [train_presence @ sp.diags(class_ratios) for class_ratios in ratios]
    best: tuple[float, float, NaiveBayesLogisticTeacher] | None = None
    for c in settings.c_grid:
        models = tuple(
            LogisticRegression(
                C=c, solver="liblinear", dual=True, max_iter=1000, random_state=seed
            ).fit(features, train[1] == label)
            for label, features in zip(classes, weighted, strict=True)
        )
        teacher = NaiveBayesLogisticTeacher(
            vocab_size, settings.buckets, num_labels, ratios, models
        )
        accuracy = _accuracy(teacher.probabilities_of(val_presence), val[1])
        if best is None or accuracy > best[0]:
            best = (accuracy, c, teacher)
    assert best is not None  # c_grid is not empty
    accuracy, c, teacher = best
    if settings.calibrate:
        temperature = fit_temperature(val[1], teacher.probabilities_of(val_presence))
        teacher = dataclasses.replace(teacher, temperature=temperature)
    return TeacherFit(
        teacher=teacher,
        c=c,
        val_accuracy=accuracy,
        train_accuracy=_accuracy(teacher.probabilities_of(train_presence), train[1]),
        seconds=time.perf_counter() - started,
    )


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((probabilities.argmax(axis=1) == labels).mean())
