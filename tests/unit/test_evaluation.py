"""Metrics against hand-computed values; plot files in the formats DVC reads."""

from __future__ import annotations

import csv
import json
import math
import time

import numpy as np
import pytest

from transformer_pl.latency import measure_latency
from transformer_pl.tasks.classify.report import (
    classification_report,
    expected_calibration_error,
    reliability_bins,
    split_scalars,
    write_classification_plots,
)
from transformer_pl.tasks.lm.perplexity import count_words, perplexity, word_perplexity
from transformer_pl.tasks.translate.bleu import (
    bleu_and_chrf,
    bleu_from_statistics,
    bleu_statistics,
)

LABELS = ["negative", "positive"]
# Four binary predictions: confidences 0.9 (right), 0.8 (wrong), 0.6 (right), 0.7 (right).
Y_TRUE = np.array([1, 0, 1, 0])
PROBABILITIES = np.array([[0.1, 0.9], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])


def test_ece_matches_hand_computation_with_right_closed_bins():
    # 5 bins: (0.8, 1] holds 0.9 → |1 − 0.9| · 1/4; (0.6, 0.8] holds 0.8 (wrong) and 0.7 (right)
    # → |0.5 − 0.75| · 2/4; (0.4, 0.6] holds 0.6 → |1 − 0.6| · 1/4. Sum: 0.025 + 0.125 + 0.1.
    assert expected_calibration_error(Y_TRUE, PROBABILITIES, bins=5) == pytest.approx(0.25)


def test_ece_with_one_bin_is_the_gap_between_accuracy_and_mean_confidence():
    # First three: accuracy 2/3, mean confidence (0.9 + 0.8 + 0.6) / 3.
    ece = expected_calibration_error(Y_TRUE[:3], PROBABILITIES[:3], bins=1)
    assert ece == pytest.approx(abs(2 / 3 - 2.3 / 3))
    confident_and_right = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert expected_calibration_error(np.array([1, 0]), confident_and_right, bins=10) == 0.0


def test_report_binary_metrics_and_confusion_matrix():
    report = classification_report(Y_TRUE, PROBABILITIES, LABELS, calibration_bins=5)

    assert report["accuracy"] == pytest.approx(0.75)
    assert report["confusion_matrix"] == [[1, 1], [0, 2]]  # rows actual, columns predicted
    # negative: precision 1/1, recall 1/2; positive: precision 2/3, recall 2/2.
    assert report["precision/negative"] == pytest.approx(1.0)
    assert report["recall/negative"] == pytest.approx(0.5)
    assert report["precision/positive"] == pytest.approx(2 / 3)
    assert report["f1/positive"] == pytest.approx(0.8)
    assert report["f1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert report["support/negative"] == 2
    assert report["ece"] == pytest.approx(0.25)
    assert report["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.2, 0.6, 0.7])), rel=1e-6)
    # Positive scores 0.9 and 0.6 vs 0.8 and 0.3: 3 of 4 pairs ordered correctly.
    assert report["roc_auc"] == pytest.approx(0.75)
    roc = report["roc_curve"]
    assert roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
    assert report["pr_curve"]["recall"][0] == 1.0


def test_report_multiclass_has_per_class_keys_and_no_binary_curves():
    labels = ["negative", "very positive", "a/b"]
    probabilities = np.array([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    report = classification_report(np.array([0, 1, 2, 1]), probabilities, labels)

    assert report["accuracy"] == pytest.approx(0.75)
    assert {"f1/very_positive", "support/a_b"} <= report.keys()  # MLflow-safe metric names
    assert "roc_auc" not in report and "roc_curve" not in report
    assert np.asarray(report["confusion_matrix"]).shape == (3, 3)


def test_report_rejects_probabilities_of_the_wrong_shape():
    with pytest.raises(ValueError, match="n_classes"):
        classification_report(Y_TRUE, PROBABILITIES[:, :1], LABELS)


def test_split_scalars_separates_numbers_from_curves():
    report = classification_report(Y_TRUE, PROBABILITIES, LABELS)
    scalars, rest = split_scalars(report)

    assert {"accuracy", "f1_macro", "ece", "roc_auc", "average_precision"} <= scalars.keys()
    assert all(type(value) is float for value in scalars.values())
    assert set(rest) == {"confusion_matrix", "roc_curve", "pr_curve"}


def test_plot_files_are_written_in_dvc_formats(tmp_path):
    report = classification_report(Y_TRUE, PROBABILITIES, LABELS)
    paths = write_classification_plots(report, Y_TRUE, PROBABILITIES, LABELS, tmp_path / "plots")

    names = sorted(path.name for path in paths)
    assert names == [
        "confusion.csv",
        "confusion_matrix.png",
        "precision_recall.json",
        "reliability.png",
        "reliability_before.json",
        "roc.json",
    ]
    assert all(path.parent == tmp_path / "plots" for path in paths)
    assert (tmp_path / "plots/confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (tmp_path / "plots/confusion.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[1] == {"actual": "negative", "predicted": "positive"}
    assert len(rows) == len(Y_TRUE)
    roc = json.loads((tmp_path / "plots/roc.json").read_text())
    assert roc[0] == {"fpr": 0.0, "tpr": 0.0} and roc[-1] == {"fpr": 1.0, "tpr": 1.0}
    pr = json.loads((tmp_path / "plots/precision_recall.json").read_text())
    assert set(pr[0]) == {"recall", "precision"}


def test_measure_latency_times_each_call_after_a_warm_up():
    calls = []

    def predict(example):
        calls.append(example)
        time.sleep(0.002)

    latency = measure_latency(predict, ["a", "b", "c"], repeats=2)

    assert len(calls) == 1 + 3 * 2
    assert latency["latency_calls"] == 6
    assert 2.0 <= latency["latency_p50_ms"] <= latency["latency_p95_ms"] < 100.0
    assert latency["latency_mean_ms"] >= 2.0


def test_perplexities():
    assert perplexity(5 * math.log(10.0), 5) == pytest.approx(10.0)
    # The same summed NLL over fewer words than tokens gives a higher per-word perplexity.
    assert word_perplexity(6 * math.log(2.0), 3) == pytest.approx(4.0)
    assert perplexity(1e6, 1) == math.inf
    with pytest.raises(ValueError):
        perplexity(1.0, 0)


def test_word_perplexity_normalises_the_token_nll_by_words_and_line_ends():
    # WikiText-style lines: words are the space-separated tokens, and each line ends once.
    lines = [" = Robert Boulter = ", "Robert Boulter is an English film , television actor ."]
    assert count_words(lines) == (4 + 1) + (10 + 1)
    # The same total NLL over 32 subword tokens: per token exp(NLL/32), per word exp(NLL/16).
    total_nll = 32 * math.log(5.0)
    assert perplexity(total_nll, 32) == pytest.approx(5.0)
    assert word_perplexity(total_nll, count_words(lines)) == pytest.approx(25.0)
    with pytest.raises(ValueError):
        word_perplexity(total_nll, 0)


def test_bleu_and_chrf_with_signatures():
    references = ["a man is riding a red bicycle down the street", "two dogs play in the snow"]
    perfect = bleu_and_chrf(references, references)
    partial = bleu_and_chrf(["a man rides a bicycle", "two cats sleep in the snow"], references)

    assert perfect["bleu"] == pytest.approx(100.0) and perfect["chrf"] == pytest.approx(100.0)
    assert 0.0 < partial["bleu"] < 60.0 and 0.0 < partial["chrf"] < 80.0
    assert "tok:13a" in perfect["bleu_signature"] and "version:" in perfect["chrf_signature"]
    with pytest.raises(ValueError):
        bleu_and_chrf(["one"], references)


def test_bleu_statistics_sum_to_the_corpus_score():
    hypotheses = ["the cat sat on the mat", "a dog barks loudly", "hello world"]
    references = ["the cat sat on a mat", "the dog barks loudly", "hello there world"]
    statistics = bleu_statistics(hypotheses, references)
    assert statistics.shape[0] == 3
    corpus = bleu_and_chrf(hypotheses, references)["bleu"]
    assert bleu_from_statistics(statistics.sum(axis=0)) == pytest.approx(corpus)
    first_two = bleu_and_chrf(hypotheses[:2], references[:2])["bleu"]
    assert bleu_from_statistics(statistics[:2].sum(axis=0)) == pytest.approx(first_two)


def test_reliability_bins_give_the_ece_and_the_diagram_before_and_after_calibration(tmp_path):
    y_true = np.array([0, 0, 1, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55], [0.8, 0.2]])
    points = reliability_bins(y_true, probabilities, bins=2)
    # Confidences 0.9, 0.6, 0.7, 0.55, 0.8: bin (0.5, 1] holds all five, four right.
    assert points == [{"confidence": pytest.approx(0.71), "accuracy": 0.8, "count": 5}]
    assert expected_calibration_error(y_true, probabilities, bins=2) == pytest.approx(0.09)
    sharper = reliability_bins(y_true, probabilities, bins=10)
    assert sum(point["count"] for point in sharper) == 5 and len(sharper) == 4  # 0.55, 0.6

    report = classification_report(y_true, probabilities, LABELS)
    flattened = np.full_like(probabilities, 0.5)
    paths = write_classification_plots(
        report, y_true, flattened, LABELS, tmp_path, before_calibration=probabilities
    )
    before = json.loads((tmp_path / "reliability_before.json").read_text())
    after = json.loads((tmp_path / "reliability_after.json").read_text())
    assert before == json.loads(json.dumps(reliability_bins(y_true, probabilities, 15)))
    assert after == [{"confidence": 0.5, "accuracy": 0.4, "count": 5}]
    assert tmp_path / "reliability.png" in paths
