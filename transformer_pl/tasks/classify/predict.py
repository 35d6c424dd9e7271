"""Classification as served: texts in, a label and class probabilities per text out.

Evaluation and the registered pyfunc model both call `classify_texts`, so the served model
predicts exactly as the evaluated one did.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from tokenizers import Tokenizer
from torch import Tensor

from transformer_pl.data.tokenizer import CLS_ID, SEP_ID
from transformer_pl.model import SequenceClassifier
from transformer_pl.precision import native_bf16_autocast
from transformer_pl.serving import PREDICT_BATCH_SIZE, TEXT_COLUMN, BundleModel
from transformer_pl.tasks.classify.bundle import (
    ClassifierBundleConfig,
    load_classifier_bundle,
    read_classifier_config,
)
from transformer_pl.tasks.classify.calibration import apply_temperature
from transformer_pl.tasks.sequence import pad_right, token_ids

PROBABILITY_PREFIX = "probability_"


def text_windows(ids: Sequence[int], room: int) -> list[Sequence[int]]:
    """Windows of `room` ids that cover `ids`: consecutive from the start, the last one aligned to
    the end (it overlaps the one before), so every window is `room` ids long. A text that fits
    is its one window."""
    if len(ids) <= room:
        return [ids]
    starts = [*range(0, len(ids) - room, room), len(ids) - room]
    return [ids[start : start + room] for start in starts]


@torch.no_grad()
def classify_texts(
    model: SequenceClassifier,
    tokenizer: Tokenizer,
    config: ClassifierBundleConfig,
    texts: Sequence[str],
    batch_size: int = PREDICT_BATCH_SIZE,
) -> pd.DataFrame:
    """One row per text: `label` (name), `label_id` and `probability_<label>` for every class.

    Each input is `[CLS] ids [SEP]`, as the encode stage built the training inputs. A text longer
    than the model's `max_length` is read in windows of that length covering all of it
    (`text_windows`), and its probabilities are the mean of its windows': the end of a long
    review counts as much as its start. Inputs are batched by length, each batch cut to its
    longest input: padding every input to max_length would waste the work on short texts.
    Where the hardware has bf16 instructions the forward pass runs under bf16 autocast, faster
    than fp32 (see bench/RESULTS.md for its effect on accuracy). Last, the bundle's
    `temperature` calibrates the probabilities (`apply_temperature`).
    """
    room = config.max_length - 2
    pad_id = config.model.pad_token_id
    inputs: list[Tensor] = []
    owners: list[int] = []  # the text each input reads
    for index, ids in enumerate(token_ids(tokenizer, texts)):
        for window in text_windows(ids, room):
            inputs.append(torch.tensor([CLS_ID, *window, SEP_ID]))
            owners.append(index)
    input_probabilities = torch.empty(len(inputs), config.num_labels)
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]), reverse=True)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        input_ids = pad_right([inputs[i] for i in batch], value=pad_id)
        with native_bf16_autocast(input_ids.device):
            logits = model(input_ids, (input_ids != pad_id).long()).logits
        input_probabilities[batch] = logits.float().softmax(dim=-1)
    owner = torch.tensor(owners, dtype=torch.long)
    windows_per_text = torch.bincount(owner, minlength=len(texts)).unsqueeze(1)
    probabilities = (
        torch.zeros(len(texts), config.num_labels).index_add_(0, owner, input_probabilities)
        / windows_per_text
    )
    calibrated = apply_temperature(probabilities.numpy().astype("float64"), config.temperature)
    label_ids = calibrated.argmax(axis=1)
    return pd.DataFrame(
        {
            "label": [config.label_names[i] for i in label_ids.tolist()],
            "label_id": label_ids.astype("int64"),
            **{
                f"{PROBABILITY_PREFIX}{name}": calibrated[:, i]
                for i, name in enumerate(config.label_names)
            },
        }
    )


class TransformerClassifierModel(BundleModel):
    """Text classification pyfunc: one row of label and class probabilities per text (see
    `classify_texts`)."""

    load_bundle = staticmethod(load_classifier_bundle)

    def answer(self, texts: list[str], params: dict[str, Any]) -> pd.DataFrame:
        return classify_texts(self.model, self.tokenizer, self.config, texts)

    @staticmethod
    def signature(bundle_directory: Path) -> ModelSignature:
        config = read_classifier_config(bundle_directory)
        probabilities = [
            ColSpec("double", f"{PROBABILITY_PREFIX}{name}") for name in config.label_names
        ]
        return ModelSignature(
            inputs=Schema([ColSpec("string", TEXT_COLUMN)]),
            outputs=Schema(
                [ColSpec("string", "label"), ColSpec("long", "label_id"), *probabilities]
            ),
        )

    @staticmethod
    def input_example() -> pd.DataFrame:
        return pd.DataFrame({TEXT_COLUMN: ["An example sentence to classify."]})
