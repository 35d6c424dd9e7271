"""The data path: sources → ingest → clean → validate → split → tokenizer → encode → datamodules.

Between stages a dataset travels as a folder of per-split Parquet files (`train.parquet`,
`val.parquet`, ...). This module holds that folder format and the error every data module raises;
the stage functions turn `DataError` into `StageError`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

# Canonical split names, in the order reports list them.
SPLIT_ORDER = ("train", "val", "test", "unlabeled")
TRAINING_SPLITS = ("train", "unlabeled")  # text a model may learn from
HELDOUT_SPLITS = ("val", "test")
# What every stage after split but evaluate may read: test is read once, by evaluate alone.
DEVELOPMENT_SPLITS = ("train", "val", "unlabeled")


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, split or column at fault."""


def ordered_splits(names: object) -> list[str]:
    """Split names in canonical order (unknown names last, alphabetically)."""
    names = list(names)  # type: ignore[call-overload]
    known = [name for name in SPLIT_ORDER if name in names]
    return known + sorted(name for name in names if name not in SPLIT_ORDER)


def write_frames(frames: Mapping[str, pd.DataFrame], folder: Path) -> None:
    """Replace `folder` with one `<split>.parquet` per frame (no stale split survives)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for split, frame in frames.items():
        frame.to_parquet(folder / f"{split}.parquet", index=False)


def read_frames(folder: Path, splits: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
    """The split files in `folder`, or only those of `splits` that it holds: a stage reads the
    splits it may use and never opens the others' files."""
    files = {path.stem: path for path in folder.glob("*.parquet")}
    if not files:
        raise DataError(f"no split files (*.parquet) in {folder}; run the previous stage first")
    wanted = files if splits is None else [split for split in splits if split in files]
    return {split: pd.read_parquet(files[split]) for split in ordered_splits(wanted)}
