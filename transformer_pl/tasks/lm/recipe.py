"""What pretrain and finetune train for language modelling: one causal language model,
pretrained on the corpus (objective clm) and continued by finetune, or trained from scratch."""

from __future__ import annotations

from typing import Any

from transformer_pl.model import TransformerConfig
from transformer_pl.params import Params
from transformer_pl.stages.layout import Layout
from transformer_pl.tasks.inputs import finetune_datamodule, pretrained_weights
from transformer_pl.tasks.protocol import Recipe


def language_model_recipe(params: Params, layout: Layout, config: TransformerConfig) -> Recipe:
    from safetensors.torch import load_file

    from transformer_pl.data.datamodules import CausalLMDataModule
    from transformer_pl.tasks.lm.module import CausalLMModule

    def build_module() -> Any:
        module = CausalLMModule(config, optim=params.finetune.optim)
        if params.pretrain_objective is not None:
            # The same model pretrained: every weight carries over (strict).
            module.model.load_state_dict(load_file(pretrained_weights(layout)))
        return module

    return Recipe(
        build_module=build_module,
        datamodule=finetune_datamodule(CausalLMDataModule, params, layout),
        # Evaluation scores text in windows of the block size the model was trained on.
        export_metadata={"max_length": params.encode.block_size},
    )
