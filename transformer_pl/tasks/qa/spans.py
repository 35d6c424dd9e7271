"""From start/end logits back to an answer: the best valid span over a question's windows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from transformer_pl.tasks.qa.windows import Window


@dataclass(frozen=True)
class Answer:
    """A predicted answer: its text and character span in the context (end exclusive)."""

    text: str
    start: int
    end: int
    score: float  # start logit + end logit of the chosen span


def best_span(
    start_logits: np.ndarray, end_logits: np.ndarray, first: int, last: int, max_answer_tokens: int
) -> tuple[int, int, float]:
    """The (start, end, score) maximising start + end logit over first <= start <= end <= last
    and at most `max_answer_tokens` tokens; O(n * max_answer_tokens), vectorised.
    """
    if not 0 <= first <= last < min(len(start_logits), len(end_logits)):
        raise ValueError(f"need 0 <= first <= last < len(logits), got first {first}, last {last}")
    if max_answer_tokens < 1:
        raise ValueError(f"max_answer_tokens must be >= 1, got {max_answer_tokens}")
    starts = np.asarray(start_logits[first : last + 1], dtype=np.float64)
    ends = np.asarray(end_logits[first : last + 1], dtype=np.float64)
    length = min(max_answer_tokens, len(starts))
    # ends_after[i, k] = end logit of token i + k (-inf past `last`): span i .. i + k.
    padded = np.concatenate([ends, np.full(length - 1, -np.inf)])
    scores = starts[:, None] + sliding_window_view(padded, length)
    offset, extra = divmod(int(np.argmax(scores)), length)
    return first + offset, first + offset + extra, float(scores[offset, extra])


def answer_from_windows(
    windows_of_one_question: Sequence[Window],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    context: str,
    max_answer_tokens: int,
) -> Answer:
    """The best span within the context tokens of any window, as text and character offsets.

    A question whose windows hold no context token (empty context) gets an empty answer with
    score -inf.
    """
    if not len(windows_of_one_question) == len(start_logits) == len(end_logits):
        raise ValueError("need one start and one end logit vector per window")
    best: tuple[float, int, int] | None = None
    for window, window_starts, window_ends in zip(
        windows_of_one_question, start_logits, end_logits, strict=True
    ):
        if not window.offsets:
            continue
        first = window.context_start
        start, end, score = best_span(
            window_starts, window_ends, first, first + len(window.offsets) - 1, max_answer_tokens
        )
        if best is None or score > best[0]:
            best = (score, window.offsets[start - first][0], window.offsets[end - first][1])
    if best is None:
        return Answer(text="", start=0, end=0, score=float("-inf"))
    score, char_start, char_end = best
    span = context[char_start:char_end]
    text = span.strip()
    char_start += len(span) - len(span.lstrip())
    return Answer(text=text, start=char_start, end=char_start + len(text), score=score)
