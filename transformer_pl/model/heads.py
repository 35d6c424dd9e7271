"""Task models: masked LM, causal LM, sequence classifier, sequence-to-sequence translator.

Labels follow the Hugging Face convention: -100 marks a position that is not predicted.
Tied output projections (`config.tie_embeddings`) reuse the token embedding matrix, so logits
= h Eᵀ (section 3.4); LM heads have no bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer_pl.model.config import Pooling, TransformerConfig
from transformer_pl.model.transformer import (
    Decoder,
    DecoderCache,
    Encoder,
    EncoderDecoder,
    TokenEmbedding,
)

IGNORE_INDEX = -100
ModelKind = Literal["mlm", "causal", "classifier", "seq2seq"]


@dataclass
class LMOutput:
    loss: Tensor | None
    logits: Tensor
    cache: DecoderCache | None = None


@dataclass
class ClassifierOutput:
    loss: Tensor | None
    logits: Tensor


def _lm_head(config: TransformerConfig, embedding: TokenEmbedding) -> nn.Linear:
    lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
    if config.tie_embeddings:
        lm_head.weight = embedding.weight
    else:
        nn.init.normal_(lm_head.weight, std=0.02)
    return lm_head


class MaskedLanguageModel(nn.Module):
    """BERT-style masked LM: encoder + projection to the vocabulary."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.lm_head = _lm_head(config, self.encoder.embedding)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None
    ) -> LMOutput:
        """Without labels: logits (B, T, V). With labels (B, T), -100 where not predicted: logits
        (N, V) for the N predicted positions only, in row-major order, and their mean
        cross-entropy — the same loss as full logits with ignore_index=-100, without projecting
        the unmasked positions, most of them, through the model's largest matrix."""
        hidden = self.encoder(input_ids, attention_mask)
        if labels is None:
            return LMOutput(loss=None, logits=self.lm_head(hidden))
        predicted = labels != IGNORE_INDEX
        logits = self.lm_head(hidden[predicted])
        return LMOutput(loss=F.cross_entropy(logits, labels[predicted]), logits=logits)


class CausalLanguageModel(nn.Module):
    """GPT-style decoder-only LM: causal decoder (no cross-attention) + projection."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.decoder = Decoder(config, cross_attention=False)
        self.lm_head = _lm_head(config, self.decoder.embedding)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> LMOutput:
        """logits (B, T, V): position t predicts token t + 1.

        labels: (B, T), normally `input_ids` with -100 on padding; the model shifts them
        internally (as Hugging Face does), so logits[:, t] is scored against labels[:, t + 1].
        cache: a `DecoderCache` for incremental decoding (see Decoder.forward for the mask).
        """
        hidden = self.decoder(input_ids, attention_mask, cache=cache)
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
            )
        return LMOutput(loss=loss, logits=logits, cache=cache)


class SequenceClassifier(nn.Module):
    """Encoder + pooling + linear classifier.

    `.encoder` is built exactly as MaskedLanguageModel.encoder, so pretrained weights load by
    name: `classifier.encoder.load_state_dict(mlm.encoder.state_dict())`.
    Pooling over the real tokens: "mean" averages them; "max" takes each feature's largest value
    (a strong phrase anywhere in a long text is not averaged away); "mean_max" concatenates both,
    so the head sees 2·d_model features; "cls" takes position 0 (the tokenizer must put a [CLS]
    token there, and sequences must then be right-padded).
    """

    def __init__(
        self,
        config: TransformerConfig,
        num_labels: int,
        pooling: Pooling = "mean",
        classifier_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if pooling not in get_args(Pooling):
            raise ValueError(f"pooling must be one of {get_args(Pooling)}, got {pooling!r}")
        if num_labels < 2:
            raise ValueError(f"num_labels must be at least 2, got {num_labels}")
        self.config = config
        self.pooling = pooling
        self.encoder = Encoder(config)
        self.dropout = nn.Dropout(classifier_dropout)
        pooled_size = 2 * config.d_model if pooling == "mean_max" else config.d_model
        self.head = nn.Linear(pooled_size, num_labels)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def pool(self, hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
        """(B, T, D) -> (B, D), or (B, 2D) for mean_max."""
        if self.pooling == "cls":
            return hidden[:, 0]
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], device=hidden.device)
        real = attention_mask.unsqueeze(-1).bool()  # (B, T, 1): True real, False padding
        mean = (hidden * real).sum(dim=1) / real.sum(dim=1).clamp(min=1)
        if self.pooling == "mean":
            return mean
        largest = hidden.masked_fill(~real, float("-inf")).amax(dim=1)
        return largest if self.pooling == "max" else torch.cat([mean, largest], dim=-1)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> ClassifierOutput:
        """logits (B, num_labels); labels (B,) class indices."""
        hidden = self.encoder(input_ids, attention_mask)
        logits = self.head(self.dropout(self.pool(hidden, attention_mask)))
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return ClassifierOutput(loss=loss, logits=logits)


class TokenClassifier(nn.Module):
    """Encoder + a linear layer over every position: logits (B, T, num_labels). Tagging gives
    each token its tag's logits; extractive QA (num_labels 2) each token a start and an end
    logit. `.encoder` is built as MaskedLanguageModel.encoder, so pretrained weights load by
    name."""

    def __init__(
        self, config: TransformerConfig, num_labels: int, classifier_dropout: float = 0.1
    ) -> None:
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"num_labels must be at least 2, got {num_labels}")
        self.config = config
        self.encoder = Encoder(config)
        self.dropout = nn.Dropout(classifier_dropout)
        self.head = nn.Linear(config.d_model, num_labels)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> ClassifierOutput:
        """logits (B, T, num_labels); labels (B, T) class indices, -100 where none."""
        logits = self.head(self.dropout(self.encoder(input_ids, attention_mask)))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX
            )
        return ClassifierOutput(loss=loss, logits=logits)


class Seq2SeqTransformer(nn.Module):
    """The paper's translation model. Source embedding, target embedding and (with
    `tie_embeddings`) the output projection are one matrix: this assumes a joint source/target
    vocabulary, such as a shared BPE."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = EncoderDecoder(config)
        self.lm_head = _lm_head(config, self.transformer.encoder.embedding)

    def encode(self, source_ids: Tensor, source_mask: Tensor | None = None) -> Tensor:
        """Encoder memory (B, S, d_model)."""
        return self.transformer.encoder(source_ids, source_mask)

    def decode(
        self,
        target_ids: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        target_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        """Next-token logits (B, T, V) for target_ids given the encoder memory. With a cache,
        target_ids are only the new tokens and the cache is updated in place."""
        hidden = self.transformer.decoder(target_ids, target_mask, memory, memory_mask, cache)
        return self.lm_head(hidden)

    def forward(
        self,
        source_ids: Tensor,
        target_ids: Tensor,
        source_mask: Tensor | None = None,
        target_mask: Tensor | None = None,
        labels: Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> LMOutput:
        """Teacher forcing. target_ids is the decoder input, BOS first ([BOS] y₁ … yₙ); labels are
        aligned with it, NOT shifted by the model: labels[:, t] is the token that follows
        target_ids[:, t] (y₁ … yₙ [EOS]), -100 on padding. The paper uses label_smoothing=0.1."""
        memory = self.encode(source_ids, source_mask)
        logits = self.decode(target_ids, memory, source_mask, target_mask)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.flatten(0, 1),
                labels.flatten(),
                ignore_index=IGNORE_INDEX,
                label_smoothing=label_smoothing,
            )
        return LMOutput(loss=loss, logits=logits)


def count_parameters(config: TransformerConfig, kind: ModelKind, num_labels: int = 2) -> int:
    """Closed-form number of trainable parameters of the model `kind` built from `config`."""
    D, V, F_ff = config.d_model, config.vocab_size, config.d_ff
    attention = 4 * (D * D + D)  # Wᵠ, Wᴷ, Wⱽ, Wᴼ with biases
    ffn = D * F_ff + F_ff + F_ff * D + D
    layer_norm = 2 * D
    encoder_layer = attention + ffn + 2 * layer_norm
    decoder_layer = encoder_layer  # decoder-only: masked self-attention + FFN
    cross_decoder_layer = encoder_layer + attention + layer_norm
    # The sinusoidal encoding and RoPE have no parameters.
    positional = config.max_len * D if config.positional == "learned" else 0
    final_norm = layer_norm if config.norm_first else 0
    embedding_norm = layer_norm if config.embedding_norm else 0
    stack_input = positional + final_norm + embedding_norm  # per stack, besides its layers
    embedding = V * D
    # Encoders only (BigramEmbedding): its table, row 0 for no pair included, and projection.
    bigrams = (config.bigram_buckets + 1 + D) * config.bigram_dim if config.bigram_buckets else 0
    lm_head = 0 if config.tie_embeddings else D * V
    L = config.n_layers
    if kind == "mlm":
        return embedding + bigrams + stack_input + L * encoder_layer + lm_head
    if kind == "causal":
        return embedding + stack_input + L * decoder_layer + lm_head
    if kind == "classifier":
        return embedding + bigrams + stack_input + L * encoder_layer + D * num_labels + num_labels
    if kind == "seq2seq":
        return (
            embedding
            + bigrams
            + 2 * stack_input
            + L * encoder_layer
            + config.decoder_layers * cross_decoder_layer
            + lm_head
        )
    raise ValueError(f"kind must be one of mlm, causal, classifier, seq2seq; got {kind!r}")
