"""The IOB tag schemes for named entities: IOB2 (every entity opens with B-) and IOB1 (B- only
between two adjacent entities of one type), conversion to IOB2, validation, and the reading of a
tag sequence as entity spans the way CoNLL's conlleval reads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal

TagScheme = Literal["iob1", "iob2"]

OUTSIDE = "O"
# B-<TYPE> or I-<TYPE>; the type is non-empty and has no whitespace.
_ENTITY_TAG = re.compile(r"([BI])-(\S+)")


def tag_problem(tag: str) -> str | None:
    """None when `tag` is O, B-<TYPE> or I-<TYPE>; otherwise what is wrong with it."""
    if tag == OUTSIDE or _ENTITY_TAG.fullmatch(tag):
        return None
    return f"tag {tag!r} is not O, B-<type> or I-<type>"


def _split(tag: str) -> tuple[str, str | None]:
    """(prefix, type) of a well-formed tag: ("O", None), ("B", TYPE) or ("I", TYPE)."""
    if tag == OUTSIDE:
        return OUTSIDE, None
    match = _ENTITY_TAG.fullmatch(tag)
    if match is None:
        raise ValueError(tag_problem(tag))
    return match.group(1), match.group(2)


def to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 → IOB2: an I-X that starts the sentence or follows O or another type becomes B-X."""
    converted: list[str] = []
    previous_type: str | None = None
    for tag in tags:
        prefix, entity_type = _split(tag)
        if prefix == "I" and entity_type != previous_type:
            tag = f"B-{entity_type}"
        converted.append(tag)
        previous_type = entity_type
    return converted


def iob2_problem(tags: Sequence[str]) -> str | None:
    """The first violation of IOB2 in `tags` (words counted from 1), None if there is none."""
    previous_tag = None
    previous_type: str | None = None
    for position, tag in enumerate(tags, start=1):
        problem = tag_problem(tag)
        if problem is not None:
            return f"word {position}: {problem}"
        prefix, entity_type = _split(tag)
        if prefix == "I" and entity_type != previous_type:
            where = "starts the sentence" if previous_tag is None else f"follows {previous_tag}"
            return (
                f"word {position}: {tag} {where} (IOB2 needs B-{entity_type} to open an entity; "
                "set the dataset's tag_scheme: iob1 if the file is IOB1)"
            )
        previous_tag, previous_type = tag, entity_type
    return None


def entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The entities in `tags` as (type, first word, end word exclusive), read as conlleval reads
    them: a chunk opens at B-X or at an I-X that does not continue a chunk of type X, and closes
    before O, before B-*, before another type, or at the end. Any IOB1 or IOB2 sequence, and any
    ill-formed prediction, has exactly one such reading."""
    spans: list[tuple[str, int, int]] = []
    open_type: str | None = None
    start = 0
    for position, tag in enumerate(tags):
        prefix, entity_type = _split(tag)
        continues = prefix == "I" and entity_type == open_type
        if open_type is not None and not continues:
            spans.append((open_type, start, position))
            open_type = None
        if entity_type is not None and not continues:
            open_type, start = entity_type, position
    if open_type is not None:
        spans.append((open_type, start, len(tags)))
    return spans


def spans_to_tags(spans: Iterable[tuple[str, int, int]], length: int) -> list[str]:
    """IOB2 tags for a sentence of `length` words holding the non-overlapping `spans`."""
    tags = [OUTSIDE] * length
    for entity_type, start, end in spans:
        if not 0 <= start < end <= length:
            raise ValueError(f"span {(entity_type, start, end)} is not inside {length} words")
        if any(tag != OUTSIDE for tag in tags[start:end]):
            raise ValueError(f"span {(entity_type, start, end)} overlaps another span")
        tags[start] = f"B-{entity_type}"
        tags[start + 1 : end] = [f"I-{entity_type}"] * (end - start - 1)
    return tags
