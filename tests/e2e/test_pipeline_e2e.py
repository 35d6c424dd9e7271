"""The pipeline as a user runs it, on the real IMDB data with the `tiny` profile (what CI's
end-to-end run uses): `tpl run` trains a model that holds its measured accuracy, registers it
with its lineage and leaves DVC clean; `tpl predict` serves it; a second `tpl run` is all
cache; `dvc repro` in a fresh checkout reproduces the same test metrics; a corrupted source
stops at validation.

Every command is a process of its own in a throwaway workspace (see conftest.py), so this checks
the installed `tpl` entry point, Prefect's temporary server, MLflow's store and DVC together.
One `tpl run` is shared by the module's tests (it takes minutes on a 2-core CPU).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import Run

from transformer_pl.params import load_params
from transformer_pl.stages import STAGES

MakeE2eWorkspace = Callable[..., Any]  # conftest.py: e2e_workspace(name, dataset_path=None)
PipelineRun = Any  # conftest.PipelineRun

PROFILE = "tiny"
DATASET = "imdb"
EVALUATION_METRICS = "metrics/evaluate.json"
# Regression bounds, not chance: a few points below the measured value of the seeded tiny run
# (see bench/RESULTS.md). An accuracy on 800 test reviews has a standard error of about 1.5
# points, and training differs between CPUs (fp32 or bf16): a few points down, a regression
# fails and another machine does not.
MIN_TEST_ACCURACY = 0.75
MIN_BASELINE_TEST_ACCURACY = 0.82
# Test-set metrics that depend only on params, data and seed (timings and latencies do not).
TIMING = re.compile(r"seconds|latency|_ms$|per_second")
# Stage outputs free of timestamps and absolute paths (unlike Data Docs, checkpoints and
# training summaries), so byte-identical when a run is reproduced.
DETERMINISTIC_DATA = (
    "data/raw",
    "data/interim/clean",
    "data/quarantine",
    "data/processed/splits",
    "data/processed/test",
    "data/processed/tokenizer.json",
    "data/processed/encoded",
)
MODEL_WEIGHTS = ("models/pretrain/model.safetensors", "models/finetune/model.safetensors")
COMMAND_TIMEOUT_SECONDS = 1200


def _metrics(root: Path) -> dict[str, Any]:
    return json.loads((root / EVALUATION_METRICS).read_text(encoding="utf-8"))


def _test_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        key: value
        for key, value in metrics.items()
        if key.startswith(("test_", "baseline_test_")) and not TIMING.search(key)
    }


def _dvc_status(workspace: Any) -> dict[str, Any]:
    result = workspace.dvc("status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _locked_dep_hashes(root: Path, stage: str) -> dict[str, str]:
    lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8"))
    return {dep["path"]: dep["md5"] for dep in lock["stages"][stage]["deps"]}


def _dvc_tags(tags: dict[str, str]) -> dict[str, str]:
    return {
        key.removeprefix("dvc."): value for key, value in tags.items() if key.startswith("dvc.")
    }


def _stage_runs(client: MlflowClient, parent: Run) -> list[Run]:
    return client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )


def _model_name(root: Path) -> str:
    return load_params(root / "params.yaml", PROFILE).model_name


# --- one full run, shared ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def first_run(e2e_workspace: MakeE2eWorkspace) -> PipelineRun:
    return e2e_workspace("prefect-run").run_pipeline(PROFILE)


@pytest.fixture(scope="module")
def client(first_run: PipelineRun) -> MlflowClient:
    return MlflowClient(first_run.workspace.tracking_uri)


@dataclass(frozen=True)
class Reproduction:
    workspace: Any  # conftest.Workspace
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module", autouse=True)
def reproduction(
    e2e_workspace: MakeE2eWorkspace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reproduction]:
    """`dvc repro` of the tiny profile in a fresh workspace, started before the module's first
    test and left running in the background at the lowest CPU priority: it takes the cycles the
    Prefect run and the other tests leave idle (process start-up, Prefect's server, MLflow and
    DVC are mostly single-threaded) without slowing them much; the test comparing the two
    runs waits for it."""
    workspace = e2e_workspace("dvc-repro", profile=PROFILE)
    log = tmp_path_factory.mktemp("logs") / "dvc-repro.log"
    process = workspace.start("nice", "-n", "19", sys.executable, "-m", "dvc", "repro", log=log)
    try:
        yield Reproduction(workspace, process, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)


def test_tiny_run_holds_its_accuracy_beside_the_baseline(first_run: PipelineRun) -> None:
    metrics = _metrics(first_run.workspace.root)
    assert metrics["dataset"] == DATASET
    assert metrics["test_accuracy"] >= MIN_TEST_ACCURACY, metrics
    assert MIN_BASELINE_TEST_ACCURACY <= metrics["baseline_test_accuracy"] <= 1.0, metrics
    # What the user reads at the end of the run: the same numbers, side by side.
    assert re.search(
        r"(?m)^test_accuracy: \S+ \(baseline \S+, nbsvm \S+\); − baseline \S+ \[\S+, \S+\]",
        first_run.stdout,
    )
    assert "validation: passed" in first_run.stdout
    # evaluate fitted a temperature on val and reports test calibration with and without it.
    assert metrics["calibration_temperature"] > 0
    assert 0 <= metrics["test_ece_uncalibrated"] <= 1 and metrics["test_log_loss_uncalibrated"] > 0


def test_tiny_run_registers_champion_with_lineage(
    first_run: PipelineRun, client: MlflowClient
) -> None:
    root = first_run.workspace.root
    name = _model_name(root)
    (version,) = client.search_model_versions(f"name = '{name}'")
    # The first version is both the latest (challenger) and the serving one (champion).
    assert client.get_model_version_by_alias(name, "champion").version == version.version
    assert client.get_model_version_by_alias(name, "challenger").version == version.version

    tags = version.tags
    assert tags["git.commit"] == first_run.workspace.git("rev-parse", "HEAD")
    assert tags["dataset"] == DATASET
    assert tags["profile"] == PROFILE
    # The data and model the version was made from, as dvc.lock records them.
    assert _dvc_tags(tags) == _locked_dep_hashes(root, "register")
    assert float(tags["metric.test_accuracy"]) == _metrics(root)["test_accuracy"]
    (register_run,) = (
        run
        for run in _stage_runs(client, client.get_run(first_run.mlflow_run_id))
        if run.data.tags["stage"] == "register"
    )
    assert tags["prefect.flow_run_id"] == register_run.data.tags["prefect.flow_run_id"]
    assert version.run_id == register_run.info.run_id
    # Registered as a completed transaction, promoted on val, with the val predictions a later
    # version is paired with.
    assert tags["registration"] == "complete"
    assert json.loads(tags["decision.metric_key"]) == "val_accuracy"
    assert tags["evaluation_data"] == _metrics(root)["val_fingerprint"]
    logged = [artifact.path for artifact in client.list_artifacts(version.run_id, "evaluation")]
    assert logged == ["evaluation/val.parquet"]
    # The served model carries the temperature evaluate fitted.
    logged_model = client.get_logged_model(version.source.removeprefix("models:/"))
    artifacts = urlparse(logged_model.artifact_location).path
    (config_file,) = Path(artifacts).rglob("bundle/config.json")
    served = json.loads(config_file.read_text(encoding="utf-8"))
    assert served["temperature"] == _metrics(root)["calibration_temperature"]


def test_tiny_run_tracks_one_parent_run_with_a_nested_run_per_stage(
    first_run: PipelineRun, client: MlflowClient
) -> None:
    root = first_run.workspace.root
    parent = client.get_run(first_run.mlflow_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["profile"] == PROFILE
    stage_runs = {run.data.tags["stage"]: run for run in _stage_runs(client, parent)}
    assert len(stage_runs) == len(STAGES) == 10
    assert set(stage_runs) == set(STAGES)
    commit = first_run.workspace.git("rev-parse", "HEAD")
    for name, run in stage_runs.items():
        tags = run.data.tags
        assert run.info.status == "FINISHED", name
        assert (tags["dataset"], tags["profile"], tags["git.commit"]) == (DATASET, PROFILE, commit)
        assert tags["prefect.flow_run_id"], name
        # Each stage run names the exact inputs it read: every declared dep, hashed as DVC does.
        assert _dvc_tags(tags) == _locked_dep_hashes(root, name), name


def test_dvc_status_is_clean_after_tiny_run(first_run: PipelineRun) -> None:
    assert "profile: tiny" in (first_run.workspace.root / "params.yaml").read_text()
    assert _dvc_status(first_run.workspace) == {}


def test_predict_classifies_with_the_registered_champion(first_run: PipelineRun) -> None:
    text = "A wonderful film: moving, funny and beautifully acted."
    result = first_run.workspace.tpl("predict", text)
    assert result.returncode == 0, result.stderr
    label, probabilities, echoed = result.stdout.strip().split("\t")
    assert label in {"negative", "positive"}
    assert re.fullmatch(r"negative=[01]\.\d{3}  positive=[01]\.\d{3}", probabilities)
    assert echoed == text


def test_rerun_with_nothing_changed_skips_every_stage(
    first_run: PipelineRun, client: MlflowClient
) -> None:
    experiment_ids = [client.get_run(first_run.mlflow_run_id).info.experiment_id]
    runs_before = len(client.search_runs(experiment_ids))
    rerun = first_run.workspace.run_pipeline(PROFILE)
    print(f"first run {first_run.wall_seconds:.1f} s, unchanged rerun {rerun.wall_seconds:.1f} s")

    for name in STAGES:
        assert f"{name}: skipped (up to date)" in rerun.stderr, f"{name} was not skipped"
    assert "no flow run" in rerun.stderr
    # The last run's results, and its MLflow run: nothing new tracked or registered.
    assert rerun.mlflow_run_id == first_run.mlflow_run_id
    assert _headline(rerun.stdout) == _headline(first_run.stdout)
    assert len(client.search_runs(experiment_ids)) == runs_before
    assert len(client.search_model_versions(f"name = '{_model_name(rerun.workspace.root)}'")) == 1
    assert _dvc_status(rerun.workspace) == {}
    # No Prefect server to start, no model to load: a small part of a run that trains.
    # (Even while the background `dvc repro` may still share the CPU.)
    assert rerun.wall_seconds < first_run.wall_seconds / 4


def test_forced_flow_run_with_nothing_changed_is_all_cache(
    first_run: PipelineRun, client: MlflowClient
) -> None:
    rerun = first_run.workspace.run_pipeline(PROFILE, "--force-flow")

    for name in STAGES:
        assert f"{name}: skipped (cached)" in rerun.stderr, f"{name} was not served from cache"
    # Nothing ran: the new parent run has no stage runs, and no version was registered.
    assert rerun.mlflow_run_id != first_run.mlflow_run_id
    assert _stage_runs(client, client.get_run(rerun.mlflow_run_id)) == []
    assert _headline(rerun.stdout) == _headline(first_run.stdout)
    assert len(client.search_model_versions(f"name = '{_model_name(rerun.workspace.root)}'")) == 1
    assert _dvc_status(rerun.workspace) == {}


def _headline(stdout: str) -> list[str]:
    """The results `tpl run` printed last (from `rows:` up to the MLflow run's link)."""
    lines = stdout.splitlines()
    start = max(index for index, line in enumerate(lines) if line.startswith("rows: "))
    end = next(index for index in range(start, len(lines)) if lines[index].startswith("MLflow"))
    return lines[start:end]


# --- a corrupted source -----------------------------------------------------------------------


def test_unknown_labels_stop_the_run_at_validation_and_register_nothing(
    e2e_workspace: MakeE2eWorkspace, write_imdb_slice: Callable[..., Path], tmp_path: Path
) -> None:
    # A third of the labels are unknown: clean quarantines those rows, and the quarantined
    # fraction is far above validate.max_quarantine_fraction (0.05).
    source = write_imdb_slice(tmp_path / "imdb-bad", unknown_label_every=3)
    workspace = e2e_workspace("corrupted", dataset_path=source)

    result = workspace.tpl("run", "--profile", PROFILE)

    assert result.returncode != 0, result.stdout
    assert "pipeline failed: data validation failed" in result.stderr, result.stderr[-6000:]
    assert re.search(
        r"imdb\.summary: expect_column_values_to_be_between on 'quarantine_fraction'.* failed",
        result.stderr,
    ), result.stderr[-6000:]
    assert " will start " not in result.stderr, "a refused input must not be retried"
    assert not (workspace.root / "data/processed").exists(), "a stage after validate ran"
    assert not (workspace.root / "models").exists()
    client = MlflowClient(workspace.tracking_uri)
    assert client.search_registered_models() == []
    # MLflow records the failure where it happened, and no stage after it.
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    runs = {run.data.tags["stage"]: run.info.status for run in client.search_runs(experiments)}
    assert runs == {
        "pipeline": "FAILED",
        "ingest": "FINISHED",
        "clean": "FINISHED",
        "validate": "FAILED",
    }


# --- the same pipeline through DVC ------------------------------------------------------------


def _file_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _locked_out_hashes(root: Path) -> dict[str, str]:
    lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8"))
    return {out["path"]: out["md5"] for entry in lock["stages"].values() for out in entry["outs"]}


def test_dvc_repro_reproduces_the_prefect_run(
    first_run: PipelineRun, reproduction: Reproduction
) -> None:
    workspace = reproduction.workspace
    returncode = reproduction.process.wait(timeout=COMMAND_TIMEOUT_SECONDS)
    assert returncode == 0, reproduction.log.read_text(errors="replace")[-6000:]

    # Same params, data and seed on the same CPU: the same data, the same weights, and so the
    # same test metrics, whichever runner ran the stages (one process, or one per stage).
    # Compared in pipeline order, all at once, so a mismatch names the first stage that differs.
    ours, theirs = _locked_out_hashes(workspace.root), _locked_out_hashes(first_run.workspace.root)
    differing = [data for data in DETERMINISTIC_DATA if ours[data] != theirs[data]]
    differing += [
        weights
        for weights in MODEL_WEIGHTS
        if _file_md5(workspace.root / weights) != _file_md5(first_run.workspace.root / weights)
    ]
    # A resumed stage (a retry after a crash) is not bit-identical to an uninterrupted one.
    resumed = {
        f"{runner}: {summary.stem}": json.loads(summary.read_text())["resumed"]
        for runner, root in (("dvc", workspace.root), ("prefect", first_run.workspace.root))
        for summary in sorted((root / "metrics" / "train").glob("*.json"))
    }
    assert not differing, f"dvc repro and tpl run wrote different {differing}; resumed: {resumed}"
    expected = _test_metrics(_metrics(first_run.workspace.root))
    assert "test_accuracy" in expected
    assert _test_metrics(_metrics(workspace.root)) == pytest.approx(expected, rel=1e-9, abs=1e-12)

    again = workspace.dvc("repro")
    assert again.returncode == 0, again.stderr
    assert "Data and pipelines are up to date." in again.stdout, again.stdout
    assert _dvc_status(workspace) == {}


def _experiments(show: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json`: {experiment name: its data (params and metrics by file)}."""
    found: dict[str, dict[str, Any]] = {}

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("name") and isinstance(node.get("data"), dict):
                found[node["name"]] = node["data"]
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(show)
    return found


def test_dvc_experiments_compare_metrics_and_plots(reproduction: Reproduction) -> None:
    """Two `dvc exp run -S` of the reproduced workspace: `dvc exp show`, `dvc metrics diff`
    and `dvc plots diff` compare them (metrics and plots are DVC-cached, so each experiment
    holds its own); a base edit the profile overrides is refused instead of running unchanged."""
    workspace = reproduction.workspace
    assert reproduction.process.wait(timeout=COMMAND_TIMEOUT_SECONDS) == 0
    workspace.git("add", "--all")
    workspace.git("commit", "--quiet", "-m", "reproduced")
    learning_rate = "finetune.optim.learning_rate"

    void = workspace.dvc("exp", "run", "-S", f"{learning_rate}=0.005")
    assert void.returncode != 0
    assert f"profile '{PROFILE}' sets it itself" in void.stdout + void.stderr
    workspace.git("checkout", "--", "params.yaml")

    # A key the profile leaves to the base, read by finetune alone: the data stages are skipped.
    weight_decay = "finetune.optim.weight_decay"
    names = {"wd-none": "0.0", "wd-high": "0.3"}
    for name, value in names.items():
        ran = workspace.dvc("exp", "run", "-n", name, "-S", f"{weight_decay}={value}")
        assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
        ran_stages = set(re.findall(r"Running stage '([\w-]+)'", ran.stdout))
        assert ran_stages == {"finetune", "evaluate", "register"}, ran.stdout[-3000:]

    shown = workspace.dvc("exp", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    experiments = _experiments(json.loads(shown.stdout))
    assert set(names) <= experiments.keys(), sorted(experiments)
    figures = {}
    for name, value in names.items():
        data = experiments[name]
        params = data["params"]["params.yaml"]["data"]
        assert str(params["finetune"]["optim"]["weight_decay"]) == value
        figures[name] = data["metrics"][EVALUATION_METRICS]["data"]
        assert {"val_accuracy", "test_accuracy", "baseline_test_accuracy"} <= figures[name].keys()
    # Weight decay changes the model, not the baseline.
    assert figures["wd-none"]["val_log_loss"] != figures["wd-high"]["val_log_loss"]
    baseline = "baseline_test_accuracy"
    assert figures["wd-none"][baseline] == figures["wd-high"][baseline]

    diff = workspace.dvc("metrics", "diff", *names, "--json")
    assert diff.returncode == 0, diff.stderr
    assert "val_log_loss" in json.loads(diff.stdout)[EVALUATION_METRICS]
    rendered = workspace.root / "plots-diff"
    plots = workspace.dvc("plots", "diff", *names, "-o", str(rendered))
    assert plots.returncode == 0, plots.stderr
    page = (rendered / "index.html").read_text(encoding="utf-8")
    assert "roc.json" in page and all(name in page for name in names)
