"""The learning stages, in run order: pretrain → finetune → evaluate → register.

Each is `stage(params, layout) -> summary` like the data stages. Training stages keep their
working checkpoints under `.checkpoints/<stage>-<input key>/`: re-running an interrupted stage
with the same inputs continues from its last checkpoint (same global step); any change of data or
params gives a new key, so a stale checkpoint is never resumed. On success the scratch folder is
removed and the final checkpoint is kept in the stage's output.

Under torchrun/SLURM every rank trains; only global rank 0 writes outputs and reports.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from transformer_pl.config import Params
from transformer_pl.stages.base import StageError, StageSpec
from transformer_pl.stages.layout import Layout
from transformer_pl.stages.runner import is_global_zero, stage_input_key

CHECKPOINTS_ROOT = Path(".checkpoints")
FINAL_CHECKPOINT = "checkpoint.ckpt"
SKIPPED_MARKER = "skipped.json"
TRAINING_METRICS = "metrics/train"
EVALUATION_METRICS = "metrics/evaluate.json"
REGISTRATION_REPORT = "metrics/register.json"
CONFUSION_PLOT_DATA = f"{Layout.PLOTS}/confusion.csv"
ROC_PLOT_DATA = f"{Layout.PLOTS}/roc.json"
PR_PLOT_DATA = f"{Layout.PLOTS}/precision_recall.json"
CONFUSION_PNG = f"{Layout.PLOTS}/confusion_matrix.png"

# The profile overlay can change any section, so DVC must see the profile choice and overlays.
PROFILE_KEYS = ("profile", "profiles")
MODEL_CODE = (
    "transformer_pl/model",
    "transformer_pl/tasks",
    "transformer_pl/training.py",
    "transformer_pl/data/datamodules.py",
    "transformer_pl/stages/training.py",
)


def _model_config(params: Params, vocab_size: int) -> Any:
    from transformer_pl.model import TransformerConfig

    return TransformerConfig(vocab_size=vocab_size, **params.model.model_dump())


def _encoded_meta(layout: Layout) -> dict[str, Any]:
    from transformer_pl.data.datamodules import read_meta

    meta = read_meta(layout / Layout.ENCODED)
    if meta.get("task") is None:
        raise StageError(f"{Layout.ENCODED}/meta.json names no task: run encode first")
    return meta


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")


def _scalar_metrics(trainer: Any, prefix: str) -> dict[str, float]:
    return {
        key: round(float(value), 6)
        for key, value in trainer.callback_metrics.items()
        if key.startswith(prefix)
    }


def _fit(
    stage: str,
    params: Params,
    layout: Layout,
    task: Any,
    datamodule: Any,
    trainer_options: dict[str, Any],
    out_dir: Path,
    export_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit (or resume) `task`, export the best weights into `out_dir`; returns the summary."""
    import mlflow

    from transformer_pl.tracking import lightning_logger
    from transformer_pl.training import build_trainer, fit_or_resume

    scratch = CHECKPOINTS_ROOT / stage_input_key(STAGES_BY_NAME[stage], params, layout.root)
    active = mlflow.active_run() if is_global_zero() else None
    logger = lightning_logger(active.info.run_id) if active else None
    trainer = build_trainer(
        params.trainer, output_dir=scratch, seed=params.seed, logger=logger, **trainer_options
    )
    started = time.perf_counter()
    resumed_from = fit_or_resume(trainer, task(), datamodule, scratch / "checkpoints")
    wall_seconds = time.perf_counter() - started
    best = (
        trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path
    )
    summary = {
        "dataset": params.dataset,
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "resumed": resumed_from is not None,
        "wall_seconds": round(wall_seconds, 1),
        "best_checkpoint_score": (
            None
            if trainer.checkpoint_callback.best_model_score is None
            else round(float(trainer.checkpoint_callback.best_model_score), 6)
        ),
        **_scalar_metrics(trainer, "val/"),
        **_scalar_metrics(trainer, "train/tokens"),
    }
    if trainer.is_global_zero:
        if out_dir.exists():
            shutil.rmtree(out_dir)
        best_task = type(trainer.lightning_module).load_from_checkpoint(best, map_location="cpu")
        best_task.export_weights(out_dir, **(export_metadata or {}))
        shutil.copyfile(best, out_dir / FINAL_CHECKPOINT)
        _write_json(layout / f"{TRAINING_METRICS}/{stage}.json", summary)
        shutil.rmtree(scratch, ignore_errors=True)
    return summary


def pretrain(params: Params, layout: Layout) -> dict[str, Any]:
    """Self-supervised pretraining: masked-LM (encoder) for classification datasets."""
    from transformer_pl.data.datamodules import MaskedLMDataModule
    from transformer_pl.tasks import MaskedLMTask

    out_dir = layout / Layout.PRETRAINED
    settings = params.pretrain
    meta = _encoded_meta(layout)
    if not settings.enabled or not params.finetune.from_pretrained:
        # Nothing downstream reads the weights: record why instead of training for nothing.
        if out_dir.exists():
            shutil.rmtree(out_dir)
        reason = "pretrain.enabled is false" if not settings.enabled else "finetune from scratch"
        summary = {"dataset": params.dataset, "skipped": True, "reason": reason}
        _write_json(out_dir / SKIPPED_MARKER, summary)
        _write_json(layout / f"{TRAINING_METRICS}/pretrain.json", summary)
        return summary
    if meta["task"] != "classify" or settings.objective != "mlm":
        raise StageError(
            f"pretrain: objective '{settings.objective}' on a '{meta['task']}' dataset is not "
            "supported yet (masked-LM pretraining of classification datasets is)"
        )
    config = _model_config(params, meta["vocab_size"])
    datamodule = MaskedLMDataModule(
        layout / Layout.ENCODED,
        settings.batch_size,
        params.seed,
        mask_probability=settings.mask_probability,
        num_workers=params.trainer.num_workers,
    )
    return _fit(
        "pretrain",
        params,
        layout,
        lambda: MaskedLMTask(config, optim=settings.optim),
        datamodule,
        {
            "max_steps": settings.max_steps,
            "val_check_interval": settings.val_check_interval,
            "limit_val_batches": settings.limit_val_batches,
            "gradient_clip": settings.optim.gradient_clip,
            "accumulate_grad_batches": settings.optim.accumulate_grad_batches,
        },
        out_dir,
    )


def finetune(params: Params, layout: Layout) -> dict[str, Any]:
    """The classifier, from the pretrained encoder (or from scratch, per params)."""
    from transformer_pl.data.datamodules import ClassificationDataModule
    from transformer_pl.tasks import ClassifierTask

    settings = params.finetune
    meta = _encoded_meta(layout)
    if meta["task"] != "classify":
        raise StageError(f"finetune: task '{meta['task']}' is not supported yet")
    label_names = params.dataset_spec.label_names or []
    config = _model_config(params, meta["vocab_size"])
    pretrained = layout / Layout.PRETRAINED / "model.safetensors"
    loaded: dict[str, list[str]] = {}

    def build_task() -> Any:
        task = ClassifierTask(
            config,
            num_labels=len(label_names),
            label_names=label_names,
            pooling=settings.pooling,
            classifier_dropout=settings.classifier_dropout,
            label_smoothing=settings.label_smoothing,
            freeze_encoder=settings.freeze_encoder,
            layer_lr_decay=settings.layer_lr_decay,
            optim=settings.optim,
        )
        if settings.from_pretrained:
            if not pretrained.is_file():
                raise StageError(
                    f"{pretrained} not found: run pretrain (or from_pretrained: false)"
                )
            keys = task.load_pretrained_encoder(pretrained)
            loaded.update(missing=list(keys.missing), unexpected=list(keys.unexpected))
        return task

    datamodule = ClassificationDataModule(
        layout / Layout.ENCODED,
        settings.batch_size,
        params.seed,
        num_workers=params.trainer.num_workers,
    )
    summary = _fit(
        "finetune",
        params,
        layout,
        build_task,
        datamodule,
        {
            "max_epochs": settings.max_epochs,
            "max_steps": settings.max_steps,
            "gradient_clip": settings.optim.gradient_clip,
            "accumulate_grad_batches": settings.optim.accumulate_grad_batches,
            "monitor": "val/accuracy",
            "mode": "max",
            "early_stopping_patience": settings.early_stopping_patience,
        },
        layout / Layout.FINETUNED,
        export_metadata={"max_length": params.encode.max_length},
    )
    summary["from_pretrained"] = settings.from_pretrained
    summary["pretrained_missing_keys"] = len(loaded.get("missing", []))
    summary["pretrained_unexpected_keys"] = len(loaded.get("unexpected", []))
    return summary


def evaluate(params: Params, layout: Layout) -> dict[str, Any]:
    """Test-set metrics of the finetuned model through the same code path the registered model
    serves (`classify_texts`), beside a TF-IDF + logistic-regression baseline on the same splits.
    """
    import numpy as np

    from transformer_pl.baseline import fit_tfidf_baseline
    from transformer_pl.data import read_frames
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
    frames = read_frames(layout / Layout.SPLITS)
    if "test" not in frames:
        raise StageError(f"{Layout.SPLITS} has no test split: run split")
    test_texts = frames["test"]["text"].tolist()
    y_true = frames["test"]["label"].to_numpy(dtype=np.int64)
    label_names = list(bundle.label_names)
    probability_columns = [f"probability_{name}" for name in label_names]

    started = time.perf_counter()
    predictions = classify_texts(model, tokenizer, bundle, test_texts, settings.batch_size)
    predict_seconds = time.perf_counter() - started
    report = classification_report(
        y_true, predictions[probability_columns].to_numpy(), label_names, settings.calibration_bins
    )
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
    plots_dir = layout / Layout.PLOTS
    write_classification_plots(
        report, y_true, predictions[probability_columns].to_numpy(), label_names, plots_dir
    )
    # Flat keys, the same in every run, so the MLflow UI lines runs (and the baseline) up.
    metrics = {
        **{f"test_{key}": value for key, value in model_scalars.items()},
        **{f"baseline_test_{key}": value for key, value in baseline_scalars.items()},
        "baseline_c": baseline.chosen_c,
        "baseline_val_accuracy": baseline.val_accuracy,
        "baseline_fit_seconds": round(baseline.fit_seconds, 2),
        "accuracy_minus_baseline": model_scalars["accuracy"] - baseline_scalars["accuracy"],
        "test_predict_seconds": round(predict_seconds, 2),
        **latency,
    }
    _write_json(layout / EVALUATION_METRICS, {"dataset": params.dataset, **metrics})
    return {"dataset": params.dataset, **metrics}


def register(params: Params, layout: Layout) -> dict[str, Any]:
    """Register the finetuned model as a new version (alias `challenger`; `champion` when it
    beats the current champion by the margin). Unchanged code, data and params register nothing.
    """
    from dataclasses import asdict

    from transformer_pl.registry import register_model, registration_fingerprint
    from transformer_pl.stages.runner import params_subset, path_hashes
    from transformer_pl.tracking import git_commit, lineage_tags

    spec = STAGES_BY_NAME["register"]
    evaluation = json.loads((layout / EVALUATION_METRICS).read_text(encoding="utf-8"))
    metrics = {
        key: value
        for key, value in evaluation.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    data_hashes = {path: md5 for path, md5 in path_hashes(spec.deps, layout.root).items() if md5}
    settings = params.register_
    if settings.metric not in metrics:
        raise StageError(
            f"register.metric '{settings.metric}' is not in {EVALUATION_METRICS}; "
            f"available: {', '.join(sorted(metrics))}"
        )
    decision = register_model(
        layout / Layout.FINETUNED,
        layout / Layout.TOKENIZER,
        model_name=params.model_name,
        metrics=metrics,
        tags=lineage_tags(
            dataset=params.dataset, profile=params.profile, stage="register", dvc_hashes=data_hashes
        ),
        metric_key=settings.metric,
        champion_margin=settings.champion_margin,
        greater_is_better=settings.greater_is_better,
        fingerprint=registration_fingerprint(
            git_commit(), data_hashes, params_subset(params, spec.params)
        ),
    )
    summary = {"dataset": params.dataset, **asdict(decision)}
    _write_json(layout / REGISTRATION_REPORT, summary)
    return summary


def _code(*paths: str) -> tuple[str, ...]:
    return (*paths, "transformer_pl/stages/training.py")


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        name="pretrain",
        run=pretrain,
        deps=(Layout.ENCODED, *MODEL_CODE),
        params=(
            "dataset",
            *PROFILE_KEYS,
            "seed",
            "model",
            "trainer",
            "pretrain",
            "finetune.from_pretrained",
        ),
        outs=(Layout.PRETRAINED,),
        metrics=(f"{TRAINING_METRICS}/pretrain.json",),
    ),
    StageSpec(
        name="finetune",
        run=finetune,
        deps=(Layout.ENCODED, Layout.PRETRAINED, *MODEL_CODE),
        params=(
            "dataset",
            "datasets",
            *PROFILE_KEYS,
            "seed",
            "model",
            "trainer",
            "finetune",
            "encode.max_length",
        ),
        outs=(Layout.FINETUNED,),
        metrics=(f"{TRAINING_METRICS}/finetune.json",),
    ),
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
            ),
        ),
        params=("dataset", *PROFILE_KEYS, "seed", "evaluate"),
        metrics=(EVALUATION_METRICS,),
        plots=(CONFUSION_PLOT_DATA, ROC_PLOT_DATA, PR_PLOT_DATA, CONFUSION_PNG),
    ),
    StageSpec(
        name="register",
        run=register,
        deps=(
            Layout.FINETUNED,
            Layout.TOKENIZER,
            EVALUATION_METRICS,
            *_code("transformer_pl/registry.py"),
        ),
        params=("dataset", *PROFILE_KEYS, "seed", "register", "tracking"),
        metrics=(REGISTRATION_REPORT,),
    ),
)
STAGES_BY_NAME = {spec.name: spec for spec in STAGES}
