"""Source readers: every record becomes a row (malformed ones with a parse error), and problems of
a whole file stop with the file and column named."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from transformer_pl.tasks.settings import dataset_spec
from transformer_pl.data import DataError
from transformer_pl.data.sources import read_split, resolve_folder


def spec(**fields) -> DatasetSpec:
    defaults = {"task": "classify", "path": "ds", "splits": {"train": "train.csv"}}
    if fields.get("task", "classify") == "classify":
        defaults |= {"label_column": "label", "label_names": ["neg", "pos"]}
    return dataset_spec(**{**defaults, **fields})


def write(root: Path, name: str, data: bytes) -> Path:
    path = root / "ds" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture(autouse=True)
def no_data_dir(monkeypatch):
    monkeypatch.delenv("TPL_DATA_DIR", raising=False)


def test_csv_keeps_malformed_records_as_parse_errors(tmp_path):
    rows = [
        b"text,label",
        b'"fine, with a comma",pos',
        b'"caf\xe9",neg',  # Latin-1 byte: invalid UTF-8
        b"too,many,fields",
        b"too few",
        b'"multi\nline",pos',
    ]
    write(tmp_path, "train.csv", b"\n".join(rows) + b"\n")
    frame = read_split(spec(), "train", tmp_path).frame
    assert frame["row"].tolist() == [1, 2, 3, 4, 5]
    assert frame.loc[0, "text"] == "fine, with a comma" and frame.loc[0, "label"] == "pos"
    assert pd.isna(frame.loc[0, "parse_error"])
    assert frame.loc[1, "parse_error"] == "invalid UTF-8 byte 0xe9 at character 3 in column 'text'"
    assert frame.loc[1, "text"] == "caf\ufffd"
    assert frame.loc[2, "parse_error"] == "expected 2 fields, got 3"
    assert frame.loc[2, "text"] == "too,many,fields"
    assert frame.loc[3, "parse_error"] == "expected 2 fields, got 1"
    assert frame.loc[4, "text"] == "multi\nline"


def test_tsv_without_quoting_reads_quotes_as_text(tmp_path):
    write(tmp_path, "train.tsv", b'sentence\tlabel\n"quoted" start \t1\nit \'s fine \t0\n')
    frame = read_split(
        spec(format="tsv", quoting="none", text_column="sentence", splits={"train": "train.tsv"}),
        "train",
        tmp_path,
    ).frame
    assert frame["text"].tolist() == ['"quoted" start ', "it 's fine "]
    assert frame["label"].tolist() == ["1", "0"]


def test_gzip_is_detected_and_checksummed_as_stored(tmp_path):
    data = gzip.compress(b"text,label\nhello,pos\n", mtime=0)
    write(tmp_path, "train.csv.gz", data)
    raw = read_split(spec(splits={"train": "train.csv.gz"}), "train", tmp_path)
    assert raw.frame["text"].tolist() == ["hello"]
    assert raw.files[0]["bytes"] == len(data)
    assert raw.files[0]["path"] == "ds/train.csv.gz"
    assert len(raw.files[0]["sha256"]) == 64


def test_missing_file_and_missing_column_name_what_is_missing(tmp_path):
    write(tmp_path, "train.csv", b"review,label\nhello,pos\n")
    with pytest.raises(DataError, match=r"file not found: .*test\.csv"):
        read_split(spec(splits={"train": "train.csv", "test": "test.csv"}), "test", tmp_path)
    with pytest.raises(DataError, match=r"train\.csv: no column 'text' \(columns: review, label\)"):
        read_split(spec(), "train", tmp_path)
    with pytest.raises(DataError, match="dataset folder 'elsewhere' not found"):
        read_split(spec(path="elsewhere"), "train", tmp_path)


def test_unlabeled_split_needs_no_label_column(tmp_path):
    write(tmp_path, "unsup.csv", b"text\nno label here\n")
    frame = read_split(
        spec(splits={"train": "x", "unlabeled": "unsup.csv"}), "unlabeled", tmp_path
    ).frame
    assert frame["text"].tolist() == ["no label here"] and frame["label"].isna().all()


def test_json_lines_records_and_errors(tmp_path):
    lines = [
        json.dumps({"text": "good", "label": 1}),
        "{not json",
        json.dumps({"text": "no label field"}),
        json.dumps({"text": None, "label": None}),
        json.dumps(["a list"]),
    ]
    write(tmp_path, "train.jsonl", "\n".join(lines).encode())
    frame = read_split(
        spec(format="jsonl", splits={"train": "train.jsonl"}), "train", tmp_path
    ).frame
    assert frame.loc[0, "label"] == "1" and pd.isna(frame.loc[0, "parse_error"])
    assert frame.loc[1, "parse_error"].startswith("invalid JSON")
    assert frame.loc[2, "parse_error"] == "no field 'label'"
    assert frame.loc[3, ["text", "label", "parse_error"]].isna().all()  # nulls: clean decides
    assert frame.loc[4, "parse_error"] == "not a JSON object"


def test_json_lines_column_absent_from_every_record_is_an_error(tmp_path):
    write(tmp_path, "train.jsonl", b'{"body": "x", "label": 1}\n')
    with pytest.raises(DataError, match="no column 'text'"):
        read_split(spec(format="jsonl", splits={"train": "train.jsonl"}), "train", tmp_path)


def test_parquet(tmp_path):
    path = tmp_path / "ds" / "train.parquet"
    path.parent.mkdir()
    pd.DataFrame({"text": ["a", "b"], "label": [0, 1]}).to_parquet(path)
    frame = read_split(
        spec(format="parquet", splits={"train": "train.parquet"}), "train", tmp_path
    ).frame
    assert frame["label"].tolist() == ["0", "1"] and frame["row"].tolist() == [1, 2]


def test_text_lines_skip_blank_separators_and_keep_line_numbers(tmp_path):
    write(tmp_path, "corpus.txt", b" = Title = \n\n first line\r\n\xff bad\n   \nlast")
    raw = read_split(
        spec(task="lm", format="text", splits={"train": "corpus.txt"}), "train", tmp_path
    )
    assert raw.frame["row"].tolist() == [1, 3, 4, 6]
    assert raw.frame["text"].tolist() == [" = Title = ", " first line", "\ufffd bad", "last"]
    assert raw.frame["parse_error"].notna().tolist() == [False, False, True, False]
    assert raw.blank_lines == 2


def test_parallel_text_aligns_lines_and_flags_the_unaligned(tmp_path):
    write(tmp_path, "train.de.gz", gzip.compress(b"Ein Hund.\nZwei Katzen.\nDrei.\n"))
    write(tmp_path, "train.en.gz", gzip.compress(b"A dog.\nTwo cats.\n"))
    translation = spec(
        task="translate",
        format="parallel_text",
        splits={"train": "train.{lang}.gz"},
        source_language="de",
        target_language="en",
    )
    raw = read_split(translation, "train", tmp_path)
    assert raw.frame["text"].tolist() == ["Ein Hund.", "Zwei Katzen.", "Drei."]
    assert raw.frame["target"].tolist()[:2] == ["A dog.", "Two cats."]
    assert raw.frame.loc[2, "parse_error"] == "no aligned line in train.en.gz"
    assert [file["path"] for file in raw.files] == ["ds/train.de.gz", "ds/train.en.gz"]


def test_relative_paths_resolve_under_data_dir_then_project(tmp_path, monkeypatch):
    (tmp_path / "shared" / "ds").mkdir(parents=True)
    (tmp_path / "project" / "ds").mkdir(parents=True)
    (tmp_path / "project" / "own").mkdir()
    monkeypatch.setenv("TPL_DATA_DIR", str(tmp_path / "shared"))
    assert resolve_folder("ds", tmp_path / "project") == tmp_path / "shared" / "ds"
    assert resolve_folder("own", tmp_path / "project") == tmp_path / "project" / "own"


@pytest.mark.timeout(120)
def test_hub_source_offline_fails_fast_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    hub = spec(source="hub", hub_id="stanfordnlp/imdb", path=None, splits={"train": "train"})
    with pytest.raises(DataError, match="cannot load split 'train' of 'stanfordnlp/imdb'"):
        read_split(hub, "train", tmp_path)
