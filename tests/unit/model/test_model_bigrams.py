"""Hashed bigram embeddings of an encoder's input (BigramEmbedding): ids, zero start, learning,
parameter counts, and the decoder-only refusal."""

from __future__ import annotations

import pytest
import torch

from transformer_pl.model import (
    CausalLanguageModel,
    MaskedLanguageModel,
    Seq2SeqTransformer,
    SequenceClassifier,
    count_parameters,
)
from transformer_pl.model.transformer import BigramEmbedding


def test_bigram_ids_hash_pairs_and_skip_padding_and_first_token() -> None:
    bigrams = BigramEmbedding(buckets=1000, dim=4, d_model=8, pad_token_id=0)
    ids = torch.tensor([[5, 6, 7, 5, 6], [6, 5, 0, 0, 0]])
    rows = bigrams.bigram_ids(ids)
    assert rows[0, 0] == 0 and rows[1, 0] == 0  # no previous token
    assert (rows[1, 2:] == 0).all()  # padding
    assert rows[0, 1] == rows[0, 4] == 1 + (5 * BigramEmbedding.MULTIPLIER + 6) % 1000  # (5, 6)
    assert rows[1, 1] != rows[0, 1]  # (6, 5) is another pair
    assert ((rows >= 0) & (rows <= 1000)).all()


def test_encoder_starts_as_without_bigrams_then_learns_them(make_config) -> None:
    torch.manual_seed(0)
    config = make_config(bigram_buckets=64, bigram_dim=8)
    model = SequenceClassifier(config, num_labels=2, classifier_dropout=0.0)
    ids = torch.randint(2, 32, (4, 10))
    ids[1, 6:] = 0  # padding
    mask = (ids != 0).long()
    labels = torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        with_bigrams = model(ids, mask).logits
        bigrams, model.encoder.bigrams = model.encoder.bigrams, None
        without = model(ids, mask).logits
        model.encoder.bigrams = bigrams
    torch.testing.assert_close(with_bigrams, without, rtol=0, atol=0)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):  # the first step moves the projection, the second the table
        optimizer.zero_grad()
        model(ids, mask, labels).loss.backward()
        optimizer.step()
    table_grad = model.encoder.bigrams.table.weight.grad
    used = model.encoder.bigrams.bigram_ids(ids).unique()
    assert (table_grad[used[used > 0]].abs().sum(dim=1) > 0).all()
    assert table_grad[0].abs().sum() == 0  # the no-pair row stays zero
    assert model.encoder.bigrams.table.weight[0].abs().sum() == 0
    with torch.no_grad():
        assert not torch.equal(model(ids, mask).logits, with_bigrams)


@pytest.mark.parametrize(
    ("kind", "build"),
    [
        ("mlm", MaskedLanguageModel),
        ("classifier", lambda config: SequenceClassifier(config, num_labels=3)),
        ("seq2seq", Seq2SeqTransformer),
    ],
)
def test_parameter_count_with_bigrams(make_config, kind: str, build) -> None:
    config = make_config(bigram_buckets=100, bigram_dim=8)
    model = build(config)
    assert sum(p.numel() for p in model.parameters()) == count_parameters(config, kind, 3)
    without = count_parameters(make_config(), kind, 3)
    assert count_parameters(config, kind, 3) - without == 101 * 8 + 8 * 32


def test_decoder_only_model_refuses_bigrams(make_config) -> None:
    with pytest.raises(ValueError, match="bigram_buckets=64: bigram embeddings are an encoder's"):
        CausalLanguageModel(make_config(bigram_buckets=64))


@pytest.mark.parametrize(("field", "value"), [("bigram_buckets", -1), ("bigram_dim", 0)])
def test_config_rejects_bad_bigram_sizes(make_config, field: str, value: int) -> None:
    with pytest.raises(ValueError, match="bigram_buckets must be >= 0 and bigram_dim >= 1"):
        make_config(**{field: value})
