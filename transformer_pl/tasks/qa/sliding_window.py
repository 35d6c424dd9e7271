"""The sliding-window baseline of the SQuAD paper (Rajpurkar et al. 2016, §5), without a parser.

Candidates: every span of 1..`max_candidate_words` consecutive tokens inside one sentence that
holds no question word and neither starts nor ends with a punctuation token (the paper used
parse constituents). Of these, keep those whose sentence, without the candidate, shares the most
question unigrams + bigrams (distinct ones), and pick among them by the sliding window of
Richardson et al. (2013): S = question words ∪ candidate words, and the candidate scores the
best, over the windows of |S| words that contain it, sum of IC(w) = log(1 + 1/C(w)) for the
window's words that are in S (C(w): count of w in the passage). Windows run over words
(punctuation tokens skipped); ties go to the earlier candidate.

Words are `\\w+|[^\\w\\s]` tokens, compared lower-cased. By default every question word counts
(chosen on SQuADShifts new_wiki: higher EM and F1 than dropping stopwords). With
`drop_stopwords` the stopwords below are not question words: they neither block a candidate nor
count as overlap or in the window, and a question bigram counts only if one of its words is not
a stopword.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

_TOKEN = re.compile(r"\w+|[^\w\s]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")
STOPWORDS = frozenset(
    {
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "by",
        "with",
        "about",
        "as",
        "into",
        "than",
        "and",
        "or",
        "but",
        "not",
        "no",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "has",
        "have",
        "had",
        "do",
        "does",
        "did",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "which",
        "who",
        "whom",
        "whose",
        "what",
        "when",
        "where",
        "why",
        "how",
        "he",
        "she",
        "they",
        "them",
        "his",
        "her",
        "their",
        "i",
        "you",
        "we",
        "our",
        "your",
    }
)


@dataclass(frozen=True)
class Passage:
    """Per-context work shared by every question on the context."""

    text: str
    spans: list[tuple[int, int]]  # character span of each token
    tokens: list[str]  # lower-cased tokens
    punctuation: list[bool]  # token is punctuation only
    sentences: list[tuple[int, int]]  # token range [start, end) of each sentence
    word_of_token: list[int]  # index among the words (non-punctuation tokens); -1 for punctuation
    words: list[str]  # the lower-cased words, in order
    inverse_count: np.ndarray  # IC of each word: log(1 + 1/count in the passage)


def read_passage(text: str) -> Passage:
    """Tokenize a context into sentences and words, and weigh each word by its inverse count."""
    matches = list(_TOKEN.finditer(text))
    tokens = [match.group().lower() for match in matches]
    punctuation = [not (token[0].isalnum() or token[0] == "_") for token in tokens]
    sentence_starts = [0] + [boundary.end() for boundary in _SENTENCE_END.finditer(text)]
    sentences, token = [], 0
    for index, char_start in enumerate(sentence_starts):
        char_end = sentence_starts[index + 1] if index + 1 < len(sentence_starts) else len(text)
        first = token
        while token < len(matches) and matches[token].start() < char_end:
            token += 1
        if token > first and char_start < char_end:
            sentences.append((first, token))
    word_of_token, words = [], []
    for token_text, is_punctuation in zip(tokens, punctuation, strict=True):
        word_of_token.append(-1 if is_punctuation else len(words))
        if not is_punctuation:
            words.append(token_text)
    counts = Counter(words)
    inverse_count = np.array([math.log(1 + 1 / counts[word]) for word in words])
    return Passage(
        text=text,
        spans=[match.span() for match in matches],
        tokens=tokens,
        punctuation=punctuation,
        sentences=sentences,
        word_of_token=word_of_token,
        words=words,
        inverse_count=inverse_count,
    )


def _question_ngrams(question: str, drop_stopwords: bool) -> tuple[set[str], set[tuple[str, str]]]:
    """The question words and question bigrams that count."""
    words = [
        token for token in _TOKEN.findall(question.lower()) if token[0].isalnum() or token[0] == "_"
    ]
    unigrams = {word for word in words if not (drop_stopwords and word in STOPWORDS)}
    bigrams = {pair for pair in pairwise(words) if pair[0] in unigrams or pair[1] in unigrams}
    return unigrams, bigrams


def _sentence_candidates(
    passage: Passage, first: int, last: int, question: set[str], max_candidate_words: int
) -> list[tuple[int, int]]:
    """Token ranges [start, end] of the candidates inside one sentence (tokens first..last-1)."""
    candidates = []
    for start in range(first, last):
        if passage.punctuation[start] or passage.tokens[start] in question:
            continue
        for end in range(start, min(start + max_candidate_words, last)):
            if passage.tokens[end] in question:
                break
            if not passage.punctuation[end]:
                candidates.append((start, end))
    return candidates


def _most_overlapping(
    passage: Passage,
    unigrams: set[str],
    bigrams: set[tuple[str, str]],
    max_candidate_words: int,
) -> list[tuple[int, int]]:
    """The candidates whose sentence (without them) shares the most question n-grams."""
    sentences = []
    for first, last in passage.sentences:
        # Word-token positions of the sentence, for bigrams across punctuation-free words.
        positions = [token for token in range(first, last) if not passage.punctuation[token]]
        shared_unigrams = {passage.tokens[token] for token in positions} & unigrams
        occurrences: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for left, right in pairwise(positions):
            pair = (passage.tokens[left], passage.tokens[right])
            if pair in bigrams:
                occurrences.setdefault(pair, []).append((left, right))
        sentences.append((len(shared_unigrams) + len(occurrences), first, last, occurrences))
    sentences.sort(key=lambda sentence: -sentence[0])
    best, kept = -1, []
    for bound, first, last, occurrences in sentences:
        if bound < best:
            break  # no later sentence can reach the best overlap
        # Unigram matches are never inside a candidate (it holds no question word); a bigram
        # is lost when every occurrence touches the candidate.
        for start, end in _sentence_candidates(passage, first, last, unigrams, max_candidate_words):
            lost = sum(
                all(left <= end and right >= start for left, right in spans)
                for spans in occurrences.values()
            )
            overlap = bound - lost
            if overlap > best:
                best, kept = overlap, []
            if overlap == best:
                kept.append((start, end))
    return sorted(kept)


def _window_score(
    passage: Passage, question_prefix: np.ndarray, start: int, end: int, question: set[str]
) -> float:
    """Richardson et al.'s sliding-window score of the candidate (tokens start..end)."""
    first, last = passage.word_of_token[start], passage.word_of_token[end]
    answer = {passage.words[word] for word in range(first, last + 1)}
    width = max(len(question | answer), last - first + 1)
    n_words = len(passage.words)
    lowest, highest = max(0, last - width + 1), max(0, min(first, n_words - width))
    best = -math.inf
    for window in range(lowest, highest + 1):
        stop = min(window + width, n_words)
        score = question_prefix[stop] - question_prefix[window]
        score += sum(
            passage.inverse_count[word]
            for word in range(window, stop)
            if passage.words[word] in answer
        )
        best = max(best, score)
    return float(best)


def answer_in_passage(
    question: str, passage: Passage, max_candidate_words: int = 4, drop_stopwords: bool = False
) -> tuple[str, int]:
    """The baseline's answer to `question` on a read passage: text and character start."""
    unigrams, bigrams = _question_ngrams(question, drop_stopwords)
    candidates = _most_overlapping(passage, unigrams, bigrams, max_candidate_words)
    if not candidates:
        return "", 0
    in_question = np.array([word in unigrams for word in passage.words], dtype=bool)
    question_prefix = np.concatenate([[0.0], np.cumsum(passage.inverse_count * in_question)])
    scores = [
        _window_score(passage, question_prefix, start, end, unigrams) for start, end in candidates
    ]
    start, end = candidates[int(np.argmax(scores))]
    char_start, char_end = passage.spans[start][0], passage.spans[end][1]
    return passage.text[char_start:char_end], char_start


def sliding_window_answer(
    question: str, context: str, max_candidate_words: int = 4, drop_stopwords: bool = False
) -> tuple[str, int]:
    """The baseline's answer to one question: text and character start in the context."""
    return answer_in_passage(question, read_passage(context), max_candidate_words, drop_stopwords)


def sliding_window_answers(
    questions: Sequence[str],
    contexts: Sequence[str],
    max_candidate_words: int = 4,
    drop_stopwords: bool = False,
) -> list[str]:
    """The baseline's answer text for each question; a context is read once per run of questions."""
    if len(questions) != len(contexts):
        raise ValueError(f"{len(questions)} questions for {len(contexts)} contexts")
    answers = []
    passage: Passage | None = None
    for question, context in zip(questions, contexts, strict=True):
        if passage is None or passage.text != context:
            passage = read_passage(context)
        answers.append(answer_in_passage(question, passage, max_candidate_words, drop_stopwords)[0])
    return answers
