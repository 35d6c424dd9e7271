"""Summarization figures — pure functions: ROUGE-1/2/L F-measures per summary (the `rouge-score`
package with Porter stemming, as the SAMSum paper and most since report them), and the
extractive baselines of the SAMSum paper: the source's first lines (Lead-3) and its longest
lines (Longest-3), turns of a dialogue being its lines."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_per_summary(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """(n, 3): ROUGE-1, ROUGE-2 and ROUGE-L F-measures (0..1) of each prediction against its
    reference."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    scores = np.zeros((len(predictions), len(ROUGE_TYPES)))
    for row, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        result = scorer.score(reference, prediction)
        scores[row] = [result[name].fmeasure for name in ROUGE_TYPES]
    return scores


def lead_lines(source: str, count: int) -> str:
    """The source's first `count` non-blank lines (Lead-3 with count 3)."""
    lines = [line for line in source.splitlines() if line.strip()]
    return "\n".join(lines[:count])


def longest_lines(source: str, count: int) -> str:
    """The source's `count` longest non-blank lines (in characters; ties: the earlier), in the
    order they come (Longest-3 with count 3)."""
    lines = [line for line in source.splitlines() if line.strip()]
    longest = sorted(range(len(lines)), key=lambda index: (-len(lines[index]), index))[:count]
    return "\n".join(lines[index] for index in sorted(longest))
