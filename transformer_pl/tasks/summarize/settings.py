"""params.yaml for summarization: its datasets' spec (`datasets.<name>` with task summarize) and
`tasks.summarize`, how a summarizer is trained."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from transformer_pl.dataset_spec import TABLE_FORMATS, DatasetSpecBase, FileFormat, RowChecks
from transformer_pl.task_settings import TaskSettingsBase

if TYPE_CHECKING:
    import pandas as pd

    from transformer_pl.stage_sections import CleanParams


class SummarizeDataset(DatasetSpecBase):
    """Sources with their reference summaries: a table (JSON Lines by default) with a source and
    a summary column. A source's line breaks (a dialogue's turns) are kept: each turn is
    normalised on its own and the turns stay one per line."""

    parallel: ClassVar[bool] = True
    columns: ClassVar[tuple[str, ...]] = ("target",)
    formats: ClassVar[tuple[FileFormat, ...]] = TABLE_FORMATS
    example_columns: ClassVar[tuple[str, ...]] = ("text", "target")
    multiline_text: ClassVar[bool] = True
    sides: ClassVar[tuple[str, str]] = ("sources", "summaries")
    validation_columns: ClassVar[tuple[str, ...]] = ("summary_to_source",)

    task: Literal["summarize"]
    format: FileFormat = "jsonl"
    text_column: str = "dialogue"
    target_column: str = "summary"

    def source_columns(self, split: str) -> dict[str, str]:
        return {**super().source_columns(split), "target": self.target_column}

    def check_rows(self, kept: pd.DataFrame, frame: pd.DataFrame, params: CleanParams) -> RowChecks:
        """A summary longer than its source (in characters) is dropped: `summary_too_long`."""
        ratio = summary_to_source(kept["text"], kept["target"])
        detail = "summary " + ratio.round(2).astype(str) + " times its source's length"
        return RowChecks(problems=[(ratio > 1, "summary_too_long", detail)])

    def validation_values(self, frame: pd.DataFrame) -> dict[str, Any]:
        return {"summary_to_source": summary_to_source(frame["text"], frame["target"])}

    def expectations(self, clean: CleanParams) -> list[Any]:
        import great_expectations.expectations as gxe

        return [
            gxe.ExpectColumnValuesToBeBetween(column="summary_to_source", min_value=0, max_value=1)
        ]


def summary_to_source(text: pd.Series, target: pd.Series) -> pd.Series:
    """Characters of the summary over its source's (an empty source counts as 1)."""
    return target.str.len() / text.str.len().clip(lower=1)


class SummarizeSettings(TaskSettingsBase):
    # A summarizer is not pretrained; promotion decides on val ROUGE-L.
    headline_metric: ClassVar[tuple[str, bool]] = ("val_rougeL", True)
    decodes: ClassVar[bool] = True

    label_smoothing: float = Field(0.1, ge=0, lt=1)
    # Extractive baselines: the first and the longest this many lines (turns) of the source.
    baseline_lines: int = Field(3, ge=1)
