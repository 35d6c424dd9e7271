"""Read a dataset's splits into canonical frames, from local files or the Hugging Face Hub.

A canonical raw frame has one row per source record:

    row          1-based record number in the source (a header is not counted; for line-based
                 files, the line number)
    text         the text (translation: the source-language side)
    label        classification: the label exactly as written in the file (null when absent)
    target       translation: the target-language side
    tags         tagging: the words' tags, space-separated (`text`: the words, alike)
    parse_error  why the record could not be read as its format says; null when it could

Malformed records (invalid UTF-8, a wrong number of fields, bad JSON, a line without its
translation) are kept with `parse_error` set, so that clean quarantines them with that reason:
the reader drops nothing and stops only on a problem of a whole file (missing file or column),
naming the file.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from transformer_pl.dataset_spec import split_files
from transformer_pl.params import DatasetSpec
from transformer_pl.data import DataError, ordered_splits

# Invalid UTF-8 bytes, decoded with "surrogateescape", become these lone surrogates.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class RawSplit:
    frame: pd.DataFrame
    files: list[dict[str, Any]] = field(default_factory=list)  # what was read, with checksums
    blank_lines: int = 0  # text files: blank lines between paragraphs (separators, not records)


def canonical_columns(spec: DatasetSpec) -> list[str]:
    return ["row", "text", *spec.columns, "parse_error"]


def load_splits(spec: DatasetSpec, project_root: Path) -> dict[str, RawSplit]:
    """Every split the spec lists, read in canonical order."""
    return {split: read_split(spec, split, project_root) for split in ordered_splits(spec.splits)}


def read_split(spec: DatasetSpec, split: str, project_root: Path) -> RawSplit:
    """The split's records; from several files, one file's after the other's (`row` counts on
    across them)."""
    if spec.source == "hub":
        return _read_hub(spec, split)
    folder = resolve_folder(spec.path, project_root)  # type: ignore[arg-type]  # checked by spec
    if spec.format == "parallel_text":
        return _read_parallel(spec, split, folder)
    parts = [_read_file(spec, split, folder, name) for name in split_files(spec.splits[split])]
    if len(parts) == 1:
        return parts[0]
    frames, rows_before = [], 0
    for part in parts:
        frames.append(part.frame.assign(row=part.frame["row"] + rows_before))
        rows_before += int(part.frame["row"].max()) if len(part.frame) else 0
    return RawSplit(
        pd.concat(frames, ignore_index=True),
        [record for part in parts for record in part.files],
        sum(part.blank_lines for part in parts),
    )


def _read_file(spec: DatasetSpec, split: str, folder: Path, name: str) -> RawSplit:
    path = _existing_file(folder / name, spec, split)
    data = path.read_bytes()
    text, has_bad_bytes = decode_utf8(_decompress(data, path))
    files = [_file_record(spec, name, data)]
    if spec.format == "text":
        frame, blank_lines = _read_lines(text, has_bad_bytes)
        return RawSplit(frame, files, blank_lines)
    if spec.format in ("conll", "squad_json"):
        if spec.format == "conll":
            frame = _read_conll(text, spec, has_bad_bytes)
        else:
            frame = _read_squad_json(text, path, spec, has_bad_bytes)
        if frame.empty:
            what = "sentence" if spec.format == "conll" else "question"
            raise DataError(f"{path} holds no {what} (format {spec.format}): is it the right file?")
        return RawSplit(frame, files)
    columns = spec.source_columns(split)
    records = _Records(canonical_columns(spec))
    if spec.format in ("csv", "tsv"):
        delimiter = "," if spec.format == "csv" else "\t"
        quoting = csv.QUOTE_NONE if spec.quoting == "none" else csv.QUOTE_MINIMAL
        _read_delimited(records, text, path, delimiter, quoting, columns, has_bad_bytes)
    elif spec.format == "jsonl":
        _read_json_lines(records, text, path, columns, has_bad_bytes)
    else:  # parquet
        _read_parquet(records, path, columns)
    return RawSplit(records.frame(), files)


def resolve_folder(spec_path: str, project_root: Path) -> Path:
    """An absolute path as is; a relative one under $TPL_DATA_DIR, else under the project root."""
    path = Path(spec_path).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        data_dir = os.environ.get("TPL_DATA_DIR")
        candidates = [Path(data_dir) / path] if data_dir else []
        candidates.append(project_root / path)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    looked = ", ".join(str(candidate) for candidate in candidates)
    raise DataError(
        f"dataset folder '{spec_path}' not found (looked in: {looked}); "
        "set TPL_DATA_DIR or put the folder under the project root"
    )


def decode_utf8(data: bytes) -> tuple[str, bool]:
    """Strict UTF-8 (a leading BOM dropped); if that fails, each invalid byte becomes a lone
    surrogate that `utf8_problem` finds per record. Returns (text, whether any byte was bad)."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff"), True


def utf8_problem(value: str) -> str | None:
    match = _ESCAPED_BYTE.search(value)
    if match is None:
        return None
    byte = ord(match.group()) - 0xDC00
    return f"invalid UTF-8 byte 0x{byte:02x} at character {match.start()}"


def replace_bad_bytes(value: str) -> str:
    """U+FFFD for each invalid byte: Parquet stores only valid UTF-8."""
    return _ESCAPED_BYTE.sub("\ufffd", value)


class _Records:
    """Column lists for a canonical frame, filled one record at a time (absent values: null)."""

    def __init__(self, columns: list[str]) -> None:
        self.values: dict[str, list[Any]] = {name: [] for name in columns}

    def add(self, row: int, error: str | None = None, **values: str | None) -> None:
        values.update(row=row, parse_error=error)
        for name, column in self.values.items():
            column.append(values.get(name))

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.values)
        frame["row"] = frame["row"].astype("int64")
        for name in frame.columns.drop("row"):
            frame[name] = frame[name].astype("string")
        return frame


def _checked_fields(
    values: dict[str, str | None], has_bad_bytes: bool
) -> tuple[dict[str, str | None], str | None]:
    """Values with invalid bytes replaced, and a parse error naming the first bad column."""
    if not has_bad_bytes:
        return values, None
    error = None
    for name, value in values.items():
        problem = utf8_problem(value) if value is not None else None
        if problem is not None:
            error = error or f"{problem} in column '{name}'"
            values[name] = replace_bad_bytes(value)  # type: ignore[arg-type]
    return values, error


def _read_delimited(
    records: _Records,
    text: str,
    path: Path,
    delimiter: str,
    quoting: int,
    columns: dict[str, str],
    has_bad_bytes: bool,
) -> None:
    # A 1 MB review is data to quarantine as too long, not a reason to stop reading.
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path} is empty: expected a header row")
    positions = _column_positions(header, columns, path)
    try:
        for row, fields in enumerate(reader, start=1):
            if len(fields) != len(header):
                whole = replace_bad_bytes(delimiter.join(fields))
                records.add(row, f"expected {len(header)} fields, got {len(fields)}", text=whole)
                continue
            values = {name: fields[position] for name, position in positions.items()}
            values, error = _checked_fields(values, has_bad_bytes)  # type: ignore[arg-type]
            records.add(row, error, **values)
    except csv.Error as error:
        raise DataError(f"{path}, line {reader.line_num}: unreadable CSV ({error})") from None


def _column_positions(header: list[str], columns: dict[str, str], path: Path) -> dict[str, int]:
    missing = [source for source in columns.values() if source not in header]
    if missing:
        raise _missing_columns(path, missing, header)
    return {name: header.index(source) for name, source in columns.items()}


def _missing_columns(path: Path, missing: list[str], available: list[str]) -> DataError:
    return DataError(
        f"{path}: no column {', '.join(repr(name) for name in missing)} "
        f"(columns: {', '.join(available) or 'none'}); set text_column/label_column/"
        "target_column in params.yaml"
    )


def _read_json_lines(
    records: _Records, text: str, path: Path, columns: dict[str, str], has_bad_bytes: bool
) -> None:
    seen: set[str] = set()
    for row, line in enumerate(_lines(text), start=1):
        problem = utf8_problem(line) if has_bad_bytes else None
        if problem is not None:
            records.add(row, problem, text=replace_bad_bytes(line))
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            records.add(row, f"invalid JSON: {error.msg}", text=line)
            continue
        if not isinstance(record, dict):
            records.add(row, "not a JSON object", text=line)
            continue
        seen.update(record)
        absent = [source for source in columns.values() if source not in record]
        if absent:
            records.add(row, f"no field '{absent[0]}'", text=line)
            continue
        values = {name: _as_text(record[source]) for name, source in columns.items()}
        records.add(row, **values)
    never_seen = [source for source in columns.values() if source not in seen]
    if never_seen and seen:  # a column no record has is a spec error, not bad records
        raise _missing_columns(path, never_seen, sorted(seen))


def _read_parquet(records: _Records, path: Path, columns: dict[str, str]) -> None:
    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: not a readable Parquet file ({error})") from None
    positions = _column_positions(table.column_names, columns, path)
    data = {name: table.column(position).to_pylist() for name, position in positions.items()}
    for index in range(table.num_rows):
        records.add(index + 1, **{name: _as_text(data[name][index]) for name in data})


def _read_lines(text: str, has_bad_bytes: bool) -> tuple[pd.DataFrame, int]:
    """One record per non-blank line; blank lines separate paragraphs and are only counted."""
    records = _Records(["row", "text", "parse_error"])
    blank_lines = 0
    for row, line in enumerate(_lines(text), start=1):
        if not line.strip():
            blank_lines += 1
            continue
        values, error = _checked_fields({"text": line}, has_bad_bytes)
        records.add(row, error, **values)
    return records.frame(), blank_lines


def _read_conll(text: str, spec: DatasetSpec, has_bad_bytes: bool) -> pd.DataFrame:
    """A sentence per record (its first word's line number as `row`): words one per line, a
    blank line or a `-DOCSTART-` line between sentences. A line without the word or tag field
    makes its sentence a parse error naming the line."""
    records = _Records(canonical_columns(spec))
    words: list[str] = []
    tags: list[str] = []
    first_line = 0
    error: str | None = None

    def end_sentence() -> None:
        nonlocal first_line, error
        if first_line:
            records.add(first_line, error, text=" ".join(words), tags=" ".join(tags))
        words.clear()
        tags.clear()
        first_line, error = 0, None

    for number, line in enumerate(_lines(text), start=1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            end_sentence()
            continue
        first_line = first_line or number
        problem = utf8_problem(line) if has_bad_bytes else None
        if problem is not None:
            error = error or f"line {number}: {problem}"
            fields = replace_bad_bytes(line).split()
        word, tag = (
            _field_position(field, len(fields)) for field in (spec.word_field, spec.tag_field)
        )
        if word is None or tag is None or word == tag:
            error = error or (
                f"line {number}: {len(fields)} field(s), no word field {spec.word_field} and "
                f"tag field {spec.tag_field} apart (set word_field/tag_field in params.yaml)"
            )
            continue
        words.append(fields[word])
        tags.append(fields[tag])
    end_sentence()
    return records.frame()


def _field_position(field: int, count: int) -> int | None:
    """Where field `field` (negative: from the end) is among `count` fields; None if absent."""
    return field % count if -count <= field < count else None


def _read_squad_json(text: str, path: Path, spec: DatasetSpec, has_bad_bytes: bool) -> pd.DataFrame:
    """A question per record (its 1-based number in the file as `row`): `text` its paragraph's
    context, `answers` as the Hub's SQuAD holds them (JSON: {"text": [...], "answer_start":
    [...]}). A question without its fields is a parse error naming where it is."""
    try:
        articles = json.loads(text)["data"]
        if not isinstance(articles, list) or not all(isinstance(a, dict) for a in articles):
            raise TypeError("'data' is not a list of articles (objects)")
        paragraphs = [
            (article_index, article.get("title"), paragraph_index, paragraph)
            for article_index, article in enumerate(articles)
            for paragraph_index, paragraph in enumerate(_objects(article, "paragraphs"))
        ]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not SQuAD JSON ({{'data': [...]}}): {error}") from None
    records = _Records(canonical_columns(spec))
    row = 0
    for article_index, title, paragraph_index, paragraph in paragraphs:
        context = paragraph.get("context")
        qas = paragraph.get("qas", [])
        for question_index, qa in enumerate(qas if isinstance(qas, list) else [qas]):
            row += 1
            where = (
                f"article {article_index}, paragraph {paragraph_index}, question {question_index}"
            )
            answers = qa.get("answers") if isinstance(qa, dict) else None
            well_formed = isinstance(answers, list) and all(isinstance(a, dict) for a in answers)
            if not isinstance(context, str) or not well_formed or "question" not in qa:
                missing = "context" if not isinstance(context, str) else "question or answers"
                kept = context if isinstance(context, str) else None
                records.add(row, f"{where}: no {missing} (as SQuAD JSON has them)", text=kept)
                continue
            values = {
                "text": context,
                "question": _as_text(qa["question"]),
                "answers": _as_text(
                    {
                        "text": [answer.get("text") for answer in answers],
                        "answer_start": [answer.get("answer_start") for answer in answers],
                    }
                ),
                "id": _as_text(qa.get("id")),
                "title": _as_text(title),
            }
            values, error = _checked_fields(values, has_bad_bytes)
            records.add(row, error, **values)
    return records.frame()


def _objects(record: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """`record[key]`, which must be a list of JSON objects."""
    items = record.get(key, [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise TypeError(f"'{key}' is not a list of objects")
    return items


def _read_parallel(spec: DatasetSpec, split: str, folder: Path) -> RawSplit:
    """Line i of the source-language file is translated by line i of the target-language file."""
    pattern = spec.splits[split]
    sides, files = [], []
    for language in (spec.source_language, spec.target_language):
        name = pattern.format(lang=language)
        path = _existing_file(folder / name, spec, split)
        data = path.read_bytes()
        text, has_bad_bytes = decode_utf8(_decompress(data, path))
        sides.append((name, _lines(text), has_bad_bytes))
        files.append(_file_record(spec, name, data))
    (source_name, sources, source_bad), (target_name, targets, target_bad) = sides
    records = _Records(canonical_columns(spec))
    for index in range(max(len(sources), len(targets))):
        if index >= len(sources) or index >= len(targets):
            shorter = source_name if index >= len(sources) else target_name
            text = sources[index] if index < len(sources) else None
            target = targets[index] if index < len(targets) else None
            records.add(index + 1, f"no aligned line in {shorter}", text=text, target=target)
            continue
        pair = {"text": sources[index], "target": targets[index]}
        values, error = _checked_fields(pair, source_bad or target_bad)
        records.add(index + 1, error, **values)
    return RawSplit(records.frame(), files)


def _read_hub(spec: DatasetSpec, split: str) -> RawSplit:
    import datasets  # heavy; only hub sources need it

    name = spec.splits[split]
    try:
        dataset = datasets.load_dataset(spec.hub_id, spec.hub_config, split=name)
    except Exception as error:  # network, auth, offline mode, unknown split: all end here
        raise DataError(
            f"cannot load split '{name}' of '{spec.hub_id}' from the Hugging Face Hub "
            f"({type(error).__name__}: {error}). Offline (HF_HUB_OFFLINE=1)? Use a local copy "
            "(source: local, path: ...)"
        ) from None
    columns = spec.source_columns(split)
    _column_positions(dataset.column_names, columns, Path(f"{spec.hub_id}:{name}"))
    data = {column: _hub_values(dataset, source) for column, source in columns.items()}
    records = _Records(canonical_columns(spec))
    for index in range(len(dataset)):
        records.add(index + 1, **{column: _as_text(data[column][index]) for column in data})
    files = [
        {
            "hub_id": spec.hub_id,
            "config": spec.hub_config,
            "split": name,
            "fingerprint": dataset._fingerprint,
        }
    ]
    return RawSplit(records.frame(), files)


def _hub_values(dataset: Any, column: str) -> list[Any]:
    """A Hub column's values; in a list per row (a sentence's tags), class ids by their class
    names (a single class id stays as is: label_values maps it)."""
    import datasets

    values = dataset.data.column(column).to_pylist()
    inner = getattr(dataset.features[column], "feature", None)
    if isinstance(inner, datasets.ClassLabel):
        values = [None if row is None else [inner.int2str(item) for item in row] for row in values]
    return values


def _existing_file(path: Path, spec: DatasetSpec, split: str) -> Path:
    if not path.is_file():
        raise DataError(f"file not found: {path} (split '{split}', format {spec.format})")
    return path


def _decompress(data: bytes, path: Path) -> bytes:
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: corrupt gzip data ({error})") from None


def _file_record(spec: DatasetSpec, name: str, data: bytes) -> dict[str, Any]:
    return {
        "path": f"{spec.path}/{name}",
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _lines(text: str) -> list[str]:
    """Lines without their terminators ("\\n" or "\\r\\n"); a final newline ends the last line."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _as_text(value: object) -> str | None:
    """A value as text; a list (a sentence's words or tags) as its items joined by spaces; a
    mapping (SQuAD's answers) as JSON."""
    if isinstance(value, list):
        return " ".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return None if value is None else str(value)
