"""Word vectors from co-occurrence statistics: the pretrain stage's `ppmi_svd` objective.

Positive pointwise mutual information between tokens within a window, factorised by truncated
SVD (Levy & Goldberg 2014, "Neural word embedding as implicit matrix factorization"; Levy,
Goldberg & Dagan 2015 for the smoothed context distribution and the √S weighting). The rows
initialise the encoder's token embedding. The counts come from the pretraining text alone
(train and unlabeled, never val or test). Why this rather than masked-LM pretraining on a CPU:
bench/RESULTS.md.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp
from sklearn.utils.extmath import randomized_svd

CONTEXT_SMOOTHING = 0.75  # context counts raised to this power, as word2vec's negative sampling


def cooccurrence_counts(
    token_ids: np.ndarray,
    row_starts: np.ndarray,
    vocab_size: int,
    window: int,
    ignore_ids: Iterable[int] = (),
) -> sp.csr_matrix:
    """Symmetric (vocab, vocab) counts of token pairs at most `window` apart within one text.

    `token_ids` holds every row's ids end to end, and row i is token_ids[row_starts[i]:
    row_starts[i + 1]] (Arrow's list layout). A pair `d` apart counts 1/d (GloVe's weighting:
    nearer words say more). Ids in `ignore_ids` (padding, [CLS], [EOS], …) are not counted and
    end a text: packed pretraining blocks hold several documents joined by [EOS], and the last
    word of one review says nothing about the first word of the next.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    ids = np.asarray(token_ids, dtype=np.int64)
    counted = ~np.isin(ids, np.fromiter(ignore_ids, dtype=np.int64))
    row_firsts = np.asarray(row_starts[:-1])
    text_starts = ~counted
    text_starts[row_firsts[row_firsts < len(ids)]] = True  # an empty last row starts past the end
    text_of = np.cumsum(text_starts)
    counts = sp.csr_matrix((vocab_size, vocab_size), dtype=np.float64)
    for distance in range(1, window + 1):
        pair = (
            (text_of[distance:] == text_of[:-distance]) & counted[distance:] & counted[:-distance]
        )
        left, right = ids[:-distance][pair], ids[distance:][pair]
        weight = np.full(len(left), 1.0 / distance)
        # coo → csr sums the duplicate pairs; both orders make the matrix symmetric.
        rows, columns = np.concatenate([left, right]), np.concatenate([right, left])
        counts += sp.coo_matrix(
            (np.concatenate([weight, weight]), (rows, columns)), shape=(vocab_size, vocab_size)
        ).tocsr()
    return counts


def positive_pmi(counts: sp.csr_matrix) -> sp.csr_matrix:
    """max(0, log P(w, c) / (P(w) P_α(c))) with P_α the context distribution smoothed by
    CONTEXT_SMOOTHING, which keeps rare contexts from dominating. Zero counts stay zero."""
    total = counts.sum()
    if total == 0:
        raise ValueError("no token pairs to count: the pretraining text is empty")
    word_p = np.asarray(counts.sum(axis=1)).ravel() / total
    context = np.asarray(counts.sum(axis=0)).ravel() ** CONTEXT_SMOOTHING
    context_p = context / context.sum()
    pairs = counts.tocoo()
    pmi = np.log(pairs.data / total / (word_p[pairs.row] * context_p[pairs.col]))
    positive = pmi > 0
    return sp.csr_matrix(
        (pmi[positive], (pairs.row[positive], pairs.col[positive])), shape=counts.shape
    )


def svd_embedding(matrix: sp.csr_matrix, dim: int, seed: int, std: float) -> np.ndarray:
    """(vocab, dim) rows U·√S of the rank-`dim` truncated SVD, centred and scaled to `std`
    per entry, the spread of the embedding's random initialisation, so the model's scale of
    token embeddings against positional encodings stays what training expects."""
    if dim >= min(matrix.shape):
        raise ValueError(f"dim ({dim}) must be below the vocabulary size ({matrix.shape[0]})")
    left, singular, _ = randomized_svd(matrix, dim, n_iter=5, random_state=seed)
    vectors = left * np.sqrt(singular)
    vectors = vectors - vectors.mean(axis=0)
    return (vectors / vectors.std() * std).astype(np.float32)
