"""How evaluate scores a classifier: through `classify_texts`, as served, calibrated on val,
beside TF-IDF + logistic regression and NBSVM (both with C chosen on val), with the paired
interval of each difference."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformer_pl.params import Params
from transformer_pl.stages.layout import Layout
from transformer_pl.tasks.protocol import SCORED_SPLITS, Evaluation


def evaluate_classifier(
    params: Params, layout: Layout, frames: dict[str, Any], plots_dir: Path
) -> Evaluation:
    """Through `classify_texts`, as served, beside TF-IDF + logistic regression and NBSVM, both
    with C chosen on val."""
    import numpy as np
    import pandas as pd

    from transformer_pl.latency import measure_latency
    from transformer_pl.length_slices import metric_by_length, write_metric_by_length
    from transformer_pl.significance import compare_accuracy
    from transformer_pl.tasks.classify.bundle import load_classifier_bundle
    from transformer_pl.tasks.classify.calibration import apply_temperature, fit_temperature
    from transformer_pl.tasks.classify.predict import classify_texts
    from transformer_pl.tasks.classify.report import (
        classification_report,
        split_scalars,
        write_classification_plots,
    )

    settings, classify = params.evaluate, params.tasks.classify
    model, tokenizer, bundle = load_classifier_bundle(
        layout / Layout.FINETUNED, layout / Layout.TOKENIZER
    )
    texts = {split: frames[split]["text"].tolist() for split in SCORED_SPLITS}
    labels = {split: frames[split]["label"].to_numpy(dtype=np.int64) for split in SCORED_SPLITS}
    label_names = list(bundle.label_names)
    probability_columns = [f"probability_{name}" for name in label_names]

    started = time.perf_counter()
    test_predictions = classify_texts(model, tokenizer, bundle, texts["test"], settings.batch_size)
    predict_seconds = time.perf_counter() - started
    raw = {
        "test": test_predictions[probability_columns].to_numpy(),
        "val": classify_texts(model, tokenizer, bundle, texts["val"], settings.batch_size)[
            probability_columns
        ].to_numpy(),
    }
    metrics: dict[str, Any] = {"calibration_temperature": bundle.temperature}
    probabilities = raw
    if classify.calibrate:
        # Fitted on val, which training did not fit on; register serves the model with it.
        temperature = fit_temperature(labels["val"], raw["val"])
        probabilities = {split: apply_temperature(raw[split], temperature) for split in raw}
        uncalibrated = classification_report(
            labels["test"], raw["test"], label_names, classify.calibration_bins
        )
        metrics |= {
            "calibration_temperature": temperature,
            "test_log_loss_uncalibrated": uncalibrated["log_loss"],
            "test_ece_uncalibrated": uncalibrated["ece"],
        }
        test_predictions[probability_columns] = probabilities["test"]
    report = classification_report(
        labels["test"], probabilities["test"], label_names, classify.calibration_bins
    )
    model_scalars, _ = split_scalars(report)
    metrics |= {f"test_{key}": value for key, value in model_scalars.items()}
    val_report = classification_report(
        labels["val"], probabilities["val"], label_names, classify.calibration_bins
    )
    metrics |= {f"val_{key}": val_report[key] for key in ("accuracy", "f1_macro", "log_loss")}

    baselines = _classification_baselines(params, layout, frames, texts, labels, bundle.num_labels)
    predicted = {
        split: {"model": probabilities[split].argmax(axis=1)}
        | {name: fit["probabilities"][split].argmax(axis=1) for name, fit in baselines.items()}
        for split in SCORED_SPLITS
    }
    for name, fit in baselines.items():
        baseline_report = classification_report(
            labels["test"], fit["probabilities"]["test"], label_names, classify.calibration_bins
        )
        baseline_scalars, _ = split_scalars(baseline_report)
        metrics |= {f"{name}_test_{key}": value for key, value in baseline_scalars.items()}
        metrics |= {f"{name}_{key}": value for key, value in fit["facts"].items()}
        for split in SCORED_SPLITS:
            correct = {
                system: predicted[split][system] == labels[split] for system in ("model", name)
            }
            metrics[f"{name}_{split}_accuracy"] = float(correct[name].mean())
            metrics |= compare_accuracy(
                correct["model"],
                correct[name],
                f"{split}_accuracy_minus_{name}",
                settings.bootstrap_resamples,
                params.seed,
            )

    metrics |= measure_latency(
        lambda text: classify_texts(model, tokenizer, bundle, [text]),
        texts["test"][: settings.latency_examples],
    )
    metrics["test_predict_seconds"] = round(predict_seconds, 2)
    correct = probabilities["test"].argmax(axis=1) == labels["test"]
    by_length = metric_by_length(
        texts["test"],
        lambda positions: correct[positions].mean(),
        "accuracy",
        settings.length_buckets,
    )
    write_metric_by_length(by_length, "accuracy", plots_dir)
    write_classification_plots(
        report,
        labels["test"],
        probabilities["test"],
        label_names,
        plots_dir,
        before_calibration=raw["test"] if classify.calibrate else None,
        calibration_bins=classify.calibration_bins,
    )
    predictions = {
        split: pd.DataFrame(
            {
                "label": labels[split],
                **{f"predicted_{system}": ids for system, ids in predicted[split].items()},
                **{
                    f"model_{column}": probabilities[split][:, index]
                    for index, column in enumerate(probability_columns)
                },
            }
        )
        for split in SCORED_SPLITS
    }
    samples = [
        {
            "text": text,
            "label": label_names[actual],
            "predicted": row["label"],
            "probability": round(float(row[f"probability_{row['label']}"]), 4),
        }
        for text, actual, (_, row) in zip(
            texts["test"][: settings.samples],
            labels["test"][: settings.samples],
            test_predictions.head(settings.samples).iterrows(),
            strict=True,
        )
    ]
    return metrics, samples, predictions


def _classification_baselines(
    params: Params,
    layout: Layout,
    frames: dict[str, Any],
    texts: dict[str, list[str]],
    labels: dict[str, Any],
    num_labels: int,
) -> dict[str, dict[str, Any]]:
    """Per baseline (`baseline`: TF-IDF + LR, `nbsvm`): its val and test probabilities and what
    its fit chose on val. Both fit on train and choose C on val only."""
    import numpy as np
    from tokenizers import Tokenizer

    from transformer_pl.tasks.classify.baselines import fit_nbsvm_baseline, fit_tfidf_baseline

    train_labels = frames["train"]["label"].to_numpy(dtype=np.int64)
    tfidf = fit_tfidf_baseline(
        frames["train"]["text"].tolist(),
        train_labels,
        texts["val"],
        labels["val"],
        c_grid=params.tasks.classify.baseline_c_grid,
        max_features=params.tasks.classify.baseline_max_features,
        seed=params.seed,
    )
    tokenizer = Tokenizer.from_file(str(layout / Layout.TOKENIZER))

    def token_ids(split_texts: list[str]) -> list[np.ndarray]:
        encodings = tokenizer.encode_batch_fast(split_texts, add_special_tokens=False)
        return [np.asarray(encoding.ids, dtype=np.int64) for encoding in encodings]

    ids = {split: token_ids(texts[split]) for split in SCORED_SPLITS}
    nbsvm = fit_nbsvm_baseline(
        (token_ids(frames["train"]["text"].tolist()), train_labels),
        (ids["val"], labels["val"]),
        tokenizer.get_vocab_size(),
        num_labels,
        params.tasks.classify.teacher,
        params.seed,
    )
    return {
        "baseline": {
            "probabilities": {split: tfidf.predict_proba(texts[split]) for split in SCORED_SPLITS},
            "facts": {
                "c": tfidf.chosen_c,
                "c_at_edge": tfidf.c_at_edge,
                "fit_seconds": round(tfidf.fit_seconds, 2),
            },
        },
        "nbsvm": {
            "probabilities": {split: nbsvm.predict_proba(ids[split]) for split in SCORED_SPLITS},
            "facts": {
                "c": nbsvm.chosen_c,
                "c_at_edge": nbsvm.c_at_edge,
                "fit_seconds": round(nbsvm.fit_seconds, 2),
            },
        },
    }


def paired_val_difference(ours: Any, theirs: Any, resamples: int, seed: int) -> dict[str, float]:
    """`val_accuracy_minus_champion` and its 95% interval, from two versions' val predictions."""
    from transformer_pl.significance import compare_accuracy

    return compare_accuracy(
        (ours["predicted_model"] == ours["label"]).to_numpy(),
        (theirs["predicted_model"] == theirs["label"]).to_numpy(),
        "val_accuracy_minus_champion",
        resamples,
        seed,
    )


def registered_fields(params: Params, evaluation: dict[str, Any]) -> dict[str, Any]:
    """The calibration temperature evaluate fitted on val: the served probabilities get it."""
    return {"temperature": evaluation.get("calibration_temperature", 1.0)}
