"""Sequence-to-sequence training (translation) with teacher forcing.

Batches: source_ids, source_mask, target_ids ([BOS] y₁ … yₙ, the decoder input), target_mask,
labels (y₁ … yₙ [EOS], aligned with target_ids, -100 on padding). Training uses label smoothing
(the paper's 0.1); validation and test report the plain cross-entropy, so their loss and
perplexity are comparable across smoothing settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor, nn

from transformer_pl.lightning.metrics import TokenPredictionMetrics
from transformer_pl.lightning.module import Batch, ExportKind, TransformerModule
from transformer_pl.model import LMOutput, Seq2SeqTransformer, TransformerConfig
from transformer_pl.model.heads import IGNORE_INDEX
from transformer_pl.stage_sections import OptimParams


class TranslatorModule(TransformerModule):
    """Logs train/loss (smoothed) and train/accuracy per step; {val,test}/{loss,perplexity,
    accuracy} per epoch, accuracy being teacher-forced next-token accuracy."""

    exported_as: ClassVar[ExportKind] = ("task", "translate")

    def __init__(
        self,
        model_config: TransformerConfig | Mapping[str, Any],
        label_smoothing: float = 0.1,
        optim: OptimParams | Mapping[str, Any] | None = None,
    ) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        super().__init__(model_config, optim, label_smoothing=label_smoothing)
        self.label_smoothing = label_smoothing
        self.model = Seq2SeqTransformer(self.config)
        self.eval_metrics = nn.ModuleDict(
            {stage: TokenPredictionMetrics(self.config.vocab_size) for stage in ("val", "test")}
        )

    def forward(
        self,
        source_ids: Tensor,
        target_ids: Tensor,
        source_mask: Tensor | None = None,
        target_mask: Tensor | None = None,
        labels: Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> LMOutput:
        return self.model(source_ids, target_ids, source_mask, target_mask, labels, label_smoothing)

    def _step(self, batch: Batch, training: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Loss, predicted tokens and their targets, at the labelled positions."""
        labels = batch["labels"]
        output = self(
            batch["source_ids"],
            batch["target_ids"],
            batch["source_mask"],
            batch["target_mask"],
            labels,
            self.label_smoothing if training else 0.0,
        )
        predicted = labels != IGNORE_INDEX
        return output.loss, output.logits.argmax(dim=-1)[predicted], labels[predicted]
