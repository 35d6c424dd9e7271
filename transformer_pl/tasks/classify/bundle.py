"""The classification bundle's config.json (see transformer_pl/bundle.py), written by
`save_classifier_bundle` and read by `load_classifier_bundle`.

Its fields: `num_labels`, `label_names` (index = class id), `pooling` ("mean", "max",
"mean_max" or "cls"), `max_length` (the longest input the model was trained on, special tokens
included; longer texts are read in windows of that length: `classify_texts`) and `temperature`
(the calibration the served probabilities get, calibration.py; 1 in a training bundle, the one
evaluate fitted once registered).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer

from transformer_pl.bundle import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    bundle_file,
    bundle_tokenizer,
    read_bundle_config,
)
from transformer_pl.model import Pooling, SequenceClassifier, TransformerConfig


@dataclass(frozen=True)
class ClassifierBundleConfig:
    """config.json of a classification bundle."""

    model: TransformerConfig
    num_labels: int
    label_names: tuple[str, ...]
    pooling: Pooling = "mean"
    max_length: int = 256
    temperature: float = 1.0
    task: Literal["classify"] = "classify"

    def __post_init__(self) -> None:
        if len(self.label_names) != self.num_labels:
            raise ValueError(
                f"num_labels is {self.num_labels} but label_names has {len(self.label_names)} "
                f"entries: {list(self.label_names)}"
            )
        if len(set(self.label_names)) != self.num_labels:
            raise ValueError(f"label_names must be distinct, got {list(self.label_names)}")
        if not 2 < self.max_length <= self.model.max_len:
            raise ValueError(
                f"max_length must be in (2, model.max_len={self.model.max_len}], "
                f"got {self.max_length}"
            )
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "model": self.model.to_dict(),
            "num_labels": self.num_labels,
            "label_names": list(self.label_names),
            "pooling": self.pooling,
            "max_length": self.max_length,
            "temperature": self.temperature,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassifierBundleConfig:
        if data.get("task") != "classify":
            raise ValueError(f"not a classification bundle: task is {data.get('task')!r}")
        expected = {
            "task",
            "model",
            "num_labels",
            "label_names",
            "pooling",
            "max_length",
            "temperature",
        }
        if unknown := set(data) - expected:
            raise ValueError(f"unknown bundle config key(s): {sorted(unknown)}")
        return cls(
            model=TransformerConfig.from_dict(data["model"]),
            num_labels=int(data["num_labels"]),
            label_names=tuple(data["label_names"]),
            pooling=data.get("pooling", "mean"),
            max_length=int(data.get("max_length", 256)),
            temperature=float(data.get("temperature", 1.0)),
        )


def read_classifier_config(directory: str | Path) -> ClassifierBundleConfig:
    return ClassifierBundleConfig.from_dict(read_bundle_config(directory))


def save_classifier_bundle(
    model: SequenceClassifier,
    directory: str | Path,
    *,
    label_names: Sequence[str],
    max_length: int,
    tokenizer_path: str | Path | None = None,
) -> Path:
    """Write `model` as a classification bundle (plus a copy of the tokenizer, when given)."""
    directory = Path(directory)
    config = ClassifierBundleConfig(
        model=model.config,
        num_labels=model.head.out_features,
        label_names=tuple(label_names),
        pooling=model.pooling,
        max_length=max_length,
    )
    directory.mkdir(parents=True, exist_ok=True)
    save_model(model, str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    if tokenizer_path is not None:
        shutil.copyfile(tokenizer_path, directory / TOKENIZER_FILE)
    return directory


def load_classifier_bundle(
    directory: str | Path, tokenizer_path: str | Path | None = None
) -> tuple[SequenceClassifier, Tokenizer, ClassifierBundleConfig]:
    """Load a classification bundle for inference: the model in eval mode, and its tokenizer
    (the bundle's own unless `tokenizer_path` is given)."""
    config = read_classifier_config(directory)
    model = SequenceClassifier(config.model, config.num_labels, pooling=config.pooling)
    load_model(model, str(bundle_file(directory, WEIGHTS_FILE)))
    model.eval()

    return model, bundle_tokenizer(directory, tokenizer_path), config
