"""Transformers from first principles, in plain PyTorch (no Lightning, no I/O)."""

from transformer_pl.model.attention import KVCache, MultiHeadAttention, scaled_dot_product_attention
from transformer_pl.model.config import Pooling, TransformerConfig
from transformer_pl.model.generation import (
    beam_search,
    generate,
    greedy_translate,
    sample_next_token,
)
from transformer_pl.model.heads import (
    CausalLanguageModel,
    ClassifierOutput,
    LMOutput,
    MaskedLanguageModel,
    ModelKind,
    Seq2SeqTransformer,
    SequenceClassifier,
    TokenClassifier,
    count_parameters,
)
from transformer_pl.model.layers import DecoderLayer, EncoderLayer, FeedForward
from transformer_pl.model.positional import (
    LearnedPositionalEncoding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_encoding,
)
from transformer_pl.model.transformer import (
    Decoder,
    DecoderCache,
    Encoder,
    EncoderDecoder,
    TokenEmbedding,
    init_weights,
)

__all__ = [
    "CausalLanguageModel",
    "ClassifierOutput",
    "Decoder",
    "DecoderCache",
    "DecoderLayer",
    "Encoder",
    "EncoderDecoder",
    "EncoderLayer",
    "FeedForward",
    "KVCache",
    "LMOutput",
    "LearnedPositionalEncoding",
    "MaskedLanguageModel",
    "ModelKind",
    "MultiHeadAttention",
    "Pooling",
    "RotaryEmbedding",
    "Seq2SeqTransformer",
    "SequenceClassifier",
    "SinusoidalPositionalEncoding",
    "TokenClassifier",
    "TokenEmbedding",
    "TransformerConfig",
    "beam_search",
    "count_parameters",
    "generate",
    "greedy_translate",
    "init_weights",
    "sample_next_token",
    "scaled_dot_product_attention",
    "sinusoidal_encoding",
]
