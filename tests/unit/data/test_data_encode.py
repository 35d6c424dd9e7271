"""Encoding: truncation keeps [SEP], targets are [BOS] … [EOS], packing loses no token."""

from __future__ import annotations

import hashlib
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from tokenizers import Tokenizer

from transformer_pl.params import EncodeParams, TokenizerParams
from transformer_pl.tasks.settings import dataset_spec
from transformer_pl.data.encode import META, encode_splits, flat_token_ids, pack_blocks
from transformer_pl.data.tokenizer import BOS_ID, CLS_ID, EOS_ID, SEP_ID, train_tokenizer

WORDS = np.array(["the", "a", "film", "was", "good", "bad", "plot", "actors", "music", "end"])
CLASSIFY = dataset_spec(
    task="classify",
    path="x",
    splits={"train": "t", "test": "t"},
    label_column="l",
    label_names=["neg", "pos"],
)
TRANSLATE = dataset_spec(
    task="translate",
    path="x",
    format="parallel_text",
    splits={"train": "t"},
    source_language="de",
    target_language="en",
)


def sentences(n: int, seed: int, length: int = 12) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, length))) for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer(
        sentences(200, 0), TokenizerParams(kind="wordpiece", vocab_size=100, min_frequency=1)
    ).save(str(path))
    return path


def test_pack_blocks_cuts_every_block_size_and_keeps_the_remainder():
    blocks = pack_blocks(np.arange(10), 4)
    assert blocks.to_pylist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert pack_blocks(np.arange(8), 4).to_pylist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert pack_blocks(np.array([], dtype="int32"), 4).to_pylist() == []


def test_flat_token_ids_of_a_sliced_column_start_at_zero():
    rows = pa.array([[9, 9], [1, 2, 3], [], [4]], pa.list_(pa.int32())).slice(1)
    ids, row_starts = flat_token_ids(rows)
    assert ids.tolist() == [1, 2, 3, 4]
    assert row_starts.tolist() == [0, 3, 3, 4]


def labeled(n: int, seed: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"row": range(n), "text": sentences(n, seed, length=40), "label": [0, 1] * (n // 2)}
    )


def test_classification_splits_and_pretraining_corpus(tmp_path, tokenizer_path):
    frames = {
        "train": labeled(40, 1),
        "val": labeled(10, 2),
        "test": labeled(10, 3),
        "unlabeled": labeled(20, 4).drop(columns="label"),
    }
    params = EncodeParams(max_length=16, block_size=32)
    meta = encode_splits(frames, tokenizer_path, CLASSIFY, params, tmp_path / "enc")
    # Test is left to evaluate, which tokenizes the split file itself.
    assert set(meta["splits"]) == {"train", "val", "unlabeled", "pretrain", "pretrain_val"}
    assert not (tmp_path / "enc" / "test").exists()
    train = datasets.load_from_disk(str(tmp_path / "enc" / "train"))
    assert train.column_names == ["input_ids", "label"]
    assert train["label"] == frames["train"]["label"].tolist()
    unlabeled = datasets.load_from_disk(str(tmp_path / "enc" / "unlabeled"))
    assert unlabeled.column_names == ["input_ids"] and len(unlabeled) == 20
    for ids in [*train["input_ids"], *unlabeled["input_ids"]]:
        assert ids[0] == CLS_ID and ids[-1] == SEP_ID and len(ids) <= 16
    full = Tokenizer.from_file(str(tokenizer_path)).encode_batch(frames["train"]["text"].tolist())
    assert meta["truncated"]["train"] == sum(len(e.ids) > 16 for e in full) > 0
    pretrain = datasets.load_from_disk(str(tmp_path / "enc" / "pretrain"))
    blocks = pretrain["input_ids"]
    assert all(len(block) == 32 for block in blocks[:-1]) and 0 < len(blocks[-1]) <= 32
    flat = [token for block in blocks for token in block]
    assert flat.count(EOS_ID) == 60  # one per train + unlabeled text, none lost
    assert CLS_ID not in flat and SEP_ID not in flat
    assert (tmp_path / "enc" / META).is_file()


def test_translation_targets_are_wrapped_and_encoding_is_reproducible(tmp_path, tokenizer_path):
    frame = pd.DataFrame({"row": range(6), "text": sentences(6, 5), "target": sentences(6, 6)})
    frames = {"train": frame, "val": frame, "test": frame}
    params = EncodeParams(max_length=8)
    encode_splits(frames, tokenizer_path, TRANSLATE, params, tmp_path / "a")
    encode_splits(frames, tokenizer_path, TRANSLATE, params, tmp_path / "b")
    train = datasets.load_from_disk(str(tmp_path / "a" / "train"))
    assert train.column_names == ["source_ids", "target_ids"]
    for source, target in zip(train["source_ids"], train["target_ids"], strict=True):
        assert target[0] == BOS_ID and target[-1] == EOS_ID and len(target) <= 8
        assert len(source) <= 8 and BOS_ID not in source
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert sorted(path.name for path in (tmp_path / "a").iterdir()) == [META, "train", "val"]


def digest(folder: Path) -> str:
    hasher = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            hasher.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return hasher.hexdigest()
