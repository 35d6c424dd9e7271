"""params.yaml for extractive question answering: its datasets' spec (`datasets.<name>` with
task qa) and `tasks.qa`, how questions and contexts are windowed and answers picked."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from transformer_pl.dataset_spec import DatasetSpecBase, FileFormat, RowChecks
from transformer_pl.task_settings import TaskSettingsBase

if TYPE_CHECKING:
    import pandas as pd

    from transformer_pl.stage_sections import CleanParams


class QADataset(DatasetSpecBase):
    """Questions on paragraphs, each with its answers as spans of the paragraph: SQuAD v1.1
    JSON files (`squad_json`), or a table like the Hub's SQuAD (context, question, answers as
    {"text": [...], "answer_start": [...]}). `text` is the paragraph, kept byte for byte."""

    extractive: ClassVar[bool] = True
    columns: ClassVar[tuple[str, ...]] = ("question", "answers", "id", "title")
    formats: ClassVar[tuple[FileFormat, ...]] = ("squad_json", "jsonl", "parquet")
    example_columns: ClassVar[tuple[str, ...]] = ("text", "question")
    group_column: ClassVar[str | None] = "text"
    normalised_text: ClassVar[bool] = False
    validation_columns: ClassVar[tuple[str, ...]] = ("answers_in_context", "answer_count")

    task: Literal["qa"]
    format: FileFormat = "squad_json"
    text_column: str = "context"  # a table's columns (squad_json files name them themselves)
    question_column: str = "question"
    answers_column: str = "answers"
    id_column: str = "id"
    title_column: str = "title"

    def source_columns(self, split: str) -> dict[str, str]:
        return {
            **super().source_columns(split),
            "question": self.question_column,
            "answers": self.answers_column,
            "id": self.id_column,
            "title": self.title_column,
        }

    def check_rows(self, kept: pd.DataFrame, frame: pd.DataFrame, params: CleanParams) -> RowChecks:
        """Questions normalised like text; every answer a span of its context; ids unique."""
        from transformer_pl.tasks.qa.rows import check_question_rows

        return check_question_rows(kept["text"], frame)

    def validation_values(self, frame: pd.DataFrame) -> dict[str, Any]:
        from transformer_pl.tasks.qa.rows import question_validation_values

        return question_validation_values(frame)

    def expectations(self, clean: CleanParams) -> list[Any]:
        from transformer_pl.tasks.qa.rows import question_expectations

        return question_expectations()


class QASettings(TaskSettingsBase):
    # The pretraining objectives that fit the reader's encoder ("auto" picks the first); the
    # val metric promotion decides on (SQuAD F1).
    pretraining_objectives: ClassVar[tuple[str, ...]] = ("ppmi_svd", "mlm")
    headline_metric: ClassVar[tuple[str, bool]] = ("val_f1", True)

    max_answer_tokens: int = Field(30, gt=0)  # the longest span an answer may be
    # Sliding-window baseline: candidate answers are spans of up to this many words.
    baseline_max_candidate_words: int = Field(5, gt=0)
    classifier_dropout: float = Field(0.1, ge=0, lt=1)  # before the start/end layer
