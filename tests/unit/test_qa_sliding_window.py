"""The sliding-window baseline of the SQuAD paper, on hand-made passages."""

from __future__ import annotations

import math

import pytest

from transformer_pl.tasks.qa.sliding_window import (
    read_passage,
    sliding_window_answer,
    sliding_window_answers,
)

PASSAGE = (
    "The city has a large harbor. In 1850 the mayor Karl Weber built the harbor wall. "
    "Many ships arrive every day."
)


def test_passage_sentences_words_and_inverse_counts() -> None:
    passage = read_passage(PASSAGE)
    assert len(passage.sentences) == 3
    first, last = passage.sentences[1]
    assert passage.tokens[first:last][:2] == ["in", "1850"]
    assert passage.tokens[last - 1] == "."
    # "the" occurs 3 times, "mayor" once; punctuation is not a word.
    assert passage.inverse_count[passage.words.index("the")] == pytest.approx(math.log(1 + 1 / 3))
    assert passage.inverse_count[passage.words.index("mayor")] == pytest.approx(math.log(2))
    assert "." not in passage.words


def test_sentences_split_only_before_a_capital_or_digit() -> None:
    passage = read_passage("It rose 2.5 percent. 3 men came! then left? No.")
    assert len(passage.sentences) == 3


def test_the_candidate_next_to_the_question_words_wins() -> None:
    # Sentence 2 shares 4 question words + 3 bigrams; its candidates are "In 1850" and
    # "mayor Karl Weber" (question words split the sentence). The window around the
    # longer one holds built/the/harbor/wall and its three rare words.
    answer, start = sliding_window_answer("Who built the harbor wall?", PASSAGE)
    assert (answer, start) == ("mayor Karl Weber", PASSAGE.index("mayor"))


def test_the_sentence_with_the_most_overlap_is_chosen() -> None:
    passage = "Ships sail to Oslo. The ships unload grain in Bergen every week."
    # Question n-grams in sentence 2: ships, unload, grain, "unload grain" (4) vs ships (1).
    answer, _ = sliding_window_answer(
        "Where do ships unload grain?", passage, max_candidate_words=2
    )
    assert answer in {"in Bergen", "Bergen"}


def test_candidates_hold_no_question_word_nor_boundary_punctuation() -> None:
    answer, start = sliding_window_answer(
        "What did the mayor build?", PASSAGE, max_candidate_words=3
    )
    words = answer.lower().split()
    assert words and not {"what", "did", "the", "mayor", "build"} & set(words)
    assert answer[0].isalnum() and answer[-1].isalnum()
    assert PASSAGE[start : start + len(answer)] == answer


def test_batch_matches_single_questions() -> None:
    questions = ["Who built the harbor wall?", "When was the harbor wall built?", "What arrive?"]
    contexts = [PASSAGE, PASSAGE, "Ships arrive daily."]
    expected = [sliding_window_answer(q, c)[0] for q, c in zip(questions, contexts, strict=True)]
    assert sliding_window_answers(questions, contexts) == expected


def test_no_candidate_gives_an_empty_answer() -> None:
    assert sliding_window_answer("Ships arrive?", "Ships arrive.") == ("", 0)
