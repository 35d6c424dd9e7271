"""Sequence classification finetuning: a pretrained (or fresh) encoder, pooling, a linear head
(pretrained weights: lightning/encoder_weights.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from transformer_pl.lightning.encoder_weights import LoadedKeys, load_encoder_weights
from transformer_pl.lightning.metrics import ClassificationMetrics
from transformer_pl.lightning.module import Batch, ExportKind, TransformerModule
from transformer_pl.lightning.optim import layerwise_lr_scales
from transformer_pl.model import ClassifierOutput, Pooling, SequenceClassifier, TransformerConfig
from transformer_pl.stage_sections import OptimParams


class ClassifierModule(TransformerModule):
    """Logs train/loss and train/accuracy per step; {val,test}/{loss,accuracy,f1_macro} per
    epoch (the train loss includes label smoothing, the val/test loss does not).

    freeze_encoder: train the head only (a linear probe); the encoder also stays in eval mode,
    so its dropout is off. layer_lr_decay < 1: lower encoder layers get smaller learning rates
    (see tasks/optim.py).
    A training batch with `targets` (class probabilities, tasks.classify.teacher) fits them instead
    of its labels; its train/accuracy is against each row's most probable class.
    """

    exported_as: ClassVar[ExportKind] = ("task", "classify")

    def __init__(
        self,
        model_config: TransformerConfig | Mapping[str, Any],
        num_labels: int,
        label_names: Sequence[str] | None = None,
        pooling: Pooling = "mean",
        classifier_dropout: float = 0.1,
        label_smoothing: float = 0.0,
        freeze_encoder: bool = False,
        layer_lr_decay: float = 1.0,
        optim: OptimParams | Mapping[str, Any] | None = None,
    ) -> None:
        if label_names is not None and len(label_names) != num_labels:
            raise ValueError(f"{len(label_names)} label_names given for num_labels={num_labels}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if not 0.0 < layer_lr_decay <= 1.0:
            raise ValueError(f"layer_lr_decay must be in (0, 1], got {layer_lr_decay}")
        label_names = list(label_names) if label_names is not None else None
        super().__init__(
            model_config,
            optim,
            num_labels=num_labels,
            label_names=label_names,
            pooling=pooling,
            classifier_dropout=classifier_dropout,
            label_smoothing=label_smoothing,
            freeze_encoder=freeze_encoder,
            layer_lr_decay=layer_lr_decay,
        )
        self.num_labels = num_labels
        self.label_names = label_names
        self.label_smoothing = label_smoothing
        self.freeze_encoder = freeze_encoder
        self.layer_lr_decay = layer_lr_decay
        self.model = SequenceClassifier(self.config, num_labels, pooling, classifier_dropout)
        if freeze_encoder:
            self.model.encoder.requires_grad_(False)
        self.eval_metrics = nn.ModuleDict(
            {stage: ClassificationMetrics(num_labels) for stage in ("val", "test")}
        )

    def load_pretrained_encoder(self, weights_path: str | Path) -> LoadedKeys:
        """The `encoder.*` tensors of an exported model, into this classifier's encoder."""
        return load_encoder_weights(self.model.encoder, weights_path)

    def train(self, mode: bool = True) -> ClassifierModule:
        super().train(mode)
        if self.freeze_encoder:
            self.model.encoder.eval()
        return self

    def lr_scales(self) -> dict[int, float] | None:
        if self.layer_lr_decay == 1.0:
            return None
        return layerwise_lr_scales(self.model.encoder, self.layer_lr_decay)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> ClassifierOutput:
        return self.model(input_ids, attention_mask)

    def _step(self, batch: Batch, training: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Loss, predicted classes, true classes."""
        logits = self(batch["input_ids"], batch["attention_mask"]).logits
        return self._loss(logits, batch, training), logits.argmax(dim=-1), batch["labels"]

    def _loss(self, logits: Tensor, batch: Batch, training: bool) -> Tensor:
        """Mean cross-entropy against the labels; in training, label-smoothed and against the
        batch's `targets` where it has them."""
        if not training:
            return F.cross_entropy(logits, batch["labels"])
        # Class probabilities to fit (one-hot labels and a distillation teacher's), if any.
        fitted = batch.get("targets", batch["labels"])
        return F.cross_entropy(logits, fitted, label_smoothing=self.label_smoothing)

    def export_info(self) -> dict[str, Any]:
        label_names = self.label_names or [str(label) for label in range(self.num_labels)]
        return {
            "num_labels": self.num_labels,
            "label_names": label_names,
            "pooling": self.model.pooling,
        }
