"""What a task's finetune recipe reads from the workspace besides its own settings: the encoded
data as a datamodule, and the pretrained weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformer_pl.params import Params
from transformer_pl.stages.base import StageError
from transformer_pl.stages.layout import Layout


def finetune_datamodule(datamodule_class: type, params: Params, layout: Layout) -> Any:
    return datamodule_class(
        layout / Layout.ENCODED,
        params.finetune.batch_size,
        params.seed,
        num_workers=params.trainer.num_workers,
    )


def pretrained_weights(layout: Layout) -> Path:
    path = layout / Layout.PRETRAINED / "model.safetensors"
    if not path.is_file():
        raise StageError(f"{path} not found: run pretrain (or finetune.from_pretrained: false)")
    return path


def with_pretrained_encoder(module: Any, params: Params, layout: Layout, recipe: Any) -> Any:
    """`module` with its encoder loaded from pretrain's weights when params ask for them; what
    the loading found (missing and unexpected tensors) goes into `recipe.loaded`."""
    if params.pretrain_objective is not None:
        keys = module.load_pretrained_encoder(pretrained_weights(layout))
        recipe.loaded.update(missing=list(keys.missing), unexpected=list(keys.unexpected))
    return module
