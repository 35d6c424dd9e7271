"""params.yaml `tasks.lm`: what evaluate asks of a language model beyond its perplexity."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from transformer_pl.section import Section


class LanguageModelSettings(Section):
    # The pretraining objective that fits a language model ("auto" picks it), and the val metric
    # promotion decides on (per word: comparable across tokenizers; lower is better).
    pretraining_objectives: ClassVar[tuple[str, ...]] = ("clm",)
    headline_metric: ClassVar[tuple[str, bool]] = ("val_word_perplexity", False)
    input_length_key: ClassVar[str] = (
        "encode.block_size"  # what bounds one input (<= model.max_len)
    )
    decodes: ClassVar[bool] = True

    prompts: list[str] = Field(
        ["The", "In 1999 ,"]
    )  # continued greedily and sampled (samples.json)
