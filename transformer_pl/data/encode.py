"""Encode: token ids as Arrow datasets, one `save_to_disk` folder per split, plus `meta.json`.

    classify   train, val                input_ids ([CLS] … [SEP], at most max_length), label
               unlabeled                 input_ids as above, no label (when the dataset has
                                         one: what a finetune teacher labels)
               pretrain, pretrain_val    input_ids: packed blocks of train + unlabeled text / of
                                         val text, for masked-LM pretraining
    lm         train, val                input_ids: packed blocks
    translate  train, val                source_ids (at most max_length),
                                         target_ids ([BOS] … [EOS], at most max_length)
    tag        train, val                input_ids ([CLS] … [SEP], at most max_length), labels
                                         (a word's tag index on its first token, -100 on its
                                         other tokens and on [CLS]/[SEP])
               pretrain, pretrain_val    as for classify
    qa         train, val                input_ids ([CLS] question [SEP] context piece [SEP]:
                                         a question per window of its context, windows of a
                                         long context overlapping by `stride` tokens),
                                         start_positions, end_positions (the first reference
                                         answer's first and last token; 0, the [CLS], in a
                                         window that does not hold all of it)
               pretrain, pretrain_val    packed blocks of the distinct contexts and the
                                         questions

Test is not encoded: only evaluate reads it, from the split file, through the tokenizer as the
registered model does.

Packing: each text's ids followed by [EOS], concatenated in split order and cut every
`block_size` ids; only the last block may be shorter, so no token is dropped. Tokenizing uses
`datasets.Dataset.map(batched=True)` with the fast tokenizer's `encode_batch_fast` (ids only,
no offsets: faster than `encode_batch`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetInfo, Features, Sequence, Value
from datasets.table import InMemoryTable
from tokenizers import Tokenizer

from transformer_pl.params import DatasetSpec, EncodeParams
from transformer_pl.data import TRAINING_SPLITS
from transformer_pl.data.tokenizer import BOS_ID, CLS_ID, EOS_ID, SEP_ID, SPECIAL_TOKENS

META = "meta.json"
MAP_BATCH_SIZE = 1000
IGNORE_INDEX = -100  # a label the loss skips
TOKEN_IDS = Sequence(Value("int32"))


def pack_blocks(ids: np.ndarray, block_size: int) -> pa.ListArray:
    """Consecutive ids cut into lists of `block_size` (the last one may be shorter)."""
    offsets = np.append(np.arange(0, len(ids), block_size), len(ids)).astype("int32")
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids, pa.int32()))


def flat_token_ids(rows: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """The rows' ids end to end, and where each row starts (one more entry: the total)."""
    offsets = rows.offsets.to_numpy()
    return rows.flatten().to_numpy(), offsets - offsets[0]


def encode_splits(
    frames: dict[str, pd.DataFrame],
    tokenizer_path: Path,
    spec: DatasetSpec,
    params: EncodeParams,
    out_dir: Path,
) -> dict[str, Any]:
    """Write the encoded development splits under `out_dir` (replacing it); returns meta.json's
    content. Each text is tokenized once; classification sequences and pretraining blocks share
    the ids. A test frame among `frames` is left alone."""
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    # Fingerprints from the inputs, so that the saved datasets are byte-for-byte reproducible.
    fingerprint = _digest(tokenizer_path.read_bytes(), params.model_dump_json().encode())
    encoder = _Encoder(tokenizer, params, fingerprint)
    encoded: dict[str, Dataset] = {}
    tag_names: list[str] = []
    if spec.parallel:
        for split in ("train", "val"):
            encoded[split] = encoder.translation(frames[split], split)
    elif spec.extractive:
        for split in ("train", "val"):
            encoded[split] = encoder.question_answering(frames[split], split)
        for split, name in (("train", "pretrain"), ("val", "pretrain_val")):
            frame = frames[split]
            texts = pd.concat([frame["text"].drop_duplicates(), frame["question"]])
            ids = encoder.token_ids(pd.DataFrame({"text": texts.to_numpy()}), name)
            encoded[name] = encoder.packed([ids], name)
    elif spec.tagged:
        tag_names = tag_vocabulary(frames["train"]["tags"])
        for split in ("train", "val"):
            encoded[split] = encoder.tagging(frames[split], split, tag_names)
        ids = {split: encoder.token_ids(frames[split], split) for split in ("train", "val")}
        encoded["pretrain"] = encoder.packed([ids["train"]], "pretrain")
        encoded["pretrain_val"] = encoder.packed([ids["val"]], "pretrain_val")
    else:
        splits = [split for split in ("train", "val", "unlabeled") if split in frames]
        ids = {split: encoder.token_ids(frames[split], split) for split in splits}
        if spec.labelled:
            for split in splits:
                encoded[split] = encoder.classification(ids[split], split)
            pretrain = [ids[split] for split in TRAINING_SPLITS if split in ids]
            encoded["pretrain"] = encoder.packed(pretrain, "pretrain")
            encoded["pretrain_val"] = encoder.packed([ids["val"]], "pretrain_val")
        else:
            for split in ("train", "val"):
                encoded[split] = encoder.packed([ids[split]], split)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    for split, dataset in encoded.items():
        dataset.save_to_disk(str(out_dir / split))
    meta = {
        "task": spec.task,
        "vocab_size": tokenizer.get_vocab_size(),
        "special_tokens": {token: index for index, token in enumerate(SPECIAL_TOKENS)},
        "max_length": params.max_length,
        "block_size": params.block_size,
        "splits": {
            split: {
                "rows": len(dataset),
                "columns": dataset.column_names,
                "tokens": _token_count(dataset),
            }
            for split, dataset in encoded.items()
        },
        "truncated": encoder.truncated,
    }
    if spec.extractive:
        meta["stride"] = params.stride
        meta["max_question_tokens"] = params.max_question_tokens
        meta["questions_in_several_windows"] = encoder.several_windows
    if spec.tagged:
        meta["tag_names"] = tag_names
        meta["unknown_tags"] = encoder.unknown_tags
    (out_dir / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


class _Encoder:
    def __init__(self, tokenizer: Tokenizer, params: EncodeParams, fingerprint: str) -> None:
        self.tokenizer = tokenizer
        self.params = params
        self.fingerprint = fingerprint
        self.truncated: dict[str, int] = {}  # split -> sequences cut to max_length
        self.unknown_tags: dict[str, int] = {}  # split -> words whose tag train never shows
        self.several_windows: dict[str, int] = {}  # split -> questions whose context is split

    def token_ids(self, frame: pd.DataFrame, split: str) -> Dataset:
        """The texts' ids without special tokens (`input_ids`), and their labels if any."""

        def encode(batch: dict[str, list]) -> dict[str, list]:
            encodings = self.tokenizer.encode_batch_fast(batch["text"], add_special_tokens=False)
            return {"input_ids": [encoding.ids for encoding in encodings]}

        if "label" in frame:
            features = {"input_ids": TOKEN_IDS, "label": Value("int64")}
            return self._map(frame[["text", "label"]], encode, split, "ids", features)
        return self._map(frame[["text"]], encode, split, "ids", {"input_ids": TOKEN_IDS})

    def classification(self, ids: Dataset, split: str) -> Dataset:
        """[CLS] ids [SEP], the ids cut to fit `max_length`."""
        room = self.params.max_length - 2

        def wrap(batch: dict[str, list]) -> dict[str, list]:
            return {
                "input_ids": [[CLS_ID, *text[:room], SEP_ID] for text in batch["input_ids"]],
                "truncated": [len(text) > room for text in batch["input_ids"]],
            }

        features = {"input_ids": TOKEN_IDS, "truncated": Value("bool")}
        if "label" in ids.column_names:
            features["label"] = Value("int64")
        return self._map(ids, wrap, split, "classification", features)

    def translation(self, frame: pd.DataFrame, split: str) -> Dataset:
        """Source ids (a longer source loses its end, or its start: `truncate_from`) and
        [BOS] target ids [EOS], each at most `max_length`."""
        limit = self.params.max_length
        start = self.params.truncate_from == "start"

        def encode(batch: dict[str, list]) -> dict[str, list]:
            sources = self.tokenizer.encode_batch_fast(batch["text"], add_special_tokens=False)
            targets = self.tokenizer.encode_batch_fast(batch["target"], add_special_tokens=False)
            return {
                "source_ids": [e.ids[-limit:] if start else e.ids[:limit] for e in sources],
                "target_ids": [[BOS_ID, *e.ids[: limit - 2], EOS_ID] for e in targets],
                "truncated": [
                    len(source.ids) > limit or len(target.ids) > limit - 2
                    for source, target in zip(sources, targets, strict=True)
                ],
            }

        features = {"source_ids": TOKEN_IDS, "target_ids": TOKEN_IDS, "truncated": Value("bool")}
        return self._map(frame[["text", "target"]], encode, split, "pairs", features)

    def tagging(self, frame: pd.DataFrame, split: str, tag_names: list[str]) -> Dataset:
        """[CLS] the words' tokens [SEP], cut to fit `max_length`; each word's tag index on
        its first token (-100 elsewhere, and for a tag missing from `tag_names`)."""
        room = self.params.max_length - 2
        index = {tag: position for position, tag in enumerate(tag_names)}
        unknown = 0

        def encode(batch: dict[str, list]) -> dict[str, list]:
            nonlocal unknown
            words = [text.split() for text in batch["text"]]
            encodings = self.tokenizer.encode_batch(
                words, is_pretokenized=True, add_special_tokens=False
            )
            ids, labels, truncated = [], [], []
            for encoding, tags in zip(encodings, batch["tags"], strict=True):
                tag_ids = [index.get(tag, IGNORE_INDEX) for tag in tags.split()]
                unknown += tag_ids.count(IGNORE_INDEX)
                first = first_token_labels(encoding.word_ids, tag_ids)
                ids.append([CLS_ID, *encoding.ids[:room], SEP_ID])
                labels.append([IGNORE_INDEX, *first[:room], IGNORE_INDEX])
                truncated.append(len(encoding.ids) > room)
            return {"input_ids": ids, "labels": labels, "truncated": truncated}

        features = {"input_ids": TOKEN_IDS, "labels": TOKEN_IDS, "truncated": Value("bool")}
        encoded = self._map(frame[["text", "tags"]], encode, split, "tagging", features)
        self.unknown_tags[split] = unknown
        return encoded

    def question_answering(self, frame: pd.DataFrame, split: str) -> Dataset:
        """A row per window of each question's context, with the first answer's token span."""
        from transformer_pl.tasks.qa.rows import parse_answers
        from transformer_pl.tasks.qa.windows import question_windows

        first_answers = [parse_answers(answers) for answers in frame["answers"]]
        windows, several = question_windows(
            self.tokenizer,
            frame["question"].tolist(),
            frame["text"].tolist(),
            [starts[0] for _, starts in first_answers],
            [texts[0] for texts, _ in first_answers],
            self.params.max_length,
            self.params.stride,
            self.params.max_question_tokens,
        )
        self.several_windows[split] = several
        table = pa.table(
            {
                "input_ids": pa.array([w.input_ids for w in windows], pa.list_(pa.int32())),
                "start_positions": pa.array([w.start_position for w in windows], pa.int64()),
                "end_positions": pa.array([w.end_position for w in windows], pa.int64()),
            }
        )
        features = {
            "input_ids": TOKEN_IDS,
            "start_positions": Value("int64"),
            "end_positions": Value("int64"),
        }
        return Dataset(
            InMemoryTable(table),
            info=DatasetInfo(features=Features(features)),
            fingerprint=self._fingerprint(split, "question_windows"),
        )

    def packed(self, parts: list[Dataset], split: str) -> Dataset:
        """The parts' texts in order, each followed by [EOS], cut into blocks."""
        lists = pa.concat_arrays([part.data.column("input_ids").combine_chunks() for part in parts])
        ids, row_starts = flat_token_ids(lists)
        with_eos = np.insert(ids, row_starts[1:], EOS_ID)
        table = pa.table({"input_ids": pack_blocks(with_eos, self.params.block_size)})
        return Dataset(
            InMemoryTable(table),
            info=DatasetInfo(features=Features({"input_ids": TOKEN_IDS})),
            fingerprint=self._fingerprint(split, "packed"),
        )

    def _map(
        self,
        source: pd.DataFrame | Dataset,
        encode: Callable[[dict[str, list]], dict[str, list]],
        split: str,
        step: str,
        features: dict[str, Any],
    ) -> Dataset:
        """`encode` over the rows in batches; the output has exactly `features`' columns. A
        `truncated` column is counted into `self.truncated` and dropped."""
        if isinstance(source, pd.DataFrame):
            table = pa.Table.from_pandas(source.reset_index(drop=True), preserve_index=False)
            source = Dataset(InMemoryTable(table), fingerprint=self._fingerprint(split, "text"))
        encoded = source.map(
            encode,
            batched=True,
            batch_size=MAP_BATCH_SIZE,
            remove_columns=[name for name in source.column_names if name not in features],
            features=Features(features),
            num_proc=self.params.num_proc if self.params.num_proc > 1 else None,
            new_fingerprint=self._fingerprint(split, step),
            desc=f"encoding {split} ({step})",
        )
        if "truncated" in features:
            self.truncated[split] = int(pc.sum(encoded.data.column("truncated")).as_py() or 0)
            encoded = encoded.remove_columns("truncated")
        return encoded

    def _fingerprint(self, *parts: str) -> str:
        return _digest(self.fingerprint.encode(), *(part.encode() for part in parts))


def tag_vocabulary(tags: pd.Series) -> list[str]:
    """O, then B- and I- of every entity type the (IOB2, space-separated) tags show, sorted:
    the tagger's classes, in the order of its output units."""
    types = {tag[2:] for sentence in tags for tag in sentence.split() if tag != "O"}
    return ["O", *(f"{prefix}-{kind}" for kind in sorted(types) for prefix in "BI")]


def first_token_labels(word_ids: list[int | None], tag_ids: list[int]) -> list[int]:
    """Per token: its word's tag on the word's first token, -100 on the others."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(tag_ids[word] if word is not None and word != previous else IGNORE_INDEX)
        previous = word
    return labels


def _token_count(dataset: Dataset) -> int:
    columns = [name for name in dataset.column_names if name.endswith("_ids")]
    lengths = (pc.list_value_length(dataset.data.column(name)) for name in columns)
    return sum(int(pc.sum(length).as_py() or 0) for length in lengths)


def _digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part)
    return hasher.hexdigest()[:16]
