"""MLflow setup, run structure and lineage tags.

One parent run per pipeline run, one nested run per stage. Stages launched in other processes (by
`dvc repro`, or a Prefect flow that shells out) find their parent through the environment variable
`TPL_PARENT_RUN_ID`, which `pipeline_run` sets for its duration, so every stage nests under the
run that launched it whichever runner did.

With `MLFLOW_TRACKING_URI` unset, the store is `mlflow.db` (SQLite) in the project root, with
artifacts under `mlartifacts/` beside it — absolute paths, so any working directory finds the
same store that `make ui` shows (`transformer_pl.tracking_store`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient

from transformer_pl.tracking_store import project_root, tracking_uri

if TYPE_CHECKING:
    from lightning.pytorch.loggers import MLFlowLogger

PARENT_RUN_ENV = "TPL_PARENT_RUN_ID"
MAX_PARAM_VALUE_LENGTH = 6000  # MLflow rejects longer parameter values
# MLflow 3's UI opens an experiment of this kind on its training runs, not on GenAI traces.
EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT = "mlflow.experimentKind", "custom_model_development"
# The process that owns a run, so a later run can tell a killed one from a live one.
HOST_TAG, PID_TAG, WORKSPACE_TAG = "tpl.host", "tpl.pid", "tpl.workspace"


# --- store ------------------------------------------------------------------------------------


def _local_artifact_location(uri: str, experiment_name: str) -> str | None:
    """`mlartifacts/<experiment>` beside a SQLite store; None lets a server decide."""
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///"))
    folder = re.sub(r"[^\w.\-]", "_", experiment_name)
    return (database.resolve().parent / "mlartifacts" / folder).as_uri()


def open_tracking_store() -> None:
    """Open the tracking store ahead of its first use: MLflow imports its store and, for SQLite,
    checks (on first use creates) the schema, a second or more that `tpl run` spends while
    Prefect's server boots."""
    MlflowClient(tracking_uri()).search_experiments(max_results=1)


def configure_tracking(experiment_name: str) -> str:
    """Point MLflow at the store, create or select the experiment, return its id.

    A new experiment on a SQLite store gets an explicit local artifact location; otherwise
    MLflow would write artifacts under the *current* directory's `mlruns/`.
    """
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        experiment_id = client.create_experiment(
            experiment_name, artifact_location=_local_artifact_location(uri, experiment_name)
        )
    else:
        experiment_id = experiment.experiment_id
    if experiment is None or experiment.tags.get(EXPERIMENT_KIND_TAG) is None:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT)
    mlflow.set_experiment(experiment_id=experiment_id)
    close_orphaned_runs(experiment_id)
    return experiment_id


def owner_tags() -> dict[str, str]:
    """This process as the owner of the runs it starts: host, pid and workspace."""
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(os.getpid()),
        WORKSPACE_TAG: str(project_root()),
    }


def close_orphaned_runs(experiment_id: str) -> list[str]:
    """Mark KILLED the runs of this host and workspace still RUNNING although the process that
    started them is gone (killed mid-stage: nothing ended its runs). A run whose process lives,
    or of another host or workspace, is left alone. Returns the ids closed."""
    owner = owner_tags()

    def quoted(value: str) -> str:
        return value.replace("'", "\\'")

    client = MlflowClient()
    orphans = [
        run.info.run_id
        for run in client.search_runs(
            [experiment_id],
            filter_string=(
                "attributes.status = 'RUNNING'"
                f" and tags.`{HOST_TAG}` = '{quoted(owner[HOST_TAG])}'"
                f" and tags.`{WORKSPACE_TAG}` = '{quoted(owner[WORKSPACE_TAG])}'"
            ),
        )
        if not _process_alive(int(run.data.tags.get(PID_TAG, "0")))
    ]
    for run_id in orphans:
        client.set_terminated(run_id, status="KILLED")
    return orphans


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


# --- params -----------------------------------------------------------------------------------


def _param_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        text = json.dumps(value, separators=(",", ":"), default=str)
    else:
        text = str(value)
    return text[:MAX_PARAM_VALUE_LENGTH]


def flatten_params(nested: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"optim": {"lr": 3e-4}} -> {"optim.lr": "0.0003"}; lists as compact JSON ("[0.9,0.98]")."""
    flat: dict[str, str] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = "{}" if isinstance(value, Mapping) else _param_value(value)
    return flat


# --- lineage ----------------------------------------------------------------------------------


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=project_root(), capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.strip()


def git_commit() -> str:
    """HEAD's commit id, or "unknown" outside a git checkout (or before the first commit)."""
    return _git("rev-parse", "HEAD") or "unknown"


def _prefect_flow_run_id() -> str | None:
    # Importing Prefect costs seconds; a process that never imported it runs no flow itself,
    # though it may have been launched by one (Prefect workers export PREFECT__FLOW_RUN_ID).
    if "prefect" not in sys.modules:
        return os.environ.get("PREFECT__FLOW_RUN_ID")
    from prefect.runtime import flow_run

    return flow_run.get_id()


def lineage_tags(
    *,
    dataset: str,
    profile: str,
    stage: str,
    dvc_hashes: Mapping[str, str],
    prefect_flow_run_id: str | None = None,
) -> dict[str, str]:
    """Tags that let a run be traced back to its code, data and orchestration.

    `git.commit` is "unknown" outside a git checkout (or before the first commit); `git.dirty`
    ignores untracked files. `dvc.<path>` holds each input's DVC md5 (see
    `transformer_pl.content_hash.dvc_dep_hashes`).
    """
    commit = git_commit()
    changes = _git("status", "--porcelain", "--untracked-files=no") if commit != "unknown" else None
    tags = {
        "dataset": dataset,
        "profile": profile,
        "stage": stage,
        "git.commit": commit,
        "git.dirty": "unknown" if changes is None else str(bool(changes)).lower(),
        **{f"dvc.{path}": md5 for path, md5 in dvc_hashes.items()},
    }
    flow_run_id = prefect_flow_run_id or _prefect_flow_run_id()
    if flow_run_id:
        tags["prefect.flow_run_id"] = str(flow_run_id)
    return tags


# --- runs -------------------------------------------------------------------------------------


@contextmanager
def pipeline_run(
    run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]
) -> Iterator[mlflow.ActiveRun]:
    """The parent run of one pipeline run; resumed instead when `TPL_PARENT_RUN_ID` is set.

    While open, `TPL_PARENT_RUN_ID` names it, so stages in this process and in child processes
    nest under it. Call `configure_tracking` first.
    """
    resume_id = os.environ.get(PARENT_RUN_ENV)
    run_tags = dict(tags) if resume_id else {**tags, **owner_tags()}
    with mlflow.start_run(run_id=resume_id, run_name=run_name, tags=run_tags) as run:
        # A resumed run keeps the params it was started with: MLflow forbids changing a value.
        flat = flatten_params(params)
        mlflow.log_params({key: flat[key] for key in flat.keys() - run.data.params.keys()})
        os.environ[PARENT_RUN_ENV] = run.info.run_id
        try:
            yield run
        finally:
            if resume_id is None:
                os.environ.pop(PARENT_RUN_ENV, None)


# An evaluation figure: a split's metric of the model or a baseline ("val_accuracy",
# "nbsvm_test_accuracy", "test_accuracy_minus_baseline_ci95_low"); a timing is not one.
SPLIT_FIGURE = re.compile(r"(?:^|_)(?:val|test)_(?!.*_(?:seconds|ms)$)")
DECISION_TAGS = ("version", "registered", "promoted", "champion_version", "reason")
LOGGED_MODEL_URI = re.compile(r"models:/(?P<model_id>m-[0-9a-f]+)")


def log_headline(stages: Mapping[str, Mapping[str, Any]]) -> None:
    """The evaluation's figures and the registry's decision on the active (parent) run, so the
    runs table compares pipeline runs without expanding them into their stages."""
    evaluation = stages.get("evaluate") or {}
    mlflow.log_metrics(
        {
            key: float(value)
            for key, value in evaluation.items()
            if isinstance(value, int | float)
            and not isinstance(value, bool)
            and SPLIT_FIGURE.search(key)
        }
    )
    decision = stages.get("register") or {}
    mlflow.set_tags(
        {f"registry.{key}": str(decision[key]) for key in DECISION_TAGS if key in decision}
    )
    if "model_name" in decision:
        _link_model_version(decision["model_name"], str(decision["version"]))


def _link_model_version(model_name: str, version: str) -> None:
    """The version's logged model as an output of the active run: the runs table's Models
    column links it (it was logged in the nested register run)."""
    from mlflow.entities import LoggedModelOutput

    client = MlflowClient()
    # A version made from a logged model has its URI, `models:/<model id>`, as source.
    source = client.get_model_version(model_name, version).source
    logged = LOGGED_MODEL_URI.fullmatch(source)
    run = mlflow.active_run()
    if logged is None or run is None:
        return
    model_id = logged["model_id"]
    linked = {output.model_id for output in client.get_run(run.info.run_id).outputs.model_outputs}
    if model_id not in linked:
        client.log_outputs(run.info.run_id, [LoggedModelOutput(model_id=model_id, step=0)])


def log_split_inputs(dataset: str, digests: Mapping[str, str], root: Path) -> None:
    """Each split the run used as an MLflow dataset input of the active run: named
    `<dataset>/<split>`, its DVC md5 as digest, its split as context (the runs table's Dataset
    column). `digests` is the split stage's record of them."""
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json
    from mlflow.data.meta_dataset import MetaDataset

    from transformer_pl.stages.layout import Layout

    layout = Layout(root.resolve())
    for split, digest in digests.items():
        uri = json.dumps({"uri": str(layout.split_file(split))})
        source = get_dataset_source_from_json(uri, source_type="local")
        mlflow.log_input(
            MetaDataset(source=source, name=f"{dataset}/{split}", digest=digest), context=split
        )


def _stage_run_name(stage_name: str, tags: Mapping[str, str]) -> str:
    return "-".join(part for part in (tags.get("dataset"), tags.get("profile"), stage_name) if part)


@contextmanager
def stage_run(
    stage_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    system_metrics: bool = False,
) -> Iterator[mlflow.ActiveRun]:
    """A run for one stage, named `<dataset>-<profile>-<stage>` from the tags; with
    `system_metrics`, sampling CPU, memory (and GPU) use while it lasts.

    Nested under `TPL_PARENT_RUN_ID` when set (in the parent's experiment), else under this
    process's active run, else standalone in the configured experiment.
    """
    parent_id = os.environ.get(PARENT_RUN_ENV)
    active = mlflow.active_run()
    if parent_id is None and active is not None:
        parent_id = active.info.run_id
    experiment_id = MlflowClient().get_run(parent_id).info.experiment_id if parent_id else None
    with mlflow.start_run(
        run_name=_stage_run_name(stage_name, tags),
        experiment_id=experiment_id,
        parent_run_id=parent_id,
        nested=active is not None,
        tags={**tags, **owner_tags()},
        log_system_metrics=system_metrics,
    ) as run:
        mlflow.log_params(flatten_params(params))
        yield run


def lightning_logger(run_id: str) -> MLFlowLogger:
    """A Lightning logger that writes into an existing run (the stage's) instead of a new one.

    `log_model=False`: checkpoints are not uploaded; the registry stage logs the model itself.
    Hyper-parameters are not logged: the stage's run holds them once, as dotted params.yaml keys
    (the module's would repeat them as `optim/learning_rate`). Lightning marks the run finished
    when training ends; logging into it afterwards still works.
    """
    from lightning.pytorch.loggers import MLFlowLogger

    class StageRunLogger(MLFlowLogger):
        def log_hyperparams(self, params: Any) -> None:
            del params  # already the stage run's params

    return StageRunLogger(run_id=run_id, tracking_uri=mlflow.get_tracking_uri(), log_model=False)
