"""Tagging and question answering as served: word chunks that fit the model's input, raw text
split into words with offsets, a tag for every word of a sentence longer than one input, entity
and answer offsets that slice the text; the tagger's entity metrics by hand and the reader's span
loss on a tiny batch."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from transformer_pl.data.encode import IGNORE_INDEX
from transformer_pl.data.tokenizer import CLS_ID, SEP_ID, train_tokenizer
from transformer_pl.model import TokenClassifier, TransformerConfig
from transformer_pl.params import TokenizerParams
from transformer_pl.tasks.qa.module import QuestionAnsweringModule
from transformer_pl.tasks.qa.predict import ReaderBundleConfig, answer_questions
from transformer_pl.tasks.tag.module import EntityCounts, TaggingMetrics
from transformer_pl.tasks.tag.predict import (
    TaggerBundleConfig,
    split_words,
    tag_texts,
    tag_words,
    word_chunks,
)

TAG_NAMES = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
TEXTS = [
    "Peter Blackburn flew from Brussels to Bonn on 1996-08-30.",
    "O'Neill met the U.S. team in New York, then left.",
]


@pytest.fixture(scope="module")
def tokenizer():
    params = TokenizerParams(vocab_size=300, min_frequency=1)
    return train_tokenizer(TEXTS * 3, params)


def model_config(tokenizer) -> TransformerConfig:
    return TransformerConfig(
        vocab_size=tokenizer.get_vocab_size(),
        d_model=16,
        n_heads=2,
        n_layers=1,
        d_ff=32,
        max_len=64,
        dropout=0.0,
    )


def tagger(tokenizer, max_length: int = 64) -> tuple[TokenClassifier, TaggerBundleConfig]:
    torch.manual_seed(0)
    config = model_config(tokenizer)
    model = TokenClassifier(config, len(TAG_NAMES), classifier_dropout=0.0).eval()
    return model, TaggerBundleConfig("tag", config, TAG_NAMES, max_length)


class TokenIdTagger:
    """A stand-in model whose prediction at a position is that token's id modulo the classes:
    which tag a word gets shows which token the tagger read for it."""

    def __init__(self, classes: int) -> None:
        self.classes = classes
        self.calls: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        self.calls.append(input_ids)
        logits = torch.nn.functional.one_hot(input_ids % self.classes, self.classes).float()
        return SimpleNamespace(logits=logits)


# --- tag: word chunks and words -------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "room", "expected"),
    [
        ([2, 3, 1, 4], 5, [(0, 2), (2, 4)]),  # 2+3 fills the room; 1+4 again
        ([1, 1, 1], 5, [(0, 3)]),
        ([1, 1, 1], 1, [(0, 1), (1, 2), (2, 3)]),
        ([7, 1], 5, [(0, 1), (1, 2)]),  # a word over the room is a chunk of its own
        ([1, 7, 1], 5, [(0, 1), (1, 2), (2, 3)]),
        ([], 5, [(0, 0)]),
    ],
)
def test_word_chunks_by_hand(counts, room, expected):
    assert word_chunks(counts, room) == expected


def test_word_chunks_cover_every_word_once_within_the_room():
    counts = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]
    chunks = word_chunks(counts, 8)
    assert [word for first, end in chunks for word in range(first, end)] == list(range(11))
    for first, end in chunks:
        assert sum(counts[first:end]) <= 8 or end - first == 1
    assert chunks == [(0, 3), (3, 5), (5, 6), (6, 8), (8, 10), (10, 11)]


def test_split_words_gives_conll_words_and_their_offsets():
    text = "EU rejects  German call, O'Neill said on 1996-08-30 (U.S)."
    words, spans = split_words(text)
    assert words == [
        "EU",
        "rejects",
        "German",
        "call",
        ",",
        "O'Neill",
        "said",
        "on",
        "1996-08-30",
        "(",
        "U.S",
        ")",
        ".",
    ]
    assert [text[start:end] for start, end in spans] == words
    assert spans[:3] == [(0, 2), (3, 10), (12, 18)]
    assert split_words("   ") == ([], [])


# --- tag: tagging sentences -----------------------------------------------------------------


def test_tag_words_tags_every_word_of_a_sentence_longer_than_one_input(tokenizer):
    model, config = tagger(tokenizer, max_length=8)  # room for 6 tokens per input
    long = [word for text in TEXTS for word in split_words(text)[0]] * 2
    sentences = [long, ["Bonn"], []]
    tags = tag_words(model, tokenizer, config, sentences, batch_size=3)
    assert [len(sentence) for sentence in tags] == [len(long), 1, 0]
    assert all(tag in TAG_NAMES for sentence in tags for tag in sentence)


def test_tag_words_reads_each_word_at_its_first_token_across_chunks(tokenizer):
    long = [word for text in TEXTS for word in split_words(text)[0]] * 2
    sentences = [long, ["Brussels", "Bonn"]]
    for max_length in (5, 8, 64):
        fake = TokenIdTagger(len(TAG_NAMES))
        config = TaggerBundleConfig("tag", model_config(tokenizer), TAG_NAMES, max_length)
        tags = tag_words(fake, tokenizer, config, sentences, batch_size=2)
        for words, sentence_tags in zip(sentences, tags, strict=True):
            expected = [
                TAG_NAMES[
                    tokenizer.encode([word], is_pretokenized=True, add_special_tokens=False).ids[0]
                    % len(TAG_NAMES)
                ]
                for word in words
            ]
            assert sentence_tags == expected, max_length
        inputs = torch.cat([ids.flatten() for ids in fake.calls])
        assert max(ids.shape[1] for ids in fake.calls) <= max_length
        assert (inputs == CLS_ID).sum() == (inputs == SEP_ID).sum()
        if max_length < 64:
            assert (inputs == CLS_ID).sum() > len(sentences)  # the long sentence was chunked


def test_tag_words_a_word_longer_than_the_room_still_gets_its_tag(tokenizer):
    word = "Blackburnblackburnblackburn"
    tokens = tokenizer.encode([word], is_pretokenized=True, add_special_tokens=False).ids
    assert len(tokens) > 3
    fake = TokenIdTagger(len(TAG_NAMES))
    config = TaggerBundleConfig("tag", model_config(tokenizer), TAG_NAMES, 5)  # room 3
    tags = tag_words(fake, tokenizer, config, [["to", word, "Bonn"]])
    assert tags[0][1] == TAG_NAMES[tokens[0] % len(TAG_NAMES)]
    assert all(ids.shape[1] <= 5 for ids in fake.calls)


def biased_tagger(tokenizer, tag: str, max_length: int):
    """A random tagger whose head always picks `tag`."""
    model, config = tagger(tokenizer, max_length)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(-10.0)
        model.head.bias[TAG_NAMES.index(tag)] = 10.0
    return model, config


def test_tag_texts_entity_offsets_slice_the_text(tokenizer):
    text = "  Peter   Blackburn  flew to Brussels, then Bonn."
    model, config = biased_tagger(tokenizer, "B-PER", max_length=6)
    (entities,) = tag_texts(model, tokenizer, config, [text])
    words, spans = split_words(text)
    assert [entity["text"] for entity in entities] == words  # every word an entity of its own
    assert [(entity["start"], entity["end"]) for entity in entities] == spans
    assert {entity["type"] for entity in entities} == {"PER"}
    for entity in entities:
        assert text[entity["start"] : entity["end"]] == entity["text"]


def test_tag_texts_an_entity_spanning_chunks_is_one_span_of_the_text(tokenizer):
    text = "  Peter   Blackburn  flew to Brussels, then Bonn. "
    model, config = biased_tagger(tokenizer, "I-PER", max_length=6)
    entities = tag_texts(model, tokenizer, config, [text, ""])
    assert entities[1] == []
    (entity,) = entities[0]
    assert entity == {"type": "PER", "start": 2, "end": len(text) - 1, "text": text.strip()}


def test_tag_texts_with_a_random_model_gives_entities_inside_the_text(tokenizer):
    model, config = tagger(tokenizer, max_length=10)
    found = tag_texts(model, tokenizer, config, TEXTS)
    assert len(found) == len(TEXTS)
    for text, entities in zip(TEXTS, found, strict=True):
        for entity in entities:
            assert entity["type"] in {"LOC", "PER"}
            assert 0 <= entity["start"] < entity["end"] <= len(text)
            assert text[entity["start"] : entity["end"]] == entity["text"]


# --- qa: answering --------------------------------------------------------------------------


def reader(tokenizer, max_length: int = 24, stride: int = 4):
    torch.manual_seed(0)
    config = model_config(tokenizer)
    model = TokenClassifier(config, 2, classifier_dropout=0.0).eval()
    return model, ReaderBundleConfig("qa", config, max_length, stride, 6, max_answer_tokens=5)


def test_answer_questions_gives_one_span_of_each_context(tokenizer):
    model, config = reader(tokenizer)
    long_context = " ".join(TEXTS * 3)
    questions = ["Who flew?", "Where is Bonn?", "Who met the team?"]
    contexts = [TEXTS[0], long_context, TEXTS[1]]
    assert len(tokenizer.encode(long_context, add_special_tokens=False).ids) > 3 * 24
    answers = answer_questions(model, tokenizer, config, questions, contexts, batch_size=2)
    assert len(answers) == 3
    for answer, context in zip(answers, contexts, strict=True):
        assert answer.text
        assert context[answer.start : answer.end] == answer.text
        assert answer.text == answer.text.strip()
        assert math.isfinite(answer.score)
    assert answer_questions(model, tokenizer, config, [], []) == []


def test_answer_questions_finds_an_answer_in_a_later_window(tokenizer):
    """A stand-in reader that scores only the token of "Bonn" high: the answer comes from the
    window of a long context that holds it."""
    target = torch.tensor(tokenizer.encode(" Bonn", add_special_tokens=False).ids)
    width = len(target)

    class BonnReader:
        def __call__(self, input_ids, attention_mask):
            logits = torch.zeros(*input_ids.shape, 2)
            for row, ids in enumerate(input_ids):
                for i in range(len(ids) - width + 1):
                    if torch.equal(ids[i : i + width], target):
                        logits[row, i, 0] = logits[row, i + width - 1, 1] = 5.0
            return SimpleNamespace(logits=logits)

    context = " ".join(["Peter flew from Brussels to Berlin."] * 6) + " He then went to Bonn."
    _, config = reader(tokenizer)
    (answer,) = answer_questions(BonnReader(), tokenizer, config, ["Where?"], [context])
    assert answer.text == "Bonn"
    assert (answer.start, answer.end) == (context.rindex("Bonn"), len(context) - 1)
    assert answer.score == 10.0


def test_answer_questions_stays_within_max_answer_tokens(tokenizer):
    model, config = reader(tokenizer, max_length=32, stride=8)
    context = " ".join(TEXTS * 2)
    answers = answer_questions(
        model, tokenizer, config, ["Who?", "When?"], [context, context], max_answer_tokens=1
    )
    for answer in answers:
        assert context[answer.start : answer.end] == answer.text
        tokens = tokenizer.encode(answer.text, add_special_tokens=False).ids
        assert len(tokens) <= 2  # one context token (its text may re-tokenize differently)


# --- tag: entity metrics --------------------------------------------------------------------

# Tag indices into TAG_NAMES: O 0, B-LOC 1, I-LOC 2, B-PER 3, I-PER 4. Labelled positions only:
#   row 0: gold B-PER I-PER O B-LOC; predicted B-PER I-PER O B-PER
#          → PER[0,2) tp, PER[3,4) fp, LOC[3,4) fn; 3 of 4 tokens right
#   row 1: gold O B-LOC I-LOC; predicted the same (the unlabelled position says I-PER)
#          → LOC[1,3) tp; 3 of 3 right
#   row 2: gold B-PER; predicted O → PER fn; 0 of 1 right
LABELS = torch.tensor(
    [
        [IGNORE_INDEX, 3, 4, 0, 1, IGNORE_INDEX],
        [IGNORE_INDEX, 0, 1, IGNORE_INDEX, 2, IGNORE_INDEX],
        [IGNORE_INDEX, 3, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
    ]
)
PREDICTIONS = torch.tensor(
    [
        [2, 3, 4, 0, 3, 0],
        [0, 0, 1, 4, 2, 1],
        [3, 0, 3, 3, 3, 3],
    ]
)


def test_entity_counts_by_hand():
    counts = EntityCounts(TAG_NAMES)
    counts.update(PREDICTIONS, LABELS)
    assert counts.compute().tolist() == [2, 1, 2]
    counts.update(PREDICTIONS[:1], LABELS[:1])  # accumulates over updates
    assert counts.compute().tolist() == [3, 2, 3]
    counts.reset()
    assert counts.counts.tolist() == [0, 0, 0]


def test_tagging_metrics_by_hand():
    metrics = TaggingMetrics(TAG_NAMES)
    # Loss weighted by labelled tokens: 7 in the first batch, 1 in the second.
    metrics.update(torch.tensor(1.0), PREDICTIONS[:2], LABELS[:2])
    metrics.update(torch.tensor(3.0), PREDICTIONS[2:], LABELS[2:])
    scores = metrics.compute()
    assert scores["loss"].item() == pytest.approx((7 * 1.0 + 1 * 3.0) / 8)
    assert scores["accuracy"].item() == pytest.approx(6 / 8)
    # tp 2, fp 1, fn 2
    assert scores["precision"].item() == pytest.approx(100 * 2 / 3)
    assert scores["recall"].item() == pytest.approx(100 * 2 / 4)
    assert scores["f1"].item() == pytest.approx(100 * 2 * 2 / (2 * 2 + 1 + 2))
    metrics.reset()
    metrics.update(torch.tensor(0.5), LABELS.clamp(min=0), LABELS)
    perfect = metrics.compute()
    assert perfect["f1"].item() == pytest.approx(100.0)
    assert perfect["accuracy"].item() == pytest.approx(1.0)


def test_tagging_metrics_without_entities_score_zero_not_nan():
    metrics = TaggingMetrics(TAG_NAMES)
    labels = torch.tensor([[IGNORE_INDEX, 0, 0, IGNORE_INDEX]])
    metrics.update(torch.tensor(0.2), torch.zeros_like(labels), labels)
    scores = metrics.compute()
    assert scores["precision"].item() == scores["recall"].item() == scores["f1"].item() == 0.0


# --- qa: span loss --------------------------------------------------------------------------


def test_question_answering_step_loss_is_finite_and_falls_on_one_batch():
    torch.manual_seed(0)
    config = TransformerConfig(
        vocab_size=50, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=64, dropout=0.0
    )
    module = QuestionAnsweringModule(config, classifier_dropout=0.0)
    input_ids = torch.tensor(
        [
            [CLS_ID, 10, 11, SEP_ID, 20, 21, 22, 23, SEP_ID, 0],
            [CLS_ID, 12, SEP_ID, 30, 31, 32, 33, 34, 35, SEP_ID],
        ]
    )
    batch = {
        "input_ids": input_ids,
        "attention_mask": (input_ids != 0).long(),
        "start_positions": torch.tensor([5, 0]),
        "end_positions": torch.tensor([6, 0]),
    }
    loss, predictions, targets = module._step(batch, training=True)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert predictions.shape == targets.shape == (2, 2)
    assert targets.tolist() == [[5, 6], [0, 0]]
    # padding is never predicted: its logits are -inf
    logits = module(batch["input_ids"], batch["attention_mask"])
    assert torch.isinf(logits[0, 9]).all() and torch.isfinite(logits[1]).all()
    # about log(window length) per end at initialisation (near-uniform logits)
    assert loss.item() == pytest.approx((math.log(9) + math.log(10)) / 2, abs=0.5)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    first = loss.item()
    for _ in range(20):
        optimizer.zero_grad()
        loss, _, _ = module._step(batch, training=True)
        loss.backward()
        optimizer.step()
    final, predictions, _ = module._step(batch, training=False)
    assert torch.isfinite(final) and final.item() < first / 2
    assert predictions.tolist() == [[5, 6], [0, 0]]
