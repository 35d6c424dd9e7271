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
from transformer_pl.stages.code_deps import code_deps
from transformer_pl.stages.layout import Layout

EVALUATION_METRICS = f"{Layout.METRICS}/evaluate.json"
SAMPLES = f"{Layout.METRICS}/samples.json"
REGISTRATION_REPORT = f"{Layout.METRICS}/register.json"
# Per-example predictions of the model and its baselines, one Parquet file per scored split.
PREDICTIONS = f"{Layout.METRICS}/predictions"
VAL_PREDICTIONS, TEST_PREDICTIONS = f"{PREDICTIONS}/val.parquet", f"{PREDICTIONS}/test.parquet"
PROFILE_KEYS = ("profile", "profiles")
SCORED_SPLITS = ("val", "test")
# (metrics, samples, per-example predictions by split)
Evaluation = tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]


def evaluate(params: Params, layout: Layout) -> dict[str, Any]:
    """Val and test metrics of the model and its baselines (flat keys, the same in every run of a
    task, so the MLflow UI lines runs up), the paired difference from each baseline with its 95%
    interval, the per-example predictions behind them (Parquet, one file per split), samples of
    the model's outputs, and plots where the task has them.

    This is the one stage that reads the test split. Val figures are what later choices use
    (register promotes on them); test figures are reported, never used to choose."""
    from transformer_pl.data import read_frames
    from transformer_pl.registry import bundle_task

    task = bundle_task(layout / Layout.FINETUNED)
    frames = read_frames(layout / Layout.SPLITS, ("train", "val"))
    if (layout / Layout.TEST_SPLIT).is_dir():
        frames |= read_frames(layout / Layout.TEST_SPLIT, ("test",))
    if "test" not in frames or "val" not in frames:
        raise StageError(f"{Layout.SPLITS} needs val and {Layout.TEST_SPLIT} test: run split")
    # Replaced whole: plots and predictions of an earlier run (another task's) must not linger.
    plots_dir, predictions_dir = layout / Layout.PLOTS, layout / PREDICTIONS
    for folder in (plots_dir, predictions_dir):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    evaluators: dict[str, Callable[..., Evaluation]] = {
        "classify": _classifier,
        "clm": _language_model,
        "translate": _translator,
    }
    metrics, samples, predictions = evaluators[task](params, layout, frames, plots_dir)
    for split, frame in predictions.items():
        frame.to_parquet(predictions_dir / f"{split}.parquet", index=False)
    summary = {"dataset": params.dataset, "val_fingerprint": _fingerprint(frames["val"]), **metrics}
    write_json(layout / EVALUATION_METRICS, summary)
    write_json(layout / SAMPLES, {"dataset": params.dataset, "task": task, "samples": samples})
    return summary


def per_token_perplexity(sums: Any) -> float:
    """exp(summed NLL / summed count) of summed (nll, tokens) rows, or (nll, words) rows for
    word perplexity."""
    import numpy as np

    return float(np.exp(sums[0] / sums[1]))


def _fingerprint(frame: Any) -> str:
    """sha256 of a split's rows as the models read them: equal only for the same data in the
    same order, whatever profile or run produced it."""
    import hashlib

    columns = [column for column in ("text", "target", "label") if column in frame]
    digest = hashlib.sha256()
    for row in frame[columns].itertuples(index=False):
        digest.update(json.dumps(list(row), default=str).encode("utf-8"))
    return digest.hexdigest()


def _classifier(
    params: Params, layout: Layout, frames: dict[str, Any], plots_dir: Path
) -> Evaluation:
    """Through `classify_texts`, as served, beside TF-IDF + logistic regression and NBSVM, both
    with C chosen on val."""
    import numpy as np
    import pandas as pd

    from transformer_pl.calibration import apply_temperature, fit_temperature
    from transformer_pl.evaluation import (
        classification_report,
        measure_latency,
        split_scalars,
        write_classification_plots,
    )
    from transformer_pl.registry import classify_texts, load_classifier_bundle
    from transformer_pl.significance import compare_accuracy

    settings = params.evaluate
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
    if settings.calibrate:
        # Fitted on val, which training did not fit on; register serves the model with it.
        temperature = fit_temperature(labels["val"], raw["val"])
        probabilities = {split: apply_temperature(raw[split], temperature) for split in raw}
        uncalibrated = classification_report(
            labels["test"], raw["test"], label_names, settings.calibration_bins
        )
        metrics |= {
            "calibration_temperature": temperature,
            "test_log_loss_uncalibrated": uncalibrated["log_loss"],
            "test_ece_uncalibrated": uncalibrated["ece"],
        }
        test_predictions[probability_columns] = probabilities["test"]
    report = classification_report(
        labels["test"], probabilities["test"], label_names, settings.calibration_bins
    )
    model_scalars, _ = split_scalars(report)
    metrics |= {f"test_{key}": value for key, value in model_scalars.items()}
    val_report = classification_report(
        labels["val"], probabilities["val"], label_names, settings.calibration_bins
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
            labels["test"], fit["probabilities"]["test"], label_names, settings.calibration_bins
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
    write_classification_plots(
        report, labels["test"], probabilities["test"], label_names, plots_dir
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

    from transformer_pl.baseline import fit_nbsvm_baseline, fit_tfidf_baseline

    settings = params.evaluate
    train_labels = frames["train"]["label"].to_numpy(dtype=np.int64)
    tfidf = fit_tfidf_baseline(
        frames["train"]["text"].tolist(),
        train_labels,
        texts["val"],
        labels["val"],
        c_grid=settings.baseline_c_grid,
        max_features=settings.baseline_max_features,
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
        params.finetune.teacher,
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


def _language_model(
    params: Params, layout: Layout, frames: dict[str, Any], plots_dir: Path
) -> Evaluation:
    """Perplexity of every val/test token, each predicted once from up to a training block of
    context (`token_nll`); per token of our tokenizer and per word of the text, which compares
    across tokenizers (WikiText results are per word). Beside it the unigram baseline, and the
    paired interval of the difference over lines. Samples: each prompt continued greedily and
    sampled."""
    import numpy as np
    import pandas as pd

    from transformer_pl.baseline import unigram_token_nll
    from transformer_pl.evaluation import count_words, measure_latency, perplexity, word_perplexity
    from transformer_pl.inference import (
        generate_texts,
        line_stream,
        load_sequence_bundle,
        token_ids,
        token_nll,
    )
    from transformer_pl.significance import paired_bootstrap

    settings, decoding = params.evaluate, params.decode
    model, tokenizer, bundle = load_sequence_bundle(
        layout / Layout.FINETUNED, layout / Layout.TOKENIZER
    )
    vocab_size = tokenizer.get_vocab_size()
    train_ids = line_stream(tokenizer, frames["train"]["text"].tolist())[1:]
    # A model that learned nothing scores every token 1/vocab_size: the bound to beat.
    metrics: dict[str, Any] = {"uniform_perplexity": float(vocab_size)}
    predictions: dict[str, Any] = {}
    for split in SCORED_SPLITS:
        texts = frames[split]["text"].tolist()
        stream = line_stream(tokenizer, texts)
        started = time.perf_counter()
        model_nll = token_nll(model, stream, bundle.max_length, settings.batch_size)
        seconds = time.perf_counter() - started
        baseline_nll = unigram_token_nll(train_ids, stream[1:], vocab_size)
        words = count_words(texts)
        metrics |= {
            f"{split}_perplexity": perplexity(float(model_nll.sum()), len(model_nll)),
            f"{split}_word_perplexity": word_perplexity(float(model_nll.sum()), words),
            f"{split}_tokens": len(model_nll),
            f"{split}_words": words,
            f"{split}_score_seconds": round(seconds, 2),
            f"baseline_{split}_perplexity": perplexity(float(baseline_nll.sum()), len(model_nll)),
            f"baseline_{split}_word_perplexity": word_perplexity(float(baseline_nll.sum()), words),
        }
        # Lines are the resampled units (neighbouring tokens' losses are not independent), and
        # they stay the same units whatever the tokenizer, so two models' lines pair up.
        line_ends = np.cumsum([len(ids) + 1 for ids in token_ids(tokenizer, texts)])
        line_starts = np.concatenate([[0], line_ends[:-1]])
        lines = pd.DataFrame(
            {
                "model_nll": np.add.reduceat(model_nll, line_starts),
                "baseline_nll": np.add.reduceat(baseline_nll, line_starts),
                "tokens": line_ends - line_starts,
                "words": [len(text.split()) + 1 for text in texts],
            }
        )
        predictions[split] = lines
        difference = paired_bootstrap(
            lines[["model_nll", "tokens"]].to_numpy(),
            lines[["baseline_nll", "tokens"]].to_numpy(),
            statistic=per_token_perplexity,
            resamples=settings.bootstrap_resamples,
            seed=params.seed,
        )
        metrics |= difference.as_metrics(f"{split}_perplexity_minus_baseline")

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
    return metrics, samples, predictions


def _translator(
    params: Params, layout: Layout, frames: dict[str, Any], plots_dir: Path
) -> Evaluation:
    """Corpus BLEU and chrF of the val and test translations (the decode settings: beam search
    when beam_size > 1; greedy beside it on test), against copying the source untranslated, with
    the paired interval of the BLEU difference."""
    import pandas as pd

    from transformer_pl.evaluation import (
        bleu_and_chrf,
        bleu_from_statistics,
        bleu_statistics,
        measure_latency,
    )
    from transformer_pl.inference import load_sequence_bundle, translate_texts
    from transformer_pl.significance import paired_bootstrap

    settings, decoding = params.evaluate, params.decode
    model, tokenizer, bundle = load_sequence_bundle(
        layout / Layout.FINETUNED, layout / Layout.TOKENIZER
    )

    def translate(texts: list[str], beam_size: int) -> list[str]:
        chosen = decoding.model_copy(update={"beam_size": beam_size})
        return translate_texts(
            model, tokenizer, texts, chosen, bundle.max_length, settings.batch_size
        )

    metrics: dict[str, Any] = {}
    predictions: dict[str, Any] = {}
    translations: dict[str, list[str]] = {}
    for split in SCORED_SPLITS:
        sources = frames[split]["text"].tolist()
        references = frames[split]["target"].tolist()
        started = time.perf_counter()
        translations[split] = translate(sources, decoding.beam_size)
        seconds = time.perf_counter() - started
        scores = bleu_and_chrf(translations[split], references)
        baseline = bleu_and_chrf(sources, references)
        difference = paired_bootstrap(
            bleu_statistics(translations[split], references),
            bleu_statistics(sources, references),
            statistic=bleu_from_statistics,
            resamples=settings.bootstrap_resamples,
            seed=params.seed,
        )
        metrics |= {
            f"{split}_bleu": scores["bleu"],
            f"{split}_chrf": scores["chrf"],
            f"baseline_{split}_bleu": baseline["bleu"],
            f"baseline_{split}_chrf": baseline["chrf"],
            f"{split}_examples": len(sources),
            f"{split}_translate_seconds": round(seconds, 2),
            **difference.as_metrics(f"{split}_bleu_minus_baseline"),
            "bleu_signature": scores["bleu_signature"],
            "chrf_signature": scores["chrf_signature"],
        }
        predictions[split] = pd.DataFrame(
            {"source": sources, "reference": references, "translation": translations[split]}
        )
    sources, references = frames["test"]["text"].tolist(), frames["test"]["target"].tolist()
    greedy = translate(sources, 1) if decoding.beam_size > 1 else translations["test"]
    greedy_scores = bleu_and_chrf(greedy, references)
    metrics |= {
        "test_bleu_greedy": greedy_scores["bleu"],
        "test_chrf_greedy": greedy_scores["chrf"],
        **measure_latency(
            lambda source: translate([source], decoding.beam_size),
            sources[: settings.latency_examples],
        ),
    }
    samples = [
        {"source": source, "reference": reference, "translation": beam, "greedy": greedy_text}
        for source, reference, beam, greedy_text in list(
            zip(sources, references, translations["test"], greedy, strict=True)
        )[: settings.samples]
    ]
    return metrics, samples, predictions


def register(params: Params, layout: Layout) -> dict[str, Any]:
    """Register the finetuned model as a new version (alias `challenger`; `champion` when its
    validation metric beats the current champion's on the same validation data by the margin).
    Unchanged code, data and params register nothing. A registry that refuses for good stops
    the stage at once (no retries)."""
    from dataclasses import asdict

    from transformer_pl.registry import (
        RegistryError,
        bundle_task,
        register_model,
        registration_fingerprint,
    )
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
    try:
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
            evaluation_data=evaluation["val_fingerprint"],
            serving_limits=params.serve,
            evaluation_artifacts=[layout / VAL_PREDICTIONS],
            compare_with_champion=_champion_comparison(
                params, bundle_task(layout / Layout.FINETUNED), layout / VAL_PREDICTIONS
            ),
            greater_is_better=greater_is_better,
            # Not evaluate's outputs: the metrics hold latencies, so re-running evaluate alone
            # would otherwise register the same weights again.
            fingerprint=registration_fingerprint(
                git_commit(),
                {
                    path: md5
                    for path, md5 in data_hashes.items()
                    if path not in (EVALUATION_METRICS, VAL_PREDICTIONS)
                },
                params_subset(params, spec.params),
            ),
            # A classifier serves calibrated probabilities; generators decode as evaluate did.
            bundle_fields=(
                {"decoding": params.decode.model_dump()}
                if sequence_bundle
                else {"temperature": evaluation.get("calibration_temperature", 1.0)}
            ),
        )
    except RegistryError as error:
        raise StageError(str(error)) from error
    summary = {"dataset": params.dataset, **asdict(decision)}
    write_json(layout / REGISTRATION_REPORT, summary)
    return summary


def _champion_comparison(
    params: Params, task: str, val_predictions: Path
) -> Callable[[Any], dict[str, float] | None]:
    """For the registry: the paired difference of the new version's val headline metric from
    the champion's, both read from their per-example val predictions (None when the champion
    was registered without them). Called only for a champion scored on the same val data, so
    the rows pair up."""

    def compare(champion: Any) -> dict[str, float] | None:
        import tempfile

        import pandas as pd

        from transformer_pl.registry import evaluation_artifact

        with tempfile.TemporaryDirectory(prefix="tpl-champion-") as scratch:
            path = evaluation_artifact(champion, Path(VAL_PREDICTIONS).name, Path(scratch))
            theirs = None if path is None else pd.read_parquet(path)
        ours = pd.read_parquet(val_predictions)
        if theirs is None or len(theirs) != len(ours):
            return None
        return paired_val_difference(
            task, ours, theirs, params.evaluate.bootstrap_resamples, params.seed
        )

    return compare


def paired_val_difference(
    task: str, ours: Any, theirs: Any, resamples: int, seed: int
) -> dict[str, float]:
    """`val_<headline>_minus_champion` and its 95% interval, from two versions' val
    predictions files (`evaluate`) on the same rows."""
    from transformer_pl.evaluation import bleu_from_statistics, bleu_statistics
    from transformer_pl.significance import compare_accuracy, paired_bootstrap

    if task == "classify":
        return compare_accuracy(
            (ours["predicted_model"] == ours["label"]).to_numpy(),
            (theirs["predicted_model"] == theirs["label"]).to_numpy(),
            "val_accuracy_minus_champion",
            resamples,
            seed,
        )
    if task == "clm":
        columns = ["model_nll", "words"]  # per word: comparable across tokenizers
        difference = paired_bootstrap(
            ours[columns].to_numpy(),
            theirs[columns].to_numpy(),
            statistic=per_token_perplexity,
            resamples=resamples,
            seed=seed,
        )
        return difference.as_metrics("val_word_perplexity_minus_champion")
    difference = paired_bootstrap(
        bleu_statistics(ours["translation"].tolist(), ours["reference"].tolist()),
        bleu_statistics(theirs["translation"].tolist(), theirs["reference"].tolist()),
        statistic=bleu_from_statistics,
        resamples=resamples,
        seed=seed,
    )
    return difference.as_metrics("val_bleu_minus_champion")


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        name="evaluate",
        run=evaluate,
        deps=(
            Layout.FINETUNED,
            Layout.TOKENIZER,
            Layout.SPLITS,
            Layout.TEST_SPLIT,
            *code_deps(evaluate),
        ),
        params=("dataset", *PROFILE_KEYS, "seed", "evaluate", "decode", "finetune.teacher"),
        outs=(VAL_PREDICTIONS, TEST_PREDICTIONS),
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
            VAL_PREDICTIONS,
            *code_deps(register),
        ),
        params=(
            "dataset",
            "datasets",
            *PROFILE_KEYS,
            "seed",
            "decode",
            "register",
            "serve",
            "tracking",
        ),
        metrics=(REGISTRATION_REPORT,),
        registry=True,
    ),
)
STAGES_BY_NAME = {spec.name: spec for spec in STAGES}
