"""Every pipeline stage, in run order. Runners (DVC via `tpl stage`, Prefect) look them up here."""

from __future__ import annotations

from transformer_pl.stages import data, evaluation, training
from transformer_pl.stages.base import StageError, StageSpec
from transformer_pl.stages.layout import Layout

STAGES: dict[str, StageSpec] = {
    stage.name: stage for stage in (*data.STAGES, *training.STAGES, *evaluation.STAGES)
}

__all__ = ["STAGES", "Layout", "StageError", "StageSpec"]
