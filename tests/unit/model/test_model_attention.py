from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transformer_pl.model import KVCache, MultiHeadAttention, scaled_dot_product_attention

D, H = 32, 4


def _pair(impl: str) -> tuple[MultiHeadAttention, nn.MultiheadAttention]:
    torch.manual_seed(0)
    ours = MultiHeadAttention(D, H, impl=impl)
    for p in ours.parameters():  # non-zero biases, so a mis-copied bias shows
        nn.init.normal_(p, std=0.2)
    theirs = nn.MultiheadAttention(D, H, batch_first=True)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(
            torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight])
        )
        theirs.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        theirs.out_proj.weight.copy_(ours.out_proj.weight)
        theirs.out_proj.bias.copy_(ours.out_proj.bias)
    return ours.eval(), theirs.eval()


@pytest.mark.parametrize("impl", ["sdpa", "reference"])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_matches_torch(impl: str, padded: bool, causal: bool) -> None:
    ours, theirs = _pair(impl)
    x = torch.randn(3, 7, D)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0  # right padding: every query keeps at least one visible key
    mask[2, 3:] = 0
    attention_mask = mask if padded else None
    future = torch.ones(7, 7, dtype=torch.bool).triu(1)  # torch: True = may NOT attend
    expected, _ = theirs(
        x,
        x,
        x,
        key_padding_mask=(mask == 0) if padded else None,
        attn_mask=future if causal else None,
        need_weights=False,
    )
    actual = ours(x, attention_mask=attention_mask, causal=causal)
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("impl", ["sdpa", "reference"])
def test_cross_attention_matches_torch(impl: str) -> None:
    ours, theirs = _pair(impl)
    x, memory = torch.randn(2, 5, D), torch.randn(2, 9, D)
    memory_mask = torch.ones(2, 9, dtype=torch.long)
    memory_mask[0, 6:] = 0
    expected, _ = theirs(x, memory, memory, key_padding_mask=memory_mask == 0, need_weights=False)
    torch.testing.assert_close(ours(x, memory, attention_mask=memory_mask), expected)


def test_reference_and_sdpa_agree_with_masks() -> None:
    torch.manual_seed(0)
    sdpa = MultiHeadAttention(D, H, impl="sdpa")
    reference = MultiHeadAttention(D, H, impl="reference")
    reference.load_state_dict(sdpa.state_dict())
    x = torch.randn(3, 8, D)
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[0, :3] = 0  # left padding: some causal rows see no real key at all
    mask[1, 6:] = 0
    for causal in (False, True):
        a = sdpa(x, attention_mask=mask, causal=causal)
        b = reference(x, attention_mask=mask, causal=causal)
        torch.testing.assert_close(a, b)
        assert torch.isfinite(a).all()


def test_reference_function_equals_torch_sdpa() -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 4)
    mask = torch.rand(2, 1, 5, 6) > 0.3
    mask[..., 0] = True
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, mask)
    )


def test_self_attention_cache_appends_and_cross_attention_cache_projects_once() -> None:
    torch.manual_seed(0)
    attention = MultiHeadAttention(D, H).eval()
    x, memory = torch.randn(2, 4, D), torch.randn(2, 6, D)
    full = attention(x, causal=True)
    cache = KVCache()
    steps = [attention(x[:, t : t + 1], causal=True, cache=cache) for t in range(4)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)
    assert cache.length == 4

    cross_cache = KVCache()
    first = attention(x[:, :1], memory, cache=cross_cache)
    key = cross_cache.key
    # The second step ignores a different memory: keys/values were projected once.
    second = attention(x[:, 1:2], torch.zeros_like(memory), cache=cross_cache)
    assert cross_cache.key is key
    torch.testing.assert_close(torch.cat([first, second], 1), attention(x[:, :2], memory))
