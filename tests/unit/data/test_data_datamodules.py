"""Datamodules: BERT masking statistics, length bucketing, and the batch contract per task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

from transformer_pl.params import EncodeParams, TokenizerParams, TrainerParams
from transformer_pl.tasks.settings import dataset_spec
from transformer_pl.data.datamodules import (
    IGNORE_INDEX,
    CausalLMDataModule,
    ClassificationDataModule,
    LengthBucketSampler,
    MaskedLMDataModule,
    SeededOrder,
    Seq2SeqDataModule,
    ShardedBatchSampler,
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
from transformer_pl.model import TransformerConfig
from transformer_pl.tasks.classify.module import ClassifierModule
from transformer_pl.lightning.trainer import build_trainer

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


def rank_batches(make_sampler, world_size: int) -> list[list[list[int]]]:
    """Per rank, the batches of `make_sampler(rank, world_size)`."""
    return [list(make_sampler(rank, world_size)) for rank in range(world_size)]


@pytest.mark.parametrize("shuffle", [True, False])
def test_ranks_share_out_the_global_batches_of_one_process(shuffle):
    def make(rank: int, world_size: int) -> ShardedBatchSampler:
        return ShardedBatchSampler(SeededOrder(53, seed=5, shuffle=shuffle), 8, rank, world_size)

    (single,) = rank_batches(make, 1)
    ranks = rank_batches(make, 2)
    assert len(single) == len(ranks[0]) == len(ranks[1]) == len(make(0, 2)) == 7
    for step, batch in enumerate(single[:-1]):
        assert ranks[0][step] + ranks[1][step] == batch  # this step's examples, split in two
        assert not set(ranks[0][step]) & set(ranks[1][step])
    # The last global batch (53 = 6 * 8 + 5) is topped up to an even split: 3 + 3.
    last = [ranks[0][-1], ranks[1][-1]]
    assert [len(part) for part in last] == [3, 3]
    assert set(last[0] + last[1]) == set(single[-1])
    every = [i for batches in ranks for batch in batches for i in batch]
    assert len(every) == 54 and set(every) == set(range(53))  # one example twice


def test_length_buckets_split_across_ranks_in_lockstep():
    # 301 = 5 chunks of 60 (5 batches of 12 each) + a last chunk holding one example.
    lengths = np.random.default_rng(1).integers(1, 200, size=301)

    def make(rank: int, world_size: int) -> LengthBucketSampler:
        return LengthBucketSampler(
            lengths, 12, 3, chunk_batches=5, rank=rank, world_size=world_size
        )

    (single,) = rank_batches(make, 1)
    ranks = rank_batches(make, 4)
    assert {len(batches) for batches in ranks} == {len(single)} == {26}
    for step, batch in enumerate(single):
        parts = [ranks[rank][step] for rank in range(4)]
        assert len({len(part) for part in parts}) == 1  # every rank steps with as many examples
        assert set().union(*parts) == set(batch)
        if len(batch) == 12:
            assert [i for part in parts for i in part] == batch


def test_batch_size_must_divide_over_the_ranks():
    with pytest.raises(ValueError, match=r"batch size 10 \(the global batch\).* 4 processes"):
        ShardedBatchSampler(SeededOrder(20, seed=0, shuffle=False), 10, rank=0, world_size=4)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> dict[str, Path]:
    """Small encoded datasets for classification and translation."""
    root = tmp_path_factory.mktemp("encoded")
    tokenizer = root / "tokenizer.json"
    train_tokenizer(
        sentences(100, 0), TokenizerParams(kind="wordpiece", vocab_size=100, min_frequency=1)
    ).save(str(tokenizer))
    classify = dataset_spec(
        task="classify",
        path="x",
        splits={"train": "t"},
        label_column="l",
        label_names=["neg", "pos"],
    )
    translate = dataset_spec(
        task="translate",
        path="x",
        format="parallel_text",
        splits={"train": "t"},
        source_language="a",
        target_language="b",
    )
    labeled = {
        split: pd.DataFrame({"text": sentences(40, seed), "label": [0, 1] * 20})
        for seed, split in enumerate(("train", "val"))
    }
    pairs = {
        split: pd.DataFrame({"text": sentences(40, seed), "target": sentences(40, seed + 9)})
        for seed, split in enumerate(("train", "val"))
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
    assert first_batch(datamodule, "val_dataloader")["labels"].tolist() == [0, 1] * 4


class RecordBatches(pl.Callback):
    def __init__(self) -> None:
        self.epochs: dict[int, list[list[list[int]]]] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        batch = args[1]
        self.epochs.setdefault(trainer.current_epoch, []).append(batch["input_ids"].tolist())


def test_the_trainer_reshuffles_the_length_buckets_every_epoch(encoded, tmp_path):
    trainer = build_trainer(
        TrainerParams(accelerator="cpu", devices=1), output_dir=tmp_path, seed=0, max_epochs=2
    )
    record = RecordBatches()
    trainer.callbacks.append(record)
    config = TransformerConfig(vocab_size=100, d_model=16, n_heads=2, n_layers=1, d_ff=32)
    datamodule = ClassificationDataModule(encoded["classify"], batch_size=8, seed=0)

    trainer.fit(ClassifierModule(config, num_labels=2), datamodule=datamodule)

    assert [len(record.epochs[epoch]) for epoch in (0, 1)] == [5, 5]  # 40 examples / 8
    assert record.epochs[0] != record.epochs[1]


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
    first = next(iter(train))["labels"]
    assert torch.equal(next(iter(train))["labels"], first)  # masks are a function of the epoch
    train.batch_sampler.set_epoch(1)  # what Lightning calls before each epoch
    assert not torch.equal(next(iter(train))["labels"], first)
    val = datamodule.val_dataloader()
    first, second = (next(iter(val))["labels"] for _ in range(2))
    assert torch.equal(first, second) and (first != IGNORE_INDEX).any()


def test_causal_lm_labels_are_the_inputs_except_padding(encoded):
    datamodule = CausalLMDataModule(
        encoded["classify"], batch_size=8, seed=0, splits=("pretrain", "pretrain_val")
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
