"""What every dataset spec (`datasets.<name>` in params.yaml) says, whatever its task: where the
data comes from and which column holds the text. Each task's spec (tasks/<task>/settings.py)
adds its own columns and tells the data stages what its rows are (the class flags below)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath
from typing import ClassVar, Literal

from pydantic import model_validator

from transformer_pl.section import Section

FileFormat = Literal["csv", "tsv", "jsonl", "parquet", "text", "parallel_text"]
TABLE_FORMATS: tuple[FileFormat, ...] = ("csv", "tsv", "jsonl", "parquet")


class DatasetSpecBase(Section):
    """`splits` maps a canonical split (train, val, test, unlabeled) to a file name relative to
    `path` (local source) or to the Hub split name (hub source)."""

    # What the data stages do with the rows of the task's datasets. labelled: each row carries
    # a class (stratified sampling and splits, class-balance checks); parallel: each row pairs a
    # source text with a target text; corpus: rows are the lines of one running text (sampled
    # and split as contiguous windows, never deduplicated).
    labelled: ClassVar[bool] = False
    parallel: ClassVar[bool] = False
    corpus: ClassVar[bool] = False
    columns: ClassVar[tuple[str, ...]] = ()  # canonical columns besides `text`
    formats: ClassVar[tuple[FileFormat, ...]] = TABLE_FORMATS  # the file formats it reads

    task: str
    source: Literal["local", "hub"] = "local"
    hub_id: str | None = None
    hub_config: str | None = None
    path: str | None = None
    format: FileFormat = "csv"
    splits: dict[Literal["train", "val", "test", "unlabeled"], str]
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


def _inside_the_dataset_folder(path: str, splits: Mapping[str, str]) -> None:
    """A local dataset reads only below its folder: split file names are relative and never
    climb out with `..`, and a relative folder never climbs out of where it is looked up (an
    absolute folder is the user's explicit choice)."""
    if ".." in PurePath(path).parts:
        raise ValueError(f"path {path!r} climbs out with '..': name the folder itself")
    for split, name in splits.items():
        parts = PurePath(name).parts
        if PurePath(name).is_absolute() or ".." in parts:
            raise ValueError(
                f"splits.{split} {name!r} leaves the dataset folder: give a file name relative "
                "to path (set path to the folder that holds it)"
            )
