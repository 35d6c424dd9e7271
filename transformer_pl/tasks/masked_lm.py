"""Masked-language-model pretraining (BERT): predict the masked tokens from both sides.

The datamodule masks (batches of input_ids, attention_mask, labels with -100 where nothing is
predicted); the model projects only the predicted positions to the vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor, nn

from transformer_pl.config import OptimParams
from transformer_pl.model import LMOutput, MaskedLanguageModel, TransformerConfig
from transformer_pl.model.heads import IGNORE_INDEX
from transformer_pl.tasks.base import Batch, TaskName, TransformerTask
from transformer_pl.tasks.metrics import TokenPredictionMetrics


class MaskedLMTask(TransformerTask):
    """Logs train/loss and train/accuracy per step; {val,test}/{loss,perplexity,accuracy} per
    epoch, where accuracy is over masked tokens."""

    task_name: ClassVar[TaskName] = "mlm"

    def __init__(
        self,
        model_config: TransformerConfig | Mapping[str, Any],
        optim: OptimParams | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(model_config, optim)
        self.model = MaskedLanguageModel(self.config)
        self.eval_metrics = nn.ModuleDict(
            {stage: TokenPredictionMetrics(self.config.vocab_size) for stage in ("val", "test")}
        )

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None
    ) -> LMOutput:
        return self.model(input_ids, attention_mask, labels)

    def _step(self, batch: Batch, training: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Loss, predicted ids and target ids at the masked positions."""
        labels = batch["labels"]
        output = self(batch["input_ids"], batch["attention_mask"], labels)
        targets = labels[labels != IGNORE_INDEX]  # the order of the model's logits rows
        return output.loss, output.logits.argmax(dim=-1), targets
