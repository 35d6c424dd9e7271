"""A training stage's loss curves as plots: `train_loss.csv` and `val_loss.csv` (`step,loss`)
for `dvc plots`, and `loss.png` for the MLflow run."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from transformer_pl.atomic import write_text_atomic

TRAIN_LOSS_CSV, VAL_LOSS_CSV, LOSS_PNG = "train_loss.csv", "val_loss.csv", "loss.png"
CURVE_FILES = {"train": TRAIN_LOSS_CSV, "val": VAL_LOSS_CSV}
CURVE_SPLITS = tuple(CURVE_FILES)

Curves = Mapping[str, Sequence[Sequence[float]]]  # split -> [[step, loss], ...]


def write_loss_curves(folder: Path, curves: Curves, title: str) -> None:
    """Replace `folder` with the curves' CSV files (a header alone for a stage that trained
    nothing, so the plot files always exist) and, when there is a point, their PNG."""
    if folder.exists():
        shutil.rmtree(folder)
    for split, name in CURVE_FILES.items():
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["step", "loss"])
        writer.writerows(curves.get(split, ()))
        write_text_atomic(folder / name, text.getvalue())
    if any(curves.get(split) for split in CURVE_FILES):
        _plot(curves, title, folder / LOSS_PNG)


def _plot(curves: Curves, title: str, path: Path) -> None:
    from matplotlib.figure import Figure  # a bare Figure renders through Agg: no display

    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    for split, points in curves.items():
        if points:
            steps, losses = zip(*points, strict=True)
            axes.plot(steps, losses, marker="o" if split == "val" else None, label=split)
    axes.set(xlabel="optimizer step", ylabel="loss", title=title)
    axes.legend()
    figure.tight_layout()
    temporary = path.with_name(f".{path.name}.tmp")
    figure.savefig(temporary, format="png")
    temporary.replace(path)
