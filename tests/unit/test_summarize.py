"""Summarization's pure parts: ROUGE per summary, the Lead-3 and Longest-3 extracts, dialogue
turns kept through clean, the summary-longer-than-source check, and the decoding constraints
(minimum length, no repeated n-gram) of the encoder–decoder search."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
import torch

from transformer_pl.data.clean import clean_splits, normalize_text
from transformer_pl.model import Seq2SeqTransformer, TransformerConfig, beam_search
from transformer_pl.model.generation import constrain_next, greedy_translate
from transformer_pl.stage_sections import CleanParams
from transformer_pl.tasks.settings import dataset_spec
from transformer_pl.tasks.summarize.predict import source_lines
from transformer_pl.tasks.summarize.rouge import lead_lines, longest_lines, rouge_per_summary

DIALOGUE = (
    "Amanda: I baked  cookies.\r\nJerry: Sure!\r\n\r\nAmanda: I'll bring you some tomorrow :-)"
)


def test_rouge_per_summary_is_rouge_score_with_stemming() -> None:
    scores = rouge_per_summary(
        ["Amanda will bring Jerry cookies she baked."],
        ["Amanda baked cookies and will bring Jerry some tomorrow."],
    )
    # Unigrams: 6 of the prediction's 7 in the reference's 9 → P 6/7, R 6/9, F 0.75.
    assert scores.shape == (1, 3)
    assert scores[0].tolist() == pytest.approx([0.75, 2 / 7, 0.5])
    with pytest.raises(ValueError, match="1 predictions for 2 references"):
        rouge_per_summary(["a"], ["a", "b"])


def test_lead_and_longest_lines_keep_the_source_order() -> None:
    source = "A: hi\nB: a much longer turn than the others\n\nC: medium turn here\nD: ok"
    assert (
        lead_lines(source, 3) == "A: hi\nB: a much longer turn than the others\nC: medium turn here"
    )
    assert longest_lines(source, 2) == "B: a much longer turn than the others\nC: medium turn here"
    assert longest_lines("X: same\nY: same", 1) == "X: same"  # a tie goes to the earlier


def test_clean_keeps_each_turn_on_its_own_line() -> None:
    params = CleanParams()
    assert normalize_text(DIALOGUE, params) == (
        "Amanda: I baked cookies. Jerry: Sure! Amanda: I'll bring you some tomorrow :-)"
    )
    turns = "Amanda: I baked cookies.\nJerry: Sure!\nAmanda: I'll bring you some tomorrow :-)"
    assert normalize_text(DIALOGUE, params, keep_lines=True) == turns
    assert source_lines(DIALOGUE) == turns  # the served model reads a request alike


def test_clean_drops_a_summary_longer_than_its_dialogue() -> None:
    spec = dataset_spec(task="summarize", path="samsum", splits={"train": "train.jsonl"})
    raw = pd.DataFrame(
        {
            "row": pd.Series([1, 2, 3], dtype="int64"),
            "text": pd.Series([DIALOGUE, "A: yes\nB: no", ""], dtype="string"),
            "target": pd.Series(
                ["Amanda baked cookies.", "A says yes and B says no to it.", "nothing"],
                dtype="string",
            ),
            "parse_error": pd.Series([None] * 3, dtype="string"),
        }
    )
    result = clean_splits({"train": raw}, spec, CleanParams(), seed=0)
    kept = result.frames["train"]
    assert kept["row"].tolist() == [1]
    assert kept["text"][0].count("\n") == 2
    reasons = result.quarantine.set_index("row")["reason"].to_dict()
    assert reasons == {2: "summary_too_long", 3: "empty"}
    detail = result.quarantine.set_index("row")["detail"][2]
    assert detail.startswith("summary 2.") and detail.endswith("times its source's length")


def test_constrain_next_blocks_early_end_and_repeated_ngrams() -> None:
    log_probs = torch.zeros(2, 6)
    tokens = torch.tensor([[3, 4, 5, 3, 4], [1, 2, 1, 2, 1]])
    constrained = constrain_next(
        log_probs.clone(), tokens, step=5, eos_token_id=0, min_new_tokens=6, no_repeat_ngram_size=3
    )
    # EOS before 6 tokens; row 0 ends "3 4", seen before "5": 5 is banned; row 1 ends "2 1",
    # seen before "2": 2 is banned.
    assert torch.isinf(constrained[:, 0]).all()
    assert torch.isinf(constrained[0, 5]) and torch.isinf(constrained[1, 2])
    assert torch.isfinite(constrained[0, 1:5]).all() and torch.isfinite(constrained[1, 3:]).all()
    untouched = constrain_next(log_probs.clone(), tokens, step=6, eos_token_id=0)
    assert torch.equal(untouched, log_probs)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_decoding_repeats_no_ngram_and_runs_to_the_minimum_length(beam_size: int) -> None:
    torch.manual_seed(0)
    config = TransformerConfig(
        vocab_size=12, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=64
    )
    model = Seq2SeqTransformer(config).eval()
    source = torch.randint(7, 12, (2, 5))
    options = {"min_new_tokens": 8, "no_repeat_ngram_size": 2}
    if beam_size == 1:
        tokens = greedy_translate(model, source, None, 5, 6, 20, **options)
    else:
        tokens = beam_search(model, source, None, 5, 6, 20, beam_size=beam_size, **options)
    for row in tokens.tolist():
        generated = row[: row.index(6)] if 6 in row else row
        generated = [token for token in generated if token != config.pad_token_id]
        assert len(generated) >= 8
        bigrams = list(itertools.pairwise(generated))
        assert len(bigrams) == len(set(bigrams)), row
