"""Text in, text out for the decoder models: language-model and translation bundles, batched
continuation of prompts, batched translation, and a language model's summed NLL over a corpus.

Evaluation and the registered pyfunc models both call these functions, so the served model
decodes exactly as the evaluated one did.

A sequence bundle is a directory like a classification bundle (see registry.py): the model's
`model.safetensors`, `config.json` ({"task": "clm" | "translate", "model": ..., the fields of
`SequenceBundleConfig`}) and, once registered, `tokenizer.json`.

Text as the models saw it in training (encode.py): each line's ids without special tokens, then
[EOS]. A language model reads a prompt after an [EOS], as the start of a line; a translator reads
the bare source ids and writes [BOS] … [EOS].
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import Tensor

from transformer_pl.config import DecodeParams
from transformer_pl.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from transformer_pl.model import (
    CausalLanguageModel,
    Seq2SeqTransformer,
    TransformerConfig,
    beam_search,
    generate,
    greedy_translate,
)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
DEFAULT_BATCH_SIZE = 32
SequenceTask = Literal["clm", "translate"]
SequenceModel = CausalLanguageModel | Seq2SeqTransformer
_MODEL_CLASSES: dict[str, type[SequenceModel]] = {
    "clm": CausalLanguageModel,
    "translate": Seq2SeqTransformer,
}


@dataclass(frozen=True)
class SequenceBundleConfig:
    """config.json of a language-model ("clm") or translation ("translate") bundle.

    max_length: clm — the training block size, the context scored at once; translate — the
    source ids kept (longer sources are cut, as in training). `decoding`: the defaults the
    registered model decodes with (a training bundle has none: DecodeParams' defaults).
    """

    task: SequenceTask
    model: TransformerConfig
    max_length: int
    source_language: str | None = None
    target_language: str | None = None
    decoding: DecodeParams = field(default_factory=DecodeParams)

    def __post_init__(self) -> None:
        if self.task not in _MODEL_CLASSES:
            raise ValueError(f"not a sequence bundle: task is {self.task!r}")
        if not 1 < self.max_length <= self.model.max_len:
            raise ValueError(
                f"max_length must be in (1, model.max_len={self.model.max_len}], "
                f"got {self.max_length}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SequenceBundleConfig:
        expected = {"task", "model", "max_length", "source_language", "target_language"}
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
    directory: str | Path, tokenizer_path: str | Path | None = None
) -> tuple[SequenceModel, Tokenizer, SequenceBundleConfig]:
    """The bundle's model (eval mode, CPU), its tokenizer (the bundle's own unless
    `tokenizer_path` is given) and its config."""
    directory = Path(directory)
    config = read_sequence_config(directory)
    model = _MODEL_CLASSES[config.task](config.model)
    # Every name is in the file, tied ones included (see TransformerTask.export_weights).
    model.load_state_dict(load_file(directory / WEIGHTS_FILE))
    tokenizer_file = Path(tokenizer_path) if tokenizer_path else directory / TOKENIZER_FILE
    if not tokenizer_file.is_file():
        raise FileNotFoundError(f"tokenizer not found: {tokenizer_file}")
    return model.eval(), Tokenizer.from_file(str(tokenizer_file)), config


def token_ids(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    return [
        encoding.ids
        for encoding in tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
    ]


def _batches(items: Sequence[Any], batch_size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def _decode(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    """Text of `ids` up to the first [EOS] (padding and other special tokens dropped)."""
    ids = list(ids)
    if EOS_ID in ids:
        ids = ids[: ids.index(EOS_ID)]
    return tokenizer.decode(ids, skip_special_tokens=True)


# --- language models --------------------------------------------------------------------------


def line_stream(tokenizer: Tokenizer, texts: Sequence[str]) -> np.ndarray:
    """[EOS], then each text's ids followed by [EOS]: a corpus as the model reads it. Every id
    after the first is one the model predicts, each line's end included."""
    ids = [EOS_ID]
    for line in token_ids(tokenizer, texts):
        ids += [*line, EOS_ID]
    return np.asarray(ids, dtype=np.int64)


def corpus_nll(
    model: CausalLanguageModel,
    stream: np.ndarray,
    block_size: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> float:
    """Summed negative log-likelihood (nats) of stream[1:], each id predicted once
    (`token_nll`)."""
    return float(token_nll(model, stream, block_size, batch_size).sum())


@torch.no_grad()
def token_nll(
    model: CausalLanguageModel,
    stream: np.ndarray,
    block_size: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> np.ndarray:
    """The negative log-likelihood (nats) of each id of stream[1:], in order.

    The stream is cut into windows of block_size + 1 ids that overlap by one, so the last id of a
    window is the first input of the next: every id is predicted, from the ids before it in its
    window (the block size the model was trained on), never from the future.
    """
    starts = range(0, len(stream) - 1, block_size)
    windows = [torch.from_numpy(stream[start : start + block_size + 1]) for start in starts]
    losses: list[np.ndarray] = []
    for batch in _batches(windows, batch_size):
        inputs = pad_right([window[:-1] for window in batch])
        targets = pad_right([window[1:] for window in batch], value=-100)
        logits = model(inputs, (inputs != PAD_ID).long()).logits
        nll = F.cross_entropy(logits.transpose(1, 2).float(), targets, reduction="none")
        losses += [
            row[: len(window) - 1].double().numpy() for row, window in zip(nll, batch, strict=True)
        ]
    return np.concatenate(losses) if losses else np.zeros(0)


def pad_right(sequences: Sequence[Tensor], value: int = PAD_ID) -> Tensor:
    return torch.nn.utils.rnn.pad_sequence(list(sequences), batch_first=True, padding_value=value)


@torch.no_grad()
def generate_texts(
    model: CausalLanguageModel,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    decoding: DecodeParams,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[str]:
    """The continuation of each prompt: up to `max_new_tokens` tokens, greedy or sampled, ending
    at the line's [EOS] with `stop_at_eos`; without it, later lines follow after newlines.

    Prompts longer than the model's window keep their last tokens. Byte-level BPE keeps the
    space that separates a continuation from its prompt, so prompt + continuation is the text.
    """
    room = model.config.max_len - decoding.max_new_tokens
    if room < 1:
        raise ValueError(
            f"max_new_tokens ({decoding.max_new_tokens}) leaves no room for a prompt within "
            f"max_len={model.config.max_len}"
        )
    generator = None
    if decoding.do_sample and decoding.seed is not None:
        generator = torch.Generator().manual_seed(decoding.seed)
    continuations: list[str] = []
    for batch in _batches(token_ids(tokenizer, prompts), batch_size):
        contexts = [torch.tensor([EOS_ID, *ids][-room:]) for ids in batch]
        # Left padding: every row's next token is then at the end (see model.generate).
        input_ids = pad_right([context.flip(0) for context in contexts]).flip(1)
        mask = pad_right([torch.ones_like(context) for context in contexts], value=0).flip(1)
        output = generate(
            model,
            input_ids,
            mask,
            max_new_tokens=decoding.max_new_tokens,
            do_sample=decoding.do_sample,
            temperature=decoding.temperature,
            top_k=decoding.top_k,
            top_p=decoding.top_p,
            eos_token_id=EOS_ID if decoding.stop_at_eos else None,
            generator=generator,
        )
        for row in output[:, input_ids.size(1) :].tolist():
            lines = _split_lines(row)
            continuations.append(
                "\n".join(tokenizer.decode(line, skip_special_tokens=True) for line in lines)
            )
    return continuations


def _split_lines(ids: list[int]) -> list[list[int]]:
    lines: list[list[int]] = [[]]
    for token in ids:
        if token == EOS_ID:
            lines.append([])
        else:
            lines[-1].append(token)
    if len(lines) > 1 and not lines[-1]:
        lines.pop()  # the line just ended
    return lines


# --- translation ------------------------------------------------------------------------------


@torch.no_grad()
def translate_texts(
    model: Seq2SeqTransformer,
    tokenizer: Tokenizer,
    sources: Sequence[str],
    decoding: DecodeParams,
    max_length: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[str]:
    """One translation per source: beam search (`beam_size` > 1, `length_penalty`) or greedy,
    at most `max_new_tokens` tokens. Sources keep their first `max_length` ids, as in training;
    they are batched by length (less padding) and returned in input order."""
    # An empty source still needs one position for the encoder to attend to.
    ids = [source[:max_length] or [EOS_ID] for source in token_ids(tokenizer, sources)]
    order = sorted(range(len(ids)), key=lambda index: len(ids[index]))
    translations: dict[int, str] = {}
    for batch in _batches(order, batch_size):
        source_ids = pad_right([torch.tensor(ids[index]) for index in batch])
        source_mask = (source_ids != PAD_ID).long()
        if decoding.beam_size > 1:
            tokens = beam_search(
                model,
                source_ids,
                source_mask,
                BOS_ID,
                EOS_ID,
                decoding.max_new_tokens,
                beam_size=decoding.beam_size,
                length_penalty=decoding.length_penalty,
            )
        else:
            tokens = greedy_translate(
                model, source_ids, source_mask, BOS_ID, EOS_ID, decoding.max_new_tokens
            )
        for index, row in zip(batch, tokens.tolist(), strict=True):
            translations[index] = _decode(tokenizer, row).strip()
    return [translations[index] for index in range(len(ids))]
