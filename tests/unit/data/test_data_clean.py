"""Cleaning rules: normalisation, the reason each dropped row gets, and the row accounting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from transformer_pl.params import CleanParams
from transformer_pl.tasks.settings import dataset_spec
from transformer_pl.data import DataError
from transformer_pl.data.clean import (
    QUARANTINE_COLUMNS,
    clean_splits,
    collapse_whitespace,
    normalize_text,
    repeated,
    sample_positions,
    strip_html,
)

CLASSIFY = dataset_spec(
    task="classify",
    path="x",
    splits={"train": "t", "test": "t", "unlabeled": "u"},
    label_column="label",
    label_names=["negative", "positive"],
    label_values={"0": "negative", "1": "positive"},
)


def raw_frame(texts: list, labels: list | None = None, errors: list | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row": range(1, len(texts) + 1),
            "text": pd.array(texts, dtype="string"),
            "label": pd.array(labels or [None] * len(texts), dtype="string"),
            "parse_error": pd.array(errors or [None] * len(texts), dtype="string"),
        }
    )


def reasons(result, split: str) -> dict[int, str]:
    rows = result.quarantine[result.quarantine["split"] == split]
    return dict(zip(rows["row"], rows["reason"], strict=True))


def test_strip_html_removes_tags_and_decodes_entities_but_keeps_other_angle_brackets():
    assert strip_html("Great.<br /><br />Really") == "Great.  Really"
    assert strip_html("<i>great</i>ly &amp; &quot;fun&quot;") == 'greatly & "fun"'
    assert strip_html("a < b and <3 and <unk> and &lt;br&gt;") == "a < b and <3 and <unk> and <br>"


def test_normalize_text_applies_nfkc_and_collapses_whitespace():
    params = CleanParams()
    assert normalize_text("  ﬁne\u00a0film\t<br/>\n ok ", params) == "fine film ok"
    assert normalize_text("Ａ <b>Film</b>", CleanParams(lowercase=True)) == "a film"
    assert normalize_text("<br />", CleanParams(strip_html=False)) == "<br />"
    assert collapse_whitespace(" a \n\n b\r\n") == "a b"


def test_repeated_marks_all_but_the_first_occurrence():
    keys = pd.Series(["a", "b", "a", "c", "b", "a"])
    assert repeated(keys).tolist() == [False, False, True, False, True, True]


def test_every_rule_gives_its_reason_and_counts_reconcile():
    train = raw_frame(
        texts=[
            "a good film",  # 1 kept
            "caf\ufffd",  # 2 parse error
            None,  # 3 no text
            "   ",  # 4 blank
            "<br /><br />",  # 5 markup only
            "x" * 101,  # 6 too long
            "ok",  # 7 too short (min_chars 3)
            "no label",  # 8
            "odd label",  # 9
            "A  good film",  # 10 duplicate of 1 after normalisation? no: case differs -> kept
            "a good <b>film</b>",  # 11 duplicate of 1 after normalisation
            "the test review",  # 12 leakage
        ],
        labels=["1", "0", "1", "0", "1", "0", "1", None, "maybe", "0", "1", "0"],
        errors=[None, "invalid UTF-8 byte 0xe9 at character 3 in column 'text'"] + [None] * 10,
    )
    test = raw_frame(["the test review", "another one"], ["1", "0"])
    unlabeled = raw_frame(["A  good film", "the test review", "fresh text"])
    params = CleanParams(min_chars=3, max_chars=100)
    result = clean_splits(
        {"train": train, "test": test, "unlabeled": unlabeled}, CLASSIFY, params, seed=0
    )
    assert reasons(result, "train") == {
        2: "parse_error",
        3: "empty",
        4: "empty",
        5: "empty",
        6: "too_long",
        7: "too_short",
        8: "missing_label",
        9: "unknown_label",
        11: "duplicate",
        12: "leakage",
    }
    assert reasons(result, "unlabeled") == {1: "duplicate", 2: "leakage"}
    assert result.frames["train"]["row"].tolist() == [1, 10]
    assert result.frames["train"]["label"].tolist() == [1, 0]
    assert result.frames["train"]["text"].tolist() == ["a good film", "A good film"]
    assert "label" not in result.frames["unlabeled"]
    assert list(result.quarantine.columns) == QUARANTINE_COLUMNS
    dropped = result.quarantine.set_index(["split", "row"])
    assert dropped.loc[("train", 11), "detail"] == "same text as row 1"
    assert dropped.loc[("train", 12), "detail"] == "text also in test"
    assert dropped.loc[("train", 5), "text"] == "<br /><br />"  # the original text is kept
    assert dropped.loc[("train", 9), "label"] == "maybe"
    for split, counts in result.report["splits"].items():
        assert counts["rows_in"] == counts["rows_kept"] + counts["rows_quarantined"], split
    assert result.report["splits"]["train"]["reasons"]["empty"] == 3


def test_a_file_whose_labels_are_all_unknown_stops_with_a_hint():
    train = raw_frame(["a", "b"], ["pos", "neg"])
    with pytest.raises(DataError, match=r"no label is known .*'neg', 'pos'.*label_values"):
        clean_splits({"train": train}, CLASSIFY, CleanParams(), seed=0)


def test_translation_pairs_empty_side_and_length_ratio():
    spec = dataset_spec(
        task="translate",
        path="x",
        format="parallel_text",
        splits={"train": "t.{lang}"},
        source_language="de",
        target_language="en",
    )
    train = raw_frame(["Ein Hund.", "Leer", "@@", "Ein Hund."]).drop(columns="label")
    train.insert(
        2,
        "target",
        pd.array(["A dog.", "", "Front stroke swimming race.", "A dog."], dtype="string"),
    )
    result = clean_splits(
        {"train": train}, spec, CleanParams(max_length_ratio=3, max_rows_per_split=3), seed=0
    )
    # No label to stratify by: the sample of pairs is uniform.
    assert "train: uniform, in source order" in result.report["sampling"]
    result = clean_splits({"train": train}, spec, CleanParams(max_length_ratio=3), seed=0)
    assert reasons(result, "train") == {2: "empty", 3: "length_ratio", 4: "duplicate"}
    dropped = result.quarantine.set_index("row")
    assert dropped.loc[2, "detail"] == "target: blank"
    assert dropped.loc[4, "detail"] == "same pair as row 1"


def test_language_model_corpora_keep_repeated_lines():
    spec = dataset_spec(task="lm", path="x", format="text", splits={"train": "t", "test": "u"})
    train = raw_frame(["ROMEO:", "Ay.", "ROMEO:"]).drop(columns="label")
    test = raw_frame(["ROMEO:"]).drop(columns="label")
    result = clean_splits({"train": train, "test": test}, spec, CleanParams(), seed=0)
    assert len(result.quarantine) == 0
    assert result.frames["train"]["text"].tolist() == ["ROMEO:", "Ay.", "ROMEO:"]


def test_sampling_happens_before_cleaning_and_is_stratified_and_seeded():
    labels = ["0"] * 900 + ["1"] * 100
    train = raw_frame([f"text {i}" for i in range(1000)], labels)
    params = CleanParams(max_rows_per_split=100)
    first = clean_splits({"train": train}, CLASSIFY, params, seed=3)
    again = clean_splits({"train": train}, CLASSIFY, params, seed=3)
    other = clean_splits({"train": train}, CLASSIFY, params, seed=4)
    rows = first.frames["train"]["row"]
    assert len(rows) == 100 and rows.is_monotonic_increasing
    assert first.frames["train"]["label"].value_counts().to_dict() == {0: 90, 1: 10}
    assert rows.tolist() == again.frames["train"]["row"].tolist()
    assert rows.tolist() != other.frames["train"]["row"].tolist()
    counts = first.report["splits"]["train"]
    assert (counts["rows_in_source"], counts["rows_in"]) == (1000, 100)
    assert "max_rows_per_split=100" in first.report["sampling"]
    assert "seed 3; train: stratified by raw label, in source order" in first.report["sampling"]
    # A labelled dataset's split without any label (its test labels withheld) is uniform.
    unlabelled = raw_frame([f"text {i}" for i in range(1000)], [None] * 1000)
    withheld = clean_splits({"train": train, "test": unlabelled}, CLASSIFY, params, seed=3)
    assert "test: uniform, in source order" in withheld.report["sampling"]


def test_language_model_sample_is_a_contiguous_window():
    spec = dataset_spec(task="lm", path="x", format="text", splits={"train": "t"})
    frame = raw_frame([f"line {i}" for i in range(50)]).drop(columns="label")
    positions, method = sample_positions(frame, 10, spec, np.random.default_rng(0))
    assert np.array_equal(positions, np.arange(positions[0], positions[0] + 10))
    assert method == "a contiguous window at a seeded offset"
