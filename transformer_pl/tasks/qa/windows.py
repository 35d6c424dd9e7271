"""Question + context as one encoder input, long contexts in overlapping windows, span targets.

Each window is `[CLS] question [SEP] context-piece [SEP]`. A context longer than the room left
by the question is read in several windows of `room = max_length - len(question) - 3` context
tokens; consecutive windows share `stride` tokens (the overlap), so each window starts
`room - stride` tokens after the previous one, and the last is the first that reaches the end.
The gold answer's character span becomes the token positions of its first and last token in
every window that holds the whole answer, and (0, 0) (the [CLS] position) in the others.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Encoding, Tokenizer

from transformer_pl.data.tokenizer import CLS_ID, SEP_ID

SPECIAL_TOKENS_PER_WINDOW = 3  # [CLS], [SEP] after the question, [SEP] at the end


@dataclass(frozen=True)
class Window:
    """One encoder input: a question and a piece of its context, with the span target."""

    input_ids: list[int]
    context_start: int  # index in input_ids of the first context token
    offsets: list[tuple[int, int]]  # character span in the context of each context token here
    start_position: int  # index in input_ids of the answer's first token; 0 if not all in here
    end_position: int  # index in input_ids of the answer's last token; 0 if not all in here
    example: int  # index of the question this window belongs to


def trimmed_offsets(context: str, encoding: Encoding) -> list[tuple[int, int]]:
    """Each token's character span with surrounding whitespace cut off (byte-level BPE keeps it)."""
    offsets = []
    for start, end in encoding.offsets:
        piece = context[start:end]
        stripped = piece.lstrip()
        start += len(piece) - len(stripped)
        end = max(start, end - (len(stripped) - len(stripped.rstrip())))
        offsets.append((start, end))
    return offsets


def answer_tokens(
    offsets: Sequence[tuple[int, int]], answer_start: int, answer_end: int
) -> tuple[int, int] | None:
    """Context token indices of the answer's first and last token, or None if no token overlaps.

    First: the first token whose span ends after answer_start; last: the last token whose span
    starts before answer_end (offsets are in text order).
    """
    first = bisect_right([end for _, end in offsets], answer_start)
    last = bisect_left([start for start, _ in offsets], answer_end) - 1
    if first >= len(offsets) or last < first:
        return None
    return first, last


def window_starts(n_tokens: int, room: int, stride: int) -> list[int]:
    """Where each window of `room` tokens starts, consecutive windows overlapping by `stride`."""
    starts = [0]
    while starts[-1] + room < n_tokens:
        starts.append(starts[-1] + room - stride)
    return starts


def question_windows(
    tokenizer: Tokenizer,
    questions: Sequence[str],
    contexts: Sequence[str],
    answer_starts: Sequence[int | None] | None,
    answer_texts: Sequence[str | None] | None,
    max_length: int,
    stride: int,
    max_question_tokens: int,
) -> tuple[list[Window], int]:
    """The windows of every question (in order) and how many questions needed more than one.

    `answer_starts`/`answer_texts` are None (or hold None) where there is no gold answer
    (prediction): those windows get (0, 0).
    """
    if len(questions) != len(contexts):
        raise ValueError(f"{len(questions)} questions for {len(contexts)} contexts")
    if stride < 0:
        raise ValueError(f"stride must be >= 0, got {stride}")
    question_encodings = tokenizer.encode_batch(list(questions), add_special_tokens=False)
    # Many questions share a context: tokenize each distinct context once.
    distinct = list(dict.fromkeys(contexts))
    context_encodings = tokenizer.encode_batch(distinct, add_special_tokens=False)
    context_tokens = {
        context: (encoding.ids, trimmed_offsets(context, encoding))
        for context, encoding in zip(distinct, context_encodings, strict=True)
    }
    windows: list[Window] = []
    split = 0
    for example, (question, context) in enumerate(zip(question_encodings, contexts, strict=True)):
        question_ids = question.ids[:max_question_tokens]
        room = max_length - len(question_ids) - SPECIAL_TOKENS_PER_WINDOW
        if room <= 0:
            raise ValueError(
                f"max_length {max_length} leaves no room for context after a question of "
                f"{len(question_ids)} tokens and {SPECIAL_TOKENS_PER_WINDOW} special tokens "
                f"(lower max_question_tokens or raise max_length)"
            )
        if stride >= room:
            raise ValueError(
                f"stride {stride} must be smaller than the {room} context tokens per window "
                f"(max_length {max_length}, question of {len(question_ids)} tokens)"
            )
        ids, offsets = context_tokens[context]
        answer = None
        if answer_starts is not None and answer_texts is not None:
            start, text = answer_starts[example], answer_texts[example]
            if start is not None and text is not None:
                answer = answer_tokens(offsets, start, start + len(text))
        starts = window_starts(len(ids), room, stride)
        split += len(starts) > 1
        context_start = len(question_ids) + 2
        for first in starts:
            last = min(first + room, len(ids))
            start_position = end_position = 0
            if answer is not None and first <= answer[0] and answer[1] < last:
                start_position = context_start + answer[0] - first
                end_position = context_start + answer[1] - first
            windows.append(
                Window(
                    input_ids=[CLS_ID, *question_ids, SEP_ID, *ids[first:last], SEP_ID],
                    context_start=context_start,
                    offsets=offsets[first:last],
                    start_position=start_position,
                    end_position=end_position,
                    example=example,
                )
            )
    return windows, split
