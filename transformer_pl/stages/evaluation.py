"""The last stages, in run order: evaluate → register.

evaluate measures the finetuned model through the code the registered model serves with, beside
its task's baselines (tasks/<task>/evaluate.py), and shows what it does on a few inputs
(samples.json). register logs the bundle as the task's pyfunc model and registers a version; the
task's headline validation metric decides the champion.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformer_pl.params import Params
from transformer_pl.stages.base import StageError, StageSpec, write_json
from transformer_pl.stages.code_deps import code_deps
from transformer_pl.stages.layout import Layout

if TYPE_CHECKING:
    from transformer_pl.tasks.protocol import Task

EVALUATION_METRICS = f"{Layout.METRICS}/evaluate.json"
SAMPLES = f"{Layout.METRICS}/samples.json"
REGISTRATION_REPORT = f"{Layout.METRICS}/register.json"
# Per-example predictions of the model and its baselines, one Parquet file per scored split.
PREDICTIONS = f"{Layout.METRICS}/predictions"
VAL_PREDICTIONS, TEST_PREDICTIONS = f"{PREDICTIONS}/val.parquet", f"{PREDICTIONS}/test.parquet"
PROFILE_KEYS = ("profile", "profiles")


def evaluate(params: Params, layout: Layout) -> dict[str, Any]:
    """Val and test metrics of the model and its baselines (flat keys, the same in every run of a
    task, so the MLflow UI lines runs up), the paired difference from each baseline with its 95%
    interval, the per-example predictions behind them (Parquet, one file per split), samples of
    the model's outputs, and plots where the task has them.

    This is the one stage that reads the test split. Val figures are what later choices use
    (register promotes on them); test figures are reported, never used to choose."""
    from transformer_pl.bundle import bundle_task
    from transformer_pl.data import read_frames
    from transformer_pl.tasks.catalog import task_named

    task = task_named(bundle_task(layout / Layout.FINETUNED))
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
    metrics, samples, predictions = task.evaluate(params, layout, frames, plots_dir)
    for split, frame in predictions.items():
        frame.to_parquet(predictions_dir / f"{split}.parquet", index=False)
    summary = {"dataset": params.dataset, "val_fingerprint": _fingerprint(frames["val"]), **metrics}
    write_json(layout / EVALUATION_METRICS, summary)
    write_json(layout / SAMPLES, {"dataset": params.dataset, "task": task.name, "samples": samples})
    return summary


def _fingerprint(frame: Any) -> str:
    """sha256 of a split's rows as the models read them: equal only for the same data in the
    same order, whatever profile or run produced it."""
    import hashlib

    columns = [column for column in ("text", "target", "label") if column in frame]
    digest = hashlib.sha256()
    for row in frame[columns].itertuples(index=False):
        digest.update(json.dumps(list(row), default=str).encode("utf-8"))
    return digest.hexdigest()


def register(params: Params, layout: Layout) -> dict[str, Any]:
    """Register the finetuned model as a new version (alias `challenger`; `champion` when its
    validation metric beats the current champion's on the same validation data by the margin).
    Unchanged code, data and params register nothing. A registry that refuses for good stops
    the stage at once (no retries)."""
    from dataclasses import asdict

    from transformer_pl.bundle import bundle_task
    from transformer_pl.model_card import model_card
    from transformer_pl.promotion import registration_fingerprint
    from transformer_pl.registry import RegistryError, register_model
    from transformer_pl.stages.runner import params_subset, path_hashes
    from transformer_pl.tasks.catalog import task_named
    from transformer_pl.tracking import PARENT_RUN_ENV, lineage_tags

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
    task = task_named(bundle_task(layout / Layout.FINETUNED))
    lineage = lineage_tags(
        dataset=params.dataset, profile=params.profile, stage="register", dvc_hashes=data_hashes
    )
    card_lineage = {
        key: value for key, value in lineage.items() if key not in ("dataset", "profile", "stage")
    }
    if PARENT_RUN_ENV in os.environ:
        card_lineage["mlflow.parent_run_id"] = os.environ[PARENT_RUN_ENV]
    card = model_card(
        model_name=params.model_name,
        dataset=params.dataset,
        task=task.name,
        profile=params.profile,
        evaluation=evaluation,
        lineage=card_lineage,
    )
    try:
        decision = register_model(
            layout / Layout.FINETUNED,
            layout / Layout.TOKENIZER,
            model_name=params.model_name,
            metrics=metrics,
            tags={**lineage, **facts},
            description=card,
            metric_key=metric_key,
            champion_margin=params.register_.champion_margin,
            evaluation_data=evaluation["val_fingerprint"],
            serving_limits=params.serve,
            evaluation_artifacts=[layout / VAL_PREDICTIONS],
            compare_with_champion=_champion_comparison(params, task, layout / VAL_PREDICTIONS),
            greater_is_better=greater_is_better,
            # Not evaluate's outputs: the metrics hold latencies, so re-running evaluate alone
            # would otherwise register the same weights again.
            fingerprint=registration_fingerprint(
                lineage["git.commit"],
                {
                    path: md5
                    for path, md5 in data_hashes.items()
                    if path not in (EVALUATION_METRICS, VAL_PREDICTIONS)
                },
                params_subset(params, spec.params),
            ),
            # A classifier serves calibrated probabilities; generators decode as evaluate did.
            bundle_fields=task.registered_fields(params, evaluation),
        )
    except RegistryError as error:
        raise StageError(str(error)) from error
    summary = {"dataset": params.dataset, **asdict(decision)}
    write_json(layout / REGISTRATION_REPORT, summary)
    return summary


def _champion_comparison(
    params: Params, task: Task, val_predictions: Path
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
        return task.paired_val_difference(
            ours, theirs, params.evaluate.bootstrap_resamples, params.seed
        )

    return compare


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
        params=("dataset", *PROFILE_KEYS, "seed", "evaluate", "decode", "tasks"),
        outs=(VAL_PREDICTIONS, TEST_PREDICTIONS),
        metrics=(EVALUATION_METRICS,),
        plots=(Layout.PLOTS,),
        reports=(SAMPLES,),
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
