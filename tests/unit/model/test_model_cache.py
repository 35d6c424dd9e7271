"""Incremental decoding with the KV cache equals the full forward pass."""

from __future__ import annotations

import pytest
import torch

from transformer_pl.model import CausalLanguageModel, DecoderCache, Seq2SeqTransformer


@pytest.mark.parametrize(
    "overrides",
    [{}, {"positional": "learned"}, {"positional": "rope"}, {"attention_impl": "reference"}],
)
def test_causal_lm_token_by_token_equals_full_forward(make_config, overrides: dict) -> None:
    torch.manual_seed(0)
    model = CausalLanguageModel(make_config(**overrides)).eval()
    ids = torch.randint(1, 32, (2, 9))
    full = model(ids).logits
    cache = DecoderCache()
    # A multi-token prefill, a multi-token chunk behind cached tokens, then one token at a time.
    prefix = model(ids[:, :4], cache=cache)
    chunk = model(ids[:, 4:7], cache=cache)
    steps = [prefix.logits, chunk.logits]
    steps += [model(ids[:, t : t + 1], cache=cache).logits for t in (7, 8)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)
    assert prefix.cache is cache and cache.length == 9


@pytest.mark.parametrize("positional", ["sinusoidal", "rope"])
def test_causal_lm_cache_with_left_padding(make_config, positional: str) -> None:
    torch.manual_seed(0)
    model = CausalLanguageModel(make_config(positional=positional)).eval()
    ids = torch.randint(1, 32, (2, 7))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    full = model(ids, mask).logits
    cache = DecoderCache()
    steps = [model(ids[:, :5], mask[:, :5], cache=cache).logits]
    steps += [model(ids[:, t : t + 1], mask[:, : t + 1], cache=cache).logits for t in (5, 6)]
    torch.testing.assert_close(torch.cat(steps, dim=1)[:, 3:], full[:, 3:])


@pytest.mark.parametrize("positional", ["sinusoidal", "rope"])
def test_seq2seq_decoder_token_by_token_equals_full_forward(make_config, positional) -> None:
    torch.manual_seed(0)
    model = Seq2SeqTransformer(make_config(positional=positional)).eval()
    source, target = torch.randint(1, 32, (2, 6)), torch.randint(1, 32, (2, 5))
    source_mask = torch.ones_like(source)
    source_mask[1, 4:] = 0
    full = model(source, target, source_mask).logits
    memory = model.encode(source, source_mask)
    cache = DecoderCache()
    steps = [model.decode(target[:, t : t + 1], memory, source_mask, cache=cache) for t in range(5)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


def test_mask_must_cover_cached_tokens(make_config) -> None:
    model = CausalLanguageModel(make_config()).eval()
    cache = DecoderCache()
    model(torch.ones(1, 3, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="cached"):
        model(torch.ones(1, 1, dtype=torch.long), torch.ones(1, 1), cache=cache)
