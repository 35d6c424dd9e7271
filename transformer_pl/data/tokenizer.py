"""Tokenizer: a Hugging Face `tokenizers` byte-level BPE or WordPiece, trained on training text.

Trained on the train split only (+ unlabeled text where the dataset has it and `use_unlabeled`;
translation: both sides, one joint vocabulary, so that source and target share embeddings). The
special tokens come first, so their ids are fixed for every dataset and model:

    [PAD] 0   [UNK] 1   [CLS] 2   [SEP] 3   [MASK] 4   [BOS] 5   [EOS] 6

The post-processor wraps a single text as [CLS] … [SEP] (classification); encode adds [BOS]/[EOS]
itself where it needs them. The normalizer also drops HTML line breaks and applies NFKC (and
lowercasing), so raw text at serving time is normalised like the cleaned training text.

Byte-level BPE (the default) trains the same vocabulary from the same text in every process.
WordPiece does not always: the trainer numbers the "##" continuation pieces in hash-map order,
and merges of equal count are taken in id order, so near the vocabulary cut-off a different
piece can win from one process to the next (seen on a few hundred IMDB reviews).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers.processors import TemplateProcessing

from transformer_pl.params import DatasetSpec, TokenizerParams

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID, BOS_ID, EOS_ID = range(len(SPECIAL_TOKENS))
FIRST_REGULAR_ID = len(SPECIAL_TOKENS)  # ids below this are special

log = logging.getLogger(__name__)


def new_tokenizer(params: TokenizerParams) -> tuple[Tokenizer, trainers.Trainer]:
    """An untrained tokenizer and the trainer that fits its vocabulary."""
    steps = [normalizers.Replace(Regex(r"<br\s*/?>"), " "), normalizers.NFKC()]
    if params.lowercase:
        steps.append(normalizers.Lowercase())
    options: dict[str, Any] = {
        "vocab_size": params.vocab_size,
        "min_frequency": params.min_frequency,
        "special_tokens": list(SPECIAL_TOKENS),
        "show_progress": False,
    }
    if params.kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer: trainers.Trainer = trainers.WordPieceTrainer(**options)
    else:  # byte-level BPE: every string is representable, so [UNK] never occurs
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
        options["initial_alphabet"] = pre_tokenizers.ByteLevel.alphabet()
        trainer = trainers.BpeTrainer(**options)
    tokenizer.normalizer = normalizers.Sequence(steps)
    return tokenizer, trainer


def train_tokenizer(texts: Iterable[str], params: TokenizerParams) -> Tokenizer:
    tokenizer, trainer = new_tokenizer(params)
    tokenizer.train_from_iterator(texts, trainer)
    if params.kind == "wordpiece":
        log.warning(
            "tokenizer.kind wordpiece: the vocabulary may differ between runs on the same text "
            "(ties at the cut-off); use bpe for bit-reproducible runs"
        )
        # WordPiece matching does not depend on ids: number the pieces in sorted order, so the
        # same vocabulary always gives the same ids.
        regular = sorted(token for token in tokenizer.get_vocab() if token not in SPECIAL_TOKENS)
        vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *regular])}
        tokenizer.model = models.WordPiece(vocab, unk_token="[UNK]")
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == expected_id, f"{token} is not id {expected_id}"
    tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", CLS_ID), ("[SEP]", SEP_ID)],
    )
    return tokenizer


def training_texts(
    frames: Mapping[str, pd.DataFrame], spec: DatasetSpec, params: TokenizerParams
) -> tuple[list[str], list[str]]:
    """The texts to train on and the names of the splits (and sides) they came from."""
    texts = frames["train"]["text"].tolist()
    sources = ["train"]
    if spec.parallel:
        texts += frames["train"]["target"].tolist()
        sources = [f"train ({side})" for side in spec.sides]
    if params.use_unlabeled and "unlabeled" in frames:
        texts += frames["unlabeled"]["text"].tolist()
        sources.append("unlabeled")
    return texts, sources


def unknown_fraction(tokenizer: Tokenizer, texts: list[str]) -> float:
    """Share of [UNK] among the tokens of `texts` (0 for byte-level BPE)."""
    ids = [
        id_
        for encoding in tokenizer.encode_batch(texts, add_special_tokens=False)
        for id_ in encoding.ids
    ]
    return sum(id_ == UNK_ID for id_ in ids) / max(len(ids), 1)
