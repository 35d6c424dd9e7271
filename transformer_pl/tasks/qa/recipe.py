"""What finetune trains for question answering: a reader (start/end logits over the encoder)
over the pretrained encoder (or its word vectors, or from scratch), on the first reference
answer of each training question; the best epoch by val loss."""

from __future__ import annotations

from typing import Any

from transformer_pl.model import TransformerConfig
from transformer_pl.params import Params
from transformer_pl.stages.layout import Layout
from transformer_pl.tasks.inputs import finetune_datamodule, with_pretrained_encoder
from transformer_pl.tasks.protocol import Recipe


def reader_recipe(params: Params, layout: Layout, config: TransformerConfig) -> Recipe:
    from transformer_pl.data.datamodules import QuestionAnsweringDataModule
    from transformer_pl.tasks.qa.module import QuestionAnsweringModule

    encode = params.encode
    recipe = Recipe(
        build_module=lambda: None,
        datamodule=finetune_datamodule(QuestionAnsweringDataModule, params, layout),
        export_metadata={
            "max_length": encode.max_length,
            "stride": encode.stride,
            "max_question_tokens": encode.max_question_tokens,
        },
    )

    def build_module() -> Any:
        module = QuestionAnsweringModule(
            config,
            classifier_dropout=params.tasks.qa.classifier_dropout,
            optim=params.finetune.optim,
        )
        return with_pretrained_encoder(module, params, layout, recipe)

    recipe.build_module = build_module
    return recipe
