"""What every dataset spec (`datasets.<name>` in params.yaml) says, whatever its task: where the
data comes from and which column holds the text. Each task's spec (tasks/<task>/settings.py)
adds its own columns and tells the data stages what its rows are (the class flags below)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import model_validator

from transformer_pl.section import Section

if TYPE_CHECKING:
    import pandas as pd

    from transformer_pl.stage_sections import CleanParams

FileFormat = Literal[
    "csv", "tsv", "jsonl", "parquet", "text", "parallel_text", "conll", "squad_json"
]
TABLE_FORMATS: tuple[FileFormat, ...] = ("csv", "tsv", "jsonl", "parquet")


class DatasetSpecBase(Section):
    """`splits` maps a canonical split (train, val, test, unlabeled) to a file name relative to
    `path` (local source; a list of names: their records one after the other) or to the Hub
    split name (hub source)."""

    # What the data stages do with the rows of the task's datasets. labelled: each row carries
    # a class (stratified sampling and splits, class-balance checks); parallel: each row pairs a
    # source text with a target text; corpus: rows are the lines of one running text (sampled
    # and split as contiguous windows, never deduplicated).
    labelled: ClassVar[bool] = False
    parallel: ClassVar[bool] = False
    corpus: ClassVar[bool] = False
    # tagged: each row's words carry one tag each (`tags`), predicted word by word.
    tagged: ClassVar[bool] = False
    # extractive: each row asks a question whose answers are spans of its text (QA).
    extractive: ClassVar[bool] = False
    # Computed from a cleaned split for the task's expectations only (validation_values).
    validation_columns: ClassVar[tuple[str, ...]] = ()
    # What makes two rows the same example (duplicates; unique in validation).
    example_columns: ClassVar[tuple[str, ...]] = ("text",)
    # Rows sharing this column's value stay in one split when val/test are carved from train
    # (QA: a paragraph's questions); None: rows are carved one by one.
    group_column: ClassVar[str | None] = None
    # Clean normalises `text` (HTML, Unicode, whitespace); False keeps it byte for byte (QA:
    # answers are character offsets into it).
    normalised_text: ClassVar[bool] = True
    # Line breaks in `text` are structure (a dialogue's turns): each line is normalised on its
    # own and they stay joined by "\n".
    multiline_text: ClassVar[bool] = False
    # What the two sides of a parallel dataset hold, for reports (translate: the languages).
    sides: ClassVar[tuple[str, str]] = ("source", "target")
    columns: ClassVar[tuple[str, ...]] = ()  # canonical columns besides `text`
    formats: ClassVar[tuple[FileFormat, ...]] = TABLE_FORMATS  # the file formats it reads

    task: str
    source: Literal["local", "hub"] = "local"
    hub_id: str | None = None
    hub_config: str | None = None
    path: str | None = None
    format: FileFormat = "csv"
    splits: dict[Literal["train", "val", "test", "unlabeled"], str | list[str]]
    text_column: str = "text"
    quoting: Literal["minimal", "none"] = "minimal"  # csv/tsv: "none" reads quotes as text

    @model_validator(mode="after")
    def _where_it_comes_from(self) -> DatasetSpecBase:
        if self.source == "hub" and not self.hub_id:
            raise ValueError("source 'hub' needs hub_id (e.g. 'stanfordnlp/imdb')")
        if self.source == "local" and not self.path:
            raise ValueError(
                "source 'local' needs path (a folder; relative paths are looked up "
                "under $TPL_DATA_DIR, then the project root)"
            )
        if self.format not in self.formats:
            raise ValueError(
                f"format '{self.format}' is not read for task '{self.task}'; allowed: "
                f"{', '.join(self.formats)}"
            )
        if "train" not in self.splits:
            raise ValueError("splits needs a 'train' entry")
        several = [split for split, names in self.splits.items() if isinstance(names, list)]
        if several and (self.source == "hub" or self.format == "parallel_text"):
            raise ValueError(
                f"splits.{several[0]} lists several files: only local sources read several "
                "files per split (not the Hub, not parallel_text)"
            )
        if self.source == "local":
            _inside_the_dataset_folder(self.path or "", self.splits)
        return self

    def source_columns(self, split: str) -> dict[str, str]:
        """Canonical column -> the file's column, for the rows of `split`."""
        return {"text": self.text_column}

    @property
    def model_name_suffix(self) -> str:
        """What the default registered model name adds after the dataset's name."""
        return ""

    def check_rows(self, kept: pd.DataFrame, frame: pd.DataFrame, params: CleanParams) -> RowChecks:
        """Clean's task checks, after the text (and a parallel dataset's target) is normalised
        (`kept`: text, target): the task's columns as kept, and the rows to drop with their
        reason. `frame` holds the columns as read."""
        return RowChecks()

    def validation_values(self, frame: pd.DataFrame) -> dict[str, Any]:
        """The `validation_columns`, computed from a cleaned split."""
        return {}

    def expectations(self, clean: CleanParams) -> list[Any]:
        """The task's Great Expectations expectations over every split (and its
        validation_columns)."""
        return []


@dataclass
class RowChecks:
    """What a task's clean checks found: its columns as kept (normalised) and, per reason,
    the rows to drop: (mask over the split's rows, reason, detail for every row or one)."""

    columns: dict[str, pd.Series] = field(default_factory=dict)
    problems: list[tuple[pd.Series, str, pd.Series | str]] = field(default_factory=list)


def split_files(names: str | list[str]) -> list[str]:
    """A split's file names (one or several)."""
    return [names] if isinstance(names, str) else list(names)


def _inside_the_dataset_folder(path: str, splits: Mapping[str, str | list[str]]) -> None:
    """A local dataset reads only below its folder: split file names are relative and never
    climb out with `..`, and a relative folder never climbs out of where it is looked up (an
    absolute folder is the user's explicit choice)."""
    if ".." in PurePath(path).parts:
        raise ValueError(f"path {path!r} climbs out with '..': name the folder itself")
    for split, names in splits.items():
        for name in split_files(names):
            if PurePath(name).is_absolute() or ".." in PurePath(name).parts:
                raise ValueError(
                    f"splits.{split} {name!r} leaves the dataset folder: give a file name "
                    "relative to path (set path to the folder that holds it)"
                )
