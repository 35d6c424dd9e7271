"""Named-entity recognition finetuning: a pretrained (or fresh) encoder and a linear tag head
over every token; a word's tag is read off its first token (encode.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric

from transformer_pl.data.encode import IGNORE_INDEX
from transformer_pl.lightning.encoder_weights import LoadedKeys, load_encoder_weights
from transformer_pl.lightning.module import Batch, ExportKind, TransformerModule
from transformer_pl.model import ClassifierOutput, TokenClassifier, TransformerConfig
from transformer_pl.stage_sections import OptimParams
from transformer_pl.tasks.tag.metrics import f1_from_counts, sentence_counts


class EntityCounts(Metric):
    """Entity-level true positives, false positives and false negatives over an epoch's
    sentences (their labelled tokens: each word's first), summed across devices."""

    def __init__(self, tag_names: Sequence[str]) -> None:
        super().__init__()
        self.tag_names = list(tag_names)
        self.add_state("counts", default=torch.zeros(3, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: Tensor, labels: Tensor) -> None:
        """predictions, labels: (B, T) tag indices; labels -100 where no word starts."""
        gold, predicted = [], []
        for row_predictions, row_labels in zip(predictions.tolist(), labels.tolist(), strict=True):
            words = [i for i, label in enumerate(row_labels) if label != IGNORE_INDEX]
            gold.append([self.tag_names[row_labels[i]] for i in words])
            predicted.append([self.tag_names[row_predictions[i]] for i in words])
        self.counts += torch.from_numpy(sentence_counts(gold, predicted).sum(axis=0))

    def compute(self) -> Tensor:
        return self.counts


class TaggingMetrics(nn.Module):
    """Mean loss per labelled token, token accuracy, and entity-level micro precision, recall
    and F1 (as conlleval scores them, in percent; evaluate scores whole sentences)."""

    def __init__(self, tag_names: Sequence[str]) -> None:
        super().__init__()
        self.loss = MeanMetric()
        self.accuracy = MeanMetric()
        self.entities = EntityCounts(tag_names)

    def update(self, loss: Tensor, predictions: Tensor, labels: Tensor) -> None:
        labelled = labels != IGNORE_INDEX
        self.loss.update(loss.detach(), weight=labelled.sum())
        self.accuracy.update((predictions == labels)[labelled].float())
        self.entities.update(predictions, labels)

    def compute(self) -> dict[str, Tensor]:
        counts = self.entities.compute()
        true_positives, false_positives, false_negatives = counts.tolist()
        predicted, gold = true_positives + false_positives, true_positives + false_negatives
        return {
            "loss": self.loss.compute(),
            "accuracy": self.accuracy.compute(),
            "precision": torch.tensor(100.0 * true_positives / max(predicted, 1)),
            "recall": torch.tensor(100.0 * true_positives / max(gold, 1)),
            "f1": torch.tensor(f1_from_counts(counts.cpu().numpy()[None, :])),
        }

    def reset(self) -> None:
        self.loss.reset()
        self.accuracy.reset()
        self.entities.reset()


class TaggerModule(TransformerModule):
    """Logs train/loss and train/accuracy (labelled tokens) per step; {val,test}/{loss,
    accuracy, precision, recall, f1} per epoch, f1 being the entity-level micro F1."""

    exported_as: ClassVar[ExportKind] = ("task", "tag")

    def __init__(
        self,
        model_config: TransformerConfig | Mapping[str, Any],
        tag_names: Sequence[str],
        classifier_dropout: float = 0.1,
        optim: OptimParams | Mapping[str, Any] | None = None,
    ) -> None:
        tag_names = list(tag_names)
        super().__init__(
            model_config, optim, tag_names=tag_names, classifier_dropout=classifier_dropout
        )
        self.tag_names = tag_names
        self.model = TokenClassifier(self.config, len(tag_names), classifier_dropout)
        self.eval_metrics = nn.ModuleDict(
            {stage: TaggingMetrics(tag_names) for stage in ("val", "test")}
        )

    def load_pretrained_encoder(self, weights_path: str | Path) -> LoadedKeys:
        """The `encoder.*` tensors of an exported model, into this tagger's encoder."""
        return load_encoder_weights(self.model.encoder, weights_path)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> ClassifierOutput:
        return self.model(input_ids, attention_mask)

    def _step(self, batch: Batch, training: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Loss over the labelled tokens, predicted tags (B, T), labels (B, T)."""
        output = self.model(batch["input_ids"], batch["attention_mask"], batch["labels"])
        return output.loss, output.logits.argmax(dim=-1), batch["labels"]

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, predictions, labels = self._step(batch, training=True)
        labelled = labels != IGNORE_INDEX
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/accuracy", (predictions == labels)[labelled].float().mean())
        return loss

    def export_info(self) -> dict[str, Any]:
        return {"tag_names": self.tag_names}
