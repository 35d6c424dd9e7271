"""MLflow Model Registry: registration of a bundle (transformer_pl/bundle.py) as its task's pyfunc
model, champion/challenger promotion, and loading a registered model.

Every registered model takes a DataFrame with a `text` column — texts to classify, prompts to
continue, sentences to translate — and answers one row per text (transformer_pl/serving.py; the
task's class in tasks/<task>/predict.py). Generation and translation take their decoding
settings (`DecodeParams` fields) as MLflow `params` per request.

Aliases replace stages: `challenger` is the latest registered version, `champion` the one that
serves. A new version takes `champion` only when it beats the current champion by more than a
margin on the chosen *validation* metric, measured on the same validation data; the first
version is champion at once. Registration is a recoverable transaction (`register_model`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)

from transformer_pl.bundle import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    bundle_file,
    bundle_task,
    read_bundle_config,
)
from transformer_pl.params import ServeParams
from transformer_pl.promotion import (
    DECISION_TAG_PREFIX,
    RegistrationDecision,
    recorded_decision,
    should_promote,
)
from transformer_pl.serving import BUNDLE_ARTIFACT, SERVING_FILE

CHAMPION = "champion"
CHALLENGER = "challenger"
FINGERPRINT_TAG = "fingerprint"
METRIC_TAG_PREFIX = "metric."
VALIDATION_PREFIX = "val_"  # the only metrics promotion may decide on
EVALUATION_DATA_TAG = (
    "evaluation_data"  # fingerprint of the validation data a version was scored on
)
PROMOTED_BY_HAND_TAG = "promoted_by_hand"  # `tpl promote`: a person moved champion here
STATE_TAG = "registration"  # pending from version creation until the aliases have moved
PENDING, COMPLETE = "pending", "complete"
# Names inside the logged model: its artifact folder in the run and its bundle artifact.
MODEL_ARTIFACT_NAME = "model"
EVALUATION_ARTIFACTS = "evaluation"  # the run folder of what a version was evaluated on
# The models-from-code entry file MLflow executes to build the model: no pickled objects.
_MODEL_CODE = '''\
"""MLflow entry point written by transformer_pl.registry: builds the pyfunc model."""

import mlflow

from {module} import {class_name}

mlflow.models.set_model({class_name}())
'''


# --- registration -----------------------------------------------------------------------------


class RegistryError(RuntimeError):
    """The registry refused a request for good (not a transient outage): retrying cannot help,
    and the message says what to do."""


# MLflow error codes of a registry that is down or busy: the request may succeed if retried.
TRANSIENT_ERROR_CODES = frozenset(
    {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}
)


def register_model(
    bundle_dir: str | Path,
    tokenizer_path: str | Path,
    *,
    model_name: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, Any],
    metric_key: str,
    champion_margin: float,
    fingerprint: str,
    evaluation_data: str,
    greater_is_better: bool = True,
    run_id: str | None = None,
    bundle_fields: Mapping[str, Any] | None = None,
    serving_limits: ServeParams | None = None,
    evaluation_artifacts: Sequence[Path] = (),
    compare_with_champion: Callable[[ModelVersion], dict[str, float] | None] | None = None,
    description: str | None = None,
) -> RegistrationDecision:
    """Log the bundle as a pyfunc model, register it as a new version of `model_name` and move
    the aliases: `challenger` always, `champion` when the new version beats the champion's
    `metric_key` (a validation metric) by more than `champion_margin` on the same validation
    data (`evaluation_data`, a fingerprint of it), or when there is no champion yet. A champion
    evaluated on other data is never compared: the new version stays challenger, and a person
    moves `champion` (`tpl promote`).

    A recoverable transaction: the version is created tagged `registration=pending`, the
    decision is written on it, the aliases move, and only then is it tagged `complete`. A rerun
    after a crash anywhere in between finds the pending version by its `fingerprint` and
    finishes it as decided (see `registration_fingerprint`); a complete version with the same
    fingerprint means nothing changed, and nothing is logged or registered.

    `bundle_fields` are added to the registered bundle's config.json (a sequence bundle's
    `decoding` defaults); `serving_limits` bound what one request to it may ask for.
    `evaluation_artifacts` (the val predictions) are logged beside the model, under
    `evaluation/`, so a later version can be paired with this one: `compare_with_champion`
    reads the champion's (when it was scored on the same val data) and returns the paired
    difference, which the decision records. `description` (a model card) is the version's
    description. The decision is logged to run `run_id`, else the
    active run, else a new run. A registry that refuses a request for good raises
    `RegistryError`.
    """
    if not metric_key.startswith(VALIDATION_PREFIX):
        raise ValueError(
            f"the registry decides on validation metrics only ({VALIDATION_PREFIX}*), got "
            f"'{metric_key}': the test split is reported, never used to choose"
        )
    if metric_key not in metrics:
        raise ValueError(f"metric '{metric_key}' is not among the metrics: {sorted(metrics)}")
    client = MlflowClient()
    with _permanent_errors_named(model_name), _registration_run(run_id):
        existing = _version_by_fingerprint(client, model_name, fingerprint)
        if existing is not None and existing.tags.get(STATE_TAG, COMPLETE) == COMPLETE:
            decision = _unchanged(client, existing, metric_key, evaluation_data)
        else:
            version = existing or _log_and_register(
                bundle_dir,
                tokenizer_path,
                model_name=model_name,
                metrics=metrics,
                bundle_fields=bundle_fields or {},
                serving_limits=serving_limits or ServeParams(),
                evaluation_artifacts=evaluation_artifacts,
                version_tags={
                    **{key: str(value) for key, value in tags.items()},
                    **{f"{METRIC_TAG_PREFIX}{key}": str(value) for key, value in metrics.items()},
                    FINGERPRINT_TAG: fingerprint,
                    EVALUATION_DATA_TAG: evaluation_data,
                    STATE_TAG: PENDING,
                },
            )
            if description is not None and version.description != description:
                client.update_model_version(model_name, version.version, description=description)
            decision = recorded_decision(version) or _decide(
                client,
                version,
                metric_key=metric_key,
                challenger_metric=float(metrics[metric_key]),
                evaluation_data=evaluation_data,
                margin=champion_margin,
                greater_is_better=greater_is_better,
                compare_with_champion=compare_with_champion,
            )
            _complete(client, decision)
        _log_decision(decision)
    return decision


def _decide(
    client: MlflowClient,
    version: ModelVersion,
    *,
    metric_key: str,
    challenger_metric: float,
    evaluation_data: str,
    margin: float,
    greater_is_better: bool,
    compare_with_champion: Callable[[ModelVersion], dict[str, float] | None] | None,
) -> RegistrationDecision:
    """Compare the new version with the champion and write the decision on the version, before
    any alias moves: a rerun after a crash then carries out this decision, not a new one."""
    champion = _version_by_alias(client, version.name, CHAMPION)
    champion_data = champion.tags.get(EVALUATION_DATA_TAG) if champion else None
    same_data = champion is not None and champion_data == evaluation_data
    champion_metric = _metric_of(champion, metric_key) if same_data else None
    comparison = compare_with_champion(champion) if same_data and compare_with_champion else None
    promoted, reason = should_promote(
        challenger_metric, champion, champion_metric, same_data, margin, greater_is_better
    )
    decision = RegistrationDecision(
        model_name=version.name,
        version=str(version.version),
        registered=True,
        promoted=promoted,
        champion_version=str(version.version) if promoted else str(champion.version),
        metric_key=metric_key,
        challenger_metric=challenger_metric,
        champion_metric=champion_metric,
        evaluation_data=evaluation_data,
        champion_evaluation_data=champion_data,
        reason=reason,
        champion_comparison=comparison,
    )
    for field, value in asdict(decision).items():
        client.set_model_version_tag(
            version.name, str(version.version), f"{DECISION_TAG_PREFIX}{field}", json.dumps(value)
        )
    return decision


def _complete(client: MlflowClient, decision: RegistrationDecision) -> None:
    """Move the aliases the decision calls for, then mark the version complete (last)."""
    client.set_registered_model_alias(decision.model_name, CHALLENGER, decision.version)
    if decision.promoted:
        client.set_registered_model_alias(decision.model_name, CHAMPION, decision.version)
    client.set_model_version_tag(decision.model_name, decision.version, STATE_TAG, COMPLETE)


def _unchanged(
    client: MlflowClient, existing: ModelVersion, metric_key: str, evaluation_data: str
) -> RegistrationDecision:
    champion = _version_by_alias(client, existing.name, CHAMPION)
    return RegistrationDecision(
        model_name=existing.name,
        version=str(existing.version),
        registered=False,
        promoted=False,
        champion_version=str(champion.version) if champion else None,
        metric_key=metric_key,
        challenger_metric=_metric_of(existing, metric_key),
        champion_metric=_metric_of(champion, metric_key),
        evaluation_data=evaluation_data,
        champion_evaluation_data=champion.tags.get(EVALUATION_DATA_TAG) if champion else None,
        reason=f"unchanged: version {existing.version} has the same fingerprint",
    )


def promote_by_hand(model_name: str, version: str) -> None:
    """Point `champion` at `version` by hand (the registry never promotes across different
    validation data on its own), recording who decided on the version."""
    client = MlflowClient()
    with _permanent_errors_named(model_name):
        client.get_model_version(model_name, version)  # fails clearly if there is no such version
        client.set_registered_model_alias(model_name, CHAMPION, version)
        client.set_model_version_tag(model_name, version, PROMOTED_BY_HAND_TAG, "true")


def _log_and_register(
    bundle_dir: str | Path,
    tokenizer_path: str | Path,
    *,
    model_name: str,
    metrics: Mapping[str, float],
    bundle_fields: Mapping[str, Any],
    serving_limits: ServeParams,
    evaluation_artifacts: Sequence[Path],
    version_tags: dict[str, str],
) -> ModelVersion:
    """Log the bundle as its task's pyfunc model to the active run and register it; returns the
    new version."""
    from transformer_pl.tasks.catalog import task_named

    pyfunc_model = task_named(bundle_task(bundle_dir)).pyfunc_model
    with tempfile.TemporaryDirectory(prefix="tpl-register-") as staging:
        # The registered bundle is self-contained: weights, config and tokenizer side by side.
        bundle = Path(staging) / "bundle"
        bundle.mkdir()
        shutil.copyfile(bundle_file(bundle_dir, WEIGHTS_FILE), bundle / WEIGHTS_FILE)
        config = {**read_bundle_config(bundle_dir), **bundle_fields}
        (bundle / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        shutil.copyfile(tokenizer_path, bundle / TOKENIZER_FILE)
        (bundle / SERVING_FILE).write_text(serving_limits.model_dump_json(indent=2) + "\n")
        model_code = Path(staging) / "tpl_pyfunc_model.py"
        model_code.write_text(
            _MODEL_CODE.format(module=pyfunc_model.__module__, class_name=pyfunc_model.__name__)
        )

        model_info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT_NAME,
            python_model=str(model_code),
            artifacts={BUNDLE_ARTIFACT: str(bundle)},
            code_paths=[str(Path(__file__).resolve().parent)],
            signature=pyfunc_model.signature(bundle),
            input_example=pyfunc_model.input_example(),
            pip_requirements=_pip_requirements(),
        )
    mlflow.log_metrics(dict(metrics), model_id=model_info.model_id)
    for artifact in evaluation_artifacts:
        mlflow.log_artifact(str(artifact), artifact_path=EVALUATION_ARTIFACTS)
    return mlflow.register_model(model_info.model_uri, model_name, tags=version_tags)


def _pip_requirements() -> list[str]:
    # Pinned explicitly: MLflow's inference would load the model in a subprocess to find them.
    # Local version labels (torch's "+cpu") are dropped: pip matches them against the base.
    return [
        f"{dist}=={installed_version(dist).split('+')[0]}"
        for dist in ("mlflow", "torch", "tokenizers", "safetensors", "pandas")
    ]


@contextmanager
def _registration_run(run_id: str | None) -> Iterator[None]:
    active = mlflow.active_run()
    if active is not None and run_id in (None, active.info.run_id):
        yield
        return
    with mlflow.start_run(run_id=run_id, nested=active is not None):
        yield


@contextmanager
def _permanent_errors_named(model_name: str) -> Iterator[None]:
    """An MLflow error that retrying cannot fix becomes a `RegistryError` saying so."""
    try:
        yield
    except MlflowException as error:
        if error.error_code in TRANSIENT_ERROR_CODES:
            raise
        raise RegistryError(
            f"the model registry refused a request for '{model_name}' ({error.error_code}): "
            f"{error.message}. Retrying will not help: check the tracking URI "
            f"({mlflow.get_tracking_uri()}), the model's versions and aliases, and permissions"
        ) from error


def _log_decision(decision: RegistrationDecision) -> None:
    compared = {"challenger": decision.challenger_metric, "champion": decision.champion_metric}
    mlflow.log_metrics(
        {
            f"{role}_{decision.metric_key}": value
            for role, value in compared.items()
            if value is not None
        }
        | (decision.champion_comparison or {})
    )
    mlflow.set_tags(
        {
            "registry.model_name": decision.model_name,
            "registry.version": decision.version,
            "registry.registered": str(decision.registered).lower(),
            "registry.promoted": str(decision.promoted).lower(),
            "registry.champion_version": decision.champion_version or "",
            "registry.reason": decision.reason,
        }
    )


def evaluation_artifact(version: ModelVersion, name: str, destination: Path) -> Path | None:
    """A file the version was logged with under `evaluation/` (see `register_model`), downloaded
    into `destination`; None when it has none (registered before these were kept)."""
    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=version.run_id,
                artifact_path=f"{EVALUATION_ARTIFACTS}/{name}",
                dst_path=str(destination),
            )
        )
    except (MlflowException, OSError):
        return None


def _version_by_alias(client: MlflowClient, model_name: str, alias: str) -> ModelVersion | None:
    """The version `alias` points to; None when the model or the alias does not exist. Read
    from the model's alias map: a lookup of a missing alias answers with an error code that
    differs between MLflow versions and backends."""
    try:
        model = client.get_registered_model(model_name)
    except MlflowException as error:
        if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    version = model.aliases.get(alias)
    return None if version is None else client.get_model_version(model_name, str(version))


def _version_by_fingerprint(
    client: MlflowClient, model_name: str, fingerprint: str
) -> ModelVersion | None:
    quoted_name = model_name.replace("'", "\\'")
    versions = client.search_model_versions(
        f"name = '{quoted_name}' and tags.{FINGERPRINT_TAG} = '{fingerprint}'"
    )
    return min(versions, key=lambda version: int(version.version), default=None)


def _metric_of(version: ModelVersion | None, metric_key: str) -> float | None:
    if version is None or f"{METRIC_TAG_PREFIX}{metric_key}" not in version.tags:
        return None
    return float(version.tags[f"{METRIC_TAG_PREFIX}{metric_key}"])


# --- loading for prediction -------------------------------------------------------------------


def load_champion(model_name: str, alias: str = CHAMPION) -> mlflow.pyfunc.PyFuncModel:
    """The pyfunc model that `alias` of `model_name` points to (`models:/<name>@<alias>`)."""
    return mlflow.pyfunc.load_model(f"models:/{model_name}@{alias}")


def predict_frame(model_name: str, frame: pd.DataFrame, alias: str = CHAMPION) -> pd.DataFrame:
    """`frame` (a `text` column; QA: `question` and `context`) through the registered model
    behind `alias`: labels and probabilities, entities, answers, continuations or translations,
    a row per input row."""
    return load_champion(model_name, alias).predict(frame)
