"""Language-model figures — pure functions: perplexity per token and per word, and the unigram
baseline a language model has to beat."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def _exp_or_inf(exponent: float) -> float:
    # An untrained model's summed loss can overflow exp(); infinity is the honest value then.
    try:
        return math.exp(exponent)
    except OverflowError:
        return math.inf


def perplexity(total_nll: float, total_tokens: int) -> float:
    """exp(mean negative log-likelihood per token), the NLL summed in nats over the corpus."""
    if total_tokens <= 0:
        raise ValueError(f"total_tokens must be positive, got {total_tokens}")
    return _exp_or_inf(total_nll / total_tokens)


def count_words(texts: Sequence[str]) -> int:
    """Words as word-level perplexities count them: whitespace-separated tokens, plus one end of
    line per text (the model predicts where each line ends, as `<eos>` counts in WikiText)."""
    return sum(len(text.split()) + 1 for text in texts)


def word_perplexity(total_nll: float, n_words: int) -> float:
    """Perplexity per word of the original text: exp(total NLL / number of words).

    The same summed NLL over subword tokens, normalised by words instead, so models with
    different tokenizers compare on one scale (as WikiText-2 results are reported).
    """
    if n_words <= 0:
        raise ValueError(f"n_words must be positive, got {n_words}")
    return _exp_or_inf(total_nll / n_words)


def per_token_perplexity(sums: Any) -> float:
    """exp(summed NLL / summed count) of summed (nll, tokens) rows, or (nll, words) rows for
    word perplexity."""
    import numpy as np

    return float(np.exp(sums[0] / sums[1]))


def unigram_nll(train_ids: np.ndarray, test_ids: np.ndarray, vocab_size: int) -> float:
    """Summed negative log-likelihood (nats) of `test_ids` under the add-one-smoothed frequencies
    of `train_ids`: what a language model scores knowing nothing of context."""
    return float(unigram_token_nll(train_ids, test_ids, vocab_size).sum())


def unigram_token_nll(train_ids: np.ndarray, test_ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """Each test id's negative log-likelihood under the add-one-smoothed training frequencies."""
    counts = np.bincount(train_ids, minlength=vocab_size) + 1.0
    log_probabilities = np.log(counts) - np.log(counts.sum())
    return -log_probabilities[test_ids]
