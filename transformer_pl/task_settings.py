"""What every task's `tasks.<task>` section tells the pipeline besides its own keys."""

from __future__ import annotations

from typing import ClassVar

from transformer_pl.dataset_spec import DatasetSpecBase
from transformer_pl.section import Section


class TaskSettingsBase(Section):
    # The pretraining objectives that fit the task's model, the first being what
    # pretrain.objective "auto" picks (none: finetune trains from scratch).
    pretraining_objectives: ClassVar[tuple[str, ...]] = ()
    # The val metric promotion decides on, and whether greater is better.
    headline_metric: ClassVar[tuple[str, bool]]
    input_length_key: ClassVar[str] = "encode.max_length"  # what bounds one input (<= max_len)
    decodes: ClassVar[bool] = False  # generates text with the decode section's settings

    def dataset_problem(self, spec: DatasetSpecBase) -> str | None:
        """Why these settings do not fit the dataset `spec` describes; None when they do."""
        return None
