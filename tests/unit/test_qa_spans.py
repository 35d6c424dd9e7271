"""The best answer span from start/end logits, within one window and across windows."""

from __future__ import annotations

import numpy as np
import pytest

from transformer_pl.tasks.qa.spans import Answer, answer_from_windows, best_span
from transformer_pl.tasks.qa.windows import Window


def test_best_span_maximises_start_plus_end() -> None:
    starts = np.array([9.0, 1.0, 0.0, 3.0, 0.0])
    ends = np.array([9.0, 0.0, 2.0, 0.0, 5.0])
    # Position 0 is outside [first, last]; best is start 3, end 4 (3 + 5).
    assert best_span(starts, ends, first=1, last=4, max_answer_tokens=4) == (3, 4, 8.0)


def test_best_span_keeps_end_after_start_and_the_length_cap() -> None:
    starts = np.array([0.0, 0.0, 5.0, 0.0])
    ends = np.array([4.0, 0.0, 0.0, 1.0])
    # End 0 comes before start 2: not allowed; best is start 2, end 3 (5 + 1).
    assert best_span(starts, ends, 0, 3, max_answer_tokens=3) == (2, 3, 6.0)
    starts = np.array([5.0, 0.0, 0.0, 0.0])
    ends = np.array([0.0, 0.0, 0.0, 4.0])
    # Span 0..3 has 4 tokens; with a cap of 3, 0..2 (5 + 0) beats 1..3 (0 + 4).
    assert best_span(starts, ends, 0, 3, max_answer_tokens=3) == (0, 0, 5.0)
    assert best_span(starts, ends, 0, 3, max_answer_tokens=4) == (0, 3, 9.0)


def test_best_span_agrees_with_brute_force() -> None:
    rng = np.random.default_rng(0)
    starts, ends = rng.normal(size=40), rng.normal(size=40)
    expected = max(
        (starts[i] + ends[j], i, j) for i in range(5, 31) for j in range(i, min(i + 7, 31))
    )
    start, end, score = best_span(starts, ends, 5, 30, max_answer_tokens=7)
    assert (start, end) == (expected[1], expected[2])
    assert score == pytest.approx(expected[0])


def test_best_span_rejects_an_empty_range() -> None:
    with pytest.raises(ValueError, match="first <= last"):
        best_span(np.zeros(3), np.zeros(3), 2, 1, max_answer_tokens=2)


def window(offsets: list[tuple[int, int]], example: int = 0) -> Window:
    """A window with a 2-token question: [CLS] q q [SEP] context… [SEP]."""
    return Window(
        input_ids=[2, 10, 11, 3, *range(20, 20 + len(offsets)), 3],
        context_start=4,
        offsets=offsets,
        start_position=0,
        end_position=0,
        example=example,
    )


def test_answer_from_windows_picks_the_best_window_and_maps_to_characters() -> None:
    context = "Paris is the capital of France."
    # Tokens: "Paris" " is" " the" | " the" " capital" " of" " France" (BPE-like spans).
    first = window([(0, 5), (5, 8), (8, 12)])
    second = window([(8, 12), (12, 20), (20, 23), (23, 30)])
    # Question and [CLS]/[SEP] logits are high, but never part of an answer.
    first_starts = np.array([50, 50, 50, 50, 2.0, 0, 0, 50])
    first_ends = np.array([50, 50, 50, 50, 2.0, 0, 0, 50])
    second_starts = np.array([50, 50, 50, 50, 0, 1.0, 0, 0, 50])
    second_ends = np.array([50, 50, 50, 50, 0, 0, 0, 4.0, 50])
    answer = answer_from_windows(
        [first, second],
        [first_starts, second_starts],
        [first_ends, second_ends],
        context,
        max_answer_tokens=5,
    )
    # Best: second window, " capital of France" (1 + 4); the leading space is stripped.
    assert answer == Answer(text="capital of France", start=13, end=30, score=5.0)
    assert context[answer.start : answer.end] == answer.text


def test_answer_from_windows_without_context_tokens_is_empty() -> None:
    answer = answer_from_windows([window([])], [np.zeros(5)], [np.zeros(5)], "", 3)
    assert answer == Answer(text="", start=0, end=0, score=float("-inf"))
