"""What the decoding tasks (language modelling, translation) share: their bundle format, text
to ids and back, and the pyfunc base that decodes with the bundle's settings.

A sequence bundle's config.json holds, besides the task and model config, the fields of
`SequenceBundleConfig`. Text as the models saw it in training (encode.py): each line's ids
without special tokens, then [EOS].
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import Tensor, nn

from transformer_pl.bundle import CONFIG_FILE, WEIGHTS_FILE, bundle_tokenizer
from transformer_pl.data.tokenizer import EOS_ID, PAD_ID
from transformer_pl.model import TransformerConfig
from transformer_pl.params import DecodeParams, Params
from transformer_pl.serving import TEXT_COLUMN, BundleModel, refused

DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class SequenceBundleConfig:
    """config.json of a language-model ("lm") or translation ("translate") bundle.

    max_length: lm — the training block size, the context scored at once; translate — the
    source ids kept (longer sources are cut, as in training). `decoding`: the defaults the
    registered model decodes with (a training bundle has none: DecodeParams' defaults).
    """

    task: str
    model: TransformerConfig
    max_length: int
    source_language: str | None = None
    target_language: str | None = None
    truncate_from: str = "end"  # a source longer than max_length loses its end, or its start
    decoding: DecodeParams = field(default_factory=DecodeParams)

    def __post_init__(self) -> None:
        if not 1 < self.max_length <= self.model.max_len:
            raise ValueError(
                f"max_length must be in (1, model.max_len={self.model.max_len}], "
                f"got {self.max_length}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SequenceBundleConfig:
        expected = {
            "task",
            "model",
            "max_length",
            "source_language",
            "target_language",
            "truncate_from",
        }
        if unknown := set(data) - expected - {"decoding"}:
            raise ValueError(f"unknown bundle config key(s): {sorted(unknown)}")
        return cls(
            **{key: data[key] for key in expected - {"model"} if key in data},
            model=TransformerConfig.from_dict(data["model"]),
            decoding=DecodeParams.model_validate(data.get("decoding") or {}),
        )


def read_sequence_config(directory: str | Path) -> SequenceBundleConfig:
    path = Path(directory) / CONFIG_FILE
    return SequenceBundleConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))


def load_sequence_bundle(
    directory: str | Path,
    task: str,
    model_class: Callable[[TransformerConfig], nn.Module],
    tokenizer_path: str | Path | None = None,
) -> tuple[Any, Tokenizer, SequenceBundleConfig]:
    """A `task` bundle's model (a `model_class`, eval mode, CPU), its tokenizer (the bundle's
    own unless `tokenizer_path` is given) and its config."""
    directory = Path(directory)
    config = read_sequence_config(directory)
    if config.task != task:
        raise ValueError(f"{directory}: a {config.task!r} bundle, not a {task!r} one")
    model = model_class(config.model)
    # Every name is in the file, tied ones included (see TransformerModule.export_weights).
    model.load_state_dict(load_file(directory / WEIGHTS_FILE))
    return model.eval(), bundle_tokenizer(directory, tokenizer_path), config


def token_ids(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    return [
        encoding.ids
        for encoding in tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
    ]


def batches(items: Sequence[Any], batch_size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def decode_ids(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    """Text of `ids` up to the first [EOS] (padding and other special tokens dropped)."""
    ids = list(ids)
    if EOS_ID in ids:
        ids = ids[: ids.index(EOS_ID)]
    return tokenizer.decode(ids, skip_special_tokens=True)


def pad_right(sequences: Sequence[Tensor], value: int = PAD_ID) -> Tensor:
    return torch.nn.utils.rnn.pad_sequence(list(sequences), batch_first=True, padding_value=value)


# MLflow's types for the decoding settings a request may set.
DECODE_PARAM_TYPES = {
    "max_new_tokens": "long",
    "stop_at_eos": "boolean",
    "do_sample": "boolean",
    "temperature": "double",
    "top_k": "long",
    "top_p": "double",
    "seed": "long",
    "beam_size": "long",
    "length_penalty": "double",
    "min_new_tokens": "long",
    "no_repeat_ngram_size": "long",
}


class DecodingModel(BundleModel):
    """A pyfunc over a sequence bundle: one `output_column` string per text. Request `params`
    override the bundle's decoding defaults."""

    output_column: ClassVar[str]
    decoding_params: ClassVar[tuple[str, ...]]  # the DecodeParams fields a request may set
    example: ClassVar[str]

    def answer(self, texts: list[str], params: dict[str, Any]) -> pd.DataFrame:
        decoding = DecodeParams.model_validate({**self.config.decoding.model_dump(), **params})
        if decoding.max_new_tokens > self.limits.max_new_tokens:
            raise refused(
                f"max_new_tokens {decoding.max_new_tokens}; at most {self.limits.max_new_tokens}",
                "max_new_tokens",
            )
        if decoding.beam_size > self.limits.max_beam_size:
            raise refused(
                f"beam_size {decoding.beam_size}; at most {self.limits.max_beam_size}",
                "max_beam_size",
            )
        return pd.DataFrame({self.output_column: self.decode_texts(texts, decoding)})

    def decode_texts(self, texts: list[str], decoding: DecodeParams) -> list[str]:
        raise NotImplementedError

    @classmethod
    def signature(cls, bundle_directory: Path) -> ModelSignature:
        decoding = read_sequence_config(bundle_directory).decoding
        return ModelSignature(
            inputs=Schema([ColSpec("string", TEXT_COLUMN)]),
            outputs=Schema([ColSpec("string", cls.output_column)]),
            params=ParamSchema(
                [
                    ParamSpec(name, DECODE_PARAM_TYPES[name], getattr(decoding, name))
                    for name in cls.decoding_params
                ]
            ),
        )

    @classmethod
    def input_example(cls) -> pd.DataFrame:
        return pd.DataFrame({TEXT_COLUMN: [cls.example]})


def decoding_fields(params: Params, evaluation: dict[str, Any]) -> dict[str, Any]:
    """The decode settings evaluate used: the registered model decodes with them by default."""
    return {"decoding": params.decode.model_dump()}
