"""Masked-language-model pretraining (BERT): predict the masked tokens from both sides.

The datamodule masks (batches of input_ids, attention_mask, labels with -100 where nothing is
predicted); the model projects only the predicted positions to the vocabulary.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from transformer_pl.lightning.module import Batch, ExportKind, LanguageModelModule
from transformer_pl.model import MaskedLanguageModel
from transformer_pl.model.heads import IGNORE_INDEX


class MaskedLMModule(LanguageModelModule):
    """Logs train/loss and train/accuracy per step; {val,test}/{loss,perplexity,accuracy} per
    epoch, where accuracy is over masked tokens."""

    model_class = MaskedLanguageModel
    exported_as: ClassVar[ExportKind] = ("objective", "mlm")

    def _step(self, batch: Batch, training: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Loss, predicted ids and target ids at the masked positions."""
        labels = batch["labels"]
        output = self(batch["input_ids"], batch["attention_mask"], labels)
        targets = labels[labels != IGNORE_INDEX]  # the order of the model's logits rows
        return output.loss, output.logits.argmax(dim=-1), targets
