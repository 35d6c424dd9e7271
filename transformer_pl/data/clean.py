"""Clean: normalise text, drop what cannot be used, and account for every dropped row.

Per split, a row gets the first of these reasons that applies:

    parse_error     the reader could not read the record (sources.py says why)
    empty           no text, or nothing left after normalisation (e.g. HTML only)
    too_short       fewer than `min_chars` characters after normalisation
    too_long        more than `max_chars`
    length_ratio    translation: one side more than `max_length_ratio` times the other
    missing_label   classification: no label
    unknown_label   a label that `label_values`/`label_names` do not know
    duplicate       the same normalised text (translation: pair) as an earlier row of the split,
                    or an unlabeled row repeating a train text (it would be pretrained on twice,
                    and a val carved from train later would leak into the pretraining corpus)
    leakage         a train or unlabeled row whose normalised text is also in val or test
    (task's own)    what the dataset spec's `check_rows` finds (e.g. tag: tag_mismatch,
                    invalid_tags)

Normalisation: HTML tags removed and entities decoded (IMDB has `<br />`), Unicode `unicode_form`,
optional lowercasing, whitespace runs collapsed to one space. Labels become indices into
`label_names`. Duplicates and leakage concern examples; in a language-model corpus repeated lines
(headings, speaker names) are text structure and are kept.

`max_rows_per_split` samples each split before any of this, so kept + quarantined = sampled rows.
Every dropped row goes to the quarantine with its split, row number, reason, detail and original
text; the counts are reconciled per split.
"""

from __future__ import annotations

import html
import re
import unicodedata
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from transformer_pl.params import CleanParams, DatasetSpec
from transformer_pl.data import HELDOUT_SPLITS, TRAINING_SPLITS, DataError
from transformer_pl.data.split import random_selection, stratified_selection

# HTML elements by name, so that "a < b", "<3" and WikiText's "<unk>" stay text.
_HTML_TAG = re.compile(
    r"<!--.*?-->|</?(a|abbr|address|b|big|blockquote|body|br|center|cite|code|dd|del|div|dl|dt|em|"
    r"font|h[1-6]|head|hr|html|i|img|ins|kbd|li|link|meta|ol|p|pre|q|s|script|small|span|strike|"
    r"strong|style|sub|sup|table|tbody|td|th|thead|title|tr|tt|u|ul|var)\b[^<>]*>",
    re.DOTALL | re.IGNORECASE,
)
# Inside a word ("<i>great</i>ly") these vanish; other tags (<br />, <p>) separate words.
_INLINE_ELEMENTS = {"a", "abbr", "b", "big", "cite", "code", "em", "font", "i", "kbd", "q", "s"}
_INLINE_ELEMENTS |= {"small", "span", "strike", "strong", "sub", "sup", "tt", "u", "var"}
QUARANTINE_COLUMNS = ["split", "row", "reason", "detail", "text", "label", "target"]


def strip_html(text: str) -> str:
    """Tags removed (block tags such as `<br />` leave a space), then entities decoded."""
    return html.unescape(_HTML_TAG.sub(_replace_tag, text))


def _replace_tag(match: re.Match[str]) -> str:
    name = match.group(1)
    return "" if name and name.lower() in _INLINE_ELEMENTS else " "


def collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


def normalize_text(text: str, params: CleanParams, keep_lines: bool = False) -> str:
    """`text` normalised (`normalize_line`); with `keep_lines`, each non-blank line on its own,
    joined by "\n" ("\r\n" and "\r" count as line breaks)."""
    if not keep_lines:
        return normalize_line(text, params)
    lines = (normalize_line(line, params) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def normalize_line(text: str, params: CleanParams) -> str:
    # Entities are decoded before Unicode normalisation, so "&nbsp;" is normalised too. The
    # membership and is_normalized checks are fast paths: most texts need neither step.
    if params.strip_html and ("<" in text or "&" in text):
        text = strip_html(text)
    form = params.unicode_form
    if form != "none" and not unicodedata.is_normalized(form, text):
        text = unicodedata.normalize(form, text)
    if params.lowercase:
        text = text.lower()
    return collapse_whitespace(text)


def length_ratio(text: pd.Series, target: pd.Series) -> pd.Series:
    """Characters of the longer side over the shorter (an empty side counts as 1)."""
    text_chars = text.str.len().to_numpy(dtype="int64")
    target_chars = target.str.len().to_numpy(dtype="int64")
    shorter = np.maximum(np.minimum(text_chars, target_chars), 1)
    return pd.Series(np.maximum(text_chars, target_chars) / shorter, index=text.index)


def repeated(keys: pd.Series) -> pd.Series:
    """True for every row whose key an earlier row already had (first occurrence kept)."""
    return keys.duplicated(keep="first")


def sample_positions(
    frame: pd.DataFrame, n: int, spec: DatasetSpec, rng: np.random.Generator
) -> tuple[np.ndarray, str]:
    """Positions of a seeded sample of `n` rows, in source order, and how they were drawn, in
    words: stratified by the raw label (missing and unknown labels are strata too) where the
    split has labels; a contiguous window for language-model corpora; else uniform."""
    if spec.corpus:
        start = int(rng.integers(0, len(frame) - n + 1))
        return np.arange(start, start + n), "a contiguous window at a seeded offset"
    if spec.labelled and frame["label"].notna().any():
        groups = frame["label"].fillna("\0missing").astype(str).to_numpy()
        return stratified_selection(groups, n, rng), "stratified by raw label, in source order"
    return random_selection(len(frame), n, rng), "uniform, in source order"


@dataclass
class CleanResult:
    frames: dict[str, pd.DataFrame]  # kept rows: row, text (+ label | target), normalised
    quarantine: pd.DataFrame  # QUARANTINE_COLUMNS, text/label/target as in the source
    report: dict[str, Any]


class _SplitCleaner:
    """One split's rows, their normalised text, and the reason (if any) each is dropped."""

    def __init__(self, split: str, frame: pd.DataFrame) -> None:
        self.split = split
        self.frame = frame.reset_index(drop=True)
        self.reason = pd.Series(pd.NA, index=self.frame.index, dtype="string")
        self.detail = pd.Series(pd.NA, index=self.frame.index, dtype="string")
        self.text = pd.Series("", index=self.frame.index, dtype="string")
        self.target: pd.Series | None = None
        self.label: pd.Series | None = None
        self.task_columns: dict[str, pd.Series] = {}  # the spec's check_rows columns

    @property
    def kept(self) -> pd.Series:
        return self.reason.isna()

    def drop(self, mask: pd.Series, reason: str, detail: str | pd.Series) -> None:
        """Mark rows not already dropped (the first reason wins)."""
        new = mask & self.kept
        self.reason[new] = reason
        self.detail[new] = detail[new] if isinstance(detail, pd.Series) else detail

    def check_text(
        self,
        params: CleanParams,
        column: str = "text",
        normalise: bool = True,
        keep_lines: bool = False,
    ) -> pd.Series:
        """Normalise a text column (unless `normalise` is false: kept as read), dropping
        unusable rows; returns the text kept."""
        original = self.frame[column]
        normalised = original.fillna("")
        if normalise:
            normalised = normalised.map(lambda text: normalize_text(text, params, keep_lines))
        normalised = normalised.astype("string")
        lengths = normalised.str.len()
        side = "" if column == "text" else f"{column}: "
        self.drop(original.isna(), "empty", f"{side}no text")
        blank = original.fillna("").str.strip() == ""
        self.drop(blank, "empty", f"{side}blank")
        self.drop(lengths == 0, "empty", f"{side}nothing left after normalisation (markup only)")
        self.drop(
            lengths < params.min_chars,
            "too_short",
            side + lengths.astype(str) + f" chars < min_chars {params.min_chars}",
        )
        self.drop(
            lengths > params.max_chars,
            "too_long",
            side + lengths.astype(str) + f" chars > max_chars {params.max_chars}",
        )
        return normalised

    def check_labels(self, spec: DatasetSpec) -> None:
        names = spec.label_names or []
        name_of = spec.label_values or {name: name for name in names}
        raw = self.frame["label"].str.strip()
        index = raw.map(lambda value: names.index(name_of[value]) if value in name_of else -1)
        self.drop(raw.isna() | (raw == ""), "missing_label", "no label")
        allowed = ", ".join(repr(value) for value in name_of)
        self.drop(index == -1, "unknown_label", "label " + raw.fillna("") + f" not in {allowed}")
        self.label = index
        labeled_rows = self.frame["parse_error"].isna() & raw.notna() & (raw != "")
        if labeled_rows.any() and (index[labeled_rows] == -1).all():
            seen = sorted(raw[labeled_rows].unique())[:10]
            raise DataError(
                f"split '{self.split}': no label is known (values seen: {seen}; known: "
                f"{allowed}). Map the file's values to label_names with label_values in "
                "params.yaml"
            )

    def example_keys(self, columns: tuple[str, ...]) -> pd.Series:
        """What identifies a row's example: its kept values of `columns`, tab-joined."""
        kept = {"text": self.text, "target": self.target, **self.task_columns}
        keys = kept[columns[0]].fillna("")
        for column in columns[1:]:
            keys = keys + "\t" + kept[column].fillna("")
        return keys

    def drop_repeats(self, keys: pd.Series, what: str) -> None:
        kept = self.kept.to_numpy()
        codes, _ = pd.factorize(keys[kept])  # one hash pass; equal keys share a code
        again = repeated(pd.Series(codes)).to_numpy()
        rows = self.frame["row"].to_numpy()[kept]
        first_row = np.zeros(codes.max(initial=-1) + 1, dtype="int64")
        first_row[codes[~again]] = rows[~again]
        mask = pd.Series(False, index=keys.index)
        mask[np.flatnonzero(kept)[again]] = True
        detail = pd.Series("", index=keys.index, dtype="string")
        detail[mask] = [f"same {what} as row {row}" for row in first_row[codes[again]]]
        self.drop(mask, "duplicate", detail)

    def kept_frame(self) -> pd.DataFrame:
        columns = {"row": self.frame["row"], "text": self.text}
        if self.label is not None:
            columns["label"] = self.label
        if self.target is not None:
            columns["target"] = self.target
        columns.update(self.task_columns)
        kept = pd.DataFrame(columns)[self.kept].reset_index(drop=True)
        if "label" in kept:
            kept["label"] = kept["label"].astype("int64")
        return kept

    def quarantined(self, columns: list[str]) -> pd.DataFrame:
        """The dropped rows under `columns`, their values as read."""
        dropped = ~self.kept
        frame = self.frame[dropped]
        values = {
            "split": self.split,
            "row": frame["row"],
            "reason": self.reason[dropped],
            "detail": self.detail[dropped],
        }
        for name in columns[len(values) :]:
            values[name] = frame.get(name, pd.NA)
        return pd.DataFrame(values, columns=columns)


def quarantine_columns(spec: DatasetSpec) -> list[str]:
    """QUARANTINE_COLUMNS, then the task's own columns (as read)."""
    return [*QUARANTINE_COLUMNS, *(c for c in spec.columns if c not in QUARANTINE_COLUMNS)]


def clean_splits(
    raw: dict[str, pd.DataFrame], spec: DatasetSpec, params: CleanParams, seed: int
) -> CleanResult:
    samples = {split: _sample(split, frame, spec, params, seed) for split, frame in raw.items()}
    sampled = {split: frame for split, (frame, _) in samples.items()}
    methods = {split: method for split, (_, method) in samples.items() if method is not None}
    cleaners = {split: _SplitCleaner(split, frame) for split, frame in sampled.items()}
    for split, cleaner in cleaners.items():
        cleaner.drop(cleaner.frame["parse_error"].notna(), "parse_error", cleaner.frame.parse_error)
        cleaner.text = cleaner.check_text(
            params, normalise=spec.normalised_text, keep_lines=spec.multiline_text
        )
        if spec.parallel:
            cleaner.target = cleaner.check_text(params, "target")
        if spec.labelled and split != "unlabeled":
            cleaner.check_labels(spec)
        kept = pd.DataFrame({"text": cleaner.text, "target": cleaner.target})
        checks = spec.check_rows(kept, cleaner.frame, params)
        for mask, reason, detail in checks.problems:
            cleaner.drop(mask, reason, detail)
        cleaner.task_columns = checks.columns
        if not spec.corpus and params.deduplicate:
            columns = spec.example_columns
            what = {1: "text", 2: "pair"}.get(len(columns), "example")
            cleaner.drop_repeats(cleaner.example_keys(columns), what)
    if not spec.corpus:
        _drop_across_splits(cleaners, params)
    frames = {split: cleaner.kept_frame() for split, cleaner in cleaners.items()}
    columns = quarantine_columns(spec)
    quarantine = pd.concat(
        [cleaner.quarantined(columns) for cleaner in cleaners.values()], ignore_index=True
    )
    report = _report(raw, sampled, frames, quarantine, methods, params, seed)
    return CleanResult(frames, quarantine.astype({"row": "int64"}), report)


def _sample(
    split: str, frame: pd.DataFrame, spec: DatasetSpec, params: CleanParams, seed: int
) -> tuple[pd.DataFrame, str | None]:
    """The split's rows to clean, and how they were sampled (None: all of them)."""
    limit = params.max_rows_per_split
    if limit is None or len(frame) <= limit:
        return frame, None
    # One stream per split, independent of the other splits' sizes.
    rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
    positions, method = sample_positions(frame, limit, spec, rng)
    return frame.iloc[positions], method


def _drop_across_splits(cleaners: dict[str, _SplitCleaner], params: CleanParams) -> None:
    """Leakage (training rows in val/test), then unlabeled rows that repeat a train text."""
    if params.drop_leakage:
        heldout: dict[str, str] = {}  # normalised text -> the first held-out split that has it
        for split in HELDOUT_SPLITS:
            if split in cleaners:
                for text in cleaners[split].text[cleaners[split].kept]:
                    heldout.setdefault(text, split)
        for split in TRAINING_SPLITS:
            if split in cleaners:
                cleaner = cleaners[split]
                found = pd.Series(
                    [heldout.get(text) for text in cleaner.text], cleaner.text.index, "string"
                )
                cleaner.drop(found.notna(), "leakage", "text also in " + found.fillna(""))
    if params.deduplicate and {"train", "unlabeled"} <= cleaners.keys():
        train = cleaners["train"]
        unlabeled = cleaners["unlabeled"]
        in_train = unlabeled.text.isin(set(train.text[train.kept]))
        unlabeled.drop(in_train, "duplicate", "same text as a train row")


def _report(
    raw: dict[str, pd.DataFrame],
    sampled: dict[str, pd.DataFrame],
    frames: dict[str, pd.DataFrame],
    quarantine: pd.DataFrame,
    methods: dict[str, str],
    params: CleanParams,
    seed: int,
) -> dict[str, Any]:
    splits = {}
    for split, frame in frames.items():
        dropped = quarantine[quarantine["split"] == split]
        considered = len(sampled[split])
        if len(frame) + len(dropped) != considered:
            raise DataError(
                f"split '{split}': {considered} rows in but {len(frame)} kept + "
                f"{len(dropped)} quarantined; a row went missing"
            )
        splits[split] = {
            "rows_in_source": len(raw[split]),
            "rows_in": considered,
            "rows_kept": len(frame),
            "rows_quarantined": len(dropped),
            "quarantine_fraction": round(len(dropped) / max(considered, 1), 6),
            "reasons": {
                reason: int(count)
                for reason, count in dropped["reason"].value_counts().sort_index().items()
            },
        }
    report: dict[str, Any] = {
        "rows_in": sum(split["rows_in"] for split in splits.values()),
        "rows_kept": sum(split["rows_kept"] for split in splits.values()),
        "rows_quarantined": len(quarantine),
        "splits": splits,
    }
    if params.max_rows_per_split is not None:
        how = "; ".join(f"{split}: {method}" for split, method in methods.items()) or "none is"
        report["sampling"] = (
            f"max_rows_per_split={params.max_rows_per_split}: a larger split is sampled before "
            f"cleaning (seed {seed}; {how}). rows_in counts the sampled rows, rows_in_source "
            "the whole split; rows_in = rows_kept + rows_quarantined."
        )
    return report
