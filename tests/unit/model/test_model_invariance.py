"""Padding must not reach real positions, and the decoder must not see the future."""

from __future__ import annotations

import pytest
import torch

from transformer_pl.model import Decoder, Encoder, SequenceClassifier

VARIANTS = [
    {},
    {"positional": "learned"},
    {"positional": "rope"},
    {"norm_first": False},
    {"attention_impl": "reference"},
]


def _ids(batch: int, length: int, vocab: int = 32) -> torch.Tensor:
    return torch.randint(1, vocab, (batch, length))  # 0 is padding


def _pad_right(ids: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    padded = torch.cat([ids, torch.zeros(ids.size(0), n, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones_like(ids), torch.zeros(ids.size(0), n, dtype=torch.long)], 1)
    return padded, mask


@pytest.mark.parametrize("overrides", VARIANTS)
def test_encoder_ignores_right_padding(make_config, overrides: dict) -> None:
    torch.manual_seed(0)
    encoder = Encoder(make_config(**overrides)).eval()
    ids = _ids(2, 6)
    padded, mask = _pad_right(ids, 3)
    padded[:, 6:] = 7  # whatever the padding ids are
    torch.testing.assert_close(encoder(padded, mask)[:, :6], encoder(ids))


def test_encoder_rows_of_different_lengths_match_running_alone(make_config) -> None:
    torch.manual_seed(0)
    encoder = Encoder(make_config()).eval()
    short, long = _ids(1, 4), _ids(1, 7)
    batch = torch.cat([_pad_right(short, 3)[0], long])
    mask = torch.cat([_pad_right(short, 3)[1], torch.ones_like(long)])
    out = encoder(batch, mask)
    torch.testing.assert_close(out[:1, :4], encoder(short))
    torch.testing.assert_close(out[1:], encoder(long))


@pytest.mark.parametrize("overrides", VARIANTS)
def test_decoder_ignores_left_and_right_padding(make_config, overrides: dict) -> None:
    torch.manual_seed(0)
    decoder = Decoder(make_config(**overrides), cross_attention=False).eval()
    ids = _ids(2, 5)
    expected = decoder(ids)
    right, right_mask = _pad_right(ids, 2)
    torch.testing.assert_close(decoder(right, right_mask)[:, :5], expected)
    left = torch.cat([torch.full((2, 3), 9), ids], dim=1)
    left_mask = torch.cat([torch.zeros(2, 3, dtype=torch.long), torch.ones_like(ids)], dim=1)
    out = decoder(left, left_mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, 3:], expected)


def test_cross_attending_decoder_ignores_memory_padding(make_config) -> None:
    torch.manual_seed(0)
    config = make_config()
    decoder = Decoder(config, cross_attention=True).eval()
    target, memory = _ids(2, 4), torch.randn(2, 5, config.d_model)
    padded_memory = torch.cat([memory, torch.randn(2, 3, config.d_model)], dim=1)
    memory_mask = torch.cat([torch.ones(2, 5), torch.zeros(2, 3)], dim=1).long()
    torch.testing.assert_close(
        decoder(target, memory=padded_memory, memory_mask=memory_mask),
        decoder(target, memory=memory),
    )


@pytest.mark.parametrize("pooling", ["mean", "max", "mean_max", "cls"])
def test_classifier_logits_ignore_padding(make_config, pooling: str) -> None:
    torch.manual_seed(0)
    classifier = SequenceClassifier(make_config(), num_labels=3, pooling=pooling).eval()
    ids = _ids(2, 6)
    padded, mask = _pad_right(ids, 4)
    torch.testing.assert_close(classifier(padded, mask).logits, classifier(ids).logits)


@pytest.mark.parametrize("overrides", VARIANTS)
def test_decoder_is_causal(make_config, overrides: dict) -> None:
    torch.manual_seed(0)
    decoder = Decoder(make_config(**overrides), cross_attention=False).eval()
    ids = _ids(2, 8)
    changed = ids.clone()
    changed[:, 5:] = (ids[:, 5:] + 1) % 31 + 1
    for mask in (None, torch.ones_like(ids).index_fill(1, torch.tensor([7]), 0)):
        a, b = decoder(ids, mask), decoder(changed, mask)
        torch.testing.assert_close(a[:, :5], b[:, :5])
        assert not torch.allclose(a[:, 5:7], b[:, 5:7])
