"""Embeddings, the encoder and decoder stacks, and the encoder–decoder (section 3.1, figure 1).

Initialisation (`init_weights`): every weight matrix and embedding ~ N(0, 0.02²) as in BERT and
GPT-2, zero biases, LayerNorm γ = 1 and β = 0; the two projections that write into the residual
stream (Wᴼ of attention, W₂ of the FFN) get 0.02/√(2·n_layers) so that the variance of the
residual stream does not grow with depth (GPT-2).

Positions: a token's position is the number of real tokens before it. Without padding that is
0, 1, 2, …; with left padding the first real token still gets position 0, so real positions never
depend on padding on either side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer_pl.model.attention import KVCache, MultiHeadAttention
from transformer_pl.model.config import TransformerConfig
from transformer_pl.model.layers import DecoderLayer, EncoderLayer, FeedForward
from transformer_pl.model.positional import (
    LearnedPositionalEncoding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
)


class TokenEmbedding(nn.Embedding):
    """Token embedding multiplied by √d_model, as in the paper (section 3.4).

    With N(0, 0.02²) initialisation the unscaled vectors (norm ≈ 0.3 at d_model = 256) would be
    drowned by the sinusoidal encoding (norm √(d_model/2) ≈ 11); scaled, they are comparable.
    The unscaled `weight` is what a tied output projection shares. `scale=False` skips the
    factor, for checkpoints trained without it (BERT, GPT-2).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, scale: bool = True) -> None:
        super().__init__(num_embeddings, embedding_dim)
        self.scale = scale

    def forward(self, input_ids: Tensor) -> Tensor:
        x = super().forward(input_ids)
        return x * math.sqrt(self.embedding_dim) if self.scale else x


def init_weights(module: nn.Module, n_layers: int, std: float = 0.02) -> None:
    """Initialise `module` in place as described in this file's docstring."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding | LearnedPositionalEncoding):
            nn.init.normal_(m.weight, std=std)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    residual_std = std / math.sqrt(2 * n_layers)
    for m in module.modules():
        if isinstance(m, MultiHeadAttention):
            nn.init.normal_(m.out_proj.weight, std=residual_std)
        elif isinstance(m, FeedForward):
            nn.init.normal_(m.w_2.weight, std=residual_std)


def padding_mask_or_none(attention_mask: Tensor | None) -> Tensor | None:
    """The mask as booleans, or None when nothing is padded, so attention takes the fused path."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask.bool()


def positions_from_mask(
    attention_mask: Tensor | None, past: int, T: int, device: torch.device
) -> Tensor:
    """Positions of the last T tokens: (T,) without padding, else (B, T) counts of real tokens
    before each one (padding positions get a clamped, meaningless value)."""
    if attention_mask is None:
        return torch.arange(past, past + T, device=device)
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)[:, past:]


@dataclass
class DecoderCache:
    """Everything a decoder keeps between incremental decoding steps: per layer, one KVCache for
    self-attention (grows by the new tokens every step) and one for cross-attention (the encoder
    memory, projected once). Create it empty, `DecoderCache()`, and pass the same object to every
    step; the decoder fills it in place."""

    self_attn: list[KVCache] = field(default_factory=list)
    cross_attn: list[KVCache] = field(default_factory=list)

    @property
    def length(self) -> int:
        """Number of tokens already decoded."""
        return self.self_attn[0].length if self.self_attn else 0

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index`, e.g. the surviving beams of a beam search."""
        for cache in (*self.self_attn, *self.cross_attn):
            cache.reorder(index)


class _Stack(nn.Module):
    """Shared input side of the encoder and the decoder: token embedding, position information,
    dropout (applied to the sums of embeddings and positional encodings, section 5.4)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = TokenEmbedding(
            config.vocab_size, config.d_model, scale=config.scale_embeddings
        )
        self.positional: nn.Module | None = None
        if config.positional == "sinusoidal":
            self.positional = SinusoidalPositionalEncoding(config.max_len, config.d_model)
        elif config.positional == "learned":
            self.positional = LearnedPositionalEncoding(config.max_len, config.d_model)
        self.rope = (
            RotaryEmbedding(config.head_dim, config.max_len)
            if config.positional == "rope"
            else None
        )
        self.embedding_norm = (
            nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
            if config.embedding_norm
            else None
        )
        self.dropout = nn.Dropout(config.dropout)
        # Pre-LN leaves the residual stream unnormalised: normalise once after the last layer.
        self.norm = (
            nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
            if config.norm_first
            else nn.Identity()
        )

    def embed(
        self,
        input_ids: Tensor,
        positions: Tensor,
        past: int = 0,
        added: Tensor | None = None,
    ) -> Tensor:
        """added: (B, T, d_model), added to the token embeddings (an encoder's bigram
        embeddings)."""
        if past + input_ids.size(1) > self.config.max_len:
            raise ValueError(
                f"sequence length {past + input_ids.size(1)} exceeds max_len={self.config.max_len}"
            )
        x = self.embedding(input_ids)
        if added is not None:
            x = x + added
        if self.positional is not None:
            x = x + self.positional(positions)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        return self.dropout(x)


class BigramEmbedding(nn.Module):
    """A learned vector for each (previous token, token) pair, hashed into `buckets` rows of
    `dim` features and projected to d_model (N-Grammer, Roy et al., 2022, with hashed instead of
    clustered ids). A shallow encoder combines the many weak phrase cues a text's label can
    rest on poorly; this hands it each phrase as one input. Row 0 stands for no pair: the first
    token, padding."""

    MULTIPLIER = 1_000_003  # a prime above any vocabulary size: pairs collide only by the modulo

    def __init__(self, buckets: int, dim: int, d_model: int, pad_token_id: int) -> None:
        super().__init__()
        self.buckets = buckets
        self.pad_token_id = pad_token_id
        self.table = nn.Embedding(buckets + 1, dim, padding_idx=0)
        self.projection = nn.Linear(dim, d_model, bias=False)
        self.zero_start()

    def zero_start(self) -> None:
        """Zero the projection and the no-pair row: the encoder then starts as it would without
        bigrams, and the rows learn once the projection has."""
        with torch.no_grad():
            self.projection.weight.zero_()
            self.table.weight[0].zero_()

    def bigram_ids(self, input_ids: Tensor) -> Tensor:
        """(B, T) token ids -> (B, T) rows: 1 + hash(previous, token) mod buckets, 0 where either
        is padding or there is no previous token."""
        previous = F.pad(input_ids[:, :-1], (1, 0), value=self.pad_token_id)
        ids = 1 + (previous * self.MULTIPLIER + input_ids) % self.buckets
        no_pair = (previous == self.pad_token_id) | (input_ids == self.pad_token_id)
        return ids.masked_fill(no_pair, 0)

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.projection(self.table(self.bigram_ids(input_ids)))


class Encoder(_Stack):
    """N encoder layers over embedded tokens: (B, T) ids -> (B, T, d_model) hidden states."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        self.layers = nn.ModuleList(EncoderLayer(config, self.rope) for _ in range(config.n_layers))
        self.bigrams = (
            BigramEmbedding(
                config.bigram_buckets, config.bigram_dim, config.d_model, config.pad_token_id
            )
            if config.bigram_buckets
            else None
        )
        init_weights(self, config.n_layers)
        if self.bigrams is not None:
            self.bigrams.zero_start()  # init_weights drew the projection at random

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        mask = padding_mask_or_none(attention_mask)
        positions = positions_from_mask(mask, 0, input_ids.size(1), input_ids.device)
        bigrams = None if self.bigrams is None else self.bigrams(input_ids)
        x = self.embed(input_ids, positions, added=bigrams)
        for layer in self.layers:
            x = layer(x, mask, positions)
        return self.norm(x)


class Decoder(_Stack):
    """N decoder layers with causal self-attention; with `cross_attention` each layer also attends
    to an encoder memory. Depth: `config.decoder_layers` in an encoder–decoder, `config.n_layers`
    for a decoder-only model."""

    def __init__(self, config: TransformerConfig, cross_attention: bool) -> None:
        super().__init__(config)
        if config.bigram_buckets and not cross_attention:
            raise ValueError(
                f"bigram_buckets={config.bigram_buckets}: bigram embeddings are an encoder's "
                "input, a decoder-only model has none (set it to 0)"
            )
        n_layers = config.decoder_layers if cross_attention else config.n_layers
        self.layers = nn.ModuleList(
            DecoderLayer(config, cross_attention, self.rope) for _ in range(n_layers)
        )
        init_weights(self, n_layers)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        """input_ids: (B, T) new tokens; with a cache holding P earlier tokens, attention_mask
        covers all P + T tokens. memory: (B, S, d_model) encoder output, memory_mask its (B, S)
        padding mask. Returns (B, T, d_model)."""
        past = 0 if cache is None else cache.length
        T = input_ids.size(1)
        if attention_mask is not None and attention_mask.size(1) != past + T:
            raise ValueError(
                f"attention_mask covers {attention_mask.size(1)} tokens, expected {past + T} "
                f"({past} cached + {T} new)"
            )
        mask = padding_mask_or_none(attention_mask)
        memory_mask = padding_mask_or_none(memory_mask)
        positions = positions_from_mask(mask, past, T, input_ids.device)
        x = self.embed(input_ids, positions, past)
        if cache is not None and not cache.self_attn:
            cache.self_attn = [KVCache() for _ in self.layers]
            cache.cross_attn = [KVCache() for _ in self.layers]
        for i, layer in enumerate(self.layers):
            layer_cache = None if cache is None else (cache.self_attn[i], cache.cross_attn[i])
            x = layer(x, mask, memory, memory_mask, layer_cache, positions)
        return self.norm(x)


class EncoderDecoder(nn.Module):
    """Encoder and cross-attending decoder. Source and target share one token embedding, which
    assumes a joint source/target vocabulary (the paper shares it with the output projection
    too, section 3.4; see Seq2SeqTransformer)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.encoder = Encoder(config)
        self.decoder = Decoder(config, cross_attention=True)
        self.decoder.embedding = self.encoder.embedding

    def forward(
        self,
        source_ids: Tensor,
        target_ids: Tensor,
        source_mask: Tensor | None = None,
        target_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        """Decoder hidden states (B, T, d_model) for target_ids given source_ids."""
        memory = self.encoder(source_ids, source_mask)
        return self.decoder(target_ids, target_mask, memory, source_mask, cache)
