"""What finetune trains for named-entity recognition: a tagger over the pretrained encoder (or
its word vectors, or from scratch), on the train split's tags; the best epoch by val entity
F1."""

from __future__ import annotations

from typing import Any

from transformer_pl.model import TransformerConfig
from transformer_pl.params import Params
from transformer_pl.stages.layout import Layout
from transformer_pl.tasks.inputs import finetune_datamodule, with_pretrained_encoder
from transformer_pl.tasks.protocol import Recipe


def tagger_recipe(params: Params, layout: Layout, config: TransformerConfig) -> Recipe:
    from transformer_pl.data.datamodules import TaggingDataModule, read_meta
    from transformer_pl.tasks.tag.module import TaggerModule

    tag_names = read_meta(layout / Layout.ENCODED)["tag_names"]
    recipe = Recipe(
        build_module=lambda: None,
        datamodule=finetune_datamodule(TaggingDataModule, params, layout),
        export_metadata={"max_length": params.encode.max_length},
        monitor="val/f1",
        mode="max",
    )

    def build_module() -> Any:
        module = TaggerModule(
            config,
            tag_names=tag_names,
            classifier_dropout=params.tasks.tag.classifier_dropout,
            optim=params.finetune.optim,
        )
        return with_pretrained_encoder(module, params, layout, recipe)

    recipe.build_module = build_module
    return recipe
