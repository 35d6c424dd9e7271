"""Question + context windows: overlap, coverage, length and the answer's token positions."""

from __future__ import annotations

from itertools import pairwise

import pytest
from tokenizers import Tokenizer

from transformer_pl.data.tokenizer import CLS_ID, SEP_ID, train_tokenizer
from transformer_pl.params import TokenizerParams
from transformer_pl.tasks.qa.windows import (
    answer_tokens,
    question_windows,
    trimmed_offsets,
    window_starts,
)

CONTEXT = (
    "The river flows north through the old valley. Farmers grow wheat and barley on its banks. "
    "In 1850 a stone bridge was built near the mill. The bridge still carries traffic today, "
    "and tourists visit the valley every summer to see the mill and the bridge."
)
QUESTION = "When was the stone bridge built?"
ANSWER = "1850"


@pytest.fixture(scope="module", params=["bpe", "wordpiece"])
def tokenizer(request: pytest.FixtureRequest) -> Tokenizer:
    return train_tokenizer(
        [CONTEXT, QUESTION] * 3,
        TokenizerParams(kind=request.param, vocab_size=300, min_frequency=1),
    )


def test_window_starts_overlap_by_stride() -> None:
    assert window_starts(10, room=4, stride=1) == [0, 3, 6]
    assert window_starts(11, room=4, stride=2) == [0, 2, 4, 6, 8]
    assert window_starts(3, room=4, stride=1) == [0]
    assert window_starts(0, room=4, stride=1) == [0]


def test_answer_tokens_from_character_spans() -> None:
    offsets = [(0, 3), (4, 9), (10, 12), (13, 18)]
    assert answer_tokens(offsets, 4, 12) == (1, 2)
    # A span that starts or ends inside a token takes the whole token.
    assert answer_tokens(offsets, 5, 11) == (1, 2)
    assert answer_tokens(offsets, 19, 22) is None


def test_offsets_lose_the_leading_space_of_byte_level_tokens(tokenizer: Tokenizer) -> None:
    encoding = tokenizer.encode(CONTEXT, add_special_tokens=False)
    for start, end in trimmed_offsets(CONTEXT, encoding):
        assert CONTEXT[start:end] == CONTEXT[start:end].strip()


def test_long_context_gives_overlapping_windows_that_cover_it(tokenizer: Tokenizer) -> None:
    n_context = len(tokenizer.encode(CONTEXT, add_special_tokens=False).ids)
    n_question = len(tokenizer.encode(QUESTION, add_special_tokens=False).ids)
    max_length, stride = n_question + 3 + 20, 5
    windows, split = question_windows(
        tokenizer, [QUESTION], [CONTEXT], [CONTEXT.index(ANSWER)], [ANSWER], max_length, stride, 64
    )
    assert split == 1
    assert len(windows) > 2
    assert all(len(window.input_ids) <= max_length for window in windows)
    for window in windows:
        assert window.input_ids[0] == CLS_ID
        assert window.input_ids[window.context_start - 1] == SEP_ID
        assert window.input_ids[-1] == SEP_ID
        assert len(window.input_ids) == window.context_start + len(window.offsets) + 1
        assert window.example == 0
    # Consecutive windows share exactly `stride` tokens, and together they hold every token.
    for before, after in pairwise(windows):
        assert before.offsets[-stride:] == after.offsets[:stride]
    covered = sorted({span for window in windows for span in window.offsets})
    assert covered == sorted(
        set(trimmed_offsets(CONTEXT, tokenizer.encode(CONTEXT, add_special_tokens=False)))
    )
    assert sum(len(window.offsets) for window in windows) == n_context + stride * (len(windows) - 1)


def test_answer_positions_decode_to_the_answer(tokenizer: Tokenizer) -> None:
    answer = "a stone bridge"
    start = CONTEXT.index(answer)
    windows, _ = question_windows(
        tokenizer,
        [QUESTION],
        [CONTEXT],
        [start],
        [answer],
        max_length=40,
        stride=8,
        max_question_tokens=10,
    )
    holding = [window for window in windows if window.start_position > 0]
    assert holding
    for window in holding:
        first = window.offsets[window.start_position - window.context_start][0]
        last = window.offsets[window.end_position - window.context_start][1]
        assert CONTEXT[first:last] == answer
    # Windows whose context lacks (part of) the answer point at [CLS].
    missing = [window for window in windows if window.start_position == 0]
    assert missing
    for window in missing:
        assert window.end_position == 0
        assert not window.offsets[0][0] <= start < start + len(answer) <= window.offsets[-1][1]


def test_questions_are_truncated_and_unanswered_questions_get_cls(tokenizer: Tokenizer) -> None:
    windows, split = question_windows(
        tokenizer, [QUESTION, QUESTION], ["Short text.", CONTEXT], None, None, 512, 16, 3
    )
    assert split == 0
    assert [window.example for window in windows] == [0, 1]
    assert all(window.context_start == 3 + 2 for window in windows)
    assert all((window.start_position, window.end_position) == (0, 0) for window in windows)


def test_no_room_for_context_is_an_error(tokenizer: Tokenizer) -> None:
    with pytest.raises(ValueError, match="leaves no room for context"):
        question_windows(tokenizer, [QUESTION], [CONTEXT], None, None, 6, 0, 3)
    with pytest.raises(ValueError, match="stride 4 must be smaller"):
        question_windows(tokenizer, [QUESTION], [CONTEXT], None, None, 10, 4, 3)
