"""The classification stage functions on a user's own CSV, up to evaluate: the temperature
evaluate fits on val changes the reported calibration, never the accuracy, and
`tasks.classify.calibrate: false` leaves the probabilities as the model gives them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from transformer_pl.params import deep_merge
from transformer_pl.stages import STAGES
from transformer_pl.tasks.classify.calibration import TEMPERATURE_BOUNDS

UNTIL_EVALUATE = [name for name in STAGES if name != "register"]


@pytest.fixture
def reviews_project(
    make_project, write_reviews, reviews_params, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A tiny-profile project on a user's CSV reviews (300 train, 100 test), as the working
    directory: training keeps its scratch checkpoints under it."""
    root = make_project(deep_merge(reviews_params, {"profile": "tiny"}))
    write_reviews(root / "reviews" / "train.csv", 300, seed=0)
    write_reviews(root / "reviews" / "test.csv", 100, seed=1)
    monkeypatch.chdir(root)
    return root


def test_evaluate_calibrates_on_val_only_when_asked(
    reviews_project: Path, update_params, run_stages
) -> None:
    root = reviews_project
    update_params(root, {"tasks": {"classify": {"calibrate": False}}})

    raw = run_stages(root, UNTIL_EVALUATE)["evaluate"]

    assert raw["calibration_temperature"] == 1.0
    assert "test_ece_uncalibrated" not in raw and "test_log_loss_uncalibrated" not in raw
    update_params(root, {"tasks": {"classify": {"calibrate": True}}})

    calibrated = run_stages(root, ["evaluate"])["evaluate"]

    temperature = calibrated["calibration_temperature"]
    assert TEMPERATURE_BOUNDS[0] <= temperature <= TEMPERATURE_BOUNDS[1] and temperature != 1.0
    # The same model's raw figures, now reported beside the calibrated ones.
    assert calibrated["test_ece_uncalibrated"] == pytest.approx(raw["test_ece"], abs=1e-6)
    assert calibrated["test_log_loss_uncalibrated"] == pytest.approx(raw["test_log_loss"], abs=1e-6)
    assert calibrated["test_log_loss"] != pytest.approx(raw["test_log_loss"], abs=1e-6)
    for key in ("test_accuracy", "test_f1_macro", "test_roc_auc", "baseline_test_accuracy"):
        assert calibrated[key] == pytest.approx(raw[key], abs=1e-9), key
    written = json.loads((root / "metrics" / "evaluate.json").read_text(encoding="utf-8"))
    assert written["calibration_temperature"] == temperature


def test_masked_lm_pretraining_starts_from_the_word_vectors_when_asked(
    reviews_project: Path, update_params, run_stages
) -> None:
    """`pretrain.embedding_init: ppmi_svd`: the masked LM's token embedding (and the tied output
    projection) begins as the ppmi_svd objective's word vectors; `random` leaves it random."""
    root = reviews_project
    weights = root / "models" / "pretrain" / "model.safetensors"
    run_stages(root, ["ingest", "clean", "validate", "split", "tokenizer", "encode"])
    update_params(root, {"pretrain": {"objective": "ppmi_svd"}})
    run_stages(root, ["pretrain"])
    word_vectors = load_file(weights)["encoder.embedding.weight"]
    # A learning rate too small to move a weight: the export is where training started.
    frozen = {"optim": {"learning_rate": 1e-12}}

    update_params(root, {"pretrain": {"objective": "mlm", "embedding_init": "ppmi_svd", **frozen}})
    summary = run_stages(root, ["pretrain"])["pretrain"]

    started = load_file(weights)
    torch.testing.assert_close(started["encoder.embedding.weight"], word_vectors)
    torch.testing.assert_close(started["lm_head.weight"], word_vectors)
    assert summary["embedding_init"] == "ppmi_svd" and summary["word_vectors_tokens"] > 0
    update_params(root, {"pretrain": {"embedding_init": "random"}})

    summary = run_stages(root, ["pretrain"])["pretrain"]

    random_start = load_file(weights)["encoder.embedding.weight"]
    assert summary["embedding_init"] == "random" and "word_vectors_tokens" not in summary
    assert not torch.allclose(random_start, word_vectors, atol=1e-3)


def test_finetune_distils_an_ngram_teacher_through_the_unlabeled_split(
    reviews_project: Path, update_params, write_reviews, run_stages
) -> None:
    """`tasks.classify.teacher.kind: nb_logistic`: the teacher fits the train labels, and the
    classifier trains on the train rows and every unlabeled row, each labelled with its
    probabilities."""
    root = reviews_project
    # Encoded rows keep 6 tokens, all of them neutral lead words: the teacher reads whole texts.
    write_reviews(root / "reviews" / "train.csv", 300, seed=0, lead_words=8)
    write_reviews(root / "reviews" / "unlabeled.csv", 200, seed=2, lead_words=8)
    update_params(
        root,
        {
            "datasets": {"reviews": {"splits": {"unlabeled": "unlabeled.csv"}}},
            "tasks": {"classify": {"teacher": {"kind": "nb_logistic", "buckets": 4096}}},
            "profiles": {"tiny": {"encode": {"max_length": 8}}},
        },
    )

    summary = run_stages(root, UNTIL_EVALUATE[: UNTIL_EVALUATE.index("finetune") + 1])

    meta = json.loads((root / "data/processed/encoded/meta.json").read_text(encoding="utf-8"))
    rows = {split: meta["splits"][split]["rows"] for split in ("train", "unlabeled")}
    finetuned = summary["finetune"]
    assert (
        finetuned["teacher"] == "nb_logistic" and finetuned["distilled_rows"] == rows["unlabeled"]
    )
    # Synthetic reviews whose label words decide them: a linear bag of tokens finds them.
    assert finetuned["teacher_val_accuracy"] >= 0.9 and finetuned["teacher_mean_confidence"] > 0.6
    distilled = rows["train"] + rows["unlabeled"]
    batches_per_epoch = -(-distilled // 16)  # the tiny profile's batch
    assert finetuned["global_step"] == batches_per_epoch * finetuned["epochs"]


def test_a_finetune_retried_after_its_outputs_were_exported_does_not_train_again(
    reviews_project: Path, run_stages, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As when the tracking server fails after training: the runner logs the stage's metrics
    # once the stage function has returned, and a retry runs the function again.
    until_finetune = UNTIL_EVALUATE[: UNTIL_EVALUATE.index("finetune") + 1]
    first = run_stages(reviews_project, until_finetune)["finetune"]
    (scratch,) = (reviews_project / ".checkpoints").glob("finetune-*")
    assert [path.name for path in scratch.iterdir()] == ["finished.json"]

    def train_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("finetune trained again")

    monkeypatch.setattr("transformer_pl.lightning.trainer.fit_or_resume", train_again)
    assert run_stages(reviews_project, ["finetune"])["finetune"] == first
