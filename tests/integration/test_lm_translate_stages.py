"""The stage functions for language modelling and translation on slices of the reference data,
with the tiny-lm / tiny-translate profiles shrunk further: what each stage trains follows from
the dataset's task, evaluate measures what that task needs, writes samples, and no plots."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

import pytest

from transformer_pl.stages import STAGES

UNTIL_EVALUATE = [name for name in STAGES if name != "register"]


def read_json(root: Path, relative: str) -> dict[str, Any]:
    return json.loads((root / relative).read_text(encoding="utf-8"))


@pytest.fixture
def in_project(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run a project's stages from inside it: training keeps its scratch checkpoints under the
    working directory, as `tpl stage` does in a workspace."""

    def enter(root: Path) -> Path:
        monkeypatch.chdir(root)
        return root

    return enter


def test_language_model_is_pretrained_continued_scored_and_sampled(
    make_project, in_project, run_stages, shrink_profile, write_shakespeare_slice, tmp_path: Path
) -> None:
    corpus = write_shakespeare_slice(tmp_path / "shakespeare", 3000)
    root = in_project(
        make_project(
            shrink_profile(
                "tiny-lm",
                dataset="tinyshakespeare",
                datasets={"tinyshakespeare": {"path": str(corpus)}},
                clean={"max_rows_per_split": None},
                validate={"min_words_per_split": 1000},
                tokenizer={"vocab_size": 500},
                # Pretraining a causal LM, then continuing it: both stages train one model.
                pretrain={"batch_size": 16, "max_steps": 20, "val_check_interval": 20},
                finetune={"from_pretrained": True, "max_epochs": 12},
                evaluate={"samples": 2},
                tasks={"lm": {"prompts": ["ROMEO:", "First Citizen:"]}},
                decode={"max_new_tokens": 8},
            )
        )
    )
    summaries = run_stages(root, UNTIL_EVALUATE)

    assert summaries["validate"]["splits"][0]["words"] > 1000
    assert summaries["split"]["methods"]["test"] == "contiguous tail of train"
    assert summaries["pretrain"]["global_step"] == 20
    finetune = summaries["finetune"]
    assert finetune["from_pretrained"] and finetune["pretrained_missing_keys"] == 0
    assert read_json(root, "models/finetune/config.json")["task"] == "lm"

    metrics = read_json(root, "metrics/evaluate.json")
    vocab = read_json(root, "data/reports/tokenizer.json")["vocab_size"]
    assert metrics["uniform_perplexity"] == vocab
    # A few hundred steps (measured: 55 against 164 from token frequencies, 500 uniform).
    assert metrics["test_perplexity"] < vocab / 4, metrics
    assert metrics["test_perplexity"] < metrics["baseline_test_perplexity"] / 2, metrics
    # More tokens than words (subwords; each line's end counts once in both): a higher
    # perplexity per word.
    assert metrics["test_tokens"] > metrics["test_words"]
    assert metrics["test_word_perplexity"] > metrics["test_perplexity"]
    samples = read_json(root, "metrics/samples.json")
    assert samples["task"] == "lm"
    assert [sample["prompt"] for sample in samples["samples"]] == ["ROMEO:", "First Citizen:"]
    assert all(isinstance(sample["sampled"], str) for sample in samples["samples"])
    # No classification plots for a language model: its loss curves only.
    assert list((root / "plots/evaluate").iterdir()) == []
    for stage in ("pretrain", "finetune"):
        curve = (root / f"plots/{stage}/val_loss.csv").read_text().splitlines()
        assert curve[0] == "step,loss" and len(curve) > 1, stage


def write_parallel(folder: Path, source: Path, rows: dict[str, int]) -> Path:
    """The first rows of each Multi30k split, in its own format (gzipped, a file per language)."""
    folder.mkdir()
    names = {"train": "train", "val": "val", "test": "test_2016_flickr"}
    for split, count in rows.items():
        for language in ("de", "en"):
            name = f"{names[split]}.{language}.gz"
            with gzip.open(source / name, "rt", encoding="utf-8") as handle:
                head = [next(handle) for _ in range(count)]
            with gzip.open(folder / name, "wt", encoding="utf-8") as handle:
                handle.writelines(head)
    return folder


def test_translator_trains_without_pretraining_and_reports_bleu_with_signatures(
    make_project, in_project, run_stages, shrink_profile, shared_data: Path, tmp_path: Path
) -> None:
    data = write_parallel(
        tmp_path / "multi30k", shared_data / "multi30k", {"train": 400, "val": 60, "test": 60}
    )
    root = in_project(
        make_project(
            shrink_profile(
                "tiny-translate",
                datasets={"multi30k": {"path": str(data)}},
                tokenizer={"vocab_size": 600},
                finetune={"from_pretrained": True, "max_epochs": 2},  # nothing to pretrain
                evaluate={"samples": 3, "latency_examples": 2},
                decode={"max_new_tokens": 24, "beam_size": 2},
            )
        )
    )
    summaries = run_stages(root, UNTIL_EVALUATE)

    assert summaries["tokenizer"]["trained_on"] == ["train (de)", "train (en)"]
    assert summaries["pretrain"]["skipped"]
    assert "no pretraining objective" in summaries["pretrain"]["reason"]
    assert not summaries["finetune"]["from_pretrained"]
    bundle = read_json(root, "models/finetune/config.json")
    assert (bundle["task"], bundle["source_language"], bundle["target_language"]) == (
        "translate",
        "de",
        "en",
    )

    metrics = read_json(root, "metrics/evaluate.json")
    for key in ("test_bleu", "test_chrf", "test_bleu_greedy", "baseline_test_bleu"):
        assert 0.0 <= metrics[key] <= 100.0, key
    assert metrics["test_examples"] == 60
    assert metrics["bleu_signature"].startswith("nrefs:1|")
    assert "version:2.6.0" in metrics["chrf_signature"]
    # Quality is the end-to-end test's overfit check; here, that training learned at all.
    vocab = read_json(root, "data/reports/tokenizer.json")["vocab_size"]
    assert summaries["finetune"]["val/loss"] < math.log(vocab) - 1, summaries["finetune"]
    samples = read_json(root, "metrics/samples.json")["samples"]
    assert len(samples) == 3
    assert set(samples[0]) == {"source", "reference", "translation", "greedy"}
    # BLEU by source length; loss curves of finetune (pretraining trained nothing).
    evaluate_plots = sorted(path.name for path in (root / "plots/evaluate").iterdir())
    assert evaluate_plots == ["bleu_by_length.json", "bleu_by_length.png"]
    buckets = read_json(root, "plots/evaluate/bleu_by_length.json")
    assert sum(bucket["examples"] for bucket in buckets) == metrics["test_examples"]
    assert (root / "plots/pretrain/train_loss.csv").read_text() == "step,loss\n"
