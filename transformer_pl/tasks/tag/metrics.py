"""Entity-level precision, recall and F1, as CoNLL's conlleval and seqeval (default mode) compute
them: an entity counts as correct only when its type and both boundaries match a gold entity.
Per-sentence counts let a bootstrap resample sentences and rescore without re-reading tags.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from transformer_pl.tasks.tag.iob import entity_spans

# Columns of sentence_counts.
TRUE_POSITIVES, FALSE_POSITIVES, FALSE_NEGATIVES = 0, 1, 2


def _spans_by_sentence(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
) -> list[tuple[set[tuple[str, int, int]], set[tuple[str, int, int]]]]:
    """(gold spans, predicted spans) per sentence, after checking the two line up."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    pairs = []
    for index, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted, strict=True)):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(
                f"sentence {index}: {len(gold_tags)} gold tags but {len(predicted_tags)} predicted"
            )
        pairs.append((set(entity_spans(gold_tags)), set(entity_spans(predicted_tags))))
    return pairs


def sentence_counts(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
) -> np.ndarray:
    """(n_sentences, 3) int64: true positives, false positives and false negatives per sentence."""
    counts = np.zeros((len(gold), 3), dtype=np.int64)
    for index, (gold_spans, predicted_spans) in enumerate(_spans_by_sentence(gold, predicted)):
        correct = len(gold_spans & predicted_spans)
        counts[index] = (correct, len(predicted_spans) - correct, len(gold_spans) - correct)
    return counts


def _percent(numerator: int, denominator: int) -> float:
    """100 · numerator / denominator, 0.0 when the denominator is 0."""
    return 100.0 * numerator / denominator if denominator else 0.0


def _scores(true_positives: int, false_positives: int, false_negatives: int) -> dict[str, float]:
    """Precision, recall and F1 in percent, rounded to 4 decimals."""
    return {
        "precision": round(_percent(true_positives, true_positives + false_positives), 4),
        "recall": round(_percent(true_positives, true_positives + false_negatives), 4),
        # 2PR / (P + R), written in counts so that P = R = 0 needs no special case.
        "f1": round(
            _percent(2 * true_positives, 2 * true_positives + false_positives + false_negatives), 4
        ),
    }


def f1_from_counts(counts: np.ndarray) -> float:
    """Micro F1 in percent over rows of sentence_counts (any subset or resample of them)."""
    true_positives, false_positives, false_negatives = (
        np.asarray(counts, dtype=np.int64).reshape(-1, 3).sum(axis=0).tolist()
    )
    return _percent(2 * true_positives, 2 * true_positives + false_positives + false_negatives)


def entity_scores(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
) -> dict[str, Any]:
    """Micro precision, recall and F1 over all entities, entity totals, and the same scores per
    entity type (sorted by type; support is the number of gold entities of that type)."""
    totals: Counter[str] = Counter()
    by_type: dict[str, Counter[str]] = {}
    for gold_spans, predicted_spans in _spans_by_sentence(gold, predicted):
        for name, spans in (
            ("tp", gold_spans & predicted_spans),
            ("fp", predicted_spans - gold_spans),
            ("fn", gold_spans - predicted_spans),
        ):
            for entity_type, _, _ in spans:
                totals[name] += 1
                by_type.setdefault(entity_type, Counter())[name] += 1
    return {
        **_scores(totals["tp"], totals["fp"], totals["fn"]),
        "entities_gold": totals["tp"] + totals["fn"],
        "entities_predicted": totals["tp"] + totals["fp"],
        "per_type": {
            entity_type: {
                **_scores(counts["tp"], counts["fp"], counts["fn"]),
                "support": counts["tp"] + counts["fn"],
            }
            for entity_type, counts in sorted(by_type.items())
        },
    }
