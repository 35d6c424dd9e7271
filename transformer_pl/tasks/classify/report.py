"""Classification metrics and plot files — pure functions, no MLflow.

Metrics come back as one flat dict whose scalar entries are ready for MLflow and a DVC metrics
file (`accuracy`, `f1_macro`, `ece`, `precision/<label>`, ...) and whose non-scalar entries
(confusion matrix, ROC and PR curves) feed the plot writers; `split_scalars` separates the two.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn import metrics as skm

# Plot files the writers produce, relative to the plots folder (what dvc.yaml declares).
CONFUSION_PNG = "confusion_matrix.png"
CONFUSION_CSV = "confusion.csv"
ROC_JSON = "roc.json"
PR_JSON = "precision_recall.json"
# The reliability diagram of the model's own probabilities, and of the calibrated ones it serves.
RELIABILITY_JSON = {"before": "reliability_before.json", "after": "reliability_after.json"}
RELIABILITY_PNG = "reliability.png"


def metric_label(label: str) -> str:
    """A label name made safe as part of an MLflow metric key (no dots, slashes or spaces)."""
    return re.sub(r"[^\w\-]", "_", label)


def reliability_bins(
    y_true: np.ndarray, probabilities: np.ndarray, bins: int = 15
) -> list[dict[str, float]]:
    """The reliability diagram's points: per non-empty equal-width confidence bin, the mean
    confidence, the accuracy and the number of examples. Confidence is the top-class
    probability; bin b holds confidences in ((b−1)/bins, b/bins] (bin 0 also holds 0)."""
    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    inner_edges = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    bin_of = np.digitize(confidence, inner_edges, right=True)
    return [
        {
            "confidence": float(confidence[in_bin].mean()),
            "accuracy": float(correct[in_bin].mean()),
            "count": int(in_bin.sum()),
        }
        for in_bin in (bin_of == b for b in range(bins))
        if in_bin.any()
    ]


def expected_calibration_error(
    y_true: np.ndarray, probabilities: np.ndarray, bins: int = 15
) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017):
    ECE = Σ_b (|B_b| / n) · |accuracy(B_b) − mean confidence(B_b)| over `reliability_bins`."""
    points = reliability_bins(y_true, probabilities, bins)
    total = sum(point["count"] for point in points)
    return float(
        sum(
            point["count"] / total * abs(point["accuracy"] - point["confidence"])
            for point in points
        )
    )


def classification_report(
    y_true: Sequence[int] | np.ndarray,
    probabilities: np.ndarray,
    label_names: Sequence[str],
    calibration_bins: int = 15,
) -> dict[str, Any]:
    """Every classification metric the pipeline reports, from class indices and probabilities.

    `probabilities` is (n_examples, n_classes), columns in `label_names` order. Scalar keys:
    `accuracy`, `f1_macro`, `precision_macro`, `recall_macro`, `log_loss`, `ece`, `n_examples`,
    `precision/<label>`, `recall/<label>`, `f1/<label>`, `support/<label>`; for two classes (the
    second is the positive one) also `roc_auc` and `average_precision` (NaN when `y_true` holds one
    class only). Non-scalar keys: `confusion_matrix` (rows actual, columns predicted), and for two
    classes `roc_curve` {fpr, tpr} and `pr_curve` {recall, precision}.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n_classes = len(label_names)
    if probabilities.ndim != 2 or probabilities.shape != (len(y_true), n_classes):
        raise ValueError(
            f"probabilities must be (n_examples, n_classes) = ({len(y_true)}, {n_classes}), "
            f"got {probabilities.shape}"
        )
    # float32 softmax rows sum to 1 only within ~1e-7, which log_loss warns about.
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    classes = list(range(n_classes))
    y_pred = probabilities.argmax(axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0
    )
    report: dict[str, Any] = {
        "n_examples": len(y_true),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1.mean()),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "log_loss": float(skm.log_loss(y_true, probabilities, labels=classes)),
        "ece": expected_calibration_error(y_true, probabilities, calibration_bins),
    }
    for index, name in enumerate(label_names):
        key = metric_label(name)
        report[f"precision/{key}"] = float(precision[index])
        report[f"recall/{key}"] = float(recall[index])
        report[f"f1/{key}"] = float(f1[index])
        report[f"support/{key}"] = int(support[index])
    report["confusion_matrix"] = skm.confusion_matrix(y_true, y_pred, labels=classes).tolist()
    if n_classes == 2:
        report.update(_binary_curves(y_true, probabilities[:, 1]))
    return report


def _binary_curves(y_true: np.ndarray, positive_score: np.ndarray) -> dict[str, Any]:
    if len(np.unique(y_true)) < 2:  # ROC and PR are undefined without both classes
        return {
            "roc_auc": math.nan,
            "average_precision": math.nan,
            "roc_curve": {"fpr": [], "tpr": []},
            "pr_curve": {"recall": [], "precision": []},
        }
    fpr, tpr, _ = skm.roc_curve(y_true, positive_score, drop_intermediate=True)
    precision, recall, _ = skm.precision_recall_curve(
        y_true, positive_score, drop_intermediate=True
    )
    return {
        "roc_auc": float(skm.roc_auc_score(y_true, positive_score)),
        "average_precision": float(skm.average_precision_score(y_true, positive_score)),
        "roc_curve": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
        "pr_curve": {"recall": recall.tolist(), "precision": precision.tolist()},
    }


def split_scalars(report: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """(numbers for MLflow/DVC metrics, everything else: curves, matrices, strings)."""
    scalars: dict[str, float] = {}
    rest: dict[str, Any] = {}
    for key, value in report.items():
        if isinstance(value, int | float | np.number):
            scalars[key] = float(value)
        else:
            rest[key] = value
    return scalars, rest


def write_confusion_matrix_png(
    matrix: Sequence[Sequence[int]] | np.ndarray, label_names: Sequence[str], path: str | Path
) -> Path:
    """A labelled heat map of the confusion matrix (rows actual, columns predicted)."""
    matrix = np.asarray(matrix)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = 1.2 + 0.6 * len(label_names)
    # A bare Figure renders through Agg on savefig: no pyplot state, no display, nothing to close.
    figure = Figure(figsize=(max(4.0, size), max(3.5, size)))
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    ticks = range(len(label_names))
    axes.set_xticks(ticks, labels=label_names, rotation=45, ha="right")
    axes.set_yticks(ticks, labels=label_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if count > threshold else "black"
        axes.text(column, row, str(count), ha="center", va="center", color=colour)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def write_confusion_rows_csv(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    label_names: Sequence[str],
    path: str | Path,
) -> Path:
    """One `actual,predicted` row per example: the data DVC's `confusion` template counts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["actual", "predicted"])
        writer.writerows(
            (label_names[actual], label_names[predicted])
            for actual, predicted in zip(y_true, y_pred, strict=True)
        )
    return path


def write_curve_json(curve: Mapping[str, Sequence[float]], path: str | Path) -> Path:
    """A curve {x: [...], y: [...]} as DVC plot data: a JSON list of {x, y} points."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(curve)
    points = [dict(zip(keys, values, strict=True)) for values in zip(*curve.values(), strict=True)]
    path.write_text(json.dumps(points, indent=1) + "\n", encoding="utf-8")
    return path


def write_reliability(
    y_true: Sequence[int] | np.ndarray,
    probabilities: Mapping[str, np.ndarray],
    bins: int,
    plots_dir: Path,
) -> list[Path]:
    """The reliability diagram of the probabilities before calibration and, where calibrated,
    after: the points as DVC plot data, both curves in one PNG; returns the paths."""
    figure = Figure(figsize=(4.5, 4.5))
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    paths = []
    for name, values in probabilities.items():
        points = reliability_bins(np.asarray(y_true), values, bins)
        path = plots_dir / RELIABILITY_JSON[name]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(points, indent=1) + "\n", encoding="utf-8")
        paths.append(path)
        axes.plot(
            [point["confidence"] for point in points],
            [point["accuracy"] for point in points],
            marker="o",
            label=f"{name} calibration",
        )
    axes.set(xlabel="confidence (top-class probability)", ylabel="accuracy", xlim=(0, 1))
    axes.legend()
    figure.tight_layout()
    figure.savefig(plots_dir / RELIABILITY_PNG)
    return [*paths, plots_dir / RELIABILITY_PNG]


def write_classification_plots(
    report: Mapping[str, Any],
    y_true: Sequence[int] | np.ndarray,
    probabilities: np.ndarray,
    label_names: Sequence[str],
    plots_dir: str | Path,
    before_calibration: np.ndarray | None = None,
    calibration_bins: int = 15,
) -> list[Path]:
    """Write every plot of a `classification_report` under `plots_dir`; return the paths.

    Always `confusion_matrix.png`, `confusion.csv` and the reliability diagram of
    `probabilities` (after calibration, with the probabilities `before_calibration`, when
    calibrated); for two classes also `roc.json` and `precision_recall.json`.
    """
    plots_dir = Path(plots_dir)
    y_pred = np.asarray(probabilities).argmax(axis=1)
    paths = [
        write_confusion_matrix_png(
            report["confusion_matrix"], label_names, plots_dir / CONFUSION_PNG
        ),
        write_confusion_rows_csv(y_true, y_pred, label_names, plots_dir / CONFUSION_CSV),
    ]
    served = np.asarray(probabilities)
    diagrams = (
        {"before": served}
        if before_calibration is None
        else {"before": np.asarray(before_calibration), "after": served}
    )
    paths += write_reliability(y_true, diagrams, calibration_bins, plots_dir)
    if "roc_curve" in report:
        paths.append(write_curve_json(report["roc_curve"], plots_dir / ROC_JSON))
        paths.append(write_curve_json(report["pr_curve"], plots_dir / PR_JSON))
    return paths
