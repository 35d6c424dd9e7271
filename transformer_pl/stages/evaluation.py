"""The last stages, in run order: evaluate → register.

evaluate measures the finetuned model through the code the registered model serves with, beside
a baseline, and shows what it does on a few inputs (samples.json). What it measures follows from
the bundle's task:

    classify   accuracy, F1, calibration, ...; plots      baseline: TF-IDF + logistic regression
    clm        val/test perplexity per token and per word baseline: unigram frequencies
    translate  test BLEU and chrF (sacreBLEU, signatures) baseline: the untranslated source

register logs the bundle as the task's pyfunc model and registers a version; the task's
headline metric decides the champion.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformer_pl.config import Params
from transformer_pl.stages.base import StageError, StageSpec, write_json
from transformer_pl.stages.layout import Layout

EVALUATION_METRICS = f"{Layout.METRICS}/evaluate.json"
SAMPLES = f"{Layout.METRICS}/samples.json"
REGISTRATION_REPORT = f"{Layout.METRICS}/register.json"
PROFILE_KEYS = ("profile", "profiles")
Evaluation = tuple[dict[str, Any], list[dict[str, Any]]]  # (metrics, samples)


def evaluate(params: Params, layout: Layout) -> dict[str, Any]:
    """Test metrics (flat keys, the same in every run of a task, so the MLflow UI lines runs and
    the baseline up), samples of the model's outputs, and plots where the task has them."""
    from transformer_pl.data import read_frames
    from transformer_pl.registry import bundle_task

    task = bundle_task(layout / Layout.FINETUNED)
    frames = read_frames(layout / Layout.SPLITS)
    if "test" not in frames:
        raise StageError(f"{Layout.SPLITS} has no test split: run split")
    # Replaced whole: plots of an earlier run (another task's, say) must not linger.
    plots_dir = layout / Layout.PLOTS
    if plots_dir.exists():
        shutil.rmtree(plots_dir)
    plots_dir.mkdir(parents=True)
    evaluators: dict[str, Callable[..., Evaluation]] = {
        "classify": _classifier,
        "clm": _language_model,
        "translate": _translator,
    }
    metrics, samples = evaluators[task](params, layout, frames, plots_dir)
    write_json(layout / EVALUATION_METRICS, {"dataset": params.dataset, **metrics})
    write_json(layout / SAMPLES, {"dataset": params.dataset, "task": task, "samples": samples})
    return {"dataset": params.dataset, **metrics}


def _classifier(
    params: Params, layout: Layout, frames: dict[str, Any], plots_dir: Path
) -> Evaluation:
    """Through `classify_texts`, as served, beside a TF-IDF + logistic-regression baseline."""
    import numpy as np

    from transformer_pl.baseline import fit_tfidf_baseline
    from transformer_pl.calibration import apply_temperature, fit_temperature
    from transformer_pl.evaluation import (
        classification_report,
        measure_latency,
        split_scalars,
        write_classification_plots,
    )
    from transformer_pl.registry import classify_texts, load_classifier_bundle

    settings = params.evaluate
    model, tokenizer, bundle = load_classifier_bundle(
        layout / Layout.FINETUNED, layout / Layout.TOKENIZER
    )
    test_texts = frames["test"]["text"].tolist()
    y_true = frames["test"]["label"].to_numpy(dtype=np.int64)
    label_names = list(bundle.label_names)
    probability_columns = [f"probability_{name}" for name in label_names]

    started = time.perf_counter()
    predictions = classify_texts(model, tokenizer, bundle, test_texts, settings.batch_size)
    predict_seconds = time.perf_counter() - started
    raw_probabilities = predictions[probability_columns].to_numpy()
    calibration: dict[str, float] = {"calibration_temperature": bundle.temperature}
    probabilities = raw_probabilities
    if settings.calibrate:
        # Fitted on val, which training did not fit on; register serves the model with it.
        val_probabilities = classify_texts(
            model, tokenizer, bundle, frames["val"]["text"].tolist(), settings.batch_size
        )[probability_columns].to_numpy()
        temperature = fit_temperature(
            frames["val"]["label"].to_numpy(dtype=np.int64), val_probabilities
        )
        probabilities = apply_temperature(raw_probabilities, temperature)
        uncalibrated = classification_report(
            y_true, raw_probabilities, label_names, settings.calibration_bins
        )
        calibration = {
            "calibration_temperature": temperature,
            "test_log_loss_uncalibrated": uncalibrated["log_loss"],
            "test_ece_uncalibrated": uncalibrated["ece"],
        }
        predictions[probability_columns] = probabilities
    report = classification_report(y_true, probabilities, label_names, settings.calibration_bins)
    model_scalars, _ = split_scalars(report)

    baseline = fit_tfidf_baseline(
        frames["train"]["text"].tolist(),
        frames["train"]["label"].to_numpy(dtype=np.int64),
        frames["val"]["text"].tolist(),
        frames["val"]["label"].to_numpy(dtype=np.int64),
        c_grid=settings.baseline_c_grid,
        max_features=settings.baseline_max_features,
        seed=params.seed,
    )
    baseline_report = classification_report(
        y_true, baseline.predict_proba(test_texts), label_names, settings.calibration_bins
    )
    baseline_scalars, _ = split_scalars(baseline_report)

    latency = measure_latency(
        lambda text: classify_texts(model, tokenizer, bundle, [text]),
        test_texts[: settings.latency_examples],
    )
    write_classification_plots(report, y_true, probabilities, label_names, plots_dir)
    metrics = {
        **{f"test_{key}": value for key, value in model_scalars.items()},
        **{f"baseline_test_{key}": value for key, value in baseline_scalars.items()},
        "baseline_c": baseline.chosen_c,
        "baseline_val_accuracy": baseline.val_accuracy,
        "baseline_fit_seconds": round(baseline.fit_seconds, 2),
        "accuracy_minus_baseline": model_scalars["accuracy"] - baseline_scalars["accuracy"],
        **calibration,
        "test_predict_seconds": round(predict_seconds, 2),
        **latency,
    }
    samples = [
        {
            "text": text,
            "label": label_names[actual],
            "predicted": row["label"],
            "probability": round(float(row[f"probability_{row['label']}"]), 4),
        }
        for text, actual, (_, row) in zip(
            test_texts[: settings.samples],
            y_true[: settings.samples],
            predictions.head(settings.samples).iterrows(),
            strict=True,
        )
    ]
    return metrics, samples


def _language_model(
    params: Params, layout: Layout, frames: dict[str, Any], plots_dir: Path
) -> Evaluation:
    """Perplexity of every val/test token, each predicted once from up to a training block of
    context (`corpus_nll`); per token of our tokenizer and per word of the text, which compares
    across tokenizers (WikiText results are per word). Samples: each prompt continued greedily
    and sampled."""
    from transformer_pl.baseline import unigram_nll
    from transformer_pl.evaluation import count_words, measure_latency, perplexity, word_perplexity
    from transformer_pl.inference import (
        corpus_nll,
        generate_texts,
        line_stream,
        load_sequence_bundle,
    )

    settings, decoding = params.evaluate, params.decode
    model, tokenizer, bundle = load_sequence_bundle(
        layout / Layout.FINETUNED, layout / Layout.TOKENIZER
    )
    vocab_size = tokenizer.get_vocab_size()
    # A model that learned nothing scores every token 1/vocab_size: the bound to beat.
    metrics: dict[str, Any] = {"uniform_perplexity": float(vocab_size)}
    for split in ("val", "test"):
        texts = frames[split]["text"].tolist()
        stream = line_stream(tokenizer, texts)
        started = time.perf_counter()
        nll = corpus_nll(model, stream, bundle.max_length, settings.batch_size)
        words = count_words(texts)
        metrics |= {
            f"{split}_perplexity": perplexity(nll, len(stream) - 1),
            f"{split}_word_perplexity": word_perplexity(nll, words),
            f"{split}_tokens": len(stream) - 1,
            f"{split}_words": words,
            f"{split}_score_seconds": round(time.perf_counter() - started, 2),
        }
    train_ids = line_stream(tokenizer, frames["train"]["text"].tolist())[1:]
    test_stream = line_stream(tokenizer, frames["test"]["text"].tolist())
    baseline_nll = unigram_nll(train_ids, test_stream[1:], vocab_size)
    metrics["baseline_test_perplexity"] = perplexity(baseline_nll, len(test_stream) - 1)
    metrics["baseline_test_word_perplexity"] = word_perplexity(baseline_nll, metrics["test_words"])

    prompts = settings.prompts
    greedy = generate_texts(
        model, tokenizer, prompts, decoding.model_copy(update={"do_sample": False})
    )
    sampling = {"do_sample": True, "seed": params.seed if decoding.seed is None else decoding.seed}
    sampled = generate_texts(model, tokenizer, prompts, decoding.model_copy(update=sampling))
    if prompts:
        metrics |= measure_latency(
            lambda prompt: generate_texts(model, tokenizer, [prompt], decoding),
            prompts[: settings.latency_examples],
        )
    samples = [
        {"prompt": prompt, "greedy": greedy_text, "sampled": sampled_text}
        for prompt, greedy_text, sampled_text in zip(prompts, greedy, sampled, strict=True)
    ]
    return metrics, samples


def _translator(
    params: Params, layout: Layout, frames: dict[str, Any], plots_dir: Path
) -> Evaluation:
    """Corpus BLEU and chrF of the test translations (the decode settings: beam search when
    beam_size > 1, and greedy beside it), against copying the source untranslated."""
    from transformer_pl.evaluation import bleu_and_chrf, measure_latency
    from transformer_pl.inference import load_sequence_bundle, translate_texts

    settings, decoding = params.evaluate, params.decode
    model, tokenizer, bundle = load_sequence_bundle(
        layout / Layout.FINETUNED, layout / Layout.TOKENIZER
    )
    sources = frames["test"]["text"].tolist()
    references = frames["test"]["target"].tolist()

    def translate(texts: list[str], beam_size: int) -> list[str]:
        chosen = decoding.model_copy(update={"beam_size": beam_size})
        return translate_texts(
            model, tokenizer, texts, chosen, bundle.max_length, settings.batch_size
        )

    started = time.perf_counter()
    translations = translate(sources, decoding.beam_size)
    translate_seconds = time.perf_counter() - started
    scores = bleu_and_chrf(translations, references)
    greedy = translate(sources, 1) if decoding.beam_size > 1 else translations
    greedy_scores = bleu_and_chrf(greedy, references)
    baseline = bleu_and_chrf(sources, references)
    metrics = {
        "test_bleu": scores["bleu"],
        "test_chrf": scores["chrf"],
        "test_bleu_greedy": greedy_scores["bleu"],
        "test_chrf_greedy": greedy_scores["chrf"],
        "baseline_test_bleu": baseline["bleu"],
        "baseline_test_chrf": baseline["chrf"],
        "bleu_signature": scores["bleu_signature"],
        "chrf_signature": scores["chrf_signature"],
        "test_examples": len(sources),
        "test_translate_seconds": round(translate_seconds, 2),
        **measure_latency(
            lambda source: translate([source], decoding.beam_size),
            sources[: settings.latency_examples],
        ),
    }
    samples = [
        {"source": source, "reference": reference, "translation": beam, "greedy": greedy_text}
        for source, reference, beam, greedy_text in list(
            zip(sources, references, translations, greedy, strict=True)
        )[: settings.samples]
    ]
    return metrics, samples


def register(params: Params, layout: Layout) -> dict[str, Any]:
    """Register the finetuned model as a new version (alias `challenger`; `champion` when it
    beats the current champion by the margin). Unchanged code, data and params register nothing.
    """
    from dataclasses import asdict

    from transformer_pl.registry import bundle_task, register_model, registration_fingerprint
    from transformer_pl.stages.runner import params_subset, path_hashes
    from transformer_pl.tracking import git_commit, lineage_tags

    spec = STAGES_BY_NAME["register"]
    evaluation = json.loads((layout / EVALUATION_METRICS).read_text(encoding="utf-8"))
    metrics = {
        key: value
        for key, value in evaluation.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    # What a score means beyond its number (sacreBLEU's signatures) stays with the version.
    facts = {
        f"evaluation.{key}": value
        for key, value in evaluation.items()
        if isinstance(value, str) and key != "dataset"
    }
    data_hashes = {path: md5 for path, md5 in path_hashes(spec.deps, layout.root).items() if md5}
    metric_key, greater_is_better = params.registration_metric
    if metric_key not in metrics:
        raise StageError(
            f"register.metric '{metric_key}' is not in {EVALUATION_METRICS}; "
            f"available: {', '.join(sorted(metrics))}"
        )
    sequence_bundle = bundle_task(layout / Layout.FINETUNED) != "classify"
    decision = register_model(
        layout / Layout.FINETUNED,
        layout / Layout.TOKENIZER,
        model_name=params.model_name,
        metrics=metrics,
        tags={
            **lineage_tags(
                dataset=params.dataset,
                profile=params.profile,
                stage="register",
                dvc_hashes=data_hashes,
            ),
            **facts,
        },
        metric_key=metric_key,
        champion_margin=params.register_.champion_margin,
        greater_is_better=greater_is_better,
        # Not the metrics file: it holds latencies, so re-running evaluate alone would otherwise
        # register the same weights again.
        fingerprint=registration_fingerprint(
            git_commit(),
            {path: md5 for path, md5 in data_hashes.items() if path != EVALUATION_METRICS},
            params_subset(params, spec.params),
        ),
        # A classifier serves calibrated probabilities; generators decode as evaluate did.
        bundle_fields=(
            {"decoding": params.decode.model_dump()}
            if sequence_bundle
            else {"temperature": evaluation.get("calibration_temperature", 1.0)}
        ),
    )
    summary = {"dataset": params.dataset, **asdict(decision)}
    write_json(layout / REGISTRATION_REPORT, summary)
    return summary


def _code(*paths: str) -> tuple[str, ...]:
    return (*paths, "transformer_pl/stages/evaluation.py")


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        name="evaluate",
        run=evaluate,
        deps=(
            Layout.FINETUNED,
            Layout.TOKENIZER,
            Layout.SPLITS,
            *_code(
                "transformer_pl/evaluation.py",
                "transformer_pl/baseline.py",
                "transformer_pl/registry.py",
                "transformer_pl/inference.py",
                "transformer_pl/precision.py",
                "transformer_pl/calibration.py",
            ),
        ),
        params=("dataset", *PROFILE_KEYS, "seed", "evaluate", "decode"),
        metrics=(EVALUATION_METRICS, SAMPLES),
        plots=(Layout.PLOTS,),
    ),
    StageSpec(
        name="register",
        run=register,
        deps=(
            Layout.FINETUNED,
            Layout.TOKENIZER,
            EVALUATION_METRICS,
            *_code(
                "transformer_pl/registry.py",
                "transformer_pl/inference.py",
                "transformer_pl/calibration.py",
            ),
        ),
        params=(
            "dataset",
            "datasets",
            *PROFILE_KEYS,
            "seed",
            "decode",
            "register",
            "tracking",
        ),
        metrics=(REGISTRATION_REPORT,),
    ),
)
STAGES_BY_NAME = {spec.name: spec for spec in STAGES}
