"""Split: train / val / test from the cleaned splits, seeded and (for labels) stratified.

- A split the source provides is kept as given (IMDB's and SST-2's test, WikiText's val/test).
- A missing val (and test) is carved from train: a seeded sample, stratified by label for
  classification, rows kept in source order. SST-2's train holds phrases of the same sentences,
  so a val carved from it shares sentences with train and overstates accuracy; its reported
  test set is the GLUE dev split.
- Rows of one group (the spec's group_column; QA: the questions on one paragraph) are carved
  together: whole groups, in a seeded order, until the split has its share of rows.
- Language-model corpora are contiguous text: a random line-wise split would put the neighbours of
  every val line in train. Missing val/test are the tails instead: train | val | test, in order.
- `unlabeled` passes through unchanged.

`stratified_selection` is also how clean samples `max_rows_per_split`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from transformer_pl.params import DatasetSpec, SplitParams
from transformer_pl.data import DataError, ordered_splits

CARVED_VAL_CAVEAT = (
    "val was carved from train: where training rows are not independent (SST-2's rows are "
    "phrases of shared sentences) val scores run higher than test scores"
)


def stratified_selection(groups: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` sorted positions drawn without replacement, each group (a label) represented in
    proportion to its size (largest-remainder rounding)."""
    names, group_of, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    quotas = sizes * n / sizes.sum()
    take = np.floor(quotas).astype(int)
    leftover = n - int(take.sum())
    take[np.argsort(take - quotas, kind="stable")[:leftover]] += 1
    chosen = [
        rng.choice(np.flatnonzero(group_of == group), size=take[group], replace=False)
        for group in range(len(names))
    ]
    return np.sort(np.concatenate(chosen)).astype(int)


def random_selection(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(size, size=n, replace=False)).astype(int)


def group_selection(groups: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of whole groups, taken in a seeded order until at least `n` rows."""
    names, group_of, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    order = rng.permutation(len(names))
    taken = order[: int(np.searchsorted(np.cumsum(sizes[order]), n)) + 1]
    return np.flatnonzero(np.isin(group_of, taken)).astype(int)


def split_frames(
    clean: dict[str, pd.DataFrame], spec: DatasetSpec, params: SplitParams, seed: int
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The final splits and a report of how each was made."""
    train = clean["train"].reset_index(drop=True)
    carve = {
        name: round(len(train) * fraction)
        for name, fraction in (("val", params.val_fraction), ("test", params.test_fraction))
        if name not in clean
    }
    if 0 in carve.values() or sum(carve.values()) >= len(train):
        sizes = ", ".join(f"{name} {size}" for name, size in carve.items())
        raise DataError(f"train has {len(train)} rows: too few to carve {sizes} rows from it")
    methods = {name: "as given by the source" for name in clean}
    if spec.corpus:
        carved = _tails(train, carve)
        methods.update({name: "contiguous tail of train" for name in carve})
    else:
        stratify = spec.labelled and params.stratify
        carved = _sample(train, carve, stratify, spec.group_column, np.random.default_rng(seed))
        how = "stratified sample" if stratify else "random sample"
        if spec.group_column:
            how = f"random sample of whole groups of '{spec.group_column}'"
        methods.update({name: f"{how} of train (seed {seed})" for name in carve})
    emptied = [name for name, frame in carved.items() if frame.empty]
    if emptied:
        raise DataError(
            f"carving val/test from train's {len(train)} rows left {', '.join(emptied)} "
            f"empty (whole groups of '{spec.group_column}' are carved together): lower "
            "split.val_fraction/test_fraction or add training data"
        )
    frames = {**clean, **carved}
    frames = {name: frames[name].reset_index(drop=True) for name in ordered_splits(frames)}
    report: dict[str, Any] = {
        "rows": {name: len(frame) for name, frame in frames.items()},
        "methods": methods,
    }
    if spec.labelled:
        report["label_counts"] = {
            name: {
                spec.label_names[label]: int(count)  # type: ignore[index]
                for label, count in frame["label"].value_counts().sort_index().items()
            }
            for name, frame in frames.items()
            if "label" in frame
        }
    if "val" in carve and spec.labelled:
        report["notes"] = [CARVED_VAL_CAVEAT]
    return frames, report


def _tails(train: pd.DataFrame, carve: dict[str, int]) -> dict[str, pd.DataFrame]:
    """train | val | test, cut in source order."""
    end = len(train)
    pieces = {}
    for name in ("test", "val"):  # from the end backwards
        if name in carve:
            pieces[name] = train.iloc[end - carve[name] : end]
            end -= carve[name]
    pieces["train"] = train.iloc[:end]
    return pieces


def _sample(
    train: pd.DataFrame,
    carve: dict[str, int],
    stratify: bool,
    group_column: str | None,
    rng: np.random.Generator,
) -> dict[str, pd.DataFrame]:
    remaining = train
    pieces = {}
    for name in ("test", "val"):
        if name not in carve:
            continue
        if group_column:
            positions = group_selection(remaining[group_column].to_numpy(), carve[name], rng)
        elif stratify:
            positions = stratified_selection(remaining["label"].to_numpy(), carve[name], rng)
        else:
            positions = random_selection(len(remaining), carve[name], rng)
        pieces[name] = remaining.iloc[positions]
        remaining = remaining.drop(remaining.index[positions])
    pieces["train"] = remaining
    return pieces
