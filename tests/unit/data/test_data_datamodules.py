"""Datamodules: BERT masking statistics, length bucketing, and the batch contract per task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from transformer_pl.config import DatasetSpec, EncodeParams, TokenizerParams
from transformer_pl.data.datamodules import (
    IGNORE_INDEX,
    CausalLMDataModule,
    ClassificationDataModule,
    LengthBucketSampler,
    MaskedLMDataModule,
    Seq2SeqDataModule,
    mask_tokens,
)
from transformer_pl.data.encode import encode_splits
from transformer_pl.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    FIRST_REGULAR_ID,
    MASK_ID,
    PAD_ID,
    train_tokenizer,
)

WORDS = np.array(["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"])


def sentences(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(2, 30))) for _ in range(n)]


def test_masking_chooses_the_probability_of_regular_tokens_split_80_10_10():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(FIRST_REGULAR_ID, 1000, (400, 256), generator=generator)
    ids[:, :3] = torch.tensor([2, 5, 6])  # [CLS] [BOS] [EOS]: special, never chosen
    ids[:, -20:] = PAD_ID
    masked, labels = mask_tokens(ids, 0.15, 1000, torch.Generator().manual_seed(1))
    chosen = labels != IGNORE_INDEX
    regular = ids >= FIRST_REGULAR_ID
    assert not chosen[~regular].any() and torch.equal(masked[~regular], ids[~regular])
    assert torch.equal(labels[chosen], ids[chosen])
    assert chosen.sum() / regular.sum() == pytest.approx(0.15, abs=0.005)
    to_mask = (masked == MASK_ID) & chosen
    unchanged = (masked == ids) & chosen
    replaced = chosen & ~to_mask & ~unchanged
    n = chosen.sum()
    assert to_mask.sum() / n == pytest.approx(0.8, abs=0.01)
    assert replaced.sum() / n == pytest.approx(0.1, abs=0.01)  # minus the rare same-id draws
    assert unchanged.sum() / n == pytest.approx(0.1, abs=0.01)
    assert (masked[replaced] >= FIRST_REGULAR_ID).all() and (masked[replaced] < 1000).all()
    again, _ = mask_tokens(ids, 0.15, 1000, torch.Generator().manual_seed(1))
    assert torch.equal(masked, again)


def test_length_buckets_cover_every_index_once_with_similar_lengths():
    lengths = np.random.default_rng(0).integers(1, 500, size=1000)
    sampler = LengthBucketSampler(lengths, batch_size=10, seed=3, chunk_batches=10)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 100
    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    spread = np.mean([np.ptp(lengths[batch]) for batch in batches])
    random_spread = np.mean([np.ptp(batch) for batch in lengths.reshape(100, 10)])
    assert spread < random_spread / 5
    assert batches == list(LengthBucketSampler(lengths, 10, seed=3, chunk_batches=10))
    sampler.set_epoch(1)
    assert list(sampler) != batches


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> dict[str, Path]:
    """Small encoded datasets for classification and translation."""
    root = tmp_path_factory.mktemp("encoded")
    tokenizer = root / "tokenizer.json"
    train_tokenizer(sentences(100, 0), TokenizerParams(vocab_size=100, min_frequency=1)).save(
        str(tokenizer)
    )
    classify = DatasetSpec(
        task="classify",
        path="x",
        splits={"train": "t"},
        label_column="l",
        label_names=["neg", "pos"],
    )
    translate = DatasetSpec(
        task="translate",
        path="x",
        format="parallel_text",
        splits={"train": "t"},
        source_language="a",
        target_language="b",
    )
    labeled = {
        split: pd.DataFrame({"text": sentences(40, seed), "label": [0, 1] * 20})
        for seed, split in enumerate(("train", "val", "test"))
    }
    pairs = {
        split: pd.DataFrame({"text": sentences(40, seed), "target": sentences(40, seed + 9)})
        for seed, split in enumerate(("train", "val", "test"))
    }
    params = EncodeParams(max_length=16, block_size=16)
    encode_splits(labeled, tokenizer, classify, params, root / "classify")
    encode_splits(pairs, tokenizer, translate, params, root / "translate")
    return {"classify": root / "classify", "translate": root / "translate"}


def first_batch(datamodule, loader: str = "train_dataloader") -> dict[str, torch.Tensor]:
    datamodule.setup("fit")
    return next(iter(getattr(datamodule, loader)()))


def test_classification_batches_pad_dynamically(encoded):
    datamodule = ClassificationDataModule(encoded["classify"], batch_size=8, seed=0)
    batch = first_batch(datamodule)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].shape[1] == batch["attention_mask"].sum(1).max()  # no extra pad
    assert torch.equal(batch["attention_mask"], (batch["input_ids"] != PAD_ID).long())
    assert batch["labels"].shape == (8,) and set(batch["labels"].tolist()) <= {0, 1}
    again = first_batch(ClassificationDataModule(encoded["classify"], batch_size=8, seed=0))
    assert torch.equal(batch["input_ids"], again["input_ids"])
    assert first_batch(datamodule, "test_dataloader")["labels"].tolist() == [0, 1] * 4


def test_masked_lm_trains_on_fresh_masks_and_validates_on_fixed_ones(encoded):
    datamodule = MaskedLMDataModule(encoded["classify"], batch_size=8, seed=0, mask_probability=0.3)
    batch = first_batch(datamodule)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    predicted = batch["labels"] != IGNORE_INDEX
    assert predicted.any() and (batch["attention_mask"][predicted] == 1).all()
    assert (batch["input_ids"][predicted] == MASK_ID).any()
    same_seed = MaskedLMDataModule(encoded["classify"], batch_size=8, seed=0, mask_probability=0.3)
    assert torch.equal(first_batch(same_seed)["labels"], batch["labels"])
    train = datamodule.train_dataloader()
    first, second = (next(iter(train))["labels"] for _ in range(2))  # two epochs
    assert not torch.equal(first, second)
    val = datamodule.val_dataloader()
    first, second = (next(iter(val))["labels"] for _ in range(2))
    assert torch.equal(first, second) and (first != IGNORE_INDEX).any()


def test_causal_lm_labels_are_the_inputs_except_padding(encoded):
    datamodule = CausalLMDataModule(
        encoded["classify"], batch_size=8, seed=0, splits=("pretrain", "pretrain_val", None)
    )
    batch = first_batch(datamodule, "val_dataloader")
    padding = batch["attention_mask"] == 0
    assert torch.equal(batch["labels"][~padding], batch["input_ids"][~padding])
    assert (batch["labels"][padding] == IGNORE_INDEX).all()


def test_seq2seq_labels_are_the_decoder_inputs_shifted_left(encoded):
    batch = first_batch(Seq2SeqDataModule(encoded["translate"], batch_size=8, seed=0))
    assert set(batch) == {"source_ids", "source_mask", "target_ids", "target_mask", "labels"}
    assert (batch["target_ids"][:, 0] == BOS_ID).all()
    lengths = batch["target_mask"].sum(1)
    for row, length in enumerate(lengths.tolist()):
        assert batch["labels"][row, length - 1] == EOS_ID
        assert torch.equal(batch["labels"][row, : length - 1], batch["target_ids"][row, 1:length])
        assert (batch["labels"][row, length:] == IGNORE_INDEX).all()
    assert torch.equal(batch["source_mask"], (batch["source_ids"] != PAD_ID).long())
