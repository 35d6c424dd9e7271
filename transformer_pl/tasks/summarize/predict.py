"""Summarization as served and scored: sources in (a dialogue's turns one per line), summaries
out, decoded as translation decodes (beam search or greedy, under the decode settings)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from transformer_pl.model import Seq2SeqTransformer
from transformer_pl.params import DecodeParams
from transformer_pl.serving import PREDICT_BATCH_SIZE
from transformer_pl.tasks.sequence import DecodingModel, SequenceBundleConfig, load_sequence_bundle
from transformer_pl.tasks.translate.predict import TRANSLATE_DECODING, translate_texts

TASK = "summarize"


def load_summarizer_bundle(
    directory: str | Path, tokenizer_path: str | Path | None = None
) -> tuple[Seq2SeqTransformer, Tokenizer, SequenceBundleConfig]:
    """A summarization bundle's model (eval mode, CPU), tokenizer and config."""
    return load_sequence_bundle(directory, TASK, Seq2SeqTransformer, tokenizer_path)


def source_lines(text: str) -> str:
    """A source as clean made the training sources: each non-blank line's whitespace
    collapsed, one line per turn ("\\r\\n" and "\\r" read as line breaks)."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


class TransformerSummarizerModel(DecodingModel):
    """Summarization pyfunc: sources in, their `summary`s out (see `translate_texts`)."""

    load_bundle = staticmethod(load_summarizer_bundle)
    output_column = "summary"
    decoding_params = TRANSLATE_DECODING
    example = (
        "Amanda: I baked cookies. Do you want some?\nJerry: Sure!\nAmanda: I'll bring you some."
    )

    def decode_texts(self, texts: list[str], decoding: DecodeParams) -> list[str]:
        return translate_texts(
            self.model,
            self.tokenizer,
            [source_lines(text) for text in texts],
            decoding,
            self.config.max_length,
            PREDICT_BATCH_SIZE,
            self.config.truncate_from,
        )
