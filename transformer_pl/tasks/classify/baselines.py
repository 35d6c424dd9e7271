"""The bars a classifier has to clear: TF-IDF word 1–2-grams + logistic regression, and NBSVM
(naive-Bayes-weighted logistic regression over tokens and token bigrams, Wang & Manning 2012).

Features: word unigrams and bigrams, sublinear term frequency, terms in at least two training
documents. The inverse regularisation strength C is chosen by accuracy on a validation split
(`bracketed_search`: the grid grows past an edge until the best C is inside it, so a baseline is
never held back by where its grid happened to stop); the chosen model is the one fitted on the
training split alone, so the validation split stays unseen by the weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score

from transformer_pl.tasks.classify.settings import TeacherParams
from transformer_pl.tasks.classify.teacher import NaiveBayesLogisticTeacher, fit_teacher

# How many times a grid may grow past its edge before the search settles for the edge.
MAX_GRID_EXTENSIONS = 4


@dataclass(frozen=True)
class GridSearch:
    """The value of a log-scale grid with the best validation score, and every score tried."""

    best: float
    scores: dict[float, float]
    at_edge: bool  # the best is still the grid's smallest or largest value after extending


def bracketed_search(grid: Sequence[float], score: Callable[[float], float]) -> GridSearch:
    """Score each value of an increasing log-scale `grid` (higher is better, ties to the smaller
    value) and, while the best is at an end of the grid, extend that end by the grid's own ratio
    (one value for a one-value grid: no ratio, nothing to extend), up to MAX_GRID_EXTENSIONS times.
    """
    values = sorted(set(grid))
    if not values or values[0] <= 0:
        raise ValueError(f"the grid needs positive values, got {list(grid)}")
    scores = {value: score(value) for value in values}

    def best() -> float:
        return max(sorted(scores), key=lambda value: scores[value])

    if len(values) > 1:
        low_ratio, high_ratio = values[1] / values[0], values[-1] / values[-2]
        for _ in range(MAX_GRID_EXTENSIONS):
            chosen, tried = best(), sorted(scores)
            if chosen == tried[-1]:
                extension = chosen * high_ratio
            elif chosen == tried[0]:
                extension = chosen / low_ratio
            else:
                break
            scores[extension] = score(extension)
    chosen, tried = best(), sorted(scores)
    return GridSearch(
        best=chosen,
        scores=scores,
        at_edge=len(tried) > 1 and chosen in (tried[0], tried[-1]),
    )


@dataclass(frozen=True)
class BaselineModel:
    vectorizer: TfidfVectorizer
    classifier: LogisticRegression
    chosen_c: float
    c_at_edge: bool  # the best C is still at an end of the extended grid
    val_accuracy: float  # of the chosen C
    val_accuracy_by_c: dict[float, float]
    fit_seconds: float  # vectorising plus every C of the grid

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n_texts, n_classes) probabilities, columns in label-index order."""
        return self.classifier.predict_proba(self.vectorizer.transform(texts))


def fit_tfidf_baseline(
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    val_texts: Sequence[str],
    val_labels: Sequence[int],
    c_grid: Sequence[float],
    max_features: int | None = None,
    seed: int = 0,
) -> BaselineModel:
    """Fit one classifier per C on train (`bracketed_search` over `c_grid`), keep the one with
    the best val accuracy. Ties go to the smallest C (the most regularised model).
    """
    if not c_grid:
        raise ValueError("c_grid needs at least one value of C")
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(
        ngram_range=(1, 2),
        sublinear_tf=True,
        min_df=2,
        max_features=max_features,
        dtype=np.float32,
    )
    train_features = vectorizer.fit_transform(train_texts)
    val_features = vectorizer.transform(val_texts)

    fitted: dict[float, LogisticRegression] = {}

    def val_accuracy(c: float) -> float:
        fitted[c] = LogisticRegression(C=c, max_iter=1000, random_state=seed)
        fitted[c].fit(train_features, train_labels)
        return float(accuracy_score(val_labels, fitted[c].predict(val_features)))

    search = bracketed_search(c_grid, val_accuracy)
    return BaselineModel(
        vectorizer=vectorizer,
        classifier=fitted[search.best],
        chosen_c=search.best,
        c_at_edge=search.at_edge,
        val_accuracy=search.scores[search.best],
        val_accuracy_by_c=dict(sorted(search.scores.items())),
        fit_seconds=time.perf_counter() - start,
    )


@dataclass(frozen=True)
class NbsvmBaseline:
    """NBSVM with its C chosen on val (`bracketed_search`), untempered: it is a baseline, whose
    accuracy is what counts."""

    model: NaiveBayesLogisticTeacher
    chosen_c: float
    c_at_edge: bool
    val_accuracy: float
    fit_seconds: float

    def predict_proba(self, token_ids: Sequence[np.ndarray]) -> np.ndarray:
        return self.model.probabilities(token_ids)


def fit_nbsvm_baseline(
    train: tuple[Sequence[np.ndarray], np.ndarray],
    val: tuple[Sequence[np.ndarray], np.ndarray],
    vocab_size: int,
    num_labels: int,
    settings: TeacherParams,
    seed: int,
) -> NbsvmBaseline:
    """Fit NBSVM on train's token ids (no special tokens) once per C of `settings.c_grid`,
    extended past an edge while the best C is there; keep the best on val."""
    start = time.perf_counter()
    fits: dict[float, NaiveBayesLogisticTeacher] = {}

    def val_accuracy(c: float) -> float:
        single_c = settings.model_copy(update={"c_grid": [c], "calibrate": False})
        fit = fit_teacher(train, val, vocab_size, num_labels, single_c, seed)
        fits[c] = fit.teacher
        return fit.val_accuracy

    search = bracketed_search(settings.c_grid, val_accuracy)
    return NbsvmBaseline(
        model=fits[search.best],
        chosen_c=search.best,
        c_at_edge=search.at_edge,
        val_accuracy=search.scores[search.best],
        fit_seconds=time.perf_counter() - start,
    )
