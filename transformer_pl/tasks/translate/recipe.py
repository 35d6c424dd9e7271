"""What finetune trains for translation: an encoder–decoder from scratch with teacher forcing
(translation has no pretraining objective here)."""

from __future__ import annotations

from transformer_pl.model import TransformerConfig
from transformer_pl.params import Params
from transformer_pl.stages.layout import Layout
from transformer_pl.tasks.inputs import finetune_datamodule
from transformer_pl.tasks.protocol import Recipe


def translator_recipe(params: Params, layout: Layout, config: TransformerConfig) -> Recipe:
    from transformer_pl.data.datamodules import Seq2SeqDataModule
    from transformer_pl.tasks.translate.module import TranslatorModule

    spec = params.dataset_spec
    return Recipe(
        build_module=lambda: TranslatorModule(
            config,
            label_smoothing=params.tasks.translate.label_smoothing,
            optim=params.finetune.optim,
        ),
        datamodule=finetune_datamodule(Seq2SeqDataModule, params, layout),
        export_metadata={
            "max_length": params.encode.max_length,
            "truncate_from": params.encode.truncate_from,
            "source_language": spec.source_language,
            "target_language": spec.target_language,
        },
    )
