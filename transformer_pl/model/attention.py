"""Scaled dot-product and multi-head attention (Vaswani et al., 2017, section 3.2), with a KV cache.

Masks: `attention_mask` arguments are key-padding masks of shape (batch, S), 1/True for a real
token and 0 for padding (the Hugging Face convention). Internally masks are boolean and
broadcastable to (batch, heads, T, S), True where a query may attend to a key, which is what
`torch.nn.functional.scaled_dot_product_attention` expects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer_pl.model.positional import RotaryEmbedding


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    dropout_p: float = 0.0,
    training: bool = False,
) -> Tensor:
    """Attention(Q, K, V) = softmax(QKᵀ / √d_k) V, written out (equation 1).

    q: (..., T, d_k), k: (..., S, d_k), v: (..., S, d_v); mask: boolean, broadcastable to
    (..., T, S), True = may attend. Returns (..., T, d_v).
    """
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    weights = F.dropout(weights, p=dropout_p, training=training)
    return weights @ v


@dataclass
class KVCache:
    """Keys and values of one attention module, kept between decoding steps.

    Self-attention appends each step's keys/values; cross-attention projects the encoder memory
    once, on the first step, and reuses it. Shapes (batch, heads, S, d_k).
    """

    key: Tensor | None = None
    value: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.key is None else self.key.size(-2)

    def append(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        if self.key is not None and self.value is not None:
            key = torch.cat((self.key, key), dim=-2)
            value = torch.cat((self.value, value), dim=-2)
        self.key, self.value = key, value
        return key, value

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (beam search re-ranks its beams every step)."""
        if self.key is not None and self.value is not None:
            self.key, self.value = self.key[index], self.value[index]


def build_attention_mask(
    key_padding_mask: Tensor | None, causal: bool, T: int, S: int, device: torch.device
) -> Tensor | None:
    """Boolean (B|1, 1, T, S) mask, True = may attend, or None when every key is visible.

    Causal masking is aligned to the end: with S - T cached keys in front, query t sits at
    position S - T + t and sees keys ≤ that position.
    """
    mask = None
    if key_padding_mask is not None:
        mask = key_padding_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
    if causal:
        visible = torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)
        mask = visible if mask is None else mask & visible
    if key_padding_mask is not None:
        # A query with no visible key (a left-padding position under a causal mask) would get a
        # softmax over nothing, i.e. NaN, which later layers would spread through 0 · NaN. Let
        # it see every key instead: its output is padding, unspecified but finite.
        mask = mask | ~mask.any(dim=-1, keepdim=True)
    return mask


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1, …, head_h) Wᴼ, head_i = Attention(QWᵢᵠ, KWᵢᴷ, VWᵢⱽ).

    The h per-head projections are stored as one d_model × d_model matrix each (q_proj, k_proj,
    v_proj) and split into heads after projecting; out_proj is Wᴼ. Self-attention when
    `key_value` is None, cross-attention (queries from the decoder, keys and values from the
    encoder memory) otherwise. `impl="sdpa"` calls PyTorch's fused kernel, `"reference"` the
    function above; they agree to float tolerance. `rope`, if given, rotates queries and keys
    (self-attention only: source and target positions are not comparable).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        impl: Literal["sdpa", "reference"] = "sdpa",
        rope: RotaryEmbedding | None = None,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.d_k = d_model // n_heads
        self.dropout = dropout
        self.impl = impl
        self.rope = rope
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _split_heads(self, x: Tensor) -> Tensor:
        """(B, T, d_model) -> (B, h, T, d_k)."""
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.d_k).transpose(1, 2)

    def forward(
        self,
        query: Tensor,
        key_value: Tensor | None = None,
        attention_mask: Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """query: (B, T, d_model); key_value: (B, S, d_model) memory for cross-attention.

        attention_mask: (B, S) key padding mask over all keys, cached ones included.
        causal: query t may not see later keys. cache: updated in place. positions: (T,) or
        (B, T) positions of the queries for RoPE; defaults to cache.length + arange(T).
        Returns (B, T, d_model).
        """
        B, T, _ = query.shape
        q = self._split_heads(self.q_proj(query))
        if key_value is not None and cache is not None and cache.key is not None:
            k, v = cache.key, cache.value  # the encoder memory does not change between steps
        else:
            source = query if key_value is None else key_value
            k = self._split_heads(self.k_proj(source))
            v = self._split_heads(self.v_proj(source))
            if self.rope is not None and key_value is None:
                if positions is None:
                    past = 0 if cache is None else cache.length
                    positions = torch.arange(past, past + T, device=query.device)
                q, k = self.rope(q, positions), self.rope(k, positions)
            if cache is not None:
                k, v = cache.append(k, v)
        S = k.size(-2)

        # A single query is the newest position and may see every key: no causal mask needed.
        causal = causal and T > 1
        # Without padding, a square causal mask is SDPA's is_causal flag: the fused kernel then
        # skips the masked blocks instead of reading a mask tensor.
        use_is_causal = causal and attention_mask is None and T == S and self.impl == "sdpa"
        mask = None
        if not use_is_causal:
            mask = build_attention_mask(attention_mask, causal, T, S, query.device)
        dropout_p = self.dropout if self.training else 0.0
        if self.impl == "sdpa":
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=use_is_causal
            )
        else:
            out = scaled_dot_product_attention(q, k, v, mask, dropout_p, self.training)
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.d_k)  # Concat(head_1…head_h)
        return self.out_proj(out)
