"""Encoder and decoder layers (section 3.1): attention and feed-forward sublayers, each wrapped in
a residual connection with layer normalisation.

Post-LN (the paper): x = LayerNorm(x + Dropout(Sublayer(x))).
Pre-LN (default):    x = x + Dropout(Sublayer(LayerNorm(x))), with a final LayerNorm after the
stack; gradients at initialisation are well-behaved without learning-rate warm-up
(Xiong et al., 2020).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from transformer_pl.model.attention import KVCache, MultiHeadAttention
from transformer_pl.model.config import TransformerConfig
from transformer_pl.model.positional import RotaryEmbedding

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "relu": F.relu,
    "gelu_tanh": functools.partial(F.gelu, approximate="tanh"),
}


class FeedForward(nn.Module):
    """FFN(x) = act(xW₁ + b₁)W₂ + b₂, the same two-layer MLP at every position (equation 2)."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu") -> None:
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)
        self.activation: Callable[[Tensor], Tensor] = _ACTIVATIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(self.activation(self.w_1(x)))


def _attention(config: TransformerConfig, rope: RotaryEmbedding | None) -> MultiHeadAttention:
    return MultiHeadAttention(
        config.d_model,
        config.n_heads,
        dropout=config.attention_dropout,
        impl=config.attention_impl,
        rope=rope,
    )


class _ResidualLayer(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.norm_first = config.norm_first
        self.dropout = nn.Dropout(config.dropout)

    def residual(self, x: Tensor, sublayer: Callable[[Tensor], Tensor], norm: nn.Module) -> Tensor:
        if self.norm_first:
            return x + self.dropout(sublayer(norm(x)))
        return norm(x + self.dropout(sublayer(x)))


class EncoderLayer(_ResidualLayer):
    """Self-attention over the whole sequence, then the feed-forward network."""

    def __init__(self, config: TransformerConfig, rope: RotaryEmbedding | None = None) -> None:
        super().__init__(config)
        self.self_attn = _attention(config, rope)
        self.self_attn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config.d_model, config.d_ff, config.activation)
        self.ffn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

    def forward(
        self, x: Tensor, attention_mask: Tensor | None = None, positions: Tensor | None = None
    ) -> Tensor:
        x = self.residual(
            x,
            lambda h: self.self_attn(h, attention_mask=attention_mask, positions=positions),
            self.self_attn_norm,
        )
        return self.residual(x, self.ffn, self.ffn_norm)


class DecoderLayer(_ResidualLayer):
    """Masked (causal) self-attention, then cross-attention over the encoder memory (if
    `cross_attention`; a decoder-only model has none), then the feed-forward network."""

    def __init__(
        self,
        config: TransformerConfig,
        cross_attention: bool = True,
        rope: RotaryEmbedding | None = None,
    ) -> None:
        super().__init__(config)
        self.self_attn = _attention(config, rope)
        self.self_attn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.cross_attn = _attention(config, rope=None) if cross_attention else None
        self.cross_attn_norm = (
            nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if cross_attention else None
        )
        self.ffn = FeedForward(config.d_model, config.d_ff, config.activation)
        self.ffn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

    def forward(
        self,
        x: Tensor,
        attention_mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: tuple[KVCache, KVCache] | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """cache: (self-attention cache, cross-attention cache) of this layer, updated in place."""
        self_cache, cross_cache = cache if cache is not None else (None, None)
        x = self.residual(
            x,
            lambda h: self.self_attn(
                h,
                attention_mask=attention_mask,
                causal=True,
                cache=self_cache,
                positions=positions,
            ),
            self.self_attn_norm,
        )
        if self.cross_attn is not None:
            if memory is None:
                raise ValueError("this decoder layer has cross-attention: pass the encoder memory")
            x = self.residual(
                x,
                lambda h: self.cross_attn(
                    h, key_value=memory, attention_mask=memory_mask, cache=cross_cache
                ),
                self.cross_attn_norm,
            )
        return self.residual(x, self.ffn, self.ffn_norm)
