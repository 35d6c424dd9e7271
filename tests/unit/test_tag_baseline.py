"""The CoNLL-2003 shared-task baseline on a hand-made training set."""

from transformer_pl.tasks.tag.baseline import PhraseBaseline

# (New, York) is LOC once and ORG once, and (Washington,) PER once and LOC once: ties, so
# both LOC (alphabetically first). (Bank,) is ORG twice and LOC once: ORG. (John, Smith) →
# PER, (New, York, Times) → ORG, (Bank, of, England) → ORG and (England,) → LOC are unique.
TRAIN_SENTENCES = [
    ["John", "Smith", "visited", "New", "York"],
    ["The", "New", "York", "Times", "reported"],
    ["Washington", "spoke", "in", "Washington"],
    ["New", "York", "wins"],
    ["The", "Bank", "of", "England"],
    ["England", "won"],
    ["Bank", "Bank", "Bank"],
]
TRAIN_TAGS = [
    ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"],
    ["O", "B-ORG", "I-ORG", "I-ORG", "O"],
    ["B-PER", "O", "O", "B-LOC"],
    ["B-ORG", "I-ORG", "O"],
    ["O", "B-ORG", "I-ORG", "I-ORG"],
    ["B-LOC", "O"],
    ["B-ORG", "B-ORG", "B-LOC"],
]


def fitted() -> PhraseBaseline:
    return PhraseBaseline().fit(TRAIN_SENTENCES, TRAIN_TAGS)


def test_knows_every_training_phrase() -> None:
    assert fitted().phrases == 7
    assert PhraseBaseline().phrases == 0


def test_a_phrase_of_several_types_takes_the_most_frequent() -> None:
    assert fitted().predict(["Bank", "said"]) == ["B-ORG", "O"]


def test_ties_go_to_the_alphabetically_first_type() -> None:
    baseline = fitted()
    assert baseline.predict(["New", "York"]) == ["B-LOC", "I-LOC"]
    assert baseline.predict(["Washington", "said"]) == ["B-LOC", "O"]


def test_unique_phrases_are_tagged_with_their_type() -> None:
    assert fitted().predict(["Mr", "John", "Smith"]) == ["O", "B-PER", "I-PER"]


def test_longest_match_is_preferred() -> None:
    baseline = fitted()
    # (New, York, Times) wins over the ambiguous (New, York) ...
    assert baseline.predict(["I", "read", "New", "York", "Times"]) == [
        "O", "O", "B-ORG", "I-ORG", "I-ORG",
    ]  # fmt: skip
    # ... and (Bank, of, England) over (England,), which is still tagged on its own.
    assert baseline.predict(["Bank", "of", "England", "and", "England"]) == [
        "B-ORG", "I-ORG", "I-ORG", "O", "B-LOC",
    ]  # fmt: skip


def test_scan_jumps_past_a_match() -> None:
    baseline = PhraseBaseline().fit([["A", "B"], ["B", "C"]], [["B-X", "I-X"], ["B-Y", "I-Y"]])
    # (A, B) is taken first, so the overlapping (B, C) is never considered.
    assert baseline.predict(["A", "B", "C"]) == ["B-X", "I-X", "O"]


def test_adjacent_entities_of_one_type_stay_apart() -> None:
    assert fitted().predict(["John", "Smith", "John", "Smith"]) == [
        "B-PER", "I-PER", "B-PER", "I-PER",
    ]  # fmt: skip


def test_no_match_is_all_o() -> None:
    baseline = fitted()
    assert baseline.predict(["john", "smith", "visited", "york"]) == ["O"] * 4  # case matters
    assert baseline.predict([]) == []
    assert PhraseBaseline().predict(["John", "Smith"]) == ["O", "O"]


def test_entity_at_the_end() -> None:
    assert fitted().predict(["visit", "England"]) == ["O", "B-LOC"]


def test_predict_all() -> None:
    assert fitted().predict_all([["England"], [], ["Smith"]]) == [["B-LOC"], [], ["O"]]
