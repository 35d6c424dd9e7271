"""params.yaml for translation: its datasets' spec (`datasets.<name>` with task translate) and
`tasks.translate`, how a translator is trained."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from transformer_pl.dataset_spec import TABLE_FORMATS, DatasetSpecBase, FileFormat, RowChecks
from transformer_pl.task_settings import TaskSettingsBase

if TYPE_CHECKING:
    import pandas as pd

    from transformer_pl.stage_sections import CleanParams


class TranslateDataset(DatasetSpecBase):
    """Sentence pairs: a table with a source and a target column, or `parallel_text` files, one
    per language, whose file name holds a `{lang}` placeholder filled with each language."""

    parallel: ClassVar[bool] = True
    columns: ClassVar[tuple[str, ...]] = ("target",)
    example_columns: ClassVar[tuple[str, ...]] = ("text", "target")
    validation_columns: ClassVar[tuple[str, ...]] = ("length_ratio",)
    formats: ClassVar[tuple[FileFormat, ...]] = (*TABLE_FORMATS, "parallel_text")

    task: Literal["translate"]
    source_language: str
    target_language: str
    target_column: str | None = None  # a table's target-language column

    @model_validator(mode="after")
    def _target_named(self) -> TranslateDataset:
        if self.format != "parallel_text" and not self.target_column:
            raise ValueError(f"task 'translate' from {self.format} files needs target_column")
        return self

    def source_columns(self, split: str) -> dict[str, str]:
        return {**super().source_columns(split), "target": self.target_column or "target"}

    @property
    def sides(self) -> tuple[str, str]:  # type: ignore[override]
        return (self.source_language, self.target_language)

    def check_rows(self, kept: pd.DataFrame, frame: pd.DataFrame, params: CleanParams) -> RowChecks:
        """A pair whose one side is more than clean.max_length_ratio times the other (in
        characters) is dropped: `length_ratio` (a misaligned or partial translation)."""
        from transformer_pl.data.clean import length_ratio

        ratio = length_ratio(kept["text"], kept["target"])
        detail = "length ratio " + ratio.round(1).astype(str) + f" > {params.max_length_ratio}"
        return RowChecks(problems=[(ratio > params.max_length_ratio, "length_ratio", detail)])

    def validation_values(self, frame: pd.DataFrame) -> dict[str, Any]:
        from transformer_pl.data.clean import length_ratio

        return {"length_ratio": length_ratio(frame["text"], frame["target"])}

    def expectations(self, clean: CleanParams) -> list[Any]:
        import great_expectations.expectations as gxe

        return [
            gxe.ExpectColumnValuesToBeBetween(
                column="length_ratio", min_value=1, max_value=clean.max_length_ratio
            )
        ]

    @property
    def model_name_suffix(self) -> str:
        """A model per direction: de→en and en→de scores do not compare."""
        return f"-{self.source_language}-{self.target_language}"


class TranslateSettings(TaskSettingsBase):
    # A translator is not pretrained; promotion decides on val BLEU.
    headline_metric: ClassVar[tuple[str, bool]] = ("val_bleu", True)
    decodes: ClassVar[bool] = True

    label_smoothing: float = Field(0.1, ge=0, lt=1)  # the original Transformer's
