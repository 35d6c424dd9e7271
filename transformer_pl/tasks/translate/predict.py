"""Translation as served and scored: source sentences in, translations out (beam search or
greedy). A translator reads the bare source ids and writes [BOS] … [EOS]."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer

from transformer_pl.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from transformer_pl.model import Seq2SeqTransformer, beam_search, greedy_translate
from transformer_pl.params import DecodeParams
from transformer_pl.serving import PREDICT_BATCH_SIZE
from transformer_pl.tasks.sequence import (
    DEFAULT_BATCH_SIZE,
    DecodingModel,
    SequenceBundleConfig,
    batches,
    decode_ids,
    load_sequence_bundle,
    pad_right,
    token_ids,
)

TASK = "translate"
# The decode settings an encoder–decoder reads (what a request may override).
TRANSLATE_DECODING = (
    "max_new_tokens",
    "beam_size",
    "length_penalty",
    "min_new_tokens",
    "no_repeat_ngram_size",
)


def load_translator_bundle(
    directory: str | Path, tokenizer_path: str | Path | None = None
) -> tuple[Seq2SeqTransformer, Tokenizer, SequenceBundleConfig]:
    """A translation bundle's model (eval mode, CPU), tokenizer and config."""
    return load_sequence_bundle(directory, TASK, Seq2SeqTransformer, tokenizer_path)


@torch.no_grad()
def translate_texts(
    model: Seq2SeqTransformer,
    tokenizer: Tokenizer,
    sources: Sequence[str],
    decoding: DecodeParams,
    max_length: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    truncate_from: str = "end",
) -> list[str]:
    """One output per source: beam search (`beam_size` > 1, `length_penalty`) or greedy, at
    most `max_new_tokens` tokens, under `min_new_tokens` and `no_repeat_ngram_size`. A source
    keeps `max_length` ids, its first (`truncate_from` "end") or last, as in training; sources
    are batched by length (less padding) and returned in input order."""
    start = truncate_from == "start"
    # An empty source still needs one position for the encoder to attend to.
    ids = [
        (source[-max_length:] if start else source[:max_length]) or [EOS_ID]
        for source in token_ids(tokenizer, sources)
    ]
    order = sorted(range(len(ids)), key=lambda index: len(ids[index]))
    translations: dict[int, str] = {}
    for batch in batches(order, batch_size):
        source_ids = pad_right([torch.tensor(ids[index]) for index in batch])
        source_mask = (source_ids != PAD_ID).long()
        if decoding.beam_size > 1:
            tokens = beam_search(
                model,
                source_ids,
                source_mask,
                BOS_ID,
                EOS_ID,
                decoding.max_new_tokens,
                beam_size=decoding.beam_size,
                length_penalty=decoding.length_penalty,
                min_new_tokens=decoding.min_new_tokens,
                no_repeat_ngram_size=decoding.no_repeat_ngram_size,
            )
        else:
            tokens = greedy_translate(
                model,
                source_ids,
                source_mask,
                BOS_ID,
                EOS_ID,
                decoding.max_new_tokens,
                decoding.min_new_tokens,
                decoding.no_repeat_ngram_size,
            )
        for index, row in zip(batch, tokens.tolist(), strict=True):
            translations[index] = decode_ids(tokenizer, row).strip()
    return [translations[index] for index in range(len(ids))]


class TransformerTranslatorModel(DecodingModel):
    """Translation pyfunc: source sentences in, their `translation`s out (see
    `translate_texts`)."""

    load_bundle = staticmethod(load_translator_bundle)
    output_column = "translation"
    decoding_params = TRANSLATE_DECODING
    example = "A sentence to translate."

    def decode_texts(self, texts: list[str], decoding: DecodeParams) -> list[str]:
        return translate_texts(
            self.model,
            self.tokenizer,
            texts,
            decoding,
            self.config.max_length,
            PREDICT_BATCH_SIZE,
            self.config.truncate_from,
        )
