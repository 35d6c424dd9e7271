"""What a task is to the pipeline: the one interface the stages dispatch through.

A task (classify, lm, translate, ...) owns everything that differs between applications: what
finetune trains and on what, how its model is scored beside its baselines, how two versions of
it are compared on the same val rows, and how its registered model answers requests. The stages
know nothing task-specific: they look the dataset's task up in `transformer_pl.tasks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import lightning.pytorch as pl
    import pandas as pd

    from transformer_pl.model import TransformerConfig
    from transformer_pl.params import Params
    from transformer_pl.stages.layout import Layout

# (metrics, samples, per-example predictions by split): what a task's evaluation returns.
Evaluation = tuple[dict[str, Any], list[dict[str, Any]], dict[str, "pd.DataFrame"]]
SCORED_SPLITS = ("val", "test")


@dataclass
class Recipe:
    """How finetune trains one task's model: the Lightning module (built after the trainer has
    seeded everything), its data, the validation metric that picks the best checkpoint, and the
    fields the exported bundle's config.json gets."""

    build_module: Callable[[], pl.LightningModule]
    datamodule: pl.LightningDataModule
    export_metadata: dict[str, Any]
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    loaded: dict[str, list[str]] = field(default_factory=dict)  # pretrained keys, when loaded
    summary: dict[str, Any] = field(default_factory=dict)  # what was done before fitting


@dataclass(frozen=True)
class Task:
    """One application of the Transformer, as the stages see it: its name (as datasets name it,
    `datasets.<name>.task`, and bundles record it) and the functions that differ by task."""

    name: str
    # What the finetune stage fits: the task's module (from the pretrained weights in the
    # layout when params ask for them) and its data.
    finetune_recipe: Callable[[Params, Layout, TransformerConfig], Recipe]
    # Val and test metrics of the finetuned bundle and of the task's baselines, through the code
    # the registered model serves with; the frames hold train, val and test.
    evaluate: Callable[[Params, Layout, dict[str, pd.DataFrame], Path], Evaluation]
    # `val_<headline>_minus_champion` and its 95% interval, from two versions' val predictions
    # (evaluate's predictions/val.parquet) on the same rows: (ours, theirs, resamples, seed).
    paired_val_difference: Callable[[pd.DataFrame, pd.DataFrame, int, int], dict[str, float]]
    # Fields the registered bundle's config.json gets beyond the trained one's (what evaluate
    # fitted, how to decode), from params and evaluate's metrics.
    registered_fields: Callable[[Params, dict[str, Any]], dict[str, Any]]
    # The mlflow.pyfunc.PythonModel class that serves the task's bundles.
    pyfunc_model: type
