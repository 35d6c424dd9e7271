"""What every task shares: the inner model, its optimiser, epoch metrics, and the weights export.

A task is a LightningModule around one plain `nn.Module` from `transformer_pl.model`, kept as
`self.model` (with its `TransformerConfig` as `self.config`). Hyper-parameters are saved as JSON
values (`model_config` as TransformerConfig.to_dict(), `optim` as OptimParams fields), so
`Task.load_from_checkpoint(path)` rebuilds the task from the checkpoint alone.

Export format (`export_weights`): the bundle format of transformer_pl/bundle.py —
- `model.safetensors`: the inner model's state_dict, every name present (tied tensors are
  written once per name), so it loads with `load_state_dict(strict=True)`.
- `config.json`: {"task": <dataset task>, or "objective": <pretraining objective>,
                  "model": TransformerConfig.to_dict(), ...module fields, ...caller's metadata}.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only
from safetensors.torch import save_file
from torch import Tensor, nn

from transformer_pl.bundle import CONFIG_FILE, WEIGHTS_FILE
from transformer_pl.lightning.metrics import ClassificationMetrics, TokenPredictionMetrics
from transformer_pl.lightning.optim import configure_adamw
from transformer_pl.model import (
    LMOutput,
    TransformerConfig,
)
from transformer_pl.stage_sections import OptimParams

# What an export is, as its config.json says: ("task", a dataset task's name) for a model
# finetune trains, ("objective", a pretraining objective) for one only pretrain trains.
ExportKind = tuple[Literal["task", "objective"], str]
EpochMetrics = TokenPredictionMetrics | ClassificationMetrics
Batch = Mapping[str, Tensor]  # what the datamodules yield, keyed as the model's arguments


class TransformerModule(pl.LightningModule):
    """Base of the tasks: subclasses build `self.model` and `self.eval_metrics`, and implement
    the steps; this class owns the config, the optimiser, epoch logging and the export."""

    exported_as: ClassVar[ExportKind]
    model: nn.Module
    eval_metrics: nn.ModuleDict  # "val" and "test" -> EpochMetrics, built by the subclass

    def __init__(
        self,
        model_config: TransformerConfig | Mapping[str, Any],
        optim: OptimParams | Mapping[str, Any] | None,
        **task_options: Any,
    ) -> None:
        super().__init__()
        self.config = (
            model_config
            if isinstance(model_config, TransformerConfig)
            else TransformerConfig.from_dict(model_config)
        )
        self.optim = optim if isinstance(optim, OptimParams) else OptimParams(**(optim or {}))
        self.save_hyperparameters(
            {
                "model_config": self.config.to_dict(),
                "optim": self.optim.model_dump(mode="json"),
                **task_options,
            }
        )

    def lr_scales(self) -> dict[int, float] | None:
        """Per-parameter learning-rate multipliers (by id); None: one learning rate."""
        return None

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adamw(
            self.model, self.optim, self.trainer.estimated_stepping_batches, self.lr_scales()
        )

    # --- steps ------------------------------------------------------------------------------

    def _step(self, batch: Batch, training: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Loss, predictions and their targets; `training` turns on training-only loss terms
        (label smoothing), so val/test report the plain cross-entropy."""
        raise NotImplementedError

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, predictions, targets = self._step(batch, training=True)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/accuracy", (predictions == targets).float().mean())
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.eval_metrics["val"].update(*self._step(batch, training=False))

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.eval_metrics["test"].update(*self._step(batch, training=False))

    # --- epoch metrics -----------------------------------------------------------------------

    def _log_epoch_metrics(self, stage: str) -> None:
        metrics: EpochMetrics = self.eval_metrics[stage]
        # torchmetrics has already reduced across devices: every rank holds the same values.
        for name, value in metrics.compute().items():
            self.log(f"{stage}/{name}", value, sync_dist=True, prog_bar=name == "loss")
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    # --- export -------------------------------------------------------------------------------

    def export_info(self) -> dict[str, Any]:
        """Task fields written to config.json besides the task name and the model config."""
        return {}

    @rank_zero_only
    def export_weights(self, directory: str | Path, **metadata: Any) -> Path:
        """Write `model.safetensors` and `config.json` into `directory` (on rank 0 only; other
        ranks get None); returns the weights path. `metadata`: more JSON fields for config.json,
        e.g. the classifier bundle's `max_length` (the encode stage's truncation length)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # Cloning gives every name its own storage: safetensors refuses tensors that share one.
        state = {
            name: tensor.detach().cpu().clone().contiguous()
            for name, tensor in self.model.state_dict().items()
        }
        weights_path = directory / WEIGHTS_FILE
        save_file(state, weights_path)
        config = {
            self.exported_as[0]: self.exported_as[1],
            "model": self.config.to_dict(),
            **self.export_info(),
            **metadata,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return weights_path


class LanguageModelModule(TransformerModule):
    """A task predicting tokens of its input (masked or next): `model_class` over the config,
    token-prediction metrics for val and test. Subclasses set the class and define `_step`."""

    model_class: ClassVar[type[nn.Module]]

    def __init__(
        self,
        model_config: TransformerConfig | Mapping[str, Any],
        optim: OptimParams | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(model_config, optim)
        self.model = self.model_class(self.config)
        self.eval_metrics = nn.ModuleDict(
            {stage: TokenPredictionMetrics(self.config.vocab_size) for stage in ("val", "test")}
        )

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None
    ) -> LMOutput:
        return self.model(input_ids, attention_mask, labels)
