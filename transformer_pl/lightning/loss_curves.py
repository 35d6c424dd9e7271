"""Records training and validation loss by optimizer step while a stage trains; written out
as the stage's plots by `transformer_pl.loss_curve_files`. Kept in the checkpoint, so a resumed
run continues the curves of the run it resumes."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from transformer_pl.loss_curve_files import CURVE_SPLITS

LOGGED_LOSS = {"train": "train/loss", "val": "val/loss"}  # what the modules log


class LossCurves(Callback):
    """Records the logged `train/loss` every `log_every_n_steps` optimizer steps and
    `val/loss` after every validation (the sanity check excluded)."""

    def __init__(self) -> None:
        self.points: dict[str, list[list[float]]] = {split: [] for split in CURVE_SPLITS}

    def _record(self, trainer: pl.Trainer, split: str) -> None:
        value = trainer.callback_metrics.get(LOGGED_LOSS[split])
        points = self.points[split]
        if value is None or (points and points[-1][0] == trainer.global_step):
            return
        points.append([trainer.global_step, round(float(value), 6)])

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            self._record(trainer, "train")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, "val")

    def state_dict(self) -> dict[str, Any]:
        return {"points": self.points}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.points = {split: list(state_dict["points"].get(split, [])) for split in CURVE_SPLITS}
