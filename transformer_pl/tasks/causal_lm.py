"""Causal-language-model pretraining (GPT): predict every next token from the ones before it.

Batches: input_ids, attention_mask, labels (= input_ids with -100 on padding); the model shifts
the labels, so logits[:, t] is scored against labels[:, t + 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor, nn

from transformer_pl.config import OptimParams
from transformer_pl.model import CausalLanguageModel, LMOutput, TransformerConfig
from transformer_pl.model.heads import IGNORE_INDEX
from transformer_pl.tasks.base import Batch, TaskName, TransformerTask
from transformer_pl.tasks.metrics import TokenPredictionMetrics


class CausalLMTask(TransformerTask):
    """Logs train/loss and train/accuracy per step; {val,test}/{loss,perplexity,accuracy} per
    epoch, where accuracy is next-token accuracy over real tokens."""

    task_name: ClassVar[TaskName] = "clm"

    def __init__(
        self,
        model_config: TransformerConfig | Mapping[str, Any],
        optim: OptimParams | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(model_config, optim)
        self.model = CausalLanguageModel(self.config)
        self.eval_metrics = nn.ModuleDict(
            {stage: TokenPredictionMetrics(self.config.vocab_size) for stage in ("val", "test")}
        )

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None
    ) -> LMOutput:
        return self.model(input_ids, attention_mask, labels)

    def _step(self, batch: Batch, training: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Loss, predicted next tokens and their targets, at the predicted positions."""
        labels = batch["labels"]
        output = self(batch["input_ids"], batch["attention_mask"], labels)
        next_labels = labels[:, 1:]
        predicted = next_labels != IGNORE_INDEX
        predictions = output.logits[:, :-1].argmax(dim=-1)[predicted]
        return output.loss, predictions, next_labels[predicted]
