"""MLflow run structure and lineage on a throwaway SQLite store."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from transformer_pl import tracking
from transformer_pl.tracking import (
    MAX_PARAM_VALUE_LENGTH,
    PARENT_RUN_ENV,
    configure_tracking,
    flatten_params,
    lightning_logger,
    lineage_tags,
    pipeline_run,
    stage_run,
)

PARAMS = {"seed": 42, "model": {"d_model": 64, "n_layers": 2}, "optim": {"betas": [0.9, 0.98]}}
TAGS = {"dataset": "imdb", "profile": "tiny"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module: creating its schema costs seconds."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.delenv(PARENT_RUN_ENV, raising=False)
        yield root
    mlflow.set_tracking_uri(None)


@pytest.fixture
def experiment_id(store):
    experiment_id = configure_tracking("tracking-test")
    yield experiment_id
    while mlflow.active_run():  # a failed test must not leave a run open for the next
        mlflow.end_run()


def test_default_store_is_an_absolute_sqlite_file_in_the_project(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.tracking_uri()

    project = Path(__file__).resolve().parents[2]
    assert uri == f"sqlite:///{project / 'mlflow.db'}"


def test_configure_tracking_creates_the_experiment_once_with_local_artifacts(store, experiment_id):
    assert configure_tracking("tracking-test") == experiment_id
    # The UI opens it on its training runs (not MLflow 3's GenAI overview).
    tags = MlflowClient().get_experiment(experiment_id).tags
    assert tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    experiment = MlflowClient().get_experiment(experiment_id)
    assert experiment.artifact_location == (store / "mlartifacts" / "tracking-test").as_uri()
    assert mlflow.get_tracking_uri() == os.environ["MLFLOW_TRACKING_URI"]


def test_flatten_params():
    flat = flatten_params({**PARAMS, "empty": {}, "note": None, "long": "x" * 7000})

    assert flat["seed"] == "42"
    assert flat["model.d_model"] == "64"
    assert flat["optim.betas"] == "[0.9,0.98]"
    assert flat["empty"] == "{}"
    assert flat["note"] == "None"
    assert len(flat["long"]) == MAX_PARAM_VALUE_LENGTH
    assert flatten_params({"lr": 1e-3}, prefix="finetune.") == {"finetune.lr": "0.001"}


def test_stage_runs_nest_under_the_pipeline_run(experiment_id):
    client = MlflowClient()
    with pipeline_run("imdb-tiny", PARAMS, TAGS) as parent:
        assert os.environ[PARENT_RUN_ENV] == parent.info.run_id
        with stage_run("finetune", PARAMS["model"], {**TAGS, "stage": "finetune"}) as child:
            mlflow.log_metric("val_accuracy", 0.8)
    assert PARENT_RUN_ENV not in os.environ

    parent_run = client.get_run(parent.info.run_id)
    child_run = client.get_run(child.info.run_id)
    assert parent_run.info.run_name == "imdb-tiny"
    assert parent_run.data.params["model.n_layers"] == "2"
    assert child_run.info.run_name == "imdb-tiny-finetune"
    assert child_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child_run.data.tags["stage"] == "finetune"
    assert child_run.data.params == {"d_model": "64", "n_layers": "2"}
    assert child_run.data.metrics == {"val_accuracy": 0.8}
    assert child_run.info.status == parent_run.info.status == "FINISHED"


def test_a_stage_in_another_process_nests_through_the_environment(experiment_id, monkeypatch):
    with pipeline_run("imdb-tiny", PARAMS, TAGS) as parent:
        pass
    # What a stage launched by `dvc repro` sees: the variable inherited, no active run, and its
    # own call to configure_tracking (here naming another experiment).
    monkeypatch.setenv(PARENT_RUN_ENV, parent.info.run_id)
    configure_tracking("a-different-experiment")
    with stage_run("split", {"val_fraction": 0.1}, {"dataset": "imdb"}) as run:
        pass
    child = MlflowClient().get_run(run.info.run_id)

    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.info.experiment_id == experiment_id  # the parent's, not the process's own
    assert child.info.run_name == "imdb-split"


def test_pipeline_run_resumes_the_run_named_in_the_environment(experiment_id, monkeypatch):
    with pipeline_run("imdb-tiny", {"seed": 1}, TAGS) as first:
        pass
    monkeypatch.setenv(PARENT_RUN_ENV, first.info.run_id)
    with pipeline_run("imdb-tiny", {"seed": 2, "extra": 3}, {"retry": "1"}) as resumed:
        pass

    run = MlflowClient().get_run(first.info.run_id)
    assert resumed.info.run_id == first.info.run_id
    assert run.data.params == {"seed": "1", "extra": "3"}  # first values kept, new keys added
    assert run.data.tags["retry"] == "1"
    assert os.environ[PARENT_RUN_ENV] == first.info.run_id


def test_a_stage_without_a_parent_is_a_standalone_run(experiment_id):
    with stage_run("ingest", {}, TAGS) as run:
        pass
    stored = MlflowClient().get_run(run.info.run_id)

    assert "mlflow.parentRunId" not in stored.data.tags
    assert stored.info.experiment_id == experiment_id


def test_artifacts_land_in_the_store_folder(store, experiment_id, tmp_path):
    report = tmp_path / "report.json"
    report.write_text("{}")
    with stage_run("evaluate", {}, TAGS) as run:
        mlflow.log_artifact(str(report), artifact_path="reports")

    expected = store / "mlartifacts" / "tracking-test" / run.info.run_id / "artifacts/reports"
    assert (expected / "report.json").is_file()


def test_lightning_logger_writes_into_the_stage_run(experiment_id):
    with stage_run("pretrain", {"lr": 0.1}, TAGS) as run:
        logger = lightning_logger(run.info.run_id)
        logger.log_metrics({"train_loss": 2.5}, step=1)
        logger.log_metrics({"train_loss": 1.5}, step=2)
        logger.finalize("success")
        mlflow.log_metric("test_accuracy", 0.7)  # the stage keeps logging after training ends

    client = MlflowClient()
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(metric.step, metric.value) for metric in history] == [(1, 2.5), (2, 1.5)]
    assert client.get_run(run.info.run_id).data.metrics["test_accuracy"] == 0.7
    assert logger.run_id == run.info.run_id


def test_lineage_tags(monkeypatch):
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    tags = lineage_tags(
        dataset="imdb", profile="tiny", stage="split", dvc_hashes={"data/raw": "abc.dir"}
    )
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tracking.project_root(), capture_output=True, text=True
    )

    assert tags["git.commit"] == (head.stdout.strip() if head.returncode == 0 else "unknown")
    assert tags["git.dirty"] in {"true", "false", "unknown"}
    assert tags["dvc.data/raw"] == "abc.dir"
    assert (tags["dataset"], tags["profile"], tags["stage"]) == ("imdb", "tiny", "split")
    assert "prefect.flow_run_id" not in tags

    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "from-the-worker")
    with_flow = lineage_tags(dataset="imdb", profile="tiny", stage="split", dvc_hashes={})
    explicit = lineage_tags(
        dataset="imdb", profile="tiny", stage="split", dvc_hashes={}, prefect_flow_run_id="f-1"
    )
    assert with_flow["prefect.flow_run_id"] == "from-the-worker"
    assert explicit["prefect.flow_run_id"] == "f-1"


def test_runs_of_a_killed_process_are_closed_and_live_ones_left_running(experiment_id):
    gone = subprocess.Popen(["true"])  # once waited for, a pid that is surely gone
    gone.wait()
    client = MlflowClient()
    owner = tracking.owner_tags()
    killed = client.create_run(experiment_id, tags={**owner, tracking.PID_TAG: str(gone.pid)})
    alive = client.create_run(experiment_id, tags=owner)
    elsewhere = client.create_run(
        experiment_id, tags={**owner, tracking.PID_TAG: str(gone.pid), tracking.HOST_TAG: "other"}
    )

    assert tracking.close_orphaned_runs(experiment_id) == [killed.info.run_id]
    status = [client.get_run(run.info.run_id).info.status for run in (killed, alive, elsewhere)]
    assert status == ["KILLED", "RUNNING", "RUNNING"]
    for run in (alive, elsewhere):
        client.set_terminated(run.info.run_id)


def test_stage_and_pipeline_runs_name_the_process_that_owns_them(experiment_id):
    with pipeline_run("pipeline", PARAMS, TAGS) as parent, stage_run("split", {}, TAGS) as stage:
        pass
    for run in (parent, stage):
        tags = MlflowClient().get_run(run.info.run_id).data.tags
        assert tags[tracking.PID_TAG] == str(os.getpid())
        assert tags[tracking.WORKSPACE_TAG] == str(Path.cwd().resolve())
