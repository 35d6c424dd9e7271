"""The official SQuAD v1.1 evaluation (evaluate-v1.1.py): exact match and token F1.

Answers are normalised (lower-cased, punctuation and the articles a/an/the removed, whitespace
collapsed) before comparison; each prediction is scored against its best reference.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (as the official script)."""
    text = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, truth: str) -> bool:
    """Whether the two answers are equal after normalisation."""
    return normalize_answer(prediction) == normalize_answer(truth)


def token_f1(prediction: str, truth: str) -> float:
    """F1 (0..1) of the bag of normalised tokens of the prediction against the truth."""
    predicted = normalize_answer(prediction).split()
    gold = normalize_answer(truth).split()
    common = Counter(predicted) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(predicted)
    recall = same / len(gold)
    return 2 * precision * recall / (precision + recall)


def best_over_references(
    metric: Callable[[str, str], float], prediction: str, references: Sequence[str]
) -> float:
    """The metric against the reference that suits the prediction best."""
    return max(metric(prediction, reference) for reference in references)


def question_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
    """Per-question EM (0/1) and F1 (0..1), shape (n, 2): input to paired bootstrap intervals."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} questions")
    scores = np.zeros((len(predictions), 2))
    for row, (prediction, answers) in enumerate(zip(predictions, references, strict=True)):
        if not answers:
            raise ValueError(f"question {row} has no reference answer")
        scores[row, 0] = float(best_over_references(exact_match, prediction, answers))
        scores[row, 1] = best_over_references(token_f1, prediction, answers)
    return scores


def squad_scores(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> dict[str, float | int]:
    """Exact match and F1 in percent (0..100), averaged over the questions."""
    scores = question_scores(predictions, references)
    means = 100.0 * scores.mean(axis=0) if len(scores) else np.zeros(2)
    return {"exact_match": float(means[0]), "f1": float(means[1]), "questions": len(scores)}
