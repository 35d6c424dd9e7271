"""A training stage's loss curves: what the callback records, and the plot files written."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import torch

from transformer_pl.lightning.loss_curves import LossCurves
from transformer_pl.loss_curve_files import (
    LOSS_PNG,
    TRAIN_LOSS_CSV,
    VAL_LOSS_CSV,
    write_loss_curves,
)


def _trainer(step: int, sanity_checking: bool = False, **logged: float) -> SimpleNamespace:
    metrics = {key.replace("_", "/"): torch.tensor(value) for key, value in logged.items()}
    return SimpleNamespace(
        global_step=step,
        log_every_n_steps=2,
        sanity_checking=sanity_checking,
        callback_metrics=metrics,
    )


def test_the_callback_records_train_loss_every_log_interval_and_val_loss_after_validation():
    curves = LossCurves()
    for step, loss in ((1, 2.0), (2, 1.5), (2, 1.4), (3, 1.2), (4, 1.0)):
        curves.on_train_batch_end(_trainer(step, train_loss=loss), None)
    curves.on_validation_end(_trainer(0, sanity_checking=True, val_loss=9.0), None)
    curves.on_validation_end(_trainer(4, val_loss=1.1), None)
    assert curves.points == {"train": [[2, 1.5], [4, 1.0]], "val": [[4, 1.1]]}
    # Resumed from a checkpoint, the curves go on from where they were.
    resumed = LossCurves()
    resumed.load_state_dict(curves.state_dict())
    assert resumed.points == curves.points


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def test_the_plot_files_hold_the_curves_and_a_stage_that_trained_nothing_has_empty_ones(
    tmp_path: Path,
):
    folder = tmp_path / "plots" / "finetune"
    write_loss_curves(folder, {"train": [[2, 1.5], [4, 1.0]], "val": [[4, 1.1]]}, "finetune")
    assert _rows(folder / TRAIN_LOSS_CSV) == [["step", "loss"], ["2", "1.5"], ["4", "1.0"]]
    assert _rows(folder / VAL_LOSS_CSV) == [["step", "loss"], ["4", "1.1"]]
    assert (folder / LOSS_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    write_loss_curves(folder, {}, "nothing trained")
    assert _rows(folder / TRAIN_LOSS_CSV) == [["step", "loss"]]
    assert sorted(path.name for path in folder.iterdir()) == [TRAIN_LOSS_CSV, VAL_LOSS_CSV]
