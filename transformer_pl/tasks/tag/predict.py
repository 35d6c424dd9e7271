"""Named-entity recognition as served and scored: words (or raw text, split into words) in,
a tag per word and the entities they spell out.

A tag bundle's config.json holds, besides the task and model config, `tag_names` (the head's
classes, in order) and `max_length` (the encode stage's sequence cap). A sentence whose tokens do
not fit in one input is read in consecutive chunks of whole words that do: no word goes
untagged, whatever the sentence's length.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import Array, Object, Property
from safetensors.torch import load_model
from tokenizers import Tokenizer

from transformer_pl.bundle import (
    WEIGHTS_FILE,
    bundle_file,
    bundle_tokenizer,
    read_bundle_config,
)
from transformer_pl.data.tokenizer import CLS_ID, SEP_ID
from transformer_pl.model import TokenClassifier, TransformerConfig
from transformer_pl.serving import PREDICT_BATCH_SIZE, TEXT_COLUMN, BundleModel
from transformer_pl.tasks.sequence import pad_right
from transformer_pl.tasks.tag.iob import entity_spans

TASK = "tag"
ENTITIES_COLUMN = "entities"
# Words as CoNLL-2003 cuts them: runs of word characters (joined by - ' . inside a word, as in
# "1996-08-30", "O'Neill", "U.S"), and every other non-space character on its own.
WORD = re.compile(r"\w+(?:[-'.]\w+)*|[^\w\s]")


@dataclass(frozen=True)
class TaggerBundleConfig:
    task: str
    model: TransformerConfig
    tag_names: list[str]
    max_length: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaggerBundleConfig:
        if data.get("task") != TASK:
            raise ValueError(f"a {data.get('task')!r} bundle, not a {TASK!r} one")
        return cls(
            task=TASK,
            model=TransformerConfig.from_dict(data["model"]),
            tag_names=list(data["tag_names"]),
            max_length=int(data["max_length"]),
        )


def load_tagger_bundle(
    directory: str | Path, tokenizer_path: str | Path | None = None
) -> tuple[TokenClassifier, Tokenizer, TaggerBundleConfig]:
    """A tag bundle's model (eval mode, CPU), its tokenizer (the bundle's own unless
    `tokenizer_path` is given) and its config."""
    config = TaggerBundleConfig.from_dict(read_bundle_config(directory))
    model = TokenClassifier(config.model, len(config.tag_names))
    load_model(model, str(bundle_file(directory, WEIGHTS_FILE)))
    return model.eval(), bundle_tokenizer(directory, tokenizer_path), config


def word_chunks(token_counts: Sequence[int], room: int) -> list[tuple[int, int]]:
    """(first word, end word) of consecutive chunks whose tokens fit in `room`; a word longer
    than `room` on its own is a chunk (its first `room` tokens are read)."""
    chunks, start, used = [], 0, 0
    for index, count in enumerate(token_counts):
        if used + count > room and index > start:
            chunks.append((start, index))
            start, used = index, 0
        used += count
    if start < len(token_counts) or not chunks:
        chunks.append((start, len(token_counts)))
    return chunks


@torch.no_grad()
def tag_words(
    model: TokenClassifier,
    tokenizer: Tokenizer,
    config: TaggerBundleConfig,
    sentences: Sequence[Sequence[str]],
    batch_size: int = PREDICT_BATCH_SIZE,
) -> list[list[str]]:
    """An IOB2 tag per word of each sentence (a word with no token gets O): each chunk of words
    is read as [CLS] tokens [SEP], as encode built the training inputs, and a word's tag is the
    most likely class at its first token."""
    room = config.max_length - 2
    inputs: list[list[int]] = []
    firsts: list[list[int]] = []  # per input: the position of each word's first token, or -1
    owners: list[tuple[int, int]] = []  # per input: (sentence, its first word)
    encodings = tokenizer.encode_batch(
        [list(words) for words in sentences], is_pretokenized=True, add_special_tokens=False
    )
    for sentence, encoding in enumerate(encodings):
        words = len(sentences[sentence])
        starts: list[int] = [-1] * words
        counts = [0] * words
        for position, word in enumerate(encoding.word_ids):
            if word is not None:
                if counts[word] == 0:
                    starts[word] = position
                counts[word] += 1
        for first, end in word_chunks(counts, room):
            offset = next((starts[w] for w in range(first, end) if starts[w] >= 0), 0)
            ids = encoding.ids[offset : offset + sum(counts[first:end])][:room]
            inputs.append([CLS_ID, *ids, SEP_ID])
            firsts.append(
                [
                    starts[w] - offset + 1 if 0 <= starts[w] - offset < room else -1
                    for w in range(first, end)
                ]
            )
            owners.append((sentence, first))
    tags = [["O"] * len(words) for words in sentences]
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]), reverse=True)
    pad_id = config.model.pad_token_id
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        input_ids = pad_right([torch.tensor(inputs[i]) for i in batch], value=pad_id)
        predicted = model(input_ids, (input_ids != pad_id).long()).logits.argmax(dim=-1)
        for row, index in enumerate(batch):
            sentence, first = owners[index]
            for word, position in enumerate(firsts[index]):
                if position >= 0:
                    tags[sentence][first + word] = config.tag_names[int(predicted[row, position])]
    return tags


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """The text's words (`WORD`) and each one's character span."""
    matches = list(WORD.finditer(text))
    return [match.group() for match in matches], [match.span() for match in matches]


def tag_texts(
    model: TokenClassifier,
    tokenizer: Tokenizer,
    config: TaggerBundleConfig,
    texts: Sequence[str],
    batch_size: int = PREDICT_BATCH_SIZE,
) -> list[list[dict[str, Any]]]:
    """The entities of each raw text: `type`, `start`, `end` (character offsets, end
    exclusive) and `text`, in order."""
    split = [split_words(text) for text in texts]
    tags = tag_words(model, tokenizer, config, [words for words, _ in split], batch_size)
    entities = []
    for text, (_, spans), sentence_tags in zip(texts, split, tags, strict=True):
        found = []
        for kind, first, end in entity_spans(sentence_tags):
            start, stop = spans[first][0], spans[end - 1][1]
            found.append({"type": kind, "start": start, "end": stop, "text": text[start:stop]})
        entities.append(found)
    return entities


class TransformerTaggerModel(BundleModel):
    """Named-entity pyfunc: a row per text with its `entities` (see `tag_texts`)."""

    load_bundle = staticmethod(load_tagger_bundle)

    def answer(self, texts: list[str], params: dict[str, Any]) -> pd.DataFrame:
        return pd.DataFrame(
            {ENTITIES_COLUMN: tag_texts(self.model, self.tokenizer, self.config, texts)}
        )

    @staticmethod
    def signature(bundle_directory: Path) -> ModelSignature:
        entity = Object(
            [
                Property("type", "string"),
                Property("start", "long"),
                Property("end", "long"),
                Property("text", "string"),
            ]
        )
        return ModelSignature(
            inputs=Schema([ColSpec("string", TEXT_COLUMN)]),
            outputs=Schema([ColSpec(Array(entity), ENTITIES_COLUMN)]),
        )

    @staticmethod
    def input_example() -> pd.DataFrame:
        return pd.DataFrame({TEXT_COLUMN: ["EU rejects German call to boycott British lamb."]})
