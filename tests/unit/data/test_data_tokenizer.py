"""Tokenizer training: fixed special-token ids, [CLS] … [SEP], the same vocabulary from the same
text in every process (byte-level BPE)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from transformer_pl.params import TokenizerParams
from transformer_pl.tasks.settings import dataset_spec
from transformer_pl.data.tokenizer import (
    CLS_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    train_tokenizer,
    training_texts,
)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    rng = random.Random(0)
    words = ["".join(rng.choices("abcdefgh", k=rng.randint(2, 7))) for _ in range(400)]
    return [" ".join(rng.choices(words, k=30)) for _ in range(300)]


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_special_tokens_come_first_and_training_is_reproducible(texts, kind):
    params = TokenizerParams(kind=kind, vocab_size=300, min_frequency=1)
    tokenizer = train_tokenizer(texts, params)
    assert [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS] == list(range(7))
    assert tokenizer.token_to_id("[PAD]") == 0
    encoding = tokenizer.encode(texts[0])
    assert encoding.ids[0] == CLS_ID and encoding.ids[-1] == SEP_ID
    assert train_tokenizer(texts, params).to_str() == tokenizer.to_str()


# Trains on the first `rows` IMDB reviews in a process of its own and prints the file's hash.
TRAIN_IN_A_FRESH_PROCESS = """
import hashlib, sys
import pandas as pd
from transformer_pl.params import TokenizerParams
from transformer_pl.data.tokenizer import train_tokenizer

texts = pd.read_csv(sys.argv[1], nrows=int(sys.argv[2]))["text"].tolist()
tokenizer = train_tokenizer(texts, TokenizerParams(vocab_size=2000))
print(hashlib.sha256(tokenizer.to_str().encode()).hexdigest())
"""


def test_default_tokenizer_is_identical_across_processes(shared_data: Path) -> None:
    # Hash maps in the Rust trainer are seeded per process: only separate processes show whether
    # the vocabulary depends on their order. On these 640 reviews WordPiece gave two different
    # vocabularies in 5 processes (a tie at the cut-off); byte-level BPE gave one in 25.
    reviews = shared_data / "imdb" / "train.csv.gz"
    hashes = {
        subprocess.run(
            [sys.executable, "-c", TRAIN_IN_A_FRESH_PROCESS, str(reviews), "640"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        for _ in range(4)
    }
    assert len(hashes) == 1, hashes


def test_wordpiece_lowercases_strips_line_breaks_and_knows_unseen_words_only_as_unk(texts):
    params = TokenizerParams(kind="wordpiece", vocab_size=300, min_frequency=1)
    tokenizer = train_tokenizer(texts, params)
    words = texts[0].split()[:2]
    encoding = tokenizer.encode(f"{words[0].upper()}<br />{words[1]}", add_special_tokens=False)
    assert tokenizer.decode(encoding.ids) == f"{words[0]} {words[1]}"
    assert tokenizer.encode("zzz", add_special_tokens=False).ids == [UNK_ID]  # z never seen


def test_training_texts_come_from_train_and_optionally_unlabeled():
    frames = {
        "train": pd.DataFrame({"text": ["a"], "target": ["b"]}),
        "val": pd.DataFrame({"text": ["never"], "target": ["never"]}),
        "unlabeled": pd.DataFrame({"text": ["u"]}),
    }
    classify = dataset_spec(
        task="classify", path="x", splits={"train": "t"}, label_column="l", label_names=["n"]
    )
    assert training_texts(frames, classify, TokenizerParams())[0] == ["a", "u"]
    assert training_texts(frames, classify, TokenizerParams(use_unlabeled=False))[0] == ["a"]
    translate = dataset_spec(
        task="translate",
        path="x",
        format="parallel_text",
        splits={"train": "t"},
        source_language="de",
        target_language="en",
    )
    texts, sources = training_texts({"train": frames["train"]}, translate, TokenizerParams())
    assert texts == ["a", "b"] and sources == ["train (de)", "train (en)"]
