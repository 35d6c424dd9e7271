"""The data flow through real Prefect (ephemeral API server), DVC and the real stages, on a
temporary copy of the project: outputs and a clean `dvc status` after a run, a nothing-changed
re-run served from the cache, a params change re-running from the stage it touches, and a bad
input failing the flow at validation without retries."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from typer.testing import CliRunner

from pipelines import flows, workspace
from transformer_pl.cli import app
from transformer_pl.content_hash import dvc_md5
from transformer_pl.params import ConfigError, load_params
from transformer_pl.stages import STAGES, Layout, StageError

STATE_RECORDING_TIMEOUT_SECONDS = 60
PROJECT_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"

MakeWorkspace = Callable[[str], Path]  # fixtures of conftest.py
WriteSst2Slice = Callable[..., Path]
UpdateParams = Callable[..., dict[str, Any]]


@pytest.fixture(scope="module")
def project(make_workspace: MakeWorkspace, shared_data: Path) -> Iterator[Path]:
    """A workspace (tiny profile, SST-2 slice) with its own MLflow store, as working directory."""
    root = make_workspace("flows")
    with pytest.MonkeyPatch.context() as env:
        env.chdir(root)
        env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        env.setenv("TPL_DATA_DIR", str(shared_data))
        env.delenv("TPL_PROFILE", raising=False)
        env.delenv("TPL_PARAMS", raising=False)
        yield root


def _task_runs(state: State) -> dict[str, TaskRun]:
    """The flow run's task runs by task name (the stage name), once all are final.

    Task run states reach the API as events, recorded a moment after the flow returns.
    """
    flow_run_filter = FlowRunFilter(id={"any_": [state.state_details.flow_run_id]})
    deadline = time.monotonic() + STATE_RECORDING_TIMEOUT_SECONDS
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=flow_run_filter)
            if all(run.state and run.state.is_final() for run in runs):
                return {run.name.rsplit("-", 1)[0]: run for run in runs}
            assert time.monotonic() < deadline, f"task runs not final: {runs}"
            time.sleep(0.5)


def _state_names(state: State) -> dict[str, str]:
    return {name: run.state_name for name, run in _task_runs(state).items()}


def _stage_states(state: State) -> dict[str, str]:
    """The stages' task states, after checking that the flow's one `dvc commit` recorded exactly
    the stages that ran."""
    states = _state_names(state)
    ran = sorted(name for name, state_name in states.items() if state_name == "Completed")
    committed = states.pop(flows.DVC_COMMIT_TASK.name, None)
    assert committed == ("Completed" if ran else None), states
    return states


def _assert_dvc_clean(project: Path, stages: list[str]) -> None:
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", *stages],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    assert "up to date" in status.stdout, f"dvc status not clean:\n{status.stdout}"


@pytest.fixture(scope="module")
def first_run(project: Path) -> State:
    return flows.data_flow(profile="tiny", return_state=True)


def test_every_stage_belongs_to_exactly_one_flow() -> None:
    for name in STAGES:
        groups = [group for group, names in flows.STAGE_GROUPS.items() if name in names]
        assert len(groups) == 1, f"stage {name} is in groups {groups}"
    assert flows.group_stages("data") == [name for name in STAGES if name in flows.DATA_STAGES]


def test_a_flow_launches_one_machines_processes_only() -> None:
    params = load_params(PROJECT_PARAMS, "tiny")
    two_nodes = params.model_copy(
        update={"trainer": params.trainer.model_copy(update={"devices": 2, "num_nodes": 2})}
    )
    assert flows.training_processes(two_nodes) == 4
    with pytest.raises(ConfigError, match=r"trainer\.num_nodes is 2: a flow starts one machine"):
        flows.launch_stage(STAGES["pretrain"], two_nodes, PROJECT_PARAMS)


def test_record_profile_edits_only_the_value(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("seed: 1\nprofile: default  # chosen overlay\nprofiles:\n  tiny: {}\n")
    assert workspace.record_profile(path, "tiny")
    assert path.read_text() == "seed: 1\nprofile: tiny  # chosen overlay\nprofiles:\n  tiny: {}\n"
    assert not workspace.record_profile(path, "tiny")


def test_data_flow_writes_outputs_and_dvc_agrees(project: Path, first_run: State) -> None:
    assert first_run.is_completed(), first_run.message
    data_stages = flows.group_stages("data")
    assert _stage_states(first_run) == dict.fromkeys(data_stages, "Completed")
    for name in data_stages:
        for output in STAGES[name].outputs:
            assert (project / output).exists(), f"{name} did not write {output}"
    assert "profile: tiny" in (project / "params.yaml").read_text()
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(data_stages) <= set(lock["stages"])
    _assert_dvc_clean(project, flows.group_stages("data"))

    flow_run_filter = FlowRunFilter(id={"any_": [first_run.state_details.flow_run_id]})
    with get_client(sync_client=True) as client:
        artifacts = {
            artifact.key: artifact
            for artifact in client.read_artifacts(flow_run_filter=flow_run_filter)
        }
        run = client.read_flow_run(first_run.state_details.flow_run_id)
    dataset = load_params(project / "params.yaml", "tiny").dataset
    assert run.name == f"{dataset}-tiny-data"  # as the MLflow runs are named, plus the flow
    assert {f"dataset:{dataset}", "profile:tiny"} <= set(run.tags)
    assert any(tag.startswith("git:") for tag in run.tags)
    # A data flow makes no MLflow pipeline run: its summary, and a link to the Data Docs.
    assert set(artifacts) == {flows.SUMMARY_ARTIFACT_KEY, flows.DATA_DOCS_ARTIFACT_KEY}
    summary = artifacts[flows.SUMMARY_ARTIFACT_KEY].data
    assert "| validation | passed" in summary
    assert all(f"## {name}" in summary for name in data_stages)
    data_docs = artifacts[flows.DATA_DOCS_ARTIFACT_KEY].data
    assert data_docs.startswith("[Great Expectations Data Docs](file://")
    assert (project / "data/reports/validation/docs/index.html").as_uri() in data_docs


def test_rerun_with_nothing_changed_is_cached(project: Path, first_run: State) -> None:
    summaries = first_run.result().stages
    rerun = flows.data_flow(profile="tiny", return_state=True)
    assert set(_stage_states(rerun).values()) == {"Cached"}
    assert rerun.result().stages == summaries
    _assert_dvc_clean(project, flows.group_stages("data"))


def test_deleted_output_reruns_its_stage(project: Path, first_run: State) -> None:
    shutil.rmtree(project / STAGES["encode"].outs[0])
    rerun = flows.data_flow(profile="tiny", return_state=True)
    states = _stage_states(rerun)
    assert states.pop("encode") == "Completed"
    assert set(states.values()) == {"Cached"}
    _assert_dvc_clean(project, flows.group_stages("data"))


def test_changed_clean_param_reruns_from_clean_on(
    project: Path, first_run: State, update_params: UpdateParams
) -> None:
    def halve_tiny_rows(params: dict[str, Any]) -> dict[str, Any]:
        smaller = params["profiles"]["tiny"]["clean"]["max_rows_per_split"] // 2
        return {"profiles": {"tiny": {"clean": {"max_rows_per_split": smaller}}}}

    update_params(project, halve_tiny_rows)
    rerun = flows.data_flow(profile="tiny", return_state=True)
    states = _stage_states(rerun)
    assert states.pop("ingest") == "Cached"
    assert set(states.values()) == {"Completed"}
    _assert_dvc_clean(project, flows.group_stages("data"))


def test_unknown_labels_fail_the_flow_at_validation(
    project: Path,
    first_run: State,
    write_sst2_slice: WriteSst2Slice,
    update_params: UpdateParams,
) -> None:
    # A third of the rows carry an unknown label: clean quarantines them, and the quarantined
    # fraction breaks validation's limit.
    bad_source = write_sst2_slice(project.parent / "sst2-unknown-labels", unknown_label_every=3)
    update_params(project, {"datasets": {"sst2": {"path": str(bad_source)}}})
    failed = flows.data_flow(profile="tiny", return_state=True)

    assert failed.is_failed()
    with pytest.raises(StageError, match=r"(?s)data validation failed.*quarantine_fraction"):
        failed.result()
    runs = _task_runs(failed)
    assert runs["validate"].state_name == "Failed"
    assert runs["validate"].run_count == 1, "a refused input must not be retried"
    assert flows.STAGE_TASKS["validate"].retries > 0  # ... although transient failures are
    data_stages = flows.group_stages("data")
    downstream = data_stages[data_stages.index("validate") + 1 :]
    assert not set(downstream) & set(runs), f"stages after validate ran: {sorted(runs)}"
    # What did run (on the new source) is recorded in dvc.lock all the same.
    assert runs[flows.DVC_COMMIT_TASK.name].state_name == "Completed"
    _assert_dvc_clean(project, ["ingest", "clean"])


@pytest.mark.slow  # trains the tiny model
def test_tpl_run_tracks_the_pipeline_in_one_mlflow_run(
    make_workspace: MakeWorkspace, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_workspace("pipeline")
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setenv("TPL_DATA_DIR", str(shared_data))
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # the tiny run is short

    result = CliRunner().invoke(app, ["run", "--profile", "tiny"])

    assert result.exit_code == 0, result.output
    assert "validation: passed" in result.output
    assert "registry: " in result.output
    run_id = re.search(r"/runs/(\w+)", result.output)[1]
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["profile"] == "tiny"
    assert "prefect.flow_run_id" in run.data.tags
    tiny = load_params(root / "params.yaml", "tiny")
    assert run.data.params["clean.max_rows_per_split"] == str(tiny.clean.max_rows_per_split)
    stage_runs = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'"
    )
    assert {stage.data.tags["stage"] for stage in stage_runs} == set(STAGES)
    finetune = next(stage for stage in stage_runs if stage.data.tags["stage"] == "finetune")
    # Params once, as params.yaml's dotted keys (not again as Lightning's `optim/...`).
    assert "finetune.optim.learning_rate" in finetune.data.params
    assert not any("/" in key for key in finetune.data.params)
    # A training stage samples the machine; the others do not.
    assert "system/cpu_utilization_percentage" in finetune.data.metrics
    evaluate = next(stage for stage in stage_runs if stage.data.tags["stage"] == "evaluate")
    assert not any(key.startswith("system/") for key in evaluate.data.metrics)
    # Loss curves and the reliability diagram, as DVC plot data and as images in the run.
    curve = (root / "plots/finetune/train_loss.csv").read_text().splitlines()
    assert curve[0] == "step,loss" and curve[1].startswith("10,") and len(curve) > 3
    artifacts = {
        item.path for item in client.list_artifacts(finetune.info.run_id, "plots/finetune")
    }
    assert "plots/finetune/loss.png" in artifacts
    assert (root / "plots/evaluate/reliability_after.json").is_file()
    # The parent run carries the headline, so the collapsed runs table compares pipeline runs.
    evaluation = json.loads((root / "metrics" / "evaluate.json").read_text())
    for key in ("val_accuracy", "test_accuracy", "nbsvm_val_accuracy", "val_accuracy_minus_nbsvm"):
        assert run.data.metrics[key] == pytest.approx(evaluation[key]), key
    assert "test_predict_seconds" not in run.data.metrics  # a timing, not a figure
    assert run.data.tags["registry.version"] == "1" and run.data.tags["registry.promoted"] == "True"
    # One experiment per dataset; the parent run lists its splits and links its model.
    assert client.get_experiment(run.info.experiment_id).name == f"transformer-pl-{tiny.dataset}"
    inputs = {entry.dataset.name: entry for entry in run.inputs.dataset_inputs}
    splits = json.loads((root / "data/reports/split.json").read_text())["rows"]
    assert set(inputs) == {f"{tiny.dataset}/{split}" for split in splits} > set()
    test_input = inputs[f"{tiny.dataset}/test"]
    assert test_input.dataset.digest == dvc_md5(root / "data/processed/test/test.parquet")
    assert [tag.value for tag in test_input.tags if tag.key == "mlflow.data.context"] == ["test"]
    version = client.get_model_version(tiny.model_name, "1")
    assert [f"models:/{output.model_id}" for output in run.outputs.model_outputs] == [
        version.source
    ]
    # The version's description is its model card: figures beside the baselines, lineage.
    assert f"| `test_accuracy` | {evaluation['test_accuracy']:.4g} (baseline" in (
        version.description
    )
    assert f"| `mlflow.parent_run_id` | `{run_id}` |" in version.description
    _assert_dvc_clean(root, list(STAGES))
    # Run again now, nothing would change: `tpl run` answers from the records, without Prefect.
    unchanged = workspace.unchanged_pipeline("tiny", root / "params.yaml")
    assert unchanged is not None
    assert unchanged.mlflow_run_id == run_id
    assert unchanged.stages["evaluate"]["test_accuracy"] == pytest.approx(
        json.loads((root / "metrics" / "evaluate.json").read_text())["test_accuracy"]
    )
    assert workspace.unchanged_pipeline("default", root / "params.yaml") is None
    workspace.record_profile(root / "params.yaml", "tiny")

    # evaluate run again measures other latencies; the model is the same: nothing to register.
    evaluation_file = root / "metrics" / "evaluate.json"
    evaluation = json.loads(evaluation_file.read_text(encoding="utf-8"))
    evaluation["test_predict_seconds"] += 1.0
    evaluation_file.write_text(json.dumps(evaluation), encoding="utf-8")
    again = STAGES["register"].run(tiny, Layout(root))
    assert not again["registered"] and again["version"] == "1", again
    assert workspace.unchanged_pipeline("tiny", root / "params.yaml") is None  # evaluate changed
