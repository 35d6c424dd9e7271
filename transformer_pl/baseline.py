"""The bars a Transformer has to clear: TF-IDF word 1–2-grams + logistic regression for
classification, add-one-smoothed unigram frequencies for a language model.

Features: word unigrams and bigrams, sublinear term frequency, terms in at least two training
documents. The inverse regularisation strength C is chosen by accuracy on a validation split; the
chosen model is the one fitted on the training split alone, so the validation split stays unseen
by the weights (on this machine: IMDB test 90.65% with C=16; SST-2 dev 82.45%).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score


@dataclass(frozen=True)
class BaselineModel:
    vectorizer: TfidfVectorizer
    classifier: LogisticRegression
    chosen_c: float
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
    """Fit one classifier per C on train, keep the one with the best val accuracy.

    Ties go to the smallest C (the most regularised model).
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

    best: LogisticRegression | None = None
    val_accuracy_by_c: dict[float, float] = {}
    for c in sorted(c_grid):
        classifier = LogisticRegression(C=c, max_iter=1000, random_state=seed)
        classifier.fit(train_features, train_labels)
        accuracy = float(accuracy_score(val_labels, classifier.predict(val_features)))
        val_accuracy_by_c[c] = accuracy
        if best is None or accuracy > val_accuracy_by_c[best.C]:
            best = classifier
    return BaselineModel(
        vectorizer=vectorizer,
        classifier=best,
        chosen_c=float(best.C),
        val_accuracy=val_accuracy_by_c[best.C],
        val_accuracy_by_c=val_accuracy_by_c,
        fit_seconds=time.perf_counter() - start,
    )


def unigram_nll(train_ids: np.ndarray, test_ids: np.ndarray, vocab_size: int) -> float:
    """Summed negative log-likelihood (nats) of `test_ids` under the add-one-smoothed frequencies
    of `train_ids`: what a language model scores knowing nothing of context."""
    counts = np.bincount(train_ids, minlength=vocab_size) + 1.0
    log_probabilities = np.log(counts) - np.log(counts.sum())
    return float(-log_probabilities[test_ids].sum())
