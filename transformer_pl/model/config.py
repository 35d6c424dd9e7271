"""Hyper-parameters shared by every architecture in this package, validated at construction."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

Positional = Literal["sinusoidal", "learned", "rope"]
# "gelu_tanh": the tanh approximation of GELU that GPT-2 was trained with ("gelu_new").
Activation = Literal["gelu", "relu", "gelu_tanh"]
AttentionImpl = Literal["sdpa", "reference"]
# How a classifier turns token states into one vector (model/heads.py: SequenceClassifier).
Pooling = Literal["mean", "max", "mean_max", "cls"]


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes and switches of a Transformer (Vaswani et al., 2017, "base" is d_model=512, h=8, N=6).

    `n_layers` counts encoder layers, or decoder layers for a decoder-only model; an
    encoder–decoder uses `n_decoder_layers` decoder layers (`n_layers` when None).
    """

    vocab_size: int
    d_model: int = 256
    n_heads: int = 4
    n_layers: int = 4
    n_decoder_layers: int | None = None
    d_ff: int = 1024
    max_len: int = 512
    dropout: float = 0.1
    # Any attention dropout makes SDPA fall back from its fused CPU kernel to a slower one.
    attention_dropout: float = 0.0
    positional: Positional = "sinusoidal"
    # Pre-LN trains stably without warm-up; False gives the paper's post-LN.
    norm_first: bool = True
    activation: Activation = "gelu"
    tie_embeddings: bool = True
    pad_token_id: int = 0
    layer_norm_eps: float = 1e-5
    attention_impl: AttentionImpl = "sdpa"
    # Encoders: > 0 adds to each token's embedding a learned embedding of (previous token,
    # token) hashed into this many rows of bigram_dim features (N-Grammer, Roy et al., 2022;
    # model/transformer.py: BigramEmbedding); 0: off. Decoders do not read them.
    bigram_buckets: int = 0
    bigram_dim: int = 32
    # False: token embeddings are not multiplied by √d_model (BERT, GPT-2 checkpoints expect that).
    scale_embeddings: bool = True
    # True: a LayerNorm over the summed token and position embeddings, before dropout (BERT).
    embedding_norm: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_heads", "n_layers", "d_ff", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.n_decoder_layers is not None and self.n_decoder_layers < 1:
            raise ValueError(
                f"n_decoder_layers must be positive or None, got {self.n_decoder_layers}"
            )
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name, choices in (
            ("positional", get_args(Positional)),
            ("activation", get_args(Activation)),
            ("attention_impl", get_args(AttentionImpl)),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.positional == "rope" and self.head_dim % 2:
            raise ValueError(
                f"positional='rope' rotates pairs of dimensions: head dim d_model/n_heads "
                f"= {self.head_dim} must be even"
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"pad_token_id must be in [0, vocab_size={self.vocab_size}), "
                f"got {self.pad_token_id}"
            )
        if self.bigram_buckets < 0 or self.bigram_dim < 1:
            raise ValueError(
                f"bigram_buckets must be >= 0 and bigram_dim >= 1, got {self.bigram_buckets} "
                f"and {self.bigram_dim}"
            )
        if self.layer_norm_eps <= 0:
            raise ValueError(f"layer_norm_eps must be positive, got {self.layer_norm_eps}")

    @property
    def head_dim(self) -> int:
        """d_k = d_v = d_model / h."""
        return self.d_model // self.n_heads

    @property
    def decoder_layers(self) -> int:
        """Decoder depth of an encoder–decoder."""
        return self.n_layers if self.n_decoder_layers is None else self.n_decoder_layers

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TransformerConfig:
        unknown = set(d) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown TransformerConfig field(s): {sorted(unknown)}")
        return cls(**d)
