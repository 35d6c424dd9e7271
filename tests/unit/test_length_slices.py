"""Test metrics by input length: quantile buckets of word counts, a metric per bucket."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from transformer_pl.length_slices import (
    length_buckets,
    metric_by_length,
    write_metric_by_length,
)


def test_buckets_cut_at_quantiles_and_cover_every_example_once():
    counts = [1, 2, 3, 4, 5, 6, 7, 8]
    buckets = length_buckets(counts, 4)
    assert [label for label, _ in buckets] == ["1–2 words", "3–4 words", "5–6 words", "7–8 words"]
    positions = np.concatenate([positions for _, positions in buckets])
    assert sorted(positions.tolist()) == list(range(8))


def test_repeated_counts_give_fewer_buckets_and_no_empty_one():
    buckets = length_buckets([5, 5, 5, 5, 5, 9], 4)
    assert [(label, positions.tolist()) for label, positions in buckets] == [
        ("5 words", [0, 1, 2, 3, 4]),
        ("9 words", [5]),
    ]
    assert length_buckets([], 4) == []


def test_the_metric_is_computed_on_each_bucket_and_written_for_dvc(tmp_path: Path):
    texts = ["a b", "a", "a b c d", "a b c"]
    correct = np.array([True, True, False, True])
    rows = metric_by_length(texts, lambda positions: correct[positions].mean(), "accuracy", 2)
    assert rows == [
        {"words": "1–2 words", "accuracy": 1.0, "examples": 2},
        {"words": "3–4 words", "accuracy": 0.5, "examples": 2},
    ]
    data, image = write_metric_by_length(rows, "accuracy", tmp_path / "plots")
    assert json.loads(data.read_text()) == rows
    assert data.name == "accuracy_by_length.json"
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
