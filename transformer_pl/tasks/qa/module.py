"""Extractive question answering finetuning: a pretrained (or fresh) encoder and a linear layer
giving every token a start and an end logit; the loss is the mean of the start and end
cross-entropies over the positions of the window (padding excluded)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from transformer_pl.lightning.encoder_weights import LoadedKeys, load_encoder_weights
from transformer_pl.lightning.module import Batch, ExportKind, TransformerModule
from transformer_pl.model import TokenClassifier, TransformerConfig
from transformer_pl.stage_sections import OptimParams

SPAN_ENDS = 2  # a start and an end logit per token


def span_logits(model: TokenClassifier, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """(B, T, 2) start and end logits, padding positions at -inf."""
    logits = model(input_ids, attention_mask).logits
    return logits.masked_fill(~attention_mask.bool().unsqueeze(-1), float("-inf"))


class SpanMetrics(nn.Module):
    """Mean loss per window, and the share of windows whose start, and whose whole span (start
    and end), the argmax gets right (evaluate scores answers: exact match and F1)."""

    def __init__(self) -> None:
        super().__init__()
        self.loss = MeanMetric()
        self.start_accuracy = MeanMetric()
        self.span_accuracy = MeanMetric()

    def update(self, loss: Tensor, predictions: Tensor, targets: Tensor) -> None:
        """predictions, targets: (B, 2) start and end positions."""
        self.loss.update(loss.detach(), weight=targets.shape[0])
        correct = predictions == targets
        self.start_accuracy.update(correct[:, 0].float())
        self.span_accuracy.update(correct.all(dim=1).float())

    def compute(self) -> dict[str, Tensor]:
        return {
            "loss": self.loss.compute(),
            "start_accuracy": self.start_accuracy.compute(),
            "span_accuracy": self.span_accuracy.compute(),
        }

    def reset(self) -> None:
        self.loss.reset()
        self.start_accuracy.reset()
        self.span_accuracy.reset()


class QuestionAnsweringModule(TransformerModule):
    """Logs train/loss and train/accuracy (start and end positions) per step; {val,test}/{loss,
    start_accuracy, span_accuracy} per epoch."""

    exported_as: ClassVar[ExportKind] = ("task", "qa")

    def __init__(
        self,
        model_config: TransformerConfig | Mapping[str, Any],
        classifier_dropout: float = 0.1,
        optim: OptimParams | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(model_config, optim, classifier_dropout=classifier_dropout)
        self.model = TokenClassifier(self.config, SPAN_ENDS, classifier_dropout)
        self.eval_metrics = nn.ModuleDict({stage: SpanMetrics() for stage in ("val", "test")})

    def load_pretrained_encoder(self, weights_path: str | Path) -> LoadedKeys:
        """The `encoder.*` tensors of an exported model, into this reader's encoder."""
        return load_encoder_weights(self.model.encoder, weights_path)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return span_logits(self.model, input_ids, attention_mask)

    def _step(self, batch: Batch, training: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Loss, predicted (start, end) per window (B, 2), gold (start, end) (B, 2)."""
        logits = self(batch["input_ids"], batch["attention_mask"])
        targets = torch.stack([batch["start_positions"], batch["end_positions"]], dim=1)
        loss = (
            F.cross_entropy(logits[..., 0], targets[:, 0])
            + F.cross_entropy(logits[..., 1], targets[:, 1])
        ) / 2
        return loss, logits.argmax(dim=1), targets
