"""params.yaml for language modelling: its datasets' spec (`datasets.<name>` with task lm) and
`tasks.lm`, what evaluate asks of a language model beyond its perplexity."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from transformer_pl.dataset_spec import TABLE_FORMATS, DatasetSpecBase, FileFormat
from transformer_pl.task_settings import TaskSettingsBase


class LanguageModelDataset(DatasetSpecBase):
    """A corpus: `text` files hold one record per non-blank line; a table, one per row."""

    corpus: ClassVar[bool] = True
    formats: ClassVar[tuple[FileFormat, ...]] = (*TABLE_FORMATS, "text")

    task: Literal["lm"]


class LanguageModelSettings(TaskSettingsBase):
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
