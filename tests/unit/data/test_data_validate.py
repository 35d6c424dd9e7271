"""Great Expectations gate: clean data passes; each broken rule fails, named with its count —
for labelled examples, parallel text and language-model corpora."""

from __future__ import annotations

import pandas as pd
import pytest

from transformer_pl.params import CleanParams, ValidateParams
from transformer_pl.tasks.settings import dataset_spec
from transformer_pl.data.clean import QUARANTINE_COLUMNS
from transformer_pl.data.validate import split_summary, validate_splits

SPEC = dataset_spec(
    task="classify",
    path="x",
    splits={"train": "t", "test": "t"},
    label_column="l",
    label_names=["neg", "pos"],
)
PARAMS = ValidateParams(min_rows_per_split=4, max_quarantine_fraction=0.2, min_class_fraction=0.3)


def split(texts: list[str], labels: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {"row": range(1, len(texts) + 1), "text": pd.array(texts, "string"), "label": labels}
    )


def quarantine(rows: list[tuple[str, int, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["split", "row", "reason"])
    return frame.reindex(columns=QUARANTINE_COLUMNS)


@pytest.fixture
def good() -> dict[str, pd.DataFrame]:
    return {
        "train": split([f"train text {i}" for i in range(8)], [0, 1] * 4),
        "test": split([f"test text {i}" for i in range(6)], [0, 1] * 3),
    }


def test_clean_splits_pass_and_data_docs_are_written(good, tmp_path):
    outcome = validate_splits(
        good,
        quarantine([("train", 9, "duplicate")]),
        "toy",
        SPEC,
        CleanParams(),
        PARAMS,
        tmp_path / "docs",
    )
    assert outcome.success, outcome.failures
    assert set(outcome.suites) == {"toy.train", "toy.test", "toy.summary"}
    assert (tmp_path / "docs" / "index.html").is_file()
    assert outcome.splits[0] == {
        "split": "train",
        "rows_in": 9,
        "quarantined": 1,
        "quarantine_fraction": round(1 / 9, 6),
        "rarest_class_fraction": 0.5,
    }


def test_every_broken_rule_is_named_with_its_unexpected_count(good, tmp_path):
    bad = dict(good)
    bad["train"] = split(
        ["test text 1", "dup", "dup", "x" * 50, "fine a", "fine b", "fine c", "fine d"],
        [0, 1, 1, 1, 1, 1, 1, 7],
    )
    too_many = quarantine([("train", 20 + i, "parse_error") for i in range(4)])
    outcome = validate_splits(
        bad, too_many, "toy", SPEC, CleanParams(max_chars=40), PARAMS, tmp_path / "docs"
    )
    assert not outcome.success
    failures = "\n".join(outcome.failures)
    expected = [
        "toy.train: expect_column_values_to_be_unique on 'text' {} failed: 2 unexpected",
        "toy.train: expect_column_value_lengths_to_be_between on 'text'",
        "toy.train: expect_column_values_to_be_in_set on 'label' {'value_set': [0, 1]} failed: "
        "1 unexpected",
        "toy.train: expect_column_values_to_be_in_set on 'in_heldout' {'value_set': [False]} "
        "failed: 1 unexpected",
        "toy.summary: expect_column_values_to_be_between on 'quarantine_fraction'",
        "toy.summary: expect_column_values_to_be_between on 'rarest_class_fraction'",
    ]
    for line in expected:
        assert line in failures
    assert len(outcome.failures) == len(expected)


def test_too_few_rows_fails_on_the_row_count(good, tmp_path):
    small = {**good, "test": good["test"].head(3)}
    outcome = validate_splits(
        small, quarantine([]), "toy", SPEC, CleanParams(), PARAMS, tmp_path / "docs"
    )
    assert outcome.failures == [
        "toy.test: expect_table_row_count_to_be_between {'min_value': 4} failed: observed 3"
    ]


def test_summary_counts_unaligned_translation_lines():
    spec = dataset_spec(
        task="translate",
        path="x",
        format="parallel_text",
        splits={"train": "t"},
        source_language="de",
        target_language="en",
    )
    frames = {"train": pd.DataFrame({"row": [1], "text": ["a"], "target": ["b"]})}
    dropped = quarantine([("train", 2, "parse_error")]).assign(detail="no aligned line in x.en")
    summary = split_summary(frames, dropped, spec)
    assert summary.loc[0, "unaligned_lines"] == 1 and summary.loc[0, "quarantine_fraction"] == 0.5


TRANSLATION = dataset_spec(
    task="translate",
    path="x",
    format="parallel_text",
    splits={"train": "t.{lang}", "test": "t.{lang}"},
    source_language="de",
    target_language="en",
)
CORPUS = dataset_spec(task="lm", path="x", format="text", splits={"train": "t"})


def pairs(sources: list[str], targets: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row": range(1, len(sources) + 1),
            "text": pd.array(sources, "string"),
            "target": pd.array(targets, "string"),
        }
    )


def test_parallel_text_suites_check_both_sides_ratios_pairs_and_alignment(tmp_path):
    good = {
        "train": pairs([f"ein Hund {i}" for i in range(5)], [f"a dog {i}" for i in range(5)]),
        "test": pairs([f"eine Katze {i}" for i in range(4)], [f"a cat {i}" for i in range(4)]),
    }
    outcome = validate_splits(
        good, quarantine([]), "pairs", TRANSLATION, CleanParams(), PARAMS, tmp_path / "ok"
    )
    assert outcome.success, outcome.failures

    bad = {
        "train": pairs(
            ["ein Hund", "ein Hund", "ja", "eine Katze 3", "eine Katze 3", "eine Maus"],
            ["a dog", "a dog", "yes, a very long answer indeed", "", "a cat", "a mouse"],
        ),
        "test": good["test"],
    }
    unaligned = quarantine([("train", 7, "parse_error")]).assign(detail="no aligned line in t.en")
    outcome = validate_splits(
        bad, unaligned, "pairs", TRANSLATION, CleanParams(), PARAMS, tmp_path / "bad"
    )
    failures = "\n".join(outcome.failures)
    for expected in [
        "pairs.train: expect_column_value_lengths_to_be_between on 'target'",  # an empty side
        "pairs.train: expect_compound_columns_to_be_unique {'column_list': ['text', 'target']} "
        "failed: 2 unexpected",
        "pairs.train: expect_column_values_to_be_between on 'length_ratio'",
        "pairs.summary: expect_column_values_to_be_between on 'unaligned_lines'",
    ]:
        assert expected in failures, failures
    assert outcome.splits[0]["unaligned_lines"] == 1


def test_text_corpus_suites_allow_repeated_lines_and_count_words(tmp_path):
    lines = ["= Heading =", "Some words in a line .", "= Heading =", "More words here ."]
    frame = pd.DataFrame({"row": range(1, 5), "text": pd.array(lines, "string")})
    enough = ValidateParams(min_rows_per_split=4, min_words_per_split=16)
    outcome = validate_splits(
        {"train": frame}, quarantine([]), "corpus", CORPUS, CleanParams(), enough, tmp_path / "a"
    )
    assert outcome.success, outcome.failures  # a repeated heading is structure, not a duplicate
    assert outcome.splits[0]["words"] == 16

    too_little = ValidateParams(min_rows_per_split=4, min_words_per_split=17)
    outcome = validate_splits(
        {"train": frame},
        quarantine([]),
        "corpus",
        CORPUS,
        CleanParams(),
        too_little,
        tmp_path / "b",
    )
    assert outcome.failures == [
        "corpus.summary: expect_column_values_to_be_between on 'words' {'min_value': 17.0} "
        "failed: 1 unexpected (e.g. [16])"
    ]
