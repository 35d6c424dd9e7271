"""random_spans: the cropped views of unlabeled texts that finetune.teacher.crops_per_text adds."""

from __future__ import annotations

import numpy as np

from transformer_pl.stages.training import random_spans


def _texts() -> list[np.ndarray]:
    lengths = [1, 3, 40, 700]
    return [np.arange(1000 * index, 1000 * index + length) for index, length in enumerate(lengths)]


def test_spans_are_contiguous_runs_of_their_text_within_the_bounds() -> None:
    texts = _texts()
    spans = random_spans(texts, 5, 0.25, 100, np.random.default_rng(0))
    assert len(spans) == 5 * len(texts)
    for index, span in enumerate(spans):
        text = texts[index % len(texts)]  # all texts' first spans, then their second, …
        assert 1 <= len(span) <= min(100, len(text))
        assert len(span) >= min(100, round(0.25 * len(text))) - 1  # rounding of the draw
        start = int(span[0] - text[0])
        np.testing.assert_array_equal(span, text[start : start + len(span)])


def test_spans_cover_more_than_a_long_text_s_head_and_repeat_under_a_seed() -> None:
    texts = _texts()
    first = random_spans(texts, 20, 0.5, 100, np.random.default_rng(7))
    again = random_spans(texts, 20, 0.5, 100, np.random.default_rng(7))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    long_starts = {int(span[0]) for span in first[3 :: len(texts)]}
    assert max(long_starts) - 3000 > 400  # spans reach past the first max_length tokens


def test_no_spans_without_a_count() -> None:
    assert random_spans(_texts(), 0, 0.25, 100, np.random.default_rng(0)) == []
