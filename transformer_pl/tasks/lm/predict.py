"""Language modelling as served and scored: prompts continued (greedy or sampled), and a
corpus's negative log-likelihood token by token.

A language model reads a prompt after an [EOS], as the start of a line. Evaluation and the
registered pyfunc model both call these functions, so the served model decodes exactly as the
evaluated one did.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from transformer_pl.data.tokenizer import EOS_ID, PAD_ID
from transformer_pl.model import CausalLanguageModel, generate
from transformer_pl.params import DecodeParams
from transformer_pl.serving import PREDICT_BATCH_SIZE
from transformer_pl.tasks.sequence import (
    DEFAULT_BATCH_SIZE,
    DecodingModel,
    SequenceBundleConfig,
    batches,
    load_sequence_bundle,
    pad_right,
    token_ids,
)

TASK = "lm"


def load_lm_bundle(
    directory: str | Path, tokenizer_path: str | Path | None = None
) -> tuple[CausalLanguageModel, Tokenizer, SequenceBundleConfig]:
    """A language-model bundle's model (eval mode, CPU), tokenizer and config."""
    return load_sequence_bundle(directory, TASK, CausalLanguageModel, tokenizer_path)


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
    for batch in batches(windows, batch_size):
        inputs = pad_right([window[:-1] for window in batch])
        targets = pad_right([window[1:] for window in batch], value=-100)
        logits = model(inputs, (inputs != PAD_ID).long()).logits
        nll = F.cross_entropy(logits.transpose(1, 2).float(), targets, reduction="none")
        losses += [
            row[: len(window) - 1].double().numpy() for row, window in zip(nll, batch, strict=True)
        ]
    return np.concatenate(losses) if losses else np.zeros(0)


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
    for batch in batches(token_ids(tokenizer, prompts), batch_size):
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


class TransformerGeneratorModel(DecodingModel):
    """Text generation pyfunc: prompts in, their `continuation`s out (see `generate_texts`)."""

    load_bundle = staticmethod(load_lm_bundle)
    output_column = "continuation"
    decoding_params = (
        "max_new_tokens",
        "stop_at_eos",
        "do_sample",
        "temperature",
        "top_k",
        "top_p",
        "seed",
    )
    example = "The"

    def decode_texts(self, texts: list[str], decoding: DecodeParams) -> list[str]:
        return generate_texts(self.model, self.tokenizer, texts, decoding, PREDICT_BATCH_SIZE)
