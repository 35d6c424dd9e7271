"""Word vectors from co-occurrence statistics (the ppmi_svd pretraining objective)."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from transformer_pl.pretraining.word_vectors import (
    CONTEXT_SMOOTHING,
    cooccurrence_counts,
    positive_pmi,
    svd_embedding,
)


def rows_to_arrow_layout(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([i for row in rows for i in row]), np.cumsum([0, *map(len, rows)])


def test_counts_pairs_within_a_row_weighted_by_distance_and_symmetric():
    ids, starts = rows_to_arrow_layout([[7, 8, 9], [9, 7]])
    counts = cooccurrence_counts(ids, starts, vocab_size=10, window=2).toarray()
    expected = np.zeros((10, 10))
    for a, b, weight in [(7, 8, 1.0), (8, 9, 1.0), (7, 9, 0.5), (9, 7, 1.0)]:
        expected[a, b] += weight
        expected[b, a] += weight
    # 9 (end of row 0) and 9 (start of row 1) are adjacent in the flat ids, but not a pair.
    np.testing.assert_allclose(counts, expected)


def test_window_and_ignored_ids_limit_what_is_counted():
    ids, starts = rows_to_arrow_layout([[2, 7, 8, 9, 3]])
    counts = cooccurrence_counts(ids, starts, vocab_size=10, window=1, ignore_ids=[2, 3])
    assert counts[7, 9] == 0  # two apart: outside a window of 1
    assert counts[2].sum() == counts[:, 3].sum() == 0  # [CLS], [SEP]-like ids
    assert counts[7, 8] == counts[8, 9] == 1.0
    # An ignored id ends a text: packed blocks join documents with [EOS] (here 3).
    ids, starts = rows_to_arrow_layout([[7, 8, 3, 9, 6], [5]])
    counts = cooccurrence_counts(ids, starts, vocab_size=10, window=3, ignore_ids=[3])
    assert counts[8, 9] == counts[7, 9] == counts[8, 6] == 0
    assert counts[7, 8] == counts[9, 6] == 1.0
    assert counts.sum() == 4.0  # (7, 8) and (9, 6), each counted both ways
    ids, starts = rows_to_arrow_layout([[7, 8], [], [9, 6], []])  # empty rows, one at the end
    assert cooccurrence_counts(ids, starts, vocab_size=10, window=3).sum() == 4.0
    with pytest.raises(ValueError, match="window must be at least 1"):
        cooccurrence_counts(ids, starts, vocab_size=10, window=0)


def test_positive_pmi_matches_the_formula_and_drops_negative_associations():
    counts = sp.csr_matrix(np.array([[0.0, 4.0, 1.0], [4.0, 0.0, 1.0], [1.0, 1.0, 6.0]]))
    ppmi = positive_pmi(counts).toarray()
    total = counts.sum()
    word = counts.toarray().sum(axis=1) / total
    context = counts.toarray().sum(axis=0) ** CONTEXT_SMOOTHING
    context /= context.sum()
    pmi_01 = math.log(4.0 / total / (word[0] * context[1]))
    pmi_02 = math.log(1.0 / total / (word[0] * context[2]))
    assert ppmi[0, 1] == pytest.approx(pmi_01) and pmi_01 > 0
    assert pmi_02 < 0 and ppmi[0, 2] == 0  # seen together less than chance: no association
    assert ppmi[0, 0] == 0  # never seen together
    with pytest.raises(ValueError, match="no token pairs"):
        positive_pmi(sp.csr_matrix((3, 3)))


def test_svd_embedding_puts_tokens_that_share_contexts_together_at_the_init_scale():
    # Two groups of 6 tokens; tokens co-occur within their group only (with varied counts).
    rng = np.random.default_rng(0)
    counts = np.zeros((12, 12))
    for group in (range(0, 6), range(6, 12)):
        for a in group:
            for b in group:
                if a != b:
                    counts[a, b] = counts[b, a] = rng.integers(5, 20)
    vectors = svd_embedding(positive_pmi(sp.csr_matrix(counts)), dim=4, seed=0, std=0.02)
    assert vectors.shape == (12, 4) and vectors.dtype == np.float32
    assert vectors.std() == pytest.approx(0.02, rel=1e-4)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = unit @ unit.T
    within = cosine[np.ix_(range(6), range(6))][~np.eye(6, dtype=bool)]
    across = cosine[np.ix_(range(6), range(6, 12))]
    assert within.min() > across.max()
    with pytest.raises(ValueError, match="below the vocabulary size"):
        svd_embedding(sp.csr_matrix(counts), dim=12, seed=0, std=0.02)
