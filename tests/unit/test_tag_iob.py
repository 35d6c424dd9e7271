"""IOB tags: validation, IOB1 → IOB2, and the conlleval reading of tag sequences as spans."""

import pytest

from transformer_pl.tasks.tag.iob import (
    entity_spans,
    iob2_problem,
    spans_to_tags,
    tag_problem,
    to_iob2,
)


@pytest.mark.parametrize("tag", ["O", "B-PER", "I-PER", "B-geo-loc", "I-X"])
def test_well_formed_tags_have_no_problem(tag: str) -> None:
    assert tag_problem(tag) is None


@pytest.mark.parametrize(
    "tag", ["", "o", "PER", "B-", "I-", "E-PER", "B PER", "B-NEW YORK", "BPER"]
)
def test_malformed_tags_are_named(tag: str) -> None:
    assert tag_problem(tag) == f"tag {tag!r} is not O, B-<type> or I-<type>"


def test_to_iob2_opens_every_entity_with_b() -> None:
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "I-ORG", "I-ORG", "B-ORG", "I-ORG", "O", "I-MISC"]
    assert to_iob2(iob1) == [
        "B-PER", "I-PER", "O", "B-LOC", "B-ORG", "I-ORG", "B-ORG", "I-ORG", "O", "B-MISC",
    ]  # fmt: skip


def test_to_iob2_leaves_iob2_and_edge_cases_unchanged() -> None:
    iob2 = ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert to_iob2(iob2) == iob2
    assert to_iob2([]) == []
    assert to_iob2(["O", "O"]) == ["O", "O"]


def test_to_iob2_rejects_malformed_tags() -> None:
    with pytest.raises(ValueError, match="'PER' is not O"):
        to_iob2(["O", "PER"])


def test_valid_iob2_has_no_problem() -> None:
    assert iob2_problem([]) is None
    assert iob2_problem(["O", "O"]) is None
    assert iob2_problem(["B-PER", "I-PER", "B-PER", "O", "B-LOC", "I-LOC"]) is None


def test_iob2_problem_i_after_o() -> None:
    assert iob2_problem(["B-LOC", "O", "I-PER"]) == (
        "word 3: I-PER follows O (IOB2 needs B-PER to open an entity; "
        "set the dataset's tag_scheme: iob1 if the file is IOB1)"
    )


def test_iob2_problem_i_at_start_and_after_other_type() -> None:
    assert iob2_problem(["I-ORG", "I-ORG"]).startswith(
        "word 1: I-ORG starts the sentence (IOB2 needs B-ORG"
    )
    assert iob2_problem(["B-ORG", "I-ORG", "I-LOC"]).startswith(
        "word 3: I-LOC follows I-ORG (IOB2 needs B-LOC"
    )


def test_iob2_problem_reports_the_first_violation() -> None:
    assert iob2_problem(["O", "B-PER", "X", "I-LOC"]) == (
        "word 3: tag 'X' is not O, B-<type> or I-<type>"
    )


def test_iob1_converted_is_valid_iob2() -> None:
    assert iob2_problem(to_iob2(["I-PER", "O", "I-LOC", "I-ORG", "B-ORG"])) is None


def test_entity_spans_of_iob2() -> None:
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O", "B-MISC"]
    assert entity_spans(tags) == [("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 6), ("MISC", 7, 8)]


def test_entity_spans_edge_cases() -> None:
    assert entity_spans([]) == []
    assert entity_spans(["O", "O", "O"]) == []
    assert entity_spans(["B-PER"]) == [("PER", 0, 1)]
    assert entity_spans(["O", "O", "B-ORG", "I-ORG"]) == [("ORG", 2, 4)]  # entity at the end


def test_entity_spans_reads_ill_formed_sequences_like_conlleval() -> None:
    # An I-X with no open X chunk opens one.
    assert entity_spans(["O", "I-PER", "I-PER"]) == [("PER", 1, 3)]
    assert entity_spans(["I-PER"]) == [("PER", 0, 1)]
    # A change of type closes the chunk even without B-.
    assert entity_spans(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 1), ("LOC", 1, 3)]
    assert entity_spans(["I-PER", "I-LOC", "I-PER"]) == [
        ("PER", 0, 1), ("LOC", 1, 2), ("PER", 2, 3),
    ]  # fmt: skip
    # B- always opens a new chunk.
    assert entity_spans(["I-PER", "B-PER", "I-PER"]) == [("PER", 0, 1), ("PER", 1, 3)]


def test_entity_spans_read_iob1_and_iob2_alike() -> None:
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]
    assert entity_spans(iob1) == entity_spans(to_iob2(iob1))


def test_entity_spans_rejects_malformed_tags() -> None:
    with pytest.raises(ValueError, match="'B-' is not O"):
        entity_spans(["B-"])


def test_spans_to_tags_inverts_entity_spans() -> None:
    tags = ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "I-LOC", "I-LOC"]
    assert spans_to_tags(entity_spans(tags), len(tags)) == tags
    assert spans_to_tags([("ORG", 2, 3), ("PER", 0, 2)], 3) == ["B-PER", "I-PER", "B-ORG"]
    assert spans_to_tags([], 0) == []
    assert spans_to_tags([], 2) == ["O", "O"]


@pytest.mark.parametrize(
    "spans, match",
    [
        ([("PER", 0, 4)], "not inside 3 words"),
        ([("PER", 1, 1)], "not inside 3 words"),
        ([("PER", -1, 1)], "not inside 3 words"),
        ([("PER", 0, 2), ("LOC", 1, 3)], "overlaps"),
    ],
)
def test_spans_to_tags_rejects_bad_spans(spans: list[tuple[str, int, int]], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        spans_to_tags(spans, 3)
