"""Tagged (CoNLL) and question-answering (SQuAD JSON) datasets through the data stages: reading
(a split from several files too), clean's task checks and row accounting, the Great Expectations
gate, carving val from train by whole contexts, and encoding (first-token tag labels, answer
token spans in context windows)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest

from transformer_pl.data import DataError
from transformer_pl.data.clean import clean_splits
from transformer_pl.data.encode import (
    IGNORE_INDEX,
    META,
    encode_splits,
    first_token_labels,
    tag_vocabulary,
)
from transformer_pl.data.sources import canonical_columns, read_split
from transformer_pl.data.split import group_selection, split_frames
from transformer_pl.data.tokenizer import CLS_ID, SEP_ID, train_tokenizer
from transformer_pl.data.validate import validate_splits
from transformer_pl.params import (
    CleanParams,
    EncodeParams,
    SplitParams,
    TokenizerParams,
    ValidateParams,
)
from transformer_pl.tasks.settings import dataset_spec

CONLL = (
    "-DOCSTART- -X- -X- O\n"
    "\n"
    "EU NNP B-NP B-ORG\n"
    "rejects VBZ B-VP O\n"
    "German JJ B-NP B-MISC\n"
    "\n"
    "Peter NNP B-NP B-PER\n"
    "Blackburn NNP I-NP I-PER\n"
    "\n"
    "\n"
    "BRUSSELS NNP B-NP B-LOC\n"
)
CONTEXT = "Paris  is the capital of France."  # two spaces: kept byte for byte


def tag_spec(path: Path, **fields) -> object:
    return dataset_spec(task="tag", path=str(path), splits={"train": "train.txt"}, **fields)


def qa_spec(path: Path, splits: dict | None = None) -> object:
    return dataset_spec(task="qa", path=str(path), splits=splits or {"train": "train.json"})


def squad(*paragraphs: tuple[str, list[dict]], title: str = "T") -> str:
    return json.dumps(
        {
            "data": [
                {
                    "title": title,
                    "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs],
                }
            ]
        }
    )


def qa(qid: str, question: str, text: str, start: int) -> dict:
    return {"id": qid, "question": question, "answers": [{"text": text, "answer_start": start}]}


def tag_frame(sentences: list[tuple[str, str]], errors: list | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row": np.arange(1, len(sentences) + 1, dtype="int64"),
            "text": pd.array([text for text, _ in sentences], dtype="string"),
            "tags": pd.array([tags for _, tags in sentences], dtype="string"),
            "parse_error": pd.array(errors or [None] * len(sentences), dtype="string"),
        }
    )


def qa_frame(records: list[tuple[str, str, list[str], list[int], str | None]]) -> pd.DataFrame:
    """(context, question, answer texts, answer starts, id) per row."""
    return pd.DataFrame(
        {
            "row": np.arange(1, len(records) + 1, dtype="int64"),
            "text": pd.array([r[0] for r in records], dtype="string"),
            "question": pd.array([r[1] for r in records], dtype="string"),
            "answers": pd.array(
                [json.dumps({"text": r[2], "answer_start": r[3]}) for r in records],
                dtype="string",
            ),
            "id": pd.array([r[4] for r in records], dtype="string"),
            "title": pd.array(["T"] * len(records), dtype="string"),
            "parse_error": pd.array([None] * len(records), dtype="string"),
        }
    )


def reasons(result, split: str = "train") -> dict[int, tuple[str, str]]:
    rows = result.quarantine[result.quarantine["split"] == split]
    return {
        int(row): (reason, detail)
        for row, reason, detail in zip(rows["row"], rows["reason"], rows["detail"], strict=True)
    }


def assert_reconciled(result, raw: dict[str, pd.DataFrame]) -> None:
    for split, frame in raw.items():
        counts = result.report["splits"][split]
        assert counts["rows_in"] == len(frame)
        assert counts["rows_kept"] == len(result.frames[split])
        assert counts["rows_kept"] + counts["rows_quarantined"] == counts["rows_in"]
        assert sum(counts["reasons"].values()) == counts["rows_quarantined"]


# --- reading ------------------------------------------------------------------------------


def test_conll_reads_a_sentence_per_record_with_its_first_line_as_row(tmp_path):
    (tmp_path / "train.txt").write_text(CONLL, encoding="utf-8")
    spec = tag_spec(tmp_path)
    raw = read_split(spec, "train", tmp_path)
    frame = raw.frame
    assert list(frame.columns) == canonical_columns(spec) == ["row", "text", "tags", "parse_error"]
    assert frame["row"].tolist() == [3, 7, 11]
    assert frame["text"].tolist() == ["EU rejects German", "Peter Blackburn", "BRUSSELS"]
    assert frame["tags"].tolist() == ["B-ORG O B-MISC", "B-PER I-PER", "B-LOC"]
    assert frame["parse_error"].isna().all()
    assert str(frame["row"].dtype) == "int64" and str(frame["text"].dtype) == "string"
    assert [record["path"] for record in raw.files] == [f"{tmp_path}/train.txt"]


def test_conll_word_and_tag_fields_are_chosen_by_the_spec(tmp_path):
    (tmp_path / "train.txt").write_text(CONLL, encoding="utf-8")
    frame = read_split(tag_spec(tmp_path, word_field=1, tag_field=2), "train", tmp_path).frame
    assert frame["text"].tolist() == ["NNP VBZ JJ", "NNP NNP", "NNP"]
    assert frame["tags"].tolist() == ["B-NP B-VP B-NP", "B-NP I-NP", "B-NP"]


def test_conll_a_line_without_the_tag_field_makes_its_sentence_a_parse_error(tmp_path):
    text = "EU NNP B-NP B-ORG\nrejects VBZ\nGerman JJ B-NP B-MISC\n\nOK X Y O\n"
    (tmp_path / "train.txt").write_text(text, encoding="utf-8")
    frame = read_split(tag_spec(tmp_path, tag_field=3), "train", tmp_path).frame
    assert frame["row"].tolist() == [1, 5]
    error = frame["parse_error"][0]
    assert error.startswith("line 2: 2 field(s)") and "tag field 3" in error
    assert pd.isna(frame["parse_error"][1])
    assert frame["text"][1] == "OK" and frame["tags"][1] == "O"


def test_conll_a_one_field_line_is_a_parse_error_with_the_default_fields(tmp_path):
    (tmp_path / "train.txt").write_text("EU B-ORG\nO\nrejects O\n", encoding="utf-8")
    frame = read_split(tag_spec(tmp_path), "train", tmp_path).frame
    assert frame["parse_error"][0] is not pd.NA and "line 2" in frame["parse_error"][0]


def test_conll_split_from_several_files_counts_rows_on(tmp_path):
    (tmp_path / "a.txt").write_text("A B-PER\nb O\n\nC B-LOC\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("\nD O\n", encoding="utf-8")
    spec = dataset_spec(task="tag", path=str(tmp_path), splits={"train": ["a.txt", "b.txt"]})
    raw = read_split(spec, "train", tmp_path)
    assert raw.frame["text"].tolist() == ["A b", "C", "D"]
    # a.txt's rows are 1 and 4; b.txt's row 2 follows on after a.txt's last row (4).
    assert raw.frame["row"].tolist() == [1, 4, 6]
    assert raw.frame["row"].is_unique
    assert [record["path"] for record in raw.files] == [f"{tmp_path}/a.txt", f"{tmp_path}/b.txt"]


def test_squad_json_reads_a_question_per_record(tmp_path):
    text = squad(
        (
            CONTEXT,
            [
                qa("q1", "What is the capital?", "Paris", 0),
                qa("q2", "Of what country?", "France", 25),
                {"id": "q3", "question": "No answers?"},
            ],
        ),
        title="Geo",
    )
    (tmp_path / "train.json").write_text(text, encoding="utf-8")
    spec = qa_spec(tmp_path)
    frame = read_split(spec, "train", tmp_path).frame
    assert list(frame.columns) == canonical_columns(spec)
    assert canonical_columns(spec) == [
        "row",
        "text",
        "question",
        "answers",
        "id",
        "title",
        "parse_error",
    ]
    assert frame["row"].tolist() == [1, 2, 3]
    assert frame["text"].tolist() == [CONTEXT] * 3
    assert frame["question"].tolist()[:2] == ["What is the capital?", "Of what country?"]
    assert json.loads(frame["answers"][1]) == {"text": ["France"], "answer_start": [25]}
    assert frame["id"].tolist()[:2] == ["q1", "q2"] and frame["title"][0] == "Geo"
    assert frame["parse_error"][:2].isna().all()
    assert frame["parse_error"][2] == (
        "article 0, paragraph 0, question 2: no question or answers (as SQuAD JSON has them)"
    )


def test_squad_json_split_from_several_files_counts_rows_on(tmp_path):
    (tmp_path / "a.json").write_text(
        squad(("Berlin is big.", [qa("a1", "Which city?", "Berlin", 0)])), encoding="utf-8"
    )
    (tmp_path / "b.json").write_text(
        squad(("Rome is old.", [qa("b1", "Which?", "Rome", 0), qa("b2", "How?", "old", 8)])),
        encoding="utf-8",
    )
    spec = qa_spec(tmp_path, {"train": ["a.json", "b.json"]})
    raw = read_split(spec, "train", tmp_path)
    assert raw.frame["row"].tolist() == [1, 2, 3]
    assert raw.frame["id"].tolist() == ["a1", "b1", "b2"]
    assert [record["path"] for record in raw.files] == [
        f"{tmp_path}/a.json",
        f"{tmp_path}/b.json",
    ]


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"articles": []}'])
def test_squad_json_an_invalid_file_raises_naming_it(tmp_path, content):
    (tmp_path / "train.json").write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.json: not SQuAD JSON"):
        read_split(qa_spec(tmp_path), "train", tmp_path)


@pytest.mark.parametrize("content", ['{"data": "abc"}', '{"data": [1]}'])
def test_squad_json_a_data_entry_that_is_not_an_article_raises_data_error(tmp_path, content):
    (tmp_path / "train.json").write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.json"):
        read_split(qa_spec(tmp_path), "train", tmp_path)


# --- clean ----------------------------------------------------------------------------------


def test_clean_tagged_rows_drops_mismatches_and_invalid_tags_keeping_original_tags(tmp_path):
    raw = {
        "train": tag_frame(
            [
                ("EU rejects German", "B-ORG O B-MISC"),  # kept
                ("Peter Blackburn", "B-PER"),  # tag_mismatch
                ("in Bonn", "O I-LOC"),  # invalid_tags under iob2
                ("bad tag", "O X-PER"),  # invalid_tags: malformed
                ("unreadable", None),
                ("Mr Smith", "O B-PER"),  # kept
            ],
            errors=[None, None, None, None, "line 9: 1 field(s)", None],
        )
    }
    result = clean_splits(raw, tag_spec(tmp_path), CleanParams(), seed=0)
    kept = result.frames["train"]
    assert kept["row"].tolist() == [1, 6]
    assert kept["tags"].tolist() == ["B-ORG O B-MISC", "O B-PER"]
    found = reasons(result)
    assert found[2] == ("tag_mismatch", "2 words but 1 tags")
    assert found[3][0] == "invalid_tags" and found[3][1].startswith("word 2: I-LOC follows O")
    assert found[4] == ("invalid_tags", "word 2: tag 'X-PER' is not O, B-<type> or I-<type>")
    assert found[5] == ("parse_error", "line 9: 1 field(s)")
    quarantine = result.quarantine.set_index("row")
    assert "tags" in result.quarantine.columns
    assert quarantine.loc[3, "tags"] == "O I-LOC"  # as read, not converted
    assert quarantine.loc[2, "tags"] == "B-PER"
    assert result.report["splits"]["train"]["reasons"] == {
        "invalid_tags": 2,
        "parse_error": 1,
        "tag_mismatch": 1,
    }
    assert_reconciled(result, raw)


def test_clean_iob1_tags_are_kept_as_iob2_and_quarantine_keeps_them_as_read(tmp_path):
    raw = {
        "train": tag_frame(
            [
                ("in Bonn today", "O I-LOC O"),
                ("New York Paris", "I-LOC I-LOC B-LOC"),
                ("A B C", "I-PER I-ORG I-ORG"),
                ("bad", "I-"),
            ]
        )
    }
    result = clean_splits(raw, tag_spec(tmp_path, tag_scheme="iob1"), CleanParams(), seed=0)
    assert result.frames["train"]["tags"].tolist() == [
        "O B-LOC O",
        "B-LOC I-LOC B-LOC",
        "B-PER B-ORG I-ORG",
    ]
    assert reasons(result)[4][0] == "invalid_tags"
    assert result.quarantine["tags"].tolist() == ["I-"]
    assert_reconciled(result, raw)


def test_clean_question_rows(tmp_path):
    raw = {
        "train": qa_frame(
            [
                (CONTEXT, "What is the capital?", ["Paris"], [0], "q1"),
                (CONTEXT, "Of  what\tcountry?", ["France"], [25], "q2"),
                (CONTEXT, "   ", ["Paris"], [0], "q3"),  # empty question
                (CONTEXT, "Broken?", ["Paris"], [0, 3], "q4"),  # bad answers
                (CONTEXT, "Where?", ["France"], [3], "q5"),  # answer not at its start
                ("Berlin is big.", "Which city?", ["Berlin"], [0], "q1"),  # repeated id
                (CONTEXT, "What is the capital?", ["Paris"], [0], "q7"),  # same context+question
                ("Berlin is big.", "What is the capital?", ["Berlin"], [0], "q8"),  # other context
            ]
        )
    }
    result = clean_splits(raw, qa_spec(tmp_path), CleanParams(), seed=0)
    kept = result.frames["train"]
    assert kept["row"].tolist() == [1, 2, 8]
    assert kept["text"].tolist() == [CONTEXT, CONTEXT, "Berlin is big."]  # not normalised
    assert kept["question"].tolist()[1] == "Of what country?"
    assert kept["id"].tolist() == ["q1", "q2", "q8"]
    assert list(kept.columns) == ["row", "text", "question", "answers", "id", "title"]
    found = reasons(result)
    assert found[3] == ("empty", "question: blank")
    assert found[4] == ("bad_answers", "1 answer texts but 2 answer starts")
    assert found[5] == ("answer_mismatch", "answer 1 'France' at 3: the context has 'is  is'")
    assert found[6] == ("duplicate", "same id as row 1")
    assert found[7] == ("duplicate", "same pair as row 1")
    assert_reconciled(result, raw)


def test_clean_keeps_many_questions_on_one_context(tmp_path):
    questions = [(CONTEXT, f"Question {i}?", ["Paris"], [0], f"q{i}") for i in range(5)]
    raw = {"train": qa_frame(questions)}
    result = clean_splits(raw, qa_spec(tmp_path), CleanParams(), seed=0)
    assert len(result.frames["train"]) == 5 and result.quarantine.empty
    assert_reconciled(result, raw)


def test_clean_duplicate_id_detail_is_an_integer_row_with_null_ids_around(tmp_path):
    frame = qa_frame(
        [
            (CONTEXT, "What is the capital?", ["Paris"], [0], "q1"),
            (CONTEXT, "Unreadable", ["Paris"], [0], None),
            ("Berlin is big.", "Which city?", ["Berlin"], [0], "q1"),
        ]
    )
    frame.loc[1, "parse_error"] = "article 0, paragraph 0, question 1: no question or answers"
    result = clean_splits({"train": frame}, qa_spec(tmp_path), CleanParams(), seed=0)
    assert reasons(result)[3] == ("duplicate", "same id as row 1")


def test_clean_squad_files_end_to_end(tmp_path):
    (tmp_path / "a.json").write_text(
        squad((CONTEXT, [qa("q1", "Capital?", "Paris", 0), {"id": "q2"}])), encoding="utf-8"
    )
    (tmp_path / "b.json").write_text(
        squad(("Rome is old.", [qa("q3", "Which?", "Rome", 0), qa("q4", "How?", "new", 8)])),
        encoding="utf-8",
    )
    spec = qa_spec(tmp_path, {"train": ["a.json", "b.json"]})
    raw = {"train": read_split(spec, "train", tmp_path).frame}
    result = clean_splits(raw, spec, CleanParams(), seed=0)
    assert result.frames["train"]["id"].tolist() == ["q1", "q3"]
    assert {row: reason for row, (reason, _) in reasons(result).items()} == {
        2: "parse_error",
        4: "answer_mismatch",
    }
    assert_reconciled(result, raw)


# --- validate -------------------------------------------------------------------------------

LENIENT = ValidateParams(min_rows_per_split=1, max_quarantine_fraction=1.0)


def cleaned_tags(tmp_path: Path) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, object]:
    spec = dataset_spec(task="tag", path=str(tmp_path), splits={"train": "t.txt", "val": "v.txt"})
    raw = {
        "train": tag_frame([("EU rejects German", "B-ORG O B-MISC"), ("Mr Smith", "O B-PER")]),
        "val": tag_frame([("Peter Blackburn", "B-PER I-PER"), ("x", "O O")]),
    }
    result = clean_splits(raw, spec, CleanParams(), seed=0)
    return result.frames, result.quarantine, spec


def test_validate_passes_a_cleaned_tag_dataset_and_fails_a_word_tag_mismatch(tmp_path):
    frames, quarantine, spec = cleaned_tags(tmp_path)
    outcome = validate_splits(
        frames, quarantine, "ner", spec, CleanParams(), LENIENT, tmp_path / "docs"
    )
    assert outcome.success, outcome.failures
    broken = dict(frames)
    broken["train"] = frames["train"].copy()
    broken["train"].loc[0, "tags"] = "B-ORG O"
    outcome = validate_splits(
        broken, quarantine, "ner", spec, CleanParams(), LENIENT, tmp_path / "docs2"
    )
    assert not outcome.success
    assert len(outcome.failures) == 1
    assert outcome.failures[0].startswith(
        "ner.train: expect_column_values_to_be_between on 'words_minus_tags'"
    )
    assert "1 unexpected" in outcome.failures[0]


def test_validate_passes_a_qa_dataset_and_fails_an_answer_outside_its_context(tmp_path):
    spec = dataset_spec(task="qa", path=str(tmp_path), splits={"train": "t", "val": "v"})
    raw = {
        "train": qa_frame(
            [
                (CONTEXT, "What is the capital?", ["Paris"], [0], "q1"),
                (CONTEXT, "Of what country?", ["France"], [25], "q2"),
            ]
        ),
        "val": qa_frame([("Berlin is big.", "Which city?", ["Berlin"], [0], "v1")]),
    }
    result = clean_splits(raw, spec, CleanParams(), seed=0)
    outcome = validate_splits(
        result.frames, result.quarantine, "sq", spec, CleanParams(), LENIENT, tmp_path / "d"
    )
    assert outcome.success, outcome.failures
    broken = dict(result.frames)
    broken["val"] = result.frames["val"].copy()
    broken["val"].loc[0, "answers"] = json.dumps({"text": ["Munich"], "answer_start": [0]})
    outcome = validate_splits(
        broken, result.quarantine, "sq", spec, CleanParams(), LENIENT, tmp_path / "d2"
    )
    assert not outcome.success
    assert len(outcome.failures) == 1
    assert outcome.failures[0].startswith(
        "sq.val: expect_column_values_to_be_in_set on 'answers_in_context'"
    )


# --- split ----------------------------------------------------------------------------------


def test_group_selection_takes_whole_groups_until_it_has_n_rows():
    groups = np.array(["a", "b", "a", "c", "c", "c", "b", "d"])  # sizes a 2, b 2, c 3, d 1
    for seed in range(10):
        rng = np.random.default_rng(seed)
        positions = group_selection(groups, 3, rng)
        chosen = set(groups[positions])
        assert positions.tolist() == sorted(positions.tolist())
        # every chosen group whole, none of the others
        assert positions.tolist() == [i for i, g in enumerate(groups) if g in chosen]
        assert len(positions) >= 3
        # the last group taken was needed: without any one group fewer than 3 rows remain
        sizes = {g: int((groups == g).sum()) for g in chosen}
        assert any(len(positions) - size < 3 for size in sizes.values())
    # seeded: the same generator state, the same groups
    first = group_selection(groups, 4, np.random.default_rng(7))
    assert first.tolist() == group_selection(groups, 4, np.random.default_rng(7)).tolist()
    assert group_selection(groups, 8, np.random.default_rng(0)).tolist() == list(range(8))


def test_group_selection_hand_computed_order():
    groups = np.array(["x", "y", "x", "z"])  # unique names sorted: x (2 rows), y (1), z (1)
    rng = np.random.default_rng(3)
    order = np.random.default_rng(3).permutation(3)
    names = np.array(["x", "y", "z"])
    sizes = np.array([2, 1, 1])
    taken, total = [], 0
    for group in order:
        taken.append(names[group])
        total += sizes[group]
        if total >= 2:
            break
    expected = [i for i, g in enumerate(groups) if g in taken]
    assert group_selection(groups, 2, rng).tolist() == expected


def test_split_frames_carves_val_and_test_from_train_by_whole_contexts(tmp_path):
    spec = qa_spec(tmp_path)
    records = [
        (f"Context number {c}.", f"Question {q} on {c}?", ["Context"], [0], f"{c}-{q}")
        for c in range(10)
        for q in range(c % 3 + 1)
    ]
    frame = qa_frame(records).drop(columns="parse_error")
    frames, report = split_frames(
        {"train": frame}, spec, SplitParams(val_fraction=0.2, test_fraction=0.2), seed=1
    )
    assert list(frames) == ["train", "val", "test"]
    contexts = {name: set(part["text"]) for name, part in frames.items()}
    assert not contexts["train"] & contexts["val"]
    assert not contexts["train"] & contexts["test"]
    assert not contexts["val"] & contexts["test"]
    assert sum(len(part) for part in frames.values()) == len(frame)
    carved = round(len(frame) * 0.2)
    assert len(frames["val"]) >= carved and len(frames["test"]) >= carved
    assert sorted(pd.concat(frames.values())["id"]) == sorted(frame["id"])
    assert "whole groups of 'text'" in report["methods"]["val"]


# --- encode ---------------------------------------------------------------------------------


def test_tag_vocabulary_is_o_then_b_and_i_of_each_type_sorted():
    tags = pd.Series(["B-PER I-PER O", "O B-LOC", "B-MISC O O", "O"])
    assert tag_vocabulary(tags) == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-PER", "I-PER"]
    assert tag_vocabulary(pd.Series(["O O"])) == ["O"]


def test_first_token_labels_put_each_tag_on_its_word_s_first_token():
    word_ids = [0, 0, 1, 2, 2, 2, None]
    assert first_token_labels(word_ids, [5, 6, 7]) == [5, -100, 6, 7, -100, -100, -100]
    assert first_token_labels([None, 0, 1, None], [3, 4]) == [-100, 3, 4, -100]
    assert first_token_labels([], []) == []


def save_tokenizer(texts: list[str], path: Path):
    tokenizer = train_tokenizer(texts, TokenizerParams(vocab_size=300, min_frequency=1))
    tokenizer.save(str(path))
    return tokenizer


def test_encode_tagged_dataset_labels_each_word_s_first_token(tmp_path):
    train = tag_frame(
        [
            ("EU rejects German call", "B-ORG O B-MISC O"),
            ("Peter Blackburn went to Brussels", "B-PER I-PER O O B-LOC"),
        ]
    ).drop(columns="parse_error")
    val = tag_frame([("Blackburn rejects Zurich", "B-PER O B-LOC")]).drop(columns="parse_error")
    tokenizer = save_tokenizer(list(train["text"]) * 3, tmp_path / "tok.json")
    spec = dataset_spec(task="tag", path="x", splits={"train": "t", "val": "v"})
    out = tmp_path / "encoded"
    meta = encode_splits(
        {"train": train, "val": val},
        tmp_path / "tok.json",
        spec,
        EncodeParams(max_length=64, block_size=16),
        out,
    )
    names = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert meta["tag_names"] == names
    assert json.loads((out / META).read_text())["tag_names"] == names
    assert meta["unknown_tags"] == {"train": 0, "val": 0}
    encoded = datasets.load_from_disk(str(out / "train"))
    assert set(encoded.column_names) == {"input_ids", "labels"}
    for row, (text, tags) in enumerate(zip(train["text"], train["tags"], strict=True)):
        ids, labels = encoded[row]["input_ids"], encoded[row]["labels"]
        words = text.split()
        encoding = tokenizer.encode(words, is_pretokenized=True, add_special_tokens=False)
        assert ids == [CLS_ID, *encoding.ids, SEP_ID]
        assert len(labels) == len(ids) and labels[0] == labels[-1] == IGNORE_INDEX
        starts = [encoding.word_ids.index(word) + 1 for word in range(len(words))]
        expected = [IGNORE_INDEX] * len(ids)
        for position, tag in zip(starts, tags.split(), strict=True):
            expected[position] = names.index(tag)
        assert labels == expected
        assert sum(label != IGNORE_INDEX for label in labels) == len(words)
    assert {"pretrain", "pretrain_val"} <= set(meta["splits"])


def test_encode_tagged_val_tag_unknown_to_train_is_ignored_and_counted(tmp_path):
    train = tag_frame([("EU rejects", "B-ORG O")]).drop(columns="parse_error")
    val = tag_frame([("Bonn rejects", "B-LOC O")]).drop(columns="parse_error")
    save_tokenizer(["EU rejects Bonn"] * 3, tmp_path / "tok.json")
    spec = dataset_spec(task="tag", path="x", splits={"train": "t", "val": "v"})
    meta = encode_splits(
        {"train": train, "val": val},
        tmp_path / "tok.json",
        spec,
        EncodeParams(max_length=16, block_size=8),
        tmp_path / "out",
    )
    assert meta["unknown_tags"] == {"train": 0, "val": 1}
    labels = datasets.load_from_disk(str(tmp_path / "out" / "val"))[0]["labels"]
    assert [label for label in labels if label != IGNORE_INDEX] == [0]  # only "rejects": O


def test_encode_qa_windows_point_at_the_answer_tokens(tmp_path):
    long_context = " ".join(f"word{i}" for i in range(40)) + " the answer is zebra today ."
    short_context = "Paris is the capital of France ."
    records = [
        (short_context, "capital ?", ["Paris"], [0], "a"),
        (short_context, "country ?", ["France"], [short_context.index("France")], "b"),
        (long_context, "which animal ?", ["zebra"], [long_context.index("zebra")], "c"),
    ]
    frame = qa_frame(records).drop(columns="parse_error")
    tokenizer = save_tokenizer(
        [short_context, long_context, "capital country which animal"], tmp_path / "tok.json"
    )
    spec = qa_spec(tmp_path, {"train": "t", "val": "v"})
    params = EncodeParams(max_length=40, stride=4, max_question_tokens=8, block_size=16)
    out = tmp_path / "encoded"
    meta = encode_splits(
        {"train": frame, "val": frame.iloc[:1]}, tmp_path / "tok.json", spec, params, out
    )
    # the short context fits one window (40 - question - 3 >= its 18 tokens); the long one not
    assert meta["questions_in_several_windows"] == {"train": 1, "val": 0}
    assert meta["stride"] == 4 and meta["max_question_tokens"] == 8
    windows = datasets.load_from_disk(str(out / "train"))
    assert set(windows.column_names) == {"input_ids", "start_positions", "end_positions"}
    assert len(windows) > 3  # the long context needs several windows
    found = {}
    for window in windows:
        ids, start, end = window["input_ids"], window["start_positions"], window["end_positions"]
        assert len(ids) <= 40 and ids[0] == CLS_ID and ids[-1] == SEP_ID
        if start == 0:
            assert end == 0
            continue
        assert start <= end
        found.setdefault(tokenizer.decode(ids[start : end + 1]).strip(), 0)
        found[tokenizer.decode(ids[start : end + 1]).strip()] += 1
    # lowercased tokenizer: each answer decodes back from its window's span
    assert set(found) == {"paris", "france", "zebra"}
    assert found["paris"] == 1 and found["france"] == 1


@pytest.mark.parametrize(
    ("task", "content", "what"),
    [
        ("tag", "", "sentence"),
        ("tag", "-DOCSTART- -X- -X- O\n\n", "sentence"),
        ("qa", '{"data": []}', "question"),
    ],
)
def test_a_file_without_records_is_refused_naming_it(tmp_path, task, content, what):
    name = "train.txt" if task == "tag" else "train.json"
    (tmp_path / name).write_text(content, encoding="utf-8")
    spec = dataset_spec(task=task, path=str(tmp_path), splits={"train": name})
    with pytest.raises(DataError, match=rf"train\.\w+ holds no {what}"):
        read_split(spec, "train", tmp_path)
