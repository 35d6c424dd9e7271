"""Extractive question answering as served and scored: (question, context) pairs in, the best
answer span of each context out, with its score and character offsets.

A qa bundle's config.json holds, besides the task and model config, how inputs were cut in
training (`max_length`, `stride`, `max_question_tokens`: encode's) and `max_answer_tokens`, the
longest span an answer may be.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, Schema
from safetensors.torch import load_model
from tokenizers import Tokenizer

from transformer_pl.bundle import (
    WEIGHTS_FILE,
    bundle_file,
    bundle_tokenizer,
    read_bundle_config,
)
from transformer_pl.model import TokenClassifier, TransformerConfig
from transformer_pl.serving import PREDICT_BATCH_SIZE, BundleModel
from transformer_pl.tasks.qa.module import SPAN_ENDS, span_logits
from transformer_pl.tasks.qa.spans import Answer, answer_from_windows
from transformer_pl.tasks.qa.windows import question_windows
from transformer_pl.tasks.sequence import pad_right

TASK = "qa"
QUESTION_COLUMN, CONTEXT_COLUMN = "question", "context"
DEFAULT_MAX_ANSWER_TOKENS = 30


@dataclass(frozen=True)
class ReaderBundleConfig:
    task: str
    model: TransformerConfig
    max_length: int
    stride: int
    max_question_tokens: int
    max_answer_tokens: int = DEFAULT_MAX_ANSWER_TOKENS

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReaderBundleConfig:
        if data.get("task") != TASK:
            raise ValueError(f"a {data.get('task')!r} bundle, not a {TASK!r} one")
        return cls(
            task=TASK,
            model=TransformerConfig.from_dict(data["model"]),
            max_length=int(data["max_length"]),
            stride=int(data["stride"]),
            max_question_tokens=int(data["max_question_tokens"]),
            max_answer_tokens=int(data.get("max_answer_tokens", DEFAULT_MAX_ANSWER_TOKENS)),
        )


def load_reader_bundle(
    directory: str | Path, tokenizer_path: str | Path | None = None
) -> tuple[TokenClassifier, Tokenizer, ReaderBundleConfig]:
    """A qa bundle's model (eval mode, CPU), its tokenizer (the bundle's own unless
    `tokenizer_path` is given) and its config."""
    config = ReaderBundleConfig.from_dict(read_bundle_config(directory))
    model = TokenClassifier(config.model, SPAN_ENDS)
    load_model(model, str(bundle_file(directory, WEIGHTS_FILE)))
    return model.eval(), bundle_tokenizer(directory, tokenizer_path), config


@torch.no_grad()
def answer_questions(
    model: TokenClassifier,
    tokenizer: Tokenizer,
    config: ReaderBundleConfig,
    questions: Sequence[str],
    contexts: Sequence[str],
    batch_size: int = PREDICT_BATCH_SIZE,
    max_answer_tokens: int | None = None,
) -> list[Answer]:
    """The best answer span of each context: its windows read as in training (`question_windows`),
    the span with the highest start + end logit over all of them (`answer_from_windows`), at
    most `max_answer_tokens` long (the bundle's by default)."""
    windows, _ = question_windows(
        tokenizer,
        list(questions),
        list(contexts),
        None,
        None,
        config.max_length,
        config.stride,
        config.max_question_tokens,
    )
    logits: list[np.ndarray] = [np.empty(0)] * len(windows)
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids), reverse=True)
    pad_id = config.model.pad_token_id
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        input_ids = pad_right([torch.tensor(windows[i].input_ids) for i in batch], value=pad_id)
        scores = span_logits(model, input_ids, (input_ids != pad_id).long()).float().numpy()
        for row, index in enumerate(batch):
            logits[index] = scores[row, : len(windows[index].input_ids)]
    by_question: list[list[int]] = [[] for _ in questions]
    for index, window in enumerate(windows):
        by_question[window.example].append(index)
    longest = max_answer_tokens or config.max_answer_tokens
    return [
        answer_from_windows(
            [windows[i] for i in indices],
            [logits[i][:, 0] for i in indices],
            [logits[i][:, 1] for i in indices],
            context,
            longest,
        )
        for indices, context in zip(by_question, contexts, strict=True)
    ]


class TransformerReaderModel(BundleModel):
    """Question-answering pyfunc: columns `question` and `context` in; a row per question with
    its `answer`, `score` (start + end logit) and the answer's `start`/`end` character offsets
    in the context (see `answer_questions`)."""

    load_bundle = staticmethod(load_reader_bundle)

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        missing = [c for c in (QUESTION_COLUMN, CONTEXT_COLUMN) if c not in model_input]
        if missing:
            raise MlflowException(
                f"request refused: no column {', '.join(missing)} (a QA model reads "
                f"'{QUESTION_COLUMN}' and '{CONTEXT_COLUMN}')",
                error_code=INVALID_PARAMETER_VALUE,
            )
        questions = model_input[QUESTION_COLUMN].astype(str).tolist()
        contexts = model_input[CONTEXT_COLUMN].astype(str).tolist()
        self.check_limits(contexts)
        answers = answer_questions(self.model, self.tokenizer, self.config, questions, contexts)
        return pd.DataFrame(
            {
                "answer": [answer.text for answer in answers],
                "score": [answer.score for answer in answers],
                "start": [answer.start for answer in answers],
                "end": [answer.end for answer in answers],
            }
        )

    @staticmethod
    def signature(bundle_directory: Path) -> ModelSignature:
        return ModelSignature(
            inputs=Schema([ColSpec("string", QUESTION_COLUMN), ColSpec("string", CONTEXT_COLUMN)]),
            outputs=Schema(
                [
                    ColSpec("string", "answer"),
                    ColSpec("double", "score"),
                    ColSpec("long", "start"),
                    ColSpec("long", "end"),
                ]
            ),
        )

    @staticmethod
    def input_example() -> pd.DataFrame:
        return pd.DataFrame(
            {
                QUESTION_COLUMN: ["Which team won Super Bowl 50?"],
                CONTEXT_COLUMN: [
                    "The Denver Broncos defeated the Carolina Panthers 24–10 to earn their "
                    "third Super Bowl title."
                ],
            }
        )
