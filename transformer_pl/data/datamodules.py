"""LightningDataModules over the encoded splits (encode.py), one per task.

Every batch is a dict of tensors, padded on the right with [PAD] (id 0); masks are 1 on real
tokens and 0 on padding; labels are -100 wherever nothing is predicted.

    MaskedLMDataModule   input_ids, attention_mask, labels    packed blocks, masked at batch time
    CausalLMDataModule   input_ids, attention_mask, labels    labels = input_ids (the model shifts)
    ClassificationDataModule  input_ids, attention_mask, labels (class index)
    Seq2SeqDataModule    source_ids, source_mask, target_ids ([BOS] y…), target_mask,
                         labels (y… [EOS])
    TaggingDataModule    input_ids, attention_mask, labels (a tag index per token, -100 on
                         all but a word's first token)
    QuestionAnsweringDataModule  input_ids, attention_mask, start_positions, end_positions

Randomness (shuffling, masking) comes from generators seeded with `seed` and the epoch, so two runs
with the same seed see the same batches and masks; each training epoch still differs from the last.

`batch_size` is the global batch: under DDP (torchrun, SLURM) every loader cuts the same global
batches as a one-process run and each rank takes its slice of each (`ShardedBatchSampler`), so a
step of an N-process run trains on the examples, masked alike, of the same step of a one-process
run. The trainer therefore leaves the loaders as they are (`use_distributed_sampler=False`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import lightning.pytorch as pl
import numpy as np
import pyarrow.compute as pc
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Sampler

from transformer_pl.data.encode import IGNORE_INDEX, META
from transformer_pl.data.tokenizer import FIRST_REGULAR_ID, MASK_ID, PAD_ID

Example = dict[str, Tensor]
Batch = dict[str, Tensor]


def pad(sequences: Sequence[Tensor], value: int = PAD_ID) -> Tensor:
    return pad_sequence(list(sequences), batch_first=True, padding_value=value)


def real_tokens(ids: Tensor) -> Tensor:
    """The attention mask: 1 on tokens, 0 on padding."""
    return (ids != PAD_ID).long()


def mask_tokens(
    ids: Tensor, probability: float, vocab_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """BERT masking. Each regular (non-special, non-pad) token is chosen with `probability`; a
    chosen token becomes [MASK] with probability 0.8, a random regular token with 0.1, and
    stays itself with 0.1.
    Returns (masked ids, labels: the original id where chosen, -100 elsewhere)."""
    regular = ids >= FIRST_REGULAR_ID
    chosen = regular & (torch.rand(ids.shape, generator=generator) < probability)
    labels = torch.where(chosen, ids, IGNORE_INDEX)
    draw = torch.rand(ids.shape, generator=generator)
    to_mask = chosen & (draw < 0.8)
    to_random = chosen & (draw >= 0.8) & (draw < 0.9)
    random_ids = torch.randint(FIRST_REGULAR_ID, vocab_size, ids.shape, generator=generator)
    masked = torch.where(to_mask, MASK_ID, ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels


class SeededOrder(Sampler[int]):
    """Every index once: in a random order fixed by (seed, epoch), or in order. Lightning calls
    `set_epoch` before each epoch through the batch sampler's `sampler`, as for torch's
    BatchSampler."""

    def __init__(self, size: int, seed: int, shuffle: bool) -> None:
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch])

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        order = self.generator().permutation(self.size) if self.shuffle else np.arange(self.size)
        return iter(order.tolist())


class ShardedBatchSampler(Sampler[list[int]]):
    """Global batches of `batch_size` examples, cut from `sampler`'s order whatever the number of
    processes; rank r of `world_size` yields the r-th of `world_size` equal slices of each.

    The ranks' shards are disjoint and each rank yields as many batches, of the same size, as
    every other (DDP waits for all ranks at every step): a last global batch that does not
    divide evenly is topped up by repeating its first examples.
    """

    def __init__(
        self, sampler: SeededOrder, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if batch_size % world_size:
            raise ValueError(
                f"batch size {batch_size} (the global batch) does not divide evenly over "
                f"{world_size} processes"
            )
        self.sampler = sampler
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def global_batches(self) -> list[np.ndarray]:
        order = np.fromiter(self.sampler, dtype=np.int64, count=len(self.sampler))
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            per_rank = -(-len(batch) // self.world_size)
            padded = np.resize(batch, per_rank * self.world_size)  # repeats from the start
            yield padded[self.rank * per_rank : (self.rank + 1) * per_rank].tolist()


class LengthBucketSampler(ShardedBatchSampler):
    """Batches of similar length, in a random order: shuffle all indices, cut them into chunks of
    `chunk_batches` batches, sort each chunk by length, cut it into batches, shuffle the batches.
    Padding shrinks to within-chunk length differences while batches stay random. Deterministic for
    a (seed, epoch); sharded across ranks like any `ShardedBatchSampler` (a rank's slice of a
    batch holds neighbouring lengths)."""

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int,
        chunk_batches: int = 50,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        order = SeededOrder(len(lengths), seed, shuffle=True)
        super().__init__(order, batch_size, rank, world_size)
        self.lengths = np.asarray(lengths)
        self.chunk_size = batch_size * chunk_batches

    def global_batches(self) -> list[np.ndarray]:
        rng = self.sampler.generator()
        order = rng.permutation(len(self.lengths))
        batches = []
        for start in range(0, len(order), self.chunk_size):
            chunk = order[start : start + self.chunk_size]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [
                chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)
            ]
        return [batches[index] for index in rng.permutation(len(batches))]


class _EncodedDataModule(pl.LightningDataModule):
    """Loads `<encoded_dir>/<split>` (datasets.load_from_disk) on setup; subclasses collate.
    A training split and a validation split: encode writes no test split, evaluate alone reads
    test (from its split file)."""

    columns: tuple[str, ...] = ("input_ids",)

    def __init__(
        self,
        encoded_dir: str | Path,
        batch_size: int,
        seed: int,
        splits: tuple[str, str] = ("train", "val"),
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.encoded_dir = Path(encoded_dir)
        self.batch_size = batch_size
        self.seed = seed
        self.train_split, self.val_split = splits
        self.num_workers = num_workers
        self.datasets: dict[str, datasets.Dataset] = {}

    def setup(self, stage: str | None = None) -> None:
        for split in (self.train_split, self.val_split):
            if split not in self.datasets:
                path = self.encoded_dir / split
                if not path.is_dir():
                    raise FileNotFoundError(f"no encoded split '{split}' at {path}; run encode")
                dataset = datasets.load_from_disk(str(path))
                self.datasets[split] = dataset.with_format("torch", columns=list(self.columns))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_split, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_split, shuffle=False)

    def collate(self, examples: list[Example]) -> Batch:
        raise NotImplementedError

    def shard(self) -> tuple[int, int]:
        """(global rank, world size) of the trainer using this datamodule; (0, 1) outside one."""
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        dataset = self.datasets[split]
        return self._batched(dataset, self._batches(len(dataset), shuffle))

    def _batches(self, size: int, shuffle: bool) -> ShardedBatchSampler:
        order = SeededOrder(size, self.seed, shuffle)
        return ShardedBatchSampler(order, self.batch_size, *self.shard())

    def _batched(self, dataset: Dataset, batch_sampler: ShardedBatchSampler) -> DataLoader:
        return DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            # A seeded generator of its own: workers' seeds are reproducible, and creating an
            # iterator draws nothing from the global RNG (that dropout draws from).
            generator=torch.Generator().manual_seed(self.seed),
        )


class _MaskedExamples(Dataset):
    """Examples masked by a generator seeded from (seed, epoch, index) alone, so an example's
    masks do not depend on the process, worker or batch that draws it: an N-process run masks
    exactly as a one-process run. Training passes its `SeededOrder`, whose epoch Lightning sets
    (fresh masks every epoch); evaluation passes none (the same masks every time, so validation
    losses of different epochs and runs score the same positions)."""

    def __init__(
        self,
        dataset: datasets.Dataset,
        probability: float,
        vocab_size: int,
        seed: int,
        epochs: SeededOrder | None = None,
    ) -> None:
        self.dataset = dataset
        self.probability = probability
        self.vocab_size = vocab_size
        self.seed = seed
        self.epochs = epochs

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Example:
        epoch = self.epochs.epoch if self.epochs is not None else 0
        key = np.random.SeedSequence([self.seed, epoch, index]).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(key))
        ids = self.dataset[index]["input_ids"]
        masked, labels = mask_tokens(ids, self.probability, self.vocab_size, generator)
        return {"input_ids": masked, "labels": labels}


class MaskedLMDataModule(_EncodedDataModule):
    """Packed blocks (IMDB: the `pretrain` / `pretrain_val` splits; a language-model corpus:
    `train` / `val`). Training blocks are masked anew every epoch; val blocks get fixed
    masks. `vocab_size` defaults to the encoded meta's."""

    def __init__(
        self,
        encoded_dir: str | Path,
        batch_size: int,
        seed: int,
        mask_probability: float = 0.15,
        vocab_size: int | None = None,
        splits: tuple[str, str] = ("pretrain", "pretrain_val"),
        num_workers: int = 0,
    ) -> None:
        super().__init__(encoded_dir, batch_size, seed, splits, num_workers)
        self.mask_probability = mask_probability
        self.vocab_size = vocab_size or read_meta(self.encoded_dir)["vocab_size"]

    def collate(self, examples: list[Example]) -> Batch:
        ids = pad([example["input_ids"] for example in examples])
        labels = pad([example["labels"] for example in examples], IGNORE_INDEX)
        return {"input_ids": ids, "attention_mask": real_tokens(ids), "labels": labels}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        batches = self._batches(len(self.datasets[split]), shuffle)
        masked = _MaskedExamples(
            self.datasets[split],
            self.mask_probability,
            self.vocab_size,
            self.seed,
            epochs=batches.sampler if shuffle else None,
        )
        return self._batched(masked, batches)


class CausalLMDataModule(_EncodedDataModule):
    def collate(self, examples: list[Example]) -> Batch:
        ids = pad([example["input_ids"] for example in examples])
        mask = real_tokens(ids)
        labels = torch.where(mask.bool(), ids, IGNORE_INDEX)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class ClassificationDataModule(_EncodedDataModule):
    """Training batches come from a `LengthBucketSampler` (dynamic padding to the batch's
    longest sequence); val keeps the split's order.

    `train_dataset`, when set before training, replaces the encoded train split: rows with
    `targets`, a probability per class that the loss fits instead of `label` (distillation,
    tasks/classify/recipe.py); batches then carry them."""

    columns = ("input_ids", "label")
    train_dataset: datasets.Dataset | None = None

    def __init__(
        self,
        encoded_dir: str | Path,
        batch_size: int,
        seed: int,
        bucket_chunk_batches: int = 50,
        splits: tuple[str, str] = ("train", "val"),
        num_workers: int = 0,
    ) -> None:
        super().__init__(encoded_dir, batch_size, seed, splits, num_workers)
        self.bucket_chunk_batches = bucket_chunk_batches

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None and self.train_split not in self.datasets:
            columns = [*self.columns, "targets"]
            self.datasets[self.train_split] = self.train_dataset.with_format(
                "torch", columns=columns
            )
        super().setup(stage)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        dataset = self.datasets[self.train_split]
        lengths = pc.list_value_length(dataset.data.column("input_ids")).to_numpy()
        sampler = LengthBucketSampler(
            lengths, self.batch_size, self.seed, self.bucket_chunk_batches, *self.shard()
        )
        return self._batched(dataset, sampler)

    def collate(self, examples: list[Example]) -> Batch:
        ids = pad([example["input_ids"] for example in examples])
        labels = torch.stack([example["label"] for example in examples])
        batch = {"input_ids": ids, "attention_mask": real_tokens(ids), "labels": labels}
        if "targets" in examples[0]:
            batch["targets"] = torch.stack([example["targets"] for example in examples])
        return batch


class TaggingDataModule(ClassificationDataModule):
    """Length-bucketed training batches like classification's; a label per token."""

    columns = ("input_ids", "labels")

    def collate(self, examples: list[Example]) -> Batch:
        ids = pad([example["input_ids"] for example in examples])
        labels = pad([example["labels"] for example in examples], IGNORE_INDEX)
        return {"input_ids": ids, "attention_mask": real_tokens(ids), "labels": labels}


class QuestionAnsweringDataModule(ClassificationDataModule):
    """Length-bucketed training batches of question windows; the answer's token span each."""

    columns = ("input_ids", "start_positions", "end_positions")

    def collate(self, examples: list[Example]) -> Batch:
        ids = pad([example["input_ids"] for example in examples])
        return {
            "input_ids": ids,
            "attention_mask": real_tokens(ids),
            "start_positions": torch.stack([example["start_positions"] for example in examples]),
            "end_positions": torch.stack([example["end_positions"] for example in examples]),
        }


class Seq2SeqDataModule(_EncodedDataModule):
    """Stored targets are [BOS] y… [EOS]: the decoder reads [BOS] y… and predicts y… [EOS]."""

    columns = ("source_ids", "target_ids")

    def collate(self, examples: list[Example]) -> Batch:
        source = pad([example["source_ids"] for example in examples])
        target_in = pad([example["target_ids"][:-1] for example in examples])
        target_out = pad([example["target_ids"][1:] for example in examples])
        target_mask = real_tokens(target_in)
        return {
            "source_ids": source,
            "source_mask": real_tokens(source),
            "target_ids": target_in,
            "target_mask": target_mask,
            "labels": torch.where(target_mask.bool(), target_out, IGNORE_INDEX),
        }


def read_meta(encoded_dir: Path) -> dict[str, Any]:
    """encode's meta.json: task, vocab_size, special token ids, splits."""
    return json.loads((encoded_dir / META).read_text(encoding="utf-8"))
