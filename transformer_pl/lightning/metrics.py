"""Epoch-level metrics of the tasks, accumulated batch by batch with torchmetrics (which also
reduces them across devices). `compute()` returns the names the tasks log as `<stage>/<name>`."""

from __future__ import annotations

from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score


class TokenPredictionMetrics(nn.Module):
    """Language modelling: mean cross-entropy per predicted token, its perplexity, and accuracy.

    The loss is weighted by the number of predicted tokens in each batch, so the epoch value is
    the mean over tokens, and exp(loss) is the corpus perplexity rather than a mean of per-batch
    perplexities.
    """

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.loss = MeanMetric()
        self.accuracy = MulticlassAccuracy(num_classes=vocab_size, average="micro")

    def update(self, loss: Tensor, predictions: Tensor, targets: Tensor) -> None:
        """loss: batch mean over its predicted tokens; predictions, targets: (N,) token ids."""
        self.loss.update(loss.detach(), weight=targets.numel())
        self.accuracy.update(predictions, targets)

    def compute(self) -> dict[str, Tensor]:
        loss = self.loss.compute()
        return {"loss": loss, "perplexity": loss.exp(), "accuracy": self.accuracy.compute()}

    def reset(self) -> None:
        self.loss.reset()
        self.accuracy.reset()


class ClassificationMetrics(nn.Module):
    """Sequence classification: mean loss per example, accuracy, and macro-averaged F1 (every
    class counts equally, so a model that ignores a rare class cannot hide behind accuracy)."""

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.loss = MeanMetric()
        self.accuracy = MulticlassAccuracy(num_classes=num_labels, average="micro")
        self.f1_macro = MulticlassF1Score(num_classes=num_labels, average="macro")

    def update(self, loss: Tensor, predictions: Tensor, targets: Tensor) -> None:
        """loss: batch mean; predictions, targets: (B,) class indices."""
        self.loss.update(loss.detach(), weight=targets.numel())
        self.accuracy.update(predictions, targets)
        self.f1_macro.update(predictions, targets)

    def compute(self) -> dict[str, Tensor]:
        return {
            "loss": self.loss.compute(),
            "accuracy": self.accuracy.compute(),
            "f1_macro": self.f1_macro.compute(),
        }

    def reset(self) -> None:
        self.loss.reset()
        self.accuracy.reset()
        self.f1_macro.reset()
