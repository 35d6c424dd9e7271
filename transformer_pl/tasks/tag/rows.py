"""What clean and validate check in a tagged dataset's rows: one IOB2 tag per word."""

from __future__ import annotations

from typing import Any

import pandas as pd

from transformer_pl.dataset_spec import RowChecks
from transformer_pl.tasks.tag.iob import TagScheme, iob2_problem, tag_problem, to_iob2

TAGS_PATTERN = r"^(?:O|[BI]-\S+)(?: (?:O|[BI]-\S+))*$"  # space-separated IOB tags


def check_tagged_rows(text: pd.Series, tags: pd.Series, scheme: TagScheme) -> RowChecks:
    """The rows' tags as IOB2 (space-separated), and the rows to drop: `tag_mismatch` when the
    words and tags do not pair up, `invalid_tags` for a tag that is not O/B-x/I-x or (IOB2
    files) an I-x that opens an entity."""
    kept = pd.Series(pd.NA, index=text.index, dtype="string")
    mismatch = pd.Series(False, index=text.index)
    invalid = pd.Series(False, index=text.index)
    details = pd.Series("", index=text.index, dtype="string")
    for index, sentence, raw in zip(text.index, text, tags, strict=True):
        words = str(sentence).split()
        labels = [] if pd.isna(raw) else str(raw).split()
        if len(words) != len(labels):
            mismatch[index] = True
            details[index] = f"{len(words)} words but {len(labels)} tags"
            continue
        problem = next(
            (
                f"word {position}: {message}"
                for position, tag in enumerate(labels, start=1)
                if (message := tag_problem(tag)) is not None
            ),
            None,
        )
        if problem is None and scheme == "iob2":
            problem = iob2_problem(labels)
        if problem is not None:
            invalid[index] = True
            details[index] = problem
            continue
        kept[index] = " ".join(to_iob2(labels) if scheme == "iob1" else labels)
    return RowChecks(
        columns={"tags": kept},
        problems=[(mismatch, "tag_mismatch", details), (invalid, "invalid_tags", details)],
    )


def tag_validation_values(frame: pd.DataFrame) -> dict[str, Any]:
    """Words minus tags per sentence (0 when they pair up), and whether the tags are IOB2."""
    tags = frame["tags"].fillna("")
    return {
        "words_minus_tags": frame["text"].str.split().str.len() - tags.str.split().str.len(),
        "iob2_valid": [iob2_problem(sentence.split()) is None for sentence in tags],
    }


def tag_expectations() -> list[Any]:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToNotBeNull(column="tags"),
        gxe.ExpectColumnValuesToMatchRegex(column="tags", regex=TAGS_PATTERN),
        gxe.ExpectColumnValuesToBeBetween(column="words_minus_tags", min_value=0, max_value=0),
        gxe.ExpectColumnValuesToBeInSet(column="iob2_valid", value_set=[True]),
    ]
