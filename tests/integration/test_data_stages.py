"""The data stages end to end: a user's own CSV, bad input, the validation gate, the reference
datasets on the tiny profile."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from transformer_pl.data.datamodules import ClassificationDataModule, MaskedLMDataModule
from transformer_pl.params import deep_merge, load_params
from transformer_pl.stages import Layout, StageError
from transformer_pl.stages.data import STAGES as DATA_STAGES

DATA_STAGE_NAMES = [spec.name for spec in DATA_STAGES]


def test_own_csv_runs_through_every_stage_by_editing_params_only(
    make_project, write_reviews, reviews_params, run_stages
):
    root = make_project(reviews_params)
    write_reviews(root / "reviews" / "train.csv", 300, seed=0)
    write_reviews(root / "reviews" / "test.csv", 100, seed=1)
    summaries = run_stages(root, DATA_STAGE_NAMES)
    for spec in DATA_STAGES:  # every declared output exists
        for path in (*spec.outs, *spec.metrics):
            assert (root / path).exists(), f"{spec.name} did not write {path}"
    assert summaries["clean"]["rows_quarantined"] == 0
    val = round(300 * load_params(root / "params.yaml").split.val_fraction)  # carved from train
    assert summaries["split"]["rows"] == {"train": 300 - val, "val": val, "test": 100}
    assert summaries["tokenizer"]["special_tokens"]["[PAD]"] == 0
    assert set(summaries["encode"]["splits"]) == {"train", "val", "pretrain", "pretrain_val"}
    encoded = root / Layout.ENCODED
    batch = next(iter(ClassificationDataModule(encoded, batch_size=16, seed=0).train_dataloader()))
    assert batch["input_ids"].shape[0] == 16 and set(batch["labels"].tolist()) <= {0, 1}
    assert next(iter(MaskedLMDataModule(encoded, batch_size=4, seed=0).val_dataloader()))


BAD_ROWS = [  # (raw CSV line, expected reason or None when kept)
    (b"review,sentiment", None),
    (b"a perfectly fine review,pos", None),  # row 1
    (b'"caf\xe9 and bad bytes",neg', "parse_error"),  # 2: invalid UTF-8
    (b"too,many,fields,neg", "parse_error"),  # 3
    (b"too few fields", "parse_error"),  # 4
    (b",neg", "empty"),  # 5: empty text
    (b'"   ",pos', "empty"),  # 6: whitespace only
    (b"no label given,", "missing_label"),  # 7
    (b"an unknown label,maybe", "unknown_label"),  # 8
    (b'"' + b"long " * 220_000 + b'",pos', "too_long"),  # 9: a 1 MB text
    (b"a perfectly  fine review,neg", "duplicate"),  # 10: row 1 after normalisation
    (b'"<br /><br />",pos', "empty"),  # 11: HTML only
    (b"copied from the test split,neg", "leakage"),  # 12
    (b"another kept review,neg", None),  # 13
]


def test_bad_input_is_quarantined_with_its_reason_and_the_gate_stops(
    make_project, reviews_params, run_stages
):
    root = make_project(deep_merge(reviews_params, {"validate": {"min_rows_per_split": 1}}))
    folder = root / "reviews"
    folder.mkdir()
    (folder / "train.csv").write_bytes(b"\n".join(line for line, _ in BAD_ROWS) + b"\n")
    (folder / "test.csv").write_bytes(b"review,sentiment\ncopied from the test split,pos\n")
    summaries = run_stages(root, ["ingest", "clean"])
    assert summaries["ingest"]["splits"]["train"]["parse_errors"] == 3
    quarantine = pd.read_parquet(root / Layout.QUARANTINE / "rows.parquet")
    train = quarantine[quarantine["split"] == "train"]
    expected = {row: reason for row, (_, reason) in enumerate(BAD_ROWS) if row and reason}
    assert dict(zip(train["row"], train["reason"], strict=True)) == expected
    details = dict(zip(train["row"], train["detail"], strict=True))
    assert details[2] == "invalid UTF-8 byte 0xe9 at character 3 in column 'text'"
    assert details[9] == "1099999 chars > max_chars 100000"
    counts = summaries["clean"]["splits"]["train"]
    assert counts == {**counts, "rows_in": 13, "rows_kept": 2, "rows_quarantined": 11}

    with pytest.raises(StageError) as stopped:
        run_stages(root, ["validate"])
    assert "quarantine_fraction" in str(stopped.value) and "1 unexpected" in str(stopped.value)
    summary = json.loads((root / "data/reports/validation/summary.json").read_text())
    assert summary["success"] is False
    with pytest.raises(StageError, match="no passing validation"):
        run_stages(root, ["split"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"splits": {"train": "train.csv", "test": "missing.csv"}}, r"file not found: .*missing"),
        ({"label_column": "stars"}, r"train\.csv: no column 'stars' \(columns: review, sentiment"),
    ],
)
def test_missing_file_or_column_stops_ingest_naming_it(
    make_project, write_reviews, reviews_params, run_stages, override, message
):
    root = make_project(deep_merge(reviews_params, {"datasets": {"reviews": override}}))
    write_reviews(root / "reviews" / "train.csv", 10)
    write_reviews(root / "reviews" / "test.csv", 10)
    with pytest.raises(StageError, match=message):
        run_stages(root, ["ingest"])


def test_tiny_profile_runs_the_imdb_data_path_in_seconds(make_project, shared_data, run_stages):
    root = make_project({"dataset": "imdb"})
    started = time.perf_counter()
    summaries = run_stages(root, DATA_STAGE_NAMES, profile="tiny")
    elapsed = time.perf_counter() - started
    assert elapsed < 120, f"tiny IMDB data path took {elapsed:.0f} s"
    params = load_params(root / "params.yaml", "tiny")
    sample = params.clean.max_rows_per_split
    assert summaries["clean"]["rows_in"] == 3 * sample  # sampled from train, test, unlabeled
    assert summaries["ingest"]["splits"]["unlabeled"]["rows"] == 50_000
    half_of_val = round(sample * params.split.val_fraction) // 2  # of sampled train, stratified
    assert summaries["split"]["label_counts"]["val"] == {
        "negative": half_of_val,
        "positive": half_of_val,
    }
    encode = summaries["encode"]
    assert encode["splits"]["train"]["columns"] == ["input_ids", "label"]
    assert encode["splits"]["pretrain"]["columns"] == ["input_ids"]
    assert (root / "data/reports/validation/docs/index.html").is_file()


# Record counts as the MANIFEST.md of each reference dataset states them (text: non-blank lines).
SOURCE_ROWS = {
    "sst2": {"train": 67_349, "test": 872},
    "wikitext-2": {"train": 23_767, "val": 2_461, "test": 2_891},
    "tinyshakespeare": {"train": 32_777},
    "multi30k": {"train": 29_000, "val": 1_014, "test": 1_000},
}


@pytest.mark.parametrize("dataset", sorted(SOURCE_ROWS))
def test_reference_datasets_ingest_whole_and_clean_within_bounds(
    make_project, shared_data, run_stages, dataset
):
    root = make_project({"dataset": dataset})
    summaries = run_stages(root, ["ingest", "clean"], profile="tiny")
    rows = {split: info["rows"] for split, info in summaries["ingest"]["splits"].items()}
    assert rows == SOURCE_ROWS[dataset]
    assert sum(info["parse_errors"] for info in summaries["ingest"]["splits"].values()) == 0
    limit = load_params(root / "params.yaml", "tiny").validate_.max_quarantine_fraction
    for split, counts in summaries["clean"]["splits"].items():
        assert counts["quarantine_fraction"] <= limit, split
