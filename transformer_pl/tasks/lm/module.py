"""Causal-language-model pretraining (GPT): predict every next token from the ones before it.

Batches: input_ids, attention_mask, labels (= input_ids with -100 on padding); the model shifts
the labels, so logits[:, t] is scored against labels[:, t + 1].
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from transformer_pl.lightning.module import Batch, ExportKind, LanguageModelModule
from transformer_pl.model import CausalLanguageModel
from transformer_pl.model.heads import IGNORE_INDEX


class CausalLMModule(LanguageModelModule):
    """Logs train/loss and train/accuracy per step; {val,test}/{loss,perplexity,accuracy} per
    epoch, where accuracy is next-token accuracy over real tokens."""

    model_class = CausalLanguageModel
    exported_as: ClassVar[ExportKind] = ("task", "lm")

    def _step(self, batch: Batch, training: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Loss, predicted next tokens and their targets, at the predicted positions."""
        labels = batch["labels"]
        output = self(batch["input_ids"], batch["attention_mask"], labels)
        next_labels = labels[:, 1:]
        predicted = next_labels != IGNORE_INDEX
        predictions = output.logits[:, :-1].argmax(dim=-1)[predicted]
        return output.loss, predictions, next_labels[predicted]
