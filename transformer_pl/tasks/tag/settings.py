"""params.yaml for named-entity recognition: its datasets' spec (`datasets.<name>` with task tag)
and `tasks.tag`, how a tagger is built."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from transformer_pl.dataset_spec import DatasetSpecBase, FileFormat, RowChecks
from transformer_pl.task_settings import TaskSettingsBase

if TYPE_CHECKING:
    import pandas as pd

    from transformer_pl.stage_sections import CleanParams


class TagDataset(DatasetSpecBase):
    """Sentences of words, each word with an entity tag: `conll` files (a word per line, its
    columns separated by whitespace, a blank line between sentences, `-DOCSTART-` lines
    skipped), or a table (the Hub's) with a word-list column and a tag-list column. `text` is
    the sentence's words joined by single spaces; `tags` their IOB2 tags, joined alike."""

    tagged: ClassVar[bool] = True
    columns: ClassVar[tuple[str, ...]] = ("tags",)
    validation_columns: ClassVar[tuple[str, ...]] = ("words_minus_tags", "iob2_valid")
    # Words as read: normalising the sentence could split or merge words and break their
    # pairing with the tags (the tokenizer normalises each word it reads).
    normalised_text: ClassVar[bool] = False
    formats: ClassVar[tuple[FileFormat, ...]] = ("conll", "parquet", "jsonl")

    task: Literal["tag"]
    format: FileFormat = "conll"
    text_column: str = "tokens"  # a table's word-list column
    tag_column: str = "ner_tags"  # a table's tag-list column (tag names or Hub class ids)
    # conll files: the word's and the tag's column (0-based; negative counts from the end).
    word_field: int = 0
    tag_field: int = -1
    # How the files mark entities: IOB2 (every entity opens with B-) or IOB1 (B- only between
    # two adjacent entities of one type); read as given, kept as IOB2.
    tag_scheme: Literal["iob1", "iob2"] = "iob2"

    def source_columns(self, split: str) -> dict[str, str]:
        return {**super().source_columns(split), "tags": self.tag_column}

    def check_rows(self, kept: pd.DataFrame, frame: pd.DataFrame, params: CleanParams) -> RowChecks:
        """Tags as IOB2; a sentence whose tags do not pair with its words, or break the
        scheme, is dropped with the word at fault."""
        from transformer_pl.tasks.tag.rows import check_tagged_rows

        return check_tagged_rows(kept["text"], frame["tags"], self.tag_scheme)

    def validation_values(self, frame: pd.DataFrame) -> dict[str, Any]:
        from transformer_pl.tasks.tag.rows import tag_validation_values

        return tag_validation_values(frame)

    def expectations(self, clean: CleanParams) -> list[Any]:
        from transformer_pl.tasks.tag.rows import tag_expectations

        return tag_expectations()


class TagSettings(TaskSettingsBase):
    # The pretraining objectives that fit the tagger's encoder ("auto" picks the first); the
    # val metric promotion decides on (entity-level micro F1).
    pretraining_objectives: ClassVar[tuple[str, ...]] = ("ppmi_svd", "mlm")
    headline_metric: ClassVar[tuple[str, bool]] = ("val_f1", True)

    classifier_dropout: float = Field(0.1, ge=0, lt=1)  # before the per-token linear head
