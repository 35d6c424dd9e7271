"""Splitting: seeded, stratified selection; given splits kept; contiguous tails for LM corpora."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from transformer_pl.params import SplitParams
from transformer_pl.tasks.settings import dataset_spec
from transformer_pl.data import DEVELOPMENT_SPLITS, DataError, read_frames, write_frames
from transformer_pl.data.split import CARVED_VAL_CAVEAT, split_frames, stratified_selection

CLASSIFY = dataset_spec(
    task="classify",
    path="x",
    splits={"train": "t", "test": "t"},
    label_column="label",
    label_names=["a", "b", "c"],
)
LM = dataset_spec(task="lm", path="x", format="text", splits={"train": "t"})


def labeled(n: int, shares: tuple[float, ...] = (0.6, 0.3, 0.1)) -> pd.DataFrame:
    counts = [round(n * share) for share in shares]
    labels = np.repeat(np.arange(len(shares)), counts)
    return pd.DataFrame(
        {"row": np.arange(1, n + 1), "text": [f"t{i}" for i in range(n)], "label": labels}
    )


def test_stratified_selection_keeps_proportions_and_is_seeded():
    groups = np.array(["x"] * 700 + ["y"] * 290 + ["z"] * 10)
    chosen = stratified_selection(groups, 100, np.random.default_rng(1))
    assert len(chosen) == len(set(chosen)) == 100
    assert list(chosen) == sorted(chosen)
    assert {g: int((groups[chosen] == g).sum()) for g in "xyz"} == {"x": 70, "y": 29, "z": 1}
    again = stratified_selection(groups, 100, np.random.default_rng(1))
    other = stratified_selection(groups, 100, np.random.default_rng(2))
    assert np.array_equal(chosen, again) and not np.array_equal(chosen, other)


def test_val_is_carved_stratified_from_train_and_test_is_kept():
    train, test = labeled(1000), labeled(200)
    params = SplitParams(val_fraction=0.1)
    frames, report = split_frames({"train": train, "test": test}, CLASSIFY, params, seed=0)
    assert report["rows"] == {"train": 900, "val": 100, "test": 200}
    assert frames["test"].equals(test)
    assert frames["val"]["label"].value_counts().sort_index().tolist() == [60, 30, 10]
    assert set(frames["val"]["row"]).isdisjoint(frames["train"]["row"])
    assert len(set(frames["val"]["row"]) | set(frames["train"]["row"])) == 1000
    assert report["methods"]["val"] == "stratified sample of train (seed 0)"
    assert report["notes"] == [CARVED_VAL_CAVEAT]
    again, _ = split_frames({"train": train, "test": test}, CLASSIFY, params, seed=0)
    assert again["val"].equals(frames["val"])


def test_language_model_tails_are_contiguous_and_in_order():
    train = pd.DataFrame({"row": range(1, 101), "text": [f"line {i}" for i in range(100)]})
    params = SplitParams(val_fraction=0.1, test_fraction=0.2)
    frames, report = split_frames({"train": train}, LM, params, seed=0)
    assert frames["train"]["row"].tolist() == list(range(1, 71))
    assert frames["val"]["row"].tolist() == list(range(71, 81))
    assert frames["test"]["row"].tolist() == list(range(81, 101))
    assert report["methods"]["test"] == "contiguous tail of train"


def test_too_small_a_train_split_is_an_error():
    with pytest.raises(DataError, match="train has 3 rows: too few"):
        split_frames({"train": labeled(3, (1.0,))}, CLASSIFY, SplitParams(), seed=0)


def test_read_frames_reads_only_the_splits_asked_for(tmp_path):
    frames = {name: labeled(10) for name in ("train", "val", "test")}
    write_frames(frames, tmp_path / "splits")
    development = read_frames(tmp_path / "splits", DEVELOPMENT_SPLITS)
    assert list(development) == ["train", "val"]  # no unlabeled split here, and never test
    assert list(read_frames(tmp_path / "splits")) == ["train", "val", "test"]
