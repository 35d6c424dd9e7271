"""What finetune trains for summarization: an encoder–decoder from scratch with teacher forcing
on (source, reference summary) pairs."""

from __future__ import annotations

from transformer_pl.model import TransformerConfig
from transformer_pl.params import Params
from transformer_pl.stages.layout import Layout
from transformer_pl.tasks.inputs import finetune_datamodule
from transformer_pl.tasks.protocol import Recipe


def summarizer_recipe(params: Params, layout: Layout, config: TransformerConfig) -> Recipe:
    from transformer_pl.data.datamodules import Seq2SeqDataModule
    from transformer_pl.tasks.summarize.module import SummarizerModule

    return Recipe(
        build_module=lambda: SummarizerModule(
            config,
            label_smoothing=params.tasks.summarize.label_smoothing,
            optim=params.finetune.optim,
        ),
        datamodule=finetune_datamodule(Seq2SeqDataModule, params, layout),
        export_metadata={
            "max_length": params.encode.max_length,
            "truncate_from": params.encode.truncate_from,
        },
    )
